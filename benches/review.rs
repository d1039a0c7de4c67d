//! Time of one admission review in process, without TLS or HTTP: decoding the body, deciding it
//! against the cluster view and encoding the response, as the webhook's handler does.
//!
//! Runs each case with a view of 10 VMs and of 10,000 VMs with 1,000 preflight checks, so that a
//! per-request cost that grows with the cluster shows up as a ratio above 1.
//!
//! `cargo bench --bench review` prints, for each case, one line per view,
//! `review case=NAME vms=N ns=TIME` with the fastest of several rounds (the least disturbed by
//! other work on the machine), then `review case=NAME ratio_10000_to_10=RATIO`. With `--quick` it
//! runs one short round per case, which checks that the cases run but times nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::json;
use vmruntime_gate::admission::{self, Endpoint, Settings};
use vmruntime_gate::cluster::{ClusterView, VmKind, VmSummary};
use vmruntime_gate::resources::preflight_check::{PreflightCheckStatus, VMRuntimePreflightCheckSpec};
use vmruntime_gate::resources::{SYSTEM_NAMESPACE, VMRuntime, VMRuntimePreflightCheck, VMRuntimeSpec};

const ROUNDS: usize = 7;
const ROUND_TIME: Duration = Duration::from_millis(300);
const QUICK_ROUND_TIME: Duration = Duration::from_millis(20);

fn main() {
    // `cargo bench` passes `--bench`, which is ignored like any other argument but `--quick`.
    let quick = std::env::args().any(|argument| argument == "--quick");
    let (rounds, round_time) = if quick { (1, QUICK_ROUND_TIME) } else { (ROUNDS, ROUND_TIME) };
    let cases = [
        (
            "vm-create",
            Endpoint::Validate,
            review_body("VirtualMachine", json!({"metadata": {"name": "web-0", "namespace": "default"}, "spec": {}})),
        ),
        (
            "vmruntime-create",
            Endpoint::Mutate,
            review_body(
                "VMRuntime",
                json!({"apiVersion": "vm.cluster.gke.io/v1", "kind": "VMRuntime", "metadata": {"name": "vmruntime"}}),
            ),
        ),
    ];
    let views = [(10, view(10, 1)), (10_000, view(10_000, 1_000))];

    for (name, endpoint, body) in &cases {
        let mut times = Vec::new();
        for (vms, view) in &views {
            // Both cases are allowed on these views; a denial would time another path.
            let outcome = admission::review(*endpoint, body, view, Settings::default()).expect("the review decodes");
            assert!(outcome.allowed, "{name} with {vms} VMs was denied: {}", outcome.message());

            let nanos = fastest_round(rounds, round_time, || {
                let outcome = admission::review(*endpoint, black_box(body), view, Settings::default());
                black_box(outcome.map(|outcome| outcome.to_json()).expect("the review decodes"));
            });
            println!("review case={name} vms={vms} ns={nanos:.0}");
            times.push(nanos);
        }
        println!("review case={name} ratio_10000_to_10={:.2}", times[1] / times[0]);
    }
}

/// Returns the nanoseconds per call of the fastest of `rounds` rounds of `round_time` each.
fn fastest_round(rounds: usize, round_time: Duration, mut call: impl FnMut()) -> f64 {
    let mut fastest = f64::INFINITY;
    for _ in 0..rounds {
        let started = Instant::now();
        let mut calls = 0u32;
        while started.elapsed() < round_time {
            for _ in 0..100 {
                call();
            }
            calls += 100;
        }
        fastest = fastest.min(started.elapsed().as_nanos() as f64 / f64::from(calls));
    }
    fastest
}

fn review_body(kind: &str, object: serde_json::Value) -> Vec<u8> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b8f2c6e-4d1a-4e3b-9c7d-5a6f8e9d0c1b",
            "kind": {"group": "vm.cluster.gke.io", "version": "v1", "kind": kind},
            "resource": {"group": "vm.cluster.gke.io", "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    });
    serde_json::to_vec(&review).expect("a JSON value serializes")
}

/// Builds an enabled runtime with `vms` VMs over 100 namespaces and `checks` checks, the newest passed.
fn view(vms: usize, checks: usize) -> ClusterView {
    let mut view = ClusterView::new();
    view.apply_runtime(&VMRuntime::new("vmruntime", VMRuntimeSpec { enabled: Some(true), ..Default::default() }));
    for index in 0..checks {
        let mut check = VMRuntimePreflightCheck::new(&format!("check-{index:05}"), VMRuntimePreflightCheckSpec {});
        check.metadata.namespace = Some(SYSTEM_NAMESPACE.to_owned());
        let created = format!("2026-01-01T{:02}:{:02}:{:02}Z", index / 3600, index / 60 % 60, index % 60);
        check.metadata.creation_timestamp = Some(serde_json::from_value(json!(created)).expect("a valid timestamp"));
        check.status = Some(PreflightCheckStatus { pass: Some(index + 1 == checks), ..Default::default() });
        view.apply_check(&check);
    }
    for index in 0..vms {
        view.apply_vm(VmSummary {
            kind: VmKind::RuntimeVirtualMachine,
            namespace: format!("ns-{}", index % 100),
            name: format!("vm-{index:05}"),
            state: Some("Running".to_owned()),
            deleting: false,
        });
    }
    view.set_loaded(true);
    view
}
