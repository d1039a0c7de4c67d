//! TLS settings of the admission server: rustls with the ring provider, TLS 1.2 and 1.3, ALPN
//! `h2` and `http/1.1`, the whole certificate chain from the certificate file, and optional
//! client-certificate verification.
//!
//! The certificate and key are read again whenever their content changes, which also covers
//! Kubernetes' update of a mounted Secret (files behind a `..data` link that is swapped
//! atomically). The files are polled rather than watched with inotify, because a watch on the
//! file misses the swap of the link above it. A pair that fails to load keeps the old one serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tracing::{error, info};

use crate::telemetry::metrics::Metrics;

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
    #[error("cannot read client CA file {path}: {message}; pass a PEM CA certificate with --client-ca-file")]
    ClientCa { path: String, message: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its private key into a key rustls can serve.
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
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
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Pair {
        cert: cert_path,
        key: key_path,
        source,
    })
}

/// The serving certificate, replaced in place when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// File contents of the loaded pair, to notice changes.
    loaded: RwLock<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingCert {
    /// Loads the pair once; a failure here stops the server from starting.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        let key = load_certified_key(cert_file, key_file)?;
        let contents = (std::fs::read(cert_file).unwrap_or_default(), std::fs::read(key_file).unwrap_or_default());
        Ok(Arc::new(ReloadingCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(key)),
            loaded: RwLock::new(contents),
        }))
    }

    /// Loads the pair again when a file's content changed. Returns whether a new pair is served.
    pub fn reload_if_changed(&self, metrics: &Metrics) -> bool {
        let contents =
            (std::fs::read(&self.cert_file).unwrap_or_default(), std::fs::read(&self.key_file).unwrap_or_default());
        let unchanged = self.loaded.read().map(|loaded| *loaded == contents).unwrap_or(false);
        if unchanged {
            return false;
        }
        match load_certified_key(&self.cert_file, &self.key_file) {
            Ok(key) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(key);
                }
                if let Ok(mut loaded) = self.loaded.write() {
                    *loaded = contents;
                }
                metrics.certificate_reloads.inc();
                info!(cert = %self.cert_file.display(), "Reloaded the serving certificate");
                true
            }
            Err(load_error) => {
                // Remember the contents so that one bad pair is reported once, not on every poll.
                if let Ok(mut loaded) = self.loaded.write() {
                    *loaded = contents;
                }
                metrics.certificate_reload_failures.inc();
                error!(error = %load_error, "Reloading the serving certificate failed; the previous one stays in use");
                false
            }
        }
    }

    /// Polls the files every `interval` until the process ends.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration, metrics: Arc<Metrics>) {
        let cert = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let cert = cert.clone();
                let metrics = metrics.clone();
                // File reads block, so they run off the async workers.
                let _ = tokio::task::spawn_blocking(move || cert.reload_if_changed(&metrics)).await;
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| current.clone())
    }
}

/// Builds the server configuration. With `client_ca_file`, clients must present a certificate
/// signed by that CA; without it, no client certificate is requested.
pub fn server_config(cert: Arc<ReloadingCert>, client_ca_file: Option<&Path>) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Pair { cert: String::new(), key: String::new(), source })?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_error = |message: String| TlsError::ClientCa { path: path.display().to_string(), message };
            let mut roots = rustls::RootCertStore::empty();
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| ca_error(error.to_string()))?;
            if certificates.is_empty() {
                return Err(ca_error("no CERTIFICATE block".to_owned()));
            }
            for certificate in certificates {
                roots.add(certificate).map_err(|error| ca_error(error.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| ca_error(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
