"""The configuration schema of the BGP speaker's identity and its peers (addresses, AS numbers, passwords)."""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from announcer.fields import check_label_key, is_label_value
from announcer.model import Family, Kind, family_of

Asn = Annotated[int, Field(ge=1, le=4_294_967_295)]


class StrictModel(BaseModel):
    """A settings section: unknown keys refused, values frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PasswordSource(StrictModel):
    """Where a peer's TCP MD5 password comes from; never the password itself in the file."""

    env: str | None = Field(default=None, description="Name of an environment variable holding it.")
    file: Path | None = Field(default=None, description="Path of a file holding it (trailing newline ignored).")

    @model_validator(mode="after")
    def _exactly_one(self) -> PasswordSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self


def _no_zone_index(value: Any) -> Any:
    """Refuse an IPv6 address with a zone index ('fe80::1%eth0'): ExaBGP parses addresses with inet_pton, which
    has no zone; a link-local peer is written as the address plus the peer's 'interface' key instead."""
    if isinstance(value, str) and "%" in value:
        address, _, zone = value.partition("%")
        raise ValueError(
            f"{value!r} has a zone index ('%...'), which ExaBGP does not accept (it reads addresses with "
            f"inet_pton); write the address without it and name the link with the peer's interface key "
            f"(address: {address}, interface: {zone})"
        )
    return value


def _is_link_local(address: object) -> bool:
    return isinstance(address, ipaddress.IPv6Address) and address.is_link_local


def _address(value: Any, also: str = "") -> Any:
    """An address text as an address, one sentence naming the value otherwise (not pydantic's per-member errors)."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if isinstance(value, str):
        _no_zone_index(value)
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(value)
    raise ValueError(f"{value!r} is not an IPv4 or IPv6 address{also}")


def _local_address(value: Any) -> Any:
    return value if value == "auto" else _address(value, ", nor 'auto'")


def _ipv4_address(value: Any) -> Any:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    with contextlib.suppress(ValueError):
        if isinstance(value, str):
            return ipaddress.IPv4Address(value)
    raise ValueError(f"{value!r} is not an IPv4 address")


PeerAddress = Annotated[ipaddress.IPv4Address | ipaddress.IPv6Address, BeforeValidator(_address)]
LocalAddress = Annotated[
    ipaddress.IPv4Address | ipaddress.IPv6Address | Literal["auto"], BeforeValidator(_local_address)
]
RouterId = Annotated[ipaddress.IPv4Address, BeforeValidator(_ipv4_address)]


def check_hold_time(value: int) -> int:
    """A BGP hold time: 0 (no keepalives), or 3 to 65535 seconds (RFC 4271)."""
    if value != 0 and not 3 <= value <= 65535:
        raise ValueError("must be 0 or between 3 and 65535")
    return value


class ReceivedKinds(StrictModel):
    """The kinds of address a peer is sent (a prefix claimed by several kinds goes by the kind that decides its
    attributes: cluster IPs, then load-balancer IPs, then external IPs)."""

    cluster_ips: bool = Field(default=True, description="spec.clusterIPs (host routes and their aggregates).")
    external_ips: bool = Field(default=True, description="spec.externalIPs.")
    load_balancer_ips: bool = Field(default=True, description="status.loadBalancer.ingress[].ip.")
    service_cidrs: bool = Field(default=True, description="The aggregates of announce.service_cidrs.")

    def kinds(self) -> frozenset[Kind]:
        chosen = {
            Kind.CLUSTER_IP: self.cluster_ips,
            Kind.EXTERNAL_IP: self.external_ips,
            Kind.LOAD_BALANCER_IP: self.load_balancer_ips,
            Kind.AGGREGATE: self.service_cidrs,
        }
        return frozenset(kind for kind, on in chosen.items() if on)


class Peer(StrictModel):
    """One BGP peer. Its address decides its family: IPv4 peers get only /32s, IPv6 peers only /128s."""

    address: PeerAddress = Field(description="The peer's address (no zone index; a link-local one needs 'interface').")
    peer_as: Asn = Field(description="The peer's AS number.")
    local_address: LocalAddress = Field(
        default="auto",
        description="Our source address towards the peer; 'auto' lets the kernel choose (not with passive).",
    )
    port: int = Field(default=179, ge=1, le=65535, description="The peer's TCP port.")
    passive: bool = Field(
        default=False, description="Wait for the peer to connect instead of connecting; needs local_address."
    )
    password: PasswordSource | None = Field(default=None, description="TCP MD5 password source.")
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels (matchLabels: every pair must match) selecting the nodes that peer with it; "
        "empty: every node.",
    )

    @field_validator("node_selector")
    @classmethod
    def _node_selector(cls, value: dict[str, str]) -> dict[str, str]:
        problems = []
        for key, label in value.items():
            try:
                check_label_key(key)
            except ValueError as error:
                problems.append(str(error))
            if not is_label_value(label):
                problems.append(f"{label!r} (of {key!r}) is not a label value")
        if problems:
            raise ValueError("\n".join(problems))
        return value

    # --- IPv6 link-local peers (issue #11 item 5) ---
    interface: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,15}$",
        description="The link to the peer (ExaBGP's source-interface, SO_BINDTODEVICE); required for an IPv6 "
        "link-local address (fe80::/10), which is written without '%zone'.",
    )

    # --- per-peer session settings (issue #19, item 4) ---
    hold_time: int | None = Field(
        default=None,
        description="Hold time in seconds for this peer (0, or 3 to 65535); unset: bgp.hold_time. ExaBGP sends "
        "keepalives every third of the negotiated hold time (it has no separate keepalive setting).",
    )
    ttl: int | None = Field(
        default=None,
        ge=1,
        le=255,
        description="IP TTL (IPv6 hop limit) of what we send to the peer (ExaBGP's outgoing-ttl): 1 for a directly "
        "connected eBGP peer, the hop count for eBGP multihop; unset: the kernel's default (64), so a peer several "
        "hops away is reached without it.",
    )
    min_ttl: int | None = Field(
        default=None,
        ge=1,
        le=255,
        description="Lowest TTL accepted from the peer (GTSM, RFC 5082; ExaBGP's incoming-ttl), e.g. 255 for a "
        "directly connected one; we then send with TTL 255 unless ttl is set.",
    )
    receive: ReceivedKinds = Field(
        default_factory=ReceivedKinds, description="Which kinds of address this peer is sent."
    )

    @field_validator("hold_time")
    @classmethod
    def _hold_time(cls, value: int | None) -> int | None:
        return None if value is None else check_hold_time(value)

    @property
    def family(self) -> Family:
        return family_of(self.address)

    @model_validator(mode="after")
    def _link_local(self) -> Peer:
        """A link-local peer needs its interface, and is only connected to (ExaBGP cannot listen on one)."""
        if _is_link_local(self.address) and self.interface is None:
            raise ValueError(
                f"interface: required for the link-local address {self.address} (the kernel needs the link; "
                "ExaBGP binds the socket to it with source-interface)"
            )
        if _is_link_local(self.local_address) and not _is_link_local(self.address):
            raise ValueError("local_address: a link-local local_address needs a link-local peer address")
        if _is_link_local(self.address) and self.passive:
            raise ValueError(
                "passive: ExaBGP 5.0 cannot listen for a link-local peer: its listener binds (local_address, port) "
                "with no scope id and no device (reactor/listener.py, Listener._listen), which the kernel refuses "
                "for a link-local address (EINVAL); leave passive false, ExaBGP connects out"
            )
        return self

    @model_validator(mode="after")
    def _same_family(self) -> Peer:
        if self.local_address != "auto" and family_of(self.local_address) is not self.family:
            raise ValueError("local_address and address must be of the same family")
        if self.passive and self.local_address == "auto":
            raise ValueError(
                "local_address: required when passive is true (ExaBGP refuses to listen with 'local-address auto')"
            )
        return self


class Bgp(StrictModel):
    """The BGP speaker's own identity and its peers."""

    local_as: Asn = Field(description="Our AS number.")
    router_id: RouterId | None = Field(
        default=None, description="BGP identifier; the ROUTER_ID environment variable overrides it."
    )
    hold_time: int = Field(default=90, description="Hold time in seconds (0, or 3 and more).")
    graceful_restart: int | None = Field(
        default=None,
        ge=1,
        le=4095,
        description="Restart time in seconds; enables graceful restart with End-of-RIB sent by the announcer "
        "after its first full sync.",
    )
    peers: list[Peer] = Field(min_length=1, description="Every BGP peer, each declared once.")
    local_as_node_key: str | None = Field(
        default=None,
        description="A Node label (else annotation) key whose value, when set, is this node's AS instead of "
        "local_as (per-rack AS numbers).",
    )

    @field_validator("local_as_node_key")
    @classmethod
    def _local_as_key(cls, value: str | None) -> str | None:
        return None if value is None else check_label_key(value)

    @field_validator("router_id")
    @classmethod
    def _usable_router_id(cls, value: ipaddress.IPv4Address | None) -> ipaddress.IPv4Address | None:
        """A BGP identifier must not be zero (RFC 6286); a multicast or broadcast one is no router's address and FRR
        and BIRD refuse the OPEN carrying it (RFC 4271 6.2: 'Bad BGP Identifier')."""
        if value is None:
            return None
        why = (
            "zero"
            if int(value) == 0
            else "a multicast address"
            if value.is_multicast
            else "the broadcast address"
            if int(value) == 0xFFFFFFFF
            else None
        )
        if why is not None:
            raise ValueError(f"{str(value)!r} is {why}, which a BGP identifier must not be")
        return value

    @field_validator("hold_time")
    @classmethod
    def _hold_time(cls, value: int) -> int:
        return check_hold_time(value)

    @model_validator(mode="after")
    def _unique_peers(self) -> Bgp:
        seen: set[str] = set()
        for peer in self.peers:
            if str(peer.address) in seen:
                raise ValueError(f"peer {peer.address} is declared twice")
            seen.add(str(peer.address))
        return self

    @model_validator(mode="after")
    def _router_id(self) -> Bgp:
        """ExaBGP derives no router-id from 'local-address auto' nor from an IPv6 local address."""
        if self.router_id is None and any(
            peer.local_address == "auto" or peer.family is Family.IPV6 for peer in self.peers
        ):
            raise ValueError(
                "router_id: required by ExaBGP with an IPv6 peer or local_address 'auto' "
                "(set it or the ROUTER_ID environment variable)"
            )
        return self

    def peers_of(self, family: Family) -> list[Peer]:
        return [peer for peer in self.peers if peer.family == family]
