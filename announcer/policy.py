"""Pure: the plain, frozen policy value the decision reads, built from the configuration by the shell."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from announcer.model import Attributes, Family, IPAddress, Kind, Prefix


@dataclass(frozen=True)
class AddressRule:
    """An address kind taken from user-set fields: announced only when enabled and inside the allowlist."""

    enabled: bool
    allowlist: tuple[Prefix, ...] = ()

    def allows(self, address: IPAddress) -> bool:
        return any(address.version == network.version and address in network for network in self.allowlist)


@dataclass(frozen=True)
class Policy:
    """The parts of the configuration the decision reads, resolved once (no pydantic, no file, no environment)."""

    families: frozenset[Family]
    cluster_ips: bool
    gate_cluster_ips_by_internal_policy: bool
    external_ips: AddressRule
    load_balancer_ips: AddressRule
    attributes: Mapping[Kind, Attributes]
    service_cidrs: tuple[Prefix, ...]
    # No endpoint anywhere: Cluster-policy addresses of a family without a ready/serving endpoint are not announced.
    require_endpoints: bool = False
    # Aggregation: per kind and family, the prefix length Cluster-policy addresses are announced at.
    aggregation: Mapping[Kind, Mapping[Family, int]] = field(default_factory=dict)
