"""End to end: real FRR, two nodes each running ExaBGP and the real announcer, the stand-in API server in-process."""

from __future__ import annotations

import ipaddress
import re
import signal
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from lab.frr import FAMILIES, Family
from lab.lab import Lab
from tests.factories import endpoint, endpoint_slice, service
from tests.lab_support import LabKeeper, Rib, wait_for_rib_equal

pytestmark = pytest.mark.lab

NODE_A, NODE_B = "node-a", "node-b"
BOTH = (NODE_A, NODE_B)
ONLY_A, ONLY_B = (NODE_A,), (NODE_B,)
NODE_ADDRESS: dict[Family, dict[str, str]] = {
    "ipv4": {NODE_A: "192.0.2.11", NODE_B: "192.0.2.12"},
    "ipv6": {NODE_A: "2001:db8::11", NODE_B: "2001:db8::12"},
}
# How long a change in the API server may take to show in FRR, and how long sessions may take to come back.
ARRIVAL = 30.0
SESSIONS = 60.0
# After `clear bgp *`: FRR's connect timer is 5 s and ExaBGP reconnects at once (about 1.5 s seen here).
CLEARED = 20.0
# How long the API server is unreachable, and the bound on the announcer noticing it is back: its watch
# backoff (0.5 s doubling, capped at 30 s, full jitter) may sleep up to 16 s past the outage.
OUTAGE = 10.0
RECONNECT = 40.0
MED_ANNOTATION = "bgp.announcer.io/med"

# The announcer's commands as ExaBGP logs them (exabgp.log.processes): one line per route and neighbour list.
_COMMAND_LOG = re.compile(r"\broute (?P<action>added to|removed from) neighbor (?P<peer>\S+) .*? : (?P<prefix>\S+/\d+)")

# What bgpd logs with `debug bgp updates in`, one line per NLRI: "192.0.2.11(host) rcvd 198.51.100.1/32 IPv4
# unicast" and "192.0.2.11(host) rcvd UPDATE about 198.51.100.1/32 IPv4 unicast -- withdrawn". Lines with more
# after the family are notes about an NLRI already logged ("..., flapped quicker than processing" comes before
# the plain line when a path arrives again before its old session's removal was processed): not counted.
_FRR_RECEIVED = re.compile(
    r" (?P<peer>[0-9a-fA-F.:]+)\([^)]*\) rcvd (?:UPDATE about )?(?P<prefix>[0-9a-fA-F.:]+/\d+) IPv[46] unicast"
    r"(?P<withdrawn> -- withdrawn)?$",
    re.MULTILINE,
)

# Expected announcements: service address -> the nodes that announce it.
Announced = Mapping[str, Collection[str]]


def family_of(address: str) -> Family:
    return "ipv4" if ipaddress.ip_address(address).version == 4 else "ipv6"


def host_prefix(address: str) -> str:
    return f"{address}/{32 if family_of(address) == 'ipv4' else 128}"


def expected_rib(announced: Announced, family: Family) -> Rib:
    """FRR's RIB of one family ({neighbour: {prefix: [next-hop]}}) when each node announces its addresses."""
    rib: Rib = {}
    for address, nodes in announced.items():
        if family_of(address) != family:
            continue
        for node in nodes:
            peer = NODE_ADDRESS[family][node]
            rib.setdefault(peer, {})[host_prefix(address)] = [peer]
    return rib


def wait_for_announced(lab: Lab, announced: Announced, timeout: float = ARRIVAL) -> None:
    """Wait until FRR holds exactly these routes, per neighbour, in both families."""
    for family in FAMILIES:
        wait_for_rib_equal(lab, family, expected_rib(announced, family), timeout=timeout)


def assert_steady(lab: Lab, announced: Announced, seconds: float, *, only: Collection[str] | None = None) -> int:
    """Sample FRR for a window: its routes stay exactly these (only these prefixes' routes when given).

    Returns the number of samples taken.
    """
    watched = None if only is None else {host_prefix(address) for address in only}
    wanted = {family: expected_rib(announced, family) for family in FAMILIES}
    deadline = time.monotonic() + seconds
    samples = 0
    while True:
        for family in FAMILIES:
            rib = lab.rib(family)
            if watched is not None:
                rib = {peer: {p: hops for p, hops in routes.items() if p in watched} for peer, routes in rib.items()}
                rib = {peer: routes for peer, routes in rib.items() if routes}
            assert rib == wanted[family], f"{family} RIB changed after {samples} steady samples: {rib}"
        samples += 1
        if time.monotonic() >= deadline:
            return samples
        time.sleep(0.25)


@dataclass
class FrrReceived:
    """What FRR received from a point on, per neighbour and prefix, read from bgpd's `debug bgp updates in` log.

    This is the sharpest "nothing flapped" signal: a withdraw or a re-announcement of a prefix shows here even
    when ExaBGP packs it into an UPDATE with other routes, and path timestamps (`lastUpdate`, whole seconds
    derived from wall and monotonic clocks) jitter by a second.
    """

    lab: Lab
    offset: int = 0

    @classmethod
    def from_now(cls, lab: Lab) -> FrrReceived:
        path = lab.frr().log_path("bgpd")
        return cls(lab, path.stat().st_size if path.exists() else 0)

    def updates(self) -> list[tuple[str, str, str]]:
        """Sorted [(neighbour, "announce" | "withdraw", prefix)], one entry per NLRI received."""
        with self.lab.frr().log_path("bgpd").open("rb") as log_file:
            log_file.seek(self.offset)
            text = log_file.read().decode(errors="replace")
        return sorted(
            (match["peer"], "withdraw" if match["withdrawn"] else "announce", match["prefix"])
            for match in _FRR_RECEIVED.finditer(text)
        )


def expected_updates(
    action: str, addresses: Collection[str], nodes: Collection[str] = BOTH
) -> list[tuple[str, str, str]]:
    """Sorted [(neighbour, action, prefix)]: each address sent once on its family's session from each node."""
    return sorted(
        (NODE_ADDRESS[family_of(address)][node], action, host_prefix(address))
        for address in addresses
        for node in nodes
    )


def updates_received(lab: Lab) -> dict[str, int]:
    """UPDATE messages FRR has received per neighbour (announcements and withdrawals alike)."""
    return {peer: int(info["messageStats"]["updatesRecv"]) for peer, info in lab.frr().neighbors().items()}


def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after}


def per_session(value_a4: int, value_b4: int, value_a6: int, value_b6: int) -> dict[str, int]:
    """A value per FRR neighbour: node-a IPv4, node-b IPv4, node-a IPv6, node-b IPv6."""
    return {
        NODE_ADDRESS["ipv4"][NODE_A]: value_a4,
        NODE_ADDRESS["ipv4"][NODE_B]: value_b4,
        NODE_ADDRESS["ipv6"][NODE_A]: value_a6,
        NODE_ADDRESS["ipv6"][NODE_B]: value_b6,
    }


def connections_established(lab: Lab) -> dict[str, int]:
    return {peer: int(info["connectionsEstablished"]) for peer, info in lab.frr().neighbors().items()}


def wait_sessions_reestablished(lab: Lab, before: Mapping[str, int], peers: Collection[str]) -> None:
    """Wait until these neighbours have connected again since `before` and every session is Established."""

    def again(lab: Lab) -> bool:
        neighbors = lab.frr().neighbors()
        return all(info["bgpState"] == "Established" for info in neighbors.values()) and all(
            int(neighbors[peer]["connectionsEstablished"]) > before[peer] for peer in peers
        )

    try:
        lab.wait_for(again, timeout=SESSIONS)
    except TimeoutError:
        pytest.fail(f"sessions not re-established within {SESSIONS:.0f} s: {lab.sessions()}", pytrace=False)


@dataclass
class CommandLog:
    """The announcer's commands to one node's ExaBGP from a point on, read from ExaBGP's log."""

    lab: Lab
    node: str
    offset: int = 0

    @classmethod
    def from_now(cls, lab: Lab, node: str) -> CommandLog:
        path = lab.node(node).exabgp_log
        return cls(lab, node, path.stat().st_size if path.exists() else 0)

    def text(self) -> str:
        with self.lab.node(self.node).exabgp_log.open("rb") as log_file:
            log_file.seek(self.offset)
            return log_file.read().decode(errors="replace")

    def commands(self) -> set[tuple[str, str]]:
        """{("announce" | "withdraw", prefix)} sent since the offset."""
        found = set()
        for match in _COMMAND_LOG.finditer(self.text()):
            action = "announce" if match["action"] == "added to" else "withdraw"
            found.add((action, match["prefix"]))
        return found


@dataclass
class Cluster:
    """The objects a test creates in the stand-in API server, deleted again when the test ends."""

    api: Any
    created: dict[tuple[str, str, str], None] = field(default_factory=dict)

    def apply(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            self.api.apply(obj)
            metadata = obj["metadata"]
            self.created[(obj["kind"], metadata.get("namespace", "default"), metadata["name"])] = None

    def delete(self, kind: str, name: str, namespace: str = "default") -> None:
        assert self.api.delete(kind, namespace, name), f"no {kind} {namespace}/{name} to delete"

    def clean_up(self) -> None:
        for kind, namespace, name in reversed(list(self.created)):
            self.api.delete(kind, namespace, name)
        self.created.clear()


def leftovers(lab: Lab, timeout: float) -> dict[Family, Rib]:
    """FRR's routes still there after waiting (bounded) for FRR to hold none."""
    deadline = time.monotonic() + timeout
    while True:
        ribs = {family: lab.rib(family) for family in FAMILIES}
        if not any(ribs.values()) or time.monotonic() > deadline:
            return {family: rib for family, rib in ribs.items() if rib}
        time.sleep(0.2)


@pytest.fixture
def cluster(lab_keeper: LabKeeper, lab: Lab) -> Iterator[Cluster]:
    """The lab's API server, starting with FRR empty and logging every UPDATE it receives; the test's objects are
    deleted, the API server made reachable and ExaBGP restarted where stopped, and FRR emptied after the test."""
    wait_for_announced(lab, {})
    lab.frr().vtysh("configure terminal", "debug bgp updates in")
    objects = Cluster(lab.api)
    try:
        yield objects
    finally:
        lab.api.set_reachable()
        lab_keeper.heal()
        objects.clean_up()
        left = leftovers(lab, ARRIVAL)
        if left:  # restart ExaBGP everywhere so the next test starts clean, and still report what was left
            for node in BOTH:
                lab.restart_exabgp(node)
            lab.wait_established(SESSIONS)
            wait_for_announced(lab, {})
            pytest.fail(f"routes stayed in FRR after every object of the test was deleted: {left}", pytrace=False)


# 1. Which addresses, on which sessions


def test_every_cluster_ip_of_every_family_policy_is_learned_only_on_the_sessions_of_its_family(
    lab: Lab, cluster: Cluster
) -> None:
    """RequireDualStack, PreferDualStack, IPv4-only, IPv6-only and IPv6-primary Services: every clusterIP reaches
    FRR from both nodes, IPv4 ones only over the IPv4 sessions and IPv6 ones only over the IPv6 sessions (per
    neighbour prefix counters and received routes agree); headless and ExternalName Services announce nothing."""
    sessions_before = connections_established(lab)
    received = FrrReceived.from_now(lab)
    cluster.apply(
        service("e2e-require-dual", ["198.51.100.1", "2001:db8:96::1"], policy="RequireDualStack"),
        service("e2e-prefer-dual", ["198.51.100.2", "2001:db8:96::2"], policy="PreferDualStack"),
        service("e2e-ipv4-only", ["198.51.100.3"]),
        service("e2e-ipv6-only", ["2001:db8:96::4"]),
        service("e2e-ipv6-primary", ["2001:db8:96::5", "198.51.100.5"], policy="PreferDualStack"),
        service("e2e-headless", ["None"], policy="PreferDualStack"),
        service("e2e-external-name", service_type="ExternalName"),
    )
    ipv4 = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.5"]
    ipv6 = ["2001:db8:96::1", "2001:db8:96::2", "2001:db8:96::4", "2001:db8:96::5"]
    announced = dict.fromkeys([*ipv4, *ipv6], BOTH)
    wait_for_announced(lab, announced)
    assert_steady(lab, announced, 1.0)  # the headless and ExternalName Services do not add anything later

    neighbors = lab.frr().neighbors()
    pairs: list[tuple[Family, Family, list[str]]] = [("ipv4", "ipv6", ipv4), ("ipv6", "ipv4", ipv6)]
    for family, other, addresses in pairs:
        for node in BOTH:
            peer = NODE_ADDRESS[family][node]
            info = neighbors[peer]
            assert set(info["addressFamilyInfo"]) == {f"{family}Unicast"}, f"{peer}: {other} negotiated"
            assert info["addressFamilyInfo"][f"{family}Unicast"]["acceptedPrefixCounter"] == len(addresses)
            assert info["messageStats"]["notificationsRecv"] == 0
            assert info["messageStats"]["notificationsSent"] == 0
            assert lab.received_routes(node, family) == {host_prefix(address): [peer] for address in addresses}
            assert lab.frr().received_routes(peer, other) == {}, f"{other} NLRI on the {family} session {peer}"
    # Every NLRI FRR received, whatever it did with it: each address once, on its own family's sessions only.
    assert received.updates() == expected_updates("announce", [*ipv4, *ipv6])
    assert connections_established(lab) == sessions_before, "a session was reset while the routes arrived"


# 2. Changes withdraw exactly what went away


def test_deleting_a_service_withdraws_exactly_its_routes_and_leaves_the_other_paths_untouched(
    lab: Lab, cluster: Cluster
) -> None:
    """Deleting one dual-stack Service sends one withdraw per session and nothing else: FRR receives nothing about
    the remaining Service's routes. The same signals (FRR's per-prefix UPDATE log and per-neighbour UPDATE count)
    do move when that Service's routes are re-sent (a MED annotation), so the check could fail."""
    keep = ["198.51.100.6", "2001:db8:96::6"]
    gone = ["198.51.100.7", "2001:db8:96::7"]
    cluster.apply(service("e2e-keep", keep), service("e2e-gone", gone))
    wait_for_announced(lab, dict.fromkeys([*keep, *gone], BOTH))
    assert_steady(lab, dict.fromkeys([*keep, *gone], BOTH), 0.5)
    received, updates = FrrReceived.from_now(lab), updates_received(lab)

    cluster.delete("Service", "e2e-gone")
    wait_for_announced(lab, dict.fromkeys(keep, BOTH))
    assert_steady(lab, dict.fromkeys(keep, BOTH), 1.5)
    assert received.updates() == expected_updates("withdraw", gone), "only gone's routes, each withdrawn once"
    assert delta(updates_received(lab), updates) == per_session(1, 1, 1, 1), "one withdraw per session, no more"

    # The control: re-sending keep's routes (a new MED) moves both signals.
    received, updates = FrrReceived.from_now(lab), updates_received(lab)
    cluster.apply(service("e2e-keep", keep, annotations={MED_ANNOTATION: "7"}))
    lab.wait_for(lambda lab: len(received.updates()) >= 4, timeout=ARRIVAL)
    assert_steady(lab, dict.fromkeys(keep, BOTH), 0.5)
    assert received.updates() == expected_updates("announce", keep)
    assert delta(updates_received(lab), updates) == per_session(1, 1, 1, 1)
    for address in keep:
        paths = lab.frr().vtysh_json(f"show bgp {family_of(address)} unicast {host_prefix(address)} json")["paths"]
        assert [path.get("metric") for path in paths] == [7, 7], f"{address}: the new MED on both paths"


def test_turning_a_prefer_dual_stack_service_single_stack_withdraws_only_the_dropped_family(
    lab: Lab, cluster: Cluster
) -> None:
    """PreferDualStack with two IPs changed to SingleStack IPv4: the IPv6 /128 is withdrawn from both IPv6
    sessions while the IPv4 sessions receive no UPDATE at all."""
    addresses = ["198.51.100.8", "2001:db8:96::8"]
    cluster.apply(service("e2e-shrinking", addresses, policy="PreferDualStack"))
    wait_for_announced(lab, dict.fromkeys(addresses, BOTH))
    assert_steady(lab, dict.fromkeys(addresses, BOTH), 0.5)
    received, updates = FrrReceived.from_now(lab), updates_received(lab)

    cluster.apply(service("e2e-shrinking", addresses[:1], policy="SingleStack"))
    wait_for_announced(lab, dict.fromkeys(addresses[:1], BOTH))
    assert_steady(lab, dict.fromkeys(addresses[:1], BOTH), 1.5)
    assert received.updates() == expected_updates("withdraw", addresses[1:])
    assert delta(updates_received(lab), updates) == per_session(0, 0, 1, 1)


# 3. externalTrafficPolicy: Local


def test_local_traffic_policy_announces_from_the_nodes_with_a_ready_endpoint_per_family(
    lab: Lab, cluster: Cluster
) -> None:
    """A LoadBalancer and a NodePort Service with externalTrafficPolicy Local: per family, only the node with a
    ready endpoint is a next hop (cluster and load-balancer IPs alike); moving the endpoint moves the route; a
    not-ready endpoint (ready and serving false) announces nothing, a terminating one still serving does; with
    Cluster policy FRR holds one path per node, both used (multipath)."""
    web_v4, web_v6 = ["198.51.100.9", "198.51.100.129"], ["2001:db8:96::9", "2001:db8:1b::9"]
    ingress = [{"ip": "198.51.100.129", "ipMode": "VIP"}, {"ip": "2001:db8:1b::9", "ipMode": "VIP"}]
    node_port = ["198.51.100.10", "2001:db8:96::a"]

    def web(policy: str) -> dict[str, Any]:
        return service(
            "e2e-web", [web_v4[0], web_v6[0]], service_type="LoadBalancer",
            external_traffic_policy=policy, ingress=ingress,
        )  # fmt: skip

    def web_slices(v4_node: str, v6_node: str, *, v6_ready: bool = True) -> list[dict[str, Any]]:
        v6_endpoint = endpoint(v6_node, "2001:db8:a::9", ready=v6_ready, serving=v6_ready)
        return [
            endpoint_slice("e2e-web", "IPv4", [endpoint(v4_node, "198.51.100.209", ready=True, serving=True)]),
            endpoint_slice("e2e-web", "IPv6", [v6_endpoint]),
        ]

    cluster.apply(
        web("Local"),
        *web_slices(NODE_A, NODE_B),
        service("e2e-node-port", node_port, service_type="NodePort", external_traffic_policy="Local"),
        endpoint_slice(
            "e2e-node-port", "IPv4",
            [endpoint(NODE_B, "198.51.100.210"), endpoint(NODE_A, "198.51.100.211", ready=False, serving=False)],
        ),
        endpoint_slice("e2e-node-port", "IPv6", [endpoint(NODE_B, "2001:db8:a::a")]),
    )  # fmt: skip
    node_port_routes = dict.fromkeys(node_port, ONLY_B)
    split = {**dict.fromkeys(web_v4, ONLY_A), **dict.fromkeys(web_v6, ONLY_B), **node_port_routes}
    wait_for_announced(lab, split)
    assert_steady(lab, split, 1.0)

    cluster.apply(*web_slices(NODE_B, NODE_B))
    wait_for_announced(lab, {**dict.fromkeys([*web_v4, *web_v6], ONLY_B), **node_port_routes})

    cluster.apply(*web_slices(NODE_B, NODE_A, v6_ready=False))
    not_ready = {**dict.fromkeys(web_v4, ONLY_B), **node_port_routes}
    wait_for_announced(lab, not_ready)
    assert_steady(lab, not_ready, 1.5)  # the not-ready endpoint's node does not announce a moment later

    # Terminating but still serving (ready false, serving true) counts as an endpoint that can serve.
    terminating = endpoint(NODE_A, "2001:db8:a::9", ready=False, serving=True, terminating=True)
    cluster.apply(endpoint_slice("e2e-web", "IPv6", [terminating]))
    wait_for_announced(lab, {**not_ready, **dict.fromkeys(web_v6, ONLY_A)})

    cluster.apply(web("Cluster"))
    everywhere = {**dict.fromkeys([*web_v4, *web_v6], BOTH), **node_port_routes}
    wait_for_announced(lab, everywhere)
    for address in [*web_v4, *web_v6]:
        family = family_of(address)
        paths = lab.frr().bgp_table(family)[host_prefix(address)]
        assert sorted(path.peer for path in paths) == sorted(NODE_ADDRESS[family].values()), address
        assert all(path.valid for path in paths), address
        assert [path.best for path in paths].count(True) == 1, address
        assert all(path.best or path.multipath for path in paths), f"{address}: both paths in use: {paths}"
        assert lab.routes(family)[host_prefix(address)] == sorted(NODE_ADDRESS[family].values())


# 4. Faults: nothing lost, nothing flapped


def test_frr_clearing_every_session_gets_the_routes_back_without_a_command_from_the_announcer(
    lab: Lab, cluster: Cluster
) -> None:
    """After `clear bgp *` every session re-establishes and ExaBGP re-sends its routes from its adj-rib-out:
    the routes are back within the bound while each announcer (same PID) sent no command."""
    addresses = ["198.51.100.11", "2001:db8:96::b"]
    cluster.apply(service("e2e-cleared", addresses))
    wait_for_announced(lab, dict.fromkeys(addresses, BOTH))
    assert_steady(lab, dict.fromkeys(addresses, BOTH), 0.5)
    pids = {node: lab.announcer_pid(node, timeout=5.0) for node in BOTH}
    logs = {node: CommandLog.from_now(lab, node) for node in BOTH}
    sessions, received = connections_established(lab), FrrReceived.from_now(lab)

    started = time.monotonic()
    lab.clear_bgp()
    wait_sessions_reestablished(lab, sessions, lab.peers())
    wait_for_announced(lab, dict.fromkeys(addresses, BOTH), timeout=CLEARED)
    back = time.monotonic() - started
    print(f"routes back {back:.1f} s after clear bgp *")
    assert back < CLEARED
    assert_steady(lab, dict.fromkeys(addresses, BOTH), 1.0)

    assert received.updates() == expected_updates("announce", addresses), "each route re-sent once per session"
    assert {node: lab.announcer_pid(node) for node in BOTH} == pids
    assert {node: logs[node].commands() for node in BOTH} == {node: set() for node in BOTH}


def test_a_killed_announcer_is_respawned_and_reconciles_without_stale_routes_or_flaps(
    lab: Lab, cluster: Cluster
) -> None:
    """SIGKILL to node-a's announcer, then (while it is dead) one Service deleted and one created: the process
    ExaBGP respawns reads what ExaBGP still holds, withdraws the stale routes and announces the new ones from
    node-a, and re-sends nothing of the routes that stayed wanted, even those with their own MED and communities
    (FRR receives nothing about them); no session is reset."""
    keep = ["198.51.100.12", "2001:db8:96::c"]
    styled = ["198.51.100.20", "2001:db8:96::14"]
    gone = ["198.51.100.13", "2001:db8:96::d"]
    born = ["198.51.100.14", "2001:db8:96::e"]
    annotations = {
        MED_ANNOTATION: "5",
        "bgp.announcer.io/communities": "64513:7 64513:8",
        "bgp.announcer.io/large-communities": "64513:1:2",
    }
    cluster.apply(
        service("e2e-keep", keep), service("e2e-styled", styled, annotations=annotations), service("e2e-gone", gone)
    )
    wait_for_announced(lab, dict.fromkeys([*keep, *styled, *gone], BOTH))
    assert_steady(lab, dict.fromkeys([*keep, *styled, *gone], BOTH), 0.5)
    sessions, received = connections_established(lab), FrrReceived.from_now(lab)
    log = CommandLog.from_now(lab, NODE_A)

    killed = lab.kill_announcer(NODE_A)
    cluster.delete("Service", "e2e-gone")
    cluster.apply(service("e2e-born", born))
    respawned = lab.announcer_pid(NODE_A, timeout=10.0, other_than=killed)
    assert respawned not in (None, killed), "ExaBGP did not respawn the announcer"

    wanted = dict.fromkeys([*keep, *styled, *born], BOTH)
    wait_for_announced(lab, wanted)
    assert_steady(lab, wanted, 1.5)
    assert received.updates() == sorted(expected_updates("withdraw", gone) + expected_updates("announce", born))
    assert connections_established(lab) == sessions
    assert lab.announcer_pid(NODE_A) == respawned
    assert log.commands() == {("withdraw", host_prefix(a)) for a in gone} | {("announce", host_prefix(a)) for a in born}
    # The new process learnt the deletion from its first list, not from a watch event of the old one.
    assert "first sync: ExaBGP holds 6 prefixes; 2 to announce, 2 to withdraw" in log.text()


def test_restarting_exabgp_on_a_node_resyncs_every_route_on_that_node_sessions(lab: Lab, cluster: Cluster) -> None:
    """Stopping and starting node-b's ExaBGP drops node-b's paths, then a new ExaBGP and announcer announce every
    route again on node-b's two sessions; node-a's sessions receive nothing meanwhile."""
    addresses = ["198.51.100.15", "2001:db8:96::f", "198.51.100.16", "2001:db8:96::10"]
    cluster.apply(service("e2e-resync-1", addresses[:2]), service("e2e-resync-2", addresses[2:]))
    wait_for_announced(lab, dict.fromkeys(addresses, BOTH))
    assert_steady(lab, dict.fromkeys(addresses, BOTH), 0.5)
    old_pid, sessions, received = lab.exabgp_pid(NODE_B), connections_established(lab), FrrReceived.from_now(lab)
    node_a_peers = [NODE_ADDRESS[family][NODE_A] for family in FAMILIES]
    node_b_peers = [NODE_ADDRESS[family][NODE_B] for family in FAMILIES]

    lab.stop_exabgp(NODE_B)
    wait_for_announced(lab, dict.fromkeys(addresses, ONLY_A), timeout=10.0)
    lab.start_exabgp(NODE_B)
    wait_sessions_reestablished(lab, sessions, node_b_peers)
    wait_for_announced(lab, dict.fromkeys(addresses, BOTH))
    assert_steady(lab, dict.fromkeys(addresses, BOTH), 0.5)

    assert lab.exabgp_pid(NODE_B) not in (None, old_pid)
    resent = [update for update in received.updates() if update[1] == "announce"]
    assert resent == expected_updates("announce", addresses, ONLY_B), "every route once on node-b's sessions"
    assert [update for update in received.updates() if update[0] in node_a_peers] == []
    assert {peer: count for peer, count in connections_established(lab).items() if peer in node_a_peers} == {
        peer: sessions[peer] for peer in node_a_peers
    }


@dataclass(frozen=True)
class ApiFault:
    """One way the API server lets the announcer down, how long it lasts, and the counter showing it happened."""

    name: str
    outage: float  # seconds the API server is unreachable (0: it answers throughout)
    counter: str  # the stats() counter that must grow: the announcer re-listed or re-watched

    def inject(self, api: Any) -> None:
        if self.name == "drop-every-watch":
            api.drop_watches()
        elif self.name == "expire-history":
            api.expire_history()
        else:
            api.set_unreachable(self.outage)


API_FAULTS = [
    ApiFault("drop-every-watch", 0.0, "watch_requests"),
    ApiFault("expire-history", 0.0, "list_requests"),
    ApiFault("unreachable-10s", OUTAGE, "watch_requests"),
]


@pytest.mark.parametrize("fault", API_FAULTS, ids=[fault.name for fault in API_FAULTS])
def test_an_api_server_fault_leaves_the_routes_in_place_and_changes_made_meanwhile_arrive(
    lab: Lab, cluster: Cluster, fault: ApiFault
) -> None:
    """Dropped watches, 410 Expired for every watch, or an API server unreachable for 10 s: FRR's routes stay
    exactly as they were throughout (sampled) and receive nothing about the Service that stays; a Service deleted
    and one created during the fault are withdrawn and announced once the announcers are back in touch, and that
    is all they send."""
    steady = ["198.51.100.17", "2001:db8:96::11"]
    doomed = ["198.51.100.21", "2001:db8:96::15"]
    created = ["198.51.100.18", "2001:db8:96::12"]
    cluster.apply(service("e2e-steady", steady), service("e2e-doomed", doomed))
    before = dict.fromkeys([*steady, *doomed], BOTH)
    wait_for_announced(lab, before)
    assert_steady(lab, before, 0.5)
    received, updates = FrrReceived.from_now(lab), updates_received(lab)
    logs = {node: CommandLog.from_now(lab, node) for node in BOTH}
    requests_before = sum(lab.api.stats()[fault.counter].values())

    fault.inject(lab.api)
    cluster.delete("Service", "e2e-doomed")
    cluster.apply(service("e2e-created", created))
    if fault.outage:
        assert not lab.api.stats()["reachable"]
        samples = assert_steady(lab, before, fault.outage - 1.0)
        assert samples >= 5, f"only {samples} samples of FRR during the outage"
        assert not lab.api.stats()["reachable"], "the outage ended early: the sampling did not cover it"
    else:
        assert_steady(lab, dict.fromkeys(steady, BOTH), 2.0, only=steady)
    started = time.monotonic()
    after = dict.fromkeys([*steady, *created], BOTH)
    wait_for_announced(lab, after, timeout=RECONNECT)
    print(f"{fault.name}: the changes arrived {time.monotonic() - started:.1f} s after the sampling")
    assert_steady(lab, after, 0.5)

    assert sum(lab.api.stats()[fault.counter].values()) > requests_before, f"no new {fault.counter}: no fault seen"
    assert received.updates() == sorted(expected_updates("withdraw", doomed) + expected_updates("announce", created))
    assert delta(updates_received(lab), updates) == per_session(2, 2, 2, 2), "one withdraw and one announcement"
    commands = {("withdraw", host_prefix(a)) for a in doomed} | {("announce", host_prefix(a)) for a in created}
    assert {node: logs[node].commands() for node in BOTH} == dict.fromkeys(BOTH, commands)


def test_sigterm_to_exabgp_withdraws_that_node_paths_and_leaves_the_other_node_paths(
    lab: Lab, cluster: Cluster
) -> None:
    """SIGTERM to node-b's ExaBGP (and so to its announcer): FRR drops node-b's paths in both families well within
    the hold time, node-a's sessions receive nothing and stay up; a new ExaBGP on node-b announces them again and
    is the only source of UPDATEs."""
    addresses = ["198.51.100.19", "2001:db8:96::13"]
    cluster.apply(service("e2e-terminated", addresses))
    wait_for_announced(lab, dict.fromkeys(addresses, BOTH))
    assert_steady(lab, dict.fromkeys(addresses, BOTH), 0.5)
    node_a_peers = [NODE_ADDRESS[family][NODE_A] for family in FAMILIES]
    node_b_peers = [NODE_ADDRESS[family][NODE_B] for family in FAMILIES]
    hold_time = min(int(info["bgpTimerHoldTimeMsecs"]) for info in lab.frr().neighbors().values()) / 1000
    sessions, received = connections_established(lab), FrrReceived.from_now(lab)

    started = time.monotonic()
    lab.signal_exabgp(NODE_B, signal.SIGTERM)
    wait_for_announced(lab, dict.fromkeys(addresses, ONLY_A), timeout=hold_time / 3)
    print(f"node-b's paths gone {time.monotonic() - started:.1f} s after SIGTERM (hold time {hold_time:.0f} s)")
    assert lab.wait_exabgp_exit(NODE_B, timeout=10.0), "ExaBGP did not exit on SIGTERM"
    states = lab.sessions()
    assert [states[peer] for peer in node_a_peers] == ["Established", "Established"]
    assert [states[peer] for peer in node_b_peers] != ["Established", "Established"]
    assert [update for update in received.updates() if update[0] in node_a_peers] == []
    assert connections_established(lab) == sessions

    lab.start_exabgp(NODE_B)
    wait_sessions_reestablished(lab, sessions, node_b_peers)
    wait_for_announced(lab, dict.fromkeys(addresses, BOTH))
    assert_steady(lab, dict.fromkeys(addresses, BOTH), 0.5)
    # The same log shows node-b's routes arriving again and nothing on node-a's sessions; node-b's withdrawals
    # at SIGTERM, if they beat the session's closing, are the only other entries.
    updates = received.updates()
    assert [update for update in updates if update[1] == "announce"] == expected_updates("announce", addresses, ONLY_B)
    assert {update for update in updates if update[1] == "withdraw"} <= set(
        expected_updates("withdraw", addresses, ONLY_B)
    )
