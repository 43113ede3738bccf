"""One cold interpreter running the announcer's first-sync path against an API server, phase by phase.

Run by bench/hotpath.py as `python3 -m bench.hotpath_child URL SIZE VARIANT [PROFILE_PREFIX]`; prints one JSON
object: seconds per phase, VmHWM/VmRSS (MiB) after each, and the JSON-decode share of the list. VARIANT names
what is changed (in this process only, by patching) to measure a recommended change: "as-is", "int-prefix"
(host prefixes built from the address's integer), "int-sort" (render sorts by integer), "stream" (each list
page converted as it arrives and its raw objects dropped), "all" (the three together).
"""

from __future__ import annotations

import cProfile
import gc
import ipaddress
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

STARTED = time.time()  # the parent subtracts its spawn time: interpreter start-up


def _memory() -> dict[str, float]:
    found = {}
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) / 1024
    return found


class Phases:
    def __init__(self, profile_prefix: str | None) -> None:
        self.seconds: dict[str, float] = {}
        self.memory: dict[str, dict[str, float]] = {}
        self.profile_prefix = profile_prefix

    def run(self, name: str, action: Callable[[], Any]) -> Any:
        profiler = cProfile.Profile() if self.profile_prefix else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        value = action()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{self.profile_prefix}-{name}.prof")
        self.seconds[name] = time.perf_counter() - started
        self.memory[name] = _memory()
        return value


class TimedJson:
    """json with loads timed (patched into announcer.kube, which decodes each list page with it)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.pages = 0
        self.bytes = 0

    def loads(self, data: Any) -> Any:
        started = time.perf_counter()
        value = json.loads(data)
        self.seconds += time.perf_counter() - started
        self.pages += 1
        self.bytes += len(data)
        return value


def _int_host_prefix(address: Any) -> Any:
    """The host prefix from the address's integer: no text round trip."""
    if address.version == 4:
        return ipaddress.IPv4Network(int(address))
    return ipaddress.IPv6Network(int(address))


def _int_sorted(prefixes: Iterable[Any]) -> list[Any]:
    return sorted(prefixes, key=lambda prefix: (prefix.version, int(prefix.network_address)))


def main(argv: list[str]) -> int:  # noqa: PLR0915  (one phase after the other, in order, on purpose)
    size, variant = int(argv[2]), argv[3]  # argv[1], the server's URL, is in the kubeconfig (argv[5])
    profile_prefix = argv[4] if len(argv) > 4 else None
    phases = Phases(profile_prefix)
    result: dict[str, Any] = {"size": size, "variant": variant, "main_at": STARTED}

    def imports() -> Any:  # the daemon's import chain (kubernetes.client comes with announcer.kube)
        import announcer.daemon
        import announcer.kube

        return announcer.daemon

    phases.run("import", imports)
    from announcer import desired, kube, reconcile
    from announcer.config import parse_config
    from announcer.convert import service_view
    from announcer.daemon import Announcer
    from announcer.desired import DesiredTable, Policy
    from announcer.kube import Resource, ResourceWatcher
    from announcer.model import Family

    if variant in ("int-prefix", "all"):
        desired.host_prefix = _int_host_prefix
    if variant in ("int-sort", "all"):
        reconcile._sorted = _int_sorted

    config = parse_config({
        "node_name": "node-a",
        "bgp": {"local_as": 64513, "router_id": "192.0.2.11",
                "peers": [{"address": "192.0.2.1", "peer_as": 64512}, {"address": "2001:db8::1", "peer_as": 64512}]},
    })  # fmt: skip
    kubeconfig = Path(argv[5]) if len(argv) > 5 else None

    api_client = phases.run("client", lambda: kube.make_api_client(kubeconfig))
    timed_json = TimedJson()
    vars(kube)["json"] = timed_json  # announcer.kube decodes each list page with json.loads
    events: list[Any] = []
    stream = variant in ("stream", "all")
    views: list[Any] = []

    def sink(event: Any) -> None:
        events.append(event)

    def watchers() -> Any:
        """Both of the daemon's watchers (each builds its kubernetes.client API class)."""
        ResourceWatcher(Resource.ENDPOINTSLICES, api_client, sink, threading.Event(), page_size=500)
        return ResourceWatcher(Resource.SERVICES, api_client, sink, threading.Event(), page_size=500)

    watcher = phases.run("watchers", watchers)
    prefix = config.announce.annotation_prefix
    if stream:
        # Each page converted as it arrives; its raw objects are dropped before the next page is read.
        def list_streaming() -> None:
            token = None
            while True:
                arguments: dict[str, Any] = {"limit": watcher.page_size, "_request_timeout": 30.0}
                if token:
                    arguments["_continue"] = token
                response = watcher._request(**arguments)
                try:
                    page = timed_json.loads(response.data)
                finally:
                    response.release_conn()
                views.extend(service_view(obj, prefix)[0] for obj in page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    return

        phases.run("list+convert", list_streaming)
        result["list_json_decode_s"] = timed_json.seconds
    else:
        phases.run("list", watcher._list)
        result["list_json_decode_s"] = timed_json.seconds
        objects = events[0].objects
        result["objects"] = len(objects)
        views = phases.run("convert", lambda: [service_view(obj, prefix)[0] for obj in objects])
        del objects
        events.clear()
    result["list_bytes"] = timed_json.bytes
    table = DesiredTable(config.node, Policy.from_config(config))
    phases.run("decide", lambda: table.replace_services(views))
    table.take_dirty()
    plan = phases.run("plan", lambda: reconcile.plan_changes(set(table.all_prefixes()), table.desired_attributes, {}))
    peers = {family: [peer.address for peer in config.bgp.peers_of(family)] for family in Family}
    result["commands"] = len(reconcile.render_commands(plan, peers, 500))  # untimed: _send renders again

    class InstantPipe:
        """Accepts every line at once and acks it: what is left is the announcer's own bookkeeping."""

        def send(self, line: str, on_ack: Callable[[bool], None] | None = None) -> None:
            if on_ack is not None:
                on_ack(True)

    announcer = Announcer(config, InstantPipe(), None)  # type: ignore[arg-type]

    def send() -> None:
        announcer._send(plan, threading.Event(), time.monotonic())

    phases.run("render + send loop (instant acks)", send)
    gc.collect()
    result["after_gc"] = _memory()
    result["seconds"] = phases.seconds
    result["memory"] = phases.memory
    result["prefixes"] = len(announcer.announced)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
