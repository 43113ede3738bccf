"""End to end against FRR: no endpoint anywhere (issue #11 item 2) and aggregation by prefix length (item 4)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from lab.frr import FAMILIES, Family
from lab.lab import REPOSITORY, Lab
from tests import test_e2e
from tests.factories import endpoint, endpoint_slice, service
from tests.lab_support import LabKeeper, Rib, wait_for_rib_equal
from tests.test_e2e import ARRIVAL, BOTH, NODE_A, NODE_ADDRESS, Cluster, FrrReceived

pytestmark = pytest.mark.lab
# The end-to-end module's fixture (FRR empty at the start, the test's objects deleted and FRR empty at the end),
# here over this module's lab.
cluster = test_e2e.cluster

FEATURES_CONFIG = REPOSITORY / "lab" / "files" / "announcer-features.yaml"
REQUIRE = "bgp.announcer.io/require-endpoints"

# Expected routes: prefix -> the nodes that announce it.
Routes = Mapping[str, tuple[str, ...]]


@pytest.fixture
def lab(lab_keeper: LabKeeper) -> Lab:
    """The lab with the real announcer configured by lab/files/announcer-features.yaml."""
    return lab_keeper.get(config_path=FEATURES_CONFIG)


def expected(routes: Routes, family: Family) -> Rib:
    rib: Rib = {}
    for prefix, nodes in routes.items():
        if (":" in prefix) != (family == "ipv6"):
            continue
        for node in nodes:
            peer = NODE_ADDRESS[family][node]
            rib.setdefault(peer, {})[prefix] = [peer]
    return rib


def wait_for_routes(lab: Lab, routes: Routes) -> None:
    """Until FRR holds exactly these prefixes, per neighbour, in both families."""
    for family in FAMILIES:
        wait_for_rib_equal(lab, family, expected(routes, family), timeout=ARRIVAL)


def test_the_last_ready_ipv6_endpoint_leaving_withdraws_the_ipv6_routes_on_every_node_and_not_the_ipv4_ones(
    lab: Lab, cluster: Cluster
) -> None:
    """A dual-stack Cluster-policy LoadBalancer Service with announce.require_endpoints: its IPv6 endpoint (on
    node-b) stops being ready or serving, so both nodes withdraw the IPv6 cluster-IP aggregate and the IPv6
    load-balancer /128; FRR receives nothing for IPv4; the endpoint coming back announces them again; the
    require-endpoints annotation 'false' announces without any endpoint."""
    name = "e2e-anycast"
    cluster.apply(
        service(name, ["198.51.100.1", "2001:db8:96::1"], service_type="LoadBalancer",
                ingress=[{"ip": "198.51.100.130"}, {"ip": "2001:db8:1b::1"}]),
        endpoint_slice(name, "IPv4", [endpoint(NODE_A, "203.0.113.50")]),
        endpoint_slice(name, "IPv6", [endpoint("node-b", "2001:db8:5::50")]),
    )  # fmt: skip
    ipv4 = {"198.51.100.0/24": BOTH, "198.51.100.130/32": BOTH}
    ipv6 = {"2001:db8:96::/120": BOTH, "2001:db8:1b::1/128": BOTH}
    wait_for_routes(lab, {**ipv4, **ipv6})

    received = FrrReceived.from_now(lab)
    cluster.apply(
        endpoint_slice(name, "IPv6", [endpoint("node-b", "2001:db8:5::50", ready=False, serving=False,
                                               terminating=True)])
    )  # fmt: skip
    wait_for_routes(lab, ipv4)
    updates = received.updates()
    assert [update for update in updates if ":" not in update[2]] == [], "IPv4 routes were touched"
    assert {(peer, action) for peer, action, _ in updates} == {
        (NODE_ADDRESS["ipv6"][node], "withdraw") for node in BOTH
    }

    cluster.apply(endpoint_slice(name, "IPv6", [endpoint("node-b", "2001:db8:5::50")]))
    wait_for_routes(lab, {**ipv4, **ipv6})

    cluster.delete("EndpointSlice", f"{name}-ipv4")
    cluster.delete("EndpointSlice", f"{name}-ipv6")
    wait_for_routes(lab, {})
    cluster.apply(
        service(name, ["198.51.100.1", "2001:db8:96::1"], service_type="LoadBalancer",
                ingress=[{"ip": "198.51.100.130"}, {"ip": "2001:db8:1b::1"}], annotations={REQUIRE: "false"})
    )  # fmt: skip
    wait_for_routes(lab, {**ipv4, **ipv6})


def test_two_services_in_one_aggregate_give_one_prefix_that_leaves_only_after_both_are_deleted(
    lab: Lab, cluster: Cluster
) -> None:
    """Cluster IPs aggregated at /24 and /120, external IPs at /28 and /124: two dual-stack Services give FRR one
    aggregate per family from each node; a Local-policy external IP stays a host route from the node with its
    endpoint; deleting the first Service changes nothing in FRR, deleting the second withdraws the aggregates."""
    no_requirement = {REQUIRE: "false"}
    cluster.apply(
        service("e2e-agg-a", ["198.51.100.10", "2001:db8:96::a"], external_ips=["198.51.100.70", "2001:db8:e::7"],
                annotations=no_requirement),
        service("e2e-agg-b", ["198.51.100.20", "2001:db8:96::b"], external_ips=["198.51.100.75", "2001:db8:e::8"],
                annotations=no_requirement),
        service("e2e-agg-local", ["2001:db8:96::c"], service_type="NodePort", external_traffic_policy="Local",
                external_ips=["2001:db8:e::99"]),
        endpoint_slice("e2e-agg-local", "IPv6", [endpoint(NODE_A, "2001:db8:5::60")]),
    )  # fmt: skip
    aggregates = {
        "198.51.100.0/24": BOTH,
        "198.51.100.64/28": BOTH,
        "2001:db8:96::/120": BOTH,
        "2001:db8:e::/124": BOTH,
    }
    local = {"2001:db8:96::c/128": (NODE_A,), "2001:db8:e::99/128": (NODE_A,)}
    wait_for_routes(lab, {**aggregates, **local})

    received = FrrReceived.from_now(lab)
    cluster.delete("Service", "e2e-agg-a")
    cluster.delete("Service", "e2e-agg-local")
    wait_for_routes(lab, aggregates)
    assert {prefix for _, _, prefix in received.updates()} == set(local), "an aggregate moved with one Service"

    cluster.delete("Service", "e2e-agg-b")
    wait_for_routes(lab, {})
