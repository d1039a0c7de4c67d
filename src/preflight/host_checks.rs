//! The checks a node agent runs against the host's root folder (`--host-root`, `/mnt` in the
//! DaemonSet, where the host's `/` is mounted read-only).
//!
//! | check | passes when | on failure |
//! |---|---|---|
//! | CPU | `vmx` or `svm` in the cpuinfo flags, or an ARM CPU | fails the node |
//! | KVM | `dev/kvm` is a character device | fails the node |
//! | TUN | `dev/net/tun` exists | fails the node |
//! | VHOST_NET | `dev/vhost-net` exists | warning |
//! | VSOCK | `dev/vhost-vsock` exists | warning |
//!
//! With emulation on, CPU and KVM failures become warnings because QEMU emulates the CPU.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::WARNING_PREFIX;
use crate::resources::preflight_check::{CheckResult, NodeResult};

pub const CPU: &str = "CPU";
pub const KVM: &str = "KVM";
pub const TUN: &str = "TUN";
pub const VHOST_NET: &str = "VHOST_NET";
pub const VSOCK: &str = "VSOCK";

/// Runs every check against `root` and returns the node's result.
pub fn run(root: &Path, use_emulation: bool) -> NodeResult {
    let mut results = vec![check_cpu(root), check_kvm(root), check_tun(root)];
    if use_emulation {
        for result in &mut results[..2] {
            soften(result, "VMs run under software emulation because spec.useEmulation is true");
        }
    }
    results.push(warn_if_missing(
        root,
        VHOST_NET,
        "dev/vhost-net",
        "VM networking runs without vhost acceleration; load the vhost_net kernel module",
    ));
    results.push(warn_if_missing(
        root,
        VSOCK,
        "dev/vhost-vsock",
        "VM sockets (vsock) are unavailable; load the vhost_vsock kernel module",
    ));
    NodeResult { passed: results.iter().all(|result| result.passed), results }
}

fn result(check: &str, passed: bool, message: String) -> CheckResult {
    CheckResult { check_name: check.to_owned(), passed, message }
}

/// Turns a failure into a warning.
fn soften(result: &mut CheckResult, reason: &str) {
    if !result.passed {
        result.passed = true;
        result.message = format!("{WARNING_PREFIX} {}; {reason}", result.message);
    }
}

fn check_cpu(root: &Path) -> CheckResult {
    let path = root.join("proc/cpuinfo");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            return result(
                CPU,
                false,
                format!("cannot read {}: {error}; mount the host's / at --host-root", path.display()),
            );
        }
    };
    // ARM CPUs list "Features" instead of "flags"; their virtualization support is architectural.
    let is_arm = text.lines().any(|line| line.starts_with("CPU implementer"));
    if is_arm {
        return result(CPU, true, format!("ARM CPU in {}: virtualization is part of the architecture", path.display()));
    }
    let flags = text
        .lines()
        .filter(|line| line.starts_with("flags"))
        .flat_map(|line| line.split_once(':').map_or("", |(_, flags)| flags).split_whitespace());
    for flag in flags {
        if flag == "vmx" || flag == "svm" {
            return result(CPU, true, format!("{flag} flag found in {}", path.display()));
        }
    }
    result(
        CPU,
        false,
        format!(
            "no vmx or svm flag in {}: the CPU has no hardware virtualization or it is disabled; \
             enable Intel VT-x or AMD-V in the firmware, or set spec.useEmulation: true",
            path.display()
        ),
    )
}

fn check_kvm(root: &Path) -> CheckResult {
    let path = root.join("dev/kvm");
    let fix = "load the kvm_intel or kvm_amd kernel module and enable virtualization in the firmware";
    match std::fs::metadata(&path) {
        Ok(metadata) if metadata.file_type().is_char_device() => {
            result(KVM, true, format!("{} is a character device", path.display()))
        }
        Ok(_) => result(KVM, false, format!("{} exists but is not a character device; {fix}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            result(KVM, false, format!("{} not found; {fix}", path.display()))
        }
        Err(error) => result(KVM, false, format!("cannot examine {}: {error}; {fix}", path.display())),
    }
}

fn check_tun(root: &Path) -> CheckResult {
    let path = root.join("dev/net/tun");
    if path.exists() {
        result(TUN, true, format!("{} exists", path.display()))
    } else {
        result(TUN, false, format!("{} not found; load the tun kernel module", path.display()))
    }
}

fn warn_if_missing(root: &Path, check: &str, relative: &str, consequence: &str) -> CheckResult {
    let path = root.join(relative);
    if path.exists() {
        result(check, true, format!("{} exists", path.display()))
    } else {
        result(check, true, format!("{WARNING_PREFIX} {} not found: {consequence}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts").join(name)
    }

    fn find<'a>(node: &'a NodeResult, check: &str) -> &'a CheckResult {
        node.results.iter().find(|result| result.check_name == check).expect("check present")
    }

    #[test]
    fn host_cases() {
        // (fixture, emulation, node passed, failed checks, warned checks)
        type Case = (&'static str, bool, bool, &'static [&'static str], &'static [&'static str]);
        let cases: [Case; 7] = [
            ("intel-kvm", false, true, &[], &[]),
            ("amd-kvm", false, true, &[], &[VHOST_NET, VSOCK]),
            ("no-virtualization", false, false, &[CPU, KVM], &[VHOST_NET, VSOCK]),
            ("no-virtualization", true, true, &[], &[CPU, KVM, VHOST_NET, VSOCK]),
            ("intel-no-kvm", false, false, &[KVM], &[]),
            ("arm-kvm", false, true, &[], &[]),
            ("empty", false, false, &[CPU, KVM, TUN], &[VHOST_NET, VSOCK]),
        ];
        for (host, emulation, passed, failed, warned) in cases {
            let node = run(&fixture(host), emulation);
            assert_eq!(node.passed, passed, "{host} emulation={emulation}: {node:?}");
            assert_eq!(node.results.len(), 5, "{host}");
            for check in [CPU, KVM, TUN, VHOST_NET, VSOCK] {
                let result = find(&node, check);
                assert_eq!(result.passed, !failed.contains(&check), "{host} {check}: {result:?}");
                let is_warning = result.message.starts_with(WARNING_PREFIX);
                assert_eq!(is_warning, warned.contains(&check), "{host} {check}: {result:?}");
            }
        }
    }

    #[test]
    fn kvm_message_names_path_and_fix() {
        let node = run(&fixture("intel-no-kvm"), false);
        let message = &find(&node, KVM).message;
        assert!(message.contains("intel-no-kvm/dev/kvm not found"), "{message}");
        assert!(message.contains("kvm_intel or kvm_amd"), "{message}");
    }

    #[test]
    fn kvm_regular_file_rejected() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::fs::write(root.path().join("dev/kvm"), "").unwrap();
        let node = run(root.path(), false);
        assert!(find(&node, KVM).message.contains("not a character device"));
    }
}
