//! Reconciler of VMRuntimePreflightChecks: starts a check, waits for the eligible nodes, records
//! the result, updates the VMRuntime status and keeps the newest checks.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use thiserror::Error;
use tracing::{info, warn};

use super::Context;
use crate::preflight::{self, aggregate};
use crate::resources::{SYSTEM_NAMESPACE, VMRuntimePreflightCheck};

/// Number of checks kept; older ones are deleted.
pub const KEEP_CHECKS: usize = 10;

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error("cannot update preflight check {name}: {source}")]
    Update { name: String, source: kube::Error },
}

/// Creates the reconciler; its store of checks is shared with the VMRuntime loop.
pub fn controller(context: &Context) -> Controller<VMRuntimePreflightCheck> {
    let api = Api::<VMRuntimePreflightCheck>::namespaced(context.client.clone(), SYSTEM_NAMESPACE);
    Controller::new(api, watcher::Config::default())
}

pub async fn run(context: Arc<Context>, controller: Controller<VMRuntimePreflightCheck>) {
    let store = controller.store();
    let reconcile_context = (context, store);
    controller
        .run(
            |check, shared| async move { reconcile(check, &shared.0, &shared.1).await },
            |_, error, _| {
                warn!(%error, "Reconciling a preflight check failed; retrying in 5 s");
                Action::requeue(Duration::from_secs(5))
            },
            Arc::new(reconcile_context),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "Preflight check reconciler error");
            }
        })
        .await;
}

pub type CheckStore = kube::runtime::reflector::Store<VMRuntimePreflightCheck>;

async fn reconcile(
    check: Arc<VMRuntimePreflightCheck>,
    context: &Context,
    store: &CheckStore,
) -> Result<Action, ReconcileError> {
    let name = check.name_any();
    let status = check.status.clone().unwrap_or_default();
    let api = Api::<VMRuntimePreflightCheck>::namespaced(context.client.clone(), SYSTEM_NAMESPACE);

    if status.pass.is_some() {
        super::runtime::sync_status(context, store).await;
        collect_garbage(&api, store).await;
        return Ok(Action::await_change());
    }

    if status.start_time.is_none() {
        let mut eligible: Vec<String> = context
            .nodes
            .state()
            .iter()
            .filter(|node| preflight::is_eligible(node.metadata.labels.as_ref()))
            .map(|node| node.name_any())
            .collect();
        eligible.sort();
        let patch = json!({"status": {"startTime": Time(Timestamp::now()), "eligibleNodes": eligible}});
        patch_status(&api, &name, &patch).await?;
        info!(check = %name, nodes = eligible.len(), "Started preflight check");
        publish(
            context,
            &check,
            EventType::Normal,
            "Started",
            format!("waiting for {} eligible node(s): {}", eligible.len(), eligible.join(", ")),
        )
        .await;
        super::runtime::sync_status(context, store).await;
        return Ok(Action::requeue(context.settings.node_timeout));
    }

    match aggregate::evaluate(&status, Timestamp::now(), context.settings.node_timeout) {
        aggregate::Evaluation::Waiting { reported, eligible, remaining } => {
            info!(check = %name, reported, eligible, "Waiting for node results");
            Ok(Action::requeue(remaining + Duration::from_millis(100)))
        }
        aggregate::Evaluation::Complete(completion) => {
            let patch = json!({"status": {
                "pass": completion.pass,
                "completionTime": Time(Timestamp::now()),
                "checks": completion.checks,
                "failures": completion.failures,
            }});
            patch_status(&api, &name, &patch).await?;
            if completion.pass {
                info!(check = %name, "Preflight check passed");
                publish(context, &check, EventType::Normal, "Passed", "every eligible node passed".to_owned()).await;
            } else {
                let failed: Vec<&str> = completion.failures.keys().map(String::as_str).collect();
                info!(check = %name, failed_nodes = ?failed, "Preflight check failed");
                let note = if failed.is_empty() {
                    "no eligible node: every node has the kubevm.io/VM-SkipSchedule label".to_owned()
                } else {
                    format!("failed on node(s): {}", failed.join(", "))
                };
                publish(context, &check, EventType::Warning, "Failed", note).await;
            }
            Ok(Action::await_change())
        }
    }
}

async fn patch_status(
    api: &Api<VMRuntimePreflightCheck>,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), ReconcileError> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(|source| ReconcileError::Update { name: name.to_owned(), source })
}

async fn publish(context: &Context, check: &VMRuntimePreflightCheck, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "PreflightCheck".to_owned(),
        secondary: None,
    };
    if let Err(error) = context.recorder.publish(&event, &check.object_ref(&())).await {
        warn!(%error, check = %check.name_any(), reason, "Publishing an event failed");
    }
}

/// Deletes all but the newest [`KEEP_CHECKS`] checks.
async fn collect_garbage(api: &Api<VMRuntimePreflightCheck>, store: &CheckStore) {
    let mut checks: Vec<Arc<VMRuntimePreflightCheck>> =
        store.state().into_iter().filter(|check| check.metadata.deletion_timestamp.is_none()).collect();
    if checks.len() <= KEEP_CHECKS {
        return;
    }
    checks.sort_by_key(|check| sort_key(check));
    let excess = checks.len() - KEEP_CHECKS;
    for check in &checks[..excess] {
        let name = check.name_any();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => info!(check = %name, "Deleted an old preflight check"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => warn!(%error, check = %name, "Deleting an old preflight check failed"),
        }
    }
}

/// Orders checks from oldest to newest: creation time, then name.
pub fn sort_key(check: &VMRuntimePreflightCheck) -> (Option<Time>, String) {
    (check.metadata.creation_timestamp.clone(), check.name_any())
}

/// Returns the newest check in `store`, which decides whether VMs may be created.
pub fn latest(store: &CheckStore) -> Option<Arc<VMRuntimePreflightCheck>> {
    store
        .state()
        .into_iter()
        .filter(|check| check.metadata.deletion_timestamp.is_none())
        .max_by_key(|check| sort_key(check))
}
