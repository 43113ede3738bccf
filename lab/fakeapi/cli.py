"""`python -m lab.fakeapi`: serve seeded objects until SIGTERM or SIGINT; SIGUSR1/SIGUSR2 toggle reachability."""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from lab.fakeapi.server import FakeApiServer

_DESCRIPTION = "Stand-in Kubernetes API server: Services and EndpointSlices over real HTTP, with fault injection."


def _parse_listen(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (IPv6 as [ADDR]:PORT), got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def load_seed(path: Path) -> list[dict[str, Any]]:
    """Objects from a JSON or YAML file: a list, a ``kind: List`` with items, or (YAML) several documents."""
    text = path.read_text()
    documents: list[Any] = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
    objects: list[dict[str, Any]] = []
    for document in documents:
        if document is None:
            continue
        if isinstance(document, dict) and isinstance(document.get("items"), list):
            items = document["items"]
        else:
            items = document if isinstance(document, list) else [document]
        for item in items:
            if not isinstance(item, dict):
                raise ValueError(f"{path}: every seed item must be an object, got {item!r}")
            objects.append(item)
    return objects


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; SIGUSR1 makes the server unreachable until SIGUSR2."""
    parser = argparse.ArgumentParser(
        prog="python -m lab.fakeapi",
        description=_DESCRIPTION,
        epilog="Signals: SIGTERM/SIGINT stop; SIGUSR1 makes the server unreachable until SIGUSR2.",
    )
    parser.add_argument(
        "--listen",
        type=_parse_listen,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="IPv6 as [ADDR]:PORT; port 0 picks a free one (default: 127.0.0.1:0; the URL is logged)",
    )
    parser.add_argument("--seed", type=Path, help="JSON or YAML objects to create before serving")
    parser.add_argument("--history-size", type=int, default=10_000)
    parser.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds (default: 1)")
    parser.add_argument("--log-level", default="INFO")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=arguments.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(message)s")

    host, port = arguments.listen
    api = FakeApiServer(host, port, history_size=arguments.history_size, bookmark_interval=arguments.bookmark_interval)
    if arguments.seed:
        for obj in load_seed(arguments.seed):
            api.apply(obj)
    requests: queue.SimpleQueue[str] = queue.SimpleQueue()  # signal handlers only enqueue (re-entrancy)

    def on_signal(signal_number: int, _frame: FrameType | None) -> None:
        actions = {signal.SIGUSR1: "unreachable", signal.SIGUSR2: "reachable"}
        requests.put(actions.get(signal.Signals(signal_number), "stop"))

    for signal_number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signal_number, on_signal)
    api.start()
    try:
        while (request := requests.get()) != "stop":
            if request == "unreachable":
                api.set_unreachable(None)
            else:
                api.set_reachable()
    finally:
        api.stop()
    return 0
