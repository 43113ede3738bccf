"""`python3 -m bench tune`: the floor's and the announcer's settings compared at one size, runs interleaved."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.churn import churn, restore_after_churn
from bench.lab_env import BenchLab
from bench.scenarios import Settings, run_announcer, run_floor, steady_announcer
from bench.settings import FAST_ENVIRONMENT, tune_candidates
from bench.stats import Series, percentile

BATCH_DELAYS = (0.005, 0.001, 0.0)


def run_tune(workdir: Path, size: int, runs: int, only: str | None) -> str:
    candidates = [(kind, settings) for kind, settings in tune_candidates() if only in (None, kind)]
    results: list[tuple[str, Settings, Series]] = [(kind, settings, Series()) for kind, settings in candidates]
    bench = BenchLab(workdir)
    bench.up()
    started = time.monotonic()
    try:
        bench.set_services(size)
        for run in range(runs):
            for kind, settings, series in results:
                runner = run_floor if kind == "floor" else run_announcer
                sample = runner(bench, size, settings)
                series.add(sample)
                shown = {key: round(value, 2) for key, value in sample.items() if "_ipv" not in key}
                print(f"[tune run {run + 1}/{runs}] {kind}: {settings.name}: {shown}", file=sys.stderr, flush=True)
    finally:
        bench.down()
    lines = [
        f"Settings compared at N={size} ({2 * size} prefixes), {runs} run(s) each, interleaved; "
        f"took {(time.monotonic() - started) / 60:.1f} min",
        "",
        "| kind | settings | ExaBGP start -> FRR holds all | IPv4 / IPv6 | ExaBGP CPU | other CPU |",
        "|---|---|---|---|---|---|",
    ]
    for kind, settings, series in sorted(results, key=lambda item: (item[0], item[2].median("exabgp_to_full"))):
        full = series.summary("exabgp_to_full")
        ipv4, ipv6 = series.summary("exabgp_to_full_ipv4"), series.summary("exabgp_to_full_ipv6")
        cpu, other = series.summary("exabgp_cpu"), series.summary("background_cpu")
        lines.append(
            f"| {kind} | {settings.name} | {full.text() if full else 'timeout'} | "
            f"{ipv4.median if ipv4 else float('nan'):.2f} / {ipv6.median if ipv6 else float('nan'):.2f} | "
            f"{cpu.median if cpu else float('nan'):.2f} | {other.median if other else float('nan'):.2f} |"
        )
    return "\n".join(lines) + "\n"


def run_tune_steady(workdir: Path, size: int, runs: int, repeats: int = 100) -> str:
    """speaker.batch_delay against D (create/delete latency) and E (1000 changes in 1 s), runs interleaved."""
    bench = BenchLab(workdir)
    bench.up()
    started = time.monotonic()
    latencies: dict[float, list[float]] = {delay: [] for delay in BATCH_DELAYS}
    churns: dict[float, Series] = {delay: Series() for delay in BATCH_DELAYS}
    try:
        for run in range(runs):
            for delay in BATCH_DELAYS:
                settings = Settings(f"batch_delay {delay}", environment=FAST_ENVIRONMENT,
                                    speaker={"batch_delay": delay})  # fmt: skip
                sample = run_announcer(bench, size, settings, keep=True)
                if "timeout" in sample:
                    bench.stop_speaker()
                    continue
                measured = steady_announcer(bench, size, repeats, 100_000)
                latencies[delay] += measured.create + measured.delete
                churns[delay].add(churn(bench, size, 1000, 1.0))
                bench.stop_speaker()
                restore_after_churn(bench, size)
                print(f"[tune-steady run {run + 1}/{runs}] batch_delay {delay}: "
                      f"p99 {percentile(measured.create + measured.delete, 0.99) * 1000:.1f} ms, "
                      f"churn {churns[delay].runs[-1]}", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        bench.down()
    lines = [
        f"speaker.batch_delay at N={size}: D create+delete latency ({repeats} pairs a run) and E churn, "
        f"{runs} run(s); took {(time.monotonic() - started) / 60:.1f} min",
        "",
        "| batch_delay | D p50 / p95 / p99 | E first write -> FRR matches | E last write -> matches |",
        "|---|---|---|---|",
    ]
    for delay in BATCH_DELAYS:
        values = latencies[delay]
        shown = "/".join(f"{percentile(values, q) * 1000:.1f}" for q in (0.5, 0.95, 0.99)) + " ms"
        first, last = churns[delay].summary("from_first_write"), churns[delay].summary("after_last_write")
        lines.append(f"| {delay} | {shown} | {first.text() if first else '-'} | {last.text() if last else '-'} |")
    return "\n".join(lines) + "\n"
