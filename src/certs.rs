//! Generation of a CA and a serving certificate for the webhook, with rcgen.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// Validity of a generated serving certificate.
const SERVING_VALIDITY: Duration = Duration::days(365);
/// Validity of a generated CA.
const CA_VALIDITY: Duration = Duration::days(3650);

#[derive(Debug, Error)]
pub enum CertsError {
    #[error("no name for the certificate; pass at least one --dns-name or --ip")]
    NoNames,
    #[error(
        "invalid DNS name {0:?}: use dot-separated labels of letters, digits and '-', such as vmruntime-gate.vm-system.svc"
    )]
    InvalidName(String),
    #[error("generating the certificate failed: {0}")]
    Generate(rcgen::Error),
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error(
        "{0} exists; pass --overwrite to replace the CA and keys (clusters must then get the new caBundle), or use another --out"
    )]
    Exists(PathBuf),
}

/// A generated CA certificate and a serving certificate and key signed by it, in PEM.
pub struct Bundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Bundle {
    /// Returns the CA certificate in base64, the form of a webhook configuration's `caBundle`.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }
}

/// File names written by [`write`].
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

impl From<rcgen::Error> for CertsError {
    fn from(error: rcgen::Error) -> Self {
        CertsError::Generate(error)
    }
}

/// Generates a new CA and a serving certificate for the given DNS names and IP addresses.
pub fn generate(dns_names: &[String], ips: &[IpAddr]) -> Result<Bundle, CertsError> {
    if dns_names.is_empty() && ips.is_empty() {
        return Err(CertsError::NoNames);
    }
    let now = OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "vmruntime-gate CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.not_before = now - Duration::hours(1);
    ca_params.not_after = now + CA_VALIDITY;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::default();
    let common_name = dns_names.first().cloned().unwrap_or_else(|| ips[0].to_string());
    params.distinguished_name.push(DnType::CommonName, common_name);
    for name in dns_names {
        if !is_dns_name(name) {
            return Err(CertsError::InvalidName(name.clone()));
        }
        let dns = name.clone().try_into().map_err(|_| CertsError::InvalidName(name.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + SERVING_VALIDITY;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    Ok(Bundle { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Checks RFC 1123 host name syntax, allowing one leading `*.` wildcard label.
fn is_dns_name(name: &str) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    let valid_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    !host.is_empty() && name.len() <= 253 && host.split('.').all(valid_label)
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `folder`, creating it when missing.
/// Existing files are replaced only when `overwrite` is true.
pub fn write(folder: &Path, bundle: &Bundle, overwrite: bool) -> Result<(), CertsError> {
    if !overwrite {
        for name in [CA_FILE, CERT_FILE, KEY_FILE] {
            let path = folder.join(name);
            if path.exists() {
                return Err(CertsError::Exists(path));
            }
        }
    }
    std::fs::create_dir_all(folder).map_err(|error| CertsError::Write { path: folder.to_owned(), error })?;
    write_file(&folder.join(CA_FILE), &bundle.ca_pem, 0o644)?;
    write_file(&folder.join(CERT_FILE), &bundle.cert_pem, 0o644)?;
    write_file(&folder.join(KEY_FILE), &bundle.key_pem, 0o600)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let error = |error| CertsError::Write { path: path.to_owned(), error };
    let mut file =
        std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(mode).open(path).map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_requires_a_name() {
        assert!(matches!(generate(&[], &[]), Err(CertsError::NoNames)));
    }

    #[test]
    fn generate_rejects_invalid_dns_name() {
        let error = generate(&["bad name!".to_owned()], &[]).err().expect("invalid name rejected");
        assert!(error.to_string().contains("bad name!"), "{error}");
    }

    #[test]
    fn dns_name_syntax() {
        for name in ["localhost", "vmruntime-gate.vm-system.svc", "*.example.com", "a1"] {
            assert!(is_dns_name(name), "{name} should be valid");
        }
        for name in ["", "bad name!", "-a.com", "a..b", "*", "a_b"] {
            assert!(!is_dns_name(name), "{name} should be invalid");
        }
    }

    #[test]
    fn write_sets_key_mode() {
        use std::os::unix::fs::PermissionsExt;
        let folder = tempfile::tempdir().unwrap();
        let bundle = generate(&["localhost".to_owned()], &["127.0.0.1".parse().unwrap()]).unwrap();
        write(folder.path(), &bundle, false).unwrap();
        let mode = std::fs::metadata(folder.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(bundle.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn write_keeps_existing_files() {
        let folder = tempfile::tempdir().unwrap();
        let bundle = generate(&["localhost".to_owned()], &[]).unwrap();
        write(folder.path(), &bundle, false).unwrap();
        let error = write(folder.path(), &bundle, false).unwrap_err().to_string();
        assert!(error.contains("--overwrite"), "{error}");
        write(folder.path(), &bundle, true).unwrap();
    }
}
