"""`python3 -m bench updates`: UPDATE messages FRR receives per family for each command form (deterministic)."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.lab_env import BenchLab
from bench.scenarios import Settings, run_announcer, run_floor
from bench.settings import ANNOUNCER_BEST, FLOOR_BEST


def _forms() -> list[tuple[str, str, Settings]]:
    """(kind, description, settings): ExaBGP's ways of being told routes, and the announcer's."""
    return [
        ("floor", "`announce attributes next-hop self nlri P1 P2 ...`, 500 a line", FLOOR_BEST),
        ("floor", "`announce route P next-hop self`, one a line", replace(FLOOR_BEST, per_line=1)),
        ("floor", "`announce ipv4 (ipv6) unicast P next-hop self`, one a line", replace(FLOOR_BEST, form="family")),
        ("announcer", "the announcer (speaker.prefixes_per_line 500)", ANNOUNCER_BEST),
    ]


def run_updates(workdir: Path, sizes: list[int], runs: int) -> str:
    """Every form at every size; UPDATE counts are FRR's own `updatesRecv` (the End-of-RIB included)."""
    bench = BenchLab(workdir)
    bench.up()
    started = time.monotonic()
    rows: list[str] = []
    try:
        for size in sizes:
            bench.set_services(size)
            for kind, description, settings in _forms():
                for run in range(runs):
                    runner = run_floor if kind == "floor" else run_announcer
                    sample = runner(bench, size, settings)
                    print(f"[updates N={size} run {run + 1}/{runs}] {description}: {sample}", file=sys.stderr,
                          flush=True)  # fmt: skip
                    if "timeout" in sample:
                        rows.append(f"| {size} | {description} | timeout | - | - |")
                        continue
                    ipv4, ipv6 = sample["updates_ipv4"], sample["updates_ipv6"]
                    rows.append(
                        f"| {size} | {description} | {ipv4:.0f} / {ipv6:.0f} | "
                        f"{size / max(ipv4 - 1, 1):.1f} / {size / max(ipv6 - 1, 1):.1f} | "
                        f"{sample['exabgp_to_full']:.2f} s ({sample['exabgp_to_full_ipv4']:.2f} / "
                        f"{sample['exabgp_to_full_ipv6']:.2f}) |"
                    )
    finally:
        bench.down()
    return "\n".join([
        f"UPDATE messages per command form, {runs} run(s) each; took {(time.monotonic() - started) / 60:.1f} min",
        "",
        "| N | form | UPDATEs IPv4 / IPv6 (End-of-RIB included) | prefixes per UPDATE IPv4 / IPv6 | "
        "ExaBGP start -> all (IPv4 / IPv6), indicative |",
        "|---|---|---|---|---|",
        *rows,
    ]) + "\n"  # fmt: skip
