//! `vmruntime-gate webhook`: the HTTPS admission server with its health server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::admission::Settings;
use crate::certs;
use crate::cli::WebhookArgs;
use crate::cluster::{ClusterView, files, live};
use crate::server::{self, SharedView, health, routes, tls};
use crate::telemetry::metrics::Metrics;

/// Folder of the certificates that `--dev` creates.
const DEV_CERTS: &str = "certs";
/// Cluster state that `--dev` serves.
const DEV_CLUSTER_STATE: &str = "manifests/examples/cluster";

/// Settings resolved from the flags, with the `--dev` defaults filled in.
struct Resolved {
    listen: SocketAddr,
    health_listen: SocketAddr,
    cert_file: PathBuf,
    key_file: PathBuf,
    cluster_state: Option<PathBuf>,
}

fn resolve(args: &WebhookArgs) -> anyhow::Result<Resolved> {
    let host = if args.dev { [127, 0, 0, 1] } else { [0, 0, 0, 0] };
    let mut resolved = Resolved {
        listen: args.listen.unwrap_or(SocketAddr::from((host, 8443))),
        health_listen: args.health_listen.unwrap_or(SocketAddr::from((host, 8080))),
        cert_file: args.tls_cert_file.clone().unwrap_or_else(|| Path::new(DEV_CERTS).join(certs::CERT_FILE)),
        key_file: args.tls_key_file.clone().unwrap_or_else(|| Path::new(DEV_CERTS).join(certs::KEY_FILE)),
        cluster_state: args.cluster_state.clone(),
    };
    if args.dev {
        resolved.cluster_state.get_or_insert_with(|| PathBuf::from(DEV_CLUSTER_STATE));
    }
    Ok(resolved)
}

/// Loads the cluster state files, explaining the `--dev` default when it is missing.
fn load_files(path: &Path, args: &WebhookArgs) -> anyhow::Result<ClusterView> {
    let uses_dev_default = args.dev && args.cluster_state.is_none();
    let view = files::load(path).with_context(|| {
        if uses_dev_default {
            format!("--dev reads {DEV_CLUSTER_STATE}: run it from the repository root, or pass --cluster-state DIR")
        } else {
            format!("cannot load --cluster-state {}", path.display())
        }
    })?;
    let runtime = match view.runtime() {
        Some(runtime) if runtime.enabled => "enabled",
        Some(_) => "disabled",
        None => "missing",
    };
    info!(
        path = %path.display(),
        runtime,
        vms = view.vm_count(),
        preflight_checks = view.check_count(),
        nodes = view.node_count(),
        "Loaded cluster state from files"
    );
    Ok(view)
}

/// Creates the development CA and serving certificate unless the files exist.
fn ensure_dev_certificates(resolved: &Resolved) -> anyhow::Result<()> {
    if resolved.cert_file.exists() && resolved.key_file.exists() {
        return Ok(());
    }
    let bundle = certs::generate(&["localhost".to_owned()], &["127.0.0.1".parse()?])?;
    certs::write(Path::new(DEV_CERTS), &bundle, true)?;
    info!(folder = DEV_CERTS, "Created a development CA and serving certificate for localhost and 127.0.0.1");
    Ok(())
}

pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let resolved = resolve(&args)?;

    // The state is loaded before --dev writes certificates, so a wrong folder leaves no files behind.
    let view: SharedView = match &resolved.cluster_state {
        Some(path) => Arc::new(RwLock::new(load_files(path, &args)?)),
        None => {
            let client = kube::Client::try_default().await.context(
                "cannot connect to the API server from the kubeconfig or in-cluster settings; \
                 set KUBECONFIG, or pass --cluster-state DIR to decide against files",
            )?;
            let view = Arc::new(RwLock::new(ClusterView::new()));
            live::spawn(client, view.clone());
            info!("Watching the API server; /readyz turns ready once every watch has synced");
            view
        }
    };

    if args.dev {
        ensure_dev_certificates(&resolved)?;
    }
    let metrics = Arc::new(Metrics::new());
    let certificate = tls::ReloadingCert::load(&resolved.cert_file, &resolved.key_file)?;
    certificate.spawn_reloader(args.certificate_poll_interval, metrics.clone());
    let acceptor = TlsAcceptor::from(tls::server_config(certificate, args.client_ca_file.as_deref())?);

    let state = routes::AdmissionState {
        view: view.clone(),
        settings: Settings { default_image_format: args.decision.default_image_format },
        max_body_bytes: args.max_body_bytes,
        metrics: metrics.clone(),
    };
    let admission_listener = server::bind(resolved.listen, "--listen").await?;
    let health_listener = server::bind(resolved.health_listen, "--health-listen").await?;
    let listen = admission_listener.local_addr()?;
    let health_listen = health_listener.local_addr()?;

    let shutdown = CancellationToken::new();
    server::cancel_on_signal(shutdown.clone());
    let health = tokio::spawn(server::serve_plain(health_listener, health::router(view, metrics), shutdown.clone()));

    info!(%listen, %health_listen, "Serving admission webhook");
    if args.dev && args.cluster_state.is_none() {
        print_dev_hint(listen, &resolved);
    }
    server::serve_tls(admission_listener, acceptor, routes::router(state), shutdown, args.shutdown_timeout).await;
    health.await??;
    info!("Stopped");
    Ok(())
}

fn print_dev_hint(listen: SocketAddr, resolved: &Resolved) {
    let ca = resolved.cert_file.parent().unwrap_or(Path::new(DEV_CERTS)).join(certs::CA_FILE);
    let curl = |review: &str| {
        format!(
            "curl -s --cacert {ca} -H 'Content-Type: application/json' \
             --data @manifests/examples/reviews/{review} https://localhost:{port}/validate",
            ca = ca.display(),
            port = listen.port()
        )
    };
    println!(
        "Try a decision. A VM creation, allowed because the example preflight check passed:\n  {}\n\
         Disabling the runtime while two VMs exist, denied:\n  {}\n",
        curl("vm-create.json"),
        curl("vmruntime-disable.json")
    );
}
