#!/usr/bin/env python3
"""Admission latency and throughput of vmruntime-gate against a TLS baseline on this machine.

Starts `vmruntime-gate webhook` on generated cluster states (10 VMs, and 10,000 VMs with 1,000
preflight checks) and the baseline server (examples/baseline_server.rs: the same rustls settings,
certificate, ALPN and HTTP stack, returning a fixed AdmissionReview), all on 127.0.0.1, and drives
them with oha over TLS keep-alive with 64 connections, HTTP/1.1 and HTTP/2.

  scripts/bench.py            full run (10 s per case), writes BENCHMARKS.md
  scripts/bench.py --smoke    1 s per case with debug builds; only checks that every request succeeded
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OHA_VERSION = "1.16.0"
CONNECTIONS = 64


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(command, **kwargs):
    log(" ".join(str(part) for part in command))
    subprocess.run(command, check=True, **kwargs)


def cache_root():
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vmruntime-gate"


def ensure_oha():
    """Returns the oha binary, installing it from crates.io into the cache when missing."""
    found = shutil.which("oha")
    if found:
        return found
    root = cache_root() / f"oha-{OHA_VERSION}"
    binary = root / "bin" / "oha"
    if not binary.exists():
        log(f"installing oha {OHA_VERSION} from crates.io into {root} (a few minutes, once)")
        run(["cargo", "install", "--locked", "--quiet", "--version", OHA_VERSION, "--root", str(root), "oha"])
    return str(binary)


def build(release):
    profile = ["--release"] if release else []
    run(["cargo", "build", "--quiet", *profile, "--bin", "vmruntime-gate", "--example", "baseline_server"], cwd=ROOT)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / ("release" if release else "debug")
    return target / "vmruntime-gate", target / "examples" / "baseline_server"


def write_state(folder, vms, checks):
    """Writes a cluster state: an enabled VMRuntime, three nodes, `checks` checks (the newest passed)
    and `vms` VirtualMachines spread over 100 namespaces."""
    folder.mkdir(parents=True)
    documents = [
        "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntime\nmetadata: {name: vmruntime}\nspec: {enabled: true}\n"
    ]
    documents += [f"apiVersion: v1\nkind: Node\nmetadata: {{name: worker-{index}}}\n" for index in range(3)]
    for index in range(checks):
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_780_000_000 + index))
        passed = "true" if index == checks - 1 else "false"
        documents.append(
            "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntimePreflightCheck\n"
            f"metadata: {{name: check-{index:05}, namespace: vm-system, creationTimestamp: '{created}'}}\n"
            f"status: {{pass: {passed}}}\n"
        )
    (folder / "base.yaml").write_text("---\n".join(documents))
    vm_documents = [
        "apiVersion: vm.cluster.gke.io/v1\nkind: VirtualMachine\n"
        f"metadata: {{name: vm-{index:05}, namespace: ns-{index % 100}}}\nstatus: {{state: Running}}\n"
        for index in range(vms)
    ]
    (folder / "vms.yaml").write_text("---\n".join(vm_documents))


def review(kind_group, kind, operation, obj):
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b8f2c6e-4d1a-4e3b-9c7d-5a6f8e9d0c1b",
            "kind": {"group": kind_group, "version": "v1", "kind": kind},
            "resource": {"group": kind_group, "version": "v1", "resource": kind.lower() + "s"},
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"].get("namespace"),
            "operation": operation,
            "userInfo": {"username": "bench"},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
        },
    }


def write_reviews(folder):
    folder.mkdir(parents=True)
    vm = {"apiVersion": "vm.cluster.gke.io/v1", "kind": "VirtualMachine",
          "metadata": {"name": "bench-vm", "namespace": "default"}, "spec": {}}
    runtime = {"apiVersion": "vm.cluster.gke.io/v1", "kind": "VMRuntime", "metadata": {"name": "vmruntime"}}
    bodies = {
        "vm-create": review("vm.cluster.gke.io", "VirtualMachine", "CREATE", vm),
        "vmruntime-create": review("vm.cluster.gke.io", "VMRuntime", "CREATE", runtime),
    }
    for name, body in bodies.items():
        (folder / f"{name}.json").write_text(json.dumps(body))


class Server:
    """A server process on 127.0.0.1 whose port is read from its log."""

    def __init__(self, command, pattern):
        self.log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            text = Path(self.log.name).read_text(errors="replace")
            match = re.search(pattern, text)
            if match:
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None:
                raise SystemExit(f"server exited: {' '.join(map(str, command))}\n{text}")
            time.sleep(0.05)
        raise SystemExit(f"server did not start: {' '.join(map(str, command))}")

    def peak_rss_kib(self):
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.unlink(self.log.name)


def start_webhook(binary, certs, state):
    return Server(
        [binary, "webhook", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
         "--tls-cert-file", certs / "tls.crt", "--tls-key-file", certs / "tls.key",
         "--cluster-state", state, "--log-format", "json"],
        r'"listen":"127\.0\.0\.1:(\d+)"',
    )


def oha(binary, url, body, http2, seconds, rate=None):
    # -w waits for the requests in flight at the deadline instead of counting them as aborted.
    command = [binary, "--no-tui", "--output-format", "json", "--insecure", "-z", f"{seconds}s", "-w",
               "-c", str(CONNECTIONS), "-m", "POST", "-T", "application/json", "-D", str(body), url]
    if http2:
        command.insert(1, "--http2")
    if rate:
        command[1:1] = ["-q", str(int(rate))]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    report = json.loads(result.stdout)
    codes = report.get("statusCodeDistribution", {})
    errors = report.get("errorDistribution", {})
    ok = codes.get("200", 0)
    # oha stops a request that is still running at the deadline when a rate is set, even with -w.
    # That is the client's doing, so it is reported but not counted as a failure.
    server_errors = {error: count for error, count in errors.items() if error != "aborted due to deadline"}
    failed = sum(count for code, count in codes.items() if code != "200") + sum(server_errors.values())
    percentiles = report["latencyPercentiles"]
    return {
        "rps": report["summary"]["requestsPerSec"],
        "p50": percentiles["p50"] * 1000,
        "p99": percentiles["p99"] * 1000,
        "p99.9": percentiles["p99.9"] * 1000,
        "ok": ok,
        "failed": failed,
        "errors": errors,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="1 s per case with debug builds; check only that requests succeed")
    parser.add_argument("--seconds", type=int, help="duration of each case (default 10, or 1 with --smoke)")
    args = parser.parse_args()
    seconds = args.seconds or (1 if args.smoke else 10)

    oha_binary = ensure_oha()
    gate, baseline = build(release=not args.smoke)
    work = Path(tempfile.mkdtemp(prefix="vmruntime-gate-bench-"))
    # Start-up lines only: one log line per decision would measure the logger.
    os.environ["RUST_LOG"] = "warn,vmruntime_gate::commands::webhook=info"
    try:
        certs = work / "certs"
        run([gate, "certs", "--out", certs, "--dns-name", "localhost", "--ip", "127.0.0.1"], stdout=subprocess.DEVNULL)
        write_state(work / "small", vms=10, checks=1)
        write_state(work / "large", vms=10_000, checks=1_000)
        write_reviews(work / "reviews")
        vm_create = work / "reviews" / "vm-create.json"
        runtime_create = work / "reviews" / "vmruntime-create.json"

        results = []
        failures = 0

        def case(name, server, path, body, http2, rate=None):
            nonlocal failures
            figures = oha(oha_binary, f"https://127.0.0.1:{server.port}{path}", body, http2, seconds, rate)
            figures["name"] = name
            results.append(figures)
            failures += figures["failed"]
            log(f"{name}: {figures['rps']:.0f} req/s, p50 {figures['p50']:.3f} ms, p99 {figures['p99']:.3f} ms, "
                f"{figures['ok']} ok, {figures['failed']} failed {figures['errors'] or ''}")
            return figures

        server = Server([baseline, "127.0.0.1:0", certs / "tls.crt", certs / "tls.key"], r"listening on 127\.0\.0\.1:(\d+)")
        base_h1 = case("baseline, HTTP/1.1", server, "/validate", vm_create, False)
        base_h2 = case("baseline, HTTP/2", server, "/validate", vm_create, True)
        server.stop()

        rss = {}
        for state in ("small", "large"):
            server = start_webhook(gate, certs, work / state)
            vms = "10 VMs" if state == "small" else "10,000 VMs"
            case(f"VM CREATE /validate, {vms}, HTTP/1.1", server, "/validate", vm_create, False)
            top = case(f"VM CREATE /validate, {vms}, HTTP/2", server, "/validate", vm_create, True)
            case(f"VMRuntime CREATE /mutate, {vms}, HTTP/2", server, "/mutate", runtime_create, True)
            if not args.smoke:
                case(f"VM CREATE /validate, {vms}, HTTP/2 at half the maximum", server, "/validate", vm_create, True,
                     rate=top["rps"] / 2)
            rss[state] = server.peak_rss_kib()
            server.stop()

        live_rss = measure_live(release=not args.smoke, vms=100 if args.smoke else 10_000)

        if failures:
            raise SystemExit(f"bench: {failures} requests failed")
        if args.smoke:
            print(f"bench smoke: every one of {sum(r['ok'] for r in results)} requests succeeded")
            return
        write_report(results, rss, live_rss, base_h1, base_h2, seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_live(release, vms):
    """Runs the ignored live-mode test against the real API server and returns the peak RSS in KiB."""
    environment = dict(os.environ, BENCH_VMS=str(vms), RUST_LOG="info")
    if "KUBE_APISERVER" not in environment or "ETCD" not in environment:
        exports = subprocess.run(["bash", "scripts/control-plane.sh"], cwd=ROOT, check=True, capture_output=True, text=True)
        for line in exports.stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            environment[name] = value.strip("'")
    profile = ["--release"] if release else []
    log(f"live mode: {vms} VirtualMachines in the test API server")
    result = subprocess.run(
        ["cargo", "test", "--quiet", *profile, "--test", "bench_live", "--", "--ignored", "--nocapture"],
        cwd=ROOT, env=environment, check=True, capture_output=True, text=True)
    match = re.search(r"live_rss_kib=(\d+)", result.stdout)
    if not match:
        raise SystemExit(f"bench: the live-mode run printed no peak RSS\n{result.stdout}\n{result.stderr}")
    return int(match.group(1))


def write_report(results, rss, live_rss, base_h1, base_h2, seconds):
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `scripts/bench.py` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores, {cpu}, "
        f"{platform.system()} {platform.release()}. Load from oha {OHA_VERSION} in a separate process over TLS "
        f"keep-alive, {CONNECTIONS} connections, {seconds} s per case, all on 127.0.0.1. The ratio compares each figure "
        "with the baseline server of the same HTTP version: the same rustls settings, certificate, ALPN and HTTP stack, "
        "returning a fixed AdmissionReview. Absolute numbers vary by machine; the ratio is the figure to watch.",
        "",
        "| case | requests/s | ratio | p50 ms | ratio | p99 ms | ratio | p99.9 ms | ratio | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        base = base_h2 if "HTTP/2" in result["name"] else base_h1
        ratio = lambda key: f"{result[key] / base[key]:.2f}" if base[key] else "-"
        lines.append(
            f"| {result['name']} | {result['rps']:.0f} | {ratio('rps')} | {result['p50']:.3f} | {ratio('p50')} | "
            f"{result['p99']:.3f} | {ratio('p99')} | {result['p99.9']:.3f} | {ratio('p99.9')} | {result['failed']} |"
        )
    lines += [
        "",
        "Peak resident memory (VmHWM) of the webhook on the file view, after its load:",
        "",
        "| cluster state | peak RSS MiB |",
        "|---|---|",
        f"| 10 VMs, 1 check | {rss['small'] / 1024:.1f} |",
        f"| 10,000 VMs, 1,000 checks | {rss['large'] / 1024:.1f} |",
        f"| live mode, 10,000 `gvm` objects in the test API server | {live_rss / 1024:.1f} |",
        "",
    ]
    # A hand-written "## Notes" section at the end of an existing report is kept.
    report = ROOT / "BENCHMARKS.md"
    notes = ""
    if report.exists() and "\n## Notes" in report.read_text():
        notes = "\n## Notes" + report.read_text().split("\n## Notes", 1)[1]
    report.write_text("\n".join(lines) + notes)
    log("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
