//! The operator commands end to end, against a real kube-apiserver with the webhook, the
//! controller and one agent per fixture host running.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::control_plane::{Binaries, ControlPlane};
use support::e2e::{self, agent, controller, get_json, wait_for};
use support::*;

const GVM: &str = "apiVersion: vm.cluster.gke.io/v1\nkind: VirtualMachine\nmetadata: {name: web-0, namespace: default}\n\
                   spec:\n  disks:\n  - virtualMachineDiskName: web-0-boot\n";
const DISK: &str = "apiVersion: vm.cluster.gke.io/v1\nkind: VirtualMachineDisk\nmetadata: {name: web-0-boot, namespace: default}\nspec: {}\n";

/// Runs `vmruntime-gate ARGS --kubeconfig ...` with standard input closed.
fn ctl(control_plane: &ControlPlane, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .arg("--kubeconfig")
        .arg(&control_plane.kubeconfig)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs the command on a pseudo-terminal made by script(1), typing `input`.
fn ctl_on_terminal(control_plane: &ControlPlane, args: &[&str], input: &str) -> Output {
    let command_line = format!("{} {} --kubeconfig {}", binary(), args.join(" "), control_plane.kubeconfig.display());
    let mut child = Command::new("script")
        .args(["-qec", &command_line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    let mut stdin = child.stdin.take().unwrap();
    // The prompt comes after the VM listing; typing early is buffered by the terminal.
    stdin.write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    output
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn runtime_json(control_plane: &ControlPlane) -> Value {
    get_json(control_plane, &["get", "vmruntime", "vmruntime"])
}

async fn create_vm(control_plane: &ControlPlane) {
    control_plane.kubectl_ok(&["apply", "-f", "-"], Some(DISK));
    e2e::eventually("the VM is created", || {
        e2e::kubectl_result(control_plane, &["create", "-f", "-"], Some(GVM), true).map(drop)
    })
    .await;
}

async fn vm_gone(control_plane: &ControlPlane) {
    wait_for("the VM and its disk are deleted", Duration::from_secs(60), || {
        let vm = control_plane.kubectl(&["get", "gvm", "web-0", "-n", "default"]);
        let disk =
            control_plane.kubectl(&["get", "virtualmachinedisks.vm.cluster.gke.io", "web-0-boot", "-n", "default"]);
        (!vm.status.success() && !disk.status.success()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn operator_commands() {
    let Some(binaries) = Binaries::from_env() else {
        return;
    };
    let mut control_plane = ControlPlane::prepare(binaries);
    control_plane.start();

    // Before the CRDs exist, and for a user without RBAC permissions, the errors name the fix.
    let output = ctl(&control_plane, &["status"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("install the CRDs"), "{}", text(&output));
    e2e::install_crds(&control_plane);
    let nobody = control_plane.unprivileged_kubeconfig();
    let output = Command::new(binary()).args(["status", "--kubeconfig"]).arg(&nobody).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("forbidden"), "{}", text(&output));
    assert!(text(&output).contains("RBAC permission"), "{}", text(&output));
    let closed = control_plane.folder.path().join("kubeconfig-closed");
    let unreachable = std::fs::read_to_string(&control_plane.kubeconfig)
        .unwrap()
        .replace(&format!("127.0.0.1:{}", control_plane.port), "127.0.0.1:1");
    std::fs::write(&closed, unreachable).unwrap();
    let output = Command::new(binary()).args(["status", "--kubeconfig"]).arg(&closed).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("cannot reach the API server at https://127.0.0.1:1"), "{}", text(&output));
    let _webhook = e2e::webhook_and_two_nodes(&control_plane).await;
    let _agent_0 = agent(&control_plane, "worker-0", "intel-kvm");
    let _agent_1 = agent(&control_plane, "worker-1", "intel-no-kvm");
    let _controller = controller(&control_plane, "replica-a");

    // Status and disable before the VMRuntime exists name the missing object.
    let output = ctl(&control_plane, &["status"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("VMRuntime vmruntime not found"), "{}", text(&output));

    // enable --wait follows the check, which fails on worker-1; a second enable fails.
    let output = ctl(&control_plane, &["enable", "--wait", "--timeout", "90s"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("NODE"), "{stdout}");
    assert!(stdout.contains("MESSAGE"), "{stdout}");
    assert!(
        stdout.lines().any(|line| line.starts_with("worker-1") && line.contains("KVM") && line.contains("false")),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("failed on worker-1 (KVM)"), "{}", text(&output));
    let output = ctl(&control_plane, &["enable"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("already enabled"), "{}", text(&output));

    // check --wait: failed while worker-1 has no KVM, passed once it is skipped.
    let output = ctl(&control_plane, &["check", "--wait", "--timeout", "60s"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    control_plane.kubectl_ok(&["label", "node", "worker-1", "kubevm.io/VM-SkipSchedule="], None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let output = ctl(&control_plane, &["check", "--wait", "--timeout", "60s"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("passed"), "{}", text(&output));

    // status in both formats, directly and as a kubectl plugin.
    let report = wait_for("status reports ready", Duration::from_secs(20), || {
        let output = ctl(&control_plane, &["status", "-o", "json"]);
        let report: Value = serde_json::from_slice(&output.stdout).ok()?;
        (report["ready"] == true).then_some(report)
    })
    .await;
    assert_eq!(report["enabled"], true);
    assert_eq!(report["vmImageFormat"], "raw");
    assert_eq!(report["latestCheck"]["passed"], true);
    assert_eq!(report["vms"]["total"], 0);
    let output = ctl(&control_plane, &["status"]);
    assert_eq!(output.status.code(), Some(0));
    let status_text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        status_text.contains("Enabled:        yes") && status_text.contains("Ready:          yes"),
        "{status_text}"
    );
    let plugins = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(binary(), plugins.path().join("kubectl-vmruntime")).unwrap();
    let path = format!("{}:{}", plugins.path().display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("kubectl")
        .args(["vmruntime", "status"])
        .env("PATH", path)
        .env("KUBECONFIG", &control_plane.kubeconfig)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    // The same report, apart from the age of the latest check, which may have grown by a second.
    let without_age = |text: &str| -> Vec<String> {
        text.lines().map(|line| line.split(", ").next().unwrap_or(line).to_owned()).collect()
    };
    let plugin_text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(without_age(&plugin_text), without_age(&status_text), "{plugin_text}");

    // Row 1: no VMs, so disable works at once; enable again for the next rows.
    let output = ctl(&control_plane, &["disable"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(runtime_json(&control_plane)["spec"]["enabled"], false);
    let output = ctl(&control_plane, &["enable", "--wait", "--timeout", "90s"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    create_vm(&control_plane).await;

    // Row 4: VMs and the annotation "false": nothing changes, the VMs are listed, exit status 1.
    let output = ctl(&control_plane, &["disable"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("default/web-0 (VirtualMachine.vm.cluster.gke.io"), "{}", text(&output));
    assert_eq!(runtime_json(&control_plane)["spec"]["enabled"], true);

    // Row 3: with the annotation "true" and no --force, a prompt requests confirmation first.
    control_plane.kubectl_ok(&["annotate", "vmruntime", "vmruntime", &format!("{FORCE}=true"), "--overwrite"], None);
    let output = ctl(&control_plane, &["disable"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("--yes"), "{}", text(&output));
    let output = ctl_on_terminal(&control_plane, &["disable"], "n\n");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("[y/N]"), "{}", text(&output));
    assert!(text(&output).contains("not confirmed"), "{}", text(&output));
    assert_eq!(runtime_json(&control_plane)["spec"]["enabled"], true);
    let output = ctl_on_terminal(&control_plane, &["disable", "--wait", "--timeout", "60s"], "y\n");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    vm_gone(&control_plane).await;
    assert_eq!(runtime_json(&control_plane)["spec"]["enabled"], false);

    // Row 2: VMs and --force: the annotation is set, the runtime disabled, the VMs deleted.
    let output = ctl(&control_plane, &["enable", "--wait", "--timeout", "90s"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    create_vm(&control_plane).await;
    let output = ctl(&control_plane, &["disable", "--force", "--wait", "--timeout", "60s"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("default/web-0"), "{}", text(&output));
    vm_gone(&control_plane).await;
    let runtime = runtime_json(&control_plane);
    assert_eq!(runtime["spec"]["enabled"], false);
    assert_eq!(runtime["metadata"]["annotations"][FORCE], "false");

    // A forced DELETE of the VMRuntime deletes the VMs before the object goes, and enabling
    // afterwards creates a new VMRuntime and runs a new check.
    let output = ctl(&control_plane, &["enable", "--wait", "--timeout", "90s"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    create_vm(&control_plane).await;
    control_plane.kubectl_ok(&["annotate", "vmruntime", "vmruntime", &format!("{FORCE}=true"), "--overwrite"], None);
    let output = control_plane.kubectl_with_input(&["delete", "vmruntime", "vmruntime", "--wait=false"], None);
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("deletes 1 VM"), "{}", text(&output));
    vm_gone(&control_plane).await;
    wait_for("the VMRuntime is deleted", Duration::from_secs(30), || {
        (!control_plane.kubectl(&["get", "vmruntime", "vmruntime"]).status.success()).then_some(())
    })
    .await;
    let output = ctl(&control_plane, &["enable", "--wait", "--timeout", "60s"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    // Bad usage exits with 2.
    let output = ctl(&control_plane, &["status", "-o", "yaml"]);
    assert_eq!(output.status.code(), Some(2));
}
