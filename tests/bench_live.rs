//! Peak memory of the webhook in live mode with many VMs in a real API server. Ignored by
//! `cargo test`; `scripts/bench.py` runs it with `--ignored` and reads the `live_rss_kib=` line.
//! `BENCH_VMS` sets the number of VirtualMachines (default 10,000).

mod support;

use std::time::{Duration, Instant};

use support::control_plane::{Binaries, ControlPlane};
use support::e2e;

#[tokio::test]
#[ignore = "a benchmark: run by scripts/bench.py"]
async fn live_mode_peak_memory() {
    let Some(binaries) = Binaries::from_env() else {
        return;
    };
    let count: usize = std::env::var("BENCH_VMS").ok().and_then(|value| value.parse().ok()).unwrap_or(10_000);
    let mut control_plane = ControlPlane::prepare(binaries);
    control_plane.start();
    e2e::install_crds(&control_plane);

    let started = Instant::now();
    for chunk_start in (0..count).step_by(1000) {
        let items: Vec<String> = (chunk_start..(chunk_start + 1000).min(count))
            .map(|index| {
                format!(
                    r#"{{"apiVersion":"vm.cluster.gke.io/v1","kind":"VirtualMachine","metadata":{{"name":"vm-{index:05}","namespace":"default"}},"spec":{{"disks":[{{"virtualMachineDiskName":"disk-{index:05}"}}]}}}}"#
                )
            })
            .collect();
        let list = format!(r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#, items.join(","));
        control_plane.kubectl_ok(&["create", "-f", "-", "-o", "name"], Some(&list));
    }
    eprintln!("created {count} VirtualMachines in {:.0} s", started.elapsed().as_secs_f64());

    let webhook = e2e::start_live_webhook(&control_plane);
    e2e::wait_ready(&webhook).await;
    let https = support::client(&webhook.ca_file, support::Tls::V13);
    let review = support::review(
        "vm.cluster.gke.io",
        "VirtualMachine",
        "CREATE",
        serde_json::json!({"metadata": {"name": "bench", "namespace": "default"}, "spec": {}}),
        serde_json::Value::Null,
    );
    for _ in 0..100 {
        support::admit(&https, &webhook.url("/validate"), &review).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", webhook.pid())).unwrap();
    let peak =
        status.lines().find_map(|line| line.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").trim();
    let metrics = https.get(format!("http://{}/metrics", webhook.health)).send().await.unwrap().text().await.unwrap();
    let cached = format!("vmruntime_gate_cached_objects{{kind=\"VirtualMachine.vm.cluster.gke.io\"}} {count}");
    assert!(metrics.contains(&cached), "the view does not hold {count} VMs: {metrics}");
    println!("live_rss_kib={peak}");
}
