//! The TLS limit for the benchmarks: the same rustls settings, certificate, ALPN and HTTP stack as
//! `vmruntime-gate webhook`, but every POST reads its body and returns one fixed AdmissionReview.
//!
//! Usage: `baseline_server LISTEN CERT_FILE KEY_FILE`, for example
//! `cargo run --release --example baseline_server 127.0.0.1:9443 certs/tls.crt certs/tls.key`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use vmruntime_gate::server::{self, tls};
use vmruntime_gate::telemetry::metrics::Metrics;

const RESPONSE: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true,"status":{}}}"#;

async fn respond(body: Bytes) -> ([(header::HeaderName, &'static str); 1], &'static str) {
    // The body is read in full, as the webhook reads it, and then ignored.
    std::hint::black_box(body.len());
    ([(header::CONTENT_TYPE, "application/json")], RESPONSE)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let arguments: Vec<String> = std::env::args().collect();
    let [_, listen, cert, key] = arguments.as_slice() else {
        anyhow::bail!("usage: baseline_server LISTEN CERT_FILE KEY_FILE");
    };
    let listen: SocketAddr = listen.parse()?;
    let certificate = tls::ReloadingCert::load(Path::new(cert), Path::new(key))?;
    certificate.spawn_reloader(Duration::from_secs(2), std::sync::Arc::new(Metrics::new()));
    let acceptor = TlsAcceptor::from(tls::server_config(certificate, None)?);
    let router = Router::new().route("/validate", post(respond)).route("/mutate", post(respond));

    let shutdown = CancellationToken::new();
    server::cancel_on_signal(shutdown.clone());
    let listener = server::bind(listen, "LISTEN").await?;
    eprintln!("baseline server listening on {}", listener.local_addr()?);
    server::serve_tls(listener, acceptor, router, shutdown, Duration::from_secs(5)).await;
    Ok(())
}
