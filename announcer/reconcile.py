"""Pure: announced versus desired, to ExaBGP command lines with an explicit per-family neighbour selector."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from announcer.model import (
    Attributes,
    Family,
    IPAddress,
    Prefix,
    family_of,
    parse_community,
    parse_large_community,
    parse_prefix,
)


class Action(Enum):
    ANNOUNCE = "announce"
    WITHDRAW = "withdraw"


Peers = tuple[IPAddress, ...]


@dataclass
class Plan:
    """The route changes that bring ExaBGP from what it holds to what is desired: `announce` and `withdraw` go to
    every peer of the prefix's family in bulk lines; `partial_*` only to the peers named (configuration order)."""

    announce: dict[Prefix, Attributes] = field(default_factory=dict)
    withdraw: list[Prefix] = field(default_factory=list)
    partial_announce: dict[Peers, dict[Prefix, Attributes]] = field(default_factory=dict)
    partial_withdraw: dict[Peers, list[Prefix]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.announce or self.withdraw or self.partial_announce or self.partial_withdraw)

    def announced_count(self) -> int:
        return len(self.announce) + len({p for part in self.partial_announce.values() for p in part})

    def withdrawn_prefixes(self) -> set[Prefix]:
        return set(self.withdraw).union(*self.partial_withdraw.values())

    def drop_withdrawals(self) -> None:
        self.withdraw, self.partial_withdraw = [], {}

    def take_peer(self, peer: IPAddress) -> set[Prefix]:
        """Remove every change naming only `peer`; the prefixes they carried."""
        taken: set[Prefix] = set()
        taken.update(self.partial_announce.pop((peer,), {}))
        taken.update(self.partial_withdraw.pop((peer,), []))
        return taken

    def merge(self, other: Plan) -> None:
        self.announce.update(other.announce)
        self.withdraw.extend(other.withdraw)
        for peers, announce in other.partial_announce.items():
            self.partial_announce.setdefault(peers, {}).update(announce)
        for peers, withdraw in other.partial_withdraw.items():
            self.partial_withdraw.setdefault(peers, []).extend(withdraw)


@dataclass(frozen=True, slots=True)
class Command:
    """One line for ExaBGP, the routes it carries and the peers it names, so its ack can be applied to the
    announced state."""

    line: str
    action: Action
    family: Family
    prefixes: tuple[Prefix, ...]
    attributes: Attributes | None = None
    peers: Peers = ()


# Held with attributes that could not be read, or that differ between peers, or maybe held (ExaBGP refused a
# command that may have reached some peers): never equal to a desired value.
UNKNOWN_ATTRIBUTES = Attributes(local_preference=-1)


class Holdings(Mapping[Prefix, Attributes]):
    """What ExaBGP holds for us, per prefix and peer. The common case, every peer of the prefix's family holding it
    alike, is one entry in `uniform`; a prefix its peers hold differently (or only some of them, or unknown for
    some) has one entry per holding peer in `split`. As a Mapping: every prefix some peer may hold, with its
    attributes if uniform, else UNKNOWN_ATTRIBUTES."""

    def __init__(
        self, peers: Mapping[Family, Sequence[IPAddress]], uniform: Mapping[Prefix, Attributes] | None = None
    ) -> None:
        self.peers: dict[Family, Peers] = {family: tuple(peers.get(family, ())) for family in Family}
        self.uniform: dict[Prefix, Attributes] = dict(uniform or {})
        self.split: dict[Prefix, dict[IPAddress, Attributes]] = {}

    def __getitem__(self, prefix: Prefix) -> Attributes:
        if prefix in self.split:
            return UNKNOWN_ATTRIBUTES
        return self.uniform[prefix]

    def __iter__(self) -> Iterator[Prefix]:
        yield from self.uniform
        yield from self.split

    def __len__(self) -> int:
        return len(self.uniform) + len(self.split)

    def of(self, prefix: Prefix, peer: IPAddress) -> Attributes | None:
        """What `peer` holds for `prefix`: its attributes, UNKNOWN_ATTRIBUTES, or None (not held)."""
        by_peer = self.split.get(prefix)
        if by_peer is not None:
            return by_peer.get(peer)
        return self.uniform.get(prefix)

    def record(self, prefix: Prefix, peers: Peers, value: Attributes | None) -> None:
        """`peers` (of the prefix's family) now hold `value` (None: not held)."""
        family_peers = self.peers[family_of(prefix)]
        if len(peers) == len(family_peers):
            self.split.pop(prefix, None)
            if value is None:
                self.uniform.pop(prefix, None)
            else:
                self.uniform[prefix] = value
            return
        by_peer = self.split.get(prefix)
        if by_peer is None:
            current = self.uniform.pop(prefix, None)
            by_peer = {} if current is None else dict.fromkeys(family_peers, current)
        for peer in peers:
            if value is None:
                by_peer.pop(peer, None)
            else:
                by_peer[peer] = value
        self._settle(prefix, by_peer, family_peers)

    def _settle(self, prefix: Prefix, by_peer: dict[IPAddress, Attributes], family_peers: Peers) -> None:
        """Keep `split` for what differs per peer: alike known values (or nothing) fold back into `uniform`."""
        values = set(by_peer.values())
        if not by_peer:
            self.split.pop(prefix, None)
        elif len(by_peer) == len(family_peers) and len(values) == 1 and UNKNOWN_ATTRIBUTES not in values:
            self.split.pop(prefix, None)
            self.uniform[prefix] = values.pop()
        else:
            self.split[prefix] = by_peer

    def counts(self) -> tuple[dict[IPAddress, int], dict[Family, int]]:
        """How many prefixes each peer holds (maybe-held ones too), and how many prefixes of each family some peer
        holds. One walk over every prefix."""
        per_family = dict.fromkeys(Family, 0)
        for prefix in self.uniform:
            per_family[family_of(prefix)] += 1
        per_peer = {peer: per_family[family] for family, peers in self.peers.items() for peer in peers}
        for prefix, by_peer in self.split.items():
            per_family[family_of(prefix)] += 1
            for peer in by_peer:
                per_peer[peer] = per_peer.get(peer, 0) + 1
        return per_peer, per_family

    def load(self, held: Mapping[Prefix, Mapping[str, Attributes]]) -> None:
        """Replace everything with what ExaBGP's adj-rib-out says (parse_adj_rib_out), per peer."""
        self.uniform, self.split = {}, {}
        for prefix, by_name in held.items():
            family_peers = self.peers[family_of(prefix)]
            by_peer = {peer: by_name[str(peer)] for peer in family_peers if str(peer) in by_name}
            if not by_peer:
                continue
            values = set(by_peer.values())
            if len(by_peer) == len(family_peers) and len(values) == 1:
                self.uniform[prefix] = values.pop()
            else:
                self.split[prefix] = by_peer


def plan_changes(
    prefixes: Iterable[Prefix],
    desired: Callable[[Prefix], Attributes | None],
    held: Holdings | Mapping[Prefix, Attributes],
    *,
    apart: Collection[IPAddress] = (),
    among: Mapping[Family, Sequence[IPAddress]] | None = None,
    receivers: Callable[[Prefix], Collection[IPAddress] | None] | None = None,
) -> Plan:
    """For each prefix named and each peer of its family (or only those `among`), announce it if wanted and not
    held as wanted, withdraw it if held and unwanted. What every peer of the family needs alike goes in bulk;
    the rest per group of peers needing the same, each peer of `apart` in lines of its own. `receivers`: the
    peers a prefix may go to when not every peer of its family takes it (None: all do); the others are
    withdrawn from if they hold it."""
    if not isinstance(held, Holdings):
        held = Holdings({}, held)  # every peer of a prefix's family holds it alike
    plan = Plan()
    apart_families = {family_of(peer) for peer in apart}
    split, uniform = held.split, held.uniform
    for prefix in prefixes:
        wanted = desired(prefix)
        only = None if receivers is None or wanted is None else receivers(prefix)
        # The common case (no peer apart, nothing held differently per peer) hashes the prefix once, for `uniform`.
        if (
            among is not None
            or only is not None
            or (split and prefix in split)
            or (apart_families and family_of(prefix) in apart_families)
        ):
            family = family_of(prefix)
            chosen = held.peers[family] if among is None else tuple(among.get(family, ()))
            _plan_per_peer(plan, held, prefix, wanted, chosen, apart=apart, only=only)
            continue
        current = uniform.get(prefix)
        if wanted is None:
            if current is not None:
                plan.withdraw.append(prefix)
        elif current != wanted:
            plan.announce[prefix] = wanted
    return plan


def _plan_per_peer(
    plan: Plan,
    held: Holdings,
    prefix: Prefix,
    wanted: Attributes | None,
    chosen: Peers,
    *,
    apart: Collection[IPAddress],
    only: Collection[IPAddress] | None = None,
) -> None:
    """One prefix, peer by peer: peers needing the same change share a line, peers `apart` get their own; a peer
    not in `only` (when given) wants it withdrawn."""
    groups: dict[Attributes | None, list[IPAddress]] = {}
    for peer in chosen:
        current = held.of(prefix, peer)
        for_peer = wanted if only is None or peer in only else None
        if current == for_peer:
            continue
        if peer in apart:
            _add(plan, (peer,), prefix, for_peer)
        else:
            groups.setdefault(for_peer, []).append(peer)
    for attributes, group in groups.items():
        if tuple(group) != held.peers[family_of(prefix)]:
            _add(plan, tuple(group), prefix, attributes)
        elif attributes is None:
            plan.withdraw.append(prefix)
        else:
            plan.announce[prefix] = attributes


def _add(plan: Plan, peers: Peers, prefix: Prefix, attributes: Attributes | None) -> None:
    if attributes is None:
        plan.partial_withdraw.setdefault(peers, []).append(prefix)
    else:
        plan.partial_announce.setdefault(peers, {})[prefix] = attributes


def neighbour_selector(peers: Sequence[IPAddress]) -> str:
    """'neighbor A , neighbor B': ExaBGP's list of neighbours (the comma must stand alone as a word)."""
    return " , ".join(f"neighbor {peer}" for peer in peers)


def attribute_words(attributes: Attributes) -> str:
    """The attribute words of a command, formatted from validated numbers only."""
    words = ["next-hop self"]
    if attributes.communities:
        words.append("community [" + " ".join(f"{a}:{b}" for a, b in attributes.communities) + "]")
    if attributes.large_communities:
        words.append("large-community [" + " ".join(f"{a}:{b}:{c}" for a, b, c in attributes.large_communities) + "]")
    if attributes.local_preference is not None:
        words.append(f"local-preference {attributes.local_preference}")
    if attributes.med is not None:
        words.append(f"med {attributes.med}")
    return " ".join(words)


def _sorted(prefixes: Iterable[Prefix]) -> list[Prefix]:
    """By family, address, then length: a Prefix's own int order, compared in C."""
    return sorted(prefixes)


def _chunks(items: list[Prefix], size: int) -> Iterable[tuple[Prefix, ...]]:
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def _line(selector: str, action: Action, words: str, chunk: tuple[Prefix, ...]) -> str:
    if len(chunk) == 1:
        return f"{selector} {action.value} route {chunk[0]} {words}"
    return f"{selector} {action.value} attributes {words} nlri {' '.join(map(str, chunk))}"


# One action's changes towards one group of peers: the prefixes (each once, in their order) per attribute set.
Changes = dict[Attributes | None, list[Prefix]]


def _by_family(changes: Iterable[tuple[Prefix, Attributes | None]]) -> dict[Family, Changes]:
    """Changes (each prefix once) split by the prefix's family and grouped by attributes, in one pass that hashes
    no prefix and keeps no pair."""
    parts: dict[Family, Changes] = {family: {} for family in Family}
    for prefix, attributes in changes:
        parts[prefix.family].setdefault(attributes, []).append(prefix)
    return parts


def render_commands(plan: Plan, peers: Mapping[Family, Sequence[IPAddress]], prefixes_per_line: int) -> list[Command]:
    """Withdraws first, then announces grouped by family and attributes, in bulk lines of at most N prefixes; the
    bulk part names every peer of the family, the partial part only its peers.

    Prefixes of a family without peers are dropped.
    """
    withdraws: list[tuple[Peers, Changes]] = []
    announces: list[tuple[Peers, Changes]] = []
    withdraw_parts = _by_family((prefix, None) for prefix in dict.fromkeys(plan.withdraw))
    announce_parts = _by_family(plan.announce.items())
    for family in Family:
        family_peers = tuple(peers.get(family, ()))
        if family_peers:
            withdraws.append((family_peers, withdraw_parts[family]))
            announces.append((family_peers, announce_parts[family]))
    order = {peer: index for index, peer in enumerate(peer for family in Family for peer in peers.get(family, ()))}

    def placed(group: Peers) -> list[int]:
        return [order[peer] for peer in group]

    for group in sorted((g for g in plan.partial_withdraw if set(g) <= set(order)), key=placed):
        part = _by_family((p, None) for p in dict.fromkeys(plan.partial_withdraw[group]))
        withdraws.append((group, part[family_of(group[0])]))
    for group in sorted((g for g in plan.partial_announce if set(g) <= set(order)), key=placed):
        announces.append((group, _by_family(plan.partial_announce[group].items())[family_of(group[0])]))
    commands: list[Command] = []
    for action, parts in ((Action.WITHDRAW, withdraws), (Action.ANNOUNCE, announces)):
        for group, changes in parts:
            commands += _group_commands(action, group, changes, prefixes_per_line)
    return commands


def _group_commands(action: Action, group: Peers, by_attributes: Changes, prefixes_per_line: int) -> list[Command]:
    """The lines of one action towards one group of peers: per attribute set, at most N prefixes a line."""
    if not by_attributes:
        return []
    selector = neighbour_selector(group)
    family = family_of(group[0])
    commands: list[Command] = []
    for attributes in sorted(by_attributes, key=lambda value: () if value is None else value.sort_key()):
        words = "next-hop self" if attributes is None else attribute_words(attributes)
        for chunk in _chunks(_sorted(by_attributes[attributes]), prefixes_per_line):
            line = _line(selector, action, words, chunk)
            commands.append(Command(line, action, family, chunk, attributes, group))
    return commands


def end_of_rib_commands(peers: Mapping[Family, Sequence[IPAddress]]) -> list[str]:
    """One End-of-RIB per family, after the first full sync (graceful restart with manual-eor)."""
    return [
        f"{neighbour_selector(family_peers)} announce eor {family.value} unicast"
        for family, family_peers in sorted(peers.items(), key=lambda item: item[0].value)
        if family_peers
    ]


_ADJ_RIB_OUT_ROUTE = re.compile(
    r"^neighbor (?P<peer>[0-9a-fA-F.:]+) .*?\b(?P<family>ipv4|ipv6) unicast (?P<prefix>[0-9a-fA-F.:]+/\d+)(?P<rest>.*)$"
)


def _parse_held_attributes(rest: str) -> Attributes:
    """Attributes from the tail of a 'show adj-rib out extensive' line; UNKNOWN_ATTRIBUTES if unreadable."""
    tokens = rest.replace("[", " [ ").replace("]", " ] ").split()
    found: dict[str, object] = {}
    index = 0
    try:
        while index < len(tokens):
            word = tokens[index]
            values: list[str] = []
            if index + 1 < len(tokens) and tokens[index + 1] == "[":
                end = tokens.index("]", index + 2)
                values = tokens[index + 2 : end]
                index = end + 1
            elif index + 1 < len(tokens):
                values = [tokens[index + 1]]
                index += 2
            else:
                index += 1
            if word == "community":
                found["communities"] = tuple(sorted({parse_community(value) for value in values}))
            elif word == "large-community":
                found["large_communities"] = tuple(sorted({parse_large_community(value) for value in values}))
            elif word == "local-preference":
                found["local_preference"] = int(values[0])
            elif word == "med":
                found["med"] = int(values[0])
    except (ValueError, IndexError):
        return UNKNOWN_ATTRIBUTES
    return Attributes(**found)  # type: ignore[arg-type]


def parse_adj_rib_out(lines: Iterable[str]) -> dict[Prefix, dict[str, Attributes]]:
    """What ExaBGP holds per prefix and neighbour, from 'show adj-rib out extensive'."""
    held: dict[Prefix, dict[str, Attributes]] = {}
    for line in lines:
        match = _ADJ_RIB_OUT_ROUTE.match(line)
        if match is None:
            continue
        try:
            prefix = parse_prefix(match["prefix"])
        except ValueError:
            continue
        held.setdefault(prefix, {})[match["peer"]] = _parse_held_attributes(match["rest"])
    return held


def announced_from_held(
    held: Mapping[Prefix, Mapping[str, Attributes]], peers: Mapping[Family, Sequence[IPAddress]]
) -> dict[Prefix, Attributes]:
    """The announced state to start from: a prefix every peer of its family holds alike counts as announced
    with those attributes; one held by only some peers, or differently, as held with unknown attributes."""
    announced: dict[Prefix, Attributes] = {}
    for prefix, by_peer in held.items():
        family_peers = {str(peer) for peer in peers.get(family_of(prefix), ())}
        holders = {peer: attributes for peer, attributes in by_peer.items() if peer in family_peers}
        if not holders:
            continue
        values = set(holders.values())
        if set(holders) == family_peers and len(values) == 1:
            announced[prefix] = values.pop()
        else:
            announced[prefix] = UNKNOWN_ATTRIBUTES
    return announced
