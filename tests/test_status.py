"""Per-peer session metrics, /status and `announcer status`, and readiness that requires sessions (opt-in)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from announcer.exabgp import ExaBgpPipe
from announcer.metrics import DaemonMetrics
from announcer.sessions import NeighbourEvent, SessionState
from announcer.status import render_status_table, status_url
from lab.fakeapi import FakeApiServer
from tests.conftest import make_config
from tests.exabgp_double import CONFIG, V4_PEERS, V6_PEER, ExaBgpDouble
from tests.factories import service
from tests.real_exabgp import rendered_exabgp
from tests.test_metrics import Running, eventually, free_port, get, pipe_to_exabgp, scrape, server_up, value
from tests.test_metrics import api as api  # noqa: PLC0414  (the fixture, shared)
from tests.test_state import WEB, WEB_V6, Harness

Served = tuple[DaemonMetrics, Harness, ExaBgpPipe]


@pytest.fixture
def served() -> Iterator[Served]:
    """DaemonMetrics over a real Announcer (driven by a recording speaker), ready_requires_sessions on."""
    harness = Harness()
    with pipe_to_exabgp() as (pipe, _answers):
        metrics = DaemonMetrics(
            harness.announcer, pipe, ("127.0.0.1", free_port()), peers=harness.announcer, ready_requires_sessions=True
        )
        metrics.serve([])
        yield metrics, harness, pipe
        metrics.close()


def sessions(port: int, name: str) -> dict[str, float]:
    samples = scrape(port)
    return {peer: value(samples, name, peer=peer, family="ipv6" if ":" in peer else "ipv4") for peer in PEERS}


PEERS = (*V4_PEERS, V6_PEER)


def test_each_peer_shows_its_session_its_changes_and_the_routes_exabgp_holds_for_it(served: Served) -> None:
    """Before: no metric named a peer."""
    metrics, harness, _pipe = served
    port = metrics.listen[1]
    harness.list_everything(WEB)
    harness.speaker.answer(True)
    harness.loop()
    metrics.iterated([object()])
    assert sessions(port, "announcer_bgp_session_up") == dict.fromkeys(PEERS, 0)
    assert value(scrape(port), "announcer_bgp_session_state", peer=V6_PEER, family="ipv6", state="unknown") == 1
    assert sessions(port, "announcer_bgp_peer_routes") == dict.fromkeys(PEERS, 1)

    harness.feed(NeighbourEvent("192.0.2.1", SessionState.DOWN, "connection refused"))
    harness.feed(NeighbourEvent("192.0.2.1", SessionState.CONNECTED))
    harness.feed(NeighbourEvent("192.0.2.1", SessionState.UP))
    harness.feed(NeighbourEvent("192.0.2.5", SessionState.DOWN))
    metrics.iterated([object()])
    assert sessions(port, "announcer_bgp_session_up") == {"192.0.2.1": 1, "192.0.2.5": 0, V6_PEER: 0}
    assert sessions(port, "announcer_bgp_session_changes_total") == {"192.0.2.1": 1, "192.0.2.5": 0, V6_PEER: 0}
    samples = scrape(port)
    assert value(samples, "announcer_bgp_session_state", peer="192.0.2.5", family="ipv4", state="down") == 1
    assert value(samples, "announcer_bgp_session_state", peer="192.0.2.5", family="ipv4", state="up") == 0


def test_routes_refused_for_one_peer_leave_its_count_and_wait_as_its_pending_retries(served: Served) -> None:
    metrics, harness, _pipe = served
    port = metrics.listen[1]
    harness.list_everything(WEB)
    harness.speaker.answer(True, lambda line: line != WEB_V6)
    harness.speaker.answer(False, lambda line: line == WEB_V6)
    harness.loop()
    metrics.iterated([object()])
    assert sessions(port, "announcer_bgp_peer_pending_retries") == {"192.0.2.1": 0, "192.0.2.5": 0, V6_PEER: 1}
    status, body = get(port, "/status")
    assert status == 200
    document = json.loads(body)
    six = next(peer for peer in document["peers"] if peer["peer"] == V6_PEER)
    assert six["pending_retries"] == 1
    assert six["retry_in"] is not None


def test_status_tells_per_peer_state_routes_retries_readiness_the_last_error_and_exabgp_s_version(
    served: Served,
) -> None:
    metrics, harness, pipe = served
    port = metrics.listen[1]
    harness.list_everything(WEB)
    harness.speaker.answer(True)
    harness.loop()
    harness.feed(NeighbourEvent(V6_PEER, SessionState.DOWN, "connection refused"))
    pipe.exabgp_version = "exabgp 5.0.15"
    pipe.last_error = (1_700_000_000.0, "ExaBGP answered 'error' to: neighbor 192.0.2.1 announce route ...")
    metrics.iterated([object()])
    status, body = get(port, "/status")
    assert status == 200
    document = json.loads(body)
    assert document["exabgp_version"] == "exabgp 5.0.15"
    assert document["routes"] == {"ipv4": 1, "ipv6": 1}
    assert document["last_error"] == {
        "at": 1_700_000_000.0,
        "message": "ExaBGP answered 'error' to: neighbor 192.0.2.1 announce route ...",
    }
    assert document["ready"] is False
    six = next(peer for peer in document["peers"] if peer["peer"] == V6_PEER)
    assert (six["family"], six["state"], six["routes"], six["last_down_reason"]) == (
        "ipv6",
        "down",
        1,
        "connection refused",
    )
    assert six["since"] is not None

    table = render_status_table(document, now=six["since"] + 75)
    lines = table.splitlines()
    assert lines[0].startswith("exabgp 5.0.15; not ready: no established BGP session for ipv4")
    assert lines[1].split() == ["PEER", "FAMILY", "STATE", "FOR", "CHANGES", "ROUTES", "RETRIES", "LAST", "DOWN"]
    assert lines[4].split() == [V6_PEER, "ipv6", "down", "75s", "0", "1", "0", "connection", "refused"]
    assert "routes held: ipv4 1, ipv6 1" in lines


def test_with_ready_requires_sessions_readyz_waits_for_a_session_per_family(served: Served) -> None:
    """Before: /readyz said ready with every peer refusing connections."""
    metrics, harness, _pipe = served
    port = metrics.listen[1]
    harness.list_everything(WEB)
    assert get(port, "/readyz") == (
        503,
        "not ready: no established BGP session for ipv4 (192.0.2.1 unknown, 192.0.2.5 unknown); "
        "ipv6 (2001:db8::1 unknown)\n",
    )
    harness.feed(NeighbourEvent("192.0.2.5", SessionState.UP))
    assert get(port, "/readyz") == (503, "not ready: no established BGP session for ipv6 (2001:db8::1 unknown)\n")
    harness.feed(NeighbourEvent(V6_PEER, SessionState.UP))
    assert get(port, "/readyz") == (
        200,
        "ready: synced, the pipe to ExaBGP is open, a BGP session is up for every family\n",
    )
    harness.feed(NeighbourEvent(V6_PEER, SessionState.DOWN, "hold timer expired"))
    assert get(port, "/readyz")[0] == 503


def test_without_the_rule_readiness_ignores_sessions() -> None:
    harness = Harness()
    with pipe_to_exabgp() as (pipe, _answers):
        metrics = DaemonMetrics(harness.announcer, pipe, ("127.0.0.1", free_port()), peers=harness.announcer)
        harness.list_everything(WEB)
        assert metrics.readiness() == (True, "ready: synced, and the pipe to ExaBGP is open\n")


def test_ready_requires_sessions_without_a_metrics_port_is_warned_about() -> None:
    assert make_config(metrics={"ready_requires_sessions": True}).warnings() == [
        "metrics.ready_requires_sessions: true while metrics.listen is unset, so nothing serves /readyz"
    ]
    assert make_config(metrics={"ready_requires_sessions": True, "listen": "127.0.0.1:9000"}).warnings() == []


@pytest.mark.parametrize(
    ("address", "url"),
    [
        (("0.0.0.0", 9473), "http://127.0.0.1:9473/status"),
        (("::", 9473), "http://[::1]:9473/status"),
        (("192.0.2.11", 9473), "http://192.0.2.11:9473/status"),
    ],
)
def test_status_reads_the_port_metrics_listen_names_a_wildcard_on_loopback(address: tuple[str, int], url: str) -> None:
    assert status_url(address) == url


# --- the whole process ---------------------------------------------------------------------------------------
def announcer_status(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "announcer", "status", *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={**os.environ, "NODE_NAME": ""},
    )


def test_the_running_announcer_reports_neighbour_lines_in_metrics_status_and_announcer_status(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """ExaBGP's neighbour lines (as the double writes them) reach the metrics and /status; `announcer status` prints
    them as a table from --config, and as JSON from --url."""
    with Running(tmp_path, api) as process:
        process.ready()
        api.apply(service("web", ["198.51.100.10", "2001:db8:96::a"]))
        process.exabgp.wait_for(lambda: bool(process.exabgp.prefixes(V6_PEER)), what="the IPv6 route")
        process.exabgp.tell("neighbor 192.0.2.1 down - connection refused")
        process.exabgp.tell("neighbor 2001:db8::1 up")
        eventually(lambda: sessions(process.port, "announcer_bgp_session_up")[V6_PEER] == 1, "the IPv6 session up")
        eventually(
            lambda: (
                sessions(process.port, "announcer_bgp_peer_routes")
                == {peer: len(process.exabgp.prefixes(peer)) for peer in PEERS}
            ),
            "the routes held per peer to equal the double's",
        )
        assert sessions(process.port, "announcer_bgp_session_up") == {"192.0.2.1": 0, "192.0.2.5": 0, V6_PEER: 1}
        assert "BGP session 192.0.2.1 (ipv4): unknown -> down" in process.exabgp.stderr(), "from the summary"

        table = announcer_status("--config", str(process.exabgp.config_path))
        assert table.returncode == 0, table.stderr
        rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[2:5]}
        assert rows["192.0.2.1"][1:3] == ["ipv4", "down"]
        assert table.stdout.splitlines()[2].endswith("connection refused")
        assert rows[V6_PEER][1:3] == ["ipv6", "up"]
        assert table.stdout.splitlines()[0].startswith("exabgp 5.0.15; ready")

        answer = announcer_status("--url", f"http://127.0.0.1:{process.port}/status", "--output", "json")
        assert answer.returncode == 0, answer.stderr
        document = json.loads(answer.stdout)
        assert {peer["peer"]: peer["state"] for peer in document["peers"]} == {
            "192.0.2.1": "down",
            "192.0.2.5": "down",
            V6_PEER: "up",
        }
    gone = announcer_status("--url", f"http://127.0.0.1:{process.port}/status")
    assert gone.returncode == 1
    assert gone.stderr.startswith(f"announcer: cannot read http://127.0.0.1:{process.port}/status: ")


def test_a_started_or_respawned_announcer_asks_exabgp_which_sessions_are_up(tmp_path: Path, api: FakeApiServer) -> None:
    """ExaBGP tells a (re)started API process nothing of sessions already up: the announcer reads them from 'show
    neighbor summary' once ExaBGP's adj-rib-out is read. Before: every session stayed 'unknown' (and, with
    ready_requires_sessions, the pod unready) until it next changed."""
    port = free_port()
    config = copy.deepcopy(CONFIG)
    config["metrics"] = {"listen": f"127.0.0.1:{port}", "ready_requires_sessions": True}
    exabgp = ExaBgpDouble(tmp_path, api.url, config)
    exabgp.sessions = {"192.0.2.1": "established", V6_PEER: "established", "192.0.2.5": "active"}
    exabgp.start()
    try:
        eventually(lambda: server_up(port), "the metrics server to listen")
        eventually(lambda: get(port, "/readyz")[0] == 200, "/readyz to answer 200")
        assert sessions(port, "announcer_bgp_session_up") == {"192.0.2.1": 1, "192.0.2.5": 0, V6_PEER: 1}
        assert value(scrape(port), "announcer_bgp_session_state", peer="192.0.2.5", family="ipv4", state="down") == 1
        assert "show neighbor summary" in exabgp.lines
        assert exabgp.lines.index("show neighbor summary") == exabgp.lines.index("show adj-rib out extensive") + 1
        assert "BGP session 2001:db8::1 (ipv6): unknown -> up" in exabgp.stderr()
    finally:
        exabgp.stop()


def test_real_exabgp_with_every_peer_refusing_connections_the_announcer_says_so_and_is_not_ready(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """The issue's case, with the real ExaBGP: both peers refuse connections (nothing listens on their port). The
    announcer reads their states at start-up, logs them, shows 0 per peer and, with ready_requires_sessions, is not
    ready. Before: /readyz said ready and nothing was logged about peers."""
    port, metrics_port = free_port(), free_port()
    peers = ("127.0.0.2", "127.0.0.3")
    config = {
        "node_name": "node-a",
        "bgp": {
            "local_as": 64513,
            "router_id": "127.0.0.1",
            "peers": [
                {"address": peer, "peer_as": 64512, "local_address": "127.0.0.1", "port": port} for peer in peers
            ],
        },
        "watch": {"watch_timeout": 5, "request_timeout": 3, "backoff_initial": 0.05, "backoff_max": 0.4},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}", "ready_requires_sessions": True},
    }
    argv, environment = rendered_exabgp(tmp_path, config, api.url)
    log_path = tmp_path / "exabgp.log"
    with log_path.open("wb") as log, subprocess.Popen(
        argv, env=environment, stdout=log, stderr=subprocess.STDOUT
    ) as exabgp:  # fmt: skip
        try:
            eventually(lambda: "first sync: ExaBGP holds" in log_path.read_text(), "the first sync", 30)
            eventually(lambda: all(f"BGP session {peer} (ipv4): unknown -> " in log_path.read_text() for peer in peers),
                       "a log line per peer", 30)  # fmt: skip
            samples = scrape(metrics_port)
            assert {
                peer: value(samples, "announcer_bgp_session_up", peer=peer, family="ipv4") for peer in peers
            } == dict.fromkeys(peers, 0)
            status, body = get(metrics_port, "/readyz")
            assert status == 503
            assert body.startswith("not ready: no established BGP session for ipv4 (127.0.0.2 "), body
            document = json.loads(get(metrics_port, "/status")[1])
            assert str(document["exabgp_version"]).startswith("exabgp 5.0.")
            assert {peer["state"] for peer in document["peers"]} <= {"down", "connected"}
            time.sleep(3)  # ExaBGP keeps trying: 'connected' then 'down - closing connection' each time
            text = log_path.read_text()
            assert [text.count(f"BGP session {peer} (ipv4):") for peer in peers] == [1, 1], "one line, not per attempt"
            assert [value(scrape(metrics_port), "announcer_bgp_session_changes_total", peer=peer, family="ipv4")
                    for peer in peers] == [0, 0]  # fmt: skip
        finally:
            exabgp.kill()
            exabgp.wait(timeout=10)


def test_announcer_status_without_a_metrics_port_says_so_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "announcer.yaml"
    path.write_text(json.dumps({"node_name": "node-a", "bgp": {"local_as": 64513, "router_id": "192.0.2.11",
        "peers": [{"address": "192.0.2.1", "peer_as": 64512}]}}))  # fmt: skip
    result = announcer_status("--config", str(path))
    assert result.returncode == 2
    assert "metrics.listen is unset" in result.stderr
