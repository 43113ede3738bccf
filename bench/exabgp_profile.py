"""`python3 -m bench exabgp-profile`: where ExaBGP itself spends a bulk load, from its own cProfile option."""

from __future__ import annotations

import pstats
import sys
import time
from pathlib import Path

from bench.lab_env import BenchLab
from bench.scenarios import Settings, run_floor
from bench.settings import FLOOR_BEST

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


def main(workdir: Path, size: int) -> int:
    print(profile_floor(workdir, size, FLOOR_BEST))
    sys.stdout.flush()
    return 0
