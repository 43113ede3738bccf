"""`python3 -m bench exabgp-profile`: where ExaBGP itself spends a bulk load, from its own cProfile option; with
`--burst`, where it spends E (the burst), sampled with py-spy during the burst only, the announcer's and the floor's."""

from __future__ import annotations

import collections
import math
import os
import pstats
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.churn import churn, churn_floor, restore_after_churn, undo_churn_floor, wait_table
from bench.lab_env import BenchLab
from bench.scenarios import FloorControl, Settings, run_announcer, run_floor
from bench.settings import ANNOUNCER_BEST, FLOOR_BEST
from bench.stats import Series

# Functions worth naming in the summary: (label, filename fragment, function name).
KEY_FUNCTIONS = (
    ("asynchronous.run (API commands, 50 steps a reactor loop)", "reactor/asynchronous.py", "run"),
    ("inject_change (a route into the adj-rib-out)", "configuration/configuration.py", "inject_change"),
    ("Neighbor.remove_self (deepcopy of every change)", "bgp/neighbor.py", "remove_self"),
    ("copy.deepcopy", "copy.py", "deepcopy"),
    ("API.log_message ('route added to ...' INFO line)", "reactor/api/__init__.py", "log_message"),
    ("configuration.partial (parsing the command lines)", "configuration/configuration.py", "partial"),
    ("Peer.run (sending UPDATEs)", "reactor/peer.py", "run"),
    ("Update.messages (building UPDATEs)", "bgp/message/update/__init__.py", "messages"),
)


def profile_floor(workdir: Path, size: int, settings: Settings) -> str:
    """Run the floor once with ExaBGP profiling itself; its cumulative times for the key functions."""
    bench = BenchLab(workdir)
    bench.up()
    destination = workdir / f"exabgp-{int(time.time())}.prof"
    profiling = {"exabgp.profile.enable": "true", "exabgp.profile.file": str(destination)}
    profiled = Settings(
        settings.name,
        environment={**settings.environment, **profiling},
        per_line=settings.per_line,
        window=settings.window,
    )
    try:
        sample = run_floor(bench, size, profiled)  # stops ExaBGP, which writes the profile as it exits
    finally:
        bench.down()
    if not destination.exists():
        return f"ExaBGP wrote no profile at {destination}\n"
    stats = pstats.Stats(str(destination))
    table = stats.stats  # type: ignore[attr-defined]
    total = max(cumulative for (_, _, _, cumulative, _) in table.values())
    lines = [
        f"ExaBGP's own profile of the floor at N={size} ({2 * size} prefixes; {settings.describe()}, "
        f"{settings.per_line}/line); profiled run took {sample.get('exabgp_to_full', float('nan')):.2f} s "
        f"to FRR (profiling slows ExaBGP about 2x); reactor total {total:.2f} s",
        "",
        "| function | calls | cumulative s | share of the reactor |",
        "|---|---|---|---|",
    ]
    for label, fragment, function in KEY_FUNCTIONS:
        matches = [(calls, cumulative) for (filename, _, name), (calls, _, _, cumulative, _) in table.items()
                   if filename.endswith(fragment) and name == function]  # fmt: skip
        if not matches:
            continue
        calls, cumulative = max(matches, key=lambda item: item[1])
        lines.append(f"| {label} | {calls} | {cumulative:.2f} | {100 * cumulative / total:.0f}% |")
    lines.append("")
    lines.append(
        f"UPDATE messages FRR received: IPv4 {sample.get('updates_ipv4', 0):.0f}, "
        f"IPv6 {sample.get('updates_ipv6', 0):.0f} (ExaBGP 5.0.15 groups only IPv4 unicast NLRIs)"
    )
    lines.append(f"Profile: {destination} (python3 -m pstats)")
    return "\n".join(lines) + "\n"


# What ExaBGP's single thread is doing in a py-spy sample (--idle: waiting counts too), by the first of these
# (label, function name, file fragment) found in the stack from its leaf up; else "other".
CHURN_CATEGORIES = (
    ("idle: waiting in poll() for a line or a socket", "_wait_for_io", "reactor/loop.py"),
    ("idle: waiting in poll() for a line or a socket", "poll", "reactor/loop.py"),
    ("a route into the adj-rib-out (inject_change: deepcopy, RIB)", "inject_change", "configuration/configuration.py"),
    ("parsing command lines (configuration.partial)", "partial", "configuration/configuration.py"),
    ("reading and splitting the API pipe (processes.received)", "received", "reactor/api/processes.py"),
    ("building and sending UPDATEs (Protocol.new_update)", "new_update", "reactor/protocol.py"),
    ("reading FRR's messages, keepalives (Peer.run, the rest)", "run", "reactor/peer.py"),
    ("answering 'done' to the API process (Processes.write)", "answer_done", "reactor/api/processes.py"),
)


PRE_WINDOW = 0.2  # s: py-spy attaches this long before the first write (idle samples, part of the figures)


def _category(stack: list[str]) -> str:
    for frame in reversed(stack):  # py-spy raw: root first, leaf last
        name, _, where = frame.partition(" (")  # 'Reactor._wait_for_io (exabgp/reactor/loop.py:110)'
        name = name.rpartition(".")[2]
        for label, function, fragment in CHURN_CATEGORIES:
            if name == function and fragment in where:
                return label
    return "other"


def _read_raw(path: Path) -> collections.Counter[str]:
    """py-spy's raw (collapsed) output: 'frame;frame;... count' per line, counted by category."""
    counts: collections.Counter[str] = collections.Counter()
    if not path.exists():
        return counts
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[_category(stack.split(";"))] += int(count)
    return counts


def _sampled(pid: int | None, output: Path, action: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run `action` with py-spy sampling ExaBGP (pid) at 250 Hz, idle included, until it returns."""
    spy = shutil.which("py-spy")
    if spy is None or pid is None:
        return action()
    process = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", "250", "--idle", "--nonblocking", "--format", "raw",
         "--output", str(output), "--duration", "120"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(PRE_WINDOW)  # attached before the first write
    try:
        return action()
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        process.wait(timeout=30)


def profile_churn(workdir: Path, size: int, changes: int, runs: int) -> str:
    """E, the announcer's and the floor's, `runs` each, with ExaBGP sampled by py-spy from just before the first
    write until FRR matched: where ExaBGP's thread spent that time, and E's figures beside it."""
    if shutil.which("py-spy") is None:
        return "py-spy is not on PATH: install it (pip install py-spy) to profile ExaBGP during E\n"
    totals: dict[str, collections.Counter[str]] = {"announcer": collections.Counter(), "floor": collections.Counter()}
    figures = {"announcer": Series(), "floor": Series()}
    with BenchLab(workdir) as bench:
        bench.set_services(size)
        run_announcer(bench, size, ANNOUNCER_BEST, keep=True)
        for run in range(runs):
            output = workdir / f"e-announcer-{run}.raw"
            figures["announcer"].add(_sampled(bench.exabgp_pid(), output, lambda: churn(bench, size, changes, 1.0)))
            totals["announcer"] += _read_raw(output)
            restore_after_churn(bench, size)
            wait_table(bench, size)
        bench.stop_speaker()
        restore_after_churn(bench, size)
        with FloorControl(bench, size, FLOOR_BEST) as control:
            for run in range(runs):
                output = workdir / f"e-floor-{run}.raw"
                figures["floor"].add(
                    _sampled(control.bench.exabgp_pid(), output, lambda: churn_floor(control, changes, 1.0, False))
                )
                totals["floor"] += _read_raw(output)
                undo_churn_floor(control, changes)
    labels = list(dict.fromkeys([label for label, _, _ in CHURN_CATEGORIES] + ["other"]))
    lines = [
        f"ExaBGP during E at N={size} ({changes:,} changes in 1 s), py-spy at 250 Hz with idle samples, from "
        f"{PRE_WINDOW} s before the first write until FRR matched; seconds per run (mean of {runs}) and share; "
        f"load {os.getloadavg()[0]:.2f} at the end",
        "",
        "| ExaBGP's thread | announcer E | floor E |",
        "|---|---|---|",
    ]
    for label in labels:
        cells = []
        for kind in ("announcer", "floor"):
            total = sum(totals[kind].values())
            share = 100 * totals[kind][label] / total if total else math.nan
            cells.append(f"{totals[kind][label] / 250 / runs:.2f} s ({share:.0f} %)")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    for key, label in (("after_last_write", "last write -> FRR matches"), ("exabgp_cpu", "ExaBGP CPU s"),
                       ("exabgp_wait", "ExaBGP run-queue wait s"), ("announcer_cpu", "announcer CPU s")):  # fmt: skip
        cells = [f"{figures[kind].median(key):.2f}" for kind in ("announcer", "floor")]
        lines.append(f"| {label} (median) | {' | '.join(cells)} |")
    lines.append("")
    lines.append(f"Raw samples: {workdir}/e-*.raw (py-spy's collapsed stacks)")
    return "\n".join(lines) + "\n"


def main(workdir: Path, size: int, churn_changes: int = 0, runs: int = 3) -> int:
    if churn_changes:
        print(profile_churn(workdir, size, churn_changes, runs))
    else:
        print(profile_floor(workdir, size, FLOOR_BEST))
    sys.stdout.flush()
    return 0
