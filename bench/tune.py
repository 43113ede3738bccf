"""`python3 -m bench tune`: the floor's and the announcer's settings compared at one size, runs interleaved."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.churn import churn, churn_floor, restore_after_churn
from bench.lab_env import BenchLab
from bench.scenarios import FloorControl, Settings, run_announcer, run_floor, steady_announcer
from bench.settings import ANNOUNCER_BEST, FAST_ENVIRONMENT, FLOOR_BEST, tune_candidates
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


VARIANT = Path(__file__).resolve().parent / "announcer_variant.py"


def burst_candidates() -> list[Settings]:
    """E's write patterns compared by `tune --burst`: line length, the ack window, how long a burst is gathered, and
    whether changes wait for ExaBGP to answer the lines in flight (daemon.DEFER_LIMIT) before theirs are written."""
    best = dict(ANNOUNCER_BEST.speaker)
    fast = ANNOUNCER_BEST.environment

    def variant(name: str, command: str = "", **speaker: float) -> Settings:
        line = f"{sys.executable} {VARIANT} {command}" if command else ""
        return Settings(name, environment=fast, speaker={**best, **speaker}, command=line)

    return [
        variant("recommended: 500/line, 8 in flight, batch_delay 1 ms, wait for acks <= 0.5 s"),
        variant("2000/line", prefixes_per_line=2000),
        variant("5000/line (the most allowed: a burst's family in one line, as the floor)", prefixes_per_line=5000),
        variant("1 line in flight", max_in_flight=1),
        variant("batch_delay 5 ms", batch_delay=0.005),
        variant("no waiting for acks: each gathered burst written at once", "DEFER_LIMIT=0"),
        variant("waiting for acks without limit (as the floor)", "DEFER_LIMIT=30"),
        variant("the next burst written once <= 1 line is in flight", "DEFER_IN_FLIGHT=1"),
        variant("the next burst written once <= 2 lines are in flight", "DEFER_IN_FLIGHT=2"),
        variant("bursts gathered up to 100 ms (BURST_LIMIT 0.1)", "BURST_LIMIT=0.1"),
        variant("the announcer at nice +5 under ExaBGP (os.nice in the process)", "NICE=5"),
    ]


def run_tune_burst(workdir: Path, size: int, runs: int, changes: int = 5000) -> str:
    """E (`changes` writes in 1 s at `size` Services) for each write pattern and for the E floor, runs interleaved:
    the candidates in turn, then the floor, `runs` times."""
    candidates = [(settings, Series()) for settings in burst_candidates()]
    floor = Series()
    with BenchLab(workdir) as bench:
        started = time.monotonic()
        bench.set_services(size)
        for run in range(runs):
            for settings, series in candidates:
                if "timeout" in run_announcer(bench, size, settings, keep=True):
                    bench.stop_speaker()
                    continue
                sample = churn(bench, size, changes, 1.0)
                series.add(sample)
                bench.stop_speaker()
                restore_after_churn(bench, size)
                print(
                    f"[tune-burst run {run + 1}/{runs}] {settings.name}: "
                    f"{ {key: round(value, 2) for key, value in sample.items()} }",
                    file=sys.stderr,
                    flush=True,
                )
            with FloorControl(bench, size, FLOOR_BEST) as control:
                sample = churn_floor(control, changes, 1.0)
                floor.add(sample)
            print(f"[tune-burst run {run + 1}/{runs}] E floor: {sample}", file=sys.stderr, flush=True)
    lines = [
        f"E's write patterns at N={size}: {changes:,} changes in 1 s, {runs} run(s) each, interleaved with the E "
        f"floor; medians (min-max); took {(time.monotonic() - started) / 60:.1f} min",
        "",
        "| write pattern | E: last write -> FRR matches | E / E floor | ExaBGP CPU / run-queue wait | announcer CPU |",
        "|---|---|---|---|---|",
    ]
    floor_median = floor.median("after_last_write")
    rows = [(settings.name, series) for settings, series in candidates] + [("E floor (ExaBGP alone)", floor)]
    for name, series in sorted(rows, key=lambda row: row[1].median("after_last_write")):
        last = series.summary("after_last_write")
        ratio = series.median("after_last_write") / floor_median if floor_median else float("nan")
        lines.append(
            f"| {name} | {last.text() if last else 'timeout'} | {ratio:.2f} | "
            f"{series.median('exabgp_cpu'):.2f} / {series.median('exabgp_wait'):.2f} CPU s | "
            f"{series.median('announcer_cpu'):.2f} CPU s |"
        )
    return "\n".join(lines) + "\n"
