"""Pure: announced versus desired, to ExaBGP command lines with an explicit per-family neighbour selector."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
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
)


class Action(Enum):
    ANNOUNCE = "announce"
    WITHDRAW = "withdraw"


@dataclass
class Plan:
    """The route changes that bring ExaBGP from what it holds to what is desired."""

    announce: dict[Prefix, Attributes] = field(default_factory=dict)
    withdraw: list[Prefix] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.announce or self.withdraw)


@dataclass(frozen=True)
class Command:
    """One line for ExaBGP and the routes it carries, so its ack can be applied to the announced state."""

    line: str
    action: Action
    family: Family
    prefixes: tuple[Prefix, ...]
    attributes: Attributes | None = None


def plan_changes(
    prefixes: Iterable[Prefix],
    desired: Callable[[Prefix], Attributes | None],
    announced: Mapping[Prefix, Attributes],
) -> Plan:
    """For each prefix named, announce it if wanted and not held as wanted, withdraw it if held and unwanted."""
    plan = Plan()
    for prefix in prefixes:
        wanted = desired(prefix)
        held = announced.get(prefix)
        if wanted is None:
            if held is not None:
                plan.withdraw.append(prefix)
        elif held != wanted:
            plan.announce[prefix] = wanted
    return plan


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
    return sorted(prefixes, key=lambda prefix: (prefix.version, int(prefix.network_address), prefix.prefixlen))


def _chunks(items: list[Prefix], size: int) -> Iterable[tuple[Prefix, ...]]:
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def _line(selector: str, action: Action, words: str, chunk: tuple[Prefix, ...]) -> str:
    if len(chunk) == 1:
        return f"{selector} {action.value} route {chunk[0]} {words}"
    return f"{selector} {action.value} attributes {words} nlri {' '.join(str(prefix) for prefix in chunk)}"


def render_commands(plan: Plan, peers: Mapping[Family, Sequence[IPAddress]], prefixes_per_line: int) -> list[Command]:
    """Withdraws first, then announces grouped by family and attributes, in bulk lines of at most N prefixes.

    Each line names only the peers of the prefixes' family; prefixes of a family without peers are dropped.
    """
    commands: list[Command] = []
    for family in Family:
        family_peers = peers.get(family, ())
        if not family_peers:
            continue
        selector = neighbour_selector(family_peers)
        withdrawn = _sorted(prefix for prefix in plan.withdraw if family_of(prefix) is family)
        for chunk in _chunks(withdrawn, prefixes_per_line):
            line = _line(selector, Action.WITHDRAW, "next-hop self", chunk)
            commands.append(Command(line, Action.WITHDRAW, family, chunk))
    for family in Family:
        family_peers = peers.get(family, ())
        if not family_peers:
            continue
        selector = neighbour_selector(family_peers)
        groups: dict[Attributes, list[Prefix]] = {}
        for prefix, attributes in plan.announce.items():
            if family_of(prefix) is family:
                groups.setdefault(attributes, []).append(prefix)
        for attributes in sorted(groups, key=Attributes.sort_key):
            words = attribute_words(attributes)
            for chunk in _chunks(_sorted(groups[attributes]), prefixes_per_line):
                line = _line(selector, Action.ANNOUNCE, words, chunk)
                commands.append(Command(line, Action.ANNOUNCE, family, chunk, attributes))
    return commands


def end_of_rib_commands(peers: Mapping[Family, Sequence[IPAddress]]) -> list[str]:
    """One End-of-RIB per family, after the first full sync (graceful restart with manual-eor)."""
    return [
        f"{neighbour_selector(family_peers)} announce eor {family.value} unicast"
        for family, family_peers in sorted(peers.items(), key=lambda item: item[0].value)
        if family_peers
    ]


# Held with attributes that could not be read, or that differ between peers: never equal to a desired value.
UNKNOWN_ATTRIBUTES = Attributes(local_preference=-1)

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
            prefix = ipaddress.ip_network(match["prefix"], strict=True)
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
