"""Pure value types: families, address kinds, BGP attributes, and the slim views of Services and slices."""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field
from typing import ClassVar

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# A network as the configuration gives it (allowlists, service CIDRs): `address in network` works on it.
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UINT16_MAX = 65_535
UINT32_MAX = 4_294_967_295


class Family(enum.Enum):
    """An address family, named as ExaBGP names its AFI."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"

    @property
    def label(self) -> str:
        return "IPv4" if self is Family.IPV4 else "IPv6"

    @property
    def host_length(self) -> int:
        return 32 if self is Family.IPV4 else 128


class Prefix(int):
    """A route's prefix held as one int: a family bit (2**40 for IPv4, 2**136 for IPv6: never 0, IPv4 first), the
    network address shifted left 8 bits, and the length. Hashing, equality and ordering (family, address, length)
    are int operations done in C and it keeps no other object (an ipaddress network keeps four); `str` gives the
    canonical text sent to ExaBGP. Built by `host_prefix`, `covering_prefix`, `prefix_of` and `parse_prefix`."""

    __slots__ = ()
    family: ClassVar[Family]
    max_prefixlen: ClassVar[int]
    _flag: ClassVar[int]

    @property
    def prefixlen(self) -> int:
        return self & 0xFF

    @property
    def address(self) -> int:
        """The network address, as an int."""
        return (self ^ self._flag) >> 8

    def network(self) -> Network:
        """The same prefix as an ipaddress network."""
        if self.family is Family.IPV4:
            return ipaddress.IPv4Network((self.address, self.prefixlen))
        return ipaddress.IPv6Network((self.address, self.prefixlen))

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self}')"


class Prefix4(Prefix):
    """An IPv4 prefix."""

    __slots__ = ()
    family = Family.IPV4
    max_prefixlen = 32
    _flag = 1 << 40

    def __str__(self) -> str:
        address = (self ^ (1 << 40)) >> 8
        return f"{address >> 24}.{address >> 16 & 255}.{address >> 8 & 255}.{address & 255}/{self & 255}"


class Prefix6(Prefix):
    """An IPv6 prefix."""

    __slots__ = ()
    family = Family.IPV6
    max_prefixlen = 128
    _flag = 1 << 136

    def __str__(self) -> str:
        return f"{ipv6_text((self ^ (1 << 136)) >> 8)}/{self & 255}"


# ':0:0:...:0:' runs of 8 words down to 2, longest first: the run RFC 5952 compresses to '::'.
_ZERO_RUNS = tuple(":" + ":".join(["0"] * words) + ":" for words in range(8, 1, -1))


def ipv6_text(value: int) -> str:
    """The canonical text of an IPv6 address (RFC 5952, exactly as ipaddress writes it), twice as fast: the words
    in hex, and the first longest run of two or more zero words compressed."""
    if value >> 32 == 0xFFFF:  # IPv4-mapped: left to ipaddress, whose form depends on the Python version
        return str(ipaddress.IPv6Address(value))
    text = (
        f":{value >> 112:x}:{value >> 96 & 0xFFFF:x}:{value >> 80 & 0xFFFF:x}:{value >> 64 & 0xFFFF:x}"
        f":{value >> 48 & 0xFFFF:x}:{value >> 32 & 0xFFFF:x}:{value >> 16 & 0xFFFF:x}:{value & 0xFFFF:x}:"
    )
    for run in _ZERO_RUNS:
        start = text.find(run)
        if start >= 0:
            return text[1:start] + "::" + text[start + len(run) : -1]
    return text[1:-1]


def host_prefix(address: IPAddress) -> Prefix:
    """The /32 or /128 of an address."""
    if type(address) is ipaddress.IPv4Address:
        return Prefix4(1 << 40 | int(address) << 8 | 32)
    if type(address) is ipaddress.IPv6Address:
        return Prefix6(1 << 136 | int(address) << 8 | 128)
    return covering_prefix(address, 32 if address.version == 4 else 128)


def covering_prefix(address: IPAddress, length: int) -> Prefix:
    """The address masked to a prefix length (MetalLB's and Cilium's aggregation-length)."""
    bits = 32 if address.version == 4 else 128
    if not 0 <= length <= bits:
        raise ValueError(f"prefix length {length} out of range for {address}")
    masked = int(address) >> (bits - length) << (bits - length)
    if bits == 32:
        return Prefix4(1 << 40 | masked << 8 | length)
    return Prefix6(1 << 136 | masked << 8 | length)


def prefix_of(network: Network) -> Prefix:
    """An ipaddress network (from the configuration or ExaBGP's answers) as a Prefix."""
    return covering_prefix(network.network_address, network.prefixlen)


def parse_prefix(text: str) -> Prefix:
    """'ADDRESS/LENGTH' with no host bits set (ipaddress's strict parsing), or ValueError."""
    return prefix_of(ipaddress.ip_network(text, strict=True))


def family_of(address: IPAddress | Prefix | Network) -> Family:
    family = _FAMILY_OF_TYPE.get(type(address))  # one C-level lookup; `version` is a Python property
    if family is not None:
        return family
    if isinstance(address, Prefix):
        return address.family
    return Family.IPV4 if address.version == 4 else Family.IPV6  # a subclass (e.g. an IPv4Interface)


_FAMILY_OF_TYPE: dict[type, Family] = {
    ipaddress.IPv4Address: Family.IPV4,
    ipaddress.IPv4Network: Family.IPV4,
    ipaddress.IPv6Address: Family.IPV6,
    ipaddress.IPv6Network: Family.IPV6,
    Prefix4: Family.IPV4,
    Prefix6: Family.IPV6,
}


class Kind(enum.Enum):
    """Where an announced address comes from."""

    CLUSTER_IP = "clusterIP"
    EXTERNAL_IP = "externalIP"
    LOAD_BALANCER_IP = "loadBalancerIP"
    AGGREGATE = "aggregate"


class Reason(enum.Enum):
    """Why an address of a Service is not announced by this node."""

    HEADLESS = "headless"
    EXTERNAL_NAME = "externalName"
    NO_LOCAL_ENDPOINT = "noLocalEndpoint"
    NO_ENDPOINT = "noEndpoint"
    OUTSIDE_ALLOWLIST = "outsideAllowlist"
    KIND_DISABLED = "kindDisabled"
    OPTED_OUT = "optedOut"
    NO_PEER_FOR_FAMILY = "noPeerForFamily"
    INVALID_ADDRESS = "invalidAddress"


_COMMUNITY = re.compile(r"^(\d{1,5}):(\d{1,5})$")
_LARGE_COMMUNITY = re.compile(r"^(\d{1,10}):(\d{1,10}):(\d{1,10})$")


WELL_KNOWN_COMMUNITIES = {
    "no-export": (65535, 65281),
    "no-advertise": (65535, 65282),
    "no-export-subconfed": (65535, 65283),
    "no-peer": (65535, 65284),
    "blackhole": (65535, 666),
}


def parse_community(text: str) -> tuple[int, int]:
    """'ASN:VALUE' with both halves 0..65535, or a well-known name (no-export, ...); ValueError otherwise."""
    if text in WELL_KNOWN_COMMUNITIES:
        return WELL_KNOWN_COMMUNITIES[text]
    match = _COMMUNITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a community 'ASN:VALUE'")
    high, low = int(match[1]), int(match[2])
    if high > UINT16_MAX or low > UINT16_MAX:
        raise ValueError(f"{text!r}: each half of a community is at most {UINT16_MAX}")
    return high, low


def parse_large_community(text: str) -> tuple[int, int, int]:
    """'A:B:C' with each part 0..4294967295, or ValueError."""
    match = _LARGE_COMMUNITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a large community 'A:B:C'")
    parts = (int(match[1]), int(match[2]), int(match[3]))
    if max(parts) > UINT32_MAX:
        raise ValueError(f"{text!r}: each part of a large community is at most {UINT32_MAX}")
    return parts


@dataclass(frozen=True, slots=True)
class Attributes:
    """The BGP path attributes of a route, held as validated numbers only."""

    communities: tuple[tuple[int, int], ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()
    local_preference: int | None = None
    med: int | None = None

    def sort_key(self) -> tuple[object, ...]:
        return (
            self.communities,
            self.large_communities,
            -1 if self.local_preference is None else self.local_preference,
            -1 if self.med is None else self.med,
        )

    def describe(self) -> str:
        """A short human text, for tables and logs."""
        words = []
        if self.communities:
            words.append("community " + " ".join(f"{a}:{b}" for a, b in self.communities))
        if self.large_communities:
            words.append("large-community " + " ".join(f"{a}:{b}:{c}" for a, b, c in self.large_communities))
        if self.local_preference is not None:
            words.append(f"local-preference {self.local_preference}")
        if self.med is not None:
            words.append(f"med {self.med}")
        return ", ".join(words) or "-"


NO_ATTRIBUTES = Attributes()


@dataclass(frozen=True, slots=True)
class AttributeOverrides:
    """Per-Service attribute overrides taken from validated annotations; None leaves the config's value."""

    communities: tuple[tuple[int, int], ...] | None = None
    large_communities: tuple[tuple[int, int, int], ...] | None = None
    local_preference: int | None = None
    med: int | None = None

    def apply(self, base: Attributes) -> Attributes:
        """The base with these overrides; the base itself (shared, not copied) when nothing is overridden."""
        if (
            self.communities is None
            and self.large_communities is None
            and self.local_preference is None
            and self.med is None
        ):
            return base
        return Attributes(
            communities=base.communities if self.communities is None else self.communities,
            large_communities=base.large_communities if self.large_communities is None else self.large_communities,
            local_preference=base.local_preference if self.local_preference is None else self.local_preference,
            med=base.med if self.med is None else self.med,
        )


@dataclass(frozen=True, slots=True)
class ServiceView:
    """What the decision needs of one Service, already validated; built only by convert.py."""

    namespace: str
    name: str
    service_type: str = "ClusterIP"
    headless: bool = False
    cluster_ips: tuple[IPAddress, ...] = ()
    external_ips: tuple[IPAddress, ...] = ()
    load_balancer_ips: tuple[IPAddress, ...] = ()
    external_traffic_local: bool = False
    internal_traffic_local: bool = False
    opted_out: bool = False
    overrides: AttributeOverrides = field(default_factory=AttributeOverrides)
    # The require-endpoints annotation: None leaves the configuration's announce.require_endpoints.
    require_endpoints: bool | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class SliceView:
    """What the decision needs of one EndpointSlice: its Service, family, and nodes with a serving endpoint."""

    namespace: str
    name: str
    service_name: str
    family: Family | None
    serving_nodes: frozenset[str] = frozenset()
    # A ready or serving endpoint without a nodeName (e.g. a mirrored Endpoints of a Service without selector).
    unplaced_serving: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def serves(self) -> bool:
        """Whether any endpoint of the slice, on any node or none, is ready or serving."""
        return bool(self.serving_nodes) or self.unplaced_serving

    @property
    def service_key(self) -> tuple[str, str]:
        return (self.namespace, self.service_name)


@dataclass(frozen=True, slots=True)
class Problem:
    """A field of a Kubernetes object that was rejected, and why; logged, never fatal."""

    obj: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.obj}: {self.field}: {self.message}"
