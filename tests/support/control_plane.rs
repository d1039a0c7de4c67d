//! A real etcd and kube-apiserver on 127.0.0.1, started from the binaries that
//! `scripts/control-plane.sh` provides through `ETCD` and `KUBE_APISERVER`.
//!
//! Every process runs in a temporary folder that is removed on drop. Folders left by a run that
//! was killed are removed by the next start.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FOLDER_PREFIX: &str = "vmruntime-gate-e2e-";
const TOKEN: &str = "e2e-admin-token";
/// Token of a user that RBAC grants nothing.
const UNPRIVILEGED_TOKEN: &str = "e2e-nobody-token";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Paths of the control-plane binaries, from the environment.
pub struct Binaries {
    etcd: PathBuf,
    kube_apiserver: PathBuf,
}

impl Binaries {
    /// Reads `ETCD` and `KUBE_APISERVER`. Without them the suite is skipped with a notice, except
    /// under `CI=true`, where it fails with the reason.
    pub fn from_env() -> Option<Binaries> {
        let etcd = std::env::var_os("ETCD").map(PathBuf::from);
        let kube_apiserver = std::env::var_os("KUBE_APISERVER").map(PathBuf::from);
        match (etcd, kube_apiserver) {
            (Some(etcd), Some(kube_apiserver)) => Some(Binaries { etcd, kube_apiserver }),
            _ if std::env::var("CI").is_ok_and(|value| value == "true") => {
                panic!("ETCD and KUBE_APISERVER are not set; run the tests through scripts/test.sh")
            }
            _ => {
                eprintln!(
                    "skipping the API server tests: ETCD and KUBE_APISERVER are not set; \
                     run `bash scripts/test.sh`, or `eval \"$(bash scripts/control-plane.sh)\"` before cargo test"
                );
                None
            }
        }
    }
}

/// A control plane whose files and ports are chosen; [`ControlPlane::start`] runs it.
pub struct ControlPlane {
    binaries: Binaries,
    pub folder: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub port: u16,
    etcd: Option<Child>,
    apiserver: Option<Child>,
}

impl ControlPlane {
    /// Writes certificates, the token file and the kubeconfig, without starting anything.
    pub fn prepare(binaries: Binaries) -> ControlPlane {
        remove_stale_folders();
        let folder =
            tempfile::Builder::new().prefix(&format!("{FOLDER_PREFIX}{}-", std::process::id())).tempdir().unwrap();
        let certs = folder.path().join("certs");
        super::make_certs(&certs);
        // The API server reads service account verification keys only as public keys or SEC1/PKCS#1
        // private keys, not as the PKCS#8 key that `certs` writes.
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.join("tls.key")).unwrap()).unwrap();
        std::fs::write(certs.join("service-account.pub"), key.public_key_pem()).unwrap();
        std::fs::write(
            folder.path().join("tokens.csv"),
            format!("{TOKEN},e2e-admin,e2e-admin-uid,system:masters\n{UNPRIVILEGED_TOKEN},e2e-nobody,e2e-nobody-uid\n"),
        )
        .unwrap();

        let port = free_port();
        let kubeconfig = folder.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{port}\n    \
                 certificate-authority: {ca}\nusers:\n- name: e2e-admin\n  user:\n    token: {TOKEN}\ncontexts:\n\
                 - name: e2e\n  context:\n    cluster: e2e\n    user: e2e-admin\ncurrent-context: e2e\n",
                ca = certs.join("ca.crt").display()
            ),
        )
        .unwrap();
        ControlPlane { binaries, folder, kubeconfig, port, etcd: None, apiserver: None }
    }

    /// Starts etcd and kube-apiserver and waits until `/readyz` succeeds.
    pub fn start(&mut self) {
        let dir = self.folder.path().to_owned();
        let client_port = free_port();
        let peer_port = free_port();
        let etcd_log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        self.etcd = Some(
            Command::new(&self.binaries.etcd)
                .arg("--data-dir")
                .arg(dir.join("etcd"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client_port}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client_port}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"))
                .stdout(etcd_log.try_clone().unwrap())
                .stderr(etcd_log)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start etcd {}: {error}", self.binaries.etcd.display())),
        );

        let certs = dir.join("certs");
        let apiserver_log = std::fs::File::create(dir.join("kube-apiserver.log")).unwrap();
        self.apiserver = Some(
            Command::new(&self.binaries.kube_apiserver)
                .arg(format!("--etcd-servers=http://127.0.0.1:{client_port}"))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--insecure-port=0"])
                .arg(format!("--secure-port={}", self.port))
                .arg(format!("--cert-dir={}", dir.join("apiserver-certs").display()))
                .arg(format!("--tls-cert-file={}", certs.join("tls.crt").display()))
                .arg(format!("--tls-private-key-file={}", certs.join("tls.key").display()))
                .arg(format!("--token-auth-file={}", dir.join("tokens.csv").display()))
                .arg("--authorization-mode=RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", certs.join("service-account.pub").display()))
                .arg(format!("--service-account-signing-key-file={}", certs.join("tls.key").display()))
                .arg("--service-cluster-ip-range=10.96.0.0/24")
                .arg("--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook")
                .stdout(apiserver_log.try_clone().unwrap())
                .stderr(apiserver_log)
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("cannot start kube-apiserver {}: {error}", self.binaries.kube_apiserver.display())
                }),
        );

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let output = self.kubectl(&["get", "--raw", "/readyz"]);
            if output.status.success() {
                return;
            }
            let exited = [("etcd", &mut self.etcd), ("kube-apiserver", &mut self.apiserver)].into_iter().find_map(
                |(name, child)| child.as_mut().and_then(|child| child.try_wait().unwrap()).map(|status| (name, status)),
            );
            if let Some((name, status)) = exited {
                panic!("{name} exited with {status} before the API server was ready; log:\n{}", self.log_tail(name));
            }
            if Instant::now() > deadline {
                panic!(
                    "kube-apiserver not ready after {READY_TIMEOUT:?}: {}; log:\n{}",
                    String::from_utf8_lossy(&output.stderr),
                    self.log_tail("kube-apiserver")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Returns the end of a process log, or the start of a Go crash report when the log has one.
    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.folder.path().join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let crash = lines.iter().position(|line| line.starts_with("panic:") || line.starts_with("fatal error:"));
        match crash {
            Some(start) => lines[start.saturating_sub(5)..(start + 30).min(lines.len())].join("\n"),
            None => lines[lines.len().saturating_sub(30)..].join("\n"),
        }
    }

    /// Runs kubectl against this API server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_input(args, None)
    }

    /// Runs kubectl with `input` on standard input.
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl on PATH");
        if let Some(input) = input {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl, asserts success, and returns standard output.
    pub fn kubectl_ok(&self, args: &[&str], input: Option<&str>) -> String {
        let output = self.kubectl_with_input(args, input);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs kubectl, asserts failure, and returns standard error.
    pub fn kubectl_err(&self, args: &[&str], input: Option<&str>) -> String {
        let output = self.kubectl_with_input(args, input);
        assert!(!output.status.success(), "kubectl {args:?} succeeded: {}", String::from_utf8_lossy(&output.stdout));
        String::from_utf8(output.stderr).unwrap()
    }

    /// Writes a kubeconfig for a user without any RBAC permission and returns its path.
    pub fn unprivileged_kubeconfig(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap().replace(TOKEN, UNPRIVILEGED_TOKEN);
        let path = self.folder.path().join("kubeconfig-nobody");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn ca_file(&self) -> PathBuf {
        self.folder.path().join("certs/ca.crt")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["kube-apiserver", "etcd"] {
                eprintln!("--- last lines of the {name} log ---\n{}", self.log_tail(name));
            }
        }
        for child in [self.apiserver.as_mut(), self.etcd.as_mut()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Removes folders of earlier runs whose test process no longer exists.
fn remove_stale_folders() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(FOLDER_PREFIX).and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
