//! Preflight checks end to end: the controller (two replicas), one agent per node on fixture
//! hosts, and the webhook, all against a real kube-apiserver.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::control_plane::{Binaries, ControlPlane};
use support::e2e::{agent, controller, get_json, wait_for};
use support::*;

/// Returns the newest check: latest creation timestamp, then greatest name.
fn latest_check(control_plane: &ControlPlane) -> Option<Value> {
    let list = get_json(control_plane, &["get", "vmruntimepfc", "-n", "vm-system"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|check| {
            (
                check["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_owned(),
                check["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .cloned()
}

/// Waits for a completed check other than `previous` and returns it.
async fn next_completed_check(control_plane: &ControlPlane, previous: Option<&str>) -> Value {
    wait_for("a new preflight check completes", Duration::from_secs(60), || {
        let check = latest_check(control_plane)?;
        let name = check["metadata"]["name"].as_str()?;
        if Some(name) == previous || check["status"]["pass"].is_null() {
            return None;
        }
        Some(check)
    })
    .await
}

/// Creates a check by hand. It first waits for the next second: creation timestamps have a
/// resolution of one second, and on a tie the greater name counts as the latest check.
async fn create_check_by_hand(control_plane: &ControlPlane, name: &str) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let object = format!(
        "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntimePreflightCheck\nmetadata: {{name: {name}, namespace: vm-system}}\n"
    );
    control_plane.kubectl_ok(&["create", "-f", "-"], Some(&object));
}

fn name_of(check: &Value) -> String {
    check["metadata"]["name"].as_str().unwrap().to_owned()
}

const GVM: &str = "apiVersion: vm.cluster.gke.io/v1\nkind: VirtualMachine\nmetadata: {name: web-0, namespace: default}\n\
                   spec:\n  disks:\n  - virtualMachineDiskName: web-0-boot\n";
const DISK: &str = "apiVersion: vm.cluster.gke.io/v1\nkind: VirtualMachineDisk\nmetadata: {name: web-0-boot, namespace: default}\nspec: {}\n";

/// Creating the VM with a server-side dry run: Ok when allowed, Err with the message when denied.
fn try_create_vm(control_plane: &ControlPlane) -> Result<(), String> {
    let output = control_plane.kubectl_with_input(&["create", "--dry-run=server", "-f", "-"], Some(GVM));
    if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
}

async fn vm_gate_answers(control_plane: &ControlPlane, allowed: bool) -> String {
    wait_for(if allowed { "VM creation is allowed" } else { "VM creation is denied" }, Duration::from_secs(20), || {
        match try_create_vm(control_plane) {
            Ok(()) if allowed => Some(String::new()),
            Err(message) if !allowed && message.contains("denied the request") => Some(message),
            _ => None,
        }
    })
    .await
}

fn lease_holder(control_plane: &ControlPlane) -> Option<String> {
    let output = control_plane.kubectl(&[
        "get",
        "lease",
        "-n",
        "vm-system",
        "vmruntime-gate-controller",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let holder = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !holder.is_empty()).then_some(holder)
}

#[tokio::test]
async fn preflight_walkthrough() {
    let Some(binaries) = Binaries::from_env() else {
        return;
    };
    let mut control_plane = ControlPlane::prepare(binaries);
    control_plane.start();
    e2e::install_crds(&control_plane);
    let _webhook = e2e::webhook_and_two_nodes(&control_plane).await;
    let _agent_0 = agent(&control_plane, "worker-0", "intel-kvm");
    let mut agent_1 = agent(&control_plane, "worker-1", "intel-no-kvm");
    let mut controllers = [controller(&control_plane, "replica-a"), controller(&control_plane, "replica-b")];
    let leader =
        wait_for("a controller holds the lease", Duration::from_secs(30), || lease_holder(&control_plane)).await;

    // 1 and 7. Enable the runtime and kill the leader at once: the other replica runs the check,
    // which fails on worker-1 with the KVM message.
    let runtime =
        "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntime\nmetadata: {name: vmruntime}\nspec: {enabled: true}\n";
    e2e::eventually("the VMRuntime is created", || {
        e2e::kubectl_result(&control_plane, &["create", "-f", "-"], Some(runtime), true).map(drop)
    })
    .await;
    let leader_index = if leader == "replica-a" { 0 } else { 1 };
    controllers[leader_index].kill();
    let new_leader = wait_for("another replica takes the lease", Duration::from_secs(20), || {
        lease_holder(&control_plane).filter(|holder| *holder != leader)
    })
    .await;
    assert_ne!(new_leader, leader);
    let check = next_completed_check(&control_plane, None).await;
    assert_eq!(check["status"]["pass"], false, "{check}");
    let worker_1 = &check["status"]["checks"]["worker-1"];
    assert_eq!(worker_1["passed"], false);
    let kvm = worker_1["results"].as_array().unwrap().iter().find(|result| result["checkName"] == "KVM").unwrap();
    assert!(kvm["message"].as_str().unwrap().contains("dev/kvm not found"), "{kvm}");
    assert_eq!(check["status"]["checks"]["worker-0"]["passed"], true);
    let table = control_plane.kubectl_ok(&["get", "vmruntimepfc", "-n", "vm-system"], None);
    assert!(table.contains("PASS"), "{table}");
    assert!(table.contains("false"), "{table}");
    let summary = wait_for("the VMRuntime summary names the check", Duration::from_secs(20), || {
        let runtime = get_json(&control_plane, &["get", "vmruntime", "vmruntime"]);
        let summary = runtime["status"]["preflightCheckSummary"].clone();
        (summary["preflightCheckName"] == check["metadata"]["name"]).then_some(summary)
    })
    .await;
    assert_eq!(summary["preflightCheckPassed"], false);
    assert_eq!(summary["featureStatuses"]["CPU"]["passed"], true, "{summary}");
    assert_eq!(summary["featureStatuses"]["KVM"]["passed"], false, "{summary}");
    assert_eq!(summary["featureStatuses"]["KVM"]["failedNodeNum"], 1, "{summary}");
    let denial = vm_gate_answers(&control_plane, false).await;
    assert!(denial.contains("worker-1"), "{denial}");

    // 2. With worker-1 labelled to skip, a check created by hand passes and VMs are allowed.
    control_plane.kubectl_ok(&["label", "node", "worker-1", "kubevm.io/VM-SkipSchedule="], None);
    create_check_by_hand(&control_plane, "manual-check").await;
    let check = next_completed_check(&control_plane, Some(&name_of(&check))).await;
    assert_eq!(name_of(&check), "manual-check");
    assert_eq!(check["status"]["pass"], true, "{check}");
    assert_eq!(check["status"]["eligibleNodes"], serde_json::json!(["worker-0"]));
    vm_gate_answers(&control_plane, true).await;

    // 3. Removing the label starts a new check by itself, which fails again.
    control_plane.kubectl_ok(&["label", "node", "worker-1", "kubevm.io/VM-SkipSchedule-"], None);
    let check = next_completed_check(&control_plane, Some("manual-check")).await;
    assert!(name_of(&check).starts_with("vmruntime-preflight-check-"), "{}", name_of(&check));
    assert_eq!(check["status"]["pass"], false, "{check}");
    vm_gate_answers(&control_plane, false).await;

    // 4. With useEmulation, a new check passes with KVM warnings.
    control_plane.kubectl_ok(
        &["patch", "vmruntime", "vmruntime", "--type", "merge", "-p", r#"{"spec":{"useEmulation":true}}"#],
        None,
    );
    let check = next_completed_check(&control_plane, Some(&name_of(&check))).await;
    assert_eq!(check["status"]["pass"], true, "{check}");
    let kvm = check["status"]["checks"]["worker-1"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|result| result["checkName"] == "KVM")
        .cloned()
        .unwrap();
    assert_eq!(kvm["passed"], true);
    assert!(kvm["message"].as_str().unwrap().starts_with("warning:"), "{kvm}");
    vm_gate_answers(&control_plane, true).await;

    // A kubelet upgrade on a node starts a new check by itself.
    control_plane.kubectl_ok(
        &[
            "patch",
            "node",
            "worker-0",
            "--subresource=status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"nodeInfo":{"kubeletVersion":"v1.20.3"}}}"#,
        ],
        None,
    );
    let check = next_completed_check(&control_plane, Some(&name_of(&check))).await;
    assert!(name_of(&check).starts_with("vmruntime-preflight-check-"), "{}", name_of(&check));
    let reason = &check["metadata"]["annotations"]["vm.cluster.gke.io/preflight-reason"];
    assert_eq!(reason, "the kubelet version of node worker-0 changed", "{check}");
    assert_eq!(check["status"]["pass"], true, "{check}");

    // 5. With worker-1's agent stopped, a check fails after the node timeout.
    agent_1.kill();
    create_check_by_hand(&control_plane, "timeout-check").await;
    let check = next_completed_check(&control_plane, Some(&name_of(&check))).await;
    assert_eq!(name_of(&check), "timeout-check");
    assert_eq!(check["status"]["pass"], false);
    let agent_result = &check["status"]["checks"]["worker-1"]["results"][0];
    assert_eq!(agent_result["checkName"], "AGENT");
    assert!(agent_result["message"].as_str().unwrap().contains("did not report"), "{agent_result}");

    // 6. A forced disable deletes the VM and its disk, then the runtime is disabled and not ready.
    let _agent_1 = agent(&control_plane, "worker-1", "intel-no-kvm");
    control_plane.kubectl_ok(&["create", "-f", "-"], Some(DISK));
    // The latest check failed by timeout, so VMs are denied until a check passes again.
    create_check_by_hand(&control_plane, "recheck").await;
    let check = next_completed_check(&control_plane, Some("timeout-check")).await;
    assert_eq!(check["status"]["pass"], true, "{check}");
    // A finalizer keeps the VM while the leader is replaced, so the new leader finishes the job.
    let held = GVM.replace("namespace: default}", "namespace: default, finalizers: [test.vmruntime-gate/hold]}");
    e2e::eventually("the VM is created", || {
        e2e::kubectl_result(&control_plane, &["create", "-f", "-"], Some(&held), true).map(drop)
    })
    .await;
    let _standby = controller(&control_plane, "replica-c");
    let forced = format!(r#"{{"metadata":{{"annotations":{{"{FORCE}":"true"}}}},"spec":{{"enabled":false}}}}"#);
    control_plane.kubectl_ok(&["patch", "vmruntime", "vmruntime", "--type", "merge", "-p", &forced], None);
    wait_for("the controller deletes the VM", Duration::from_secs(30), || {
        let vm = get_json(&control_plane, &["get", "gvm", "web-0", "-n", "default"]);
        vm["metadata"]["deletionTimestamp"].is_string().then_some(())
    })
    .await;
    let disabling = get_json(&control_plane, &["get", "vmruntime", "vmruntime"]);
    let condition =
        disabling["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Disabling").cloned();
    assert_eq!(condition.unwrap()["status"], "True", "{disabling}");
    let leader = lease_holder(&control_plane).unwrap();
    let survivor = 1 - leader_index;
    assert_eq!(leader, controllers[survivor].name.trim_start_matches("controller "));
    controllers[survivor].kill();
    wait_for("the standby replica takes the lease", Duration::from_secs(20), || {
        lease_holder(&control_plane).filter(|holder| holder == "replica-c")
    })
    .await;
    control_plane.kubectl_ok(
        &["patch", "gvm", "web-0", "-n", "default", "--type", "merge", "-p", r#"{"metadata":{"finalizers":null}}"#],
        None,
    );
    let runtime = wait_for("the forced disable finishes", Duration::from_secs(60), || {
        let runtime = get_json(&control_plane, &["get", "vmruntime", "vmruntime"]);
        (runtime["metadata"]["annotations"][FORCE] == "false").then_some(runtime)
    })
    .await;
    for (kind, name) in [("gvm", "web-0"), ("virtualmachinedisks.vm.cluster.gke.io", "web-0-boot")] {
        let output = control_plane.kubectl(&["get", kind, name, "-n", "default"]);
        assert!(!output.status.success(), "{kind} {name} still exists");
    }
    assert_eq!(runtime["spec"]["enabled"], false);
    let runtime = wait_for("the status says not ready and not disabling", Duration::from_secs(20), || {
        let runtime = get_json(&control_plane, &["get", "vmruntime", "vmruntime"]);
        let disabling =
            runtime["status"]["conditions"].as_array()?.iter().find(|condition| condition["type"] == "Disabling")?;
        (disabling["status"] == "False").then_some(runtime)
    })
    .await;
    assert_eq!(runtime["status"]["ready"], false, "{runtime}");

    // An Event about the cluster-scoped VMRuntime goes to kube-system, which this 1.20 API server
    // requires and newer ones accept.
    let event = wait_for("the Disabled event", Duration::from_secs(20), || {
        let events = get_json(&control_plane, &["get", "events.events.k8s.io", "-n", "kube-system"]);
        events["items"].as_array()?.iter().find(|event| event["reason"] == "Disabled").cloned()
    })
    .await;
    assert_eq!(event["regarding"]["kind"], "VMRuntime", "{event}");
    assert_eq!(event["regarding"]["name"], "vmruntime", "{event}");
    assert_eq!(event["reportingController"], "vmruntime-gate-controller", "{event}");
}
