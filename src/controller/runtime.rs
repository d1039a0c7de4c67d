//! The VMRuntime loop: starts preflight checks when their inputs change, carries out forced
//! disables, and keeps the VMRuntime status in line with the latest check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::checks::{self, CheckStore};
use super::{Context, cluster_events, status};
use crate::cluster::VmKind;
use crate::preflight::trigger::{self, FINGERPRINT_ANNOTATION, Fingerprint};
use crate::preflight::{self, CHECK_NAME_PREFIX};
use crate::resources::vmruntime::{FORCE_DISABLE_ANNOTATION, VMRUNTIME_NAME, VMRuntimeStatus};
use crate::resources::{GROUP, SYSTEM_NAMESPACE, VMRuntime, VMRuntimePreflightCheck, VMRuntimePreflightCheckSpec};

/// Maximum time between two evaluations when nothing changes.
const RESYNC: Duration = Duration::from_secs(5);
/// Wait after a change, so that a burst of watch events leads to one evaluation.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// Finalizer that keeps a deleted VMRuntime until a forced deletion has deleted the VMs.
pub const FINALIZER: &str = "vm.cluster.gke.io/vmruntime-gate";
/// Wait between two rounds of a forced disable while VMs are still being deleted.
const DELETE_POLL: Duration = Duration::from_secs(1);

pub async fn run(context: Arc<Context>, checks: CheckStore, node_changes: Arc<Notify>) {
    let changes = node_changes.clone();
    let api = Api::<VMRuntime>::all(context.client.clone());
    // Set when any watch event shows the runtime disabled, so that a disable followed quickly by
    // an enable, both between two evaluations, still counts as "became enabled".
    let saw_disabled = Arc::new(AtomicBool::new(false));
    let watch_saw_disabled = saw_disabled.clone();
    let _runtime_watch = AbortOnDrop(tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().touched_objects().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(runtime) => {
                    if runtime.name_any() == VMRUNTIME_NAME && runtime.spec.enabled != Some(true) {
                        watch_saw_disabled.store(true, Ordering::SeqCst);
                    }
                    changes.notify_one();
                }
                Err(error) => warn!(%error, "VMRuntime watch failed; retrying with backoff"),
            }
        }
    }));
    if checks.wait_until_ready().await.is_err() {
        warn!("Preflight check store closed before it was ready");
        return;
    }

    // The fingerprint written last, which the watch may not have delivered yet, with the UID of the
    // VMRuntime it belongs to: a deleted and re-created VMRuntime starts without one.
    let mut recorded: Option<(String, Fingerprint)> = None;
    loop {
        let was_disabled = saw_disabled.swap(false, Ordering::SeqCst);
        let next = match evaluate(&context, &checks, &mut recorded, was_disabled).await {
            Ok(next) => next,
            Err(error) => {
                warn!(%error, "Evaluating VMRuntime {VMRUNTIME_NAME} failed; retrying");
                RESYNC
            }
        };
        tokio::select! {
            () = node_changes.notified() => tokio::time::sleep(DEBOUNCE).await,
            () = tokio::time::sleep(next) => {}
        }
    }
}

/// Aborts a task when dropped, so the watch stops with the loop that owns it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Evaluates the VMRuntime once and returns when to look again at the latest. `was_disabled` is
/// true when a watch event since the last evaluation showed the runtime disabled.
async fn evaluate(
    context: &Context,
    checks: &CheckStore,
    recorded: &mut Option<(String, Fingerprint)>,
    was_disabled: bool,
) -> kube::Result<Duration> {
    let api = Api::<VMRuntime>::all(context.client.clone());
    let Some(runtime) = api.get_opt(VMRUNTIME_NAME).await? else {
        *recorded = None;
        return Ok(RESYNC);
    };
    let uid = runtime.uid().unwrap_or_default();
    let enabled = runtime.spec.enabled == Some(true);
    let forced = runtime.annotations().get(FORCE_DISABLE_ANNOTATION).is_some_and(|value| value == "true");

    if runtime.metadata.deletion_timestamp.is_some() {
        return finish_deletion(context, &runtime, forced).await;
    }
    if !runtime.finalizers().iter().any(|finalizer| finalizer == FINALIZER) {
        add_finalizer(context, &runtime).await?;
    }
    if !enabled && forced {
        return forced_disable(context, checks, &runtime).await;
    }

    let current = fingerprint(&runtime, context);
    let annotated: Option<Fingerprint> =
        runtime.annotations().get(FINGERPRINT_ANNOTATION).and_then(|text| serde_json::from_str(text).ok());
    let remembered =
        recorded.take().filter(|(recorded_uid, _)| *recorded_uid == uid).map(|(_, fingerprint)| fingerprint);
    let mut previous = remembered.or(annotated.clone());
    if was_disabled && let Some(previous) = previous.as_mut() {
        previous.enabled = false;
    }
    if let Some(reason) = trigger::reason(previous.as_ref(), &current) {
        create_check(context, checks, &runtime, &reason).await?;
    }
    if annotated.as_ref() != Some(&current) {
        let text = serde_json::to_string(&current).unwrap_or_default();
        let patch = json!({"metadata": {"annotations": {FINGERPRINT_ANNOTATION: text}}});
        api.patch(VMRUNTIME_NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    *recorded = Some((uid, current));

    write_status(context, checks, &runtime, false).await?;
    Ok(RESYNC)
}

async fn add_finalizer(context: &Context, runtime: &VMRuntime) -> kube::Result<()> {
    let mut finalizers = runtime.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    // The resourceVersion makes the merge patch fail rather than drop a finalizer added meanwhile.
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": runtime.resource_version()}});
    Api::<VMRuntime>::all(context.client.clone())
        .patch(VMRUNTIME_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// Lets a deleted VMRuntime go: a forced deletion first deletes every VM and its disks, as a
/// forced disable does; an unforced one deletes nothing.
async fn finish_deletion(context: &Context, runtime: &VMRuntime, forced: bool) -> kube::Result<Duration> {
    if !runtime.finalizers().iter().any(|finalizer| finalizer == FINALIZER) {
        return Ok(RESYNC);
    }
    if forced {
        let remaining = delete_vms(context).await?;
        if remaining > 0 {
            info!(remaining, "VMRuntime deleted with the force annotation: waiting for VMs and disks to be deleted");
            return Ok(DELETE_POLL);
        }
    }
    let finalizers: Vec<String> =
        runtime.finalizers().iter().filter(|finalizer| *finalizer != FINALIZER).cloned().collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": runtime.resource_version()}});
    match Api::<VMRuntime>::all(context.client.clone())
        .patch(VMRUNTIME_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => info!(forced, "VMRuntime {VMRUNTIME_NAME} deleted"),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error),
    }
    Ok(RESYNC)
}

fn fingerprint(runtime: &VMRuntime, context: &Context) -> Fingerprint {
    let nodes = context
        .nodes
        .state()
        .iter()
        .filter(|node| preflight::is_eligible(node.metadata.labels.as_ref()))
        .map(|node| {
            let version = node
                .status
                .as_ref()
                .and_then(|status| status.node_info.as_ref())
                .map(|info| info.kubelet_version.clone())
                .unwrap_or_default();
            (node.name_any(), version)
        })
        .collect();
    Fingerprint {
        enabled: runtime.spec.enabled == Some(true),
        use_emulation: runtime.spec.use_emulation == Some(true),
        nodes,
    }
}

async fn create_check(
    context: &Context,
    checks: &CheckStore,
    runtime: &VMRuntime,
    reason: &trigger::Reason,
) -> kube::Result<()> {
    wait_for_next_second(context, checks).await;
    let api = Api::<VMRuntimePreflightCheck>::namespaced(context.client.clone(), SYSTEM_NAMESPACE);
    let name = format!("{CHECK_NAME_PREFIX}{}", uuid::Uuid::new_v4());
    let mut check = VMRuntimePreflightCheck::new(&name, VMRuntimePreflightCheckSpec {});
    check.metadata.namespace = Some(SYSTEM_NAMESPACE.to_owned());
    check.metadata.annotations = Some([("vm.cluster.gke.io/preflight-reason".to_owned(), reason.to_string())].into());
    let created = api.create(&PostParams::default(), &check).await?;
    if let Ok(mut last) = context.last_check_created.lock() {
        *last = created.metadata.creation_timestamp.clone();
    }
    info!(check = %name, %reason, "Created preflight check");
    // The event is about the namespaced check, so it lives beside the check in its namespace.
    let event = Event {
        type_: EventType::Normal,
        reason: "Created".to_owned(),
        note: Some(format!("created because {reason}")),
        action: "PreflightCheck".to_owned(),
        secondary: Some(runtime.object_ref(&())),
    };
    if let Err(error) = context.recorder.publish(&event, &created.object_ref(&())).await {
        warn!(%error, check = %name, "Publishing an event failed");
    }
    Ok(())
}

/// Waits until the clock is past the second in which the newest known check was created.
/// Creation timestamps have a resolution of one second and a tie goes to the greater name, so
/// without this wait a new check created in the same second as the previous one could lose to it.
async fn wait_for_next_second(context: &Context, checks: &CheckStore) {
    let from_store = checks::latest(checks).and_then(|check| check.metadata.creation_timestamp.clone());
    let from_memory = context.last_check_created.lock().ok().and_then(|created| created.clone());
    let Some(created) = from_store.max(from_memory) else {
        return;
    };
    let Ok(next_second) = Timestamp::from_second(created.0.as_second() + 1) else {
        return;
    };
    let wait = next_second.duration_since(Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(wait.unsigned_abs() + Duration::from_millis(20)).await;
    }
}

/// Brings the VMRuntime status in line with the latest check. Called by both loops.
pub async fn sync_status(context: &Context, checks: &CheckStore) {
    let api = Api::<VMRuntime>::all(context.client.clone());
    let result = match api.get_opt(VMRUNTIME_NAME).await {
        Ok(Some(runtime)) => {
            let forced = runtime.annotations().get(FORCE_DISABLE_ANNOTATION).is_some_and(|value| value == "true");
            let disabling = runtime.spec.enabled != Some(true) && forced;
            write_status(context, checks, &runtime, disabling).await
        }
        Ok(None) => Ok(()),
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        warn!(%error, "Updating the status of VMRuntime {VMRUNTIME_NAME} failed");
    }
}

async fn write_status(
    context: &Context,
    checks: &CheckStore,
    runtime: &VMRuntime,
    disabling: bool,
) -> kube::Result<()> {
    let latest = checks::latest(checks);
    let desired = status::desired(runtime, latest.as_deref(), disabling, &Time(Timestamp::now()));
    if runtime.status.as_ref() == Some(&desired) {
        return Ok(());
    }
    let api = Api::<VMRuntime>::all(context.client.clone());
    let patch = status_patch(runtime.status.as_ref(), &desired);
    api.patch_status(VMRUNTIME_NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Builds a merge patch from `current` to `desired` status. A merge patch only adds and replaces
/// map keys, so keys that `desired` drops, such as the feature statuses of an older check, are
/// set to null to remove them.
pub fn status_patch(current: Option<&VMRuntimeStatus>, desired: &VMRuntimeStatus) -> serde_json::Value {
    let mut desired_value = serde_json::to_value(desired).unwrap_or_default();
    if let Some(current) = current {
        let current_value = serde_json::to_value(current).unwrap_or_default();
        null_removed_keys(&current_value, &mut desired_value);
    }
    json!({"status": desired_value})
}

fn null_removed_keys(current: &serde_json::Value, desired: &mut serde_json::Value) {
    let (Some(current), Some(desired)) = (current.as_object(), desired.as_object_mut()) else {
        return;
    };
    for (key, value) in current {
        match desired.get_mut(key) {
            None => {
                desired.insert(key.clone(), serde_json::Value::Null);
            }
            Some(desired_value) => null_removed_keys(value, desired_value),
        }
    }
}

/// Deletes every VM and the disks its spec names, then resets the force-disable annotation.
async fn forced_disable(context: &Context, checks: &CheckStore, runtime: &VMRuntime) -> kube::Result<Duration> {
    write_status(context, checks, runtime, true).await?;

    let remaining = delete_vms(context).await?;
    if remaining > 0 {
        info!(remaining, "Waiting for VMs and disks to be deleted");
        return Ok(DELETE_POLL);
    }

    let api = Api::<VMRuntime>::all(context.client.clone());
    let patch = json!({"metadata": {"annotations": {FORCE_DISABLE_ANNOTATION: "false"}}});
    let runtime = api.patch(VMRUNTIME_NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    write_status(context, checks, &runtime, false).await?;
    info!("Forced disable finished: every VM is deleted and the runtime is disabled");
    publish(
        context,
        &runtime,
        EventType::Normal,
        "Disabled",
        "deleted every VM and its disks; the runtime is disabled".to_owned(),
    )
    .await;
    Ok(RESYNC)
}

/// Deletes every VM of every kind and the disks each `gvm` names, and returns how many objects
/// still exist. Each call works from what the API server lists, so a restart midway finishes the job.
async fn delete_vms(context: &Context) -> kube::Result<usize> {
    let mut remaining = 0usize;
    for kind in VmKind::ALL {
        let gvk = GroupVersionKind::gvk(kind.group(), "v1", kind.kind());
        let resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
        let api = Api::<DynamicObject>::all_with(context.client.clone(), &resource);
        let vms = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => return Err(error),
        };
        for vm in vms {
            remaining += 1;
            let namespace = vm.namespace().unwrap_or_default();
            if kind == VmKind::RuntimeVirtualMachine {
                remaining += delete_disks(context, &namespace, &vm).await?;
            }
            if vm.metadata.deletion_timestamp.is_none() {
                let namespaced = Api::<DynamicObject>::namespaced_with(context.client.clone(), &namespace, &resource);
                match namespaced.delete(&vm.name_any(), &DeleteParams::background()).await {
                    Ok(_) => {
                        info!(vm = %format!("{namespace}/{}", vm.name_any()), %kind, "Deleted VM for a forced disable")
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
    Ok(remaining)
}

/// Deletes the VirtualMachineDisks that a VM's spec names and returns how many still exist.
async fn delete_disks(context: &Context, namespace: &str, vm: &DynamicObject) -> kube::Result<usize> {
    let gvk = GroupVersionKind::gvk(GROUP, "v1", "VirtualMachineDisk");
    let api = Api::<DynamicObject>::namespaced_with(
        context.client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "virtualmachinedisks"),
    );
    let names: Vec<String> = vm
        .data
        .pointer("/spec/disks")
        .and_then(|disks| disks.as_array())
        .into_iter()
        .flatten()
        .filter_map(|disk| disk.get("virtualMachineDiskName").and_then(|name| name.as_str()).map(str::to_owned))
        .collect();
    let mut remaining = 0;
    for name in names {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(either) => {
                if either.is_left() {
                    remaining += 1;
                }
                info!(disk = %format!("{namespace}/{name}"), "Deleted VirtualMachineDisk for the forced disable");
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(remaining)
}

async fn publish(context: &Context, runtime: &VMRuntime, type_: EventType, reason: &str, note: String) {
    let event =
        cluster_events::build(runtime.object_ref(&()), &context.settings.identity, type_, reason, "VMRuntime", note);
    if let Err(error) = cluster_events::publish(context, &event).await {
        warn!(%error, reason, "Publishing an event failed");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resources::vmruntime::{FeatureStatus, PreflightCheckSummary};

    fn status(features: &[&str]) -> VMRuntimeStatus {
        let feature_statuses: BTreeMap<String, FeatureStatus> = features
            .iter()
            .map(|name| ((*name).to_owned(), FeatureStatus { passed: true, failed_node_num: 0 }))
            .collect();
        VMRuntimeStatus {
            ready: Some(true),
            preflight_check_summary: Some(PreflightCheckSummary { feature_statuses, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn status_patch_removes_dropped_features() {
        let patch = status_patch(Some(&status(&["AGENT", "KVM"])), &status(&["KVM"]));
        let features = &patch["status"]["preflightCheckSummary"]["featureStatuses"];
        assert_eq!(features["AGENT"], serde_json::Value::Null);
        assert_eq!(features["KVM"]["passed"], true);
        let mut merged = json!({"status": serde_json::to_value(status(&["AGENT", "KVM"])).unwrap()});
        json_patch::merge(&mut merged, &patch);
        assert_eq!(merged["status"], serde_json::to_value(status(&["KVM"])).unwrap());
    }

    #[test]
    fn status_patch_without_current_is_desired() {
        let patch = status_patch(None, &status(&["KVM"]));
        assert_eq!(patch["status"], serde_json::to_value(status(&["KVM"])).unwrap());
    }
}
