//! End to end through a real kube-apiserver, etcd and kubectl, with the webhook in live mode
//! (watching the API server) registered through webhook configurations.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use support::control_plane::{Binaries, ControlPlane};
use support::*;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Webhook configurations that send VMRuntime changes and VM creations to `port` on 127.0.0.1.
fn webhook_configurations(port: u16, ca_file: &Path) -> String {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(std::fs::read(ca_file).unwrap());
    let client = |path: &str| format!("url: https://127.0.0.1:{port}/{path}\n      caBundle: {ca_bundle}");
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: vmruntime-gate
webhooks:
  - name: defaults.vmruntime-gate.vm.cluster.gke.io
    admissionReviewVersions: [v1, v1beta1]
    sideEffects: None
    failurePolicy: Fail
    timeoutSeconds: 5
    clientConfig:
      {mutate}
    rules:
      - {{apiGroups: [vm.cluster.gke.io], apiVersions: ["*"], operations: [CREATE, UPDATE], resources: [vmruntimes], scope: Cluster}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: vmruntime-gate
webhooks:
  - name: vmruntime.vmruntime-gate.vm.cluster.gke.io
    admissionReviewVersions: [v1, v1beta1]
    sideEffects: None
    failurePolicy: Fail
    timeoutSeconds: 5
    clientConfig:
      {validate}
    rules:
      - {{apiGroups: [vm.cluster.gke.io], apiVersions: ["*"], operations: [CREATE, UPDATE, DELETE], resources: [vmruntimes], scope: Cluster}}
  - name: vms.vmruntime-gate.vm.cluster.gke.io
    admissionReviewVersions: [v1, v1beta1]
    sideEffects: None
    failurePolicy: Fail
    timeoutSeconds: 5
    clientConfig:
      {validate}
    rules:
      - {{apiGroups: [vm.cluster.gke.io], apiVersions: ["*"], operations: [CREATE], resources: [virtualmachines], scope: Namespaced}}
      - {{apiGroups: [kubevirt.io], apiVersions: ["*"], operations: [CREATE], resources: [virtualmachines, virtualmachineinstances], scope: Namespaced}}
"#,
        mutate = client("mutate"),
        validate = client("validate"),
    )
}

/// Starts the webhook in live mode against the control plane's kubeconfig.
fn start_live_webhook(control_plane: &ControlPlane) -> Webhook {
    let certs = tempfile::tempdir().unwrap();
    let status = Command::new(binary())
        .args(["certs", "--out"])
        .arg(certs.path())
        .args(["--dns-name", "localhost", "--ip", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut command = Command::new(binary());
    command
        .env("KUBECONFIG", &control_plane.kubeconfig)
        .args(["webhook", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--tls-cert-file")
        .arg(certs.path().join("tls.crt"))
        .arg("--tls-key-file")
        .arg(certs.path().join("tls.key"));
    let ca_file = certs.path().join("ca.crt");
    Webhook::spawn(command, ca_file, certs)
}

async fn readyz(webhook: &Webhook) -> u16 {
    let client = client(&webhook.ca_file, Tls::V13);
    client.get(format!("http://{}/readyz", webhook.health)).send().await.unwrap().status().as_u16()
}

async fn wait_ready(webhook: &Webhook) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(webhook).await != 200 {
        assert!(Instant::now() < deadline, "webhook /readyz not ready; last log lines:\n{}", webhook.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Retries `action` until it returns `Ok`, for changes that reach the webhook through a watch.
/// On timeout, the panic shows the last error.
async fn eventually(what: &str, mut action: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match action() {
            Ok(()) => return,
            Err(error) if Instant::now() > deadline => panic!("timed out waiting until {what}; last error: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Runs kubectl and returns `Ok` with standard error when `expected_success` matches its result.
fn kubectl_result(
    control_plane: &ControlPlane,
    args: &[&str],
    input: Option<&str>,
    expected_success: bool,
) -> Result<String, String> {
    let output = control_plane.kubectl_with_input(args, input);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() == expected_success {
        Ok(stderr)
    } else {
        Err(format!("kubectl {args:?}: {}{stderr}", String::from_utf8_lossy(&output.stdout)))
    }
}

fn install_crds(control_plane: &ControlPlane) {
    let manifests = repository().join("manifests");
    control_plane.kubectl_ok(&["apply", "-f", manifests.join("namespace.yaml").to_str().unwrap()], None);
    control_plane.kubectl_ok(&["apply", "-f", manifests.join("crds/crds.yaml").to_str().unwrap()], None);
    let test_crds = repository().join("tests/fixtures/crds/vm-runtime-kinds.yaml");
    control_plane.kubectl_ok(&["apply", "-f", test_crds.to_str().unwrap()], None);
    control_plane.kubectl_ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/vmruntimes.vm.cluster.gke.io",
            "crd/vmruntimepreflightchecks.vm.cluster.gke.io",
            "crd/virtualmachines.vm.cluster.gke.io",
            "crd/virtualmachinedisks.vm.cluster.gke.io",
        ],
        None,
    );
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
    assert!(yaml.contains("vmImageFormat: raw") && yaml.contains("vmrumtime-force-disable: \"false\""), "{yaml}");
    let table = control_plane.kubectl_ok(&["get", "vmruntime"], None);
    assert!(table.contains("ENABLED") && table.contains("PREFLIGHTCHECK"), "{table}");

    // 2. Another name is rejected with the webhook's message.
    let other =
        "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntime\nmetadata: {name: runtime-2}\nspec: {enabled: true}\n";
    let error = control_plane.kubectl_err(&["create", "-f", "-"], Some(other));
    assert!(error.contains("denied the request") && error.contains("must be named \"vmruntime\""), "{error}");

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
    assert!(error.contains("check-1 failed") && error.contains("worker-1"), "{error}");

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

    // 5. Every manifest is valid for a real API server.
    let output = control_plane
        .kubectl_ok(&["apply", "--dry-run=server", "-k", repository().join("manifests").to_str().unwrap()], None);
    assert!(output.contains("vmruntimes.vm.cluster.gke.io"), "{output}");
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
