#!/usr/bin/env python3
"""Admission latency and throughput of vmruntime-gate against a TLS baseline on this machine.

Starts `vmruntime-gate webhook` on generated cluster states (10 VMs, and 10,000 VMs with 1,000
preflight checks) and the baseline server (examples/baseline_server.rs: the same rustls settings,
certificate, ALPN and HTTP stack, returning a fixed AdmissionReview), all on 127.0.0.1, and drives
them with oha over TLS keep-alive with 64 connections, HTTP/1.1 and HTTP/2: first at full load, then
at half the lower maximum, several runs each. Also times one review in process (benches/review.rs)
and measures the peak RSS on the file view and in live mode.

  scripts/bench.py            full run (10 s per case), writes BENCHMARKS.md
  scripts/bench.py --smoke    1 s per case with debug builds; only checks that every request succeeded
"""

import argparse
import json
import os
import platform
import re
import shlex
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
# Start-up lines only: one log line per decision would measure the logger.
WEBHOOK_LOG = "warn,vmruntime_gate::commands::webhook=info"
LIVE_TEST = ["cargo", "test", "--quiet", "--release", "--test", "bench_live", "--", "--ignored", "--nocapture"]


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

    running = []

    def __init__(self, command, pattern):
        self.log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log)
        Server.running.append(self)
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
        if self not in Server.running:
            return
        Server.running.remove(self)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.unlink(self.log.name)


def webhook_command(binary, certs, state):
    return [binary, "webhook", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
            "--tls-cert-file", certs / "tls.crt", "--tls-key-file", certs / "tls.key",
            "--cluster-state", state, "--log-format", "json"]


def baseline_command(binary, certs):
    return [binary, "127.0.0.1:0", certs / "tls.crt", certs / "tls.key"]


def start_webhook(binary, certs, state):
    return Server(webhook_command(binary, certs, state), r'"listen":"127\.0\.0\.1:(\d+)"')


def oha_command(binary, url, body, http2, seconds, rate=None):
    # -w waits for the requests in flight at the deadline instead of counting them as aborted.
    command = [binary, "--no-tui", "--output-format", "json", "--insecure", "-z", f"{seconds}s", "-w",
               "-c", str(CONNECTIONS), "-m", "POST", "-T", "application/json", "-D", str(body), url]
    if http2:
        command.insert(1, "--http2")
    if rate:
        command[1:1] = ["-q", str(int(rate))]
    return command


def oha(binary, url, body, http2, seconds, rate=None):
    command = oha_command(binary, url, body, http2, seconds, rate)
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
    parser.add_argument("--seconds", type=int, help="whole seconds of load per case (default 10, or 1 with --smoke)")
    parser.add_argument("--runs", type=int,
                        help="runs of each case, taken in turns, whose median is reported (default 3, or 1 with --smoke)")
    args = parser.parse_args()
    if args.seconds is not None and args.seconds < 1:
        parser.error(f"--seconds {args.seconds} is too small; give 1 or more")
    if args.runs is not None and args.runs < 1:
        parser.error(f"--runs {args.runs} is too small; give 1 or more")
    seconds = args.seconds or (1 if args.smoke else 10)
    runs = args.runs or (1 if args.smoke else 3)

    oha_binary = ensure_oha()
    gate, baseline = build(release=not args.smoke)
    work = Path(tempfile.mkdtemp(prefix="vmruntime-gate-bench-"))
    os.environ["RUST_LOG"] = WEBHOOK_LOG
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

        def case(name, server, path, body, http2, rate):
            nonlocal failures
            figures = oha(oha_binary, f"https://127.0.0.1:{server.port}{path}", body, http2, seconds, rate)
            figures["name"] = name
            figures["rate"] = rate
            # Compared with itself until in_turns() assigns its baseline.
            figures["base"] = figures
            failures += figures["failed"]
            log(f"{name}: {figures['rps']:.0f} req/s, p50 {figures['p50']:.3f} ms, p99 {figures['p99']:.3f} ms, "
                f"{figures['ok']} ok, {figures['failed']} failed {figures['errors'] or ''}")
            return figures

        def in_turns(cases, http2, rate, key):
            """Runs each case (name, server, path, body, name of its baseline case) in turn, `runs`
            times over, and records for each the run with the median `key`: requests per second at
            full load, p99 at a fixed rate. Taking turns spreads the machine's slow spells evenly."""
            figures_by_name = {name: [] for name, *_ in cases}
            for _ in range(runs):
                for name, server, path, body, _ in cases:
                    figures_by_name[name].append(case(name, server, path, body, http2, rate))
            medians = {}
            for name, _, _, _, base_name in cases:
                group = figures_by_name[name]
                median = sorted(group, key=lambda figures: figures[key])[len(group) // 2]
                median["runs"] = group
                median["median p50"] = sorted(figures["p50"] for figures in group)[len(group) // 2]
                median["base"] = medians.get(base_name, median)
                medians[name] = median
                results.append(median)
            return medians

        # The three servers run side by side; only the one under load uses the CPU.
        baseline_server = Server(baseline_command(baseline, certs), r"listening on 127\.0\.0\.1:(\d+)")
        webhooks = {state: start_webhook(gate, certs, work / state) for state in ("small", "large")}
        label = {"small": "10 VMs", "large": "10,000 VMs"}
        versions = ((False, "HTTP/1.1"), (True, "HTTP/2"))

        tops = {}
        for http2, version in versions:
            base_name = f"baseline, {version}"
            cases = [(base_name, baseline_server, "/validate", vm_create, base_name)]
            for state in ("small", "large"):
                name = f"VM CREATE /validate, {label[state]}, {version}"
                cases.append((name, webhooks[state], "/validate", vm_create, base_name))
                tops[state, http2] = name
            cases += [(f"VMRuntime CREATE /mutate, {label[state]}, {version}", webhooks[state], "/mutate",
                       runtime_create, base_name) for state in ("small", "large")]
            medians = in_turns(cases, http2, None, "rps")
            for state in ("small", "large"):
                tops[state, http2] = medians[tops[state, http2]]

        # Half of the lower maximum of the two states, so that both states and the baseline are
        # measured at one rate and their latencies compare directly.
        at_half = {}
        for http2, version in versions:
            rate = min(tops["small", http2]["rps"], tops["large", http2]["rps"]) / 2
            base_name = f"baseline, {version} at {rate:.0f} req/s"
            cases = [(base_name, baseline_server, "/validate", vm_create, base_name)]
            cases += [(f"VM CREATE /validate, {label[state]}, {version} at {rate:.0f} req/s", webhooks[state],
                       "/validate", vm_create, base_name) for state in ("small", "large")]
            medians = in_turns(cases, http2, rate, "p99")
            at_half[version] = [medians[name] for name, *_ in cases[1:]]

        rss = {state: server.peak_rss_kib() for state, server in webhooks.items()}
        for server in (baseline_server, *webhooks.values()):
            server.stop()

        if failures:
            raise SystemExit(f"bench: {failures} requests failed")

        live_rss = measure_live(release=not args.smoke, vms=100 if args.smoke else 10_000)
        in_process = run_in_process_bench(args.smoke)
        pauses = None if args.smoke else measure_pauses()
        if args.smoke:
            print(f"bench smoke: every one of {sum(r['ok'] for r in results)} requests succeeded")
            return
        write_report(results, rss, live_rss, seconds, runs, at_half, in_process, pauses, machine(oha_binary))
    finally:
        for server in list(Server.running):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def measure_live(release, vms):
    """Runs the ignored live-mode test against the real API server and returns the peak RSS in KiB."""
    environment = dict(os.environ, BENCH_VMS=str(vms), RUST_LOG="info")
    if "KUBE_APISERVER" not in environment or "ETCD" not in environment:
        exports = subprocess.run(["bash", "scripts/control-plane.sh"], cwd=ROOT, check=True, capture_output=True, text=True)
        for line in exports.stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            environment[name] = value.strip("'")
    command = LIVE_TEST if release else [part for part in LIVE_TEST if part != "--release"]
    log(f"live mode: {vms} VirtualMachines in the test API server: {shell_line(command)}")
    stdout, stderr = run_in_group(command, environment)
    match = re.search(r"live_rss_kib=(\d+)", stdout)
    if not match:
        raise SystemExit(f"bench: the live-mode run printed no peak RSS\n{stdout}\n{stderr}")
    return int(match.group(1))


def run_in_group(command, environment):
    """Runs `command` in a process group of its own and returns (stdout, stderr). When the run
    fails or the bench is interrupted, the whole group stops: cargo, the test binary, and the etcd
    and kube-apiserver it started."""
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate()
    except BaseException:
        stop_group(process)
        raise
    if process.returncode != 0:
        raise SystemExit(f"bench: {shell_line(command)} exited with {process.returncode}\n{stdout}\n{stderr}")
    return stdout, stderr


def stop_group(process):
    """Sends SIGTERM to the process group of `process`, and SIGKILL to what is left after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
            # The leader is gone; members such as kube-apiserver may still be draining.
            time.sleep(0.5)
        except subprocess.TimeoutExpired:
            pass


def targets(results, rss, live_rss, at_half, in_process):
    """Returns the lines of a table that checks each target against the figures of this run."""
    verdict = lambda met: "met" if met else "missed"
    full_load = [result for result in results if result["base"] is not result and not result["rate"]]
    ratios = [result["rps"] / result["base"]["rps"] for result in full_load]
    lines = [
        "Targets, checked against this run:",
        "",
        "| target | figures | result |",
        "|---|---|---|",
        f"| throughput at least 0.7 of the baseline | {min(ratios):.2f} to {max(ratios):.2f} | {verdict(min(ratios) >= 0.7)} |",
    ]
    for version, rows in at_half.items():
        worst = max(row["p99"] for row in rows)
        lines.append(f"| p99 under 2 ms at half the maximum, {version} | up to {worst:.3f} ms (the baseline at the same "
                     f"rate: {rows[0]['base']['p99']:.3f} ms) | {verdict(worst < 2)} |")
    p50_ratios = [rows[1]["median p50"] / rows[0]["median p50"] for rows in at_half.values()]
    over_http = "; ".join(f"{version} {rows[1]['median p50']:.3f} / {rows[0]['median p50']:.3f} ms = "
                          f"{rows[1]['median p50'] / rows[0]['median p50']:.2f}" for version, rows in at_half.items())
    nanos_ratios = [times[10000] / times[10] for times in in_process.values()]
    in_process_text = ", ".join(f"{case} {times[10000] / times[10]:.2f}" for case, times in in_process.items())
    lines.append(f"| p50 with 10,000 VMs within 1.1 times p50 with 10 VMs | at the same rate, median p50 of the runs: "
                 f"{over_http}; in process: {in_process_text} | {verdict(max(p50_ratios + nanos_ratios) <= 1.1)} |")
    peak = max(rss["large"], live_rss) / 1024
    lines.append(f"| RSS at most 64 MiB with 10,000 VMs and 1,000 checks | up to {peak:.1f} MiB | {verdict(peak <= 64)} |")
    return lines


PAUSE_PROBE = """
import time
end = time.perf_counter() + {seconds}
last = time.perf_counter()
pauses = []
while last < end:
    now = time.perf_counter()
    if now - last > 0.002:
        pauses.append(now - last)
    last = now
print(len(pauses), max(pauses, default=0.0))
"""


def measure_pauses(seconds=8):
    """Spins one process per core for `seconds` and returns (pauses over 2 ms, longest pause in ms):
    the time the machine takes its cores away, which no server can hide from its p99."""
    log(f"pauses: spinning on {os.cpu_count()} cores for {seconds} s")
    probes = [subprocess.Popen([sys.executable, "-c", PAUSE_PROBE.format(seconds=seconds)], stdout=subprocess.PIPE,
                               text=True) for _ in range(os.cpu_count() or 1)]
    count, longest = 0, 0.0
    for probe in probes:
        output, _ = probe.communicate()
        pauses, pause = output.split()
        count += int(pauses)
        longest = max(longest, float(pause) * 1000)
    return count, longest, seconds


def run_in_process_bench(smoke):
    """Runs benches/review.rs and returns {case: {vms: nanoseconds}}. The smoke run builds it in the
    test profile and runs one short round per case."""
    command = ["cargo", "test", "--quiet", "--bench", "review", "--", "--quick"] if smoke else \
        ["cargo", "bench", "--quiet", "--bench", "review"]
    log(" ".join(command))
    output = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    times = {}
    for case, vms, nanos in re.findall(r"review case=(\S+) vms=(\d+) ns=(\d+)", output):
        times.setdefault(case, {})[int(vms)] = int(nanos)
    if not times:
        raise SystemExit(f"bench: benches/review.rs printed no times\n{output}")
    return times


def shell_line(command):
    return " ".join(shlex.quote(str(part)) for part in command)


def machine(oha_binary):
    """Returns the facts about this machine and checkout that the figures depend on."""
    def output(command):
        try:
            return subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    commit = output(["git", "describe", "--always", "--dirty"])
    return {
        "cpu": f"{os.cpu_count()} cores, {cpu}",
        "memory": f"{int(memory.group(1)) / 1024 / 1024:.0f} GiB" if memory else "unknown",
        "system": f"{platform.system()} {platform.release()}",
        "rustc": output(["rustc", "--version"]),
        "oha": output([oha_binary, "--version"]),
        "commit": commit,
    }


def write_report(results, rss, live_rss, seconds, runs, at_half, in_process, pauses, facts):
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `scripts/bench.py` on {time.strftime('%Y-%m-%d')} at commit {facts['commit']}: {facts['cpu']}, "
        f"{facts['memory']}, {facts['system']}, {facts['rustc']}. Load from {facts['oha']} in a separate process on the "
        f"same cores, over TLS keep-alive, {CONNECTIONS} connections, {seconds} s per case, all on 127.0.0.1. The ratio "
        "compares each figure with the baseline server (the same rustls settings, certificate, ALPN and HTTP stack, "
        "returning a fixed AdmissionReview): at full load with the baseline's full load over the same HTTP version, "
        "and at a fixed rate with the baseline at that rate. The fixed rate is half the lower maximum of the two "
        "cluster states, so that both states meet the same load. Absolute numbers vary by machine; the ratio is the "
        "figure to watch. The failed column counts error statuses and connection errors; requests that oha itself "
        "stops at the end of a fixed-rate case are not counted.",
        "",
        "Commands, with the paths shortened:",
        "",
        "```",
        f"RUST_LOG={WEBHOOK_LOG} {shell_line(webhook_command('vmruntime-gate', Path('certs'), 'STATE'))}",
        shell_line(baseline_command("baseline_server", Path("certs"))),
        shell_line(oha_command("oha", "https://127.0.0.1:PORT/validate", "REVIEW.json", False, seconds)),
        "#   with --http2 for HTTP/2, and -q RATE at a fixed rate",
        "cargo bench --bench review",
        f"BENCH_VMS=10000 {shell_line(LIVE_TEST)}",
        "```",
        "",
        "| case | requests/s | ratio | p50 ms | ratio | p99 ms | ratio | p99.9 ms | ratio | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        base = result["base"]

        def ratio(key):
            return f"{result[key] / base[key]:.2f}" if base and base[key] else "-"

        lines.append(
            f"| {result['name']} | {result['rps']:.0f} | {ratio('rps')} | {result['p50']:.3f} | {ratio('p50')} | "
            f"{result['p99']:.3f} | {ratio('p99')} | {result['p99.9']:.3f} | {ratio('p99.9')} | {result['failed']} |"
        )
    lines += [
        "",
        f"Each case ran {f'{runs} times' if runs > 1 else 'once'}, in turns with the other servers under the same "
        "load. The table above shows "
        "the run with the median requests per second at full load, and the run with the median p99 at a fixed "
        "rate. Every run:",
        "",
        "| case | requests/s of each run | p50 ms of each run | p99 ms of each run |",
        "|---|---|---|---|",
    ]
    for result in results:
        group = result["runs"]
        rates = ", ".join(f"{run['rps']:.0f}" for run in group)
        p50s = ", ".join(f"{run['p50']:.3f}" for run in group)
        p99s = ", ".join(f"{run['p99']:.3f}" for run in group)
        lines.append(f"| {result['name']} | {rates} | {p50s} | {p99s} |")
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
        "In-process time of one review (decode, decide, encode; `cargo bench --bench review`, the fastest of 7 rounds):",
        "",
        "| review | 10 VMs, ns | 10,000 VMs and 1,000 checks, ns | 10,000 VMs / 10 VMs |",
        "|---|---|---|---|",
    ]
    for case, times in in_process.items():
        lines.append(f"| {case} | {times[10]} | {times[10000]} | {times[10000] / times[10]:.2f} |")
    count, longest, pause_seconds = pauses
    lines += [
        "",
        f"Pauses of the machine: a process spinning on each of the {os.cpu_count()} cores for {pause_seconds} s saw "
        f"{count} pauses over 2 ms, the longest {longest:.1f} ms. Each such pause delays every request in flight.",
        "",
        *targets(results, rss, live_rss, at_half, in_process),
        "",
    ]
    # A hand-written "## Notes" section at the end of an existing report is kept.
    report = ROOT / "BENCHMARKS.md"
    notes = ""
    if report.exists() and "\n## Notes" in report.read_text():
        notes = "\n## Notes" + report.read_text().split("\n## Notes", 1)[1]
    report.write_text("\n".join(lines) + notes)
    log("wrote BENCHMARKS.md")


def exit_on_sigterm(signum, frame):
    # Raising here runs the cleanup in main(), as Ctrl-C does.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted; the servers it started are stopped")
        sys.exit(130)
