"""`python3 -m bench whatif`: what B would be if the announcer overlapped its list with ExaBGP's ingest.

The announcer today sends nothing until the whole list is converted and decided (its first sync), so B is
about that time plus A. The floor API process can emulate other shapes exactly: wait `delay` seconds, then
release one page (an IPv4 and an IPv6 line of 500) every `pace` seconds. With delay and pace taken from the
announcer's own milestones in the same run, it shows what ExaBGP makes of a pipelined announcer.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.lab_env import BenchLab
from bench.scenarios import Settings, run_announcer, run_floor
from bench.settings import ANNOUNCER_BEST, FLOOR_BEST
from bench.stats import Series

PAGE = 500  # the announcer's default watch.page_size: one IPv4 and one IPv6 line of 500 per page


def run_whatif(workdir: Path, size: int, runs: int, lighter_startup: float) -> str:
    bench = BenchLab(workdir)
    bench.up()
    started = time.monotonic()
    measured = {"A floor": Series(), "B announcer": Series()}
    emulated: dict[str, Series] = {}
    try:
        bench.set_services(size)
        for run in range(runs):
            measured["A floor"].add(run_floor(bench, size, FLOOR_BEST))
            measured["B announcer"].add(run_announcer(bench, size, ANNOUNCER_BEST))
            print(f"[whatif run {run + 1}/{runs}] A and B measured", file=sys.stderr, flush=True)
        b = measured["B announcer"]
        first_sync, ready = b.median("api_to_first_sync"), b.median("api_to_started")
        pages = math.ceil(size / PAGE)
        pace = max(0.0, (first_sync - ready) / pages)
        shapes = {
            f"serial as today: wait {first_sync:.2f} s (first sync), then everything": Settings(
                "serial", delay=first_sync
            ),
            f"pipelined: first page at {ready + pace:.2f} s, then a page every {pace * 1000:.0f} ms": Settings(
                "pipelined", delay=ready, pace=pace
            ),
            f"pipelined, start-up {lighter_startup:.2f} s lighter (no kubernetes API classes)": Settings(
                "pipelined-light", delay=max(0.0, ready - lighter_startup), pace=pace
            ),
        }
        emulated = {label: Series() for label in shapes}
        for run in range(runs):
            for label, shape in shapes.items():
                # Pipelined pages carry both families; the serial announcer sends all IPv4, then all IPv6.
                settings = replace(
                    FLOOR_BEST, name=shape.name, delay=shape.delay, pace=shape.pace, interleave=shape.pace > 0
                )
                emulated[label].add(run_floor(bench, size, settings))
                print(f"[whatif run {run + 1}/{runs}] {shape.name}", file=sys.stderr, flush=True)
    finally:
        bench.down()
    a = measured["A floor"].median("exabgp_to_full")
    lines = [
        f"What-if at N={size} ({2 * size} prefixes), {runs} run(s) each, medians (min-max); "
        f"took {(time.monotonic() - started) / 60:.1f} min",
        "",
        "| API process | ExaBGP start -> FRR holds all | ratio to A |",
        "|---|---|---|",
    ]
    for label, series in [*measured.items(), *emulated.items()]:
        found = series.summary("exabgp_to_full")
        ratio = series.median("exabgp_to_full") / a if a else math.nan
        lines.append(f"| {label} | {found.text() if found else '-'} | {ratio:.2f} |")
    lines.append("")
    lines.append(
        f"B's milestones (medians): process start -> started {ready:.2f} s, -> first sync planned {first_sync:.2f} s; "
        f"{pages} list pages of {PAGE}."
    )
    return "\n".join(lines) + "\n"
