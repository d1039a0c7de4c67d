//! Compact summaries of the objects that admission decisions depend on.
//!
//! Only the fields a decision reads are kept, so that a view of 10,000 VMs stays small.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::core::DynamicObject;
use serde_json::Value;

use crate::resources::preflight_check::{NodeResult, PreflightCheckStatus};
use crate::resources::vmruntime::{FORCE_DISABLE_ANNOTATION, VMRUNTIME_NAME};
use crate::resources::{GROUP, KUBEVIRT_GROUP, SYSTEM_NAMESPACE, VMRuntime, VMRuntimePreflightCheck};

/// The kinds of VM that the gate guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VmKind {
    /// `vm.cluster.gke.io/v1` `VirtualMachine` (short name `gvm`).
    RuntimeVirtualMachine,
    /// `kubevirt.io` `VirtualMachine`.
    KubevirtVirtualMachine,
    /// `kubevirt.io` `VirtualMachineInstance`.
    KubevirtVirtualMachineInstance,
}

impl VmKind {
    pub const ALL: [VmKind; 3] =
        [VmKind::RuntimeVirtualMachine, VmKind::KubevirtVirtualMachine, VmKind::KubevirtVirtualMachineInstance];

    /// Returns the VM kind of an API group and kind, in any version.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<VmKind> {
        match (group, kind) {
            (GROUP, "VirtualMachine") => Some(VmKind::RuntimeVirtualMachine),
            (KUBEVIRT_GROUP, "VirtualMachine") => Some(VmKind::KubevirtVirtualMachine),
            (KUBEVIRT_GROUP, "VirtualMachineInstance") => Some(VmKind::KubevirtVirtualMachineInstance),
            _ => None,
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            VmKind::RuntimeVirtualMachine => GROUP,
            VmKind::KubevirtVirtualMachine | VmKind::KubevirtVirtualMachineInstance => KUBEVIRT_GROUP,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            VmKind::RuntimeVirtualMachine | VmKind::KubevirtVirtualMachine => "VirtualMachine",
            VmKind::KubevirtVirtualMachineInstance => "VirtualMachineInstance",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            VmKind::RuntimeVirtualMachine | VmKind::KubevirtVirtualMachine => "virtualmachines",
            VmKind::KubevirtVirtualMachineInstance => "virtualmachineinstances",
        }
    }

    /// Reads the lifecycle state from an object of this kind: `status.state` for the VM runtime,
    /// `status.printableStatus` for KubeVirt VMs and `status.phase` for instances.
    pub fn state_of(self, data: &Value) -> Option<String> {
        let field = match self {
            VmKind::RuntimeVirtualMachine => "state",
            VmKind::KubevirtVirtualMachine => "printableStatus",
            VmKind::KubevirtVirtualMachineInstance => "phase",
        };
        data.get("status")?.get(field)?.as_str().map(str::to_owned)
    }
}

impl fmt::Display for VmKind {
    /// Writes the kind qualified by its group, as `kubectl get` accepts it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind(), self.group())
    }
}

/// One VM as the disable guard lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSummary {
    pub kind: VmKind,
    pub namespace: String,
    pub name: String,
    /// Lifecycle state when the object reports one.
    pub state: Option<String>,
    /// True when the object has a deletion timestamp.
    pub deleting: bool,
}

impl VmSummary {
    /// Summarises a VM object of the given kind.
    pub fn from_object(kind: VmKind, object: &DynamicObject) -> VmSummary {
        VmSummary {
            kind,
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
            state: kind.state_of(&object.data),
            deleting: object.metadata.deletion_timestamp.is_some(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.state.as_deref() == Some("Running")
    }
}

impl fmt::Display for VmSummary {
    /// Writes `namespace/name (kind, state)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.as_deref().unwrap_or("state unknown");
        write!(f, "{}/{} ({}, {})", self.namespace, self.name, self.kind, state)
    }
}

/// Key of a VM in the view: kind, namespace, name.
pub type VmKey = (VmKind, String, String);

/// The state of `VMRuntime` `vmruntime` that decisions read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeSummary {
    /// `spec.enabled`, false when absent or not a boolean.
    pub enabled: bool,
    /// True while the `Disabling` condition is True or the object is being deleted.
    pub disabling: bool,
    /// True when the force-disable annotation is `"true"`.
    pub force_disable: bool,
}

impl RuntimeSummary {
    pub fn from_object(runtime: &VMRuntime) -> RuntimeSummary {
        let condition_disabling = runtime.status.as_ref().is_some_and(|status| {
            status.conditions.iter().any(|condition| condition.type_ == "Disabling" && condition.status == "True")
        });
        RuntimeSummary {
            enabled: runtime.spec.enabled == Some(true),
            disabling: condition_disabling || runtime.metadata.deletion_timestamp.is_some(),
            force_disable: runtime.annotations().get(FORCE_DISABLE_ANNOTATION).is_some_and(|value| value == "true"),
        }
    }
}

/// One failed node of a preflight check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFailure {
    pub node: String,
    /// Failed checks as (check name, message).
    pub failed_checks: Vec<(String, String)>,
}

/// Result of a preflight check as the VM gate reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// `status.pass` is absent: nodes are still reporting.
    Running,
    Passed,
    /// Failed nodes in name order.
    Failed(Vec<NodeFailure>),
}

/// One preflight check in the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSummary {
    pub name: String,
    pub created: Option<Time>,
    pub outcome: CheckOutcome,
}

impl CheckSummary {
    pub fn from_object(check: &VMRuntimePreflightCheck) -> CheckSummary {
        let outcome = match check.status.as_ref() {
            Some(status) => outcome_of(status),
            None => CheckOutcome::Running,
        };
        CheckSummary { name: check.name_any(), created: check.metadata.creation_timestamp.clone(), outcome }
    }
}

fn outcome_of(status: &PreflightCheckStatus) -> CheckOutcome {
    match status.pass {
        None => CheckOutcome::Running,
        Some(true) => CheckOutcome::Passed,
        Some(false) => {
            // `checks` has every node; `failures` is a capped copy for readers without `checks`.
            let nodes = if status.checks.is_empty() { &status.failures } else { &status.checks };
            CheckOutcome::Failed(
                nodes
                    .iter()
                    .filter(|(_, result)| !result.passed)
                    .map(|(node, result)| node_failure(node, result))
                    .collect(),
            )
        }
    }
}

fn node_failure(node: &str, result: &NodeResult) -> NodeFailure {
    NodeFailure {
        node: node.to_owned(),
        failed_checks: result
            .results
            .iter()
            .filter(|check| !check.passed)
            .map(|check| (check.check_name.clone(), check.message.clone()))
            .collect(),
    }
}

/// Sort key of preflight checks: creation time, then name, so the last entry is the latest check.
/// A check without a creation timestamp sorts before every check that has one.
type CheckKey = (Option<Time>, String);

/// Everything that admission decisions read about the cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    runtime: Option<RuntimeSummary>,
    vms: BTreeMap<VmKey, VmSummary>,
    checks: BTreeMap<CheckKey, CheckSummary>,
    check_keys: HashMap<String, CheckKey>,
    node_count: usize,
    loaded: bool,
}

impl ClusterView {
    /// Creates an empty view that reports itself as not loaded yet.
    pub fn new() -> ClusterView {
        ClusterView::default()
    }

    /// True once every source of the view has delivered its initial state.
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn set_loaded(&mut self, loaded: bool) {
        self.loaded = loaded;
    }

    /// Returns the `VMRuntime` named `vmruntime`, if it exists.
    pub fn runtime(&self) -> Option<&RuntimeSummary> {
        self.runtime.as_ref()
    }

    /// Records a `VMRuntime`. Objects with another name are ignored because only `vmruntime` counts.
    pub fn apply_runtime(&mut self, runtime: &VMRuntime) {
        if runtime.name_any() == VMRUNTIME_NAME {
            self.runtime = Some(RuntimeSummary::from_object(runtime));
        }
    }

    pub fn delete_runtime(&mut self, name: &str) {
        if name == VMRUNTIME_NAME {
            self.runtime = None;
        }
    }

    /// VMs that exist and are not being deleted, in kind, namespace and name order.
    pub fn live_vms(&self) -> impl Iterator<Item = &VmSummary> {
        self.vms.values().filter(|vm| !vm.deleting)
    }

    pub fn apply_vm(&mut self, vm: VmSummary) {
        let key = (vm.kind, vm.namespace.clone(), vm.name.clone());
        self.vms.insert(key, vm);
    }

    pub fn delete_vm(&mut self, kind: VmKind, namespace: &str, name: &str) {
        self.vms.remove(&(kind, namespace.to_owned(), name.to_owned()));
    }

    /// Replaces every VM of one kind, as after a watch restarts with a full list.
    pub fn replace_vms(&mut self, kind: VmKind, vms: Vec<VmSummary>) {
        self.vms.retain(|key, _| key.0 != kind);
        for vm in vms {
            self.apply_vm(vm);
        }
    }

    pub fn vm_count(&self) -> usize {
        self.vms.len()
    }

    /// Records a preflight check. Checks outside `vm-system` and checks being deleted are ignored.
    pub fn apply_check(&mut self, check: &VMRuntimePreflightCheck) {
        let name = check.name_any();
        if check.namespace().as_deref() != Some(SYSTEM_NAMESPACE) {
            return;
        }
        self.delete_check(&name);
        if check.metadata.deletion_timestamp.is_some() {
            return;
        }
        let summary = CheckSummary::from_object(check);
        let key = (summary.created.clone(), name.clone());
        self.check_keys.insert(name, key.clone());
        self.checks.insert(key, summary);
    }

    pub fn delete_check(&mut self, name: &str) {
        if let Some(key) = self.check_keys.remove(name) {
            self.checks.remove(&key);
        }
    }

    /// Replaces every preflight check, as after a watch restarts with a full list.
    pub fn replace_checks(&mut self, checks: &[VMRuntimePreflightCheck]) {
        self.checks.clear();
        self.check_keys.clear();
        for check in checks {
            self.apply_check(check);
        }
    }

    /// Returns the check with the newest creation timestamp, or on a tie the one with the greatest name.
    pub fn latest_check(&self) -> Option<&CheckSummary> {
        self.checks.values().next_back()
    }

    pub fn check_count(&self) -> usize {
        self.checks.len()
    }

    pub fn set_node_count(&mut self, count: usize) {
        self.node_count = count;
    }

    pub fn node_count(&self) -> usize {
        self.node_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::preflight_check::{CheckResult, VMRuntimePreflightCheckSpec};
    use k8s_openapi::jiff::Timestamp;

    fn mk_check(name: &str, created: Option<&str>, pass: Option<bool>) -> VMRuntimePreflightCheck {
        let mut check = VMRuntimePreflightCheck::new(name, VMRuntimePreflightCheckSpec {});
        check.metadata.namespace = Some(SYSTEM_NAMESPACE.to_owned());
        check.metadata.creation_timestamp = created.map(|at| Time(at.parse::<Timestamp>().unwrap()));
        check.status = Some(PreflightCheckStatus { pass, ..Default::default() });
        check
    }

    #[test]
    fn latest_check_prefers_newest_timestamp() {
        let mut view = ClusterView::new();
        view.apply_check(&mk_check("b", Some("2026-01-01T00:00:00Z"), Some(true)));
        view.apply_check(&mk_check("a", Some("2026-01-02T00:00:00Z"), Some(false)));
        assert_eq!(view.latest_check().unwrap().name, "a");
    }

    #[test]
    fn latest_check_tie_takes_greatest_name() {
        let mut view = ClusterView::new();
        view.apply_check(&mk_check("b", Some("2026-01-01T00:00:00Z"), Some(true)));
        view.apply_check(&mk_check("c", Some("2026-01-01T00:00:00Z"), Some(false)));
        view.apply_check(&mk_check("a", Some("2026-01-01T00:00:00Z"), None));
        assert_eq!(view.latest_check().unwrap().name, "c");
    }

    #[test]
    fn check_update_replaces_old_entry() {
        let mut view = ClusterView::new();
        view.apply_check(&mk_check("a", Some("2026-01-01T00:00:00Z"), None));
        view.apply_check(&mk_check("a", Some("2026-01-01T00:00:00Z"), Some(true)));
        assert_eq!(view.check_count(), 1);
        assert_eq!(view.latest_check().unwrap().outcome, CheckOutcome::Passed);
    }

    #[test]
    fn check_outside_system_namespace_ignored() {
        let mut view = ClusterView::new();
        let mut check = mk_check("a", None, Some(true));
        check.metadata.namespace = Some("default".to_owned());
        view.apply_check(&check);
        assert!(view.latest_check().is_none());
    }

    #[test]
    fn failed_outcome_lists_failed_checks_only() {
        let mut check = mk_check("a", None, Some(false));
        let status = check.status.as_mut().unwrap();
        let result = |name: &str, passed: bool| CheckResult {
            check_name: name.to_owned(),
            passed,
            message: format!("{name} message"),
        };
        status.checks.insert(
            "worker-1".to_owned(),
            NodeResult { passed: false, results: vec![result("CPU", true), result("KVM", false)] },
        );
        status.checks.insert("worker-0".to_owned(), NodeResult { passed: true, results: vec![result("KVM", true)] });
        let summary = CheckSummary::from_object(&check);
        assert_eq!(
            summary.outcome,
            CheckOutcome::Failed(vec![NodeFailure {
                node: "worker-1".to_owned(),
                failed_checks: vec![("KVM".to_owned(), "KVM message".to_owned())],
            }])
        );
    }

    #[test]
    fn deleting_vm_not_live() {
        let mut view = ClusterView::new();
        let vm = |name: &str, deleting| VmSummary {
            kind: VmKind::RuntimeVirtualMachine,
            namespace: "default".to_owned(),
            name: name.to_owned(),
            state: None,
            deleting,
        };
        view.apply_vm(vm("a", false));
        view.apply_vm(vm("b", true));
        let names: Vec<_> = view.live_vms().map(|vm| vm.name.as_str()).collect();
        assert_eq!(names, ["a"]);
    }
}
