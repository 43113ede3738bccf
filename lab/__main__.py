"""The lab demo: `python -m lab up|down|status`, and a static stand-in API process for ExaBGP."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from lab import netns
from lab.frr import FrrRouter, frr_missing_reason
from lab.lab import (
    DEFAULT_PREFIX,
    EXAMPLE_CONFIG,
    SAMPLES,
    TEST_PREFIX,
    Lab,
    down_everything,
    format_rib_tables,
    node_names_by_address,
)

log = logging.getLogger("lab")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
WATCH_INTERVAL = 0.5  # seconds between checks that the lab is still there (`python -m lab down` elsewhere)
FINISH_WAIT = 10.0  # seconds given to a teardown from elsewhere to finish before this process cleans up too


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="bring the lab up with the sample Services, show FRR's routes, wait for Ctrl-C")
    up.add_argument("--prefix", default=DEFAULT_PREFIX, help="namespace and interface name prefix")
    up.add_argument(
        "--config", type=Path, help="the announcer configuration (default: examples/announcer.yaml, or -calico.yaml)"
    )
    up.add_argument(
        "--calico",
        action="store_true",
        help="Calico mode: each node runs Calico 3.29's recorded BIRD/BIRD6, which FRR peers with; ExaBGP behind them",
    )
    up.add_argument("--no-add-path", action="store_true", help="Calico mode: FRR with disable-addpath-rx")
    up.add_argument(
        "--exclude-label",
        action="store_true",
        help="Calico mode: nodes labelled exclude-from-external-load-balancers (no Calico static service routes)",
    )
    up.add_argument(
        "--kube",
        choices=["stand-in", "real", "node"],
        default="stand-in",
        help="the API server: the stand-in (default), or a real etcd and kube-apiserver (built on first use, then "
        "cached: scripts/kube-build) with the announcer on deploy/base's ServiceAccount; 'node': that control plane "
        "and node-a as a real Kubernetes node (containerd, kubelet, kube-proxy) with the product installed by "
        "kubectl apply -k deploy/base",
    )
    up.add_argument("--seed", type=Path, default=SAMPLES, help="objects the API server starts with")
    up.add_argument("--run-dir", type=Path, help="where configs and logs go (default: a new temporary folder)")
    up.add_argument(
        "--announcer-command",
        help="replace the API process ExaBGP runs (default: the configuration's, i.e. the real announcer); "
        'e.g. "python -m lab static-api --route 198.51.100.10/32"',
    )
    up.add_argument("--settle", type=float, default=60.0, help="bound on waiting for FRR's routes to settle (s)")
    up.add_argument("--no-wait", action="store_true", help="tear down right after printing the table")

    down = commands.add_parser("down", help="clean up any lab left behind (state files, then by prefix)")
    down.add_argument(
        "--prefix",
        action="append",
        help=f"name prefix to clean up (repeatable; default: {DEFAULT_PREFIX} and {TEST_PREFIX})",
    )

    status = commands.add_parser("status", help="print FRR's routes of the running lab")
    status.add_argument("--prefix", default=DEFAULT_PREFIX)

    static = commands.add_parser(
        "static-api",
        help="an ExaBGP API process announcing fixed prefixes (checks the lab without the real announcer)",
    )
    static.add_argument(
        "--route", action="append", default=[], help="PREFIX or PREFIX@NODE (only that node announces it)"
    )
    static.add_argument("rest", nargs=argparse.REMAINDER, help="ignored except '--config PATH' (ExaBGP's run line)")
    return parser


def ensure_frr() -> None:
    """Install FRR from Debian when it is missing (apt-get update, apt-get install -y frr)."""
    reason = frr_missing_reason()
    if reason is None:
        return
    print(f"announcer lab: {reason}; installing it now with apt-get (needs root and the Debian mirror)",
          file=sys.stderr)  # fmt: skip
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=environment)
    subprocess.run(["apt-get", "install", "-y", "frr"], check=True, env=environment)
    reason = frr_missing_reason()
    if reason is not None:
        raise RuntimeError(f"FRR still missing after apt-get install: {reason}")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def torn_down_elsewhere(lab: Lab) -> str | None:
    """Why the running lab counts as torn down by someone else (state file or namespaces gone), or None."""
    if lab.state is None or not lab.state.path.exists():
        return "its state file is gone"
    existing = set(netns.list_namespaces())
    missing = [name for name in (lab.lan_namespace, lab.router_namespace) if name not in existing]
    return f"namespace {', '.join(missing)} gone" if missing else None


def wait_while_up(lab: Lab, interval: float = WATCH_INTERVAL) -> str:
    """Block until the lab is torn down from elsewhere (e.g. `python -m lab down` in another shell); say how.

    Signals (Ctrl-C, SIGTERM) still interrupt the wait. Once the namespaces are gone, give the other teardown
    a bounded while to finish (it removes the state file last) before this process cleans up what is left.
    """
    while (reason := torn_down_elsewhere(lab)) is None:
        time.sleep(interval)
    deadline = time.monotonic() + FINISH_WAIT
    while lab.state is not None and lab.state.path.exists() and time.monotonic() < deadline:
        time.sleep(interval)
    return reason


def command_up(arguments: argparse.Namespace) -> int:
    """Bring the lab up, print the routes, wait for SIGINT/SIGTERM, tear down."""
    ensure_frr()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    if arguments.calico:
        from lab.calico import CALICO_CONFIG, CalicoLab

        lab: Lab = CalicoLab(
            prefix=arguments.prefix,
            config_path=arguments.config or CALICO_CONFIG,
            add_path=not arguments.no_add_path,
            exclude_label=arguments.exclude_label,
            run_dir=arguments.run_dir,
            announcer_command=arguments.announcer_command,
            seed_path=arguments.seed,
            kube=arguments.kube,
        )
    elif arguments.kube == "node":
        if arguments.config or arguments.announcer_command:
            print("--kube node runs deploy/base as it is: no --config nor --announcer-command", file=sys.stderr)
            return EXIT_USAGE
        lab = Lab(prefix=arguments.prefix, nodes=("node-a",), run_dir=arguments.run_dir, api_server=True,
                  seed_path=arguments.seed, kube="real", kube_nodes=True)  # fmt: skip
    else:
        lab = Lab(
            prefix=arguments.prefix,
            config_path=arguments.config or EXAMPLE_CONFIG,
            run_dir=arguments.run_dir,
            announcer_command=arguments.announcer_command,
            api_server=True,
            seed_path=arguments.seed,
            kube=arguments.kube,
        )
    try:
        started = time.monotonic()
        lab.up()
        if lab.kube_nodes:
            print("node-a is a Kubernetes node; installing the product: kubectl apply -k deploy/base", file=sys.stderr)
            lab.install_product()
        print(f"lab up: all {len(lab.peers())} sessions Established after {lab.timings['established']:.2f} s; "
              f"run directory {lab.run_dir}", file=sys.stderr)  # fmt: skip
        if not lab.wait_rib_stable(quiet=3.0, timeout=arguments.settle):
            print(f"FRR's routes still changing after {arguments.settle:.0f} s; showing them as they are",
                  file=sys.stderr)  # fmt: skip
        print(f"after {time.monotonic() - started:.1f} s:\n")
        if arguments.calico:
            print("What FRR (the ToR) learned from each node's Calico BIRD (IPv4) and BIRD6 (IPv6); the announcer's")
            print("ExaBGP sits behind them on 127.0.0.1:1790 and [::1]:1790, next hop = the node's address:\n")
        print(lab.rib_table())
        sys.stdout.flush()
        if not arguments.no_wait:
            print("\nCtrl-C (or SIGTERM) tears the lab down; 'python -m lab status' shows the table again.",
                  file=sys.stderr)  # fmt: skip
            reason = wait_while_up(lab)
            print(f"\nthe lab was torn down from elsewhere ({reason}); exiting", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ntearing the lab down", file=sys.stderr)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown short
        lab.down()
        print(f"lab down in {lab.timings.get('down', 0.0):.2f} s; logs kept in {lab.run_dir}", file=sys.stderr)
    return EXIT_OK


def command_down(arguments: argparse.Namespace) -> int:
    """Tear down recorded labs and anything named with the prefix."""
    notes = down_everything(arguments.prefix or (DEFAULT_PREFIX, TEST_PREFIX))
    for note in notes:
        print(note, file=sys.stderr)
    print("nothing left behind" if not notes else f"cleaned up ({len(notes)} items)", file=sys.stderr)
    return EXIT_OK


def command_status(arguments: argparse.Namespace) -> int:
    """Print FRR's routes of a running lab, found through its state file."""
    for state in netns.saved_states():
        if state.prefix != arguments.prefix:
            continue
        namespace = f"{state.prefix}router"
        if not netns.namespace_exists(namespace):
            break
        router = FrrRouter(namespace, Path(state.run_dir) / "frr")
        nodes = sorted(name[len(state.prefix) :] for name in state.namespaces if name.startswith(state.prefix))
        nodes = [name for name in nodes if name not in ("lan", "router")]
        print(format_rib_tables(router, node_names_by_address(nodes)))
        return EXIT_OK
    print(f"no lab with prefix {arguments.prefix!r} is up", file=sys.stderr)
    return EXIT_FAILED


def command_static_api(routes: list[str], rest: list[str]) -> int:
    """Act as ExaBGP's API process: announce fixed prefixes per peer family, then idle until shutdown."""
    from announcer.config_load import load_config

    if "--config" not in rest:
        print("static-api: needs '--config PATH' (as on ExaBGP's run line)", file=sys.stderr)
        return EXIT_FAILED
    config = load_config(Path(rest[rest.index("--config") + 1]))
    node = config.node_name or ""
    commands: list[str] = []
    for spec in routes:
        text, _, only = spec.partition("@")
        if only and only != node:
            continue
        network = ipaddress.ip_network(text, strict=True)
        for peer in config.bgp.peers:
            if peer.address.version == network.version:
                commands.append(f"neighbor {peer.address} announce route {network} next-hop self")
    for command in commands:
        sys.stdout.write(command + "\n")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip()
        print(f"static-api {node}: {command!r} -> {answer!r}", file=sys.stderr)
        if answer == "shutdown" or not answer:
            return EXIT_OK
    for line in sys.stdin:  # keep reading: a full pipe stalls ExaBGP
        if line.startswith("shutdown"):
            break
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m lab`."""
    arguments = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if arguments.command == "static-api":
        return command_static_api(arguments.route, arguments.rest)
    if os.geteuid() != 0:
        print("announcer lab: needs root (network namespaces)", file=sys.stderr)
        return EXIT_FAILED
    if arguments.command == "up":
        return command_up(arguments)
    if arguments.command == "down":
        return command_down(arguments)
    return command_status(arguments)


if __name__ == "__main__":
    sys.exit(main())
