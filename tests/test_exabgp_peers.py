"""The announcer under the real ExaBGP with a peer that never connects listed first: the others get every route, and
each peer its End-of-RIB only after its routes (a second real ExaBGP on loopback plays the router).

With `local-address auto` ExaBGP learns its address towards a peer from its first TCP connect that completes, or is
refused (seen on 5.0.15): a peer that refuses is soon served. A router that is down drops the SYNs instead: ExaBGP
never learns the address and refuses `next-hop self` towards it. A listener whose accept queue is full drops SYNs
the same way (Linux), so that is how a down router is played here, on loopback.
"""

from __future__ import annotations

import contextlib
import copy
import getpass
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.fakeapi import FakeApiServer
from lab.lab import project_tool
from tests.exabgp_double import CONFIG, V4_PEERS, ExaBgpDouble
from tests.factories import service
from tests.real_exabgp import rendered_exabgp
from tests.test_exabgp_pipe import free_port

NEVER = "127.0.0.2"  # a down router: SYNs dropped, ExaBGP never learns its local address towards it
ROUTER = "127.0.0.3"  # the second ExaBGP listens there
SERVICES = 30
PREFIXES = {f"198.51.100.{index}/32" for index in range(1, SERVICES + 1)}

# The router's API process: every message ExaBGP hands it (JSON), one per line, into RECORD.
RECORDER = """
import os, sys
with open(os.environ["RECORD"], "a") as record:
    for line in sys.stdin:
        record.write(line)
        record.flush()
"""


@contextlib.contextmanager
def down_router(address: str, port: int) -> Iterator[None]:
    """A TCP port that drops SYNs as a router that is down does: listening, its accept queue full, never accepting."""
    listener = socket.socket()
    listener.bind((address, port))
    listener.listen(0)
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex((address, port))
    try:
        yield
    finally:
        for opened in (*fillers, listener):
            opened.close()


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.5).start() as server:
        yield server


@contextlib.contextmanager
def running(argv: list[str], environment: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log, subprocess.Popen(
        argv, env=environment, stdout=log, stderr=subprocess.STDOUT
    ) as process:  # fmt: skip
        try:
            yield process
        finally:
            process.kill()
            process.wait(timeout=10)


class Router:
    """A real ExaBGP listening on ROUTER, recording what it receives from the announcer's ExaBGP."""

    def __init__(self, tmp_path: Path, port: int) -> None:
        self.record = tmp_path / "router.jsonl"
        self.log = tmp_path / "router.log"
        script = tmp_path / "recorder.py"
        script.write_text(RECORDER)
        self.conf = tmp_path / "router.conf"
        self.conf.write_text(f"""
process recorder {{
    run {sys.executable} {script};
    encoder json;
}}
neighbor 127.0.0.1 {{
    router-id {ROUTER};
    local-address {ROUTER};
    local-as 64512;
    peer-as 64513;
    passive true;
    listen {port};
    capability {{ graceful-restart 120; }}
    family {{ ipv4 unicast; }}
    api {{ processes [ recorder ]; receive {{ parsed; update; }} }}
}}
""")
        self.environment = {
            "RECORD": str(self.record), "exabgp_daemon_user": getpass.getuser(), "exabgp_daemon_drop": "false",
            "exabgp_api_cli": "false", "exabgp_log_processes": "false",
        }  # fmt: skip

    def start(self) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        return running([str(project_tool("exabgp")), str(self.conf)], {**os.environ, **self.environment}, self.log)

    def received(self) -> list[tuple[str, str]]:
        """('route', prefix) and ('eor', 'ipv4 unicast') in the order the router received them."""
        events: list[tuple[str, str]] = []
        if not self.record.exists():
            return events
        for line in self.record.read_text().splitlines():
            try:
                message: Any = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict) or message.get("type") != "update":
                continue
            body = message["neighbor"]["message"]
            if "eor" in body:
                events.append(("eor", f"{body['eor']['afi']} {body['eor']['safi']}"))
            for family in body.get("update", {}).get("announce", {}).values():
                for routes in family.values():
                    events += [("route", route["nlri"]) for route in routes]
        return events


def speaker_argv(
    tmp_path: Path, api: FakeApiServer, peers: list[str], port: int, never_port: int
) -> tuple[list[str], dict[str, str]]:
    """The announcer's own exabgp.conf and settings (`announcer exabgp-conf`, `exabgp-env`) for these peers."""
    config = {
        "node_name": "node-a",
        "bgp": {
            "local_as": 64513,
            "router_id": "127.0.0.1",
            "graceful_restart": 120,
            "peers": [
                {"address": peer, "peer_as": 64512, "port": port if peer == ROUTER else never_port} for peer in peers
            ],
        },
        "watch": {"watch_timeout": 5, "request_timeout": 3, "backoff_initial": 0.05, "backoff_max": 0.4},
        "speaker": {"batch_delay": 0.005, "prefixes_per_line": 10},
    }
    return rendered_exabgp(tmp_path, config, api.url)


def wait_for(what: str, predicate: Any, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {path.name}:\n{path.read_text()[-3000:]}" for path in logs if path.exists())
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.1)


def routes_then_end_of_rib(received: list[tuple[str, str]]) -> bool:
    """Every route arrived, and the (first) End-of-RIB after all of them."""
    if ("eor", "ipv4 unicast") not in received:
        return False
    before = {value for kind, value in received[: received.index(("eor", "ipv4 unicast"))] if kind == "route"}
    return before == PREFIXES


def test_real_exabgp_a_peer_never_connected_listed_first_starves_no_other_and_its_end_of_rib_follows_the_routes(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """ExaBGP stops each line naming both IPv4 peers at the first, whose local address it never learns: the
    router listed after it still receives every route (each refused line goes again to each peer alone), and
    its End-of-RIB only after them (graceful restart: an early one would make it drop its stale paths)."""
    for index in range(1, SERVICES + 1):
        api.apply(service(f"s{index}", [f"198.51.100.{index}"]))
    port, never_port = free_port(), free_port()
    router = Router(tmp_path, port)
    argv, environment = speaker_argv(tmp_path, api, [NEVER, ROUTER], port, never_port)
    speaker_log = tmp_path / "speaker.log"
    with down_router(NEVER, never_port), router.start(), running(argv, environment, speaker_log):
        logs = [speaker_log, router.log]
        wait_for("every route, then the End-of-RIB", lambda: routes_then_end_of_rib(router.received()), 30, logs)
        assert "ExaBGP answered 'error' to: neighbor 127.0.0.2 , neighbor 127.0.0.3 announce" in speaker_log.read_text()
        assert [value for kind, value in router.received() if kind == "eor"] == ["ipv4 unicast"]


@pytest.mark.parametrize("peers", [[ROUTER], [NEVER, ROUTER]], ids=["router alone", "never-connected peer first"])
def test_real_exabgp_a_router_coming_up_late_gets_its_refused_routes_before_its_end_of_rib(
    tmp_path: Path, api: FakeApiServer, peers: list[str]
) -> None:
    """The router is down during the first sync (ExaBGP refuses every route towards it), then comes up: on
    `neighbor ... up` the announcer retries its routes, and sends its End-of-RIB only once they are accepted."""
    for index in range(1, SERVICES + 1):
        api.apply(service(f"s{index}", [f"198.51.100.{index}"]))
    port, never_port = free_port(), free_port()
    router = Router(tmp_path, port)
    argv, environment = speaker_argv(tmp_path, api, peers, port, never_port)
    speaker_log = tmp_path / "speaker.log"
    logs = [speaker_log, router.log]
    with down_router(NEVER, never_port), running(argv, environment, speaker_log):
        with down_router(ROUTER, port):
            wait_for("the first sync", lambda: "first sync: ExaBGP holds" in speaker_log.read_text(), 30, logs)
            refused = f"ExaBGP answered 'error' to: neighbor {peers[0]}"
            wait_for("a refused line", lambda: refused in speaker_log.read_text(), 30, logs)
            time.sleep(1.0)  # retried, still refused
        with router.start():  # the router comes up on the port that dropped SYNs
            wait_for("every route, then the End-of-RIB", lambda: routes_then_end_of_rib(router.received()), 30, logs)
            assert [value for kind, value in router.received() if kind == "eor"] == ["ipv4 unicast"]


# --- the same with the ExaBGP double, which models it (an unready neighbour stops a line, in configuration order) ---
def test_double_a_peer_that_cannot_take_routes_yet_delays_no_other_and_gets_them_once_its_session_is_up(
    tmp_path: Path, api: FakeApiServer
) -> None:
    for index in range(1, SERVICES + 1):
        api.apply(service(f"s{index}", [f"198.51.100.{index}"]))
    config = copy.deepcopy(CONFIG)
    config["bgp"] = {**config["bgp"], "graceful_restart": 120}
    first, second = V4_PEERS
    exabgp = ExaBgpDouble(tmp_path, api.url, config, unready={first}).start()
    try:
        exabgp.wait_for(lambda: exabgp.prefixes(second) == PREFIXES, what="every route at the second IPv4 peer")
        exabgp.wait_for(lambda: f"neighbor {second} announce eor ipv4 unicast" in exabgp.lines, what="its EOR")
        assert exabgp.prefixes(first) == set()
        assert not [line for line in exabgp.lines if line.startswith(f"neighbor {first} announce eor")]
        exabgp.unready.clear()
        exabgp.tell(f"neighbor {first} up")
        exabgp.wait_for(lambda: exabgp.prefixes(first) == PREFIXES, what="every route at the first, once up")
        end_of_rib = f"neighbor {first} announce eor ipv4 unicast"
        exabgp.wait_for(lambda: end_of_rib in exabgp.lines, what="the first peer's End-of-RIB")
        routes = [index for index, line in enumerate(exabgp.lines) if line.startswith(f"neighbor {first} announce ")]
        assert exabgp.lines.index(end_of_rib) == max(routes), "its End-of-RIB after every route line naming it"
    finally:
        exabgp.stop()
