"""Medians with their spread, percentiles, and the machine's background CPU while a figure was measured."""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Summary:
    """The median of a figure over runs, with its min and max."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary | None:
        data = [value for value in values if not math.isnan(value)]
        if not data:
            return None
        return cls(statistics.median(data), min(data), max(data), len(data))

    def text(self, unit: str = "s", digits: int = 2) -> str:
        if self.count == 1:
            return f"{self.median:.{digits}f} {unit}".rstrip()
        return f"{self.median:.{digits}f} {unit} ({self.low:.{digits}f}-{self.high:.{digits}f})".replace(" (", " (", 1)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction 0..1) of values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Series:
    """Named figures per run; summarised figure by figure."""

    runs: list[dict[str, float]] = field(default_factory=list)

    def add(self, sample: Mapping[str, float]) -> None:
        self.runs.append(dict(sample))

    def summary(self, key: str) -> Summary | None:
        return Summary.of(run[key] for run in self.runs if key in run)

    def median(self, key: str) -> float:
        found = self.summary(key)
        return math.nan if found is None else found.median


def cpu_busy_seconds() -> float:
    """The machine's busy CPU seconds since boot, all cores (from /proc/stat)."""
    fields = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]
    values = [int(value) for value in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process, its reaped children included (0 if gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0.0
    fields = text[text.rfind(")") + 2 :].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


class Background:
    """Busy CPU on the machine outside the processes we know, over an interval (other users' load)."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self.started_busy = cpu_busy_seconds()
        self.started_ours = self._ours()

    def _ours(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.pids)

    def add(self, pid: int) -> None:
        """Count a process that started after the interval began (all its CPU time is in the interval)."""
        self.pids.append(pid)

    def other_seconds(self) -> float:
        return max(0.0, (cpu_busy_seconds() - self.started_busy) - (self._ours() - self.started_ours))


class OtherThreadsCpu:
    """CPU seconds this process spent over an interval outside the calling thread: in B, the stand-in API
    server's (its listener and per-connection threads, exited ones included: CLOCK_PROCESS_CPUTIME_ID keeps
    their time), since the benchmark's own work (polling FRR, timing) runs in the thread that measures.

    Read `seconds()` from the thread that created it; `foreign` names any live thread that is neither the
    caller nor the stand-in's, whose CPU would be counted too (none in the benchmark)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.started_process = time.process_time()
        self.started_thread = time.thread_time()

    def seconds(self) -> float:
        if threading.get_ident() != self.thread:
            raise RuntimeError("OtherThreadsCpu is read from the thread that started it")
        process = time.process_time() - self.started_process
        return max(0.0, process - (time.thread_time() - self.started_thread))

    def foreign(self) -> list[str]:
        return [
            thread.name
            for thread in threading.enumerate()
            if thread.ident != self.thread
            and not thread.name.startswith("fakeapi-")
            and not thread.name.endswith("(process_request_thread)")
        ]


def sched_seconds(pid: int | None) -> tuple[float, float]:
    """(on the CPU, runnable but waiting for a CPU) seconds of every live thread of pid, from
    /proc/PID/task/*/schedstat; (nan, nan) when the process is gone."""
    if pid is None:
        return math.nan, math.nan
    running = waiting = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return math.nan, math.nan
    for task in tasks:
        try:
            fields = (task / "schedstat").read_text(encoding="ascii").split()
            running, waiting = running + int(fields[0]), waiting + int(fields[1])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return running / 1e9, waiting / 1e9
