//! Builders for admission unit tests.

use serde_json::{Value, json};

use super::{Endpoint, Outcome, Settings, review};
use crate::cluster::{ClusterView, VmKind, VmSummary};
use crate::resources::preflight_check::{CheckResult, PreflightCheckStatus, VMRuntimePreflightCheckSpec};
use crate::resources::vmruntime::FORCE_DISABLE_ANNOTATION;
use crate::resources::{SYSTEM_NAMESPACE, VMRuntime, VMRuntimePreflightCheck, VMRuntimeSpec};

/// Builds an `admission.k8s.io/v1` AdmissionReview for `group`/`kind` with the given objects.
pub fn mk_review(group: &str, kind: &str, operation: &str, object: Value, old_object: Value) -> Value {
    let name = object
        .pointer("/metadata/name")
        .or_else(|| old_object.pointer("/metadata/name"))
        .cloned()
        .unwrap_or(json!("vmruntime"));
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "name": name,
            "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
            "operation": operation,
            "userInfo": {"username": "tester"},
            "object": object,
            "oldObject": old_object,
            "dryRun": false
        }
    })
}

/// Builds a VMRuntime object named `vmruntime` with the given `spec.enabled` and force-disable annotation.
pub fn mk_runtime(enabled: Value, force: Option<&str>) -> Value {
    let mut object = json!({
        "apiVersion": "vm.cluster.gke.io/v1",
        "kind": "VMRuntime",
        "metadata": {"name": "vmruntime"},
        "spec": {"enabled": enabled}
    });
    if let Some(force) = force {
        object["metadata"]["annotations"] = json!({ FORCE_DISABLE_ANNOTATION: force });
    }
    object
}

pub fn run(endpoint: Endpoint, review_json: &Value, view: &ClusterView) -> Outcome<'static> {
    let body = serde_json::to_vec(review_json).unwrap();
    review(endpoint, &body, view, Settings::default()).expect("review decodes").into_owned()
}

/// Returns the `response` object of an outcome as JSON.
pub fn response(outcome: &Outcome) -> Value {
    outcome.to_value()["response"].clone()
}

pub fn mk_vm(kind: VmKind, namespace: &str, name: &str, state: &str) -> VmSummary {
    VmSummary {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        state: Some(state.to_owned()),
        deleting: false,
    }
}

/// Builds a loaded view with an optional runtime and the given VMs.
pub fn mk_view(runtime_enabled: Option<bool>, vms: Vec<VmSummary>) -> ClusterView {
    let mut view = ClusterView::new();
    if let Some(enabled) = runtime_enabled {
        view.apply_runtime(&VMRuntime::new(
            "vmruntime",
            VMRuntimeSpec { enabled: Some(enabled), ..Default::default() },
        ));
    }
    for vm in vms {
        view.apply_vm(vm);
    }
    view.set_loaded(true);
    view
}

/// Builds a preflight check whose `failed_nodes` entries are failed (node, check, message) results.
pub fn mk_check(
    name: &str,
    created: &str,
    pass: Option<bool>,
    failed_nodes: &[(&str, &str, &str)],
) -> VMRuntimePreflightCheck {
    let mut check = VMRuntimePreflightCheck::new(name, VMRuntimePreflightCheckSpec {});
    check.metadata.namespace = Some(SYSTEM_NAMESPACE.to_owned());
    check.metadata.creation_timestamp = Some(serde_json::from_value(json!(created)).unwrap());
    let mut status = PreflightCheckStatus { pass, ..Default::default() };
    for (node, check_name, message) in failed_nodes {
        let result =
            CheckResult { check_name: (*check_name).to_owned(), passed: false, message: (*message).to_owned() };
        status.checks.entry((*node).to_owned()).or_default().results.push(result);
    }
    check.status = Some(status);
    check
}
