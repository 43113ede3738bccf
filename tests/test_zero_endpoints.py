"""No endpoint anywhere (issue #11 item 2): a Cluster-policy Service is withdrawn per family when opted in."""

from __future__ import annotations

from typing import Any

import pytest

from announcer.convert import ObjectKind, convert_object, service_view, slice_view
from announcer.desired import DesiredTable
from announcer.model import Kind, Reason, ServiceView, SliceView, parse_prefix
from announcer.render import build_table, rows
from tests.conftest import make_config
from tests.factories import endpoint, endpoint_slice, service

PREFIX = "bgp.announcer.io/"
DUAL = ["198.51.100.10", "2001:db8:96::a"]
V4, V6 = "198.51.100.10/32", "2001:db8:96::a/128"


def table(require: bool | None = True, **announce: Any) -> DesiredTable:
    announce = dict(announce)
    if require is not None:
        announce["require_endpoints"] = require
    return DesiredTable("node-a", make_config(announce=announce).policy())


def svc(name: str = "web", ips: list[str] | None = None, **kwargs: Any) -> ServiceView:
    view, problems = service_view(service(name, ips or DUAL, **kwargs), PREFIX)
    assert problems == []
    return view


def slc(address_type: str, endpoints: list[dict[str, Any]], name: str = "web", **kwargs: Any) -> SliceView:
    view, _ = slice_view(endpoint_slice(name, address_type, endpoints, **kwargs))
    assert view is not None
    return view


def announced(desired: DesiredTable) -> set[str]:
    return {str(prefix) for prefix in desired.all_prefixes()}


def reasons(desired: DesiredTable, key: tuple[str, str] = ("default", "web")) -> set[tuple[str, str]]:
    return {(str(item.address), item.reason_text) for item in desired.decisions[key].not_wanted}


def test_the_last_ready_ipv6_endpoint_going_withdraws_only_the_ipv6_address_and_coming_back_announces_it() -> None:
    desired = table()
    desired.upsert_service(svc())
    desired.upsert_slice(slc("IPv4", [endpoint("node-b", "192.0.2.50")]))
    desired.upsert_slice(slc("IPv6", [endpoint("node-b", "2001:db8:5::50")]))
    assert announced(desired) == {V4, V6}
    desired.take_dirty()

    desired.upsert_slice(slc("IPv6", [endpoint("node-b", "2001:db8:5::50", ready=False, serving=False)]))
    assert announced(desired) == {V4}
    assert parse_prefix(V6) in desired.take_dirty()
    assert reasons(desired) == {("2001:db8:96::a", "noEndpoint(IPv6)")}
    assert desired.not_wanted_counts[(Reason.NO_ENDPOINT, Kind.CLUSTER_IP)] == 1

    desired.upsert_slice(slc("IPv6", [endpoint("node-c", "2001:db8:5::51")]))
    assert announced(desired) == {V4, V6}
    assert desired.not_wanted_counts[(Reason.NO_ENDPOINT, Kind.CLUSTER_IP)] == 0


def test_a_terminating_endpoint_that_still_serves_counts_and_one_that_does_not_serve_does_not() -> None:
    desired = table()
    desired.upsert_service(svc(ips=["198.51.100.10"]))
    desired.upsert_slice(slc("IPv4", [endpoint("node-b", "192.0.2.50", ready=False, serving=True, terminating=True)]))
    assert announced(desired) == {V4}
    desired.upsert_slice(slc("IPv4", [endpoint("node-b", "192.0.2.50", ready=False, serving=False, terminating=True)]))
    assert announced(desired) == set()


def test_an_endpoint_without_a_node_name_counts_as_an_endpoint() -> None:
    """A Service without selector whose Endpoints are mirrored into a slice: its endpoints have no nodeName."""
    desired = table()
    desired.upsert_service(svc(ips=["198.51.100.10"]))
    desired.upsert_slice(slc("IPv4", [{"addresses": ["203.0.113.9"], "conditions": {"ready": True}}]))
    assert announced(desired) == {V4}
    desired.upsert_slice(slc("IPv4", [{"addresses": ["203.0.113.9"], "conditions": {"ready": False}}]))
    assert announced(desired) == set()


def test_a_service_without_any_slice_is_not_announced_and_deleting_the_last_slice_withdraws() -> None:
    desired = table()
    desired.upsert_service(svc())
    assert announced(desired) == set()
    assert reasons(desired) == {("198.51.100.10", "noEndpoint(IPv4)"), ("2001:db8:96::a", "noEndpoint(IPv6)")}
    desired.upsert_slice(
        slc(
            "IPv4",
            [endpoint("node-b", "192.0.2.50")],
            name="web",
        )
    )
    assert announced(desired) == {V4}
    desired.delete_slice(("default", "web-ipv4"))
    assert announced(desired) == set()


def test_off_by_default_a_service_without_endpoints_is_announced() -> None:
    desired = table(require=None)
    desired.upsert_service(svc())
    assert announced(desired) == {V4, V6}


@pytest.mark.parametrize(
    ("config", "annotation", "expected"),
    [
        (False, "true", set()),
        (True, "false", {V4, V6}),
        (True, "yes", set()),  # invalid: ignored, the configuration decides
        (False, "yes", {V4, V6}),
    ],
)
def test_the_annotation_overrides_the_configuration_per_service(
    config: bool, annotation: str, expected: set[str]
) -> None:
    desired = table(require=config)
    view, problems = service_view(service("web", DUAL, annotations={PREFIX + "require-endpoints": annotation}), PREFIX)
    assert bool(problems) == (annotation == "yes")
    if problems:
        assert problems[0].field == f"metadata.annotations[{PREFIX}require-endpoints]"
    desired.upsert_service(view)
    assert announced(desired) == expected


def test_local_policy_addresses_keep_their_own_reason_and_cluster_ips_of_a_local_service_are_gated_locally() -> None:
    desired = table(external_ips={"enabled": True, "allowlist": ["198.51.100.64/26"]})
    desired.upsert_service(svc(ips=["198.51.100.10"], service_type="NodePort", external_traffic_policy="Local"))
    assert reasons(desired) == {("198.51.100.10", "noLocalEndpoint(IPv4)")}


def test_external_and_load_balancer_ips_of_a_cluster_policy_service_follow_the_same_rule() -> None:
    desired = table()
    desired.upsert_service(
        svc(ips=["198.51.100.10"], service_type="LoadBalancer", external_ips=["198.51.100.70"],
            ingress=[{"ip": "198.51.100.130"}])
    )  # fmt: skip
    assert announced(desired) == set()
    assert {reason for _, reason in reasons(desired)} == {"noEndpoint(IPv4)"}
    assert len(reasons(desired)) == 3
    desired.upsert_slice(slc("IPv4", [endpoint("node-b", "192.0.2.50")]))
    assert announced(desired) == {V4, "198.51.100.70/32", "198.51.100.130/32"}


def test_one_service_event_reads_only_that_service_slices() -> None:
    """Per-event work is bounded by the object: the cluster-wide answer comes from the Service's own slices."""
    desired = table()
    for index in range(50):
        desired.upsert_slice(slc("IPv4", [endpoint("node-b", "192.0.2.50")], name=f"other{index}"))
    desired.upsert_service(svc())
    assert announced(desired) == set()
    assert desired.endpoint_families(("default", "web")) == (frozenset(), frozenset())


def test_render_shows_the_reason_per_family() -> None:
    config = make_config(announce={"require_endpoints": True})
    objects = [
        convert_object(ObjectKind.SERVICE, service("web", DUAL), PREFIX),
        convert_object(
            ObjectKind.ENDPOINT_SLICE, endpoint_slice("web", "IPv4", [endpoint("node-b", "192.0.2.5")]), PREFIX
        ),
    ]
    desired, _ = build_table(config, "node-a", objects)
    shown = {(row.address, row.announced, row.detail) for row in rows(config, desired)}
    assert ("198.51.100.10/32", True, "-") in shown
    assert ("2001:db8:96::a", False, "noEndpoint(IPv6)") in shown
