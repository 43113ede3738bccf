"""The API-server benchmark's bookkeeping: the objects it writes, command logs, metric deltas, latencies, the table."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bench.stats import Summary, percentile

# Only documentation prefixes. IPv4 for Services: 198.51.100.0/24 (the primary range, so the `kubernetes` Service
# takes .1), which holds DUAL_STACK_LIMIT dual-stack Services at most; every other Service is IPv6 SingleStack from
# 2001:db8:96::/108 (1M addresses). Endpoints: 192.0.2.0/24 and 2001:db8:a::/64. Nothing is routed anywhere.
SERVICE_CIDRS = ("198.51.100.0/24", "2001:db8:96::/108")
V4_SERVICE_BASE = ipaddress.IPv4Address("198.51.100.10")
DUAL_STACK_LIMIT = 240  # 198.51.100.10 - .249
V6_SERVICE_BASE = ipaddress.IPv6Address("2001:db8:96::1:0")  # the seeded Services
V6_CHANGE_BASE = ipaddress.IPv6Address("2001:db8:96::8:0")  # the Services the changes create and delete
V6_ENDPOINT_BASE = ipaddress.IPv6Address("2001:db8:a::1")
NAMESPACES = 20
ENDPOINTS_PER_SLICE = 3
NODE_NAMES = 50  # endpoints are spread over bench-node-0 .. bench-node-49
FIRST_SYNC = "#first-sync"  # bench/null_exabgp.py's mark


def node_name(index: int) -> str:
    return f"bench-node-{index}"


def namespace(index: int) -> str:
    return f"bench-{index % NAMESPACES:02d}"


def service(index: int, dual_stack: bool, *, change: bool = False) -> dict[str, object]:
    """A ClusterIP Service (Cluster policy) with explicit addresses: dual-stack, or IPv6 SingleStack."""
    v6 = str((V6_CHANGE_BASE if change else V6_SERVICE_BASE) + index)
    name = f"chg-{index:05d}" if change else f"svc-{index:05d}"
    addresses, families = ([str(V4_SERVICE_BASE + index), v6], ["IPv4", "IPv6"]) if dual_stack else ([v6], ["IPv6"])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace(index),
            "labels": {"app": name, "tier": "bench"},
            "annotations": {"bench.example/owner": "team-a"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": addresses[0],
            "clusterIPs": addresses,
            "ipFamilies": families,
            "ipFamilyPolicy": "RequireDualStack" if dual_stack else "SingleStack",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def endpoint_slice(index: int, part: int, family: str) -> dict[str, object]:
    """One of a Service's EndpointSlices: ENDPOINTS_PER_SLICE ready endpoints on nodes spread over NODE_NAMES."""
    service_name = f"svc-{index:05d}"
    endpoints = []
    for k in range(ENDPOINTS_PER_SLICE):
        serial = (index * 2 + part) * ENDPOINTS_PER_SLICE + k
        address = f"192.0.2.{1 + serial % 254}" if family == "IPv4" else str(V6_ENDPOINT_BASE + serial)
        endpoints.append(
            {
                "addresses": [address],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": node_name(serial % NODE_NAMES),
                "targetRef": {"kind": "Pod", "namespace": namespace(index), "name": f"{service_name}-pod-{serial}"},
            }
        )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{'ab'[part]}",
            "namespace": namespace(index),
            "labels": {
                "kubernetes.io/service-name": service_name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def seed_objects(services: int, dual_stack: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The Services (the first `dual_stack` of them dual-stack) and two EndpointSlices each (an IPv4 and an IPv6
    one for a dual-stack Service, two IPv6 ones otherwise)."""
    if dual_stack > DUAL_STACK_LIMIT:
        raise ValueError(f"at most {DUAL_STACK_LIMIT} dual-stack Services fit 198.51.100.0/24")
    made = [service(i, i < dual_stack) for i in range(services)]
    slices = [
        endpoint_slice(i, part, "IPv4" if i < dual_stack and part == 0 else "IPv6")
        for i in range(services)
        for part in (0, 1)
    ]
    return made, slices


def expected_prefixes(services: int, dual_stack: int) -> int:
    """Prefixes each node announces once synced: one per address, and the `kubernetes` Service's 198.51.100.1."""
    return services + min(dual_stack, services) + 1


# --- what each null ExaBGP saw ---------------------------------------------------------------------------------------
@dataclass
class CommandLog:
    """One announcer's command log, read incrementally: when each (action, prefix) first arrived, in ns."""

    first_sync_ns: int | None = None
    last_line_ns: int | None = None
    lines: int = 0
    arrivals: dict[tuple[str, str], int] = field(default_factory=dict)
    announced: set[str] = field(default_factory=set)  # prefixes announced and not withdrawn since
    _partial: str = ""

    def feed(self, text: str) -> None:
        """Take the next chunk of the log (it may end mid-line; the rest comes with the next chunk)."""
        text = self._partial + text
        complete, _, self._partial = text.rpartition("\n")
        for entry in complete.split("\n") if complete else ():
            self._take(entry)

    def _take(self, entry: str) -> None:
        stamp_text, _, line = entry.partition(" ")
        stamp = int(stamp_text)
        if line == FIRST_SYNC:
            if self.first_sync_ns is None:
                self.first_sync_ns = stamp
            return
        self.lines += 1
        self.last_line_ns = stamp
        for action, prefixes in [parse_command(line)]:
            for prefix in prefixes:
                self.arrivals.setdefault((action, prefix), stamp)
                if action == "announce":
                    self.announced.add(prefix)
                elif action == "withdraw":
                    self.announced.discard(prefix)


def parse_command(line: str) -> tuple[str, list[str]]:
    """A command line's action and prefixes ('', [] for anything else): 'neighbor A [, neighbor B] announce route P
    ...' or '... withdraw attributes ... nlri P1 P2 ...'."""
    words = line.split()
    for action in ("announce", "withdraw"):
        if action in words:
            rest = words[words.index(action) + 1 :]
            if rest[:1] == ["route"] and len(rest) > 1:
                return action, [rest[1]]
            if rest[:1] == ["attributes"] and "nlri" in rest:
                return action, [word for word in rest[rest.index("nlri") + 1 :] if "/" in word]
            return action, []
    return "", []


@dataclass(frozen=True)
class Write:
    """One API write the benchmark made: when (ns, before the request), and the command it must cause."""

    at_ns: int
    action: str  # announce (a Service created) or withdraw (deleted)
    prefix: str


def latencies(writes: Sequence[Write], logs: Sequence[CommandLog]) -> tuple[list[float], list[float], int]:
    """(per write: seconds until every announcer had its command; per write and announcer: seconds; how many
    (write, announcer) pairs never arrived)."""
    every: list[float] = []
    pairs: list[float] = []
    missing = 0
    for write in writes:
        seen = [log.arrivals.get((write.action, write.prefix)) for log in logs]
        arrived = [(stamp - write.at_ns) / 1e9 for stamp in seen if stamp is not None]
        pairs.extend(arrived)
        missing += len(seen) - len(arrived)
        if len(arrived) == len(seen) and arrived:
            every.append(max(arrived))
    return every, pairs, missing


# --- kube-apiserver's /metrics ---------------------------------------------------------------------------------------
Sample = tuple[str, frozenset[tuple[str, str]]]


def parse_metrics(text: str) -> dict[Sample, float]:
    """Prometheus text format to {(name, labels): value} (comments skipped)."""
    samples: dict[Sample, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, label_text = head.partition("{")
        labels = []
        for pair in _split_labels(label_text.rstrip("}")):
            key, _, quoted = pair.partition("=")
            labels.append((key, quoted.strip('"')))
        try:
            samples[(name, frozenset(labels))] = float(value)
        except ValueError:
            continue
    return samples


def _split_labels(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part for part in [*parts, current] if part]


def by_kind(samples: Mapping[Sample, float], name: str) -> dict[str, float]:
    """The values of one metric summed per kind (the label 'kind', or 'resource' where a version names it so)."""
    totals: dict[str, float] = {}
    for (sample_name, labels), value in samples.items():
        if sample_name != name:
            continue
        found = dict(labels)
        kind = found.get("kind") or found.get("resource") or ""
        totals[kind] = totals.get(kind, 0.0) + value
    return totals


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {key: after.get(key, 0.0) - before.get(key, 0.0) for key in sorted(set(before) | set(after))}


def marginal(run: Mapping[str, float], alone: Sequence[Mapping[str, float]], nodes: int) -> dict[str, float]:
    """What each announcer adds per change: this run's watch bytes, events and kube-apiserver CPU over the changes,
    less what the same changes cost with no announcer (`alone`: the K = 0 runs, their median per change, 0 when
    there is none), divided by nodes x changes."""
    changes = run["changes_made"]
    per = nodes * changes

    def base(key: str) -> float:
        found = Summary.of(r[key] / r["changes_made"] for r in alone if key in r and r.get("changes_made"))
        return 0.0 if found is None else found.median * changes

    return {
        "watch_bytes_per_node_change": (run["watch_bytes_total"] - base("watch_bytes_total")) / per,
        "watch_events_per_node_change": (run["watch_events_total"] - base("watch_events_total")) / per,
        "apiserver_cpu_per_change_node": (run["apiserver_cpu_changes"] - base("apiserver_cpu_changes")) / per,
    }


# --- the table -------------------------------------------------------------------------------------------------------
ROWS = (
    ("first_sync_log_median", "first sync complete, 'first sync:' logged, from its start (median of K)", "s", 2),
    ("first_sync_log_max", "first sync complete, 'first sync:' logged, from its start (slowest of K)", "s", 2),
    ("first_sync_out_max", "every route of every announcer out (from the first start)", "s", 2),
    ("apiserver_cpu_sync", "kube-apiserver CPU, K announcers listing and watching", "s", 2),
    ("apiserver_cpu_changes", "kube-apiserver CPU over the changes (K = 0: the writes alone)", "s", 2),
    ("apiserver_cpu_per_change_node", "kube-apiserver CPU per change per node, beyond K = 0", "ms", 3),
    ("apiserver_idle_cpu_rate", "kube-apiserver CPU at rest (before the announcers)", "s/s", 3),
    ("apiserver_rss_before", "kube-apiserver RSS before the announcers", "MB", 0),
    ("apiserver_peak_rss", "kube-apiserver peak RSS (VmHWM) during the run", "MB", 0),
    ("list_bytes_per_node", "LIST bytes per node (first sync)", "MB", 1),
    ("list_bytes_services_per_node", "of which Services", "MB", 1),
    ("watch_bytes_per_node_change", "watch bytes sent per node per change (Services, EndpointSlices)", "B", 0),
    ("watch_events_per_node_change", "watch events per node per change", "", 2),
    ("watch_bytes_per_event", "bytes per watch event (K = 0: kube-apiserver's own watchers, protobuf)", "B", 0),
    ("watch_bytes_total", "watch bytes sent over the changes, kube-apiserver's own watchers included", "MB", 2),
    ("latency_p50", "write -> every announcer's command line, p50", "ms", 1),
    ("latency_p99", "write -> every announcer's command line, p99", "ms", 1),
    ("latency_pairs_p99", "write -> one announcer's command line, p99 over all pairs", "ms", 1),
    ("missing", "(write, announcer) pairs never seen", "", 0),
    ("load", "machine load average (1 min) at the start of the run", "", 2),
)
SCALE = {"ms": 1000.0, "MB": 1e-6}  # seconds shown in ms, bytes in MB


KEPT_IN_MB = {"apiserver_rss_before", "apiserver_peak_rss", "list_bytes_per_node", "list_bytes_services_per_node"}


RAW_ROWS = (
    ("apiserver_cpu_changes", "kube-apiserver CPU over the changes", "s", 2),
    ("apiserver_cpu_per_change_node", "kube-apiserver CPU per change per watch, beyond K = 0", "ms", 4),
    ("watch_bytes_per_node_change", "watch bytes sent per watch per change (its /metrics)", "B", 0),
    (
        "client_bytes_per_watcher_change",
        "bytes read per watch per change (client side: the JSON lines)",
        "B",
        0,
    ),
    ("load", "machine load average (1 min) at the start of the run", "", 2),
)


def render(
    runs: Mapping[int, Sequence[Mapping[str, float]]], heading: str, rows: Sequence[tuple[str, str, str, int]] = ROWS,
    column: str = "K",
) -> str:  # fmt: skip
    """A Markdown table: one column per K (median of the runs, with min-max), one row per figure."""
    columns = sorted(runs)
    lines = [heading, "", "| figure | " + " | ".join(f"{column} = {k}" for k in columns) + " |"]
    lines.append("|---|" + "---|" * len(columns))
    for key, label, unit, digits in rows:
        cells = []
        for k in columns:
            scale = 1.0 if key in KEPT_IN_MB else SCALE.get(unit, 1.0)
            summary = Summary.of(run[key] * scale for run in runs[k] if key in run)
            cells.append("n/a" if summary is None else summary.text(unit, digits).replace("  ", " "))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def p(values: Iterable[float], fraction: float) -> float:
    data = list(values)
    return percentile(data, fraction) if data else math.nan
