"""Aggregation by prefix length (issue #11 item 4): Cluster-policy addresses as reference-counted aggregates."""

from __future__ import annotations

from typing import Any

import pytest

from announcer.config import ConfigError
from announcer.convert import service_view, slice_view
from announcer.desired import DesiredTable
from announcer.model import Attributes, Kind, ServiceView, SliceView, parse_prefix
from tests.conftest import make_config
from tests.factories import endpoint, endpoint_slice, service

PREFIX = "bgp.announcer.io/"
AGGREGATION = {
    "cluster_ips": {"aggregation_length_ipv4": 24, "aggregation_length_ipv6": 120},
    "external_ips": {"aggregation_length_ipv4": 28, "aggregation_length_ipv6": 124},
    "load_balancer_ips": {"aggregation_length_ipv4": 27},
}
ALLOWLISTS = {
    "external_ips": {"enabled": True, "allowlist": ["198.51.100.64/26", "2001:db8:e::/64"]},
    "load_balancer_ips": {"enabled": True, "allowlist": ["198.51.100.128/26", "2001:db8:1b::/64"]},
}


def table(aggregation: dict[str, Any] | None = None, **sections: Any) -> DesiredTable:
    sections.setdefault("announce", {**ALLOWLISTS, "aggregation": AGGREGATION if aggregation is None else aggregation})
    return DesiredTable("node-a", make_config(**sections).policy())


def svc(name: str, ips: list[str], **kwargs: Any) -> ServiceView:
    view, problems = service_view(service(name, ips, **kwargs), PREFIX)
    assert problems == []
    return view


def slc(name: str, address_type: str, node: str, address: str) -> SliceView:
    view, _ = slice_view(endpoint_slice(name, address_type, [endpoint(node, address)]))
    assert view is not None
    return view


def announced(desired: DesiredTable) -> dict[str, Attributes | None]:
    return {str(prefix): desired.desired_attributes(prefix) for prefix in desired.all_prefixes()}


def test_two_services_in_one_aggregate_share_it_and_it_leaves_only_with_the_last() -> None:
    desired = table()
    desired.upsert_service(svc("a", ["198.51.100.10", "2001:db8:96::a"]))
    desired.upsert_service(svc("b", ["198.51.100.20", "2001:db8:96::b"]))
    assert set(announced(desired)) == {"198.51.100.0/24", "2001:db8:96::/120"}
    aggregate = parse_prefix("198.51.100.0/24")
    assert set(desired.claimants(aggregate)) == {("default", "a"), ("default", "b")}
    desired.take_dirty()

    desired.delete_service(("default", "a"))
    assert set(announced(desired)) == {"198.51.100.0/24", "2001:db8:96::/120"}
    desired.delete_service(("default", "b"))
    assert announced(desired) == {}
    assert aggregate in desired.take_dirty()


def test_local_policy_addresses_stay_host_routes_beside_the_aggregate() -> None:
    desired = table()
    desired.upsert_service(svc("cluster", ["198.51.100.10"]))
    desired.upsert_service(
        svc("local", ["198.51.100.11", "2001:db8:96::b"], service_type="NodePort", external_traffic_policy="Local")
    )
    desired.upsert_slice(slc("local", "IPv4", "node-a", "192.0.2.50"))
    desired.upsert_slice(slc("local", "IPv6", "node-a", "2001:db8:5::50"))
    assert set(announced(desired)) == {"198.51.100.0/24", "198.51.100.11/32", "2001:db8:96::b/128"}


def test_each_kind_and_family_has_its_own_length_and_an_unset_one_keeps_host_routes() -> None:
    desired = table()
    desired.upsert_service(
        svc("lb", ["198.51.100.10", "2001:db8:96::a"], service_type="LoadBalancer",
            external_ips=["198.51.100.70", "2001:db8:e::7"],
            ingress=[{"ip": "198.51.100.130"}, {"ip": "2001:db8:1b::1"}])
    )  # fmt: skip
    assert set(announced(desired)) == {
        "198.51.100.0/24",  # cluster IP /24
        "2001:db8:96::/120",
        "198.51.100.64/28",  # external IP /28
        "2001:db8:e::/124",
        "198.51.100.128/27",  # load-balancer IP /27
        "2001:db8:1b::1/128",  # load-balancer IPv6: no length set
    }


def test_an_aggregate_carries_the_kind_attributes_and_ignores_per_service_overrides() -> None:
    desired = table(attributes={"cluster_ip": {"communities": ["64513:1"]}})
    desired.upsert_service(svc("a", ["198.51.100.10"], annotations={PREFIX + "med": "5"}))
    desired.upsert_service(svc("b", ["198.51.100.20"], annotations={PREFIX + "med": "7"}))
    assert announced(desired) == {"198.51.100.0/24": Attributes(communities=((64513, 1),))}


def test_several_kinds_on_one_aggregate_take_the_first_ranked_kind_attributes() -> None:
    """Cluster IPs, then load-balancer IPs, then external IPs decide, whichever Service claims first."""
    same = {"aggregation_length_ipv4": 24}
    wide = {"enabled": True, "allowlist": ["198.51.100.0/24"]}
    desired = table(
        announce={
            "external_ips": wide,
            "load_balancer_ips": wide,
            "aggregation": {"cluster_ips": same, "external_ips": same, "load_balancer_ips": same},
        },
        attributes={"external_ip": {"med": 2}, "load_balancer_ip": {"med": 1}, "cluster_ip": {"med": 0}},
    )
    desired.upsert_service(svc("ext", ["2001:db8:96::a"], external_ips=["198.51.100.70"]))
    assert announced(desired)["198.51.100.0/24"] == Attributes(med=2)
    desired.upsert_service(
        svc("lb", ["2001:db8:96::b"], service_type="LoadBalancer", ingress=[{"ip": "198.51.100.130"}],
            external_ips=["198.51.100.71"])
    )  # fmt: skip
    assert announced(desired)["198.51.100.0/24"] == Attributes(med=1)
    desired.upsert_service(svc("cip", ["198.51.100.10"]))
    assert announced(desired)["198.51.100.0/24"] == Attributes(med=0)
    desired.delete_service(("default", "cip"))
    assert announced(desired)["198.51.100.0/24"] == Attributes(med=1)


def test_no_endpoint_anywhere_drops_the_service_claim_on_the_aggregate() -> None:
    desired = table(announce={**ALLOWLISTS, "aggregation": AGGREGATION, "require_endpoints": True})
    desired.upsert_service(svc("a", ["198.51.100.10"]))
    desired.upsert_slice(slc("a", "IPv4", "node-b", "192.0.2.50"))
    assert set(announced(desired)) == {"198.51.100.0/24"}
    desired.delete_slice(("default", "a-ipv4"))
    assert announced(desired) == {}


def test_a_cluster_ip_aggregate_equal_to_a_service_cidr_outlives_the_services() -> None:
    desired = table(
        announce={**ALLOWLISTS, "aggregation": AGGREGATION, "service_cidrs": ["198.51.100.0/24"]},
        attributes={"aggregate": {"med": 9}},
    )
    desired.upsert_service(svc("a", ["198.51.100.10"]))
    assert announced(desired)["198.51.100.0/24"] == Attributes()
    desired.delete_service(("default", "a"))
    assert announced(desired) == {"198.51.100.0/24": Attributes(med=9)}


def test_the_aggregate_kind_is_shown_by_render_with_the_service() -> None:
    desired = table()
    desired.upsert_service(svc("a", ["198.51.100.10"]))
    (wanted,) = desired.decisions[("default", "a")].wanted
    assert (str(wanted.prefix), wanted.kind) == ("198.51.100.0/24", Kind.CLUSTER_IP)


@pytest.mark.parametrize(
    ("aggregation", "message"),
    [
        ({"cluster_ips": {"aggregation_length_ipv4": 0}}, "announce.aggregation.cluster_ips.aggregation_length_ipv4"),
        ({"cluster_ips": {"aggregation_length_ipv4": 33}}, "announce.aggregation.cluster_ips.aggregation_length_ipv4"),
        ({"external_ips": {"aggregation_length_ipv6": 129}}, "announce.aggregation.external_ips.aggregation_length_ipv6"),
        ({"load_balancer_ips": {"aggregation_length_ipv6": -1}}, "aggregation.load_balancer_ips.aggregation_length_ipv6"),
        ({"external_ips": {"aggregation_length_ipv4": 24}},
         "announce.aggregation.external_ips.aggregation_length_ipv4: 24 is shorter than the allowlist entry "
         "198.51.100.64/26"),
        ({"load_balancer_ips": {"aggregation_length_ipv6": 48}},
         "announce.aggregation.load_balancer_ips.aggregation_length_ipv6: 48 is shorter than the allowlist entry "
         "2001:db8:1b::/64"),
        ({"cluster_ips": {"aggregation_length": 24}}, "announce.aggregation.cluster_ips.aggregation_length: unknown"),
    ],
)  # fmt: skip
def test_check_config_refuses_bad_lengths_naming_the_key(aggregation: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        make_config(announce={**ALLOWLISTS, "aggregation": aggregation})


def test_lengths_at_the_allowlist_entry_length_and_host_length_are_accepted() -> None:
    aggregation = {
        "external_ips": {"aggregation_length_ipv4": 26, "aggregation_length_ipv6": 64},
        "cluster_ips": {"aggregation_length_ipv4": 32, "aggregation_length_ipv6": 128},
    }
    desired = table(aggregation)
    desired.upsert_service(svc("a", ["198.51.100.10", "2001:db8:96::a"], external_ips=["198.51.100.70"]))
    assert set(announced(desired)) == {"198.51.100.10/32", "2001:db8:96::a/128", "198.51.100.64/26"}
