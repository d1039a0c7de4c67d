//! `vmruntime-gate controller`: runs preflight checks and carries out forced disables.
//!
//! Replicas elect a leader with a Lease in `vm-system`; only the leader acts. A replica that loses
//! the lease exits, so that its restart starts again as a follower.

pub mod checks;
pub mod cluster_events;
pub mod runtime;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::resources::SYSTEM_NAMESPACE;

/// Name of the Lease that the controller replicas compete for.
pub const LEASE_NAME: &str = "vmruntime-gate-controller";

/// `reportingController` of the controller's Events.
pub const REPORTING_CONTROLLER: &str = "vmruntime-gate-controller";

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time a node's agent has to report, counted from the check's start.
    pub node_timeout: Duration,
    /// Identity of this replica in the Lease and in Events.
    pub identity: String,
    /// Lease duration; another replica takes over at most this long after the leader stops renewing.
    pub lease_duration: Duration,
}

/// Clients, stores and settings shared by the reconcilers.
pub struct Context {
    pub client: Client,
    pub nodes: Store<Node>,
    pub recorder: Recorder,
    pub settings: Settings,
    /// Creation time of the last check this replica created, which the check store may not have yet.
    pub last_check_created: std::sync::Mutex<Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>>,
}

/// Runs the controller until SIGTERM or Ctrl-C, or until this replica loses the leadership.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot connect to the API server from the kubeconfig or in-cluster settings; set KUBECONFIG")?;
    let shutdown = CancellationToken::new();
    crate::server::cancel_on_signal(shutdown.clone());

    let manager = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(SYSTEM_NAMESPACE)
        .with_identity(settings.identity.clone())
        .with_duration(settings.lease_duration.as_secs().max(2))
        .with_grace(1)
        .build()
        .await
        .with_context(|| format!("cannot set up leader election with Lease {SYSTEM_NAMESPACE}/{LEASE_NAME}"))?;
    let (mut leading, lease_task) = manager.watch().await;
    info!(identity = %settings.identity, lease = LEASE_NAME, "Waiting for the leadership");

    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => changed.context("leader election stopped")?,
            () = shutdown.cancelled() => {
                drop(leading);
                let _ = lease_task.await;
                return Ok(());
            }
        }
    }
    info!(identity = %settings.identity, "Became the leader");

    let work = CancellationToken::new();
    let leader = tokio::spawn(lead(client, settings, work.clone()));
    let outcome = loop {
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() || !*leading.borrow_and_update() {
                    break Err(anyhow::anyhow!("lost the leadership of Lease {SYSTEM_NAMESPACE}/{LEASE_NAME}; exiting so that a restart rejoins as a follower"));
                }
            }
            () = shutdown.cancelled() => break Ok(()),
        }
    };
    work.cancel();
    let _ = leader.await;
    drop(leading);
    match lease_task.await {
        Ok(Ok(_)) => info!("Released the leadership"),
        Ok(Err(error)) => warn!(%error, "Releasing the Lease failed; another replica takes over when it expires"),
        Err(error) => warn!(%error, "Leader election task failed"),
    }
    outcome
}

/// Does the leader's work until `stop` is cancelled.
async fn lead(client: Client, settings: Settings, stop: CancellationToken) {
    let (nodes, writer) = reflector::store();
    let node_stream =
        reflector::reflector(writer, watcher(Api::<Node>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .boxed();
    let node_changes = Arc::new(tokio::sync::Notify::new());
    let notify = node_changes.clone();
    let node_task = tokio::spawn(async move {
        let mut stream = node_stream;
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => notify.notify_one(),
                Err(error) => warn!(%error, "Node watch failed; retrying with backoff"),
            }
        }
    });
    if nodes.wait_until_ready().await.is_err() {
        warn!("Node store closed before it was ready");
        return;
    }

    let reporter = Reporter { controller: REPORTING_CONTROLLER.to_owned(), instance: Some(settings.identity.clone()) };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        nodes,
        settings,
        last_check_created: std::sync::Mutex::new(None),
    });

    let controller = checks::controller(&context);
    let check_store = controller.store();
    tokio::select! {
        () = checks::run(context.clone(), controller) => warn!("Preflight check reconciler stopped"),
        () = runtime::run(context, check_store, node_changes) => warn!("VMRuntime loop stopped"),
        () = stop.cancelled() => {}
    }
    node_task.abort();
}
