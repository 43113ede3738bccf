"""Pure: the plain, frozen policy value the decision reads, built from the configuration by the shell."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from announcer.model import (
    UINT32_MAX,
    AttributeOverrides,
    Attributes,
    Family,
    IPAddress,
    Kind,
    Network,
    ServiceView,
)


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
    deleting: bool = False  # metadata.deletionTimestamp set (read at a stop: no next pod comes to a deleted Node)


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


# --- the admin's policy over per-Service annotations (issue #19, item 3) ----------------------------------------
OPT_OUT = "opt-out"
REQUIRE_ENDPOINTS = "require-endpoints"
COMMUNITIES = "communities"
LARGE_COMMUNITIES = "large-communities"
LOCAL_PREFERENCE = "local-preference"
MED = "med"
ANY = -1  # in an allowlist entry: any value in this place ('64513:*')
_NO_OVERRIDES = AttributeOverrides()


@dataclass(frozen=True)
class AnnotationRule:
    """Whether Services may use one annotation kind: enabled, from which namespaces (empty: every one), with which
    communities (each must match an allowlist entry, ANY matching every value in its place) or numbers (bounds)."""

    enabled: bool = False
    namespaces: frozenset[str] = frozenset()
    allowlist: tuple[tuple[int, ...], ...] = ()
    minimum: int = 0
    maximum: int = UINT32_MAX

    def allows(self, community: tuple[int, ...]) -> bool:
        return any(
            all(want in (ANY, got) for want, got in zip(entry, community, strict=True))
            for entry in self.allowlist
            if len(entry) == len(community)
        )


@dataclass(frozen=True)
class AnnotationPolicy:
    """The rule of each annotation kind. Taking routes of its own Service away is allowed by default; setting path
    attributes, which reach the routers and can steer or drop other traffic, is not."""

    opt_out: AnnotationRule = AnnotationRule(enabled=True)
    require_endpoints: AnnotationRule = AnnotationRule(enabled=True)
    communities: AnnotationRule = AnnotationRule()
    large_communities: AnnotationRule = AnnotationRule()
    local_preference: AnnotationRule = AnnotationRule()
    med: AnnotationRule = AnnotationRule()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A Service's annotation that the admin's policy ignores, and which rule refused it."""

    annotation: str  # its name after the prefix: 'communities'
    rule: str  # the refusing key below annotations.KIND: enabled, namespaces, allowlist, minimum or maximum
    detail: str

    @property
    def key(self) -> str:
        """The configuration key of the rule: 'annotations.communities.allowlist'."""
        return f"annotations.{self.annotation.replace('-', '_')}.{self.rule}"

    def describe(self, annotation_prefix: str) -> str:
        """'metadata.annotations[PREFIXNAME]: refused by KEY (DETAIL); ignored', for a log line after the Service."""
        return (
            f"metadata.annotations[{annotation_prefix}{self.annotation}]: refused by {self.key} ({self.detail}); "
            "ignored"
        )


def _community_text(community: tuple[int, ...]) -> str:
    return ":".join(map(str, community))


def _refusal(
    name: str, rule: AnnotationRule, namespace: str, values: tuple[tuple[int, ...], ...] | int
) -> Refusal | None:
    """Why `rule` refuses the annotation `name` with these communities or this number, or None."""
    if not rule.enabled:
        return Refusal(name, "enabled", "annotations of this kind are not enabled")
    if rule.namespaces and namespace not in rule.namespaces:
        return Refusal(name, "namespaces", f"namespace {namespace} is not listed")
    if isinstance(values, int):
        return _out_of_bounds(name, rule, values)
    outside = [_community_text(value) for value in values if not rule.allows(value)]
    return Refusal(name, "allowlist", f"{', '.join(outside)} not in the allowlist") if outside else None


def _out_of_bounds(name: str, rule: AnnotationRule, value: int) -> Refusal | None:
    if value < rule.minimum:
        return Refusal(name, "minimum", f"{value} is below the minimum {rule.minimum}")
    if value > rule.maximum:
        return Refusal(name, "maximum", f"{value} is above the maximum {rule.maximum}")
    return None


def admit_annotations(service: ServiceView, rules: AnnotationPolicy) -> tuple[ServiceView, tuple[Refusal, ...]]:
    """The Service as the decision reads it, each annotation the rules refuse taken away whole (the configured
    value stands), and the refusals. A Service without annotations that act is returned as it is."""
    overrides = service.overrides
    if not service.opted_out and service.require_endpoints is None and overrides == _NO_OVERRIDES:
        return service, ()
    namespace = service.namespace
    refused: list[Refusal] = []

    def check(name: str, rule: AnnotationRule, values: tuple[tuple[int, ...], ...] | int | None) -> bool:
        """Whether the annotation stays (absent ones do)."""
        refusal = None if values is None else _refusal(name, rule, namespace, values)
        if refusal is not None:
            refused.append(refusal)
        return refusal is None

    opted_out = service.opted_out and check(OPT_OUT, rules.opt_out, ())
    require = service.require_endpoints
    if require is not None and not check(REQUIRE_ENDPOINTS, rules.require_endpoints, ()):
        require = None
    kept = AttributeOverrides(
        communities=overrides.communities if check(COMMUNITIES, rules.communities, overrides.communities) else None,
        large_communities=overrides.large_communities
        if check(LARGE_COMMUNITIES, rules.large_communities, overrides.large_communities)
        else None,
        local_preference=overrides.local_preference
        if check(LOCAL_PREFERENCE, rules.local_preference, overrides.local_preference)
        else None,
        med=overrides.med if check(MED, rules.med, overrides.med) else None,
    )
    if not refused:
        return service, ()
    admitted = replace(service, opted_out=opted_out, require_endpoints=require, overrides=kept)
    return admitted, tuple(refused)


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
    # Which per-Service annotations act, set by the admin (annotations section).
    annotations: AnnotationPolicy = field(default_factory=AnnotationPolicy)
