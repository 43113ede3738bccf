"""`python3 -m bench soak`: changes for minutes; the announcer's memory and CPU, and FRR's table at the end."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.churn import bench_table
from bench.lab_env import FAMILIES, NODE_ADDRESS, BenchLab, now, process_usage
from bench.scenarios import run_announcer
from bench.settings import ANNOUNCER_BEST
from bench.soak_model import (
    KIND_NAMES,
    RSS_GROWTH_GOAL,
    Change,
    MemorySample,
    SoakPopulation,
    TableCheck,
    peak_growth,
    warmup_sample,
)

log = logging.getLogger(__name__)

BEGIN = "<!-- bench soak begin -->"
END = "<!-- bench soak end -->"
SAMPLE_EVERY = 2.0  # seconds between memory samples
QUIET_TIMEOUT = 60.0  # seconds after the last write for FRR to match, beyond which the run counts a MISMATCH
COMMUNITY_SAMPLES = 20  # per family: prefixes whose community FRR's table is checked for


@dataclass
class SoakResult:
    size: int
    minutes: float
    rate: float
    warmup: float  # seconds: the memory growth is counted from the sample at this point
    started: float = field(default_factory=time.time)
    first_sync: dict[str, float] = field(default_factory=dict)  # B's figures for the first sync
    changes: dict[str, int] = field(default_factory=dict)
    writing_seconds: float = math.nan
    samples: list[MemorySample] = field(default_factory=list)
    announcer_cpu: float = math.nan  # CPU s over the soak (from the first change to the end)
    exabgp_cpu: float = math.nan
    restarts: int = 0  # announcer processes ExaBGP had to start again
    matched_after: float | None = None  # seconds from the last write until FRR matched
    table: TableCheck = field(default_factory=TableCheck)
    communities_checked: int = 0
    communities_wrong: list[str] = field(default_factory=list)
    failure: str | None = None

    @property
    def matches(self) -> bool:
        return self.failure is None and self.table.matches and not self.communities_wrong

    @property
    def growth(self) -> float:
        return peak_growth(self.samples, self.warmup)


def _progress(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class _Announcer:
    """The announcer's process (ExaBGP's child), followed across a respawn, sampled from /proc."""

    def __init__(self, bench: BenchLab) -> None:
        self.bench = bench
        self.pid = bench.api_pid()
        self.restarts = 0
        self.cpu_before_restarts = 0.0
        self.last_cpu = 0.0

    def sample(self, at: float) -> MemorySample | None:
        usage = process_usage(self.pid) if self.pid else None
        if usage is None:
            pid = self.bench.api_pid(timeout=5.0)
            if pid is None or pid == self.pid:
                return None
            _progress(f"the announcer (PID {self.pid}) is gone; ExaBGP runs a new one, PID {pid}")
            self.pid, self.restarts = pid, self.restarts + 1
            self.cpu_before_restarts += self.last_cpu
            usage = process_usage(pid)
            if usage is None:
                return None
        self.last_cpu = usage["cpu_s"]
        return MemorySample(at, usage["rss_mib"], usage["hwm_mib"], self.cpu_before_restarts + usage["cpu_s"])


def _write(bench: BenchLab, change: Change) -> None:
    if change.service is None:
        bench.delete_service(change.index)
    else:
        bench.apply_object(change.index, change.service.object(), variant=True)


def _frr_table(bench: BenchLab) -> dict[str, set[str]]:
    return {family: set(bench_table(bench, family)) for family in FAMILIES}


def _wait_match(bench: BenchLab, population: SoakPopulation, timeout: float) -> tuple[float | None, TableCheck]:
    """Seconds until FRR holds exactly the expected table (counts polled, then the full table compared), or
    None at timeout; and the last comparison."""
    expected = population.expected()
    frr = bench.frr()
    started = now()
    check = TableCheck.of(expected, _frr_table(bench))
    while not check.matches and now() - started < timeout:
        bench.daemons.check()
        counts = {family: frr.prefix_counts(family).get(NODE_ADDRESS[family]) for family in FAMILIES}
        if all(counts[family] == len(expected[family]) for family in FAMILIES):
            check = TableCheck.of(expected, _frr_table(bench))
        time.sleep(0.01)
    return (now() - started if check.matches else None), check


def _check_communities(bench: BenchLab, population: SoakPopulation, result: SoakResult) -> None:
    """FRR's path for a sample of annotated prefixes carries the community the Service's annotation asks for."""
    for family, wanted in population.communities().items():
        for prefix in sorted(wanted)[:COMMUNITY_SAMPLES]:
            document = bench.frr().json(f"show bgp {family} unicast {prefix} json")
            paths = document.get("paths", []) if isinstance(document, dict) else []
            held = {str((path.get("community") or {}).get("string", "")) for path in paths if isinstance(path, dict)}
            result.communities_checked += 1
            if wanted[prefix] not in held:
                result.communities_wrong.append(f"{prefix}: {sorted(held)} instead of {wanted[prefix]}")


def _make_changes(
    bench: BenchLab, population: SoakPopulation, announcer: _Announcer, result: SoakResult, started: float
) -> int:
    """`result.rate` changes a second, paced on the clock, from `started` for `result.minutes`; the announcer
    sampled every SAMPLE_EVERY seconds (first at 0). Returns the number of changes written."""
    first = announcer.sample(0.0)
    if first is not None:
        result.samples.append(first)
    next_sample, next_report = started + SAMPLE_EVERY, started + 60.0
    _progress(f"N={result.size}: {result.rate:g} changes/s for {result.minutes:g} min")
    end = started + result.minutes * 60.0
    number = 0
    while (target := started + number / result.rate) < end:
        while (moment := now()) < target:
            bench.daemons.check()
            time.sleep(min(target - moment, 0.05))
        if moment >= next_sample:
            sample = announcer.sample(moment - started)
            if sample is not None:
                result.samples.append(sample)
            next_sample += SAMPLE_EVERY
        if moment >= next_report:
            latest = result.samples[-1] if result.samples else None
            _progress(f"{(moment - started) / 60:.0f} min: {number} changes"
                      + (f", announcer RSS {latest.rss_mib:.0f} MiB" if latest else ""))  # fmt: skip
            next_report += 60.0
        _write(bench, population.next_change())
        number += 1
    return number


def run_soak(workdir: Path, size: int, minutes: float, rate: float, warmup: float) -> SoakResult:
    """The soak: lab up, `size` Services announced by the announcer (recommended settings), then `rate` changes
    a second for `minutes`, the announcer's memory sampled every SAMPLE_EVERY seconds; then FRR checked."""
    result = SoakResult(size, minutes, rate, warmup)
    population = SoakPopulation(size)
    _progress(f"lab coming up (run directory {workdir})")
    with BenchLab(workdir) as bench:
        bench.set_services(size)
        _progress(f"N={size}: first sync")
        first = run_announcer(bench, size, ANNOUNCER_BEST, keep=True)
        result.first_sync = first
        if "timeout" in first:
            result.failure = "FRR never held the first sync's prefixes"
            return result
        announcer = _Announcer(bench)
        exabgp_pid = bench.exabgp_pid()
        exabgp_before = (process_usage(exabgp_pid) or {}).get("cpu_s", math.nan) if exabgp_pid else math.nan
        started = now()
        number = _make_changes(bench, population, announcer, result, started)
        result.writing_seconds = now() - started
        result.changes = {KIND_NAMES[kind]: population.counts[kind] for kind in KIND_NAMES}
        _progress(f"{number} changes made; waiting for FRR to match")
        result.matched_after, result.table = _wait_match(bench, population, QUIET_TIMEOUT)
        _check_communities(bench, population, result)
        last = announcer.sample(now() - started)
        if last is not None:
            result.samples.append(last)
        result.restarts = announcer.restarts
        if result.samples:
            result.announcer_cpu = result.samples[-1].cpu_s - result.samples[0].cpu_s
        exabgp_after = (process_usage(exabgp_pid) or {}).get("cpu_s", math.nan) if exabgp_pid else math.nan
        result.exabgp_cpu = exabgp_after - exabgp_before
        bench.stop_speaker()
    _progress("lab down")
    return result


def _mb(mib: float) -> str:
    return f"{mib * 1.048576:.0f} MB"


def _table_text(check: TableCheck) -> str:
    return "; ".join(
        f"{family.replace('ip', 'IP')} {check.held.get(family, 0):,} held of {check.expected.get(family, 0):,}, "
        f"{check.missing.get(family, 0)} missing, {check.extra.get(family, 0)} extra"
        for family in FAMILIES
    )


def _match_text(result: SoakResult) -> str:
    verdict = "MATCH" if result.table.matches else "MISMATCH"
    if result.matched_after is not None:
        return f"{verdict}: {_table_text(result.table)}; matched {result.matched_after:.2f} s after the last write"
    return f"{verdict}: {_table_text(result.table)}; not matched {QUIET_TIMEOUT:.0f} s after the last write"


def render_soak(result: SoakResult) -> str:
    """The soak's figures and verdicts (Markdown, readable as plain text)."""
    size = f"{result.size // 1000}k" if result.size % 1000 == 0 else str(result.size)
    made = sum(result.changes.values())
    at_warmup = warmup_sample(result.samples, result.warmup)
    end = result.samples[-1] if result.samples else None
    warm = f"{result.warmup / 60:g} min"
    lines = [
        f"Soak {time.strftime('%Y-%m-%d %H:%M', time.localtime(result.started))}: N={size} dual-stack Services "
        f"announced, then {result.rate:g} changes/s for {result.minutes:g} min (announcer, recommended settings)",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    achieved = made / result.writing_seconds if result.writing_seconds > 0 else math.nan
    kinds = ", ".join(f"{name} {count:,}" for name, count in result.changes.items())
    rows = [
        ("changes made", f"{made:,} in {result.writing_seconds:.0f} s ({achieved:.1f}/s): {kinds}"),
        (f"announcer RSS (VmRSS) at {warm} / at the end",
         f"{_mb(at_warmup.rss_mib) if at_warmup else '-'} / {_mb(end.rss_mib) if end else '-'}"),
        (f"announcer peak RSS (VmHWM) at {warm} / at the end",
         f"{_mb(at_warmup.hwm_mib) if at_warmup else '-'} / {_mb(end.hwm_mib) if end else '-'}"),
        (f"peak RSS growth after the first {warm} (largest VmRSS sampled since, over VmRSS then)",
         f"{result.growth:.1f} %" if not math.isnan(result.growth) else "-"),
        ("announcer CPU over the soak",
         f"{result.announcer_cpu:.1f} CPU s ({100 * result.announcer_cpu / max(result.writing_seconds, 1e-9):.1f} % "
         f"of a core, {1000 * result.announcer_cpu / max(made, 1):.2f} ms per change)"),
        ("ExaBGP CPU over the soak", f"{result.exabgp_cpu:.1f} CPU s"),
        ("FRR after the last write", _match_text(result)),
        ("communities sampled in FRR (annotated Services)",
         f"{result.communities_checked - len(result.communities_wrong)} of {result.communities_checked} as annotated"),
        ("announcer restarts during the soak", str(result.restarts)),
        ("memory samples", f"{len(result.samples)}, every {SAMPLE_EVERY:g} s"),
    ]  # fmt: skip
    lines += [f"| {label} | {value} |" for label, value in rows]
    growth_ok = not math.isnan(result.growth) and result.growth <= RSS_GROWTH_GOAL
    lines += [
        "",
        "Goals (issue 12):",
        f"- peak RSS growth after the first {warm} <= {RSS_GROWTH_GOAL:g} %: "
        f"{'MET' if growth_ok else 'MISSED'} ({result.growth:.1f} %)",
        f"- at the end FRR holds exactly what the Services want (every prefix per family, nothing else; sampled "
        f"communities): {'MATCH' if result.matches else 'MISMATCH'}",
    ]
    if result.table.examples or result.communities_wrong:
        lines.append("  differences: " + "; ".join([*result.table.examples, *result.communities_wrong[:5]]))
    if result.failure:
        lines.append(f"- the soak failed: {result.failure}")
    return "\n".join(lines) + "\n"
