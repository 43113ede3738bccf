"""End to end against FRR and real ExaBGP: each peer's session and routes as the announcer reports them (issue #19)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.frr import FAMILIES
from lab.lab import REPOSITORY, Lab
from tests import test_e2e
from tests.factories import service
from tests.lab_support import LabKeeper
from tests.test_e2e import ARRIVAL, BOTH, NODE_A, SESSIONS, Cluster, wait_for_announced

pytestmark = pytest.mark.lab
cluster = test_e2e.cluster

SESSIONS_CONFIG = REPOSITORY / "lab" / "files" / "announcer-sessions.yaml"
PORT = 9473
FRR_AS = 64512  # the rack1 ToR, node-a's router
FRR_PEER = {"ipv4": "192.0.2.1", "ipv6": "2001:db8::1"}  # FRR's addresses, the announcer's peers
NODE_A_ADDRESS = {"ipv4": "192.0.2.11", "ipv6": "2001:db8::11"}  # node-a's, FRR's neighbours
# A shut-down session shows in the announcer as soon as ExaBGP reads FRR's NOTIFICATION; a session let up again
# waits for ExaBGP's next connect attempt (up to a few seconds) and FRR's own timers.
NOTICED = 20.0


@pytest.fixture
def lab(lab_keeper: LabKeeper) -> Lab:
    """The lab with the real announcer configured by lab/files/announcer-sessions.yaml (metrics on 127.0.0.1:9473 in
    each node's namespace, readiness requiring sessions)."""
    return lab_keeper.get(config_path=SESSIONS_CONFIG)


def fetch(lab: Lab, path: str) -> tuple[int, str]:
    """GET a path of node-a's metrics port from inside its namespace: (status, body); status 0: no answer."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    answer = urllib.request.urlopen('http://127.0.0.1:{PORT}{path}', timeout=5)\n"
        "    print(answer.status); print(answer.read().decode(), end='')\n"
        "except urllib.error.HTTPError as error:\n"
        "    print(error.code); print(error.read().decode(), end='')\n"
        "except OSError as error:\n"  # nothing listens (yet)
        "    print(0); print(error)\n"
    )
    output = lab.run_in_node(NODE_A, [sys.executable, "-c", script]).stdout
    status, _, body = output.partition("\n")
    return int(status), body


def session_metrics(lab: Lab) -> dict[str, dict[str, float]]:
    """{metric: {peer: value}} of node-a's announcer_bgp_session_up and announcer_bgp_peer_routes."""
    found: dict[str, dict[str, float]] = {"announcer_bgp_session_up": {}, "announcer_bgp_peer_routes": {}}
    for family in text_string_to_metric_families(fetch(lab, "/metrics")[1]):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name][sample.labels["peer"]] = sample.value
    return found


def status(lab: Lab) -> dict[str, Any]:
    """`announcer status --output json` run in node-a's namespace, as `kubectl exec` would."""
    result = lab.run_in_node(
        NODE_A, [sys.executable, "-m", "announcer", "status", "--config", str(SESSIONS_CONFIG), "--output", "json"]
    )
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def frr_routes_from_node_a(lab: Lab) -> dict[str, int]:
    """How many prefixes FRR holds from node-a, per FRR address of the session (the announcer's peer)."""
    return {FRR_PEER[family]: len(lab.received_routes(NODE_A, family)) for family in FAMILIES}


def eventually(check: Callable[[], bool], what: str, timeout: float = NOTICED) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:.0f} s", pytrace=False)
        time.sleep(0.3)


def shutdown(lab: Lab, family: str, *, down: bool) -> None:
    """Administratively shut FRR's session to node-a of one family down (or let it up again)."""
    words = "" if down else "no "
    lab.frr().vtysh("configure terminal", f"router bgp {FRR_AS}", f"{words}neighbor {NODE_A_ADDRESS[family]} shutdown")


def test_a_peer_down_shows_0_up_shows_1_and_the_routes_per_peer_equal_what_frr_holds(
    lab: Lab, cluster: Cluster
) -> None:
    """Before: no metric named a peer, /readyz said ready with a session down, and nothing was logged about it."""
    cluster.apply(
        service("e2e-sessions-a", ["198.51.100.21", "2001:db8:96::21"]),
        service("e2e-sessions-b", ["198.51.100.22"]),
    )
    wait_for_announced(lab, {"198.51.100.21": BOTH, "2001:db8:96::21": BOTH, "198.51.100.22": BOTH}, timeout=ARRIVAL)
    expected = {"192.0.2.1": 2, "2001:db8::1": 1}
    assert frr_routes_from_node_a(lab) == expected
    eventually(lambda: session_metrics(lab)["announcer_bgp_peer_routes"] == expected, "routes per peer = FRR's")
    metrics = session_metrics(lab)
    assert metrics["announcer_bgp_session_up"] == {"192.0.2.1": 1, "2001:db8::1": 1}
    document = status(lab)
    assert {peer["peer"]: (peer["state"], peer["routes"]) for peer in document["peers"]} == {
        "192.0.2.1": ("up", 2),
        "2001:db8::1": ("up", 1),
    }
    assert str(document["exabgp_version"]).startswith("exabgp 5.0.")
    assert fetch(lab, "/readyz")[0] == 200

    try:
        shutdown(lab, "ipv6", down=True)
        eventually(lambda: session_metrics(lab)["announcer_bgp_session_up"]["2001:db8::1"] == 0, "the IPv6 session 0")
        assert session_metrics(lab)["announcer_bgp_session_up"]["192.0.2.1"] == 1
        assert len(lab.received_routes(NODE_A, "ipv6")) == 0
        six = next(peer for peer in status(lab)["peers"] if peer["peer"] == "2001:db8::1")
        assert six["state"] in ("down", "connected"), "ExaBGP keeps trying: FRR may accept TCP, then close it"
        assert six["last_down_reason"], "ExaBGP says why"
        assert six["routes"] == 1, "ExaBGP still holds the route, to send it again when the session is back"
        ready = fetch(lab, "/readyz")
        assert ready[0] == 503
        assert ready[1].startswith("not ready: no established BGP session for ipv6 (2001:db8::1 ")
        log = lab.node(NODE_A).exabgp_log.read_text(errors="replace")
        assert "BGP session 2001:db8::1 (ipv6): up -> down" in log
    finally:
        shutdown(lab, "ipv6", down=False)
    eventually(lambda: session_metrics(lab)["announcer_bgp_session_up"]["2001:db8::1"] == 1, "the IPv6 session 1", 60)
    eventually(lambda: frr_routes_from_node_a(lab) == expected, "FRR to hold node-a's routes again", SESSIONS)
    assert session_metrics(lab)["announcer_bgp_peer_routes"] == expected
    assert fetch(lab, "/readyz")[0] == 200
    six = next(peer for peer in status(lab)["peers"] if peer["peer"] == "2001:db8::1")
    assert six["changes"] >= 2


def test_a_respawned_announcer_learns_from_exabgp_that_its_sessions_are_up(lab: Lab, cluster: Cluster) -> None:
    """ExaBGP respawns a killed API process without telling it that the sessions are up: the new process asks ('show
    neighbor summary'). Before: both sessions stayed 'unknown', and with ready_requires_sessions /readyz stayed 503."""
    cluster.apply(service("e2e-sessions-c", ["198.51.100.23", "2001:db8:96::23"]))
    wait_for_announced(lab, {"198.51.100.23": BOTH, "2001:db8:96::23": BOTH}, timeout=ARRIVAL)
    killed = lab.kill_announcer(NODE_A)
    assert lab.announcer_pid(NODE_A, timeout=10.0, other_than=killed) is not None, "ExaBGP respawned it"
    eventually(lambda: fetch(lab, "/readyz")[0] == 200, "the respawned announcer to be ready", ARRIVAL)
    metrics = session_metrics(lab)
    assert metrics["announcer_bgp_session_up"] == {"192.0.2.1": 1, "2001:db8::1": 1}
    assert metrics["announcer_bgp_peer_routes"] == frr_routes_from_node_a(lab) == {"192.0.2.1": 1, "2001:db8::1": 1}
    assert {peer["state"] for peer in status(lab)["peers"]} == {"up"}
