"""docker-compose.yml agrees with the files it mounts, frr.conf, the example configuration and the lab's plan."""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from announcer.config_load import load_config
from lab import lab as lab_plan
from lab.lab import load_objects

REPOSITORY = Path(__file__).resolve().parents[1]
COMPOSE = REPOSITORY / "docker-compose.yml"
FRR_CONF = REPOSITORY / "lab" / "files" / "frr.conf"
EXAMPLE = REPOSITORY / "examples" / "announcer.yaml"
NODES = ("node-a", "node-b")


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name}"
    found: dict[str, Any] = services[name]
    return found


def lab_address(name: str, family: int) -> str:
    key = "ipv4_address" if family == 4 else "ipv6_address"
    return str(ipaddress.ip_address(service(name)["networks"]["lab"][key]))


def mounts(name: str) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    found: dict[str, Path] = {}
    for volume in service(name).get("volumes", []):
        host, container = str(volume).split(":")[:2]
        found[container] = (COMPOSE.parent / host).resolve()
    return found


def frr_conf_neighbours() -> dict[str, int]:
    """Neighbour address -> remote AS from frr.conf."""
    text = FRR_CONF.read_text(encoding="utf-8")
    return {
        str(ipaddress.ip_address(address)): int(asn)
        for address, asn in re.findall(r"^\s*neighbor (\S+) remote-as (\d+)\s*$", text, re.MULTILINE)
    }


def frr_conf_activated(family: str) -> set[str]:
    """Neighbours activated in one address family of frr.conf."""
    text = FRR_CONF.read_text(encoding="utf-8")
    block = re.search(rf"address-family {family} unicast\n(.*?)exit-address-family", text, re.DOTALL)
    assert block is not None, f"frr.conf has no {family} unicast block"
    return {str(ipaddress.ip_address(address)) for address in re.findall(r"neighbor (\S+) activate", block[1])}


def test_every_file_the_compose_file_and_the_image_use_exists() -> None:
    """Bind-mounted files, the build context, the Dockerfile and what it copies are all in the repository."""
    for name in compose()["services"]:
        for host in mounts(name).values():
            assert host.is_file(), f"{name} mounts missing {host}"
        build = service(name).get("build")
        if build is not None:
            context = COMPOSE.parent / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()
    dockerfile = (REPOSITORY / "Dockerfile").read_text(encoding="utf-8")
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                if not source.startswith("--") and "[" not in source:
                    assert (REPOSITORY / source).exists(), f"Dockerfile copies missing {source}"
    assert "USER 10001" in dockerfile, "the image runs as a non-root user"
    entrypoint = REPOSITORY / "deploy" / "entrypoint.sh"
    assert entrypoint.stat().st_mode & 0o111, "deploy/entrypoint.sh is executable"
    assert "announcer exabgp-conf" in entrypoint.read_text(encoding="utf-8")
    assert 'exabgp "$run_dir/exabgp.conf" &' in entrypoint.read_text(encoding="utf-8")


def test_the_network_is_internal_dual_stack_and_holds_every_fixed_address() -> None:
    """One internal network with 192.0.2.0/24 and 2001:db8::/64; every address unique, none the gateway's."""
    network = compose()["networks"]["lab"]
    assert network["internal"] is True
    assert network["enable_ipv6"] is True
    subnets = {ipaddress.ip_network(entry["subnet"]): entry.get("gateway") for entry in network["ipam"]["config"]}
    assert set(subnets) == {ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/64")}
    addresses = [lab_address(name, family) for name in compose()["services"] for family in (4, 6)]
    assert len(addresses) == len(set(addresses))
    gateways = {str(ipaddress.ip_address(gateway)) for gateway in subnets.values() if gateway}
    assert not gateways & set(addresses), "Docker's gateway address must not be a service's"
    for address in addresses:
        assert any(ipaddress.ip_address(address) in subnet for subnet in subnets)


def test_the_compose_addresses_are_the_lab_plan() -> None:
    """Router, nodes and API server have the addresses the namespace lab uses."""
    assert lab_address("frr", 4) == lab_plan.ROUTER_IPV4
    assert lab_address("frr", 6) == lab_plan.ROUTER_IPV6
    assert lab_address("api", 4) == lab_plan.API_ADDRESS
    for index, name in enumerate(NODES):
        assert lab_address(name, 4) == lab_plan.NODE_IPV4[index]
        assert lab_address(name, 6) == lab_plan.NODE_IPV6[index]


def test_frr_conf_peers_with_exactly_the_compose_nodes_one_family_each() -> None:
    """frr.conf's neighbours are the nodes' addresses, IPv4 ones in ipv4 unicast and IPv6 ones in ipv6 unicast."""
    config = load_config(EXAMPLE, environ={})
    neighbours = frr_conf_neighbours()
    node_addresses = {lab_address(name, family) for name in NODES for family in (4, 6)}
    assert set(neighbours) == node_addresses
    assert set(neighbours.values()) == {config.bgp.local_as}
    assert frr_conf_activated("ipv4") == {lab_address(name, 4) for name in NODES}
    assert frr_conf_activated("ipv6") == {lab_address(name, 6) for name in NODES}
    text = FRR_CONF.read_text(encoding="utf-8")
    assert f"bgp router-id {lab_address('frr', 4)}" in text
    assert re.search(r"^log ", text, re.MULTILINE) is None, "a log line breaks the lab's --log"


def test_the_example_configuration_peers_with_the_compose_router() -> None:
    """examples/announcer.yaml's peers are FRR's two addresses, with frr.conf's AS."""
    config = load_config(EXAMPLE, environ={})
    assert {str(peer.address) for peer in config.bgp.peers} == {lab_address("frr", 4), lab_address("frr", 6)}
    router_as = re.search(r"^router bgp (\d+)", FRR_CONF.read_text(encoding="utf-8"), re.MULTILINE)
    assert router_as is not None
    assert {peer.peer_as for peer in config.bgp.peers} == {int(router_as[1])}


@pytest.mark.parametrize("name", NODES)
def test_each_node_gets_its_name_router_id_configuration_and_kubeconfig(name: str) -> None:
    """NODE_NAME is the service name, ROUTER_ID its IPv4 address, and both files are mounted where named."""
    node = service(name)
    environment = node["environment"]
    assert environment["NODE_NAME"] == name
    assert environment["ROUTER_ID"] == lab_address(name, 4)
    bound = mounts(name)
    assert bound["/etc/announcer/announcer.yaml"] == EXAMPLE
    assert environment["KUBECONFIG"] in bound
    config = load_config(EXAMPLE, environ={"NODE_NAME": name, "ROUTER_ID": environment["ROUTER_ID"]})
    assert config.node == name


def test_the_kubeconfig_points_at_the_api_service_listen_address() -> None:
    """The nodes' kubeconfig server is the api service's address and --listen port, as in the namespace lab."""
    kubeconfig_path = mounts("node-a")[service("node-a")["environment"]["KUBECONFIG"]]
    kubeconfig = yaml.safe_load(kubeconfig_path.read_text(encoding="utf-8"))
    server = urlsplit(kubeconfig["clusters"][0]["cluster"]["server"])
    entrypoint = [str(word) for word in service("api")["entrypoint"]]
    listen = entrypoint[entrypoint.index("--listen") + 1]
    assert f"{server.hostname}:{server.port}" == listen == f"{lab_address('api', 4)}:{server.port}"
    assert server.geturl() == lab_plan.API_URL
    assert yaml.safe_load(lab_plan.kubeconfig_text()) == kubeconfig


def test_the_api_service_is_seeded_with_the_sample_objects() -> None:
    """The api service mounts samples.yaml at the path its --seed names."""
    entrypoint = [str(word) for word in service("api")["entrypoint"]]
    seed = entrypoint[entrypoint.index("--seed") + 1]
    assert mounts("api")[seed] == lab_plan.SAMPLES


def test_the_samples_cover_every_ip_family_shape_and_a_local_load_balancer() -> None:
    """Dual-stack (required, preferred, IPv6 first), single-stack, headless and a Local LB with slices."""
    objects = load_objects(lab_plan.SAMPLES)
    services = [item for item in objects if item["kind"] == "Service"]
    specs = {item["metadata"]["name"]: item["spec"] for item in services}
    policies = [(spec.get("ipFamilyPolicy"), tuple(spec.get("ipFamilies", []))) for spec in specs.values()]
    assert ("RequireDualStack", ("IPv4", "IPv6")) in policies
    assert ("PreferDualStack", ("IPv4", "IPv6")) in policies
    assert ("SingleStack", ("IPv4",)) in policies
    assert ("SingleStack", ("IPv6",)) in policies
    assert any(families == ("IPv6", "IPv4") and policy != "SingleStack" for policy, families in policies)
    assert any(spec.get("clusterIP") == "None" for spec in specs.values())
    for spec in specs.values():
        if spec.get("clusterIP") != "None":
            assert spec["clusterIP"] == spec["clusterIPs"][0]
            kinds = ["IPv6" if ":" in address else "IPv4" for address in spec["clusterIPs"]]
            assert kinds == list(spec["ipFamilies"])
    local = [item for item in services if item["spec"].get("externalTrafficPolicy") == "Local"]
    assert local, "one Service has externalTrafficPolicy: Local"
    name = local[0]["metadata"]["name"]
    assert local[0]["spec"]["type"] == "LoadBalancer"
    assert len(local[0]["status"]["loadBalancer"]["ingress"]) == 2
    slices = [
        item
        for item in objects
        if item["kind"] == "EndpointSlice" and item["metadata"]["labels"]["kubernetes.io/service-name"] == name
    ]
    assert sorted(item["addressType"] for item in slices) == ["IPv4", "IPv6"]
    for item in slices:
        assert any(
            endpoint["nodeName"] == "node-a" and endpoint["conditions"]["ready"] for endpoint in item["endpoints"]
        )


def test_every_sample_address_is_a_documentation_address_in_its_planned_range() -> None:
    """Cluster, external and load-balancer IPs fall in the plan's ranges; nothing outside the documentation blocks."""
    ranges = {
        "cluster": ["198.51.100.0/26", "2001:db8:96::/112"],
        "external": ["198.51.100.64/26", "2001:db8:e::/64"],
        "load_balancer": ["198.51.100.128/26", "2001:db8:1b::/64"],
    }
    documentation = [ipaddress.ip_network(cidr) for cidr in ("192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32")]

    def within(address: str, cidrs: list[str]) -> bool:
        return any(ipaddress.ip_address(address) in ipaddress.ip_network(cidr) for cidr in cidrs)

    for item in load_objects(lab_plan.SAMPLES):
        if item["kind"] == "Service":
            spec = item["spec"]
            for address in spec.get("clusterIPs", []):
                assert address == "None" or within(address, ranges["cluster"])
            for address in spec.get("externalIPs", []):
                assert within(address, ranges["external"])
            for ingress in item.get("status", {}).get("loadBalancer", {}).get("ingress", []):
                assert within(ingress["ip"], ranges["load_balancer"])
        else:
            for endpoint in item["endpoints"]:
                for address in endpoint["addresses"]:
                    assert any(ipaddress.ip_address(address) in network for network in documentation)
