//! Validating decision for VM creation: allowed only while the runtime is enabled, not being
//! disabled, and the latest preflight check passed.
//!
//! The latest check is the VMRuntimePreflightCheck in `vm-system` with the newest creation
//! timestamp; on a tie, the greatest name wins.

use std::fmt::Write as _;

use super::Decision;
use crate::cluster::{CheckOutcome, ClusterView, NodeFailure, VmKind};
use crate::resources::SYSTEM_NAMESPACE;
use crate::resources::vmruntime::VMRUNTIME_NAME;

/// Number of failed nodes named in a denial; the rest are counted.
pub const MAX_LISTED_NODES: usize = 10;

pub fn decide(kind: VmKind, view: &ClusterView) -> Decision {
    if !view.is_loaded() {
        return Decision::not_loaded();
    }
    // Formatted only into a denial, so that an allowed request allocates nothing.
    let cannot_create = CannotCreate(kind);

    let Some(runtime) = view.runtime() else {
        return Decision::forbidden(format!(
            "{cannot_create}: VMRuntime {VMRUNTIME_NAME} not found, so the VM runtime is not enabled; \
             create VMRuntime {VMRUNTIME_NAME} with spec.enabled: true"
        ));
    };
    if !runtime.enabled {
        return Decision::forbidden(format!(
            "{cannot_create}: the VM runtime is disabled (VMRuntime {VMRUNTIME_NAME} has spec.enabled false); \
             enable it with `vmruntime-gate enable --wait`, or kubectl patch vmruntime {VMRUNTIME_NAME} --type merge -p \
             '{{\"spec\":{{\"enabled\":true}}}}', then wait for the preflight check to pass"
        ));
    }
    if runtime.disabling {
        return Decision::forbidden(format!(
            "{cannot_create}: the VM runtime is being disabled; wait until VMRuntime {VMRUNTIME_NAME} is disabled, \
             then enable it again"
        ));
    }

    let Some(check) = view.latest_check() else {
        return Decision::forbidden(format!(
            "{cannot_create}: no preflight check has run in namespace {SYSTEM_NAMESPACE}; start one with \
             `vmruntime-gate check --wait`, or by creating a VMRuntimePreflightCheck there (its spec is empty), \
             and retry when it passes"
        ));
    };
    match &check.outcome {
        CheckOutcome::Passed => Decision::allow(),
        CheckOutcome::Running => Decision::forbidden(format!(
            "{cannot_create}: the latest preflight check {} is still running; retry when it completes \
             (kubectl get vmruntimepfc -n {SYSTEM_NAMESPACE} {})",
            check.name, check.name
        )),
        CheckOutcome::Failed(failures) => {
            Decision::forbidden(format!("{cannot_create}: {}", describe_failure(&check.name, failures)))
        }
    }
}

struct CannotCreate(VmKind);

impl std::fmt::Display for CannotCreate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "cannot create {}", self.0)
    }
}

fn describe_failure(check: &str, failures: &[NodeFailure]) -> String {
    if failures.is_empty() {
        return format!(
            "the latest preflight check {check} failed without a failed node, because no node was eligible; \
             remove the kubevm.io/VM-SkipSchedule label from the nodes that should run VMs"
        );
    }
    let mut message = format!("the latest preflight check {check} failed on {} node(s): ", failures.len());
    let nodes: Vec<String> = failures.iter().take(MAX_LISTED_NODES).map(describe_node).collect();
    message.push_str(&nodes.join("; "));
    if failures.len() > MAX_LISTED_NODES {
        let _ = write!(message, "; and {} more nodes", failures.len() - MAX_LISTED_NODES);
    }
    message.push_str(
        ". Fix these nodes (or set spec.useEmulation: true, or label a node kubevm.io/VM-SkipSchedule to leave it out), \
         then start a new check with `vmruntime-gate check --wait`",
    );
    message
}

fn describe_node(failure: &NodeFailure) -> String {
    if failure.failed_checks.is_empty() {
        return format!("{}: failed without a failed check result", failure.node);
    }
    let checks: Vec<String> =
        failure.failed_checks.iter().map(|(name, message)| format!("{name}: {message}")).collect();
    format!("{} ({})", failure.node, checks.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::testing::{mk_check, mk_review, mk_view, response, run};
    use crate::admission::Endpoint;
    use crate::cluster::{ClusterView, VmKind};

    const OLD: &str = "2026-12-01T00:00:00Z";
    const NEW: &str = "2026-12-02T00:00:00Z";

    fn with_checks(enabled: Option<bool>, checks: &[crate::resources::VMRuntimePreflightCheck]) -> ClusterView {
        let mut view = mk_view(enabled, vec![]);
        for check in checks {
            view.apply_check(check);
        }
        view
    }

    fn vm_review(kind: VmKind, operation: &str) -> Value {
        let object = json!({
            "apiVersion": format!("{}/v1", kind.group()),
            "kind": kind.kind(),
            "metadata": {"name": "vm-a", "namespace": "default"},
            "spec": {}
        });
        mk_review(kind.group(), kind.kind(), operation, object, Value::Null)
    }

    #[test]
    fn gate_cases() {
        let passed = mk_check("check-a", NEW, Some(true), &[]);
        let failed_new = mk_check(
            "check-b",
            NEW,
            Some(false),
            &[("worker-1", "KVM", "/dev/kvm not found"), ("worker-2", "CPU", "no vmx or svm flag")],
        );
        let passed_old = mk_check("check-a", OLD, Some(true), &[]);
        let failed_old = mk_check("check-b", OLD, Some(false), &[("worker-1", "KVM", "/dev/kvm not found")]);
        let running = mk_check("check-c", NEW, None, &[]);
        let tie_pass = mk_check("check-z", NEW, Some(true), &[]);
        let tie_fail = mk_check("check-y", NEW, Some(false), &[("worker-1", "KVM", "missing")]);

        // (case, view, allowed, texts the message contains)
        let cases: Vec<(&str, ClusterView, bool, Vec<&str>)> = vec![
            (
                "no runtime",
                with_checks(None, std::slice::from_ref(&passed)),
                false,
                vec!["VMRuntime vmruntime not found", "spec.enabled: true"],
            ),
            (
                "runtime disabled",
                with_checks(Some(false), std::slice::from_ref(&passed)),
                false,
                vec!["disabled", "kubectl patch vmruntime vmruntime"],
            ),
            (
                "no check",
                with_checks(Some(true), &[]),
                false,
                vec!["no preflight check has run", "creating a VMRuntimePreflightCheck"],
            ),
            (
                "check running",
                with_checks(Some(true), &[passed_old.clone(), running]),
                false,
                vec!["check-c is still running", "retry"],
            ),
            (
                "latest failed older passed",
                with_checks(Some(true), &[passed_old, failed_new]),
                false,
                vec![
                    "check-b failed on 2 node(s)",
                    "worker-1 (KVM: /dev/kvm not found)",
                    "worker-2 (CPU: no vmx or svm flag)",
                    "vmruntime-gate check --wait",
                ],
            ),
            ("latest passed older failed", with_checks(Some(true), &[failed_old, passed]), true, vec![]),
            ("tie greatest name passed", with_checks(Some(true), &[tie_fail.clone(), tie_pass.clone()]), true, vec![]),
            (
                "tie greatest name failed",
                with_checks(Some(true), &[mk_check("check-a", NEW, Some(true), &[]), tie_fail]),
                false,
                vec!["check-y failed"],
            ),
            (
                "state not loaded",
                {
                    let mut view = with_checks(Some(true), &[tie_pass]);
                    view.set_loaded(false);
                    view
                },
                false,
                vec!["not loaded yet"],
            ),
        ];

        for kind in VmKind::ALL {
            for (case, view, allowed, texts) in &cases {
                let response = response(&run(Endpoint::Validate, &vm_review(kind, "CREATE"), view));
                assert_eq!(response["uid"], "uid-1", "{kind} {case}");
                assert_eq!(response["allowed"], *allowed, "{kind} {case}: {response}");
                let message = response["status"]["message"].as_str().unwrap_or_default();
                for text in texts {
                    assert!(message.contains(text), "{kind} {case}: {text:?} missing from {message:?}");
                }
            }
        }
    }

    #[test]
    fn dry_run_same_answer() {
        let view = with_checks(Some(true), &[mk_check("check-b", NEW, Some(false), &[("worker-1", "KVM", "missing")])]);
        let review = vm_review(VmKind::KubevirtVirtualMachine, "CREATE");
        let mut dry_run = review.clone();
        dry_run["request"]["dryRun"] = json!(true);
        assert_eq!(
            response(&run(Endpoint::Validate, &review, &view)),
            response(&run(Endpoint::Validate, &dry_run, &view))
        );
    }

    #[test]
    fn update_and_delete_not_gated() {
        let view = with_checks(Some(false), &[]);
        for operation in ["UPDATE", "DELETE"] {
            let response =
                response(&run(Endpoint::Validate, &vm_review(VmKind::RuntimeVirtualMachine, operation), &view));
            assert_eq!(response["allowed"], true, "{operation}");
        }
    }

    #[test]
    fn spec_null_answered() {
        let view = with_checks(Some(true), &[mk_check("check-a", NEW, Some(true), &[])]);
        let mut review = vm_review(VmKind::RuntimeVirtualMachine, "CREATE");
        review["request"]["object"]["spec"] = Value::Null;
        let response = response(&run(Endpoint::Validate, &review, &view));
        assert_eq!(response["allowed"], true);
        assert_eq!(response["uid"], "uid-1");
    }

    #[test]
    fn failure_lists_ten_nodes() {
        let failures: Vec<(String, &str, &str)> =
            (0..12).map(|index| (format!("node-{index:02}"), "KVM", "missing")).collect();
        let borrowed: Vec<(&str, &str, &str)> =
            failures.iter().map(|(node, check, message)| (node.as_str(), *check, *message)).collect();
        let view = with_checks(Some(true), &[mk_check("check-a", NEW, Some(false), &borrowed)]);
        let response = response(&run(Endpoint::Validate, &vm_review(VmKind::RuntimeVirtualMachine, "CREATE"), &view));
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.contains("failed on 12 node(s)"), "{message}");
        assert!(message.contains("node-09"), "{message}");
        assert!(!message.contains("node-10"), "{message}");
        assert!(message.contains("and 2 more nodes"), "{message}");
    }
}
