"""`python3 -m bench hotpath`: where the announcer's time to first sync goes, and what recommended changes save.

A stand-in API server in this process holds N Services; a fresh interpreter (bench/hotpath_child.py) runs the
announcer's own code on them phase by phase (imports, list with JSON decode, convert, decide, plan, render,
the send loop against instant acks), as-is and with each recommended change patched in. No lab, no root.
"""

from __future__ import annotations

import json
import math
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from announcer.lab.fakeapi import FakeApiServer
from announcer.lab.lab import kubeconfig_text
from bench.lab_env import service_object

VARIANTS = ("as-is", "int-prefix", "int-sort", "stream", "all")
RUNS = 3


def _child(url: str, size: int, variant: str, kubeconfig: Path, profile: str | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.hotpath_child", url, str(size), variant, profile or "", str(kubeconfig)]
    spawned = time.time()
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"hotpath child {variant} failed: {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["seconds"] = {"interpreter start": result["main_at"] - spawned, **result["seconds"]}
    return result


def _profile_lines(prefix: str, phases: list[str], top: int = 8) -> list[str]:
    lines: list[str] = []
    for phase in phases:
        path = Path(f"{prefix}-{phase}.prof")
        if not path.exists():
            continue
        stats = pstats.Stats(str(path))
        total = stats.total_tt  # type: ignore[attr-defined]
        entries = []
        for (filename, line, function), (_, _, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
            short = filename.rsplit("site-packages/", 1)[-1].rsplit("/work/main/", 1)[-1]
            entries.append((own, cumulative, f"{short}:{line}({function})"))
        entries.sort(reverse=True)
        lines.append(f"  {phase} (cProfile {total:.2f} s, top functions by own time):")
        for own, cumulative, name in entries[:top]:
            lines.append(f"    {own:6.3f} s own {cumulative:6.3f} s cumulative  {name}")
    return lines


def main(size: int, profile: Path | None) -> int:
    server = FakeApiServer().start()
    try:
        for index in range(size):
            server.apply(service_object(index))
        workdir = Path(tempfile.mkdtemp(prefix="announcer-hotpath-"))
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(kubeconfig_text(server.url), encoding="utf-8")
        results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        for run in range(RUNS):
            for variant in VARIANTS:
                results[variant].append(_child(server.url, size, variant, kubeconfig, None))
                print(f"[hotpath run {run + 1}/{RUNS}] {variant}", file=sys.stderr, flush=True)
        profile_prefix = str(profile or workdir / "as-is")
        _child(server.url, size, "as-is", kubeconfig, profile_prefix)
    finally:
        server.stop()
    print(render(size, results, profile_prefix))
    return 0


def _median(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    return statistics.median(values) if values else float("nan")


def render(size: int, results: dict[str, list[dict[str, Any]]], profile_prefix: str) -> str:
    phases: list[str] = []
    for runs in results.values():
        for name in runs[0]["seconds"]:
            if name not in phases:
                phases.append(name)
    header = "| phase | " + " | ".join(VARIANTS) + " |"
    lines = [
        f"The announcer's first-sync path at N={size} Services ({2 * size} prefixes), one cold interpreter per "
        f"run, median of {RUNS} runs, seconds (blank: phase merged into another in that variant)",
        "",
        header,
        "|" + "---|" * (len(VARIANTS) + 1),
    ]
    for phase in phases:
        cells = []
        for variant in VARIANTS:
            value = _median(results[variant], "seconds", phase)
            cells.append("" if math.isnan(value) else f"{value:.3f}")  # NaN: the phase is absent there
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    totals = []
    for variant in VARIANTS:
        per_run = [sum(run["seconds"].values()) for run in results[variant]]
        totals.append(f"{statistics.median(per_run):.3f}")
    lines.append("| **total to commands written** | " + " | ".join(totals) + " |")
    lines.append("| of which JSON decode of the list pages | "
                 + " | ".join(f"{_median(results[v], 'list_json_decode_s'):.3f}" for v in VARIANTS) + " |")  # fmt: skip
    lines.append("| peak RSS (VmHWM, MiB) | "
                 + " | ".join(f"{_median(results[v], 'after_gc', 'VmHWM'):.0f}" for v in VARIANTS) + " |")  # fmt: skip
    lines.append("| RSS after the sync, gc'd (MiB) | "
                 + " | ".join(f"{_median(results[v], 'after_gc', 'VmRSS'):.0f}" for v in VARIANTS) + " |")  # fmt: skip
    first = results["as-is"][0]
    lines.append("")
    lines.append(f"List: {first.get('list_bytes', 0) / 1e6:.1f} MB of JSON in pages of 500; "
                 f"{first.get('commands')} command lines; {first.get('prefixes')} prefixes announced.")  # fmt: skip
    lines.append(
        "Variants: int-prefix = desired.host_prefix from int(address); int-sort = reconcile._sorted by "
        "(version, int); stream = convert each list page as it arrives, keep no raw objects; all = the three."
    )
    lines.append("")
    lines.append("cProfile of the as-is run (main thread; own time is the function's body without its callees):")
    lines += _profile_lines(profile_prefix, ["watchers", "list", "convert", "decide", "plan",
                                             "render + send loop (instant acks)"])  # fmt: skip
    return "\n".join(lines) + "\n"
