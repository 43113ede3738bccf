"""Pure: which routes this node wants for each Service, why not the rest, and the table of all of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from announcer.model import (
    Attributes,
    Family,
    IPAddress,
    Kind,
    Prefix,
    Reason,
    ServiceView,
    SliceView,
    covering_prefix,
    family_of,
    host_prefix,
    prefix_of,
)
from announcer.policy import AddressRule, NodeView, Policy, Refusal, admit_annotations, node_withdrawal

ObjectKey = tuple[str, str]
# Claims on aggregates come from the configuration, not from a Service; this key sorts before any Service.
CONFIG_CLAIMANT: ObjectKey = ("", "service_cidrs")
_PER_FAMILY_REASONS = frozenset({Reason.NO_LOCAL_ENDPOINT, Reason.NO_ENDPOINT})
_KIND_RANK = {Kind.CLUSTER_IP: 0, Kind.LOAD_BALANCER_IP: 1, Kind.EXTERNAL_IP: 2, Kind.AGGREGATE: 3}


@dataclass(frozen=True, slots=True)
class Wanted:
    """A route this node wants to announce, for one claimant."""

    prefix: Prefix
    kind: Kind
    attributes: Attributes


@dataclass(frozen=True, slots=True)
class NotWanted:
    """An address (or a Service without one) that this node does not announce, and why."""

    address: IPAddress | None
    kind: Kind
    reason: Reason

    @property
    def reason_text(self) -> str:
        if self.reason in _PER_FAMILY_REASONS and self.address is not None:
            return f"{self.reason.value}({family_of(self.address).label})"
        return self.reason.value


@dataclass(frozen=True, slots=True)
class Decision:
    """What one Service contributes on this node."""

    wanted: tuple[Wanted, ...] = ()
    not_wanted: tuple[NotWanted, ...] = ()
    refused: tuple[Refusal, ...] = ()  # its annotations the admin's policy ignores


NO_DECISION = Decision()
# The claims on one prefix: the claimant's key when there is one (the common case: its claim is in its decision,
# nothing more is kept), else a dict per claimant (two or more).
Claims = ObjectKey | dict[ObjectKey, Wanted]


def _reason_not_wanted(
    service: ServiceView,
    address: IPAddress,
    *,
    enabled: bool,
    allowlisted: AddressRule | None,
    gated: bool,
    local_families: frozenset[Family],
    cluster_families: frozenset[Family],
    policy: Policy,
) -> Reason | None:
    """Why this node does not announce an address, or None when it does."""
    family = family_of(address)
    if service.opted_out:
        return Reason.OPTED_OUT
    if not enabled:
        return Reason.KIND_DISABLED
    if allowlisted is not None and not allowlisted.allows(address):
        return Reason.OUTSIDE_ALLOWLIST
    if family not in policy.families:
        return Reason.NO_PEER_FOR_FAMILY
    if gated:
        return None if family in local_families else Reason.NO_LOCAL_ENDPOINT
    required = policy.require_endpoints if service.require_endpoints is None else service.require_endpoints
    return Reason.NO_ENDPOINT if required and family not in cluster_families else None


def _add_wanted(wanted: list[Wanted], new: Wanted) -> None:
    """One claim per prefix and Service: an aggregate reached from several kinds keeps the first-ranked kind."""
    for index, other in enumerate(wanted):
        if other.prefix == new.prefix:
            if _KIND_RANK[new.kind] < _KIND_RANK[other.kind] and new.prefix.prefixlen < new.prefix.max_prefixlen:
                wanted[index] = new
            return
    wanted.append(new)


def decide(
    service: ServiceView,
    local_families: frozenset[Family],
    policy: Policy,
    cluster_families: frozenset[Family] = frozenset(Family),
) -> Decision:
    """The routes this node wants for one Service, and a reason for every address it does not want.

    local_families: the families with a ready or serving endpoint on this node; cluster_families: on any node
    (or none), read only when the Service requires endpoints. A Cluster-policy address of a kind and family with
    an aggregation length is wanted as its covering prefix with the kind's configured attributes (no per-Service
    override: the aggregate is shared); a Local-policy address stays a host route. Annotations the admin's policy
    refuses are ignored, and named in the decision.
    """
    service, refused = admit_annotations(service, policy.annotations)
    if service.service_type == "ExternalName":
        return Decision(not_wanted=(NotWanted(None, Kind.CLUSTER_IP, Reason.EXTERNAL_NAME),), refused=refused)
    wanted: list[Wanted] = []
    not_wanted: list[NotWanted] = []
    if service.headless:
        not_wanted.append(NotWanted(None, Kind.CLUSTER_IP, Reason.HEADLESS))
    cluster_gated = (
        service.internal_traffic_local if policy.gate_cluster_ips_by_internal_policy else service.external_traffic_local
    )
    sources: list[tuple[Kind, tuple[IPAddress, ...], bool, AddressRule | None, bool]] = [
        (Kind.CLUSTER_IP, service.cluster_ips, policy.cluster_ips, None, cluster_gated),
        (Kind.EXTERNAL_IP, service.external_ips, policy.external_ips.enabled, policy.external_ips,
         service.external_traffic_local),
        (Kind.LOAD_BALANCER_IP, service.load_balancer_ips, policy.load_balancer_ips.enabled,
         policy.load_balancer_ips, service.external_traffic_local),
    ]  # fmt: skip
    for kind, addresses, enabled, allowlisted, gated in sources:
        if not addresses:
            continue
        lengths = None if gated else policy.aggregation.get(kind)  # Local policy: host routes only
        for address in addresses:
            reason = _reason_not_wanted(
                service,
                address,
                enabled=enabled,
                allowlisted=allowlisted,
                gated=gated,
                local_families=local_families,
                cluster_families=cluster_families,
                policy=policy,
            )
            if reason is not None:
                not_wanted.append(NotWanted(address, kind, reason))
                continue
            if lengths:
                family = family_of(address)
                length = lengths.get(family, family.host_length)
                if length < family.host_length:
                    _add_wanted(wanted, Wanted(covering_prefix(address, length), kind, policy.attributes[kind]))
                    continue
            _add_wanted(wanted, Wanted(host_prefix(address), kind, service.overrides.apply(policy.attributes[kind])))
    return Decision(tuple(wanted), tuple(not_wanted), refused)


class DesiredTable:
    """Every Service's decision on this node, and for each prefix the claims on it; updated one object at a time.

    Work per event is bounded by the size of the object that changed, never by the number of Services.
    """

    def __init__(self, node: str, policy: Policy) -> None:
        self.node = node
        self.policy = policy
        self.services: dict[ObjectKey, ServiceView] = {}
        self.slices: dict[ObjectKey, SliceView] = {}
        self.slices_by_service: dict[ObjectKey, set[ObjectKey]] = {}
        self.decisions: dict[ObjectKey, Decision] = {}
        self._claims: dict[Prefix, Claims] = {}
        self.not_wanted_counts: Counter[tuple[Reason, Kind]] = Counter()
        self.refused_counts: Counter[tuple[str, str]] = Counter()  # Services per (annotation, rule) refused
        self._new_refusals: list[tuple[ObjectKey, Refusal]] = []
        self._dirty: set[Prefix] = set()
        aggregates = tuple(
            Wanted(prefix_of(cidr), Kind.AGGREGATE, policy.attributes[Kind.AGGREGATE])
            for cidr in policy.service_cidrs
            if family_of(cidr) in policy.families
        )
        self._set_decision(CONFIG_CLAIMANT, Decision(wanted=aggregates))
        self.node_view: NodeView | None = None  # this node's Node object; None: not (yet) known
        # Why node state withdraws everything; () : it does not. With a rule on, nothing until the Node is known.
        self.node_reasons: tuple[str, ...] = node_withdrawal(None, policy.node)

    # --- reading -------------------------------------------------------------------------------------------
    def best(self, prefix: Prefix) -> Wanted | None:
        """The claim that decides a prefix's attributes: cluster IPs first, then by namespace/name."""
        claims = self._claims.get(prefix)
        if claims is None:
            return None
        if isinstance(claims, tuple):  # a sole claimant: its claim is in its decision
            for claim in self.decisions[claims].wanted:
                if claim.prefix == prefix:
                    return claim
            raise KeyError(prefix)  # every claim recorded comes from a stored decision
        claimant = min(claims, key=lambda key: (_KIND_RANK[claims[key].kind], key))
        return claims[claimant]

    def claimants(self, prefix: Prefix) -> Mapping[ObjectKey, Wanted]:
        """Every claim on a prefix, by claimant (empty: nobody wants it)."""
        claims = self._claims.get(prefix)
        if claims is None:
            return {}
        if isinstance(claims, tuple):
            return {claims: self._claim(claims, prefix)}
        return dict(claims)

    def _claim(self, claimant: ObjectKey, prefix: Prefix) -> Wanted:
        """A sole claimant's claim on a prefix, from its decision."""
        for claim in self.decisions[claimant].wanted:
            if claim.prefix == prefix:
                return claim
        raise KeyError(prefix)  # every claim recorded comes from a stored decision

    def desired_attributes(self, prefix: Prefix) -> Attributes | None:
        if self.node_reasons:
            return None  # node state withdraws everything; the claims stay, so nothing is recomputed after
        best = self.best(prefix)
        return None if best is None else best.attributes

    def all_prefixes(self) -> Iterable[Prefix]:
        return self._claims.keys()

    def take_refusals(self) -> list[tuple[ObjectKey, Refusal]]:
        """The refusals that appeared since the last call (a Service's refusal that stays is handed on once)."""
        refusals, self._new_refusals = self._new_refusals, []
        return refusals

    def take_dirty(self) -> set[Prefix]:
        """The prefixes whose claims changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def local_families(self, service: ObjectKey) -> frozenset[Family]:
        return self.endpoint_families(service)[0]

    def endpoint_families(self, service: ObjectKey) -> tuple[frozenset[Family], frozenset[Family]]:
        """(families with a ready or serving endpoint on this node, on any node): one pass over its own slices."""
        local: set[Family] = set()
        anywhere: set[Family] = set()
        for slice_key in self.slices_by_service.get(service, ()):
            view = self.slices[slice_key]
            if view.family is None:
                continue
            if self.node in view.serving_nodes:
                local.add(view.family)
            if view.serves:
                anywhere.add(view.family)
        return frozenset(local), frozenset(anywhere)

    # --- node state (issue #11): one switch over the whole table, no Service decision recomputed -------------
    def set_node(self, view: NodeView | None) -> None:
        """This node's Node object (None: not known or deleted, which withdraws everything while a node-state rule
        is on); every prefix becomes dirty when the node-level withdrawal starts or ends."""
        self.node_view = view
        reasons = node_withdrawal(view, self.policy.node)
        if bool(reasons) != bool(self.node_reasons):
            self._dirty.update(self._claims)
        self.node_reasons = reasons

    # --- writing -------------------------------------------------------------------------------------------
    def upsert_service(self, view: ServiceView) -> None:
        key = view.key  # one tuple, kept by `services` and `decisions` alike
        if self.services.get(key) == view:
            return
        self.services[key] = view
        self._refresh(key)

    def delete_service(self, key: ObjectKey) -> None:
        if self.services.pop(key, None) is not None:
            self._refresh(key)

    def upsert_slice(self, view: SliceView) -> None:
        old = self.slices.get(view.key)
        if old == view:
            return
        if old is not None and old.service_key != view.service_key:
            self.delete_slice(view.key)
        self.slices[view.key] = view
        self.slices_by_service.setdefault(view.service_key, set()).add(view.key)
        self._refresh(view.service_key)

    def delete_slice(self, key: ObjectKey) -> None:
        old = self.slices.pop(key, None)
        if old is None:
            return
        members = self.slices_by_service.get(old.service_key)
        if members is not None:
            members.discard(key)
            if not members:
                del self.slices_by_service[old.service_key]
        self._refresh(old.service_key)

    def replace_services(self, views: Iterable[ServiceView]) -> None:
        """Make the Services exactly these (after a re-list); unchanged ones cause no work downstream."""
        fresh = {view.key: view for view in views}
        for key in [key for key in self.services if key not in fresh]:
            self.delete_service(key)
        for view in fresh.values():
            self.upsert_service(view)

    def replace_slices(self, views: Iterable[SliceView]) -> None:
        """Make the EndpointSlices exactly these (after a re-list)."""
        fresh = {view.key: view for view in views}
        for key in [key for key in self.slices if key not in fresh]:
            self.delete_slice(key)
        for view in fresh.values():
            self.upsert_slice(view)

    def _refresh(self, key: ObjectKey) -> None:
        view = self.services.get(key)
        if view is None:
            decision = NO_DECISION
        else:
            local, anywhere = self.endpoint_families(key)
            decision = decide(view, local, self.policy, anywhere)
        self._set_decision(key, decision)

    def _set_decision(self, key: ObjectKey, decision: Decision) -> None:
        old = self.decisions.get(key, NO_DECISION)
        if old == decision:
            return
        if old.wanted:
            self._drop_claims(key, old.wanted)
        if decision.wanted:
            self._add_claims(key, decision.wanted)
        if old.not_wanted:  # the Counter is left alone when there is nothing to count (the common case)
            self.not_wanted_counts.subtract((item.reason, item.kind) for item in old.not_wanted)
        if decision.not_wanted:
            self.not_wanted_counts.update((item.reason, item.kind) for item in decision.not_wanted)
        if old.refused or decision.refused:
            self._count_refusals(key, old.refused, decision.refused)
        if decision.wanted or decision.not_wanted or decision.refused:
            self.decisions[key] = decision
        else:
            self.decisions.pop(key, None)

    def _count_refusals(self, key: ObjectKey, old: tuple[Refusal, ...], new: tuple[Refusal, ...]) -> None:
        self.refused_counts.subtract((refusal.annotation, refusal.rule) for refusal in old)
        self.refused_counts.update((refusal.annotation, refusal.rule) for refusal in new)
        self._new_refusals.extend((key, refusal) for refusal in new if refusal not in old)

    def _drop_claims(self, key: ObjectKey, wanted: tuple[Wanted, ...]) -> None:
        claims, dirty = self._claims, self._dirty
        for claim in wanted:
            prefix = claim.prefix
            held = claims[prefix]
            if isinstance(held, tuple):
                del claims[prefix]
            else:
                del held[key]
                if len(held) == 1:  # one claimant left: back to its key alone
                    claims[prefix] = next(iter(held))
            dirty.add(prefix)

    def _add_claims(self, key: ObjectKey, wanted: tuple[Wanted, ...]) -> None:
        claims, dirty = self._claims, self._dirty
        for claim in wanted:
            prefix = claim.prefix
            held = claims.setdefault(prefix, key)  # one hash of the prefix in the common case
            if held is not key:
                if isinstance(held, dict):
                    held[key] = claim
                elif held == key:
                    claims[prefix] = key
                else:
                    claims[prefix] = {held: self._claim(held, prefix), key: claim}
            dirty.add(prefix)
