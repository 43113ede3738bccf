"""End to end beside Calico: FRR (the ToR) learns the announcer's routes through each node's Calico 3.29 BIRD/BIRD6."""

from __future__ import annotations

import copy
import ipaddress
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.calico import CALICO_CONFIG, EXABGP_PROTOCOL, SERVICE_RANGES, TOR_PROTOCOL, CalicoLab
from lab.frr import FAMILIES, Family
from lab.lab import SAMPLES, TEST_PREFIX, load_objects
from tests.lab_support import BackgroundSampler, LabKeeper, Rib, require_lab_prerequisites, wait_for_rib_equal

pytestmark = pytest.mark.lab

NODE_A, NODE_B = "node-a", "node-b"
BOTH = (NODE_A, NODE_B)
NODE_ADDRESS: dict[Family, dict[str, str]] = {
    "ipv4": {NODE_A: "192.0.2.11", NODE_B: "192.0.2.12"},
    "ipv6": {NODE_A: "2001:db8::11", NODE_B: "2001:db8::12"},
}
# The sample Services (lab/files/samples.yaml) by name: every address the announcer announces for them.
SAMPLE_ADDRESSES = {
    "dual-required": ("198.51.100.10", "2001:db8:96::a"),  # RequireDualStack
    "dual-preferred": ("198.51.100.11", "2001:db8:96::b"),  # PreferDualStack
    "ipv4-only": ("198.51.100.12",),
    "ipv6-only": ("2001:db8:96::c",),
    "ipv6-primary": ("2001:db8:96::d", "198.51.100.13"),  # PreferDualStack, IPv6 first
    "external-ips": ("198.51.100.15", "2001:db8:96::f", "198.51.100.64", "2001:db8:e::64"),  # + externalIPs
    "web-local": ("198.51.100.14", "2001:db8:96::e", "198.51.100.128", "2001:db8:1b::1"),  # Local, LB IPs
}
# web-local (externalTrafficPolicy: Local) has its ready endpoints on node-a only, in both families.
LOCAL_ON_A = set(SAMPLE_ADDRESSES["web-local"])
# What Calico itself contributes: each node's confirmed IPAM block per family (bird*_aggr.cfg).
POD_BLOCKS: dict[Family, dict[str, str]] = {
    "ipv4": {NODE_A: "10.244.0.0/26", NODE_B: "10.244.0.64/26"},
    "ipv6": {NODE_A: "fd00:10:244::/122", NODE_B: "fd00:10:244::40/122"},
}
SESSIONS = 60.0
ARRIVAL = 30.0


def family_of(address: str) -> Family:
    return "ipv6" if ":" in address else "ipv4"


def host_prefix(address: str) -> str:
    return f"{address}/{128 if ':' in address else 32}"


def expected_rib(family: Family, announced: dict[str, tuple[str, ...]]) -> Rib:
    """FRR's RIB of one family: per node, its pod block and the host routes of the addresses it announces,
    each with next hop = the node's address of that family."""
    rib: Rib = {}
    for node in BOTH:
        peer = NODE_ADDRESS[family][node]
        routes = {POD_BLOCKS[family][node]: [peer]}
        routes |= {host_prefix(a): [peer] for a, nodes in announced.items() if family_of(a) == family and node in nodes}
        rib[peer] = routes
    return rib


def sample_announcements(local_nodes: dict[str, tuple[str, ...]] | None = None) -> dict[str, tuple[str, ...]]:
    """{address: nodes announcing it} for the samples; web-local's addresses from node-a unless told otherwise."""
    announced: dict[str, tuple[str, ...]] = {a: BOTH for addresses in SAMPLE_ADDRESSES.values() for a in addresses}
    for address in LOCAL_ON_A:
        announced[address] = (local_nodes or {}).get(address, (NODE_A,))
    return announced


def wait_for_samples(lab: CalicoLab, announced: dict[str, tuple[str, ...]], timeout: float = ARRIVAL) -> None:
    for family in FAMILIES:
        wait_for_rib_equal(lab, family, expected_rib(family, announced), timeout=timeout)


def updates_received(lab: CalicoLab) -> dict[str, int]:
    """UPDATE messages FRR has received per neighbour."""
    return {peer: int(info["messageStats"]["updatesRecv"]) for peer, info in lab.frr().neighbors().items()}


def connections(lab: CalicoLab) -> dict[str, int]:
    return {peer: int(info["connectionsEstablished"]) for peer, info in lab.frr().neighbors().items()}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {peer: after[peer] - before.get(peer, 0) for peer in sorted(after)}


def report(what: str, **numbers: Any) -> None:
    """Measured numbers on stderr (pytest -s shows them; -rA in the captured output)."""
    print(f"calico e2e: {what}: {json.dumps(numbers, sort_keys=True)}", file=sys.stderr)


class RibWatch(BackgroundSampler):
    """Samples FRR's table (every path, stale flag included) in a thread: the fewest routes seen per neighbour
    and family, and how many of them were ever marked stale (graceful restart)."""

    def __init__(self, lab: CalicoLab) -> None:
        super().__init__()
        self.lab = lab
        self.fewest: dict[str, int] = {}
        self.stale: dict[str, set[str]] = {}
        self.samples = 0
        self.peers = lab.peers()

    def take(self) -> None:
        counts = dict.fromkeys(self.peers, 0)
        for family in FAMILIES:
            document = self.lab.frr().vtysh_json(f"show bgp {family} unicast json")
            for prefix, paths in document.get("routes", {}).items():
                for path in paths:
                    peer = str(path.get("peerId", ""))
                    if path.get("valid"):
                        counts[peer] = counts.get(peer, 0) + 1
                    if path.get("stale"):
                        self.stale.setdefault(peer, set()).add(prefix)
        for peer, count in counts.items():
            self.fewest[peer] = min(self.fewest.get(peer, count), count)
        self.samples += 1


class CalicoKeeper:
    """One Calico-mode lab at a time for this module, replaced when a test needs another FRR or rendering."""

    def __init__(self, session_keeper: LabKeeper) -> None:
        self.session_keeper = session_keeper
        self.current: CalicoLab | None = None
        self.kind: tuple[bool, bool, str] | None = None
        self.started: float = time.monotonic()

    def get(self, *, add_path: bool, exclude_label: bool, kube: str = "stand-in") -> CalicoLab:
        require_lab_prerequisites()
        kind = (add_path, exclude_label, kube)
        if self.current is not None and self.kind == kind:
            self.heal(self.current)
            return self.current
        self.close()
        self.session_keeper.close()  # the lab addresses (and the machine-wide lock) are one lab's at a time
        lab = CalicoLab(TEST_PREFIX, seed_path=SAMPLES, add_path=add_path, exclude_label=exclude_label, kube=kube)
        lab.up(timeout=SESSIONS)
        print(f"calico lab add_path={add_path} exclude_label={exclude_label}: up, {lab.run_dir}", file=sys.stderr)
        self.current, self.kind = lab, kind
        return lab

    def heal(self, lab: CalicoLab) -> None:
        """Start whatever a test left stopped (ExaBGP, BIRD, BIRD6), then wait for every session."""
        for name in lab.nodes:
            if lab.exabgp_pid(name) is None:
                lab.stop_exabgp(name)
                lab.start_exabgp(name)
            for family in FAMILIES:
                if lab.bird_pid(name, family) is None:
                    lab.start_bird(name, family)
        lab.wait_established(SESSIONS)

    def close(self) -> None:
        lab, self.current, self.kind = self.current, None, None
        if lab is not None:
            lab.down()
            print(f"calico lab: down, timings {lab.timings}, logs in {lab.run_dir}", file=sys.stderr)


@pytest.fixture(scope="module")
def calico(lab_keeper: LabKeeper) -> Iterator[CalicoKeeper]:
    keeper = CalicoKeeper(lab_keeper)
    try:
        yield keeper
    finally:
        keeper.close()
        report("module", seconds=round(time.monotonic() - keeper.started, 1))


@pytest.fixture
def add_path_lab(calico: CalicoKeeper) -> CalicoLab:
    """FRR with ADD-PATH receive (its default), nodes with Calico's recorded renderings."""
    return calico.get(add_path=True, exclude_label=False)


# --- FRR with ADD-PATH, the recorded renderings ----------------------------------------------------------------


def test_sample_services_carry_the_addresses_this_module_expects() -> None:
    """Guards the expectations below against a change of lab/files/samples.yaml."""
    services = {obj["metadata"]["name"]: obj for obj in load_objects(SAMPLES) if obj["kind"] == "Service"}
    for name, addresses in SAMPLE_ADDRESSES.items():
        spec, status = services[name]["spec"], services[name].get("status", {})
        found = [*spec["clusterIPs"], *spec.get("externalIPs", [])]
        found += [ingress["ip"] for ingress in status.get("loadBalancer", {}).get("ingress", [])]
        assert sorted(found) == sorted(addresses), name
    assert services["web-local"]["spec"]["externalTrafficPolicy"] == "Local"


def test_every_cluster_ip_reaches_frr_through_bird_on_its_family_sessions_with_the_node_as_next_hop(
    add_path_lab: CalicoLab,
) -> None:
    """Every clusterIP (and external/LB IP) of every family policy reaches FRR from each node's BIRD (IPv4) or
    BIRD6 (IPv6) only, next hop the node's address of that family, beside Calico's pod blocks; no Calico
    aggregate or static service route; each session carries one family; FRR talks to BIRD, not ExaBGP."""
    lab = add_path_lab
    wait_for_samples(lab, sample_announcements())
    neighbors = lab.frr().neighbors()
    for family in FAMILIES:
        for node in BOTH:
            info = neighbors[NODE_ADDRESS[family][node]]
            assert set(info["addressFamilyInfo"]) == {f"{family}Unicast"}
            assert info["remoteRouterId"] == NODE_ADDRESS["ipv4"][node], "BIRD's router id is the node address"
            # BIRD's export towards the ToR: every service route comes from the ExaBGP session, none from static.
            exported = lab.birdc(node, family, "show", "route", "export", TOR_PROTOCOL[family])
            service_lines = [
                line for line in exported.splitlines() if "/" in line and not line.startswith(("10.", "fd00"))
            ]
            assert service_lines and all(f"[{EXABGP_PROTOCOL[family]} " in line for line in service_lines), exported
            assert "add-path-tx" in lab.birdc(node, family, "show", "protocols", "all", TOR_PROTOCOL[family])
        # Through BIRD the ToR sees Calico's AS in the path, as for Calico's own routes.
        address = SAMPLE_ADDRESSES["dual-required"][0 if family == "ipv4" else 1]
        paths = lab.frr().vtysh_json(f"show bgp {family} unicast {host_prefix(address)} json")["paths"]
        assert sorted(path["aspath"]["string"] for path in paths) == ["64513", "64513"]
    report("FRR view, ADD-PATH", **{family: lab.rib(family) for family in FAMILIES})


def test_node_kernels_hold_no_service_route_while_bird_holds_them(add_path_lab: CalicoLab) -> None:
    """`ip route` / `ip -6 route` in every table of each node namespace: no route inside any service range, while
    BIRD's own table holds the announcer's /32 and /128 and BIRD did program the node's pod block."""
    lab = add_path_lab
    wait_for_samples(lab, sample_announcements())
    for node in BOTH:
        for family in FAMILIES:
            routes = lab.kernel_routes(node, family)
            assert [route for route in routes if route.in_service_ranges()] == [], f"{node} {family}"
            assert any(r.destination == POD_BLOCKS[family][node] and r.protocol == "bird" for r in routes)
            in_bird = lab.birdc(node, family, "show", "route", "protocol", EXABGP_PROTOCOL[family])
            assert host_prefix(SAMPLE_ADDRESSES["dual-required"][0 if family == "ipv4" else 1]) in in_bird
        report(f"kernel routes {node}", **{f: len(lab.kernel_routes(node, f)) for f in FAMILIES})


def test_local_policy_with_add_path_sends_the_announcer_route_beside_calico_static_one(add_path_lab: CalicoLab) -> None:
    """node-a holds Calico's static /32 and /128 for web-local (preferred inside BIRD): with ADD-PATH BIRD still
    sends FRR the announcer's path; node-b (no ready endpoint) announces none of web-local's addresses."""
    lab = add_path_lab
    wait_for_samples(lab, sample_announcements())
    table = lab.birdc(NODE_A, "ipv4", "show", "route", "198.51.100.14/32")
    assert "static" in table.splitlines()[1], f"Calico's static route is BIRD's best: {table}"
    for family in FAMILIES:
        rib = lab.rib(family)
        for address in LOCAL_ON_A:
            if family_of(address) == family:
                assert host_prefix(address) in rib[NODE_ADDRESS[family][NODE_A]]
                assert host_prefix(address) not in rib[NODE_ADDRESS[family][NODE_B]]


def test_a_killed_announcer_changes_nothing_at_frr(add_path_lab: CalicoLab) -> None:
    """SIGKILL to node-a's announcer: ExaBGP respawns it, it reconciles with what ExaBGP holds; FRR receives no
    UPDATE on any session and no session resets."""
    lab = add_path_lab
    wait_for_samples(lab, sample_announcements())
    before, sessions = updates_received(lab), connections(lab)
    log = lab.node(NODE_A).exabgp_log
    offset = log.stat().st_size
    with RibWatch(lab) as watch:
        killed = lab.kill_announcer(NODE_A)
        assert lab.announcer_pid(NODE_A, timeout=10.0, other_than=killed) not in (None, killed)
        synced = "first sync: ExaBGP holds 16 prefixes; 0 to announce, 0 to withdraw"
        lab.wait_for(lambda _: synced in _read_from(log, offset), timeout=ARRIVAL)
        time.sleep(2.0)  # anything the new announcer sent would reach FRR well within this
    wait_for_samples(lab, sample_announcements())
    updates = delta(updates_received(lab), before)
    report("announcer killed on node-a", updates=updates, fewest=watch.fewest, samples=watch.samples)
    assert updates == dict.fromkeys(updates, 0)
    assert connections(lab) == sessions
    full = {peer: len(routes) for family in FAMILIES for peer, routes in lab.rib(family).items()}
    assert watch.fewest == full, "no route left FRR meanwhile"


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace")


def test_restarting_exabgp_withdraws_only_that_node_service_routes_then_resends_them(add_path_lab: CalicoLab) -> None:
    """ExaBGP stopped (SIGTERM) on node-a: BIRD loses the session and withdraws node-a's service routes at FRR;
    pod blocks and the BIRD-FRR sessions stay; node-b receives nothing; started again, everything is back."""
    lab = add_path_lab
    wait_for_samples(lab, sample_announcements())
    before, sessions = updates_received(lab), connections(lab)
    with RibWatch(lab) as watch:
        lab.stop_exabgp(NODE_A)
        started = time.monotonic()
        without_a = {a: tuple(n for n in nodes if n != NODE_A) for a, nodes in sample_announcements().items()}
        for family in FAMILIES:
            rib = expected_rib(family, without_a)
            wait_for_rib_equal(lab, family, rib, timeout=ARRIVAL)
        gone_after = time.monotonic() - started
        lab.start_exabgp(NODE_A)
        started = time.monotonic()
        wait_for_samples(lab, sample_announcements(), timeout=SESSIONS)
        back_after = time.monotonic() - started
    updates = delta(updates_received(lab), before)
    report("ExaBGP restarted on node-a", updates=updates, fewest=watch.fewest, withdrawn_after=round(gone_after, 1),
           back_after=round(back_after, 1), sessions=delta(connections(lab), sessions))  # fmt: skip
    assert connections(lab) == sessions, "the BIRD-FRR sessions stay up"
    for family in FAMILIES:
        assert watch.fewest[NODE_ADDRESS[family][NODE_A]] == 1, "only the pod block stays"
        assert updates[NODE_ADDRESS[family][NODE_B]] == 0
        assert updates[NODE_ADDRESS[family][NODE_A]] > 0


@pytest.mark.parametrize(
    ("family", "signum"),
    [("ipv4", signal.SIGKILL), ("ipv6", signal.SIGTERM)],
    ids=["bird-killed", "bird6-stopped"],
)
def test_restarting_bird_affects_only_its_family_on_that_node(
    add_path_lab: CalicoLab, family: Family, signum: int
) -> None:
    """BIRD (SIGKILL) or BIRD6 (SIGTERM) on node-a, then started again as calico-node does (`-R`). Killed, BIRD
    leaves no NOTIFICATION: FRR keeps node-a's routes of that family as stale (graceful restart) and nothing is
    withdrawn; stopped, BIRD closes its session and FRR drops them until it is back. The other family and node-b
    receive nothing."""
    lab = add_path_lab
    wait_for_samples(lab, sample_announcements())
    peer = NODE_ADDRESS[family][NODE_A]
    full = len(expected_rib(family, sample_announcements())[peer])
    before, sessions = updates_received(lab), connections(lab)
    with RibWatch(lab) as watch:
        lab.signal_bird(NODE_A, family, signum)
        time.sleep(2.0)
        lab.start_bird(NODE_A, family)
        started = time.monotonic()
        lab.wait_established(SESSIONS)
        wait_for_samples(lab, sample_announcements(), timeout=SESSIONS)
        time.sleep(1.0)
        back_after = time.monotonic() - started
    updates = delta(updates_received(lab), before)
    others = {p: n for p, n in updates.items() if p != peer}
    report(f"{'BIRD' if family == 'ipv4' else 'BIRD6'} {signal.Signals(signum).name} on node-a", updates=updates,
           fewest=watch.fewest, stale=len(watch.stale.get(peer, ())), back_after=round(back_after, 1),
           sessions=delta(connections(lab), sessions))  # fmt: skip
    assert others == dict.fromkeys(others, 0)
    assert connections(lab)[peer] == sessions[peer] + 1
    if signum == signal.SIGKILL:
        assert watch.fewest[peer] == full, "graceful restart: FRR keeps every route while BIRD restarts"
        assert len(watch.stale.get(peer, ())) == full
    else:
        assert watch.fewest[peer] == 0, "BIRD's orderly stop closes the session: FRR drops the routes"


def test_exabgp_restarted_with_graceful_restart_keeps_every_route_at_the_tor(add_path_lab: CalicoLab) -> None:
    """With bgp.graceful_restart on node-a, ExaBGP stopped (SIGTERM) closes its sessions without a NOTIFICATION:
    BIRD and BIRD6 keep the announcer's routes as stale and the ToR sees no withdraw; ExaBGP started again within
    the restart time, the announcer resyncs and sends End-of-RIB, and every route stays."""
    lab = add_path_lab
    document = yaml.safe_load(CALICO_CONFIG.read_text(encoding="utf-8"))
    document["bgp"]["graceful_restart"] = 30
    graceful = lab.run_dir / "announcer-graceful-restart.yaml"
    graceful.write_text(yaml.safe_dump(document), encoding="utf-8")
    original, lab.config_path = lab.config_path, graceful
    try:
        lab.restart_exabgp(NODE_A)  # graceful restart negotiated with node-a's BIRD and BIRD6 from here on
        lab.wait_established(SESSIONS)
        wait_for_samples(lab, sample_announcements())
        for family in FAMILIES:
            session = lab.birdc(NODE_A, family, "show", "protocols", "all", EXABGP_PROTOCOL[family])
            assert "restart-able" in session, session
        full = {peer: len(routes) for family in FAMILIES for peer, routes in lab.rib(family).items()}
        before, sessions = updates_received(lab), connections(lab)
        log = lab.node(NODE_A).exabgp_log
        with RibWatch(lab) as watch:
            lab.stop_exabgp(NODE_A)
            time.sleep(3.0)
            offset = log.stat().st_size
            lab.start_exabgp(NODE_A)
            started = time.monotonic()
            lab.wait_for(lambda _: "first sync:" in _read_from(log, offset), timeout=ARRIVAL)
            lab.wait_established(SESSIONS)
            back_after = time.monotonic() - started
            time.sleep(3.0)
        wait_for_samples(lab, sample_announcements())
        updates = delta(updates_received(lab), before)
        stale = {peer: len(prefixes) for peer, prefixes in watch.stale.items()}
        report("ExaBGP restarted with graceful restart on node-a", updates=updates, fewest=watch.fewest, stale=stale,
               back_after=round(back_after, 1))  # fmt: skip
        assert watch.fewest == full, "no route left the ToR"
        assert connections(lab) == sessions
        assert updates == dict.fromkeys(updates, 0), "BIRD refreshes identical routes silently: the ToR hears nothing"
    finally:
        lab.config_path = original
        lab.restart_exabgp(NODE_A)
        lab.wait_established(SESSIONS)


# --- FRR without ADD-PATH ------------------------------------------------------------------------------------


def test_without_add_path_calico_static_routes_shadow_the_announcer_on_unlabelled_nodes(calico: CalicoKeeper) -> None:
    """The pitfall the label fixes: FRR with disable-addpath-rx and the recorded (unlabelled) renderings; BIRD
    offers only its best route, Calico's static one, which tor-services rejects: node-a's web-local /32 and /128
    that Calico also has statics for never reach FRR."""
    lab = calico.get(add_path=False, exclude_label=False)
    shadowed = {"198.51.100.14", "198.51.100.128", "2001:db8:1b::1"}  # node-a's bird*_aggr.cfg statics
    announced = {a: (() if a in shadowed else nodes) for a, nodes in sample_announcements().items()}
    wait_for_samples(lab, announced)
    assert "add-path-tx" not in lab.birdc(NODE_A, "ipv4", "show", "protocols", "all", TOR_PROTOCOL["ipv4"])


@pytest.fixture
def labelled_lab(calico: CalicoKeeper) -> CalicoLab:
    """FRR with disable-addpath-rx, nodes labelled exclude-from-external-load-balancers (derived renderings)."""
    return calico.get(add_path=False, exclude_label=True)


def test_labelled_nodes_without_add_path_send_every_route(labelled_lab: CalicoLab) -> None:
    """With the label Calico writes no static service route: all routes arrive without ADD-PATH, and no node's
    kernel holds a service route (the reject CIDRs stay)."""
    lab = labelled_lab
    wait_for_samples(lab, sample_announcements())
    for node in BOTH:
        for family in FAMILIES:
            assert "add-path-tx" not in lab.birdc(node, family, "show", "protocols", "all", TOR_PROTOCOL[family])
            assert [route for route in lab.kernel_routes(node, family) if route.in_service_ranges()] == []
    report("FRR view, no ADD-PATH + label", **{family: lab.rib(family) for family in FAMILIES})


def test_local_policy_decides_per_family_and_node_without_add_path(labelled_lab: CalicoLab) -> None:
    """web-local's IPv6 endpoint moves to node-b (IPv4 stays on node-a): FRR then learns web-local's IPv6
    addresses only from node-b and its IPv4 ones only from node-a; moved back, back as before."""
    lab = labelled_lab
    wait_for_samples(lab, sample_announcements())
    slices = {obj["metadata"]["name"]: obj for obj in load_objects(SAMPLES) if obj["kind"] == "EndpointSlice"}
    original = slices["web-local-ipv6"]
    moved = copy.deepcopy(original)
    for endpoint in moved["endpoints"]:
        ready = endpoint["nodeName"] == NODE_B
        endpoint["conditions"] = {"ready": ready, "serving": ready, "terminating": False}
    lab.api.apply(moved)
    try:
        ipv6_on_b: dict[str, tuple[str, ...]] = {a: (NODE_B,) for a in LOCAL_ON_A if family_of(a) == "ipv6"}
        wait_for_samples(lab, sample_announcements(ipv6_on_b))
    finally:
        lab.api.apply(original)
    wait_for_samples(lab, sample_announcements())


def test_service_ranges_cover_the_sample_addresses() -> None:
    """The kernel check looks at the right ranges: every sample address lies in one of them."""
    for addresses in SAMPLE_ADDRESSES.values():
        for address in addresses:
            host = ipaddress.ip_network(host_prefix(address))
            assert any(r.version == host.version and host.subnet_of(r) for r in SERVICE_RANGES), address  # type: ignore[arg-type]


# --- the real API server -----------------------------------------------------------------------------------------


@pytest.mark.kube
def test_with_the_real_api_server_every_sample_reaches_frr_through_bird_and_local_follows_its_endpoint(
    calico: CalicoKeeper,
) -> None:
    """The Calico-mode lab on the real etcd and kube-apiserver, the announcers on deploy/base's ServiceAccount: every
    sample address (and the `kubernetes` Service's 198.51.100.1) reaches FRR through BIRD/BIRD6 with the node as
    next hop; moving web-local's IPv4 endpoint to node-b moves its IPv4 routes there."""
    lab = calico.get(add_path=True, exclude_label=False, kube="real")
    kubernetes_service = {"198.51.100.1": BOTH}
    wait_for_samples(lab, {**sample_announcements(), **kubernetes_service})
    slices = {obj["metadata"]["name"]: obj for obj in load_objects(SAMPLES) if obj["kind"] == "EndpointSlice"}
    moved = copy.deepcopy(slices["web-local-ipv4"])
    for item in moved["endpoints"]:
        item["nodeName"] = NODE_B
    lab.api.apply([moved])
    ipv4_local = [address for address in LOCAL_ON_A if "." in address]
    local_nodes: dict[str, tuple[str, ...]] = dict.fromkeys(ipv4_local, (NODE_B,))
    wait_for_samples(lab, {**sample_announcements(local_nodes), **kubernetes_service})
