//! The HTTPS admission server and the plain-HTTP health server.

pub mod health;
pub mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Serves `router` over TLS on `listener` until `shutdown` is cancelled, then waits up to
/// `drain_timeout` for connections in flight to finish.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "Accepting a TCP connection failed");
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Responses are small, and Nagle's algorithm would hold a small segment back while an
        // earlier one is still unacknowledged.
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, %peer, "Setting TCP_NODELAY failed");
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(error) => {
                    debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
            };
            let service = TowerToHyperService::new(router);
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                debug!(%error, %peer, "HTTP connection ended with an error");
            }
        });
    }
    // Closing the listener makes new connections fail at once instead of waiting in the backlog.
    drop(listener);
    drain(graceful, drain_timeout).await;
}

/// Serves `router` over plain HTTP until `shutdown` is cancelled.
pub async fn serve_plain(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn drain(graceful: GracefulShutdown, timeout: Duration) {
    let in_flight = graceful.count();
    info!(connections = in_flight, "Stopped accepting; draining connections");
    if tokio::time::timeout(timeout, graceful.shutdown()).await.is_err() {
        warn!(timeout_seconds = timeout.as_secs_f64(), "Connections still open after the drain timeout; closing them");
    }
}

/// Binds a TCP listener, naming the address and the fix when it fails.
pub async fn bind(address: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|error| {
        let fix = match error.kind() {
            std::io::ErrorKind::AddrInUse => {
                "the port is in use; pick a free port (--listen and --health-listen need different ports)"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "the address is not on this machine; use 0.0.0.0, 127.0.0.1 or an address of this host"
            }
            std::io::ErrorKind::PermissionDenied => "ports below 1024 need privileges; pick a port of 1024 or more",
            _ => "check the address",
        };
        anyhow::anyhow!("cannot listen on {address} ({flag}): {error}; {fix}")
    })
}

/// Cancels `token` on SIGTERM or Ctrl-C. The SIGTERM handler is installed before this returns,
/// so a signal sent right after start-up is not lost.
pub fn cancel_on_signal(token: CancellationToken) {
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    if let Err(error) = &terminate {
        warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops the server gracefully");
    }
    tokio::spawn(async move {
        let terminated = async {
            match terminate {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("Received Ctrl-C; shutting down"),
            () = terminated => info!("Received SIGTERM; shutting down"),
        }
        token.cancel();
    });
}

/// Shared state of the admission routes.
pub type SharedView = Arc<std::sync::RwLock<crate::cluster::ClusterView>>;
