"""The route decision: which prefixes a node announces for a Service, and the reason for every other address."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from announcer.config import Config
from announcer.convert import service_view, slice_view
from announcer.desired import DesiredTable, decide
from announcer.model import Attributes, SliceView
from tests.conftest import make_config
from tests.factories import endpoint, endpoint_slice, service

PREFIX = "bgp.announcer.io/"


@dataclass
class Case:
    service: dict[str, Any]
    slices: list[dict[str, Any]] = field(default_factory=list)
    wanted: set[str] = field(default_factory=set)
    not_wanted: set[tuple[str, str]] = field(default_factory=set)
    config: dict[str, Any] = field(default_factory=dict)


def evaluate(case: Case, node: str = "node-a") -> tuple[set[str], set[tuple[str, str]]]:
    config = make_config(**case.config)
    view, _ = service_view(case.service, PREFIX)
    slices = [slice_view(obj)[0] for obj in case.slices]
    families = frozenset(s.family for s in slices if isinstance(s, SliceView) and s.family and node in s.serving_nodes)
    decision = decide(view, families, config.policy())
    return (
        {str(wanted.prefix) for wanted in decision.wanted},
        {(str(item.address) if item.address else "-", item.reason_text) for item in decision.not_wanted},
    )


V4_READY_HERE = endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.50")])
V6_READY_HERE = endpoint_slice("web", "IPv6", [endpoint("node-a", "2001:db8:5::50")])

CASES = {
    "an IPv4 single-stack Service announces its /32": Case(
        service("web", ["198.51.100.10"]), wanted={"198.51.100.10/32"}
    ),
    "an IPv6 single-stack Service announces its /128": Case(
        service("web", ["2001:db8:96::a"]), wanted={"2001:db8:96::a/128"}
    ),
    "a RequireDualStack Service announces both addresses, not only spec.clusterIP": Case(
        service("web", ["198.51.100.10", "2001:db8:96::a"]), wanted={"198.51.100.10/32", "2001:db8:96::a/128"}
    ),
    "an IPv6-primary dual-stack Service announces both addresses": Case(
        service("web", ["2001:db8:96::a", "198.51.100.10"]), wanted={"198.51.100.10/32", "2001:db8:96::a/128"}
    ),
    "a PreferDualStack Service with one IP on a single-stack cluster announces that one": Case(
        service("web", ["198.51.100.10"], policy="PreferDualStack"), wanted={"198.51.100.10/32"}
    ),
    "a PreferDualStack Service with two IPs announces both": Case(
        service("web", ["198.51.100.10", "2001:db8:96::a"], policy="PreferDualStack"),
        wanted={"198.51.100.10/32", "2001:db8:96::a/128"},
    ),
    "a headless Service announces nothing": Case(service("web", ["None"]), not_wanted={("-", "headless")}),
    "an ExternalName Service announces nothing": Case(
        service("web", service_type="ExternalName"), not_wanted={("-", "externalName")}
    ),
    "Local policy with ready endpoints in both families here announces both": Case(
        service("web", ["198.51.100.10", "2001:db8:96::a"], service_type="NodePort", external_traffic_policy="Local"),
        [V4_READY_HERE, V6_READY_HERE],
        wanted={"198.51.100.10/32", "2001:db8:96::a/128"},
    ),
    "Local policy with a local endpoint in IPv4 only withdraws the IPv6 /128 (decided per family)": Case(
        service("web", ["198.51.100.10", "2001:db8:96::a"], service_type="NodePort", external_traffic_policy="Local"),
        [V4_READY_HERE, endpoint_slice("web", "IPv6", [endpoint("node-b", "2001:db8:5::51")])],
        wanted={"198.51.100.10/32"},
        not_wanted={("2001:db8:96::a", "noLocalEndpoint(IPv6)")},
    ),
    "Local policy with endpoints only on another node announces nothing here": Case(
        service("web", ["198.51.100.10"], service_type="NodePort", external_traffic_policy="Local"),
        [endpoint_slice("web", "IPv4", [endpoint("node-b", "192.0.2.51")])],
        not_wanted={("198.51.100.10", "noLocalEndpoint(IPv4)")},
    ),
    "Local policy with a not-ready local endpoint announces nothing": Case(
        service("web", ["198.51.100.10"], service_type="NodePort", external_traffic_policy="Local"),
        [endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.50", ready=False, serving=False)])],
        not_wanted={("198.51.100.10", "noLocalEndpoint(IPv4)")},
    ),
    "Local policy with a terminating endpoint that still serves keeps announcing": Case(
        service("web", ["198.51.100.10"], service_type="NodePort", external_traffic_policy="Local"),
        [
            endpoint_slice(
                "web", "IPv4", [endpoint("node-a", "192.0.2.50", ready=False, serving=True, terminating=True)]
            )
        ],
        wanted={"198.51.100.10/32"},
    ),
    "Local policy with a terminating endpoint that stopped serving withdraws": Case(
        service("web", ["198.51.100.10"], service_type="NodePort", external_traffic_policy="Local"),
        [
            endpoint_slice(
                "web", "IPv4", [endpoint("node-a", "192.0.2.50", ready=False, serving=False, terminating=True)]
            )
        ],
        not_wanted={("198.51.100.10", "noLocalEndpoint(IPv4)")},
    ),
    "Local policy with an endpoint whose conditions are unset counts it as ready": Case(
        service("web", ["198.51.100.10"], service_type="NodePort", external_traffic_policy="Local"),
        [endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.50", ready=None)])],
        wanted={"198.51.100.10/32"},
    ),
    "internalTrafficPolicy Local does not gate cluster IPs under the default (external) setting": Case(
        service("web", ["198.51.100.10"], internal_traffic_policy="Local"), wanted={"198.51.100.10/32"}
    ),
    "internalTrafficPolicy Local gates cluster IPs when the setting is internal": Case(
        service("web", ["198.51.100.10"], internal_traffic_policy="Local"),
        not_wanted={("198.51.100.10", "noLocalEndpoint(IPv4)")},
        config={"announce": {"cluster_ip_traffic_policy": "internal"}},
    ),
    "externalTrafficPolicy Local does not gate cluster IPs when the setting is internal": Case(
        service("web", ["198.51.100.10"], service_type="NodePort", external_traffic_policy="Local"),
        wanted={"198.51.100.10/32"},
        config={"announce": {"cluster_ip_traffic_policy": "internal"}},
    ),
    "externalIPs inside the allowlist are announced, outside are refused (CVE-2020-8554)": Case(
        service("web", ["198.51.100.10"], external_ips=["198.51.100.70", "203.0.113.9", "2001:db8:e::7"]),
        wanted={"198.51.100.10/32", "198.51.100.70/32", "2001:db8:e::7/128"},
        not_wanted={("203.0.113.9", "outsideAllowlist")},
    ),
    "an empty allowlist announces no externalIP": Case(
        service("web", ["198.51.100.10"], external_ips=["198.51.100.70"]),
        wanted={"198.51.100.10/32"},
        not_wanted={("198.51.100.70", "outsideAllowlist")},
        config={"announce": {"external_ips": {"enabled": True, "allowlist": []}}},
    ),
    "a disabled kind announces none of its addresses": Case(
        service("web", ["198.51.100.10"], external_ips=["198.51.100.70"]),
        wanted={"198.51.100.10/32"},
        not_wanted={("198.51.100.70", "kindDisabled")},
        config={"announce": {"external_ips": {"enabled": False, "allowlist": ["198.51.100.64/26"]}}},
    ),
    "load-balancer ingress IPs are announced, except ipMode Proxy": Case(
        service(
            "web",
            ["198.51.100.10"],
            service_type="LoadBalancer",
            ingress=[{"ip": "198.51.100.130"}, {"ip": "198.51.100.131", "ipMode": "Proxy"}, {"hostname": "lb.x"}],
        ),
        wanted={"198.51.100.10/32", "198.51.100.130/32"},
    ),
    "Local policy gates load-balancer IPs per family too": Case(
        service(
            "web",
            ["198.51.100.10", "2001:db8:96::a"],
            service_type="LoadBalancer",
            external_traffic_policy="Local",
            ingress=[{"ip": "198.51.100.130"}, {"ip": "2001:db8:1b::1"}],
        ),
        [V6_READY_HERE],
        wanted={"2001:db8:96::a/128", "2001:db8:1b::1/128"},
        not_wanted={("198.51.100.10", "noLocalEndpoint(IPv4)"), ("198.51.100.130", "noLocalEndpoint(IPv4)")},
    ),
    "the opt-out annotation announces nothing of that Service": Case(
        service("web", ["198.51.100.10"], annotations={PREFIX + "opt-out": "true"}),
        not_wanted={("198.51.100.10", "optedOut")},
    ),
    "a family without peers is not announced, with the reason": Case(
        service("web", ["198.51.100.10", "2001:db8:96::a"]),
        wanted={"198.51.100.10/32"},
        not_wanted={("2001:db8:96::a", "noPeerForFamily")},
        config={
            "bgp": {"local_as": 64513, "router_id": "192.0.2.11", "peers": [{"address": "192.0.2.1", "peer_as": 1}]}
        },
    ),
    "an invalid cluster IP is skipped and the valid one still announced": Case(
        service("web", ["198.51.100.10", "2001:db8:96::a"])
        | {"spec": {"clusterIPs": ["198.51.100.10", "fe80::1%eth0"], "type": "ClusterIP"}},
        wanted={"198.51.100.10/32"},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decision(case: Case) -> None:
    wanted, not_wanted = evaluate(case)
    assert wanted == case.wanted
    assert not_wanted == case.not_wanted


def test_spec_cluster_ip_alone_is_used_when_cluster_ips_is_missing() -> None:
    """Old objects carry only spec.clusterIP; it is still announced."""
    obj = service("web", ["198.51.100.10"])
    del obj["spec"]["clusterIPs"]
    assert evaluate(Case(obj)) == ({"198.51.100.10/32"}, set())


def test_attributes_come_from_the_kind_over_the_defaults_then_from_annotations() -> None:
    """Per-kind settings override defaults; valid annotations the admin allows override both; invalid ones are
    ignored."""
    config = make_config(
        attributes={
            "default": {"communities": ["64513:1"], "med": 5},
            "load_balancer_ip": {"communities": ["64513:2"], "local_preference": 300},
        },
        annotations={"med": {"enabled": True}, "large_communities": {"enabled": True, "allowlist": ["64513:*:*"]}},
    )
    obj = service(
        "web",
        ["198.51.100.10"],
        service_type="LoadBalancer",
        ingress=[{"ip": "198.51.100.130"}],
        annotations={
            PREFIX + "med": "77",
            PREFIX + "large-communities": "64513:1:2 64513:1:1",
            PREFIX + "local-preference": "lots",
        },
    )
    view, problems = service_view(obj, PREFIX)
    decision = decide(view, frozenset(), config.policy())
    by_prefix = {str(wanted.prefix): wanted.attributes for wanted in decision.wanted}
    assert by_prefix["198.51.100.10/32"] == Attributes(((64513, 1),), ((64513, 1, 1), (64513, 1, 2)), None, 77)
    assert by_prefix["198.51.100.130/32"] == Attributes(((64513, 2),), ((64513, 1, 1), (64513, 1, 2)), 300, 77)
    assert [problem.field for problem in problems] == [f"metadata.annotations[{PREFIX}local-preference]"]


def table_with(config: Config, *objects: dict[str, Any], node: str = "node-a") -> DesiredTable:
    table = DesiredTable(node, config.policy())
    for obj in objects:
        if obj["kind"] == "Service":
            table.upsert_service(service_view(obj, PREFIX)[0])
        else:
            view = slice_view(obj)[0]
            assert view is not None
            table.upsert_slice(view)
    return table


def test_a_shared_external_ip_stays_wanted_while_any_service_wants_it() -> None:
    """Two Services with the same externalIP: deleting one keeps the prefix; deleting both drops it."""
    config = make_config()
    shared = "198.51.100.70"
    table = table_with(
        config,
        service("one", ["198.51.100.10"], external_ips=[shared]),
        service("two", ["198.51.100.11"], external_ips=[shared]),
    )
    prefix = next(p for p in table.all_prefixes() if str(p) == shared + "/32")
    table.take_dirty()
    table.delete_service(("default", "one"))
    assert table.best(prefix) is not None
    table.delete_service(("default", "two"))
    assert table.best(prefix) is None
    assert prefix in table.take_dirty()


def test_an_endpoint_moving_between_nodes_moves_the_route() -> None:
    """A slice update that moves the only endpoint away from this node makes its prefix unwanted."""
    config = make_config()
    web = service("web", ["198.51.100.10"], service_type="NodePort", external_traffic_policy="Local")
    table = table_with(config, web, endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.50")]))
    assert {str(p) for p in table.all_prefixes()} == {"198.51.100.10/32"}
    table.upsert_slice(slice_view(endpoint_slice("web", "IPv4", [endpoint("node-b", "192.0.2.50")]))[0])  # type: ignore[arg-type]
    assert set(table.all_prefixes()) == set()


def test_a_slice_arriving_before_its_service_counts_once_the_service_arrives() -> None:
    """Watch order between resources is not guaranteed: slices first must work."""
    config = make_config()
    table = table_with(
        config,
        endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.50")]),
        service("web", ["198.51.100.10"], service_type="NodePort", external_traffic_policy="Local"),
    )
    assert {str(p) for p in table.all_prefixes()} == {"198.51.100.10/32"}


def test_an_unchanged_relist_marks_nothing_dirty() -> None:
    """Replacing the Services with an identical list changes no claim (no flap after 410)."""
    config = make_config()
    objects = [service(f"s{i}", [f"198.51.100.{i}", f"2001:db8:96::{i:x}"]) for i in range(1, 20)]
    table = table_with(config, *objects)
    table.take_dirty()
    table.replace_services([service_view(obj, PREFIX)[0] for obj in objects])
    assert table.take_dirty() == set()
    table.replace_services([service_view(obj, PREFIX)[0] for obj in objects[1:]])
    assert {str(p) for p in table.take_dirty()} == {"198.51.100.1/32", "2001:db8:96::1/128"}


def test_service_cidr_aggregates_are_wanted_from_every_node_per_family_with_peers() -> None:
    """Calico's serviceClusterIPs: the aggregates are announced whatever the Services."""
    config = make_config(announce={"service_cidrs": ["198.51.100.0/26", "2001:db8:96::/112"]})
    table = DesiredTable("node-z", config.policy())
    assert {str(p) for p in table.all_prefixes()} == {"198.51.100.0/26", "2001:db8:96::/112"}


def test_a_cluster_ip_claim_decides_attributes_over_an_external_ip_claim() -> None:
    """When two kinds claim one prefix, the cluster IP's attributes win, whatever the names."""
    config = make_config(attributes={"cluster_ip": {"med": 1}, "external_ip": {"med": 2}})
    table = table_with(
        config,
        service("a", ["198.51.100.20"], external_ips=["198.51.100.70"]),
        service("b", ["198.51.100.70"]),
    )
    best = next(table.best(p) for p in table.all_prefixes() if str(p) == "198.51.100.70/32")
    assert best is not None
    assert best.attributes.med == 1


def test_claims_on_a_shared_prefix_follow_every_change_of_its_claimants() -> None:
    """One claimant, then two, then three, then back (updates and deletes in any order): the claimants and the
    deciding claim are always exactly what the Services say (a prefix held by one claimant is stored apart)."""
    config = make_config(attributes={"cluster_ip": {"med": 1}, "external_ip": {"med": 2}})
    shared = "198.51.100.70"
    table = table_with(config, service("b", ["198.51.100.11"], external_ips=[shared]))
    prefix = next(p for p in table.all_prefixes() if str(p) == shared + "/32")

    def state() -> tuple[set[tuple[str, str]], int | None]:
        best = table.best(prefix)
        return set(table.claimants(prefix)), None if best is None else best.attributes.med

    assert state() == ({("default", "b")}, 2)
    table.upsert_service(service_view(service("c", ["198.51.100.12"], external_ips=[shared]), PREFIX)[0])
    assert state() == ({("default", "b"), ("default", "c")}, 2)
    table.upsert_service(service_view(service("a", [shared]), PREFIX)[0])
    assert state() == ({("default", "a"), ("default", "b"), ("default", "c")}, 1)
    table.take_dirty()
    table.upsert_service(service_view(service("b", ["198.51.100.13"], external_ips=[shared]), PREFIX)[0])
    assert prefix in table.take_dirty()  # b's claim was replaced: the prefix is looked at again
    table.delete_service(("default", "c"))
    assert state() == ({("default", "a"), ("default", "b")}, 1)
    table.delete_service(("default", "a"))
    assert state() == ({("default", "b")}, 2)
    table.upsert_service(service_view(service("b", ["198.51.100.13"]), PREFIX)[0])  # b lets go of the address
    assert state() == (set(), None)
    assert prefix not in set(table.all_prefixes())
    table.upsert_service(service_view(service("c", ["198.51.100.12"], external_ips=[shared]), PREFIX)[0])
    assert state() == ({("default", "c")}, 2)
