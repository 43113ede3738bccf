"""The compose lab built and run for real: FRR's own RIB per neighbour and family, a stopped node's withdraws."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lab.lab import SAMPLES, load_objects
from tests.compose_support import (
    LAB_IPV4,
    LAB_IPV6,
    NODES,
    REPOSITORY,
    SERVICES,
    expected_prefixes,
    lab_address,
    sample_cluster_ips,
)
from tests.docker_support import ComposeProject, docker_engine, exclusive, host_routes_into_lab, run

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

PROJECT = "service-announcer-test"  # not the documented project name: a test run never tears down a running demo
UPLINK = ipaddress.ip_network("192.0.2.0/24")
Learned = dict[str, dict[str, bool]]  # peer address -> prefix -> stale


def bgp_table(lab: ComposeProject, family: int) -> Learned:
    """FRR's BGP table of one family (show bgp ipvX unicast json): each peer's prefixes, stale or not."""
    table = json.loads(lab.exec("frr", "vtysh", "-c", f"show bgp ipv{family} unicast json"))
    learned: Learned = {}
    for prefix, paths in table.get("routes", {}).items():
        for path in paths:
            learned.setdefault(path["peerId"], {})[prefix] = bool(path.get("stale", False))
    return learned


def neighbour(lab: ComposeProject, address: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(lab.exec("frr", "vtysh", "-c", f"show bgp neighbors {address} json"))[address]
    return found


def expected_tables() -> dict[int, dict[str, set[str]]]:
    """Family -> the node's address of that family -> the prefixes FRR should learn over that session."""
    return {family: {lab_address(node, family): expected_prefixes(node)[family] for node in NODES} for family in (4, 6)}


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.5)


def converged(lab: ComposeProject) -> bool:
    """Every session learned exactly its expected prefixes, none stale."""
    for family, expected in expected_tables().items():
        learned = bgp_table(lab, family)
        if {peer: set(prefixes) for peer, prefixes in learned.items()} != expected:
            return False
        if any(any(prefixes.values()) for prefixes in learned.values()):
            return False
    return True


@pytest.fixture(scope="module")
def compose_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeProject]:
    """Docker running (started here when it was not), the base and the images built, the compose lab up and
    converged; afterwards down, with its containers, its network and the host's route into it gone."""
    log = tmp_path_factory.mktemp("docker") / "dockerd.log"
    lab = ComposeProject(PROJECT)
    with exclusive(), docker_engine(log):
        lab("down", "--remove-orphans", timeout=120)  # what a killed earlier run left behind
        assert host_routes_into_lab() == [], "the host already routes into the compose lab's ranges (a lab running?)"
        run([str(REPOSITORY / "scripts" / "docker-base")], timeout=600)
        lab("build", timeout=900)
        try:
            lab("up", "-d", timeout=300)
            wait_for("FRR learns every node's routes", lambda: converged(lab), timeout=120)
            yield lab
        finally:
            lab("down", "--remove-orphans", timeout=300)
        assert lab.leftovers() == [], "down removes every container and the network"
        assert host_routes_into_lab() == [], "no route into the lab's ranges stays on the host"


def test_frr_learns_every_sample_address_from_each_node_over_its_own_family(compose_lab: ComposeProject) -> None:
    """IPv4 /32s only over the IPv4 sessions, IPv6 /128s only over the IPv6 ones; every sample clusterIP from both
    nodes except web-local's (externalTrafficPolicy: Local), which only node-a (its ready endpoints) announces."""
    cluster_ips = sample_cluster_ips()
    local = {
        f"{ipaddress.ip_address(address)}/{ipaddress.ip_address(address).max_prefixlen}"
        for item in load_objects(SAMPLES)
        if item["kind"] == "Service" and item["spec"].get("externalTrafficPolicy") == "Local"
        for address in item["spec"]["clusterIPs"]
    }
    for family, expected in expected_tables().items():
        learned = {peer: set(prefixes) for peer, prefixes in bgp_table(compose_lab, family).items()}
        assert learned == expected
        assert set(learned) == {lab_address(node, family) for node in NODES}, "no path over the other family's sessions"
        node_a, node_b = (learned[lab_address(node, family)] for node in NODES)
        assert cluster_ips[family] <= node_a
        assert cluster_ips[family] - node_b == cluster_ips[family] & local, "node-b has no ready local endpoint"
        for prefixes in learned.values():
            assert all(ipaddress.ip_network(prefix).prefixlen == (32 if family == 4 else 128) for prefix in prefixes)
            assert all(ipaddress.ip_network(prefix).version == family for prefix in prefixes)


def container_routes(
    lab: ComposeProject, service: str
) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    """A container's routes (destination, gateway) from /proc/net/route and /proc/net/ipv6_route, local ones aside."""
    routes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
    for line in lab.exec(service, "cat", "/proc/net/route").splitlines()[1:]:
        fields = line.split()
        destination = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        gateway = ipaddress.IPv4Address(bytes.fromhex(fields[2])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        routes.append((ipaddress.IPv4Network(f"{destination}/{mask}"), str(gateway)))
    for line in lab.exec(service, "cat", "/proc/net/ipv6_route").splitlines():
        fields = line.split()
        network = ipaddress.IPv6Network((int(fields[0], 16), int(fields[1], 16)))
        if fields[9] == "lo" or network.is_link_local or network.is_multicast:
            continue
        routes.append((network, str(ipaddress.IPv6Address(int(fields[4], 16)))))
    return routes


@pytest.mark.parametrize("service", SERVICES)
def test_no_lab_container_routes_beyond_the_lab_subnets(compose_lab: ComposeProject, service: str) -> None:
    """No default route, nothing towards this machine's uplink 192.0.2.0/24; every gateway a lab address."""
    routes = container_routes(compose_lab, service)
    assert any(destination == LAB_IPV4 for destination, _ in routes), routes
    assert any(destination == LAB_IPV6 for destination, _ in routes), routes
    for destination, gateway in routes:
        assert destination.prefixlen > 0, f"{service} has a default route via {gateway}"
        assert not (destination.version == 4 and destination.overlaps(UPLINK)), f"{service} routes {destination}"
        unspecified = ipaddress.ip_address(gateway).is_unspecified
        assert unspecified or ipaddress.ip_address(gateway) in (LAB_IPV4 if destination.version == 4 else LAB_IPV6)


def test_a_stopped_node_withdraws_its_paths_before_closing_its_sessions(compose_lab: ComposeProject) -> None:
    """docker-compose stop node-b: FRR receives its withdraws (UPDATEs) while the sessions are up, and no path from
    node-b stays, although graceful restart would keep them, stale, had the sessions just closed (see the next test);
    node-a's paths are untouched."""
    node_b = {family: lab_address("node-b", family) for family in (4, 6)}
    updates_before = {
        family: neighbour(compose_lab, node_b[family])["messageStats"]["updatesRecv"] for family in (4, 6)
    }
    compose_lab("stop", "node-b", timeout=60)
    try:

        def gone() -> bool:
            return all(node_b[family] not in bgp_table(compose_lab, family) for family in (4, 6))

        wait_for("node-b's paths leave FRR", gone, timeout=10)
        expected = expected_tables()
        for family in (4, 6):
            state = neighbour(compose_lab, node_b[family])
            assert state["bgpState"] != "Established"
            assert state["messageStats"]["updatesRecv"] > updates_before[family], "the withdraws came as UPDATEs"
            node_a = lab_address("node-a", family)
            assert bgp_table(compose_lab, family) == dict.fromkeys(
                [node_a], dict.fromkeys(expected[family][node_a], False)
            )
    finally:
        compose_lab("start", "node-b", timeout=60)
        wait_for("node-b's paths come back", lambda: converged(compose_lab), timeout=90)


def test_a_killed_node_leaves_its_paths_stale_so_withdrawing_is_the_stopping_nodes_doing(
    compose_lab: ComposeProject,
) -> None:
    """The control for the test above: node-a killed (no chance to withdraw) leaves every path in FRR, stale, for
    the graceful-restart time; started again, it replaces them."""
    node_a = {family: lab_address("node-a", family) for family in (4, 6)}
    expected = expected_tables()
    compose_lab("kill", "node-a", timeout=60)
    try:
        wait_for(
            "FRR notices node-a's sessions closed",
            lambda: all(neighbour(compose_lab, node_a[family])["bgpState"] != "Established" for family in (4, 6)),
            timeout=30,
        )
        for family in (4, 6):
            learned = bgp_table(compose_lab, family)
            assert learned[node_a[family]] == dict.fromkeys(expected[family][node_a[family]], True)
    finally:
        compose_lab("start", "node-a", timeout=60)
        wait_for("node-a's fresh paths replace the stale ones", lambda: converged(compose_lab), timeout=90)
