//! Starts the real `vmruntime-gate` binary on loopback and talks to it over HTTPS.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

pub const FORCE: &str = "baremetal.cluster.gke.io/vmrumtime-force-disable";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vmruntime-gate")
}

/// Writes a CA and a serving certificate and key for localhost and 127.0.0.1 into `folder` with
/// the `certs` command.
pub fn make_certs(folder: &Path) {
    let status = Command::new(binary())
        .args(["certs", "--out"])
        .arg(folder)
        .args(["--dns-name", "localhost", "--ip", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the certs command failed");
}

/// A running webhook process, killed on drop.
pub struct Webhook {
    child: Child,
    pub listen: SocketAddr,
    pub health: SocketAddr,
    pub ca_file: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
    _certs: tempfile::TempDir,
}

impl Webhook {
    /// Starts the webhook on the cluster state in `state` with extra flags.
    pub fn start(state: &Path, extra: &[&str]) -> Webhook {
        let certs = tempfile::tempdir().unwrap();
        make_certs(certs.path());

        let mut command = Command::new(binary());
        command
            .args(["webhook", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--tls-cert-file")
            .arg(certs.path().join("tls.crt"))
            .arg("--tls-key-file")
            .arg(certs.path().join("tls.key"))
            .arg("--cluster-state")
            .arg(state)
            .args(extra);
        Webhook::spawn(command, certs.path().join("ca.crt"), certs)
    }

    /// Spawns a prepared `webhook` command and waits for its "Serving" log line.
    pub fn spawn(mut command: Command, ca_file: PathBuf, certs: tempfile::TempDir) -> Webhook {
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread_logs = logs.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && event["message"] == "Serving admission webhook"
                {
                    let _ = sender.send((event["listen"].clone(), event["health_listen"].clone()));
                }
                thread_logs.lock().unwrap().push(line);
            }
        });
        let (listen, health) = match receiver.recv_timeout(Duration::from_secs(20)) {
            Ok(addresses) => addresses,
            Err(_) => {
                let _ = child.kill();
                panic!("webhook did not start; logs: {:?}", logs.lock().unwrap());
            }
        };
        Webhook {
            child,
            listen: listen.as_str().unwrap().parse().unwrap(),
            health: health.as_str().unwrap().parse().unwrap(),
            ca_file,
            logs,
            _certs: certs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.listen.port())
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Returns the last `count` log lines, one per line.
    pub fn log_tail(&self, count: usize) -> String {
        let logs = self.logs.lock().unwrap();
        logs[logs.len().saturating_sub(count)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Tls {
    V12,
    V13,
}

/// An HTTPS client that trusts only `ca_file` and speaks only the given TLS version.
pub fn client(ca_file: &Path, version: Tls) -> reqwest::Client {
    client_with_alpn(ca_file, version, &[b"h2", b"http/1.1"])
}

/// Like [`client`], offering only the given ALPN protocols.
pub fn client_with_alpn(ca_file: &Path, version: Tls, alpn: &[&[u8]]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match version {
        Tls::V12 => &[&rustls::version::TLS12],
        Tls::V13 => &[&rustls::version::TLS13],
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    reqwest::Client::builder().tls_backend_preconfigured(config).no_proxy().build().unwrap()
}

/// Sends `body` as JSON and returns the status and the body text.
pub async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>, content_type: &str) -> (u16, String) {
    let response = client.post(url).header("Content-Type", content_type).body(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Sends an AdmissionReview and returns its `response` object, checking status 200 and the uid.
pub async fn admit(client: &reqwest::Client, url: &str, review: &Value) -> Value {
    let (status, text) = post(client, url, serde_json::to_vec(review).unwrap(), "application/json").await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["apiVersion"], review["apiVersion"]);
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    answer["response"].clone()
}

/// Decodes and applies the base64 JSON patch of `response` to `object`.
pub fn apply_patch(response: &Value, object: &Value) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    patched
}

/// Decodes the base64 JSON patch of `response` into its operations.
pub fn patch_operations(response: &Value) -> Vec<Value> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Builds an AdmissionReview v1 request for `group`/`kind`.
pub fn review(group: &str, kind: &str, operation: &str, object: Value, old_object: Value) -> Value {
    let name = object.pointer("/metadata/name").or_else(|| old_object.pointer("/metadata/name")).cloned();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{}", uuid_like()),
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "name": name.unwrap_or(json!("")),
            "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
            "operation": operation,
            "userInfo": {"username": "tester"},
            "object": object,
            "oldObject": old_object,
            "dryRun": false
        }
    })
}

fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Builds a VMRuntime named `vmruntime`, leaving out `spec` and `annotations` when they are null.
pub fn runtime(spec: Value, annotations: Value) -> Value {
    let mut object =
        json!({"apiVersion": "vm.cluster.gke.io/v1", "kind": "VMRuntime", "metadata": {"name": "vmruntime"}});
    if !spec.is_null() {
        object["spec"] = spec;
    }
    if !annotations.is_null() {
        object["metadata"]["annotations"] = annotations;
    }
    object
}

pub fn runtime_review(operation: &str, object: Value, old_object: Value) -> Value {
    review("vm.cluster.gke.io", "VMRuntime", operation, object, old_object)
}

/// Writes YAML documents into a new cluster state folder.
pub fn state(documents: &[&str]) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("state.yaml"), documents.join("\n---\n")).unwrap();
    folder
}

pub const RUNTIME_ENABLED: &str =
    "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntime\nmetadata: {name: vmruntime}\nspec: {enabled: true}";
pub const RUNTIME_DISABLED: &str =
    "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntime\nmetadata: {name: vmruntime}\nspec: {enabled: false}";

/// Writes a preflight check document, with a failed KVM result on node `failure` when given.
pub fn check(name: &str, created: &str, pass: Option<bool>, failure: Option<&str>) -> String {
    let mut text = format!(
        "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntimePreflightCheck\n\
         metadata: {{name: {name}, namespace: vm-system, creationTimestamp: \"{created}\"}}\nstatus:\n"
    );
    match pass {
        Some(pass) => text.push_str(&format!("  pass: {pass}\n")),
        None => text.push_str("  startTime: \"2026-12-01T00:00:00Z\"\n"),
    }
    if let Some(node) = failure {
        text.push_str(&format!(
            "  checks:\n    {node}:\n      passed: false\n      results:\n      - {{checkName: KVM, passed: false, message: /dev/kvm not found}}\n"
        ));
    }
    text
}

pub mod control_plane;
pub mod e2e;

/// A background process of the product, such as the controller or an agent, killed on drop.
/// Its standard error goes to a log file that a failing test prints.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    _folder: tempfile::TempDir,
}

impl Daemon {
    pub fn spawn(name: &str, mut command: Command) -> Daemon {
        let folder = tempfile::tempdir().unwrap();
        let log = folder.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Daemon { name: name.to_owned(), child: Some(child), log, _folder: folder }
    }

    /// Kills the process at once with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- last lines of the {} log ---\n{}",
                self.name,
                lines[lines.len().saturating_sub(25)..].join("\n")
            );
        }
        self.kill();
    }
}
