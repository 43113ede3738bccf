"""The compose lab's files read as data: services, addresses, and the routes each node should announce from samples."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import yaml

from announcer.config import Config
from announcer.config_load import load_config
from lab.lab import SAMPLES, load_objects

REPOSITORY = Path(__file__).resolve().parents[1]
COMPOSE = REPOSITORY / "docker-compose.yml"
LAB_FILES = REPOSITORY / "docker" / "lab"
FRR_CONF = LAB_FILES / "frr.conf"
ANNOUNCER_CONF = LAB_FILES / "announcer.yaml"
PRODUCT_IMAGE = "service-announcer:lab"
NODES = ("node-a", "node-b")
SERVICES = ("frr", "api", *NODES)
# The compose lab's ranges, reserved for it on this machine class: not the uplink's 192.0.2.0/24, not the namespace
# lab's host range 203.0.113.240/28.
LAB_IPV4 = ipaddress.ip_network("203.0.113.0/26")
LAB_IPV6 = ipaddress.ip_network("2001:db8:c0::/64")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name}"
    found: dict[str, Any] = services[name]
    return found


def namespace_holder(name: str) -> str:
    """The service whose network namespace a service joins (network_mode: service:...), or the service itself."""
    mode = str(service(name).get("network_mode", ""))
    return mode.removeprefix("service:") if mode.startswith("service:") else name


def lab_address(name: str, family: int) -> str:
    """A service's fixed address on the lab network (held by its namespace holder)."""
    key = "ipv4_address" if family == 4 else "ipv6_address"
    return str(ipaddress.ip_address(service(namespace_holder(name))["networks"]["lab"][key]))


def mounts(name: str) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    found: dict[str, Path] = {}
    for volume in service(name).get("volumes", []):
        host, container = str(volume).split(":")[:2]
        found[container] = (COMPOSE.parent / host).resolve()
    return found


def frr_conf_neighbours() -> dict[str, int]:
    """Neighbour address -> remote AS from the compose lab's frr.conf."""
    text = FRR_CONF.read_text(encoding="utf-8")
    return {
        str(ipaddress.ip_address(address)): int(asn)
        for address, asn in re.findall(r"^\s*neighbor (\S+) remote-as (\d+)\s*$", text, re.MULTILINE)
    }


def node_config(name: str) -> Config:
    """The announcer configuration a compose node runs with (its NODE_NAME and ROUTER_ID applied)."""
    environment = service(name)["environment"]
    return load_config(
        ANNOUNCER_CONF, environ={"NODE_NAME": environment["NODE_NAME"], "ROUTER_ID": environment["ROUTER_ID"]}
    )


def _within(address: str, networks: list[Network]) -> bool:
    return any(ipaddress.ip_address(address) in network for network in networks)


def _ready_families(objects: list[dict[str, Any]], service_name: str, node: str) -> set[str]:
    """The address types (IPv4, IPv6) of a Service's EndpointSlices with a ready endpoint on the node."""
    families: set[str] = set()
    for item in objects:
        if item["kind"] != "EndpointSlice":
            continue
        if item["metadata"]["labels"].get("kubernetes.io/service-name") != service_name:
            continue
        if any(
            endpoint.get("nodeName") == node and endpoint["conditions"].get("ready") for endpoint in item["endpoints"]
        ):
            families.add(item["addressType"])
    return families


def expected_prefixes(node: str) -> dict[int, set[str]]:
    """Family -> prefixes this node announces for the samples: every clusterIP, allowlisted external and
    load-balancer IPs; a Local Service's only for families with a ready endpoint on the node."""
    config = node_config(node)
    announce = config.announce
    objects = load_objects(SAMPLES)
    found: dict[int, set[str]] = {4: set(), 6: set()}
    for item in objects:
        if item["kind"] != "Service":
            continue
        spec = item["spec"]
        addresses = [address for address in spec.get("clusterIPs", []) if address != "None"]
        addresses += [
            address
            for address in spec.get("externalIPs", [])
            if announce.external_ips.enabled and _within(address, list(announce.external_ips.allowlist))
        ]
        addresses += [
            ingress["ip"]
            for ingress in item.get("status", {}).get("loadBalancer", {}).get("ingress", [])
            if announce.load_balancer_ips.enabled and _within(ingress["ip"], list(announce.load_balancer_ips.allowlist))
        ]
        local = spec.get("externalTrafficPolicy") == "Local"
        ready = _ready_families(objects, item["metadata"]["name"], node)
        for address in addresses:
            parsed = ipaddress.ip_address(address)
            if local and f"IPv{parsed.version}" not in ready:
                continue
            found[parsed.version].add(f"{parsed}/{parsed.max_prefixlen}")
    return found


def sample_cluster_ips() -> dict[int, set[str]]:
    """Family -> every sample Service's clusterIP prefix."""
    found: dict[int, set[str]] = {4: set(), 6: set()}
    for item in load_objects(SAMPLES):
        if item["kind"] == "Service":
            for address in item["spec"].get("clusterIPs", []):
                if address != "None":
                    parsed = ipaddress.ip_address(address)
                    found[parsed.version].add(f"{parsed}/{parsed.max_prefixlen}")
    return found
