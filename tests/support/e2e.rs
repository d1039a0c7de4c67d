//! Shared steps of the end-to-end tests: CRDs, the live-mode webhook and its configurations.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;

use std::path::PathBuf;

use serde_json::Value;

use super::control_plane::ControlPlane;
use super::{Daemon, Tls, Webhook, binary, client, make_certs};

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Webhook configurations that send VMRuntime changes and VM creations to `port` on 127.0.0.1.
pub fn webhook_configurations(port: u16, ca_file: &Path) -> String {
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
pub fn start_live_webhook(control_plane: &ControlPlane) -> Webhook {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
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

pub async fn readyz(webhook: &Webhook) -> u16 {
    let client = client(&webhook.ca_file, Tls::V13);
    client.get(format!("http://{}/readyz", webhook.health)).send().await.unwrap().status().as_u16()
}

pub async fn wait_ready(webhook: &Webhook) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(webhook).await != 200 {
        assert!(Instant::now() < deadline, "webhook /readyz not ready; last log lines:\n{}", webhook.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Retries `action` until it returns `Ok`, for changes that reach the webhook through a watch.
/// On timeout, the panic shows the last error.
pub async fn eventually(what: &str, mut action: impl FnMut() -> Result<(), String>) {
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
pub fn kubectl_result(
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

pub fn install_crds(control_plane: &ControlPlane) {
    let manifests = repository().join("manifests");
    control_plane.kubectl_ok(&["apply", "-f", manifests.join("base/namespace.yaml").to_str().unwrap()], None);
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

pub fn host(name: &str) -> PathBuf {
    repository().join("tests/fixtures/hosts").join(name)
}

pub fn product(control_plane: &ControlPlane, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.env("KUBECONFIG", &control_plane.kubeconfig).env("RUST_LOG", "info").args(args);
    command
}

pub fn agent(control_plane: &ControlPlane, node: &str, host_name: &str) -> Daemon {
    let root = host(host_name);
    Daemon::spawn(
        &format!("agent {node}"),
        product(control_plane, &["agent", "--node-name", node, "--host-root", root.to_str().unwrap()]),
    )
}

pub fn controller(control_plane: &ControlPlane, identity: &str) -> Daemon {
    Daemon::spawn(
        &format!("controller {identity}"),
        product(
            control_plane,
            &["controller", "--node-timeout", "6s", "--lease-duration", "4s", "--identity", identity],
        ),
    )
}

/// Polls `probe` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn get_json(control_plane: &ControlPlane, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    serde_json::from_str(&control_plane.kubectl_ok(&full, None)).unwrap()
}

/// Starts the webhook in live mode, registers it with the API server, and creates the Nodes
/// `worker-0` and `worker-1`: the common start of the preflight and operator walkthroughs.
pub async fn webhook_and_two_nodes(control_plane: &ControlPlane) -> Webhook {
    let webhook = start_live_webhook(control_plane);
    wait_ready(&webhook).await;
    control_plane
        .kubectl_ok(&["apply", "-f", "-"], Some(&webhook_configurations(webhook.listen.port(), &webhook.ca_file)));
    for node in ["worker-0", "worker-1"] {
        let object = format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n");
        control_plane.kubectl_ok(&["create", "-f", "-"], Some(&object));
    }
    webhook
}
