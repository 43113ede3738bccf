"""`python3 -m bench`: the table (A-F) and its goals; `soak`, `tune`, `updates` and `exabgp-profile` beside it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (1000, 10_000, 25_000, 50_000)
APISERVER_BEGIN, APISERVER_END = "<!-- apiserver results begin -->", "<!-- apiserver results end -->"
REFERENCE_UP_TO = 25_000  # by default, the reference rows (no goal's figure) are measured up to this size
CHURN_SIZES = (10_000, 25_000)  # E (and its floor) by default at these sizes, among those run


def _sizes(text: str) -> list[int]:
    values = []
    for raw in text.split(","):
        word = raw.strip().lower()
        values.append(int(float(word[:-1]) * 1000) if word.endswith("k") else int(word))
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: N=1k only, 1 run, 20 steady-state pairs")
    parser.add_argument("--sizes", type=_sizes, help="comma-separated N (Services), e.g. 1k,10k,25k")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3; 1 with --quick)")
    parser.add_argument("--steady", type=int, help="create/delete pairs for D (default 200)")
    parser.add_argument("--steady-sizes", type=_sizes, help="sizes at which D is measured (default: every size)")
    parser.add_argument("--churn-sizes", type=_sizes, help="sizes at which E is measured (default: 10k and 25k "
                        "among the sizes run, or the largest size run when neither is)")  # fmt: skip
    parser.add_argument(
        "--reference-sizes",
        type=_sizes,
        help="sizes at which the reference rows (A with "
        "ExaBGP's defaults, B with the shipped defaults) are measured (default: every size up to 25k)",
    )
    parser.add_argument("--churn-changes", type=int, default=5000, help="E: changes written within 1 s "
                        "(default 5000)")  # fmt: skip
    parser.add_argument("--no-shipped", action="store_true", help="skip B with the announcer's shipped defaults")
    parser.add_argument("--no-floor-default", action="store_true", help="skip A with ExaBGP's defaults")
    parser.add_argument("--no-bird", action="store_true", help="skip C (BIRD)")
    parser.add_argument("--markdown", type=Path, help="also write the table into this Markdown file's results block")
    parser.add_argument("--workdir", type=Path, help="run directory (default: a new temporary one)")
    parser.add_argument(
        "--no-renice",
        action="store_true",
        help="keep the normal priority (by default the benchmark and all it starts run at nice -10, so other "
        "load on the machine disturbs the figures less)",
    )
    parser.add_argument("--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command")
    tune = commands.add_parser("tune", help="compare floor and announcer settings at one size")
    tune.add_argument("--size", type=_sizes, default=[10_000])
    tune.add_argument("--runs", type=int, default=3)
    tune.add_argument("--only", choices=["floor", "announcer"], help="one kind only")
    tune.add_argument("--steady", action="store_true", help="compare speaker.batch_delay on D and E instead")
    tune.add_argument("--burst", action="store_true", help="compare E's write patterns (and the E floor) instead")
    updates = commands.add_parser("updates", help="UPDATE messages FRR receives per family for each command form")
    updates.add_argument("--sizes", type=_sizes, default=[1000, 10_000], dest="update_sizes")
    updates.add_argument("--runs", type=int, default=1)
    soak = commands.add_parser("soak", help="N Services announced, then RATE changes a second for MINUTES: the "
                               "announcer's memory over time and FRR's table at the end")  # fmt: skip
    soak.add_argument("--minutes", type=float, default=30.0, help="duration of the changes (default 30)")
    soak.add_argument("--rate", type=float, default=100.0, help="changes a second (default 100)")
    soak.add_argument("--size", type=_sizes, default=[10_000], help="Services announced (default 10k)")
    soak.add_argument("--warmup-minutes", type=float, default=5.0, help="memory growth is counted from this point "
                      "(default 5; half the duration when that is shorter)")  # fmt: skip
    soak.add_argument("--markdown", type=Path, dest="soak_markdown", help="also write the soak's section into this "
                      "Markdown file (between its soak markers)")  # fmt: skip
    soak.add_argument("--workdir", type=Path, dest="soak_workdir", help="run directory (logs, soak.json)")
    apiserver = commands.add_parser(
        "apiserver",
        help="the real kube-apiserver's cost of K announcers: CPU, peak RSS, watch bytes, first sync, write-to-command "
        "latency (no root needed)",
    )
    apiserver.add_argument(
        "--nodes",
        type=_sizes,
        default=[0, 1, 10, 50],
        help="announcers K (default 0,1,10,50; 0: the changes with no announcer, which the per-node figures subtract)",
    )
    apiserver.add_argument("--services", type=_sizes, default=[10_000], help="Services seeded (default 10k; "
                           "2 EndpointSlices each)")  # fmt: skip
    apiserver.add_argument("--dual-stack", type=int, default=240, help="how many of them are dual-stack (at most "
                           "240: 198.51.100.0/24; the rest IPv6 SingleStack)")  # fmt: skip
    apiserver.add_argument("--changes", type=int, default=1000, help="Services created then deleted (default 1000)")
    apiserver.add_argument("--rate", type=float, default=50.0, help="changes a second (default 50)")
    apiserver.add_argument("--runs", type=int, default=1, dest="apiserver_runs", help="runs per K (default 1)")
    apiserver.add_argument(
        "--raw-watchers",
        type=_sizes,
        default=[],
        help="also: this many plain watches of Services (no announcer) read the changes, e.g. 500: kube-apiserver's "
        "CPU per watch",
    )
    apiserver.add_argument("--workdir", type=Path, dest="apiserver_workdir", help="run directory (logs, json)")
    apiserver.add_argument("--markdown", type=Path, dest="apiserver_markdown", help="also write the table into this "
                           "Markdown file (between its apiserver markers)")  # fmt: skip
    exabgp_profile = commands.add_parser("exabgp-profile", help="ExaBGP's own cProfile of one floor bulk load")
    exabgp_profile.add_argument("--size", type=_sizes, default=[10_000])
    exabgp_profile.add_argument(
        "--burst",
        type=int,
        default=0,
        metavar="CHANGES",
        help="instead: ExaBGP sampled with py-spy during E (CHANGES writes in 1 s), the announcer's and the floor's",
    )
    exabgp_profile.add_argument("--runs", type=int, default=3, dest="profile_runs", help="E runs each (--burst)")
    return parser


def _require_root() -> None:
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, FRR, BIRD)", file=sys.stderr)
        raise SystemExit(2)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; SIGTERM and SIGHUP end it like Ctrl-C, tearing its lab down; exit 130 then."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)  # so every `with BenchLab(...)` / finally block runs
    from bench.daemons import DaemonFailed

    try:
        return _run(argv)
    except KeyboardInterrupt as interruption:
        print(f"bench: interrupted ({interruption or 'SIGINT'}); its lab is torn down", file=sys.stderr)
        return 130
    except DaemonFailed as failure:
        print(f"bench: a daemon failed, the run stopped and its lab is torn down: {failure}", file=sys.stderr)
        return 1


def _run(argv: list[str] | None) -> int:
    arguments = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if arguments.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if arguments.command == "apiserver":
        return _apiserver(arguments)
    _require_root()
    if not arguments.no_renice:
        os.nice(-10)  # inherited by FRR, ExaBGP, the API processes and BIRD, all started from here
    workdir = getattr(arguments, "soak_workdir", None) or arguments.workdir
    workdir = workdir or Path(tempfile.mkdtemp(prefix="announcer-bench-"))
    if arguments.command == "soak":
        return _soak(arguments, workdir)
    if arguments.command == "exabgp-profile":
        from bench.exabgp_profile import main as profile_main

        return profile_main(workdir, arguments.size[0], arguments.burst, arguments.profile_runs)
    if arguments.command == "updates":
        from bench.updates import run_updates

        print(run_updates(workdir, arguments.update_sizes, arguments.runs))
        return 0
    if arguments.command == "tune":
        from bench.tune import run_tune, run_tune_steady

        if arguments.burst:
            from bench.tune import run_tune_burst

            print(run_tune_burst(workdir, arguments.size[0], arguments.runs))
        elif arguments.steady:
            print(run_tune_steady(workdir, arguments.size[0], arguments.runs))
        else:
            print(run_tune(workdir, arguments.size[0], arguments.runs, arguments.only))
        return 0
    from bench.bird import ensure_bird
    from bench.report import render
    from bench.suite import Plan, run_suite

    sizes = arguments.sizes or ([1000] if arguments.quick else list(DEFAULT_SIZES))
    runs = arguments.runs or (1 if arguments.quick else 3)
    churn_default = [size for size in sizes if size in CHURN_SIZES] or [max(sizes)]
    plan = Plan(
        sizes=sizes,
        runs=runs,
        steady_repeats=arguments.steady or (20 if arguments.quick else 200),
        steady_sizes=arguments.steady_sizes or sizes,
        churn_sizes=arguments.churn_sizes or churn_default,
        shipped=not arguments.no_shipped,
        floor_default=not arguments.no_floor_default,
        bird=not arguments.no_bird,
        reference_sizes=arguments.reference_sizes or [size for size in sizes if size <= REFERENCE_UP_TO],
        churn_changes=arguments.churn_changes,
    )
    if plan.bird and (reason := ensure_bird()) is not None:
        print(f"bench: C (BIRD) will not be measured: {reason}", file=sys.stderr)
    started = time.monotonic()
    result = run_suite(workdir, plan)
    (workdir / "results.json").write_text(json.dumps(dataclasses.asdict(result), indent=1), encoding="utf-8")
    table = render(result)
    print(table)
    if arguments.markdown is not None:
        from bench.markdown import replace_results

        replace_results(arguments.markdown, table)
        print(f"table written into {arguments.markdown}", file=sys.stderr)
    print(f"bench: {time.monotonic() - started:.0f} s; run directory {workdir}", file=sys.stderr)
    return 0


def _apiserver(arguments: argparse.Namespace) -> int:
    """The API-server benchmark (normal priority: it measures kube-apiserver beside whatever else runs here)."""
    from bench.apiserver import Plan, run
    from bench.apiserver_model import RAW_ROWS, render

    workdir = arguments.apiserver_workdir or Path(tempfile.mkdtemp(prefix="announcer-bench-apiserver-"))
    plan = Plan(
        nodes=arguments.nodes, services=arguments.services[0], dual_stack=arguments.dual_stack,
        changes=arguments.changes, rate=arguments.rate, runs=arguments.apiserver_runs,
        raw_watchers=arguments.raw_watchers,
    )  # fmt: skip
    started = time.monotonic()
    seeded, results, raw = run(workdir, plan, lambda line: print(line, file=sys.stderr, flush=True))
    document = {"plan": dataclasses.asdict(plan), "seeded": seeded, "runs": results, "raw_watchers": raw}
    (workdir / "apiserver.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    heading = (
        f"API server benchmark {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC: {plan.services} Services "
        f"({plan.dual_stack} dual-stack, the rest IPv6 SingleStack), {2 * plan.services} EndpointSlices, "
        f"{plan.changes} changes at {plan.rate:.0f}/s; {plan.runs} run(s) per K, median (min-max); seeded by "
        f"{plan.seed_threads} parallel POSTs: Services {seeded['services_per_second']:.0f}/s, EndpointSlices "
        f"{seeded['endpointslices_per_second']:.0f}/s"
    )
    table = render(results, heading)
    if raw:
        table += "\n" + render(raw, "Plain watches of Services (bench/watchers.py), no announcer:", RAW_ROWS, "M")
    print(table)
    if arguments.apiserver_markdown is not None:
        from bench.markdown import replace_results

        replace_results(arguments.apiserver_markdown, table, APISERVER_BEGIN, APISERVER_END)
    print(f"bench apiserver: {time.monotonic() - started:.0f} s; run directory {workdir}", file=sys.stderr)
    return 0


def _soak(arguments: argparse.Namespace, workdir: Path) -> int:
    """The soak; exit 0 when FRR ends up holding exactly what the Services want, 1 otherwise."""
    from bench.markdown import replace_results
    from bench.soak import BEGIN, END, render_soak, run_soak

    if arguments.minutes <= 0 or arguments.rate <= 0:
        print("bench soak: --minutes and --rate must be positive", file=sys.stderr)
        return 2
    warmup = min(arguments.warmup_minutes * 60.0, arguments.minutes * 30.0)
    started = time.monotonic()
    result = run_soak(workdir, arguments.size[0], arguments.minutes, arguments.rate, warmup)
    document = dataclasses.asdict(result) | {"growth_percent": result.growth, "matches": result.matches}
    (workdir / "soak.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    text = render_soak(result)
    print(text)
    if arguments.soak_markdown is not None:
        replace_results(arguments.soak_markdown, text, BEGIN, END)
        print(f"soak written into {arguments.soak_markdown}", file=sys.stderr)
    print(f"bench soak: {time.monotonic() - started:.0f} s; run directory {workdir}", file=sys.stderr)
    return 0 if result.matches else 1


if __name__ == "__main__":
    sys.exit(main())
