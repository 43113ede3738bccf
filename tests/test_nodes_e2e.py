"""End to end, real FRR: node state withdraws exactly this node's paths; peers per node in a ToR-per-rack lab."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.fakeapi.nodes import edited, node_object
from lab.frr import FAMILIES, Family
from lab.lab import EXAMPLE_CONFIG, TEST_PREFIX, Lab, rack_tors
from tests.factories import service
from tests.lab_support import LabKeeper, require_lab_prerequisites, wait_for_rib

pytestmark = pytest.mark.lab

NODE_A, NODE_B = "node-a", "node-b"
ADDRESS: dict[Family, dict[str, str]] = {
    "ipv4": {NODE_A: "192.0.2.11", NODE_B: "192.0.2.12"},
    "ipv6": {NODE_A: "2001:db8::11", NODE_B: "2001:db8::12"},
}
WEB: dict[Family, str] = {"ipv4": "198.51.100.10/32", "ipv6": "2001:db8:96::a/128"}
ARRIVAL = 30.0
SESSIONS = 60.0
QUIET = 3.0  # after the change arrived: long enough for a stray UPDATE from the other node to show
ZONE = "topology.kubernetes.io/zone"
LOCAL_AS_KEY = "bgp.announcer.io/local-as"
WITHDRAW = "bgp.announcer.io/withdraw"


class NodesKeeper:
    """One lab of this module at a time (the lab addresses are one lab's), replaced when a test needs the other."""

    def __init__(self, session_keeper: LabKeeper, directory: Path) -> None:
        self.session_keeper = session_keeper
        self.directory = directory
        self.current: Lab | None = None
        self.kind = ""

    def get(self, kind: str) -> Lab:
        require_lab_prerequisites()
        if self.current is not None and self.kind == kind:
            self.current.wait_established(SESSIONS)
            return self.current
        self.close()
        self.session_keeper.close()
        config, seed = self.directory / f"{kind}.yaml", self.directory / f"{kind}-objects.yaml"
        nodes = [node_object(NODE_A), node_object(NODE_B)]
        document = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        tors = None
        if kind == "state":
            document["node_state"] = {
                "withdraw_on_label": True,
                "withdraw_when_cordoned": True,
                "withdraw_when_not_ready": True,
            }
        else:
            document["bgp"]["local_as_node_key"] = LOCAL_AS_KEY
            document["bgp"]["peers"] = [
                {"address": address, "peer_as": peer_as, "node_selector": {ZONE: rack}}
                for address, peer_as, rack in [("192.0.2.1", 64512, "rack1"), ("2001:db8::1", 64512, "rack1"),
                                               ("192.0.2.3", 64514, "rack2"), ("2001:db8::3", 64514, "rack2")]
            ]  # fmt: skip
            nodes = [
                node_object(NODE_A, labels={ZONE: "rack1"}),
                node_object(NODE_B, labels={ZONE: "rack2", LOCAL_AS_KEY: "64620"}),
            ]
            tors = rack_tors()
        config.write_text(yaml.safe_dump(document), encoding="utf-8")
        objects = [*nodes, service("web", ["198.51.100.10", "2001:db8:96::a"])]
        seed.write_text(yaml.safe_dump_all(objects), encoding="utf-8")
        lab = Lab(TEST_PREFIX, config_path=config, api_server=True, seed_path=seed, tors=tors)
        print(f"nodes lab {kind}: starting, run directory {lab.run_dir}", file=sys.stderr)
        lab.up(timeout=SESSIONS)
        self.current, self.kind = lab, kind
        return lab

    def close(self) -> None:
        lab, self.current, self.kind = self.current, None, ""
        if lab is not None:
            lab.down()


@pytest.fixture(scope="module")
def keeper(lab_keeper: LabKeeper, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodesKeeper]:
    keeper = NodesKeeper(lab_keeper, tmp_path_factory.mktemp("nodes-e2e"))
    try:
        yield keeper
    finally:
        keeper.close()


def prefixes_by_neighbour(lab: Lab, family: Family, tor: str | None = None) -> dict[str, set[str]]:
    return {peer: set(routes) for peer, routes in lab.rib(family, tor).items() if routes}


def updates_received(lab: Lab, tor: str | None = None) -> dict[str, int]:
    return {peer: int(info["messageStats"]["updatesRecv"]) for peer, info in lab.frr(tor).neighbors().items()}


def wait_prefixes(lab: Lab, family: Family, expected: dict[str, set[str]], tor: str | None = None) -> None:
    wanted = {peer: prefixes for peer, prefixes in expected.items() if prefixes}
    wait_for_rib(
        lab,
        family,
        lambda rib: {peer: set(routes) for peer, routes in rib.items() if routes} == wanted,
        timeout=ARRIVAL,
        what=f"exactly {wanted}",
    ) if tor is None else _wait_tor(lab, family, wanted, tor)


def _wait_tor(lab: Lab, family: Family, wanted: dict[str, set[str]], tor: str) -> None:
    deadline = time.monotonic() + ARRIVAL
    while (found := prefixes_by_neighbour(lab, family, tor)) != wanted:
        if time.monotonic() > deadline:
            pytest.fail(f"{tor} {family}: wanted {wanted}, FRR has {found}", pytrace=False)
        time.sleep(0.2)


def both_announce(lab: Lab) -> None:
    for family in FAMILIES:
        wait_prefixes(lab, family, {ADDRESS[family][name]: {WEB[family]} for name in (NODE_A, NODE_B)})


def only_b_announces(lab: Lab) -> None:
    for family in FAMILIES:
        wait_prefixes(lab, family, {ADDRESS[family][NODE_B]: {WEB[family]}})


def change_node_a(lab: Lab, **change: Any) -> None:
    current = lab.api.get("Node", "", NODE_A)
    assert current is not None, "the lab seeds node-a's Node"
    lab.api.apply(edited(current, **change))


@pytest.mark.parametrize(
    ("name", "withdraw", "restore"),
    [
        ("label", {"labels": {WITHDRAW: "true"}}, {"labels": {WITHDRAW: None}}),
        ("cordon", {"unschedulable": True}, {"unschedulable": False}),
        ("not ready", {"ready": "Unknown"}, {"ready": "True"}),
    ],
)
def test_node_state_withdraws_exactly_this_node_s_paths_and_announces_them_again(
    keeper: NodesKeeper, name: str, withdraw: dict[str, Any], restore: dict[str, Any]
) -> None:
    lab = keeper.get("state")
    both_announce(lab)
    before = updates_received(lab)
    change_node_a(lab, **withdraw)
    only_b_announces(lab)
    time.sleep(QUIET)
    after = updates_received(lab)
    for family in FAMILIES:
        node_b = ADDRESS[family][NODE_B]
        assert after[node_b] == before[node_b], f"{name}: node-b sent UPDATEs ({family}) for node-a's state"
        assert after[ADDRESS[family][NODE_A]] > before[ADDRESS[family][NODE_A]]
    change_node_a(lab, **restore)
    both_announce(lab)
    assert all(updates_received(lab)[ADDRESS[family][NODE_B]] == before[ADDRESS[family][NODE_B]] for family in FAMILIES)


def test_an_unrelated_change_of_the_node_sends_nothing(keeper: NodesKeeper) -> None:
    lab = keeper.get("state")
    both_announce(lab)
    before = updates_received(lab)
    change_node_a(lab, labels={"unrelated": "yes"})
    time.sleep(QUIET)
    assert updates_received(lab) == before
    both_announce(lab)


def test_each_rack_s_router_gets_only_its_own_node_s_paths_per_family(keeper: NodesKeeper) -> None:
    lab = keeper.get("racks")
    for family in FAMILIES:
        _wait_tor(lab, family, {ADDRESS[family][NODE_A]: {WEB[family]}}, "router")
        _wait_tor(lab, family, {ADDRESS[family][NODE_B]: {WEB[family]}}, "router2")
    states = {tor: lab.frr(tor).session_states() for tor in ("router", "router2")}
    assert set(states["router"]) == {ADDRESS[family][NODE_A] for family in FAMILIES}, "rack1 peers only node-a"
    assert set(states["router2"]) == {ADDRESS[family][NODE_B] for family in FAMILIES}, "rack2 peers only node-b"
    remote_as = {peer: info["remoteAs"] for peer, info in lab.frr("router2").neighbors().items()}
    assert remote_as == {ADDRESS[family][NODE_B]: 64620 for family in FAMILIES}, "node-b's AS from its label"
    conf_a = (lab.node(NODE_A).directory / "exabgp.conf").read_text(encoding="utf-8")
    assert "neighbor 192.0.2.3 " not in conf_a
    assert "local-as 64513;" in conf_a
