"""Pure: the plain, frozen policy value the decision reads, built from the configuration by the shell."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from announcer.model import Attributes, Family, IPAddress, Kind, Network


@dataclass(frozen=True)
class AddressRule:
    """An address kind taken from user-set fields: announced only when enabled and inside the allowlist."""

    enabled: bool
    allowlist: tuple[Network, ...] = ()

    def allows(self, address: IPAddress) -> bool:
        return any(address.version == network.version and address in network for network in self.allowlist)


# --- node state and per-node peers (issue #11, items 1 and 3) ---------------------------------------------------
NODE_READY_UNKNOWN = "Unknown"
NODE_UNKNOWN_REASON = "nodeUnknown"  # node state on, and this node's Node not known: nothing is announced


@dataclass(frozen=True)
class NodeView:
    """This node's Node object, as the decision reads it (convert.py builds it from validated fields)."""

    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    unschedulable: bool = False
    ready: str = NODE_READY_UNKNOWN  # status.conditions[type=Ready].status: 'True', 'False' or 'Unknown'


@dataclass(frozen=True)
class NodeRule:
    """When this node withdraws everything it announces (each opt-in; all off: the Node is not even read)."""

    withdraw_label: str | None = None  # a label key: present with any value but 'false' withdraws
    withdraw_when_cordoned: bool = False
    withdraw_when_not_ready: bool = False

    @property
    def enabled(self) -> bool:
        return self.withdraw_label is not None or self.withdraw_when_cordoned or self.withdraw_when_not_ready


def node_withdrawal(node: NodeView | None, rule: NodeRule) -> tuple[str, ...]:
    """Why this node withdraws everything (no reason: it does not). With a rule on, a Node not known (not listed yet,
    missing, or not readable) withdraws everything: node state fails closed."""
    if node is None:
        return (NODE_UNKNOWN_REASON,) if rule.enabled else ()
    reasons: list[str] = []
    if rule.withdraw_label is not None and node.labels.get(rule.withdraw_label, "false") != "false":
        reasons.append(f"nodeLabel({rule.withdraw_label})")
    if rule.withdraw_when_cordoned and node.unschedulable:
        reasons.append("nodeCordoned")
    if rule.withdraw_when_not_ready and node.ready != "True":
        reasons.append(f"nodeNotReady({node.ready})")
    return tuple(reasons)


def selector_matches(match_labels: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Kubernetes matchLabels semantics: every pair present with the same value (an empty selector matches all)."""
    return all(labels.get(key) == value for key, value in match_labels.items())


@dataclass(frozen=True)
class Policy:
    """The parts of the configuration the decision reads, resolved once (no pydantic, no file, no environment)."""

    families: frozenset[Family]
    cluster_ips: bool
    gate_cluster_ips_by_internal_policy: bool
    external_ips: AddressRule
    load_balancer_ips: AddressRule
    attributes: Mapping[Kind, Attributes]
    service_cidrs: tuple[Network, ...]
    node: NodeRule = NodeRule()
    # No endpoint anywhere: Cluster-policy addresses of a family without a ready/serving endpoint are not announced.
    require_endpoints: bool = False
    # Aggregation: per kind and family, the prefix length Cluster-policy addresses are announced at.
    aggregation: Mapping[Kind, Mapping[Family, int]] = field(default_factory=dict)
