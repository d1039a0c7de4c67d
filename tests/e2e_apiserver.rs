//! End to end through a real kube-apiserver, etcd and kubectl, with the webhook in live mode
//! (watching the API server) registered through webhook configurations.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::control_plane::{Binaries, ControlPlane};
use support::e2e::*;
use support::*;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const GVM: &str = "apiVersion: vm.cluster.gke.io/v1\nkind: VirtualMachine\nmetadata: {name: web-0, namespace: default}\n\
                   spec:\n  disks:\n  - virtualMachineDiskName: web-0-boot\n";

fn create_check(control_plane: &ControlPlane, name: &str, status: &str) {
    let object = format!(
        "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntimePreflightCheck\nmetadata: {{name: {name}, namespace: vm-system}}\n"
    );
    control_plane.kubectl_ok(&["create", "-f", "-"], Some(&object));
    control_plane.kubectl_ok(
        &["patch", "vmruntimepfc", name, "-n", "vm-system", "--subresource=status", "--type=merge", "-p", status],
        None,
    );
}

#[tokio::test]
async fn reference_walkthrough_through_apiserver() {
    let Some(binaries) = Binaries::from_env() else {
        return;
    };
    let mut control_plane = ControlPlane::prepare(binaries);
    control_plane.start();
    install_crds(&control_plane);
    let webhook = start_live_webhook(&control_plane);
    wait_ready(&webhook).await;
    control_plane
        .kubectl_ok(&["apply", "-f", "-"], Some(&webhook_configurations(webhook.listen.port(), &webhook.ca_file)));

    // 1. A VMRuntime with only enabled: false gets every default and the force annotation.
    let runtime =
        "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntime\nmetadata: {name: vmruntime}\nspec: {enabled: false}\n";
    // The API server may need a moment to load the new webhook configuration.
    eventually("the VMRuntime is created", || {
        kubectl_result(&control_plane, &["create", "-f", "-"], Some(runtime), true).map(drop)
    })
    .await;
    let object: Value =
        serde_json::from_str(&control_plane.kubectl_ok(&["get", "vmruntime", "vmruntime", "-o", "json"], None))
            .unwrap();
    assert_eq!(object["spec"]["enabled"], false);
    assert_eq!(object["spec"]["useEmulation"], false);
    assert_eq!(object["spec"]["vmImageFormat"], "raw");
    assert_eq!(object["metadata"]["annotations"][FORCE], "false");
    let yaml = control_plane.kubectl_ok(&["get", "vmruntime", "vmruntime", "-o", "yaml"], None);
    assert!(yaml.contains("vmImageFormat: raw"), "{yaml}");
    assert!(yaml.contains("vmrumtime-force-disable: \"false\""), "{yaml}");
    let table = control_plane.kubectl_ok(&["get", "vmruntime"], None);
    assert!(table.contains("ENABLED"), "{table}");
    assert!(table.contains("PREFLIGHTCHECK"), "{table}");

    // 2. Another name is rejected with the webhook's message.
    let other =
        "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntime\nmetadata: {name: runtime-2}\nspec: {enabled: true}\n";
    let error = control_plane.kubectl_err(&["create", "-f", "-"], Some(other));
    assert!(error.contains("denied the request"), "{error}");
    assert!(error.contains("must be named \"vmruntime\""), "{error}");

    // 3. VMs are denied while the latest check failed, allowed once a newer check passed.
    for node in ["worker-0", "worker-1"] {
        control_plane.kubectl_ok(
            &["create", "-f", "-"],
            Some(&format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n")),
        );
    }
    control_plane.kubectl_ok(
        &["patch", "vmruntime", "vmruntime", "--type", "merge", "-p", r#"{"spec":{"enabled":true}}"#],
        None,
    );
    create_check(
        &control_plane,
        "check-1",
        r#"{"status":{"pass":false,"checks":{"worker-0":{"passed":true,"results":[{"checkName":"KVM","passed":true,"message":"ok"}]},
            "worker-1":{"passed":false,"results":[{"checkName":"KVM","passed":false,"message":"/dev/kvm not found"}]}}}}"#,
    );
    let mut error = String::new();
    eventually("the VM gate sees the failed check", || {
        error = kubectl_result(&control_plane, &["create", "--dry-run=server", "-f", "-"], Some(GVM), false)?;
        if error.contains("check-1 failed") { Ok(()) } else { Err(error.clone()) }
    })
    .await;
    assert!(error.contains("worker-1 (KVM: /dev/kvm not found)"), "{error}");
    let error = control_plane.kubectl_err(&["create", "-f", "-"], Some(GVM));
    assert!(error.contains("check-1 failed"), "{error}");
    assert!(error.contains("worker-1"), "{error}");

    create_check(&control_plane, "check-2", r#"{"status":{"pass":true}}"#);
    eventually("the VM gate sees the passed check", || {
        kubectl_result(&control_plane, &["create", "--dry-run=server", "-f", "-"], Some(GVM), true).map(drop)
    })
    .await;
    assert!(control_plane.kubectl(&["get", "gvm", "web-0", "-n", "default"]).status.code() != Some(0), "dry run wrote");
    control_plane.kubectl_ok(&["create", "-f", "-"], Some(GVM));

    // 4. Disabling with the VM present is rejected with the listing; forced, it is accepted.
    let mut error = String::new();
    let disable = ["patch", "vmruntime", "vmruntime", "--type", "merge", "-p", r#"{"spec":{"enabled":false}}"#];
    eventually("the disable guard sees the VM", || {
        error = kubectl_result(&control_plane, &disable, None, false)?;
        Ok(())
    })
    .await;
    assert!(error.contains("default/web-0 (VirtualMachine.vm.cluster.gke.io"), "{error}");
    assert!(error.contains("kubectl patch vmruntime vmruntime --type merge"), "{error}");
    let forced = format!(r#"{{"metadata":{{"annotations":{{"{FORCE}":"true"}}}},"spec":{{"enabled":false}}}}"#);
    let output = control_plane.kubectl_ok(&["patch", "vmruntime", "vmruntime", "--type", "merge", "-p", &forced], None);
    assert!(output.contains("patched"), "{output}");

    // 5. Every manifest is valid for a real API server. This server is Kubernetes 1.20, so the
    // PodDisruptionBudget goes through an overlay that only changes its version to policy/v1beta1.
    let for_1_20 = repository().join("tests/fixtures/kubernetes-1.20");
    let output = control_plane.kubectl_ok(&["apply", "--dry-run=server", "-k", for_1_20.to_str().unwrap()], None);
    for object in [
        "vmruntimes.vm.cluster.gke.io",
        "deployment.apps/vmruntime-gate-webhook",
        "deployment.apps/vmruntime-gate-controller",
        "daemonset.apps/vmruntime-gate-agent",
        "poddisruptionbudget.policy/vmruntime-gate-webhook",
        "service/vmruntime-gate-webhook",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/vmruntime-gate",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/vmruntime-gate",
        "clusterrole.rbac.authorization.k8s.io/vmruntime-gate-controller",
    ] {
        assert!(output.contains(object), "{object} missing from {output}");
    }
    let rendered = Command::new("kubectl")
        .args(["kustomize", repository().join("manifests/overlays/cert-manager").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let rendered = String::from_utf8_lossy(&rendered.stdout);
    assert_eq!(rendered.matches("cert-manager.io/inject-ca-from: vm-system/vmruntime-gate-webhook").count(), 2);
}

#[tokio::test]
async fn live_webhook_ready_only_after_sync() {
    let Some(binaries) = Binaries::from_env() else {
        return;
    };
    let mut control_plane = ControlPlane::prepare(binaries);

    // The API server is not running yet, so the watches cannot sync.
    let webhook = start_live_webhook(&control_plane);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(readyz(&webhook).await, 503);
    let vm_review = review(
        "vm.cluster.gke.io",
        "VirtualMachine",
        "CREATE",
        serde_json::json!({"metadata": {"name": "a", "namespace": "default"}}),
        Value::Null,
    );
    let https = client(&webhook.ca_file, Tls::V13);
    let response = admit(&https, &webhook.url("/validate"), &vm_review).await;
    assert_eq!(response["allowed"], false);
    assert!(response["status"]["message"].as_str().unwrap().contains("not loaded yet"), "{response}");
    let mutate = admit(
        &https,
        &webhook.url("/mutate"),
        &runtime_review("CREATE", runtime(Value::Null, Value::Null), Value::Null),
    )
    .await;
    assert!(mutate.get("patch").is_some(), "defaults are written before the sync: {mutate}");

    // Once the API server runs (with no VM runtime CRDs installed), every watch syncs.
    control_plane.start();
    wait_ready(&webhook).await;
    let response = admit(&https, &webhook.url("/validate"), &vm_review).await;
    assert!(response["status"]["message"].as_str().unwrap().contains("VMRuntime vmruntime not found"), "{response}");
}

#[tokio::test]
async fn rbac_grants_only_what_each_component_needs() {
    let Some(binaries) = Binaries::from_env() else {
        return;
    };
    let mut control_plane = ControlPlane::prepare(binaries);
    control_plane.start();
    install_crds(&control_plane);
    control_plane.kubectl_ok(&["apply", "-f", repository().join("manifests/base/rbac.yaml").to_str().unwrap()], None);

    // (service account, kubectl auth can-i arguments, allowed)
    let cases: &[(&str, &[&str], bool)] = &[
        ("webhook", &["watch", "vmruntimes.vm.cluster.gke.io"], true),
        ("webhook", &["list", "virtualmachines.vm.cluster.gke.io", "-A"], true),
        ("webhook", &["watch", "vmruntimepreflightchecks.vm.cluster.gke.io", "-n", "vm-system"], true),
        ("webhook", &["patch", "vmruntimes.vm.cluster.gke.io"], false),
        ("webhook", &["get", "secrets", "-n", "vm-system"], false),
        ("controller", &["patch", "vmruntimes.vm.cluster.gke.io", "--subresource=status"], true),
        ("controller", &["patch", "vmruntimes.vm.cluster.gke.io"], true),
        ("controller", &["create", "vmruntimepreflightchecks.vm.cluster.gke.io", "-n", "vm-system"], true),
        ("controller", &["delete", "virtualmachines.vm.cluster.gke.io", "-A"], true),
        ("controller", &["delete", "virtualmachinedisks.vm.cluster.gke.io", "-n", "default"], true),
        ("controller", &["list", "nodes"], true),
        ("controller", &["create", "events.events.k8s.io", "-n", "vm-system"], true),
        ("controller", &["update", "leases.coordination.k8s.io", "-n", "vm-system"], true),
        ("controller", &["update", "leases.coordination.k8s.io", "-n", "kube-system"], false),
        ("controller", &["get", "secrets", "-A"], false),
        ("controller", &["create", "pods", "--subresource=exec", "-A"], false),
        ("controller", &["delete", "pods", "-A"], false),
        (
            "agent",
            &["patch", "vmruntimepreflightchecks.vm.cluster.gke.io", "--subresource=status", "-n", "vm-system"],
            true,
        ),
        ("agent", &["get", "vmruntimes.vm.cluster.gke.io"], true),
        ("agent", &["patch", "vmruntimepreflightchecks.vm.cluster.gke.io", "-n", "vm-system"], false),
        ("agent", &["delete", "vmruntimepreflightchecks.vm.cluster.gke.io", "-n", "vm-system"], false),
        ("agent", &["get", "secrets", "-n", "vm-system"], false),
        ("agent", &["create", "pods", "--subresource=exec", "-A"], false),
    ];
    for (account, args, allowed) in cases {
        let user = format!("--as=system:serviceaccount:vm-system:vmruntime-gate-{account}");
        let mut full = vec!["auth", "can-i"];
        full.extend_from_slice(args);
        full.push(&user);
        let output = control_plane.kubectl(&full);
        let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert_eq!(
            answer == "yes",
            *allowed,
            "{account} {args:?}: {answer} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
