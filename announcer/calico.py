"""Pure rendering of the Calico 3.29+ resources that put the announcer's ExaBGP behind each node's BIRD/BIRD6."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import yaml

from announcer.config import Config, ConfigError
from announcer.model import Family

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resource = dict[str, object]

EXABGP_FILTER = "exabgp-local"
TOR_FILTER = "tor-services"
BIRD_PORT = 179
HOST_LENGTH: dict[Family, int] = {Family.IPV4: 32, Family.IPV6: 128}
SUFFIX: dict[Family, str] = {Family.IPV4: "V4", Family.IPV6: "V6"}
PEER_NAME: dict[Family, str] = {Family.IPV4: "exabgp-local-v4", Family.IPV6: "exabgp-local-v6"}

HEADER = """\
# Calico resources for running the service announcer beside Calico's BIRD (rendered by
# 'announcer calico-resources' from the announcer configuration; see docs/operations.md, "Beside Calico").
# ExaBGP listens (passive) on the node's loopback; calico-node's BIRD/BIRD6 connect to it (iBGP), import only
# host routes inside the service ranges, keep them out of the node's kernel and pass them to your ToR peers.
# Apply with 'calicoctl apply -f' (or kubectl with the Calico API server), after reading the two notes:
#  - BGPConfiguration: 'apply' replaces the whole spec. MERGE these fields into your existing 'default'
#    (keep nodeToNodeMeshEnabled and the rest), e.g. with 'calicoctl patch bgpconfiguration default'.
#  - BGPFilter tor-services: add it to the 'filters' of every BGPPeer of your top-of-rack routers (eBGP),
#    and never set keepOriginalNextHop on them (the ToR would get 127.0.0.1 or ::1 as next hop).
"""


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_loopback


def _check_peers(config: Config) -> None:
    """Every peer must be the node's own BIRD on loopback: passive, same AS, own port, listening on its address."""
    for index, peer in enumerate(config.bgp.peers):
        key = f"bgp.peers[{index}]"
        if not _is_loopback(peer.address):
            raise ConfigError(
                f"{key}.address: {peer.address} is not a loopback address; beside Calico ExaBGP peers with the node's "
                "own BIRD over loopback (127.0.0.1, ::1): calico-node skips a peer equal to the node's address"
            )
        if not peer.passive:
            raise ConfigError(f"{key}.passive: must be true beside Calico (calico-node's BIRD connects to ExaBGP)")
        if peer.local_address != peer.address:
            raise ConfigError(
                f"{key}.local_address: must equal the address ({peer.address}): ExaBGP listens there and BIRD, "
                "with sourceAddress None, connects from it"
            )
        if peer.port == BIRD_PORT:
            raise ConfigError(f"{key}.port: {BIRD_PORT} is BIRD's own port on the node; use another (e.g. 1790)")
        if peer.peer_as != config.bgp.local_as:
            raise ConfigError(
                f"{key}.peer_as: must equal bgp.local_as ({config.bgp.local_as}): ExaBGP and BIRD share the node's AS "
                "(iBGP), so the ToR sees the routes from Calico's AS"
            )
        if peer.node_selector:
            raise ConfigError(
                f"{key}.node_selector: beside Calico every node peers with its own BIRD; select ToRs per rack with "
                "Calico's BGPPeer nodeSelector instead"
            )
    for family in Family:
        if len(config.bgp.peers_of(family)) > 1:
            raise ConfigError(f"bgp.peers: one {family.value} peer at most beside Calico (the node's own BIRD)")
    _check_one_as_and_host_routes(config)


def _check_one_as_and_host_routes(config: Config) -> None:
    """ExaBGP shares the node's AS with BIRD, and BIRD takes host routes only from it."""
    if config.bgp.local_as_node_key is not None:
        raise ConfigError(
            "bgp.local_as_node_key: beside Calico ExaBGP shares the node's AS with BIRD (iBGP, one asNumber in the "
            "BGPPeers); a per-node AS would break those sessions"
        )
    aggregation = config.announce.aggregation
    for name in ("cluster_ips", "external_ips", "load_balancer_ips"):
        for family, length in getattr(aggregation, name).lengths().items():
            if length < family.host_length:
                raise ConfigError(
                    f"announce.aggregation.{name}.aggregation_length_{family.value}: beside Calico "
                    "the BGPFilter exabgp-local imports host routes only; aggregate in BIRD or on the ToR instead"
                )


def service_ranges(config: Config, cluster_ranges: Sequence[Network]) -> dict[str, list[Network]]:
    """The BGPConfiguration's service fields: cluster ranges as given, external and LB ones from the allowlists."""
    announce = config.announce
    if announce.service_cidrs:
        raise ConfigError(
            "announce.service_cidrs: leave it empty beside Calico: BIRD imports host routes only from ExaBGP "
            "(BGPFilter exabgp-local), and Calico's own serviceClusterIPs handling covers the aggregates"
        )
    if announce.cluster_ips and not cluster_ranges:
        raise ConfigError(
            "announce.cluster_ips: give the cluster's service ranges (--service-cluster-ip-range, as the "
            "kube-apiserver's); without them BIRD drops the cluster IPs and would program them into the kernel"
        )
    return {
        "serviceClusterIPs": list(cluster_ranges),
        "serviceExternalIPs": list(announce.external_ips.allowlist) if announce.external_ips.enabled else [],
        "serviceLoadBalancerIPs": list(announce.load_balancer_ips.allowlist)
        if announce.load_balancer_ips.enabled
        else [],
    }


def _family(network: Network) -> Family:
    return Family.IPV4 if network.version == 4 else Family.IPV6


def _peer_ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"{address}:{port}" if address.version == 4 else f"[{address}]:{port}"


def _exabgp_filter(ranges: list[Network]) -> Resource:
    spec: dict[str, object] = {}
    for family in Family:
        mine = [network for network in ranges if _family(network) == family]
        rules: list[dict[str, object]] = [
            {"action": "Accept", "matchOperator": "In", "cidr": str(network),
             "prefixLength": {"min": HOST_LENGTH[family]}}
            for network in mine
        ]  # fmt: skip
        spec[f"import{SUFFIX[family]}"] = [*rules, {"action": "Reject"}]
        spec[f"export{SUFFIX[family]}"] = [{"action": "Reject"}]
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPFilter",
        "metadata": {"name": EXABGP_FILTER},
        "spec": spec,
    }


def _tor_filter(ranges: list[Network]) -> Resource:
    spec: dict[str, object] = {}
    for family in Family:
        mine = [str(network) for network in ranges if _family(network) == family]
        if not mine:
            continue
        accept = [{"action": "Accept", "matchOperator": "In", "cidr": cidr, "source": "RemotePeers"} for cidr in mine]
        reject = [{"action": "Reject", "matchOperator": "In", "cidr": cidr} for cidr in mine]
        spec[f"export{SUFFIX[family]}"] = [*accept, *reject]
        spec[f"import{SUFFIX[family]}"] = [dict(rule) for rule in reject]
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPFilter", "metadata": {"name": TOR_FILTER}, "spec": spec}


def calico_resources(config: Config, cluster_ranges: Sequence[Network]) -> list[Resource]:
    """BGPConfiguration fields, one BGPPeer per ExaBGP session (every node, its own loopback), the two BGPFilters."""
    _check_peers(config)
    fields = service_ranges(config, cluster_ranges)
    ranges = [network for networks in fields.values() for network in networks]
    configuration: Resource = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {"asNumber": config.bgp.local_as}
        | {key: [{"cidr": str(network)} for network in networks] for key, networks in fields.items()},
    }
    peers: list[Resource] = [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPPeer",
            "metadata": {"name": PEER_NAME[peer.family]},
            "spec": {
                "peerIP": _peer_ip(peer.address, peer.port),
                "asNumber": peer.peer_as,
                "sourceAddress": "None",
                "filters": [EXABGP_FILTER],
            },
        }
        for peer in sorted(config.bgp.peers, key=lambda peer: peer.family.value)
    ]
    return [configuration, *peers, _exabgp_filter(ranges), _tor_filter(ranges)]


def parse_ranges(values: Sequence[str]) -> list[Network]:
    """--service-cluster-ip-range values (each may be comma-separated, as the kube-apiserver's flag) as networks."""
    networks: list[Network] = []
    for value in values:
        for text in value.split(","):
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=True))
            except ValueError as error:
                raise ConfigError(f"--service-cluster-ip-range: {text.strip()!r} is not a CIDR ({error})") from None
    return networks


def render_calico_resources(config: Config, cluster_ranges: Sequence[Network]) -> str:
    """The resources as one multi-document YAML text, with what to do with each."""
    documents = [yaml.safe_dump(resource, sort_keys=False) for resource in calico_resources(config, cluster_ranges)]
    return HEADER + "".join(f"---\n{document}" for document in documents)
