"""End-to-end test support: one lab up at a time for the session, its prerequisites, bounded waits on FRR."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Self

import pytest

from lab.frr import Family, frr_missing_reason
from lab.lab import DEFAULT_NODES, EXAMPLE_CONFIG, TEST_PREFIX, Lab

# What the trivial API process announces: every node the cluster IPs, only node-a the load-balancer IPs.
STATIC_ROUTES = ("198.51.100.10/32", "2001:db8:96::a/128", "198.51.100.128/32@node-a", "2001:db8:1b::1/128@node-a")

Rib = dict[str, dict[str, list[str]]]


def require_lab_prerequisites() -> None:
    """Fail (never skip) with a clear message when the lab cannot run here."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces, veths, FRR): run them as root", pytrace=False)
    reason = frr_missing_reason()
    if reason is not None:
        pytest.fail(f"lab tests need FRR: {reason}", pytrace=False)


def static_api_command(*routes: str) -> str:
    """The command line of the trivial API process announcing routes (PREFIX or PREFIX@NODE)."""
    arguments = " ".join(f"--route {route}" for route in routes)
    return f"{sys.executable} -m lab static-api {arguments}"


class LabKeeper:
    """Keeps at most one lab up for the test session (they share 203.0.113.240/28), replacing it on demand."""

    def __init__(self, prefix: str = TEST_PREFIX) -> None:
        self.prefix = prefix
        self.current: Lab | None = None
        self._kind: tuple[str | None, Path | None, Path | None, str] | None = None
        self.timings: list[dict[str, float]] = []

    def get(
        self,
        announcer_command: str | None = None,
        seed_path: Path | None = None,
        config_path: Path | None = None,
        kube: str = "stand-in",
        kube_nodes: bool = False,
    ) -> Lab:
        """A running lab with this API process, seed, configuration and API server (the stand-in, or the real
        one), reusing the current one when it matches. kube_nodes: node-a alone, as a real Kubernetes node (no
        ExaBGP of the lab's own: the caller installs the product)."""
        require_lab_prerequisites()
        kind = (announcer_command, seed_path, config_path, kube + ("+nodes" if kube_nodes else ""))
        if self.current is not None and self._kind == kind:
            self.heal()
            return self.current
        self.close()
        lab = Lab(
            self.prefix,
            ("node-a",) if kube_nodes else DEFAULT_NODES,
            announcer_command=announcer_command,
            api_server=True,
            seed_path=seed_path,
            config_path=EXAMPLE_CONFIG if config_path is None else config_path,
            # The end-to-end tests read the announcer's commands from ExaBGP's log (one line per route).
            exabgp_environment={"exabgp.log.processes": "true"},
            kube=kube,
            kube_nodes=kube_nodes,
        )
        print(f"lab {self.prefix}: starting, run directory {lab.run_dir}", file=sys.stderr)
        lab.up()  # tears itself down when it fails
        self.current, self._kind = lab, kind
        return lab

    def heal(self, timeout: float = 60.0) -> None:
        """Restart ExaBGP where a test left it stopped, then wait for every session."""
        lab = self.current
        if lab is None or lab.kube_nodes:
            return
        for name in lab.nodes:
            if lab.exabgp_pid(name) is None:
                lab.stop_exabgp(name)
                lab.start_exabgp(name)
        lab.wait_established(timeout)

    def close(self, keep_lock: bool = False) -> list[str]:
        """Tear the current lab down (by PID and namespace); returns what was cleaned up. keep_lock: the lab
        keeps the machine-wide lock (its release_lock() ends that), so no other run's lab comes up meanwhile."""
        lab, self.current, self._kind = self.current, None, None
        if lab is None:
            return []
        notes = lab.down(release_lock=not keep_lock)
        self.timings.append(dict(lab.timings))
        print(f"lab {self.prefix}: down, timings {lab.timings}, logs in {lab.run_dir}", file=sys.stderr)
        return notes


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@pytest.fixture(scope="session")
def lab_keeper() -> Iterator[LabKeeper]:
    """The session's lab keeper; whatever lab it holds is torn down at the end, on failure and on Ctrl-C."""
    keeper = LabKeeper()
    previous: Any = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # SIGTERM would otherwise end pytest without running the teardown
        previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        yield keeper
    finally:
        keeper.close()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def lab(lab_keeper: LabKeeper) -> Lab:
    """The lab with the real announcer (the rendered exabgp.conf's process line) and an empty API server."""
    return lab_keeper.get()


@pytest.fixture
def static_lab(lab_keeper: LabKeeper) -> Lab:
    """The lab with a trivial API process announcing STATIC_ROUTES instead of the announcer."""
    return lab_keeper.get(announcer_command=static_api_command(*STATIC_ROUTES))


@pytest.fixture
def api(lab: Lab) -> Any:
    """The stand-in Kubernetes API server (FakeApiServer) of the real-announcer lab, on 203.0.113.254:6443."""
    return lab.api


def wait_for_rib(
    lab: Lab,
    family: Family,
    predicate: Callable[[Rib], bool],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
) -> Rib:
    """Poll FRR's RIB of one family ({neighbour: {prefix: [next-hops]}}) until predicate holds; fail at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        rib = lab.rib(family)
        if predicate(rib):
            return rib
        if time.monotonic() > deadline:
            pytest.fail(f"{family} RIB: {what} not reached within {timeout:.0f} s; FRR has {rib}", pytrace=False)
        time.sleep(interval)


def wait_for_rib_equal(lab: Lab, family: Family, expected: Rib, timeout: float = 30.0) -> Rib:
    """Wait until FRR's RIB of one family is exactly expected ({neighbour: {prefix: [next-hops]}})."""
    wanted = {peer: {prefix: sorted(hops) for prefix, hops in routes.items()} for peer, routes in expected.items()}
    wanted = {peer: routes for peer, routes in wanted.items() if routes}
    return wait_for_rib(lab, family, lambda rib: rib == wanted, timeout=timeout, what=f"exactly {wanted}")


def wait_for_routes(
    lab: Lab, family: Family, expected: Mapping[str, Collection[str]], timeout: float = 30.0
) -> dict[str, list[str]]:
    """Wait until FRR's routes of one family are exactly {prefix: next-hops} (next-hops over every neighbour)."""
    wanted = {prefix: sorted(hops) for prefix, hops in expected.items()}
    deadline = time.monotonic() + timeout
    while True:
        routes = lab.routes(family)
        if routes == wanted:
            return routes
        if time.monotonic() > deadline:
            pytest.fail(f"{family} routes: wanted {wanted} within {timeout:.0f} s, FRR has {routes}", pytrace=False)
        time.sleep(0.2)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of the running processes (but this one) that mention `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command_line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in command_line and int(proc.name) != os.getpid():
                found.append(command_line)
    return found


class BackgroundSampler:
    """Calls take() every interval in a thread while the `with` block runs (a test's view of FRR during an event)."""

    interval = 0.1

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            time.sleep(self.interval)
