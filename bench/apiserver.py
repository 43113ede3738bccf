"""`python3 -m bench apiserver`: the real kube-apiserver's cost of K announcers (CPU, RSS, watch bytes, latency)."""

# One control plane (lab/controlplane.py) with 198.51.100.0/24 and 2001:db8:96::/108 as service ranges is seeded with
# N Services and 2N EndpointSlices by parallel POSTs over keep-alive connections. Then, for each K and run: K
# `announcer run` processes (node names bench-node-0..K-1, deploy/base's ServiceAccount token), each under its own
# null ExaBGP (bench/null_exabgp.py), list and watch; once every one has synced and gone quiet, the benchmark makes
# the changes (Services created, then deleted, at a steady rate), waits until every announcer's command for each one
# arrived, and reads kube-apiserver's CPU (/proc/PID/stat), peak RSS (VmHWM, reset with clear_refs before the
# announcers start) and watch and list bytes (its own /metrics, as the admin).

from __future__ import annotations

import http.client
import json
import math
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from bench.apiserver_model import (
    SERVICE_CIDRS,
    CommandLog,
    Write,
    by_kind,
    delta,
    expected_prefixes,
    latencies,
    marginal,
    namespace,
    node_name,
    p,
    parse_metrics,
    seed_objects,
    service,
)
from bench.stats import process_cpu_seconds
from bench.watchers import RawWatchers
from lab.controlplane import ADMIN, ANNOUNCER, ControlPlane

REPOSITORY = Path(__file__).resolve().parents[1]
WATCHED = ("services", "endpointslices")  # the resources the announcers watch (kube-apiserver's metrics' label)
ANNOUNCER_CONFIG = {
    "bgp": {
        "local_as": 64513,
        "router_id": "192.0.2.11",
        "peers": [{"address": "192.0.2.1", "peer_as": 64512}, {"address": "2001:db8::1", "peer_as": 64512}],
    },
}


@dataclass(frozen=True)
class Plan:
    nodes: Sequence[int] = (0, 1, 10, 50)  # 0: the writes alone, what the marginal figures subtract
    services: int = 10_000
    dual_stack: int = 240
    changes: int = 1000
    rate: float = 50.0  # changes a second
    runs: int = 1
    seed_threads: int = 16
    sync_timeout: float = 600.0
    delivery_timeout: float = 120.0
    raw_watchers: Sequence[int] = ()  # counts of plain watches of Services measured after the announcers
    idle_seconds: float = 5.0  # kube-apiserver's CPU at rest is measured over this long before each run


# --- requests --------------------------------------------------------------------------------------------------------
class Client:
    """Keep-alive HTTPS requests to kube-apiserver as the admin, one connection per thread."""

    def __init__(self, plane: ControlPlane) -> None:
        address = urlsplit(plane.url)
        self.host, self.port = address.hostname or "127.0.0.1", address.port or 443
        self.context = ssl.create_default_context(cafile=str(plane.ca_path))
        self.local = threading.local()
        self.opened: list[http.client.HTTPSConnection] = []
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            for connection in self.opened:
                connection.close()
            self.opened = []

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            connection = getattr(self.local, "connection", None)
            if connection is None:
                connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=60)
                self.local.connection = connection
                with self.lock:
                    self.opened.append(connection)
            data = None if body is None else json.dumps(body).encode()
            headers = {"Authorization": f"Bearer {ADMIN.token}", "Content-Type": "application/json"}
            try:
                connection.request(method, path, body=data, headers=headers)
                answer = connection.getresponse()
                return answer.status, answer.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                self.local.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def parallel(self, requests: Sequence[tuple[str, str, object]], threads: int) -> list[tuple[int, bytes]]:
        """Every request, spread over `threads` threads; the answers in the requests' order."""
        work: queue.Queue[int] = queue.Queue()
        for index in range(len(requests)):
            work.put(index)
        answers: list[tuple[int, bytes]] = [(0, b"")] * len(requests)

        def worker() -> None:
            while True:
                try:
                    index = work.get_nowait()
                except queue.Empty:
                    return
                answers[index] = self.request(*requests[index])

        workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        return answers


def _path(obj: dict[str, object]) -> str:
    metadata = obj["metadata"]
    assert isinstance(metadata, dict)
    if obj["kind"] == "Service":
        return f"/api/v1/namespaces/{metadata['namespace']}/services"
    return f"/apis/discovery.k8s.io/v1/namespaces/{metadata['namespace']}/endpointslices"


def seed(client: Client, services: int, dual_stack: int, threads: int) -> dict[str, float]:
    """Create the namespaces, Services and EndpointSlices; how long each kind took (s) and its rate."""
    made, slices = seed_objects(services, dual_stack)
    names = sorted({namespace(i) for i in range(services)})
    client.parallel([("POST", "/api/v1/namespaces", {"metadata": {"name": n}}) for n in names], threads)
    figures: dict[str, float] = {}
    for kind, objects in (("services", made), ("endpointslices", slices)):
        started = time.monotonic()
        answers = client.parallel([("POST", _path(obj), obj) for obj in objects], threads)
        refused = [(status, body[:300]) for status, body in answers if status not in (201, 409)]
        if refused:
            raise RuntimeError(f"seeding {kind}: {len(refused)} refused, e.g. {refused[0]}")
        figures[f"{kind}_seconds"] = time.monotonic() - started
        figures[f"{kind}_per_second"] = len(objects) / figures[f"{kind}_seconds"]
    return figures


def scrape(client: Client) -> dict[str, dict[str, float]]:
    """kube-apiserver's watch and LIST byte counters (per kind or resource)."""
    status, body = client.request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics: {status}")
    samples = parse_metrics(body.decode())
    list_bytes: dict[str, float] = {}
    for (name, labels), value in samples.items():
        found = dict(labels)
        if name == "apiserver_response_sizes_sum" and found.get("verb") == "LIST":
            list_bytes[found.get("resource", "")] = list_bytes.get(found.get("resource", ""), 0.0) + value
    return {
        "watch_bytes": by_kind(samples, "apiserver_watch_events_sizes_sum"),
        "watch_events": by_kind(samples, "apiserver_watch_events_total"),
        "list_bytes": list_bytes,
    }


# --- kube-apiserver's process ----------------------------------------------------------------------------------------
def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def reset_peak_rss(pid: int) -> None:
    """VmHWM back to the current RSS (proc(5): clear_refs, 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# --- the announcers --------------------------------------------------------------------------------------------------
class Fleet:
    """K announcers, each under its own null ExaBGP, and their command logs read as they grow."""

    def __init__(self, workdir: Path, plane: ControlPlane, count: int) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "announcer.yaml"
        config.write_text(yaml.safe_dump(ANNOUNCER_CONFIG))
        kubeconfig = plane.kubeconfig(ANNOUNCER)
        self.paths = [workdir / f"{node_name(i)}.log" for i in range(count)]
        self.logs = [CommandLog() for _ in range(count)]
        self.offsets = [0] * count
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started_ns: list[int] = []
        for i, path in enumerate(self.paths):
            environment = {**os.environ, "KUBECONFIG": str(kubeconfig), "NODE_NAME": node_name(i)}
            self.started_ns.append(time.monotonic_ns())
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.null_exabgp",
                        str(path),
                        "--",
                        sys.executable,
                        "-m",
                        "announcer",
                        "run",
                        "--config",
                        str(config),
                    ],
                    cwd=REPOSITORY,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                )
            )

    def read(self) -> None:
        for i, path in enumerate(self.paths):
            try:
                with path.open("r", encoding="ascii") as handle:
                    handle.seek(self.offsets[i])
                    text = handle.read()
            except FileNotFoundError:
                continue
            self.offsets[i] += len(text)
            self.logs[i].feed(text)

    def check_alive(self) -> None:
        for i, process in enumerate(self.processes):
            if process.poll() is not None:
                stderr = self.paths[i].with_suffix(".stderr")
                tail = stderr.read_text(errors="replace")[-2000:] if stderr.exists() else ""
                raise RuntimeError(f"{node_name(i)} exited ({process.returncode}): {tail}")

    def wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.read()
            if done():
                return
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {timeout:.0f} s")
            time.sleep(0.2)

    def wait_quiet(self, seconds: float, timeout: float) -> None:
        """Until no announcer wrote a command for `seconds`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = [log.lines for log in self.logs]
            time.sleep(seconds)
            self.read()
            if [log.lines for log in self.logs] == before:
                return
        raise RuntimeError("the announcers never went quiet")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- one run ---------------------------------------------------------------------------------------------------------
def make_changes(client: Client, count: int, rate: float, start_index: int) -> list[Write]:
    """count/2 IPv6 Services created, then the same deleted, `rate` writes a second; each write's time before it."""
    created = [service(start_index + j, False, change=True) for j in range(count // 2)]
    writes: list[Write] = []
    began = time.monotonic()
    steps = [("POST", obj) for obj in created] + [("DELETE", obj) for obj in created]
    for step, (method, obj) in enumerate(steps):
        pause = began + step / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        metadata, spec = obj["metadata"], obj["spec"]
        assert isinstance(metadata, dict)
        assert isinstance(spec, dict)
        prefix = f"{spec['clusterIPs'][-1]}/128"
        at = time.monotonic_ns()
        if method == "POST":
            status, body = client.request("POST", _path(obj), obj)
        else:
            status, body = client.request("DELETE", f"{_path(obj)}/{metadata['name']}")
        if status not in (200, 201, 202):
            raise RuntimeError(f"{method} {metadata['name']}: {status} {body[:300]!r}")
        writes.append(Write(at, "announce" if method == "POST" else "withdraw", prefix))
    return writes


def one_run(
    *,
    plane: ControlPlane, client: Client, workdir: Path, plan: Plan, count: int, start_index: int,
    progress: Callable[[str], None],
) -> dict[str, float]:  # fmt: skip
    """K=count announcers: start, first sync, the changes; the figures of this run."""
    assert plane.apiserver is not None
    pid = plane.apiserver.pid
    load = os.getloadavg()[0]
    idle_started, idle_cpu = time.monotonic(), process_cpu_seconds(pid)
    time.sleep(plan.idle_seconds)
    idle_rate = (process_cpu_seconds(pid) - idle_cpu) / (time.monotonic() - idle_started)
    rss_before = status_mb(pid, "VmRSS")
    reset_peak_rss(pid)
    metrics_start = scrape(client)
    cpu_start = process_cpu_seconds(pid)
    if count == 0:
        return _writes_alone(
            plane=plane, client=client, plan=plan, start_index=start_index, load=load, idle_rate=idle_rate,
            rss_before=rss_before,
        )  # fmt: skip
    fleet = Fleet(workdir, plane, count)
    wanted = expected_prefixes(plan.services, plan.dual_stack)
    try:
        fleet.wait(lambda: all(log.first_sync_ns is not None for log in fleet.logs), plan.sync_timeout, "first sync")
        fleet.wait(
            lambda: all(len(log.announced) >= wanted for log in fleet.logs), plan.sync_timeout, "first-sync routes"
        )
        fleet.wait_quiet(1.0, plan.sync_timeout)
        cpu_synced = process_cpu_seconds(pid)
        metrics_synced = scrape(client)
        first = min(fleet.started_ns)
        log_times = sorted(
            (log.first_sync_ns - started) / 1e9
            for log, started in zip(fleet.logs, fleet.started_ns, strict=True)
            if log.first_sync_ns is not None
        )
        out_max = (max(log.last_line_ns or 0 for log in fleet.logs) - first) / 1e9
        progress(f"K={count}: synced (first sync median {p(log_times, 0.5):.1f} s); {plan.changes} changes")
        writes = make_changes(client, plan.changes, plan.rate, start_index)
        fleet.wait(
            lambda: latencies(writes, fleet.logs)[2] == 0, plan.delivery_timeout, "every change at every announcer"
        )
        cpu_done = process_cpu_seconds(pid)
        metrics_done = scrape(client)
        peak = status_mb(pid, "VmHWM")
        every, pairs, missing = latencies(writes, fleet.logs)
    finally:
        fleet.stop()
    watch_bytes = delta(metrics_synced["watch_bytes"], metrics_done["watch_bytes"])
    watch_events = delta(metrics_synced["watch_events"], metrics_done["watch_events"])
    list_bytes = delta(metrics_start["list_bytes"], metrics_synced["list_bytes"])
    return {
        "load": load,
        "first_sync_log_median": p(log_times, 0.5),
        "first_sync_log_max": max(log_times),
        "first_sync_out_max": out_max,
        "apiserver_cpu_sync": cpu_synced - cpu_start,
        "apiserver_cpu_changes": cpu_done - cpu_synced,
        "apiserver_idle_cpu_rate": idle_rate,
        "apiserver_rss_before": rss_before,
        "apiserver_peak_rss": peak,
        "list_bytes_per_node": sum(list_bytes.get(r, 0.0) for r in WATCHED) / count / 1e6,
        "list_bytes_services_per_node": list_bytes.get("services", 0.0) / count / 1e6,
        "watch_bytes_per_event": sum(watch_bytes.get(r, 0.0) for r in WATCHED)
        / max(1.0, sum(watch_events.get(r, 0.0) for r in WATCHED)),
        "watch_bytes_total": sum(watch_bytes.get(r, 0.0) for r in WATCHED),
        "watch_events_total": sum(watch_events.get(r, 0.0) for r in WATCHED),
        "changes_made": float(len(writes)),
        "latency_p50": p(every, 0.5),
        "latency_p99": p(every, 0.99),
        "latency_pairs_p99": p(pairs, 0.99),
        "missing": float(missing),
    }


def _writes_alone(
    *,
    plane: ControlPlane, client: Client, plan: Plan, start_index: int, load: float, idle_rate: float,
    rss_before: float, watchers: int = 0,
) -> dict[str, float]:  # fmt: skip
    """K = 0: the same changes with no announcer, so what kube-apiserver's own watchers and the writes cost; with
    `watchers`, that many plain watches of Services read them too (bench/watchers.py)."""
    assert plane.apiserver is not None
    pid = plane.apiserver.pid
    raw = RawWatchers(plane, watchers).start() if watchers else None
    try:
        time.sleep(1.0 if watchers else 0.0)
        before, cpu_before = scrape(client), process_cpu_seconds(pid)
        read_before = sum(raw.read) if raw else 0
        writes = make_changes(client, plan.changes, plan.rate, start_index)
        time.sleep(1.0)
        after, cpu_after = scrape(client), process_cpu_seconds(pid)
        read = (sum(raw.read) - read_before) if raw else 0
    finally:
        if raw is not None:
            raw.close()
    watch_bytes = delta(before["watch_bytes"], after["watch_bytes"])
    watch_events = delta(before["watch_events"], after["watch_events"])
    return {
        "load": load,
        "apiserver_cpu_changes": cpu_after - cpu_before,
        "apiserver_idle_cpu_rate": idle_rate,
        "apiserver_rss_before": rss_before,
        "apiserver_peak_rss": status_mb(pid, "VmHWM"),
        "watch_bytes_total": sum(watch_bytes.get(r, 0.0) for r in WATCHED),
        "watch_events_total": sum(watch_events.get(r, 0.0) for r in WATCHED),
        "watch_bytes_per_event": sum(watch_bytes.get(r, 0.0) for r in WATCHED)
        / max(1.0, sum(watch_events.get(r, 0.0) for r in WATCHED)),
        "changes_made": float(len(writes)),
        "client_bytes_per_watcher_change": read / max(1, watchers) / max(1, len(writes)),
    }


Runs = dict[int, list[dict[str, float]]]


def run(workdir: Path, plan: Plan, progress: Callable[[str], None]) -> tuple[dict[str, float], Runs, Runs]:
    """Seed once, then every K `plan.runs` times, then every count of plain watches `plan.runs` times: (seeding
    figures, figures per K per run, figures per count of plain watches per run)."""
    plane = ControlPlane(workdir / "controlplane", service_cidrs=SERVICE_CIDRS)
    plane.start(progress=progress)
    client = Client(plane)
    try:
        progress(f"seeding {plan.services} Services and {2 * plan.services} EndpointSlices")
        seeded = seed(client, plan.services, plan.dual_stack, plan.seed_threads)
        seeded["apiserver_rss_seeded"] = status_mb(plane.apiserver.pid, "VmRSS") if plane.apiserver else 0.0
        progress(
            f"seeded: Services {seeded['services_seconds']:.1f} s ({seeded['services_per_second']:.0f}/s), "
            f"EndpointSlices {seeded['endpointslices_seconds']:.1f} s ({seeded['endpointslices_per_second']:.0f}/s)"
        )
        results: dict[int, list[dict[str, float]]] = {}
        serial = 0
        for count in plan.nodes:
            for attempt in range(plan.runs):
                figures = one_run(
                    plane=plane, client=client, workdir=workdir / f"k{count}-run{attempt}", plan=plan, count=count,
                    start_index=serial * plan.changes, progress=progress,
                )  # fmt: skip
                serial += 1
                results.setdefault(count, []).append(figures)
                if count:
                    figures.update(marginal(figures, results.get(0, []), count))
                progress(f"K={count} run {attempt + 1}: " + json.dumps({k: round(v, 4) for k, v in figures.items()}))
        raw: Runs = {}
        for watchers in plan.raw_watchers:
            for attempt in range(plan.runs):
                figures = _writes_alone(
                    plane=plane, client=client, plan=plan, start_index=serial * plan.changes,
                    load=os.getloadavg()[0], idle_rate=math.nan, rss_before=math.nan, watchers=watchers,
                )  # fmt: skip
                serial += 1
                figures.update(marginal(figures, results.get(0, []), watchers))
                raw.setdefault(watchers, []).append(figures)
                progress(f"M={watchers} run {attempt + 1}: " + json.dumps({k: round(v, 4) for k, v in figures.items()}))
        return seeded, results, raw
    finally:
        client.close()
        plane.stop()
