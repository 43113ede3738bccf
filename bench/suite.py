"""One benchmark run: every figure at every size, runs interleaved so drifting load hits A, B and C alike."""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.churn import churn, churn_floor, restore_after_churn, wait_table
from bench.lab_env import BenchLab
from bench.scenarios import (
    BirdReference,
    FloorControl,
    Latencies,
    run_announcer,
    run_floor,
    steady_announcer,
    steady_floor,
)
from bench.settings import ANNOUNCER_BEST, ANNOUNCER_SHIPPED, FLOOR_BEST, FLOOR_DEFAULT
from bench.stats import Series

log = logging.getLogger(__name__)

STEADY_FIRST_INDEX = 100_000  # Services created by D live far above the seeded and churned ones


@dataclass
class SizeResult:
    """Every figure measured at one size N."""

    size: int
    floor_best: Series = field(default_factory=Series)
    floor_default: Series = field(default_factory=Series)
    announcer: Series = field(default_factory=Series)
    announcer_shipped: Series = field(default_factory=Series)
    bird: Series = field(default_factory=Series)
    steady: Latencies | None = None
    steady_floor: Latencies | None = None
    churn: Series = field(default_factory=Series)
    churn_floor: Series = field(default_factory=Series)


@dataclass
class SuiteResult:
    sizes: list[SizeResult]
    runs: int
    started: float
    finished: float = 0.0
    bird_missing: str | None = None
    notes: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    sizes: Sequence[int]
    runs: int
    steady_repeats: int
    steady_sizes: Sequence[int]
    churn_sizes: Sequence[int]
    shipped: bool  # also measure the announcer with its shipped defaults (B reference row)
    floor_default: bool
    bird: bool
    # The reference rows (A with ExaBGP's defaults, B with the shipped defaults) are measured at these sizes
    # only: they are no goal's figure, and at 50k they would cost about 3 minutes of the run.
    reference_sizes: Sequence[int] = ()
    churn_changes: int = 5000  # E: writes within one second


def _machine() -> dict[str, str]:
    try:
        from importlib.metadata import version

        exabgp = version("exabgp")
    except Exception:  # only informative
        exabgp = "?"
    load = Path("/proc/loadavg").read_text(encoding="ascii").split()[:3]
    return {
        "python": platform.python_version(),
        "exabgp": exabgp,
        "cores": str(os.cpu_count()),
        "load at start": " ".join(load),
        "kernel": platform.release(),
    }


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _timed(label: str, action: Callable[[], dict[str, float]]) -> dict[str, float]:
    started = time.monotonic()
    sample = action()
    hidden = ("exabgp_to_full_", "cold_to_full_", "configure_to_full_")
    shown = {key: round(value, 3) for key, value in sample.items() if not key.startswith(hidden)}
    _progress(f"{label}: {shown} ({time.monotonic() - started:.1f} s)")
    return sample


def run_suite(workdir: Path, plan: Plan) -> SuiteResult:
    result = SuiteResult([SizeResult(size) for size in plan.sizes], plan.runs, time.time())
    result.environment = _machine()
    _progress(f"lab coming up (run directory {workdir})")
    with BenchLab(workdir) as bench:
        bird = BirdReference(bench)
        if bird.reason is not None:
            result.bird_missing = bird.reason
        for size_result in result.sizes:
            size = size_result.size
            seeded = bench.set_services(size)
            _progress(f"N={size}: {size} Services in the API server ({seeded:.1f} s)")
            for run in range(plan.runs):
                tag = f"N={size} run {run + 1}/{plan.runs}"
                reference = size in plan.reference_sizes
                if plan.floor_default and reference:
                    size_result.floor_default.add(
                        _timed(f"{tag} A default", partial(run_floor, bench, size, FLOOR_DEFAULT))
                    )
                size_result.floor_best.add(_timed(f"{tag} A best", partial(run_floor, bench, size, FLOOR_BEST)))
                if plan.bird and result.bird_missing is None:
                    size_result.bird.add(_timed(f"{tag} C BIRD", partial(bird.run, size)))
                if plan.shipped and reference:
                    size_result.announcer_shipped.add(
                        _timed(f"{tag} B shipped", partial(run_announcer, bench, size, ANNOUNCER_SHIPPED))
                    )
                last = run == plan.runs - 1
                keep = last and (size in plan.steady_sizes or size in plan.churn_sizes)
                size_result.announcer.add(
                    _timed(f"{tag} B", partial(run_announcer, bench, size, ANNOUNCER_BEST, keep=keep))
                )
            if size in plan.steady_sizes or size in plan.churn_sizes:
                _measure_running(bench, size_result, plan)
                bench.stop_speaker()
                restore_after_churn(bench, size)
            if size in plan.steady_sizes or size in plan.churn_sizes:
                _measure_floor(bench, size_result, plan)
    _progress("lab down")
    result.finished = time.time()
    return result


def _measure_running(bench: BenchLab, size_result: SizeResult, plan: Plan) -> None:
    size = size_result.size
    if bench.exabgp_pid() is None:
        return
    if size in plan.steady_sizes:
        _progress(f"N={size}: D announcer, {plan.steady_repeats} creates and deletes")
        size_result.steady = steady_announcer(bench, size, plan.steady_repeats, STEADY_FIRST_INDEX)
        latencies = size_result.steady
        if latencies.create:
            _progress(
                f"N={size}: D create median {sorted(latencies.create)[len(latencies.create) // 2] * 1000:.1f} ms, "
                f"max {max(latencies.create) * 1000:.1f} ms, lost {latencies.lost}"
            )
    if size in plan.churn_sizes:
        for run in range(plan.runs):
            size_result.churn.add(
                _timed(f"N={size} E churn {run + 1}/{plan.runs}", partial(churn, bench, size, plan.churn_changes, 1.0))
            )
            restore_after_churn(bench, size)
            if not wait_table(bench, size):
                _progress(f"N={size}: FRR did not get back to Services 0..{size - 1}'s prefixes after the churn")
                break


def _measure_floor(bench: BenchLab, size_result: SizeResult, plan: Plan) -> None:
    """D's and E's floor: the floor API process holding the same N Services' prefixes, driven over its socket."""
    size = size_result.size
    with FloorControl(bench, size, FLOOR_BEST) as control:
        if size in plan.steady_sizes:
            _progress(f"N={size}: D floor, {plan.steady_repeats} creates and deletes")
            size_result.steady_floor = steady_floor(control, plan.steady_repeats, STEADY_FIRST_INDEX)
        if size in plan.churn_sizes:
            for run in range(plan.runs):
                size_result.churn_floor.add(
                    _timed(f"N={size} E floor {run + 1}/{plan.runs}",
                           partial(churn_floor, control, plan.churn_changes, 1.0))
                )  # fmt: skip


def median_or_nan(series: Series, key: str) -> float:
    found = series.summary(key)
    return math.nan if found is None else found.median
