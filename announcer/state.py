"""The route state machine: desired table and what ExaBGP holds per peer, turned into commands on a Speaker."""

# The seam (docs/architecture.md): `Announcer` owns the announced routes, deferred withdrawals, retries and End-of-RIB
# ordering, and talks to ExaBGP only through `Speaker` (send a command with an ack callback, query a 'show'
# command). The daemon gives it the real pipe; tests give it a recording fake. Acks arrive on another thread:
# `on_ack` callbacks only post an `Answered` event, which the main loop hands back to `handle`.
#
# What ExaBGP 5.0 does with a line naming several neighbours (reactor/api/command/announce.py, then
# configuration/configuration.py `inject_change`): each route of the line is added to each named neighbour's
# adj-rib-out in configuration order, resolving `next-hop self` per neighbour (bgp/neighbor.py `remove_self`,
# `ip_self`). With `local-address auto` a neighbour's local address is only known once a TCP connection to it
# succeeded (reactor/protocol.py `connect`), so until then `ip_self` raises, the line stops there and is answered
# `error` (reactor/asynchronous.py): the neighbours before it in configuration order hold the line's first routes,
# those after it nothing. Hence: a refused line leaves its routes "held, attributes unknown" for every peer it named,
# and they are sent again at once in lines of their own per peer; a peer that refuses is then addressed only in its
# own lines, on its own backoff (or when its session comes up), so it never blocks nor delays the others. Before a
# prefix so left unknown is withdrawn, ExaBGP's adj-rib-out is read again to know which peers hold it.

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from announcer.config import Config
from announcer.convert import Converted, ObjectKind
from announcer.desired import DesiredTable, ObjectKey
from announcer.kube import Backoff, Changed, ListPage, Relisted, Resource, WatchEvent
from announcer.model import Attributes, Family, IPAddress, Kind, Prefix, Problem, ServiceView, SliceView, family_of
from announcer.policy import NodeView
from announcer.reconcile import (
    UNKNOWN_ATTRIBUTES,
    Action,
    Command,
    Holdings,
    Plan,
    end_of_rib_commands,
    parse_adj_rib_out,
    plan_changes,
    render_commands,
)
from announcer.sessions import NeighbourEvent, Sessions, SessionsRead, SessionState

log = logging.getLogger(__name__)

# How long ExaBGP may stay silent: before it answers 'version' (start-up), and between two lines of its answer to
# 'show adj-rib out' (the whole answer takes as long as it keeps coming: ~4.6 s for 30k lines here, so a minute or
# more for 400k, 50k dual-stack Services with several peers per family).
QUERY_TIMEOUT = 60.0
MAX_LOGGED_PREFIXES = 20  # a refused bulk line carries up to speaker.prefixes_per_line: its first ones are logged
# Until the first full sync, IPv6 announcements wait while IPv4 ones are written or in flight, then go out at most
# IPV6_LINES_AHEAD lines' worth of IPV6_AHEAD_PREFIXES ahead: ExaBGP applies our lines in order, packs ~50 IPv4 routes
# an UPDATE but sends every IPv6 route in an UPDATE of its own, so the IPv4 table, the cheap one, completes first, as
# early as ExaBGP alone would complete it (BENCHMARKS.md, "The first sync: IPv4 first"). The IPv6 lines fill ExaBGP's
# idle time while the list is read slower than ExaBGP applies it, in small lines, so a page read meanwhile waits
# behind a few hundred IPv6 routes at most; two lines keep ExaBGP busy while the next is written.
IPV6_LINES_AHEAD = 2
IPV6_AHEAD_PREFIXES = 100


class Speaker(Protocol):
    """What the Announcer needs of ExaBGP's API pipe (announcer.exabgp.ExaBgpPipe is the real one)."""

    def send(self, line: str, on_ack: Callable[[bool], None] | None = None) -> None:
        """Write one command; on_ack(accepted) is called once ExaBGP answered done (True) or error (False)."""

    def query(self, line: str, timeout: float) -> list[str]:
        """Send a 'show' command and return its answer lines; raises if ExaBGP sent no line of it for `timeout` s."""

    def synchronise(self, timeout: float) -> str:
        """Discard every answer still queued for an earlier process (after a respawn); returns ExaBGP's version."""

    def take_resync(self) -> bool:
        """True once after answers were lost (an ack timeout): what ExaBGP holds must be read again."""


@dataclass(frozen=True)
class Answered:
    """ExaBGP answered a command: `done` (accepted) or `error` (refused, or the answer was lost)."""

    command: Command
    accepted: bool
    reads: int = 0  # how often ExaBGP's adj-rib-out had been read when the command was written


class Wake:
    """Nothing to apply: wakes the loop (a signal arrived)."""


# A NeighbourEvent is a session's new state: logged and recorded; a session coming up gets what that peer refused at
# once, then (graceful restart) its End-of-RIB.
# SessionsRead: every peer's state, read once at start-up (a respawned process is told nothing of sessions up).
LoopEvent = WatchEvent[Converted] | Answered | NeighbourEvent | SessionsRead | Wake


class Announcer:
    """Holds the desired table and what ExaBGP was told; turns events into commands on the speaker.

    Single-threaded: every method runs on the main loop's thread. `post` hands an event back to that loop (it is
    called from the speaker's reader thread, for refused commands). `clock` is time.monotonic unless a test
    drives time itself.
    """

    def __init__(
        self,
        config: Config,
        speaker: Speaker,
        post: Callable[[LoopEvent], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.speaker = speaker
        self.post = post
        self.clock = clock
        self.table = DesiredTable(config.node, config.policy())
        self.peers: dict[Family, list[IPAddress]] = {
            family: [peer.address for peer in config.bgp.peers_of(family)] for family in Family
        }
        # Per address kind, the peers it may go to, for the kinds some peer is not sent (bgp.peers[].receive).
        every = frozenset(peer.address for peer in config.bgp.peers)
        receiving = {kind: frozenset(p.address for p in config.bgp.peers if kind in p.receive.kinds()) for kind in Kind}
        self.receivers_by_kind = {kind: peers for kind, peers in receiving.items() if peers != every}
        self.announced = Holdings(self.peers)  # what ExaBGP holds, per prefix and peer (as written, then answered)
        self.listed: set[Resource] = set()
        self.queried = False  # ExaBGP's adj-rib-out read at start
        self.held_at_start = 0
        self.announced_before_sync = 0
        self.deferred: set[Prefix] = set()  # withdrawals held back until the first full sync
        self.ipv6_waiting: set[Prefix] = set()  # before the first full sync: IPv6 behind IPv4 (IPV6_LINES_AHEAD)
        self.synced = False
        self.synced_at: float | None = None
        self.problems: dict[tuple[ObjectKind, ObjectKey], tuple[Problem, ...]] = {}
        self.on_commands: Callable[[list[Command], float], None] | None = None
        # Called once, when ExaBGP's adj-rib-out was first read (nothing of ours in flight): the daemon reads the
        # sessions' states then ('show neighbor summary') and posts them as SessionsRead.
        self.on_first_read: Callable[[], None] | None = None
        every_peer = [peer for peers in self.peers.values() for peer in peers]
        self.retry: dict[IPAddress, set[Prefix]] = {}  # per peer: prefixes to send it again
        self.retry_at: dict[IPAddress, float] = {}
        self.backoff = {peer: Backoff(1.0, 30.0) for peer in every_peer}
        self.refusing: set[IPAddress] = set()  # peers addressed only in lines of their own, on their own backoff
        self.unsure: set[Prefix] = set()  # left held-unknown by a refused line since ExaBGP's adj-rib-out was read
        self.in_flight: Counter[IPAddress] = Counter()  # per peer: commands naming it not answered yet
        self.reads = 0  # reads of ExaBGP's adj-rib-out: an answer to a command written before the last says nothing
        self.recheck: set[Prefix] = set()  # refused before the last read: planned again against what it showed
        self.end_of_rib_due: set[IPAddress] = set()  # graceful restart: peers owed an End-of-RIB
        self.sessions = Sessions(every_peer)  # each peer's BGP session, as ExaBGP told

    # --- events --------------------------------------------------------------------------------------------
    def handle(self, event: LoopEvent) -> None:
        if isinstance(event, ListPage):
            self._page(event)
        elif isinstance(event, Relisted):
            self._relisted(event)
        elif isinstance(event, Changed):
            self._changed(event)
        elif isinstance(event, Answered):
            self._answered(event.command, event.accepted, stale=event.reads < self.reads)
        elif isinstance(event, NeighbourEvent):
            self._neighbour(event)
        elif isinstance(event, SessionsRead):
            for peer, state in event.states.items():
                self._neighbour(NeighbourEvent(peer, state), came_up=False)
        for (namespace, name), refusal in self.table.take_refusals():
            where = f"Service {namespace}/{name}"
            fields = {"object": where, "annotation": refusal.annotation, "rule": refusal.rule}
            log.warning("%s: %s", where, refusal.describe(self.config.announce.annotation_prefix), extra=fields)

    def _page(self, event: ListPage[Converted]) -> None:
        """Objects of a list page: added or updated now; deletions wait for the whole list."""
        for item in event.objects:
            self._report(item)
            self._guarded(item, self._upsert)

    def _relisted(self, event: Relisted[Converted]) -> None:
        """The whole list (its pages already applied): whatever it no longer holds goes."""
        if event.resource is Resource.NODES:  # this node's Node: listed but absent, it is not known
            if not any(isinstance(item.view, NodeView) for item in event.objects):
                self._node(None)
            self.listed.add(event.resource)
            return
        if event.resource is Resource.SERVICES:
            self.table.replace_services(item.view for item in event.objects if isinstance(item.view, ServiceView))
        else:
            self.table.replace_slices(item.view for item in event.objects if isinstance(item.view, SliceView))
        self.listed.add(event.resource)

    def _changed(self, event: Changed[Converted]) -> None:
        item = event.obj
        self._report(item)
        if item.key is None:
            return
        if event.kind == "DELETED":
            self.problems.pop((item.kind, item.key), None)
            self._guarded(item, self._delete)
        else:
            self._guarded(item, self._upsert)

    def _upsert(self, item: Converted) -> None:
        if isinstance(item.view, NodeView):
            self._node(item.view)
        elif isinstance(item.view, ServiceView):
            self.table.upsert_service(item.view)
        elif isinstance(item.view, SliceView):
            self.table.upsert_slice(item.view)
        elif item.kind is ObjectKind.ENDPOINT_SLICE and item.key is not None and not item.unreadable:
            self.table.delete_slice(item.key)  # no longer a slice of any Service

    def _delete(self, item: Converted) -> None:
        if item.key is None:
            return
        if item.kind is ObjectKind.NODE:
            self._node(None)
        elif item.kind is ObjectKind.SERVICE:
            self.table.delete_service(item.key)
        else:
            self.table.delete_slice(item.key)

    def _node(self, view: NodeView | None) -> None:
        """This node's Node object changed (None: missing or deleted); logs when node state starts or ends."""
        before = self.table.node_reasons
        self.table.set_node(view)
        after = self.table.node_reasons
        node = {"object": f"Node {self.table.node}"}
        if view is None:
            log.warning("Node %s is missing: node state announces nothing while it is", self.table.node, extra=node)
        if after and not before:
            log.info("node state: withdrawing everything this node announces (%s)", ", ".join(after), extra=node)
        elif before and not after:
            log.info("node state: announcing again (was withdrawn for %s)", ", ".join(before), extra=node)

    def _guarded(self, item: Converted, apply: Callable[[Converted], None]) -> None:
        """Apply one object; if that fails (a bug, or a shape nothing foresaw), log it naming the object, skip it,
        and go on: one bad object never stops the others nor the watch."""
        try:
            apply(item)
        except Exception as error:
            name = "/".join(item.key) if item.key is not None else "?"
            log.error("%s %s skipped: applying it failed (%s: %s)", item.kind.value, name, type(error).__name__, error)

    def _report(self, item: Converted) -> None:
        """Log an object's problems once, when they change."""
        if item.key is None:
            log.warning("%s ignored: %s", item.kind.value, item.error, extra={"object": item.kind.value})
            return
        kind, key = item.kind, item.key
        known = self.problems.get((kind, key), ())
        current = item.problems
        if current == known:
            return
        if current:
            self.problems[(kind, key)] = current
            for problem in current:
                if problem not in known:
                    log.warning("%s", problem, extra={"object": problem.obj, "field": problem.field})
        else:
            self.problems.pop((kind, key), None)

    def _answered(self, command: Command, accepted: bool, *, stale: bool = False) -> None:
        """ExaBGP answered a command. Refused (ExaBGP 5.0 refuses 'next-hop self' towards a peer it has not
        connected to yet): its routes are held with unknown attributes by every peer it named, unless a later
        line changed them since; a line naming several peers is sent again at once to each alone, a line naming
        one peer after that peer's backoff (or when its session comes up). Refused, or given up on (an ack
        timeout), but written before ExaBGP's adj-rib-out was last read (`stale`): that read showed what the
        command left, so its routes are only planned again against it."""
        for peer in command.peers:
            self.in_flight[peer] -= 1
            if self.in_flight[peer] <= 0:
                del self.in_flight[peer]
        if accepted:
            self._accepted(command)
            return
        if stale:
            self.recheck.update(command.prefixes)
            now = self.clock()
            for peer in command.peers:  # what was held back for it waited for this answer, which says nothing
                if self.retry.get(peer) and peer not in self.retry_at and not self.in_flight[peer]:
                    self.retry_at[peer] = now
            return
        log.info(
            "ExaBGP refused to %s %d prefixes (first %s) towards %s; sending them again",
            command.action.value,
            len(command.prefixes),
            command.prefixes[0] if command.prefixes else "-",
            ", ".join(map(str, command.peers)),
            extra={
                "peer": ", ".join(map(str, command.peers)),
                "prefix": " ".join(map(str, command.prefixes[:MAX_LOGGED_PREFIXES])),
            },
        )
        for prefix in command.prefixes:
            for peer in command.peers:
                if self.announced.of(prefix, peer) == command.attributes:
                    self.announced.record(prefix, (peer,), UNKNOWN_ATTRIBUTES)
                    self.unsure.add(prefix)
        now = self.clock()
        for peer in command.peers:
            self.retry.setdefault(peer, set()).update(command.prefixes)
            self.refusing.add(peer)
            if len(command.peers) > 1:
                self.retry_at[peer] = now  # which peer refused is unknown: each is tried alone, at once
            elif peer not in self.retry_at:
                self.retry_at[peer] = now + self.backoff[peer].next_delay()

    def _accepted(self, command: Command) -> None:
        """Every peer the command names took it (ExaBGP stops a line at the first peer that fails): a refusing
        one is healthy again, and what was held back for it while this line was in flight goes now."""
        for peer in command.peers:
            self.backoff[peer].reset()
            if peer in self.refusing:
                self.refusing.discard(peer)
                if self.retry.get(peer):
                    self.retry_at[peer] = self.clock()

    def _neighbour(self, event: NeighbourEvent, *, came_up: bool = True) -> None:
        """A session's state: recorded and logged when it changed. Up: retry what that peer refused now; with
        graceful restart, a session that came up (not one found up at start-up, which the first sync's End-of-RIB
        covers) is owed an End-of-RIB (sent once its routes are accepted)."""
        change = self.sessions.set(event.peer, event.state, time.time(), event.reason)
        if change is not None:  # info when it settles anew (down <-> up), debug for each connect attempt
            old = change.old if change.settled_from is None else change.settled_from
            level = logging.DEBUG if change.settled_from is None else logging.INFO
            level = logging.WARNING if old is SessionState.UP else level
            why = f" ({change.reason})" if change.reason else ""
            family = family_of(change.peer).value
            log.log(level, "BGP session %s (%s): %s -> %s%s", change.peer, family, old.value, change.new.value, why)
        peer = self.sessions.peer(event.peer)
        if peer is None or event.state is not SessionState.UP:
            return
        self.backoff[peer].reset()
        if self.retry.get(peer):
            self.retry_at[peer] = self.clock()
        if came_up and self.synced and self.config.bgp.graceful_restart is not None:
            self.end_of_rib_due.add(peer)

    def _due_retries(self) -> dict[IPAddress, set[Prefix]]:
        now = self.clock()
        due: dict[IPAddress, set[Prefix]] = {}
        for peer, at in list(self.retry_at.items()):
            if at <= now:
                del self.retry_at[peer]
                due[peer] = self.retry.pop(peer, set())
        return due

    # --- commands ------------------------------------------------------------------------------------------
    def ready_to_sync(self) -> bool:
        """Every resource listed: Services, EndpointSlices, and this node's Node when a node-state rule reads it (so
        the first full sync, and End-of-RIB with it, wait for the Node)."""
        return self.listed >= self.needed

    @property
    def needed(self) -> set[Resource]:
        needed = {Resource.SERVICES, Resource.ENDPOINTSLICES}
        return needed | {Resource.NODES} if self.table.policy.node.enabled else needed

    def sync(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Send what changed. Until both resources are fully listed, only announce (the first pages' routes go
        out while the rest is read); then reconcile everything ExaBGP held at start, withdrawals included."""
        started = self.clock()
        resynced = self.queried and self.speaker.take_resync()  # answers were lost: re-read what ExaBGP holds
        if not self.queried or resynced:
            if not self.queried:
                self.speaker.synchronise(QUERY_TIMEOUT)  # answers queued for a previous announcer process
            self._read_held()
            if not self.queried:
                self.held_at_start = len(self.announced)
                if self.on_first_read is not None:
                    self.on_first_read()
            self.queried = True
        prefixes = self.table.take_dirty() | self.recheck
        self.recheck = set()
        if resynced:
            prefixes |= set(self.announced) | set(self.table.all_prefixes())
        if self.unsure and self._withdraws_unsure(prefixes):
            unsure = self.unsure
            self._read_held()  # which peers hold what a refused line may have left: ExaBGP's adj-rib-out says
            prefixes |= unsure
        if not self.synced and not self.ready_to_sync():
            plan = self._plan(self._ipv4_first(prefixes))
            self.deferred.update(plan.withdrawn_prefixes())
            plan.drop_withdrawals()
            self.announced_before_sync += plan.announced_count()
            self._send(plan, stopping, started)
            return
        if not self.synced:
            prefixes |= self.deferred | self.ipv6_waiting | set(self.announced)
            self.deferred, self.ipv6_waiting = set(), set()
        plan = self._plan(prefixes)
        if not self.synced:
            log.info(
                "first sync: ExaBGP holds %d prefixes; %d to announce, %d to withdraw",
                self.held_at_start,
                self.announced_before_sync + plan.announced_count(),
                len(plan.withdrawn_prefixes()),
            )
        self._send(plan, stopping, started)
        if not self.synced:
            self.synced = True
            self.synced_at = time.time()
            if self.config.bgp.graceful_restart is not None:
                self.end_of_rib_due = {peer for peers in self.peers.values() for peer in peers}
        self._send_end_of_rib()

    def _ipv4_first(self, prefixes: set[Prefix]) -> set[Prefix]:
        """Before the first full sync, what to plan now: every IPv4 prefix and every prefix no longer wanted (its
        withdrawal is deferred anyway); the IPv6 announcements only once no IPv4 line is written now nor in flight,
        and only IPV6_AHEAD_PREFIXES for each of the IPV6_LINES_AHEAD lines not in flight. The rest wait in
        `ipv6_waiting` for a later sync (each answer wakes the loop) or the full sync."""
        if not self.peers[Family.IPV4] or not self.peers[Family.IPV6]:
            return prefixes
        desired = self.table.desired_attributes
        waiting = self.ipv6_waiting
        now: set[Prefix] = set()
        ipv4 = False
        for prefix in prefixes:
            if prefix.family is Family.IPV4:
                ipv4 = True
                now.add(prefix)
            elif desired(prefix) is None:
                waiting.discard(prefix)
                now.add(prefix)
            else:
                waiting.add(prefix)
        if ipv4 or any(self.in_flight[peer] for peer in self.peers[Family.IPV4]):
            return now
        lines = max(self.in_flight[peer] for peer in self.peers[Family.IPV6])
        room = max(0, IPV6_LINES_AHEAD - lines) * min(IPV6_AHEAD_PREFIXES, self.config.speaker.prefixes_per_line)
        if room >= len(waiting):
            self.ipv6_waiting = set()
            return now | waiting
        chosen = set(itertools.islice(waiting, room))  # any of them: each line is sorted when rendered
        waiting -= chosen
        return now | chosen

    def _read_held(self) -> None:
        answer = self.speaker.query("show adj-rib out extensive", QUERY_TIMEOUT)
        self.announced.load(parse_adj_rib_out(answer))
        self.unsure = set()
        self.reads += 1

    def _withdraws_unsure(self, prefixes: set[Prefix]) -> bool:
        """Whether a prefix a refused line left held-unknown is about to be withdrawn (now or as a retry due)."""
        desired = self.table.desired_attributes
        now = self.clock()
        due = [self.retry.get(peer, set()) for peer, at in self.retry_at.items() if at <= now]
        return any(
            prefix in self.unsure and desired(prefix) is None
            for candidates in (prefixes, *due)
            for prefix in candidates
        )

    def _plan(self, prefixes: set[Prefix]) -> Plan:
        """The changes for `prefixes` (every peer of their family, in bulk where all need the same), then the
        retries due (per peer alone). A refusing peer's changes wait for its retry."""
        desired = self.table.desired_attributes
        receivers = self._receivers if self.receivers_by_kind else None
        plan = plan_changes(prefixes, desired, self.announced, apart=self.refusing, receivers=receivers)
        for peer in self.refusing:
            held_back = plan.take_peer(peer)
            if held_back:
                self.retry.setdefault(peer, set()).update(held_back)
                if peer not in self.retry_at and not self.in_flight[peer]:
                    self.retry_at[peer] = self.clock()
        for peer, retried in self._due_retries().items():
            fresh = retried if peer in self.refusing else retried - prefixes  # the rest was planned for it above
            among = {family_of(peer): [peer]}
            plan.merge(plan_changes(fresh, desired, self.announced, among=among, receivers=receivers))
        return plan

    def _receivers(self, prefix: Prefix) -> frozenset[IPAddress] | None:
        """The peers a wanted prefix may go to, when its kind is not sent to every peer (None: every peer)."""
        best = self.table.best(prefix)
        return None if best is None else self.receivers_by_kind.get(best.kind)

    def _desired_for(self, prefix: Prefix, peer: IPAddress) -> Attributes | None:
        """What one peer should hold for a prefix."""
        receivers = self._receivers(prefix) if self.receivers_by_kind else None
        return None if receivers is not None and peer not in receivers else self.table.desired_attributes(prefix)

    def _send_end_of_rib(self) -> None:
        """End-of-RIB to each peer owed one whose routes are all accepted: no command naming it awaits its
        answer and nothing it refused waits for a retry (a helper drops its stale paths at End-of-RIB)."""
        if not self.end_of_rib_due:
            return
        ready = {
            peer
            for peer in self.end_of_rib_due
            if not self.in_flight[peer]
            and all(
                self.announced.of(prefix, peer) == self._desired_for(prefix, peer)
                for prefix in self.retry.get(peer, ())
            )
        }
        if not ready:
            return
        self.end_of_rib_due -= ready
        for line in end_of_rib_commands(
            {family: [p for p in peers if p in ready] for family, peers in self.peers.items()}
        ):
            self.speaker.send(line)

    def withdraw_all(self) -> None:
        """Withdraw every route ExaBGP holds for us (SIGTERM); before the start-up read, ExaBGP's adj-rib-out is read
        first (it may hold a previous announcer process's routes)."""
        if not self.queried:
            self.speaker.synchronise(QUERY_TIMEOUT)
            self._read_held()
            self.queried = True
        plan = plan_changes(list(self.announced), lambda _: None, self.announced, apart=self.refusing)
        self._send(plan, lambda: False, self.clock())

    def _send(self, plan: Plan, stopping: Callable[[], bool], started: float) -> None:
        if not plan:
            return
        written: list[Command] = []
        for command in render_commands(plan, self.peers, self.config.speaker.prefixes_per_line):
            if command.action is Action.ANNOUNCE and stopping():
                break
            self.speaker.send(command.line, self._on_ack(command))
            written.append(command)
            self.in_flight.update(command.peers)
            for prefix in command.prefixes:
                self.announced.record(prefix, command.peers, command.attributes)
        if self.on_commands is not None:
            self.on_commands(written, self.clock() - started)

    def _on_ack(self, command: Command) -> Callable[[bool], None]:
        reads = self.reads

        def acknowledge(accepted: bool) -> None:
            self.post(Answered(command, accepted, reads))

        return acknowledge
