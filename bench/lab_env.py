"""The benchmark's lab: one FRR router and one node namespace, the speaker restarted per run, Services seeded."""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from announcer.exabgp_settings import PIPE_SETTINGS
from bench.daemons import DaemonWatch, file_size
from bench.frr import BgpdVty, VtyError
from lab import netns
from lab.fakeapi import FakeApiServer
from lab.lab import (
    API_ADDRESS,
    API_PORT,
    Lab,
)
from lab.netns import ProcessRecord

log = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parent
FRR_CONF = BENCH_DIR / "frr.conf"
FLOOR_SCRIPT = BENCH_DIR / "floor_api.py"
NODE = "node-a"
PREFIX = "bn-"
ROUTER = {"ipv4": "192.0.2.1", "ipv6": "2001:db8::1"}
NODE_ADDRESS = {"ipv4": "192.0.2.11", "ipv6": "2001:db8::11"}
FAMILIES = ("ipv4", "ipv6")
# Benchmark cluster IPs: RFC 2544's benchmarking range for IPv4 (BGP data only, never on an interface) and a
# documentation /64 for IPv6.
IPV4_BASE = ipaddress.IPv4Address("198.18.0.0")
IPV4_SIZE = 1 << 17
IPV6_BASE = ipaddress.IPv6Address("2001:db8:96::")
NAMESPACES = 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def now() -> float:
    """The benchmark's clock: CLOCK_BOOTTIME, the clock /proc/PID/stat start times are counted in."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def service_addresses(index: int) -> tuple[str, str]:
    """The IPv4 and IPv6 cluster IPs of benchmark Service number index (0-based)."""
    if not 0 <= index < IPV4_SIZE - 2:
        raise ValueError(f"Service index {index} outside 198.18.0.0/15")
    return str(IPV4_BASE + index + 1), str(IPV6_BASE + index + 1)


def prefixes(count: int, family: str, first: int = 0) -> list[str]:
    """Host prefixes of Services first..first+count-1 for one family."""
    column = 0 if family == "ipv4" else 1
    length = 32 if family == "ipv4" else 128
    return [f"{service_addresses(index)[column]}/{length}" for index in range(first, first + count)]


def service_object(
    index: int, generation: int = 0, *, dual_stack: bool = True, annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A dual-stack ClusterIP Service shaped like a real API server's (managedFields included); dual_stack
    False: the same Service single-stack IPv4 (what a PreferDualStack -> SingleStack downgrade leaves).
    annotations are added to the benchmark's own."""
    ipv4, ipv6 = service_addresses(index)
    name = f"svc-{index:05d}"
    namespace = f"bench-{index % NAMESPACES:02d}"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name, "app.kubernetes.io/part-of": "bench", "generation": str(generation)},
            "annotations": {"bench.example/owner": "team-a", **(annotations or {})},
            "managedFields": [
                {
                    "manager": "kubectl-client-side-apply",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2025-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {
                            "f:internalTrafficPolicy": {},
                            "f:ipFamilies": {},
                            "f:ipFamilyPolicy": {},
                            "f:ports": {".": {}, 'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:port": {}}},
                            "f:selector": {},
                            "f:sessionAffinity": {},
                            "f:type": {},
                        },
                    },
                }
            ],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": name},
            "ipFamilyPolicy": "RequireDualStack" if dual_stack else "SingleStack",
            "ipFamilies": ["IPv4", "IPv6"] if dual_stack else ["IPv4"],
            "clusterIP": ipv4,
            "clusterIPs": [ipv4, ipv6] if dual_stack else [ipv4],
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        },
        "status": {"loadBalancer": {}},
    }


def split_environment(environment: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A row's ExaBGP settings as (those for speaker.environment, those set directly in the environment ExaBGP is
    started with): the schema refuses overrides of the settings the announcer relies on (config.PIPE_SETTINGS),
    which only the floor's rows change (a floor API process has no such needs)."""
    through_config = {key: value for key, value in environment.items() if key not in PIPE_SETTINGS}
    direct = {key: value for key, value in environment.items() if key in PIPE_SETTINGS}
    return through_config, direct


def announcer_config(speaker: Mapping[str, Any], environment: Mapping[str, str]) -> dict[str, Any]:
    """The announcer configuration of the benchmark node: cluster IPs only, no attributes beyond next-hop (but the
    communities the soak annotates)."""
    return {
        "node_name": NODE,
        "bgp": {
            "local_as": 64513,
            "router_id": NODE_ADDRESS["ipv4"],
            "hold_time": 30,
            "peers": [{"address": ROUTER[family], "peer_as": 64512} for family in FAMILIES],
        },
        "announce": {"cluster_ips": True},
        "annotations": {"communities": {"enabled": True, "allowlist": ["64513:*"]}},  # the soak's (soak_model.py)
        "speaker": {**speaker, "environment": dict(environment), "announcer_command": "announcer"},
        "log_level": "info",
    }


@dataclass
class SpeakerStart:
    """What was started: ExaBGP's PID and start (CLOCK_BOOTTIME s), and the clock when start was asked."""

    exabgp_pid: int
    exabgp_started: float
    asked: float


def process_start(pid: int) -> float | None:
    """A process's start time in CLOCK_BOOTTIME seconds (10 ms resolution), None if gone."""
    ticks = netns.process_start_time(pid)
    return None if ticks is None else ticks / CLOCK_TICKS


def process_usage(pid: int) -> dict[str, float] | None:
    """CPU seconds (user+system, this process only), peak and current RSS in MiB, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    memory = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            memory[key] = int(value.split()[0]) / 1024
    return {"cpu_s": cpu, "hwm_mib": memory.get("VmHWM", 0.0), "rss_mib": memory.get("VmRSS", 0.0)}


CLONE_NEWNET = 0x40000000


def _enter_namespace(name: str) -> None:
    """Move the calling thread (only) into a named network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(descriptor, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {name}: {os.strerror(error)}")
    finally:
        os.close(descriptor)


class IsolatedLab(Lab):
    """The lab without its root-namespace link: the stand-in API server listens inside the node namespace.

    The plain lab puts 203.0.113.254/28 (API_ADDRESS in HOST_NETWORK) in the root namespace, so only one lab can
    run on a machine at a time; end-to-end tests run by others on the same machine would wait while the benchmark
    runs, and the benchmark while they run. Here API_ADDRESS/32 sits on the node namespace's loopback and the API
    server binds there (a thread enters the namespace just to create its listening socket): nothing of this lab
    is in the root namespace, and the node gets no HOST_NETWORK address on its LAN interface.
    """

    def _take_address_lock(self) -> None:
        """Not the lab's address lock (this lab puts no address in the root namespace, so it runs beside a test
        lab) but one of its own: benchmark labs share their namespace names, so a second one (another
        `python3 -m bench`, a benchmark test) waits here until the first is down."""
        if self._address_lock is not None:
            return
        self._state_dir.mkdir(parents=True, exist_ok=True)
        lock = (self._state_dir / "bench.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another benchmark lab is up; waiting for it to go down")
            print("bench: another benchmark lab is up; waiting for it to go down", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        self._address_lock = lock
        self._wait_for_unlocked_owner()

    def _wait_for_unlocked_owner(self) -> None:
        """A benchmark lab brought up by a process that does not take the lock (an older checkout): wait while
        its owner lives (its namespaces would otherwise fail the preflight)."""
        path = netns.LabState.for_prefix(self.prefix, self._state_dir).path
        said = False
        while path.exists():
            try:
                owner = netns.LabState.load(path).owner_pid
            except (OSError, ValueError, KeyError):
                return
            if owner == os.getpid() or not netns.is_alive(owner):
                return
            if not said:
                print(f"bench: a benchmark lab of PID {owner} is up; waiting for it to go down", file=sys.stderr)
                said = True
            time.sleep(1.0)

    def _check_api_address_free(self) -> None:
        """The API address lives inside this lab's own node namespace: nothing in the root namespace to check."""

    def _place_api_address(self, bridge: str) -> None:
        """API_ADDRESS/32 on each node namespace's loopback instead of a link into the root namespace."""
        for node in self.nodes.values():
            netns.add_address(node.namespace, "lo", f"{API_ADDRESS}/32")

    def start_api_server(self) -> Any:
        node = next(iter(self.nodes.values()))
        server = FakeApiServer(host=API_ADDRESS, port=API_PORT)
        failure: list[BaseException] = []

        def start_inside() -> None:
            try:
                _enter_namespace(node.namespace)
                server.start()
            except BaseException as error:  # reported to the caller below
                failure.append(error)

        thread = threading.Thread(target=start_inside, name="fakeapi-in-node-namespace")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
        self.api = server
        return server


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block ends (a teardown is not cut short; they arrive after)."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class BenchLab:
    """The lab of the benchmark, with the speaker (ExaBGP and its API process) started and stopped per run.

    Use ``with BenchLab(workdir) as bench:``: the lab (namespaces, FRR, ExaBGP, BIRD) is torn down on every way
    out, Ctrl-C and SIGTERM included (``python3 -m bench`` turns SIGTERM into KeyboardInterrupt). Every daemon it
    starts is watched while the benchmark waits on FRR: one that exits raises DaemonFailed with its own output.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        self.config_path = workdir / "announcer.yaml"
        self.write_config({}, {})
        self.lab = IsolatedLab(
            PREFIX,
            nodes=(NODE,),
            config_path=self.config_path,
            run_dir=workdir / "lab",
            api_server=True,
            frr_config=FRR_CONF,
            announcer_command=self.floor_command(self.idle_spec()),
        )
        self.vty: BgpdVty | None = None
        self.present: set[int] = set()
        self.modified: set[int] = set()  # present, but written otherwise than service_object(index)
        self.daemons = DaemonWatch()

    # --- life cycle ---------------------------------------------------------------------------------------
    def up(self) -> BenchLab:
        """Bring the lab up (torn down again if that fails or is interrupted), FRR watched, the speaker stopped."""
        try:
            self.lab.up(wait=True)
            router = self.lab.frr()
            for record in router.processes:
                daemon = record.name.removeprefix("frr-")
                self.daemons.add(record.name, record, router.runtime_dir / f"{daemon}.out", router.log_path(daemon))
            self.vty = BgpdVty(self.lab.run_dir / "frr")
            self.stop_speaker()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop everything the benchmark started and delete its namespaces; signals wait until it is done."""
        with signals_held():
            for name in ("exabgp", "frr-bgpd", "frr-zebra"):
                self.daemons.remove(name)
            if self.vty is not None:
                self.vty.close()
                self.vty = None
            self.lab.down()

    def __enter__(self) -> BenchLab:
        return self.up()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.down()

    def track(self, record: ProcessRecord, *output: Path, since: Mapping[Path, int] | None = None) -> None:
        """A daemon started beside the lab's own (BIRD): watched, and stopped with the lab if the run ends."""
        state = self.lab.state
        if state is not None:
            state.add_process(record)
        self.daemons.add(record.name, record, *output, since=since)

    def untrack(self, record: ProcessRecord) -> None:
        """Before stopping a tracked daemon on purpose."""
        self.daemons.remove(record.name)
        state = self.lab.state
        if state is not None:
            state.remove_process(record)

    @property
    def api(self) -> Any:
        return self.lab.api

    def frr(self) -> BgpdVty:
        if self.vty is None:
            raise RuntimeError("the lab is not up")
        return self.vty

    # --- the speaker --------------------------------------------------------------------------------------
    def write_config(self, speaker: Mapping[str, Any], environment: Mapping[str, str]) -> None:
        document = announcer_config(speaker, environment)
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    def idle_spec(self) -> Path:
        """A floor spec that announces nothing (the lab comes up with it)."""
        path = self.workdir / "idle.json"
        spec = {"mode": "bulk", "status": str(self.workdir / "idle.status"), "peers": ROUTER_PEERS,
                "prefixes": {}, "ack": True}  # fmt: skip
        path.write_text(json.dumps(spec), encoding="utf-8")
        return path

    @staticmethod
    def floor_command(spec: Path) -> str:
        return f"{sys.executable} {FLOOR_SCRIPT} {spec}"

    def start_speaker(
        self,
        *,
        floor_spec: Path | None,
        speaker: Mapping[str, Any],
        environment: Mapping[str, str],
        announcer_command: str | None = None,
    ) -> SpeakerStart:
        """Start ExaBGP with the floor API process (floor_spec) or the announcer (announcer_command or the
        installed `announcer`)."""
        through_config, direct = split_environment(environment)
        self.write_config(speaker, through_config)
        self.lab.exabgp_environment = direct  # over what `exabgp-env` renders, at start_exabgp
        if floor_spec is not None:
            self.lab.announcer_command = self.floor_command(floor_spec)
        else:
            self.lab.announcer_command = announcer_command or "announcer"
        asked = now()
        log_path = self.lab.node(NODE).exabgp_log
        before = file_size(log_path)
        record = self.lab.start_exabgp(NODE)
        self.daemons.add("exabgp", record, log_path, since={log_path: before})
        started = process_start(record.pid) or asked
        return SpeakerStart(record.pid, started, asked)

    def api_pid(self, timeout: float = 10.0) -> int | None:
        return self.lab.announcer_pid(NODE, timeout=timeout)

    def exabgp_pid(self) -> int | None:
        return self.lab.exabgp_pid(NODE)

    def stop_speaker(self, timeout: float = 120.0) -> None:
        """Stop ExaBGP (and its API process), then wait until FRR has dropped every route it had."""
        self.daemons.remove("exabgp")
        self.lab.stop_exabgp(NODE, timeout=10.0)
        self.wait_rib_empty(timeout)

    def wait_rib_empty(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.daemons.check()
            try:
                counts = [self.rib_count(family) for family in FAMILIES]
            except VtyError:
                counts = [-1]
            if counts == [0, 0]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"FRR still holds {counts} routes {timeout:.0f} s after the speaker stopped")
            time.sleep(0.05)

    def updates_received(self) -> dict[str, int]:
        """FRR's cumulative UPDATE messages received from the node, per family's session."""
        counts = {}
        for family in FAMILIES:
            address = NODE_ADDRESS[family]
            document = self.frr().json(f"show bgp neighbors {address} json")
            stats = document.get(address, {}).get("messageStats", {}) if isinstance(document, dict) else {}
            counts[family] = int(stats.get("updatesRecv", 0))
        return counts

    def rib_count(self, family: str) -> int:
        document = self.frr().json(f"show bgp {family} unicast summary json")
        return int(document.get("ribCount", 0)) if isinstance(document, dict) else 0

    def wait_established(self, timeout: float = 60.0) -> float:
        """Seconds until both sessions of the node are Established."""
        started = time.monotonic()
        while True:
            self.daemons.check()
            states = {family: self.frr().states(family).get(NODE_ADDRESS[family]) for family in FAMILIES}
            if all(state == "Established" for state in states.values()):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"sessions not Established within {timeout:.0f} s: {states}")
            time.sleep(0.01)

    def wait_full(self, count: int, timeout: float) -> dict[str, float] | None:
        """CLOCK_BOOTTIME at which FRR held `count` prefixes of each family from the node; None at timeout."""
        wanted = {family: {NODE_ADDRESS[family]: count} for family in FAMILIES}
        offset = now() - time.monotonic()
        done = self.frr().wait_counts(wanted, timeout, on_poll=self.daemons.check)
        return None if done is None else {family: at + offset for family, at in done.items()}

    # --- Services -----------------------------------------------------------------------------------------
    def apply_service(self, index: int) -> None:
        self.api.apply(service_object(index))
        self.present.add(index)
        self.modified.discard(index)

    def apply_object(self, index: int, document: dict[str, Any], *, variant: bool) -> None:
        """Write Service number index as given: service_object(index) built in advance (variant False) or
        another version of it (the soak's; set_services writes it back as service_object makes it)."""
        self.api.apply(document)
        self.present.add(index)
        if variant:
            self.modified.add(index)
        else:
            self.modified.discard(index)

    def delete_service(self, index: int) -> None:
        self.api.delete("Service", f"bench-{index % NAMESPACES:02d}", f"svc-{index:05d}")
        self.present.discard(index)
        self.modified.discard(index)

    def set_services(self, count: int) -> float:
        """Make the API server hold exactly Services 0..count-1, as service_object makes them; returns the
        seconds it took."""
        started = time.monotonic()
        for index in sorted(self.present - set(range(count)), reverse=True):
            self.delete_service(index)
        for index in range(count):
            if index not in self.present or index in self.modified:
                self.apply_service(index)
        return time.monotonic() - started

    def write_prefix_files(self, count: int) -> dict[str, str]:
        """Files of the first `count` Services' prefixes per family (for the floor)."""
        paths = {}
        for family in FAMILIES:
            path = self.workdir / f"prefixes-{family}-{count}.txt"
            if not path.exists():
                path.write_text("\n".join(prefixes(count, family)) + "\n", encoding="ascii")
            paths[family] = str(path)
        return paths


ROUTER_PEERS = {family: [ROUTER[family]] for family in FAMILIES}
