"""The measurements: A speaker floor, B announcer, C BIRD, D steady-state latency (E is churn.py; F comes from B)."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.bird import Bird, bird_missing_reason, write_static
from bench.lab_env import (
    FAMILIES,
    NODE,
    NODE_ADDRESS,
    ROUTER,
    ROUTER_PEERS,
    BenchLab,
    now,
    prefixes,
    process_start,
    process_usage,
    service_addresses,
)
from bench.stats import Background, OtherThreadsCpu

log = logging.getLogger(__name__)

FULL_TIMEOUT = 240.0  # seconds allowed for FRR to hold (or match) a table of up to 25k Services


def full_timeout(count: int) -> float:
    """The time allowed for FRR to hold `count` Services' prefixes: FULL_TIMEOUT, scaled up beyond 25k."""
    return max(FULL_TIMEOUT, FULL_TIMEOUT * count / 25_000)


# The announcer's log lines (stderr, which ExaBGP copies into its own log) that mark its first sync.
_LOG_LINE = re.compile(r"^(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ (?P<logger>[\w.]+): (?P<message>.*)$")
_MARKS = {
    "announcer started": "started",
    "services: listed": "listed",
    "first sync:": "first_sync",
}


@dataclass(frozen=True)
class Settings:
    """One way of running the speaker: the floor's form (per_line, window) or the announcer's speaker.* keys,
    and ExaBGP's environment (exabgp.* keys over the announcer's DEFAULT_ENVIRONMENT)."""

    name: str
    environment: Mapping[str, str] = field(default_factory=dict)
    speaker: Mapping[str, Any] = field(default_factory=dict)
    per_line: int = 500
    window: int = 0
    interleave: bool = False
    form: str = ""  # floor only: "family" for `announce ipv4|ipv6 unicast PREFIX` lines
    delay: float = 0.0  # floor only: seconds before its first line
    pace: float = 0.0  # floor only: seconds per page of two lines
    command: str = ""  # announcer only: the command ExaBGP runs instead of `announcer` (bench/announcer_variant.py)

    def describe(self) -> str:
        parts = [f"{key.removeprefix('exabgp.')}={value}" for key, value in sorted(self.environment.items())]
        return ", ".join(parts) or "announcer DEFAULT_ENVIRONMENT"


def _known_pids(bench: BenchLab) -> list[int]:
    router = bench.lab.router
    return [os.getpid(), *(record.pid for record in (router.processes if router else []))]


def _log_offset(bench: BenchLab) -> int:
    path = bench.lab.node(NODE).exabgp_log
    return path.stat().st_size if path.exists() else 0


def announcer_marks(bench: BenchLab, offset: int) -> dict[str, float]:
    """CLOCK_BOOTTIME of the announcer's first-sync log lines written after offset."""
    path = bench.lab.node(NODE).exabgp_log
    with path.open("rb") as stream:
        stream.seek(offset)
        text = stream.read().decode("utf-8", errors="replace")
    wall_to_boot = now() - time.time()
    marks: dict[str, float] = {}
    for line in text.splitlines():
        match = _LOG_LINE.match(line)
        if match is None:
            continue
        for needle, name in _MARKS.items():
            if name not in marks and match["message"].startswith(needle):
                stamp = datetime.strptime(match["stamp"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                marks[name] = stamp + wall_to_boot
    return marks


# --- A: the speaker floor ----------------------------------------------------------------------------------
def floor_spec(bench: BenchLab, count: int, settings: Settings, mode: str = "bulk") -> Path:
    status = bench.workdir / "floor.status"
    status.unlink(missing_ok=True)
    spec = {
        "mode": mode,
        "status": str(status),
        "peers": ROUTER_PEERS,
        "prefixes": bench.write_prefix_files(count) if count else {},
        "per_line": settings.per_line,
        "window": settings.window,
        "interleave": settings.interleave,
        "form": settings.form,
        "delay": settings.delay,
        "pace": settings.pace,
        "ack": settings.environment.get("exabgp.api.ack", "true") == "true",
        "control": str(bench.workdir / "floor.sock"),
    }
    path = bench.workdir / "floor.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def _full_sample(done: Mapping[str, float], reference: float, prefix: str) -> dict[str, float]:
    sample = {f"{prefix}_{family}": done[family] - reference for family in FAMILIES}
    sample[prefix] = max(done.values()) - reference
    return sample


def _updates_sample(bench: BenchLab, before: Mapping[str, int]) -> dict[str, float]:
    """UPDATE messages FRR received per family since `before` (ExaBGP sends IPv6 one prefix per UPDATE)."""
    after = bench.updates_received()
    return {f"updates_{family}": float(after[family] - before.get(family, 0)) for family in FAMILIES}


@dataclass
class _SpeakerRun:
    """One ExaBGP start with an API process, up to FRR holding every prefix: the figures both A and B keep."""

    sample: dict[str, float]
    exabgp_started: float
    api_started: float | None
    api_usage: dict[str, float] | None


def _run_speaker(
    bench: BenchLab,
    count: int,
    floor: Path | None,
    speaker: Mapping[str, Any],
    environment: Mapping[str, str],
    *,
    command: str = "",
) -> _SpeakerRun | None:
    """Start ExaBGP (the floor process if `floor`, else the announcer), wait until FRR holds all 2*count
    prefixes; None (speaker stopped) on timeout. The speaker is left running."""
    background = Background(_known_pids(bench))
    standin = OtherThreadsCpu()
    updates = bench.updates_received()
    start = bench.start_speaker(
        floor_spec=floor, speaker=dict(speaker), environment=dict(environment), announcer_command=command or None
    )
    background.add(start.exabgp_pid)
    api_pid = bench.api_pid()
    if api_pid is not None:
        background.add(api_pid)
    done = bench.wait_full(count, full_timeout(count))
    if done is None:
        bench.stop_speaker()
        return None
    api_usage = process_usage(api_pid) if api_pid else None
    exabgp = process_usage(start.exabgp_pid) or {}
    sample = _full_sample(done, start.exabgp_started, "exabgp_to_full")
    api_started = process_start(api_pid) if api_pid else None
    if api_started is not None:
        sample["api_to_full"] = max(done.values()) - api_started
    sample["exabgp_cpu"] = exabgp.get("cpu_s", math.nan)
    sample["background_cpu"] = background.other_seconds()
    sample["standin_cpu"] = standin.seconds()
    if standin.foreign():
        log.warning("threads other than the stand-in's counted in its CPU: %s", ", ".join(standin.foreign()))
    sample.update(_updates_sample(bench, updates))
    return _SpeakerRun(sample, start.exabgp_started, api_started, api_usage)


def run_floor(bench: BenchLab, count: int, settings: Settings) -> dict[str, float]:
    """Start ExaBGP with the floor API process; seconds until FRR holds all 2*count prefixes."""
    run = _run_speaker(bench, count, floor_spec(bench, count, settings), {}, settings.environment)
    if run is None:
        return {"timeout": 1.0}
    bench.stop_speaker()
    return run.sample


# --- B: the announcer --------------------------------------------------------------------------------------
def run_announcer(bench: BenchLab, count: int, settings: Settings, keep: bool = False) -> dict[str, float]:
    """Start ExaBGP with the announcer, `count` Services already in the API server; seconds until FRR holds
    all 2*count prefixes, the announcer's own milestones, its CPU and peak RSS. keep: leave it running."""
    bench.set_services(count)
    offset = _log_offset(bench)
    run = _run_speaker(bench, count, None, settings.speaker, settings.environment, command=settings.command)
    if run is None:
        return {"timeout": 1.0}
    sample = run.sample
    marks = announcer_marks(bench, offset)
    reference = run.api_started if run.api_started is not None else run.exabgp_started
    for name in ("started", "listed", "first_sync"):
        if name in marks:
            sample[f"api_to_{name}"] = marks[name] - reference
    if run.api_usage is not None:
        sample["announcer_cpu"] = run.api_usage["cpu_s"]
        sample["announcer_hwm"] = run.api_usage["hwm_mib"]
        sample["announcer_rss"] = run.api_usage["rss_mib"]
    if not keep:
        bench.stop_speaker()
    return sample


# --- C: BIRD 1.6 -------------------------------------------------------------------------------------------
class BirdReference:
    """BIRD and BIRD6 (Calico's daemons) in the node namespace (ExaBGP stopped) on the node's addresses, so
    FRR's neighbours are the same."""

    def __init__(self, bench: BenchLab) -> None:
        self.bench = bench
        self.bird = Bird(bench.lab.node(NODE).namespace, bench.workdir / "bird")
        self.reason = bird_missing_reason()

    def _prepare(self, count: int) -> None:
        self.bird.write_configs(NODE_ADDRESS["ipv4"], NODE_ADDRESS, ROUTER)
        for family in FAMILIES:
            write_static(self.bird.includes[family], prefixes(count, family))

    def _start(self) -> None:
        for family, record in self.bird.start().items():
            output = self.bird.outputs[family]
            self.bench.track(record, output, since={output: 0})  # watched, and torn down with the lab

    def _stop(self) -> None:
        for record in list(self.bird.records.values()):
            self.bench.untrack(record)
        self.bird.stop()
        self.bench.wait_rib_empty(full_timeout(0) / 2)

    def run(self, count: int) -> dict[str, float]:
        """Cold: BIRD started with the routes; configure: BIRD up with none, routes added, `birdc configure`."""
        sample: dict[str, float] = {}
        self._prepare(count)
        updates = self.bench.updates_received()
        started = now()
        self._start()
        done = self.bench.wait_full(count, full_timeout(count))
        if done is not None:
            sample.update(_full_sample(done, started, "cold_to_full"))
            sample.update(_updates_sample(self.bench, updates))
        self._stop()
        self._prepare(0)
        self._start()
        self.bench.wait_established(60.0)
        for family in FAMILIES:
            write_static(self.bird.includes[family], prefixes(count, family))
        started = now()
        self.bird.configure()
        done = self.bench.wait_full(count, full_timeout(count))
        if done is not None:
            sample.update(_full_sample(done, started, "configure_to_full"))
        self._stop()
        return sample


# --- D: steady state ---------------------------------------------------------------------------------------
def _wait_presence(bench: BenchLab, wanted: Mapping[str, str], present: bool, timeout: float) -> float | None:
    """CLOCK_BOOTTIME when every (family, prefix) is present (or absent) in FRR, polled every ~0.5 ms."""
    frr = bench.frr()
    pending = dict(wanted)
    deadline = now() + timeout
    while pending:
        bench.daemons.check()
        for family, prefix in list(pending.items()):
            if frr.has_prefix(family, prefix) == present:
                del pending[family]
        if not pending:
            break
        if now() > deadline:
            return None
        time.sleep(0.0005)
    return now()


@dataclass
class Latencies:
    create: list[float] = field(default_factory=list)
    delete: list[float] = field(default_factory=list)
    lost: int = 0


def steady_announcer(bench: BenchLab, count: int, repeats: int, first_index: int) -> Latencies:
    """With the announcer running and `count` Services announced: create then delete one Service, repeatedly;
    seconds from the in-process API write to both prefixes present (then gone) in FRR."""
    result = Latencies()
    generator = random.Random(count)  # noqa: S311  (spacing between writes, not cryptography)
    for number in range(repeats):
        index = first_index + number
        ipv4, ipv6 = service_addresses(index)
        wanted = {"ipv4": f"{ipv4}/32", "ipv6": f"{ipv6}/128"}
        started = now()
        bench.apply_service(index)
        seen = _wait_presence(bench, wanted, True, 10.0)
        if seen is None:
            result.lost += 1
        else:
            result.create.append(seen - started)
        time.sleep(generator.uniform(0.005, 0.02))
        started = now()
        bench.delete_service(index)
        gone = _wait_presence(bench, wanted, False, 10.0)
        if gone is None:
            result.lost += 1
        else:
            result.delete.append(gone - started)
        time.sleep(generator.uniform(0.005, 0.02))
    return result


class FloorControl:
    """The floor API process in steady mode, holding the first `count` Services' prefixes, driven over its
    control socket (D's and E's floor). Use as a context manager: ExaBGP is stopped on the way out."""

    def __init__(self, bench: BenchLab, count: int, settings: Settings) -> None:
        self.bench = bench
        self.count = count
        self.settings = settings
        self.client: socket.socket | None = None
        self.reader: Any = None
        self.ready = False

    def __enter__(self) -> FloorControl:
        spec = floor_spec(self.bench, self.count, self.settings, mode="steady")
        self.bench.start_speaker(floor_spec=spec, speaker={}, environment=self.settings.environment)
        try:
            if self.bench.wait_full(self.count, full_timeout(self.count)) is None:
                return self
            control = self.bench.workdir / "floor.sock"
            deadline = time.monotonic() + 10.0
            while not control.exists() and time.monotonic() < deadline:
                self.bench.daemons.check()
                time.sleep(0.01)
            self.client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.client.connect(str(control))
            self.reader = self.client.makefile("rb")
            self.ready = True
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_exception: object) -> None:
        if self.reader is not None:
            self.reader.close()
        if self.client is not None:
            self.client.close()
        self.bench.stop_speaker()

    def send(self, line: str) -> None:
        assert self.client is not None
        self.client.sendall(line.encode())

    def answer(self) -> None:
        self.reader.readline()


def steady_floor(control: FloorControl, repeats: int, first_index: int) -> Latencies:
    """D with the floor API process (holding the same `count` prefixes first): one route per family
    announced (then withdrawn) on request over its control socket."""
    result = Latencies()
    if not control.ready:
        result.lost = repeats * 2
        return result
    generator = random.Random(control.count)  # noqa: S311  (spacing between writes, not cryptography)
    for number in range(repeats):
        index = first_index + number
        ipv4, ipv6 = service_addresses(index)
        wanted = {"ipv4": f"{ipv4}/32", "ipv6": f"{ipv6}/128"}
        for action, present, into in (("announce", True, result.create), ("withdraw", False, result.delete)):
            started = now()
            control.send(f"{action} {wanted['ipv4']} {wanted['ipv6']}\n")
            seen = _wait_presence(control.bench, wanted, present, 10.0)
            control.answer()
            if seen is None:
                result.lost += 1
            else:
                into.append(seen - started)
            time.sleep(generator.uniform(0.005, 0.02))
    return result
