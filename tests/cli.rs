//! The offline commands as a user runs them: review, certs, crds and webhook --dev.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `review` with `input` on standard input and returns (exit code, stdout, stderr).
fn review_stdin(endpoint: &str, state: &Path, input: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(binary())
        .args(["review", "--endpoint", endpoint, "--cluster-state"])
        .arg(state)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit before it reads its input, for example when the cluster state is
    // invalid, and then the write fails with a broken pipe.
    if let Err(error) = child.stdin.take().unwrap().write_all(input) {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "writing the review failed: {error}");
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn review_exit_codes() {
    let state = repository().join("manifests/examples/cluster");
    let reviews = repository().join("manifests/examples/reviews");

    let allowed = std::fs::read(reviews.join("vm-create.json")).unwrap();
    let (code, stdout, _) = review_stdin("validate", &state, &allowed);
    assert_eq!(code, 0, "{stdout}");
    let response: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(response["response"]["allowed"], true);

    let denied = std::fs::read(reviews.join("vmruntime-disable.json")).unwrap();
    let (code, stdout, _) = review_stdin("validate", &state, &denied);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("default/web-0"), "{stdout}");

    let (code, stdout, stderr) = review_stdin("validate", &state, b"not json");
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("not valid JSON"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let mut malformed: serde_json::Value = serde_json::from_slice(&allowed).unwrap();
    malformed["request"]["operation"] = serde_json::json!("PATCH");
    let (code, _, stderr) = review_stdin("validate", &state, &serde_json::to_vec(&malformed).unwrap());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("PATCH"), "{stderr}");
}

#[test]
fn review_mutate_from_file() {
    let output = Command::new(binary())
        .args(["review", "--endpoint", "mutate", "--cluster-state"])
        .arg(repository().join("manifests/examples/cluster"))
        .arg(repository().join("manifests/examples/reviews/vmruntime-create.json"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let object = serde_json::json!({"apiVersion": "vm.cluster.gke.io/v1", "kind": "VMRuntime", "metadata": {"name": "vmruntime"}});
    let patched = apply_patch(&response["response"], &object);
    assert_eq!(patched["spec"]["enabled"], false);
    assert_eq!(patched["metadata"]["annotations"][FORCE], "false");
}

#[test]
fn review_bad_cluster_state() {
    let folder = state(&["apiVersion: v1\nkind: Pod\nmetadata: {name: p}"]);
    let (code, _, stderr) = review_stdin("validate", folder.path(), b"{}");
    assert_eq!(code, 2);
    assert!(stderr.contains("kind Pod"), "{stderr}");
}

#[test]
fn certs_writes_files_and_ca_bundle() {
    use base64::Engine;
    let folder = tempfile::tempdir().unwrap();
    let output = Command::new(binary())
        .args(["certs", "--out"])
        .arg(folder.path())
        .args(["--dns-name", "vmruntime-gate.vm-system.svc", "--ip", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let bundle = String::from_utf8(output.stdout).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD.decode(bundle.trim()).unwrap();
    assert_eq!(decoded, std::fs::read(folder.path().join("ca.crt")).unwrap());
    assert!(folder.path().join("tls.crt").exists());
    assert!(folder.path().join("tls.key").exists());
}

#[test]
fn certs_without_names_fails() {
    let folder = tempfile::tempdir().unwrap();
    let output = Command::new(binary()).args(["certs", "--out"]).arg(folder.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--dns-name"));
}

#[test]
fn webhook_missing_certificate_named() {
    let output = Command::new(binary())
        .args(["webhook", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .args(["--tls-cert-file", "/nonexistent/tls.crt", "--tls-key-file", "/nonexistent/tls.key"])
        .arg("--cluster-state")
        .arg(repository().join("manifests/examples/cluster"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/tls.crt"), "{stderr}");
    assert!(stderr.contains("--tls-cert-file"), "{stderr}");
}

#[test]
fn webhook_without_tls_flags_is_usage_error() {
    let output = Command::new(binary()).args(["webhook"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tls-cert-file"));
}

#[tokio::test]
async fn webhook_dev_creates_certificates_and_serves_example() {
    let workdir = tempfile::tempdir().unwrap();
    let cluster = workdir.path().join("manifests/examples/cluster");
    std::fs::create_dir_all(&cluster).unwrap();
    for entry in std::fs::read_dir(repository().join("manifests/examples/cluster")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), cluster.join(entry.file_name())).unwrap();
    }
    let mut command = Command::new(binary());
    command.current_dir(workdir.path()).args([
        "webhook",
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--health-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    let certs = tempfile::tempdir().unwrap();
    let webhook = Webhook::spawn(command, workdir.path().join("certs/ca.crt"), certs);
    assert!(workdir.path().join("certs/tls.key").exists());

    let client = client(&webhook.ca_file, Tls::V13);
    let review: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repository().join("manifests/examples/reviews/vm-create.json")).unwrap())
            .unwrap();
    let response = admit(&client, &webhook.url("/validate"), &review).await;
    assert_eq!(response["allowed"], true);
}

#[test]
fn bash_completes_subcommand_options() {
    let output = Command::new(binary()).args(["completion", "bash"]).output().unwrap();
    assert!(output.status.success());
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), &output.stdout).unwrap();

    // Calls the completion function as bash does for `vmruntime-gate disable --<TAB>`.
    let complete = format!(
        "source {}; COMP_WORDS=(vmruntime-gate disable --); COMP_CWORD=2; \
         _vmruntime__gate vmruntime-gate -- disable; echo \"${{COMPREPLY[*]}}\"",
        script.path().display()
    );
    let completed = Command::new("bash").args(["-c", &complete]).output().unwrap();
    let words = String::from_utf8_lossy(&completed.stdout).into_owned();
    assert!(completed.status.success(), "{}", String::from_utf8_lossy(&completed.stderr));
    assert!(words.split_whitespace().any(|word| word == "--force"), "{words}");
    assert!(words.split_whitespace().any(|word| word == "--wait"), "{words}");
}
