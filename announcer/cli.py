"""Command-line entry points: run, exabgp-conf, exabgp-env, check-config, render, status, calico-resources."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from announcer.logs import configure_logging, setup_logging

if TYPE_CHECKING:  # main imports them: `run` installs its signal handlers before anything slow is imported
    from announcer.config import Config
    from announcer.policy import NodeView

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1  # `announcer status`: the running announcer did not answer
# A file whose existence means "the node is stopping" (deploy/entrypoint.sh creates it before it stops the announcer):
# an `announcer run` that ExaBGP respawns meanwhile must announce nothing, or the peers keep its routes.
ENV_STOPPING_FILE = "ANNOUNCER_STOPPING_FILE"


class _Version(argparse.Action):
    """--version: the installed distribution's version, looked up only when asked (run starts with no lookup)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib.metadata import version

        print(f"announcer {version('service-announcer')}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="announcer", description=__doc__)
    parser.add_argument("--version", action=_Version, nargs=0, default=argparse.SUPPRESS, help="print the version")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the ExaBGP API process: watch Kubernetes, stream commands on stdout")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument(
        "--peer", action="append", help="only this configured peer (repeated; exabgp-conf writes one per peer)"
    )

    conf = commands.add_parser("exabgp-conf", help="print the exabgp.conf for this configuration")
    conf.add_argument("--config", type=Path, required=True)
    conf.add_argument(
        "--config-path",
        help="the configuration path ExaBGP's process line names (default: --config as an absolute path)",
    )
    _node_arguments(conf)

    env = commands.add_parser("exabgp-env", help="print ExaBGP's environment settings as shell assignments")
    env.add_argument("--config", type=Path, required=True)

    check = commands.add_parser("check-config", help="validate the configuration and exit")
    check.add_argument("--config", type=Path, required=True)
    _node_arguments(check)

    render = commands.add_parser("render", help="show what a node would announce, and why not the rest")
    render.add_argument("--config", type=Path, required=True)
    render.add_argument("--node", help="node name (default: from the configuration or NODE_NAME)")
    render.add_argument("--from-file", type=Path, help="'kubectl get services,endpointslices -A -o json' output")
    render.add_argument("--output", choices=["table", "json"], default="table")

    status = commands.add_parser(
        "status", help="per-peer BGP sessions, routes and retries of the running announcer (its /status endpoint)"
    )
    where = status.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="the announcer's configuration: /status on metrics.listen")
    where.add_argument("--url", help="the /status URL, e.g. http://127.0.0.1:9479/status")
    status.add_argument("--output", choices=["table", "json"], default="table")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")

    calico = commands.add_parser(
        "calico-resources", help="print the Calico resources that put ExaBGP behind each node's BIRD (Calico BGP mode)"
    )
    calico.add_argument("--config", type=Path, required=True)
    calico.add_argument(
        "--service-cluster-ip-range",
        action="append",
        default=[],
        help="the cluster's Service CIDRs, as the kube-apiserver's flag (comma-separated or repeated)",
    )
    return parser


def _node_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a node's labels come from for peer selection: given, a file, or (default, when needed) the API."""
    parser.add_argument("--node", help="node name (default: from the configuration or NODE_NAME)")
    parser.add_argument("--node-labels", help="this node's labels, 'k=v,k=v' (instead of reading the Node)")
    parser.add_argument("--node-from-file", type=Path, help="this node's Node as 'kubectl get node NAME -o json'")


def _node_for(config: Config, arguments: argparse.Namespace, *, from_api: bool) -> NodeView | None:
    """The node peer selection is rendered for: from --node-labels, --node-from-file, else (from_api, and only if
    the configuration selects by node) the API server's Node; None when nothing is selected by node."""
    from announcer.exabgp_conf import needs_node
    from announcer.node_source import node_from_api, node_from_file, node_from_labels

    name = arguments.node or (config.node_name or "")
    if arguments.node_labels is not None:
        return node_from_labels(name or "(given labels)", arguments.node_labels)
    if arguments.node_from_file is not None:
        return node_from_file(arguments.node_from_file)
    if from_api and needs_node(config):
        return node_from_api(config, name or config.node)
    return None


def _idle_while_stopping() -> bool:
    """When the node is stopping: log it, read standard input until ExaBGP closes it, and say so (True)."""
    marker = os.environ.get(ENV_STOPPING_FILE, "")
    if not marker or not Path(marker).exists():
        return False
    logging.getLogger(__name__).info("%s exists: the node is stopping; announcing nothing", marker)
    while sys.stdin.buffer.read(4096):
        pass
    return True


class _EarlySignal:
    """SIGTERM and SIGINT recorded from the start of `run` until the daemon installs its own handlers, which then
    take the signal over (the orderly stop: withdraw what ExaBGP holds for us, exit 0) instead of dying of it."""

    def __init__(self) -> None:
        self.received: tuple[int, float] | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, number: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = (number, time.monotonic())

    def get(self) -> tuple[int, float] | None:
        return self.received


def _status(url: str, arguments: argparse.Namespace) -> int:
    """`announcer status`: the running announcer's /status, as a table or JSON; exit 1 when it cannot be read."""
    import json

    from announcer.status import StatusUnavailable, fetch_status, render_status_table

    try:
        document = fetch_status(url, arguments.timeout)
    except StatusUnavailable as error:
        print(f"announcer: cannot read {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    sys.stdout.write(
        json.dumps(document, indent=1) + "\n" if arguments.output == "json" else render_status_table(document)
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911, PLR0912  (one branch and return per subcommand)
    """Entry point of the `announcer` console script and `python -m announcer`."""
    arguments = _parser().parse_args(argv)
    setup_logging()
    if arguments.command == "run" and _idle_while_stopping():
        return EXIT_OK
    if arguments.command == "status" and arguments.url is not None:
        return _status(arguments.url, arguments)
    early = _EarlySignal()
    if arguments.command == "run":
        early.install()  # first thing: a SIGTERM from here on is the orderly stop, not the end of the process
    from announcer.config import ConfigError
    from announcer.config_load import load_config, read_passwords

    try:
        config = load_config(arguments.config)
        configure_logging(config.log_level, config.log_format)
        if arguments.command in ("check-config", "exabgp-conf"):  # before the node is started: the operator sees them
            for warning in config.warnings():
                print(f"announcer: warning: {arguments.config}: {warning}", file=sys.stderr)
        if arguments.command == "exabgp-conf":
            from announcer.exabgp_conf import for_node, render_exabgp_conf

            path = arguments.config_path or str(arguments.config.resolve())
            node = _node_for(config, arguments, from_api=True)
            config = for_node(config, node)
            sys.stdout.write(render_exabgp_conf(config, path, read_passwords(config), selected=node is not None))
            return EXIT_OK
        if arguments.command == "exabgp-env":
            from announcer.exabgp_conf import render_exabgp_env

            sys.stdout.write(render_exabgp_env(config))
            return EXIT_OK
        if arguments.command == "check-config":
            from announcer.exabgp_conf import explain_node, for_node

            read_passwords(config)
            node = _node_for(config, arguments, from_api=False)
            if node is not None:
                sys.stdout.write(explain_node(config, node))
                for_node(config, node)  # no peer for this node: an error naming it
            print(f"{arguments.config}: ok", file=sys.stderr)
            return EXIT_OK
        if arguments.command == "calico-resources":
            from announcer.calico import parse_ranges, render_calico_resources

            ranges = parse_ranges(arguments.service_cluster_ip_range)
            sys.stdout.write(render_calico_resources(config, ranges))
            return EXIT_OK
        if arguments.command == "status":
            address = config.metrics.address
            if address is None:
                raise ConfigError("metrics.listen is unset: the running announcer serves no /status (give --url)")
            from announcer.status import status_url

            return _status(status_url(address), arguments)
        if arguments.command == "render":
            from announcer.render import render_main

            return render_main(config, arguments.node, arguments.from_file, arguments.output)
        from announcer.daemon import run_daemon
        from announcer.node_source import only_peers

        config.node  # noqa: B018  (fails early, naming node_name, when it is unset)
        return run_daemon(only_peers(config, arguments.peer), early.get)
    except ConfigError as error:
        print(f"announcer: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
