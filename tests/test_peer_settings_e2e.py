"""End to end against FRR: a peer's own hold time and the address kinds it is sent (issue #19, item 4)."""

from __future__ import annotations

import pytest

from lab.frr import FAMILIES
from lab.lab import REPOSITORY, Lab
from tests import test_e2e
from tests.factories import service
from tests.lab_support import LabKeeper, wait_for_rib_equal
from tests.test_e2e import ARRIVAL, BOTH, NODE_ADDRESS, Cluster
from tests.test_features_e2e import expected

pytestmark = pytest.mark.lab
cluster = test_e2e.cluster

PEERS_CONFIG = REPOSITORY / "lab" / "files" / "announcer-peers.yaml"


@pytest.fixture
def lab(lab_keeper: LabKeeper) -> Lab:
    """The lab with the real announcer configured by lab/files/announcer-peers.yaml."""
    return lab_keeper.get(config_path=PEERS_CONFIG)


def test_the_ipv4_peer_gets_its_own_hold_time_and_no_load_balancer_ip_while_the_ipv6_peer_gets_both(
    lab: Lab, cluster: Cluster
) -> None:
    """FRR's neighbour JSON shows hold time 9 s (keepalive 3 s) on each node's IPv4 session and the common 30 s on
    the IPv6 ones; a dual-stack LoadBalancer Service reaches FRR's IPv4 table with its cluster IP only, its IPv6
    table with both addresses."""
    neighbours = lab.frr().neighbors()
    for node in BOTH:
        ipv4, ipv6 = neighbours[NODE_ADDRESS["ipv4"][node]], neighbours[NODE_ADDRESS["ipv6"][node]]
        assert (ipv4["bgpTimerHoldTimeMsecs"], ipv4["bgpTimerKeepAliveIntervalMsecs"]) == (9000, 3000), node
        assert ipv6["bgpTimerHoldTimeMsecs"] == 30000, node
    cluster.apply(
        service("e2e-lb", ["198.51.100.1", "2001:db8:96::1"], service_type="LoadBalancer",
                ingress=[{"ip": "198.51.100.130"}, {"ip": "2001:db8:1b::1"}]),
    )  # fmt: skip
    routes = {"198.51.100.1/32": BOTH, "2001:db8:96::1/128": BOTH, "2001:db8:1b::1/128": BOTH}
    for family in FAMILIES:
        wait_for_rib_equal(lab, family, expected(routes, family), timeout=ARRIVAL)
