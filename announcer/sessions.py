"""Pure: BGP session states per peer, from ExaBGP's neighbour events and its 'show neighbor summary'."""

# ExaBGP 5.0 (reactor/api/response/text.py) writes, with `neighbor-changes` in a neighbour's api block:
#     neighbor 192.0.2.1 connected          the TCP connection is up (OPEN not yet exchanged)
#     neighbor 192.0.2.1 up                 the session is established
#     neighbor 192.0.2.1 down - <reason>    the session or the connection closed (reason: peer-supplied text too)
# and answers 'show neighbor summary' (bgp/neighbor.py `summary`) with a header, then one line per peer:
#     192.0.2.1       64512    0:00:12 established           3          0
#     192.0.2.9       64512 1 day, 2:03:04 established       3          0
#     2001:db8::1     64512       down active                0          0
# A respawned API process is told nothing about sessions already up: the summary is how it learns them.
# A peer that refuses connections gives `connected` then `down - closing connection` on every connect attempt
# (reactor/protocol.py `connect` reports `connected` once its attempt ends, refused or not; seen with 5.0.15): only a
# change between down and up is settled (logged at info, counted); `connected` is a passing state.

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from announcer.model import Family, IPAddress, family_of


class SessionState(Enum):
    """A peer's BGP session as the announcer knows it ('unknown' until ExaBGP said)."""

    UNKNOWN = "unknown"
    DOWN = "down"
    CONNECTED = "connected"
    UP = "up"


_EVENT = re.compile(r"^neighbor (?P<peer>[0-9a-fA-F.:]+) (?P<state>up|down|connected)(?: -(?: (?P<reason>.*))?)?$")
# The up/down column may hold spaces ("1 day, 2:03:04"): the state is found by its name, before the two counters.
_SUMMARY = re.compile(
    r"^(?P<peer>[0-9a-fA-F.:]+)\s.*\s(?P<fsm>idle|active|connect|opensent|openconfirm|established)\s+\d+\s+\d+$"
)
# Peer-supplied text in a 'down' reason: kept printable and short before it reaches a log line or /status.
_REASON_CHARS = re.compile(r"[^ -~]")
REASON_MAX = 200


@dataclass(frozen=True)
class NeighbourEvent:
    """One neighbour state line from ExaBGP."""

    peer: str
    state: SessionState
    reason: str = ""


def parse_neighbour_event(text: str) -> NeighbourEvent | None:
    """A `neighbor X up|connected|down - reason` line, or None for any other line."""
    match = _EVENT.match(text)
    if match is None:
        return None
    reason = _REASON_CHARS.sub("?", match["reason"] or "")[:REASON_MAX]
    return NeighbourEvent(match["peer"], SessionState(match["state"]), reason)


def parse_neighbor_summary(lines: Iterable[str]) -> dict[str, SessionState]:
    """Per peer address (as ExaBGP prints it), its state from 'show neighbor summary': up when established, connected
    while OPEN messages are exchanged, else down. The header and any other line are skipped."""
    states: dict[str, SessionState] = {}
    for line in lines:
        match = _SUMMARY.match(line.strip())
        if match is None:
            continue
        fsm = match["fsm"]
        if fsm == "established":
            states[match["peer"]] = SessionState.UP
        elif fsm in ("opensent", "openconfirm"):
            states[match["peer"]] = SessionState.CONNECTED
        else:
            states[match["peer"]] = SessionState.DOWN
    return states


@dataclass(frozen=True)
class SessionsRead:
    """ExaBGP's answer to 'show neighbor summary' at start-up: each peer's state (parse_neighbor_summary)."""

    states: Mapping[str, SessionState]


SETTLED = (SessionState.DOWN, SessionState.UP)


@dataclass(frozen=True)
class Session:
    """One peer's session: its state; its settled state (down or up, unknown before either) and since when (the
    caller's wall clock, None: not settled yet); how often it changed between down and up; why it last went down."""

    peer: IPAddress
    state: SessionState = SessionState.UNKNOWN
    settled: SessionState = SessionState.UNKNOWN
    since: float | None = None
    changes: int = 0
    last_down_reason: str = ""

    @property
    def family(self) -> Family:
        return family_of(self.peer)


@dataclass(frozen=True)
class Transition:
    """A session changed state. `settled_from`: the settled state it left when it settled anew (down <-> up, or from
    unknown), else None (a connect attempt: down -> connected -> down)."""

    peer: IPAddress
    old: SessionState
    new: SessionState
    reason: str = ""
    settled_from: SessionState | None = None


class Sessions:
    """The configured peers' sessions. `current` is replaced as a whole on each change (never mutated), so another
    thread may read it at any time."""

    def __init__(self, peers: Sequence[IPAddress]) -> None:
        self.current: Mapping[IPAddress, Session] = {peer: Session(peer) for peer in peers}
        self._by_text = {str(peer): peer for peer in peers}

    def peer(self, text: str) -> IPAddress | None:
        """The configured peer ExaBGP names `text`, or None (not ours)."""
        return self._by_text.get(text)

    def set(self, text: str, state: SessionState, now: float, reason: str = "") -> Transition | None:
        """Record that peer `text` is in `state` at `now`; the transition, or None if nothing changed (or not ours)."""
        peer = self.peer(text)
        if peer is None:
            return None
        session = self.current[peer]
        if session.state is state:
            if state is SessionState.DOWN and reason and reason != session.last_down_reason:  # down again, anew
                self.current = {**self.current, peer: replace(session, last_down_reason=reason)}
            return None
        settles = state in SETTLED and state is not session.settled
        changed = replace(
            session,
            state=state,
            settled=state if settles else session.settled,
            since=now if settles else session.since,
            changes=session.changes + (settles and session.settled is not SessionState.UNKNOWN),  # learning: no change
            last_down_reason=reason if state is SessionState.DOWN and reason else session.last_down_reason,
        )
        self.current = {**self.current, peer: changed}
        return Transition(peer, session.state, state, reason, session.settled if settles else None)

    def established(self, family: Family) -> list[IPAddress]:
        """The peers of `family` whose session is up."""
        return [
            peer
            for peer, session in self.current.items()
            if session.family is family and session.state is SessionState.UP
        ]
