"""Hostile Services and annotations never produce a malformed or extra command, nor stop the decision."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from announcer.convert import ObjectError, service_view, slice_view
from announcer.desired import DesiredTable
from announcer.model import Family
from announcer.reconcile import plan_changes, render_commands
from tests.conftest import make_config
from tests.factories import service

PREFIX = "bgp.announcer.io/"
CONFIG = make_config(
    announce={
        "external_ips": {"enabled": True, "allowlist": ["0.0.0.0/0", "::/0"]},
        "load_balancer_ips": {"enabled": True, "allowlist": ["0.0.0.0/0", "::/0"]},
    }
)
PEERS = {family: [peer.address for peer in CONFIG.bgp.peers_of(family)] for family in Family}
SELECTOR = {Family.IPV4: "neighbor 192.0.2.1 , neighbor 192.0.2.5", Family.IPV6: "neighbor 2001:db8::1"}
ATTRIBUTES = (
    r"next-hop self( community \[\d{1,5}:\d{1,5}( \d{1,5}:\d{1,5})*\])?"
    r"( large-community \[\d{1,10}:\d{1,10}:\d{1,10}( \d{1,10}:\d{1,10}:\d{1,10})*\])?"
    r"( local-preference \d{1,10})?( med \d{1,10})?"
)
LINE = re.compile(
    rf"^(?P<selector>neighbor [0-9a-f.:]+( , neighbor [0-9a-f.:]+)*) (?P<action>announce|withdraw) "
    rf"(route (?P<one>[0-9a-f.:]+/\d+) {ATTRIBUTES}|attributes {ATTRIBUTES} nlri (?P<many>[0-9a-f.:/ ]+))$"
)

HOSTILE_TEXT = [
    "shutdown", "\nshutdown", "1\nneighbor 192.0.2.1 withdraw route 0.0.0.0/0", "65000:1 shutdown", "65000:1;shutdown",
    "65000:1\r\nshutdown", "999999999999999999999", "-1", "1e3", "0x10", "１２３", "65000:1,65000:２", "",
    " ", "no-export", "65535:65535", "4294967295:1:1", "4294967296:1:1", "65000:1 " * 70, "true", "True", "yes",
    "\x00", "ünïcödé", "{\"a\": 1}", "[65000:1]", "65000:1]", "med 5",
]  # fmt: skip
HOSTILE_ADDRESSES = [
    "0.0.0.0", "::", "127.0.0.1", "::1", "169.254.1.1", "fe80::1", "fe80::1%eth0", "224.0.0.1", "ff02::1",
    "255.255.255.255", "240.0.0.1", "::ffff:198.51.100.1", "198.51.100.1\nshutdown", "198.51.100.1 shutdown",
    "198.51.100.01", "198.51.100", "2001:db8::1/64", "None", "", " 198.51.100.1", "2001:db8:96::a", "198.51.100.10",
    "１９８.51.100.1", "2001:db8::g", "1.2.3.4.5",
]  # fmt: skip

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
    st.sampled_from(HOSTILE_TEXT), st.sampled_from(HOSTILE_ADDRESSES),
)  # fmt: skip
json_values = st.one_of(
    json_scalars,
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.sampled_from(["ip", "ipMode", "ready", "nodeName", "x"]), json_scalars, max_size=2),
)
addresses = st.one_of(st.sampled_from(HOSTILE_ADDRESSES), st.ip_addresses().map(str), json_scalars)
annotation_values = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40), json_scalars)
annotation_maps = st.dictionaries(
    st.sampled_from(
        [PREFIX + key for key in ("opt-out", "communities", "large-communities", "local-preference", "med")]
    ),
    annotation_values,
)


@st.composite
def hostile_services(draw: st.DrawFn) -> dict[str, Any]:
    obj = service(draw(st.sampled_from(["web", "db"])), ["198.51.100.10", "2001:db8:96::a"])
    spec = obj["spec"]
    spec["clusterIPs"] = draw(st.one_of(st.lists(addresses, max_size=4), json_values))
    spec["clusterIP"] = draw(addresses)
    spec["externalIPs"] = draw(st.one_of(st.lists(addresses, max_size=4), json_values))
    spec["type"] = draw(
        st.one_of(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]), json_values)
    )
    spec["externalTrafficPolicy"] = draw(st.one_of(st.sampled_from(["Local", "Cluster"]), json_values))
    obj["metadata"]["annotations"] = draw(st.one_of(annotation_maps, json_values))
    ingress = st.lists(st.fixed_dictionaries({"ip": addresses}, optional={"ipMode": json_values}), max_size=3)
    obj["status"] = {"loadBalancer": {"ingress": draw(st.one_of(ingress, json_values))}}
    if draw(st.booleans()):
        obj["spec"] = draw(json_values)
    return obj


def check_lines(lines: list[str]) -> None:
    for line in lines:
        assert line.isascii() and line.isprintable(), line
        match = LINE.fullmatch(line)
        assert match is not None, f"malformed command: {line!r}"
        prefixes = [match["one"]] if match["one"] else match["many"].split()
        for text in prefixes:
            prefix = ipaddress.ip_network(text)
            family = Family.IPV4 if prefix.version == 4 else Family.IPV6
            assert match["selector"] == SELECTOR[family]
            assert prefix.prefixlen == prefix.max_prefixlen
            assert str(prefix) == text


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_services(), min_size=1, max_size=2))
def test_hostile_services_yield_only_well_formed_commands(objects: list[dict[str, Any]]) -> None:
    """Whatever the Service says, each line has our grammar, one neighbour family, host prefixes only."""
    table = DesiredTable("node-a", CONFIG.policy())
    for obj in objects:
        try:
            view, problems = service_view(obj, PREFIX)
        except ObjectError:
            continue
        for problem in problems:
            assert "\n" not in str(problem) or "\\n" in repr(problem)
        table.upsert_service(view)
    plan = plan_changes(table.take_dirty(), table.desired_attributes, {})
    check_lines([command.line for command in render_commands(plan, PEERS, 3)])


# Endpoints as an API server (or an attacker writing one) may send them: well-formed ones for node-a and node-b
# with clear conditions, and hostile names, conditions and items mixed in.
CLEARLY_SERVING: tuple[dict[str, bool], ...] = (
    {},
    {"ready": True},
    {"ready": True, "serving": True},
    {"ready": False, "serving": True},
)
CLEARLY_NOT_SERVING: tuple[dict[str, bool], ...] = (
    {"ready": False, "serving": False},
    {"ready": False, "serving": False, "terminating": True},
)
KNOWN_NODES = ("node-a", "node-b")
ADDRESSES = st.just(["192.0.2.50"])
endpoint_items = st.one_of(
    st.fixed_dictionaries(
        {
            "addresses": ADDRESSES,
            "nodeName": st.sampled_from(KNOWN_NODES),
            "conditions": st.sampled_from(CLEARLY_SERVING + CLEARLY_NOT_SERVING),
        }
    ),
    st.fixed_dictionaries(
        {"addresses": ADDRESSES},
        optional={
            "nodeName": st.one_of(st.sampled_from(KNOWN_NODES), st.sampled_from(HOSTILE_TEXT), json_scalars),
            "conditions": st.one_of(st.sampled_from(CLEARLY_SERVING + CLEARLY_NOT_SERVING), json_values),
        },
    ),
    json_values,
)
endpoint_values = st.one_of(json_values, st.lists(endpoint_items, max_size=5))
RFC_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def _clearly(endpoint: object, node: str, wanted: tuple[dict[str, bool], ...]) -> bool:
    """Whether an endpoint item is for node with conditions among wanted (absent conditions: ready unset)."""
    if not isinstance(endpoint, dict) or endpoint.get("nodeName") != node:
        return False
    return endpoint.get("conditions", {}) in wanted


@settings(max_examples=3_000, deadline=None)
@given(endpoint_values)
@example([{"addresses": ["192.0.2.50"], "nodeName": "node-a", "conditions": {"ready": False, "serving": False}}])
@example([{"nodeName": "node-b"}, {"nodeName": "bad name\nshutdown"}, "x", {"nodeName": "node-a", "conditions": 1}])
def test_any_json_as_endpoints_is_read_with_only_real_serving_nodes_never_raising(value: Any) -> None:
    """The slice of a named Service is always read; its serving nodes are node names from its endpoints, never
    hostile text, with a node counted when one endpoint there is ready (or still serving) and not when none is."""
    obj: dict[str, Any] = {
        "metadata": {"namespace": "default", "name": "s", "labels": {"kubernetes.io/service-name": "web"}},
        "endpoints": value,
        "addressType": "IPv4",
    }
    view, problems = slice_view(obj)
    assert view is not None
    assert (view.service_name, view.family) == ("web", Family.IPV4)
    endpoints = value if isinstance(value, list) else []
    named = {endpoint.get("nodeName") for endpoint in endpoints if isinstance(endpoint, dict)}
    assert view.serving_nodes <= named
    assert all(isinstance(node, str) and RFC_1123_SUBDOMAIN.fullmatch(node) for node in view.serving_nodes)
    for node in KNOWN_NODES:
        mine = [endpoint for endpoint in endpoints if isinstance(endpoint, dict) and endpoint.get("nodeName") == node]
        if any(_clearly(endpoint, node, CLEARLY_SERVING) for endpoint in mine):
            assert node in view.serving_nodes
        if mine and all(_clearly(endpoint, node, CLEARLY_NOT_SERVING) for endpoint in mine):
            assert node not in view.serving_nodes
    if value and not isinstance(value, list):
        assert [problem.field for problem in problems] == ["endpoints"]
    for problem in problems:
        assert problem.obj == "EndpointSlice default/s"
        assert re.fullmatch(r"endpoints(\[\d+\](\.nodeName)?)?", problem.field), problem


@pytest.mark.parametrize("address", HOSTILE_ADDRESSES)
def test_each_hostile_address_is_refused_or_canonical(address: str) -> None:
    """Zone indexes, mapped, loopback, link-local, multicast, unspecified, padded or non-ASCII: refused."""
    obj = service("web", ["198.51.100.10"], external_ips=[address])
    view, problems = service_view(obj, PREFIX)
    if view.external_ips:
        assert [str(ip) for ip in view.external_ips] == [address]
        assert address in ("2001:db8:96::a", "198.51.100.10")
    else:
        assert [problem.field for problem in problems] == ["spec.externalIPs[0]"]


def test_an_object_without_a_name_is_refused_naming_the_field() -> None:
    with pytest.raises(ObjectError, match=r"metadata\.name"):
        service_view({"metadata": {"namespace": "default", "name": "bad name\nshutdown"}}, PREFIX)
