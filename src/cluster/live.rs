//! Fills a cluster view from watches on a live API server.
//!
//! One watch per source: the VMRuntime, the preflight checks in `vm-system`, and each VM kind.
//! The view reports itself loaded once every watch has delivered its initial list. A kind whose
//! CRD is not installed (HTTP 404) counts as loaded with no objects, and its watch keeps retrying
//! so that a CRD installed later is picked up.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Api, ApiResource};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::view::{ClusterView, VmKind, VmSummary};
use crate::resources::{SYSTEM_NAMESPACE, VMRuntime, VMRuntimePreflightCheck};
use crate::server::SharedView;

/// Sources of the view, in the order of [`SyncTracker`] flags.
#[derive(Clone, Copy, Debug)]
enum Source {
    Runtime,
    Checks,
    Vms(VmKind),
}

impl Source {
    const ALL: [Source; 5] = [
        Source::Runtime,
        Source::Checks,
        Source::Vms(VmKind::RuntimeVirtualMachine),
        Source::Vms(VmKind::KubevirtVirtualMachine),
        Source::Vms(VmKind::KubevirtVirtualMachineInstance),
    ];

    fn index(self) -> usize {
        match self {
            Source::Runtime => 0,
            Source::Checks => 1,
            Source::Vms(VmKind::RuntimeVirtualMachine) => 2,
            Source::Vms(VmKind::KubevirtVirtualMachine) => 3,
            Source::Vms(VmKind::KubevirtVirtualMachineInstance) => 4,
        }
    }

    fn label(self) -> String {
        match self {
            Source::Runtime => "VMRuntime.vm.cluster.gke.io".to_owned(),
            Source::Checks => "VMRuntimePreflightCheck.vm.cluster.gke.io".to_owned(),
            Source::Vms(kind) => kind.to_string(),
        }
    }
}

/// Tracks which sources have delivered their initial list and marks the view loaded when all have.
struct SyncTracker {
    view: SharedView,
    synced: Mutex<[bool; 5]>,
}

impl SyncTracker {
    fn mark_synced(&self, source: Source) {
        let mut synced = self.synced.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        synced[source.index()] = true;
        if synced.iter().all(|done| *done) {
            let mut view = self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !view.is_loaded() {
                info!(
                    vms = view.vm_count(),
                    preflight_checks = view.check_count(),
                    runtime = view.runtime().is_some(),
                    "Cluster state loaded from watches"
                );
            }
            view.set_loaded(true);
        }
    }
}

/// Starts one watch task per source. The tasks run until the process ends.
pub fn spawn(client: Client, view: SharedView) {
    let tracker = Arc::new(SyncTracker { view: view.clone(), synced: Mutex::new([false; 5]) });
    for source in Source::ALL {
        let client = client.clone();
        let view = view.clone();
        let tracker = tracker.clone();
        tokio::spawn(async move {
            match source {
                Source::Runtime => {
                    let api = Api::<VMRuntime>::all(client);
                    run(source, api, view, tracker, |runtime| runtime, apply_runtime).await;
                }
                Source::Checks => {
                    let api = Api::<VMRuntimePreflightCheck>::namespaced(client, SYSTEM_NAMESPACE);
                    run(source, api, view, tracker, |check| check, apply_check).await;
                }
                Source::Vms(kind) => {
                    let gvk = GroupVersionKind::gvk(kind.group(), "v1", kind.kind());
                    let resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
                    let api = Api::<DynamicObject>::all_with(client, &resource);
                    // Each VM is reduced to its summary as it arrives, so that a list of 10,000 full
                    // objects is never held at once.
                    let summarize = move |object: DynamicObject| VmSummary::from_object(kind, &object);
                    let apply = move |view: &mut ClusterView, change: Change<VmSummary>| apply_vm(kind, view, change);
                    run(source, api, view, tracker, summarize, apply).await;
                }
            }
        });
    }
}

/// A change to apply to the view.
enum Change<K> {
    Applied(K),
    Deleted(K),
    /// The full list after a watch (re)started.
    Replaced(Vec<K>),
}

async fn run<K, S, M, F>(
    source: Source,
    api: Api<K>,
    view: SharedView,
    tracker: Arc<SyncTracker>,
    summarize: M,
    apply: F,
) where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    M: Fn(K) -> S,
    F: Fn(&mut ClusterView, Change<S>),
{
    let label = source.label();
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut initial: Vec<S> = Vec::new();
    let mut reported_missing = false;
    let mut last_error = String::new();

    while let Some(event) = stream.next().await {
        let change = match event {
            Ok(Event::Init) => {
                initial.clear();
                continue;
            }
            Ok(Event::InitApply(object)) => {
                initial.push(summarize(object));
                continue;
            }
            Ok(Event::InitDone) => {
                if !last_error.is_empty() || reported_missing {
                    info!(kind = %label, "Watch synced");
                }
                last_error.clear();
                reported_missing = false;
                Change::Replaced(std::mem::take(&mut initial))
            }
            Ok(Event::Apply(object)) => Change::Applied(summarize(object)),
            Ok(Event::Delete(object)) => Change::Deleted(summarize(object)),
            Err(error) if is_not_found(&error) => {
                if !reported_missing {
                    info!(kind = %label, "CRD not installed; treating the kind as having no objects");
                    reported_missing = true;
                }
                Change::Replaced(Vec::new())
            }
            Err(error) => {
                // The watcher retries with backoff; repeats of the same error are logged at debug level.
                let message = error.to_string();
                if message == last_error {
                    debug!(kind = %label, error = %message, "Watch failed again; retrying with backoff");
                } else {
                    warn!(kind = %label, error = %message, "Watch failed; retrying with backoff");
                    last_error = message;
                }
                continue;
            }
        };
        let replaced = matches!(change, Change::Replaced(_));
        {
            let mut view = view.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            apply(&mut view, change);
        }
        if replaced {
            tracker.mark_synced(source);
        }
    }
}

fn watcher<K>(api: Api<K>, config: watcher::Config) -> impl futures::Stream<Item = watcher::Result<Event<K>>>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config)
}

fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        // A missing CRD gives a plain "404 page not found", which has no Status reason, so the code decides.
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
        _ => false,
    }
}

fn apply_runtime(view: &mut ClusterView, change: Change<VMRuntime>) {
    match change {
        Change::Applied(runtime) => view.apply_runtime(&runtime),
        Change::Deleted(runtime) => view.delete_runtime(&runtime.name_any()),
        Change::Replaced(runtimes) => {
            view.delete_runtime(crate::resources::vmruntime::VMRUNTIME_NAME);
            for runtime in &runtimes {
                view.apply_runtime(runtime);
            }
        }
    }
}

fn apply_check(view: &mut ClusterView, change: Change<VMRuntimePreflightCheck>) {
    match change {
        Change::Applied(check) => view.apply_check(&check),
        Change::Deleted(check) => view.delete_check(&check.name_any()),
        Change::Replaced(checks) => view.replace_checks(&checks),
    }
}

fn apply_vm(kind: VmKind, view: &mut ClusterView, change: Change<VmSummary>) {
    match change {
        Change::Applied(vm) => view.apply_vm(vm),
        Change::Deleted(vm) => view.delete_vm(kind, &vm.namespace, &vm.name),
        Change::Replaced(vms) => view.replace_vms(kind, vms),
    }
}
