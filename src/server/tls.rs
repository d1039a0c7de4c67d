//! TLS settings of the admission server: rustls with the ring provider, TLS 1.2 and 1.3,
//! ALPN `h2` and `http/1.1`, and the whole certificate chain from the certificate file.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {message}; pass a PEM file with --tls-cert-file")]
    Certificate { path: String, message: String },
    #[error("certificate file {path} has no CERTIFICATE block; pass a PEM certificate with --tls-cert-file")]
    NoCertificate { path: String },
    #[error("cannot read private key file {path}: {message}; pass a PEM private key with --tls-key-file")]
    Key { path: String, message: String },
    #[error(
        "certificate {cert} and key {key} cannot be used together ({source}); pass the key that belongs to the certificate"
    )]
    Pair { cert: String, key: String, source: rustls::Error },
}

/// Reads the certificate chain and private key into a server configuration.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = cert_file.display().to_string();
    let key_path = key_file.display().to_string();

    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::Certificate { path: cert_path.clone(), message: error.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|error| TlsError::Key { path: key_path.clone(), message: error.to_string() })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Pair { cert: cert_path.clone(), key: key_path.clone(), source })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Pair { cert: cert_path, key: key_path, source })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
