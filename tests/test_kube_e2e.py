"""End to end against the real control plane: FRR, two nodes running ExaBGP and the announcer on deploy/base's
ServiceAccount, and Services whose addresses the real kube-apiserver allocates; FRR's RIB checked per neighbour."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from lab.controlplane import ControlPlane
from lab.frr import FAMILIES
from lab.lab import Lab
from tests.factories import endpoint, endpoint_slice, service
from tests.kube_support import allocated_service, create
from tests.lab_support import LabKeeper
from tests.test_e2e import (
    BOTH,
    NODE_A,
    NODE_ADDRESS,
    NODE_B,
    ONLY_A,
    ONLY_B,
    Announced,
    host_prefix,
    wait_for_announced,
)

pytestmark = [pytest.mark.lab, pytest.mark.kube]

NAMESPACE = "e2e"
# The `kubernetes` Service: the real API server gives it the first address of the IPv4 service range, and every
# node announces it like any other Cluster-policy Service.
KUBERNETES_SERVICE = "198.51.100.1"
SERVICES = f"/api/v1/namespaces/{NAMESPACE}/services"
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"


@pytest.fixture
def real_lab(lab_keeper: LabKeeper) -> Iterator[Lab]:
    """The lab on the real kube-apiserver (examples/announcer.yaml), namespace e2e emptied after the test, FRR
    back to the `kubernetes` Service's routes alone."""
    lab = lab_keeper.get(kube="real")
    plane: ControlPlane = lab.api
    wait_for_announced(lab, dict.fromkeys([KUBERNETES_SERVICE], BOTH))
    plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
    try:
        yield lab
    finally:
        # No namespace controller runs (no kube-controller-manager): the objects go one by one, the namespace stays.
        plane.kubectl("delete", "services,endpointslices", "--all", "-n", NAMESPACE, "--timeout=60s", check=False)
        wait_for_announced(lab, dict.fromkeys([KUBERNETES_SERVICE], BOTH))


def new_service(name: str, policy: str | None, families: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    return allocated_service(name, NAMESPACE, policy, families, **spec)


def test_every_address_the_api_server_allocates_reaches_frr_on_its_own_family_sessions_only(real_lab: Lab) -> None:
    """Every ipFamilyPolicy through the real allocator; headless and ExternalName Services announce nothing; the
    sessions carry one family each; deleting a Service withdraws exactly its routes."""
    plane: ControlPlane = real_lab.api
    allocated: dict[str, list[str]] = {}
    for name, policy, families in [
        ("single-v4", "SingleStack", None),
        ("single-v6", "SingleStack", ["IPv6"]),
        ("prefer-dual", "PreferDualStack", None),
        ("require-dual", "RequireDualStack", None),
        ("v6-primary", "PreferDualStack", ["IPv6", "IPv4"]),
    ]:
        allocated[name] = create(plane, SERVICES, new_service(name, policy, families))["spec"]["clusterIPs"]
    create(plane, SERVICES, new_service("headless", "PreferDualStack", clusterIP="None"))
    create(plane, SERVICES, {**service("external-name", namespace=NAMESPACE, service_type="ExternalName")})
    addresses = [KUBERNETES_SERVICE, *(address for group in allocated.values() for address in group)]
    assert len(addresses) == 1 + 1 + 1 + 2 + 2 + 2
    wait_for_announced(real_lab, dict.fromkeys(addresses, BOTH))
    neighbors = real_lab.frr().neighbors()
    for family in FAMILIES:
        for node in BOTH:
            peer = NODE_ADDRESS[family][node]
            assert set(neighbors[peer]["addressFamilyInfo"]) == {f"{family}Unicast"}, peer
    status, answer = plane.request("DELETE", f"{SERVICES}/require-dual")
    assert status == 200, answer
    left = [address for address in addresses if address not in allocated["require-dual"]]
    wait_for_announced(real_lab, dict.fromkeys(left, BOTH))


def test_local_policy_external_ips_and_load_balancer_ingress_per_node_and_family(real_lab: Lab) -> None:
    """A LoadBalancer Service with externalTrafficPolicy Local, externalIPs inside the allowlist, and ingress IPs
    written through the status subresource: each family from the node with its ready endpoint only; the IPv6
    endpoint turning unready withdraws that family's routes; deleting the Service withdraws the rest."""
    plane: ControlPlane = real_lab.api
    external = ["198.51.100.70", "2001:db8:e::70"]
    ingress = ["198.51.100.130", "2001:db8:1b::30"]
    obj = new_service(
        "web", "RequireDualStack", type="LoadBalancer", externalTrafficPolicy="Local", externalIPs=external
    )
    cluster_ips = create(plane, SERVICES, obj)["spec"]["clusterIPs"]
    patch = {"status": {"loadBalancer": {"ingress": [{"ip": address, "ipMode": "VIP"} for address in ingress]}}}
    status, answer = plane.request("PATCH", f"{SERVICES}/web/status", patch)
    assert status == 200, answer
    v6_slice = endpoint_slice("web", "IPv6", [endpoint(NODE_B, "2001:db8:a::9")], namespace=NAMESPACE)
    create(plane, SLICES, endpoint_slice("web", "IPv4", [endpoint(NODE_A, "198.51.100.209")], namespace=NAMESPACE))
    create(plane, SLICES, v6_slice)
    web = [*cluster_ips, *external, *ingress]
    v4 = [address for address in web if ipaddress.ip_address(address).version == 4]
    v6 = [address for address in web if ipaddress.ip_address(address).version == 6]
    base: Announced = {KUBERNETES_SERVICE: BOTH}
    wait_for_announced(real_lab, {**base, **dict.fromkeys(v4, ONLY_A), **dict.fromkeys(v6, ONLY_B)})
    v6_slice["endpoints"][0]["conditions"] = {"ready": False, "serving": False}
    status, answer = plane.request("PATCH", f"{SLICES}/web-ipv6", {"endpoints": v6_slice["endpoints"]})
    assert status == 200, answer
    wait_for_announced(real_lab, {**base, **dict.fromkeys(v4, ONLY_A)})
    status, answer = plane.request("DELETE", f"{SERVICES}/web")
    assert status == 200, answer
    wait_for_announced(real_lab, base)
    assert host_prefix(KUBERNETES_SERVICE) in real_lab.routes("ipv4")
