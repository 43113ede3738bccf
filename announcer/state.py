"""The route state machine: desired table and what ExaBGP holds, turned into commands on a Speaker.

The seam (docs/architecture.md): `Announcer` owns the announced routes, deferred withdrawals, retries and End-of-RIB
ordering, and talks to ExaBGP only through `Speaker` (send a command with an ack callback, query a 'show'
command). The daemon gives it the real pipe; tests give it a recording fake. Acks arrive on another thread:
`on_ack` callbacks only post an `AckFailed` event, which the main loop hands back to `handle`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from announcer.config import Config
from announcer.convert import Converted, ObjectKind
from announcer.desired import DesiredTable, ObjectKey
from announcer.kube import Backoff, Changed, ListPage, Relisted, Resource, WatchEvent
from announcer.model import Attributes, Family, IPAddress, Prefix, Problem, ServiceView, SliceView
from announcer.policy import NodeView
from announcer.reconcile import (
    UNKNOWN_ATTRIBUTES,
    Action,
    Command,
    Plan,
    announced_from_held,
    end_of_rib_commands,
    parse_adj_rib_out,
    plan_changes,
    render_commands,
)

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 60.0


class Speaker(Protocol):
    """What the Announcer needs of ExaBGP's API pipe (announcer.exabgp.ExaBgpPipe is the real one)."""

    def send(self, line: str, on_ack: Callable[[bool], None] | None = None) -> None:
        """Write one command; on_ack(accepted) is called once ExaBGP answered done (True) or error (False)."""

    def query(self, line: str, timeout: float) -> list[str]:
        """Send a 'show' command and return its answer lines; raises if no answer came in time."""

    def synchronise(self, timeout: float) -> str:
        """Discard every answer still queued for an earlier process (after a respawn); returns ExaBGP's version."""

    def take_resync(self) -> bool:
        """True once after answers were lost (an ack timeout): what ExaBGP holds must be read again."""


@dataclass(frozen=True)
class AckFailed:
    """ExaBGP did not accept a command; its routes are no longer counted as announced."""

    command: Command


@dataclass(frozen=True)
class NeighbourUp:
    """A BGP session came up (only subscribed with graceful restart, for the End-of-RIB)."""

    peer: str


class Wake:
    """Nothing to apply: wakes the loop (a signal arrived)."""


LoopEvent = WatchEvent[Converted] | AckFailed | NeighbourUp | Wake


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
        self.announced: dict[Prefix, Attributes] = {}
        self.listed: set[Resource] = set()
        self.queried = False  # ExaBGP's adj-rib-out read at start
        self.held_at_start = 0
        self.announced_before_sync = 0
        self.deferred: set[Prefix] = set()  # withdrawals held back until the first full sync
        self.synced = False
        self.synced_at: float | None = None
        self.problems: dict[tuple[ObjectKind, ObjectKey], tuple[Problem, ...]] = {}
        self.on_commands: Callable[[list[Command], float], None] | None = None
        self.retry: set[Prefix] = set()
        self.retry_at: float | None = None
        self.retry_backoff = Backoff(1.0, 30.0)

    # --- events --------------------------------------------------------------------------------------------
    def handle(self, event: LoopEvent) -> None:
        if isinstance(event, ListPage):
            self._page(event)
        elif isinstance(event, Relisted):
            self._relisted(event)
        elif isinstance(event, Changed):
            self._changed(event)
        elif isinstance(event, AckFailed):
            self._ack_failed(event.command)
        elif isinstance(event, NeighbourUp):
            self._neighbour_up(event.peer)

    def _page(self, event: ListPage[Converted]) -> None:
        """Objects of a list page: added or updated now; deletions wait for the whole list."""
        for item in event.objects:
            self._report(item)
            self._guarded(item, self._upsert)

    def _relisted(self, event: Relisted[Converted]) -> None:
        """The whole list (its pages already applied): whatever it no longer holds goes."""
        if event.resource is Resource.NODES:  # this node's Node: listed but absent withdraws nothing
            if not any(isinstance(item.view, NodeView) for item in event.objects):
                self._node(None)
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
        if view is None:
            log.warning("Node %s is missing: node state withdraws nothing while it is", self.table.node)
        if after and not before:
            log.info("node state: withdrawing everything this node announces (%s)", ", ".join(after))
        elif before and not after:
            log.info("node state: announcing again (was withdrawn for %s)", ", ".join(before))

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
            log.warning("%s ignored: %s", item.kind.value, item.error)
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
                    log.warning("%s", problem)
        else:
            self.problems.pop((kind, key), None)

    def _ack_failed(self, command: Command) -> None:
        """ExaBGP refused a command (ExaBGP 5.0 refuses IPv6 'next-hop self' while it does not know its local
        address yet): its routes are not counted as held, and are tried again after a backoff or when a
        session comes up."""
        for prefix in command.prefixes:
            if command.action is Action.ANNOUNCE and self.announced.get(prefix) == command.attributes:
                del self.announced[prefix]
            elif command.action is Action.WITHDRAW and prefix not in self.announced:
                self.announced[prefix] = UNKNOWN_ATTRIBUTES
        self.retry.update(command.prefixes)
        if self.retry_at is None:
            self.retry_at = self.clock() + self.retry_backoff.next_delay()

    def _neighbour_up(self, peer: str) -> None:
        """A session came up: retry what ExaBGP refused now; with graceful restart, send its End-of-RIB."""
        self.retry_backoff.reset()
        if self.retry:
            self.retry_at = self.clock()
        if self.synced and self.config.bgp.graceful_restart is not None:
            for line in end_of_rib_commands({family: [a for a in peers if str(a) == peer]
                                             for family, peers in self.peers.items()}):  # fmt: skip
                self.speaker.send(line)

    def _due_retries(self) -> set[Prefix]:
        if self.retry_at is None or self.clock() < self.retry_at:
            return set()
        due, self.retry, self.retry_at = self.retry, set(), None
        return due

    # --- commands ------------------------------------------------------------------------------------------
    def ready_to_sync(self) -> bool:
        return self.listed == {Resource.SERVICES, Resource.ENDPOINTSLICES}

    def sync(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Send what changed. Until both resources are fully listed, only announce (the first pages' routes go
        out while the rest is read); then reconcile everything ExaBGP held at start, withdrawals included."""
        started = self.clock()
        resynced = self.queried and self.speaker.take_resync()  # answers were lost: re-read what ExaBGP holds
        if not self.queried or resynced:
            if not self.queried:
                self.speaker.synchronise(QUERY_TIMEOUT)  # answers queued for a previous announcer process
            answer = self.speaker.query("show adj-rib out extensive", QUERY_TIMEOUT)
            self.announced = announced_from_held(parse_adj_rib_out(answer), self.peers)
            if not self.queried:
                self.held_at_start = len(self.announced)
            self.queried = True
        prefixes = self.table.take_dirty() | self._due_retries()
        if resynced:
            prefixes |= set(self.announced) | set(self.table.all_prefixes())
        if not self.synced and not self.ready_to_sync():
            plan = plan_changes(prefixes, self.table.desired_attributes, self.announced)
            self.deferred.update(plan.withdraw)
            plan.withdraw = []
            self.announced_before_sync += len(plan.announce)
            self._send(plan, stopping, started)
            return
        if not self.synced:
            prefixes |= self.deferred | set(self.announced)
            self.deferred = set()
        plan = plan_changes(prefixes, self.table.desired_attributes, self.announced)
        if not self.synced:
            log.info(
                "first sync: ExaBGP holds %d prefixes; %d to announce, %d to withdraw",
                self.held_at_start,
                self.announced_before_sync + len(plan.announce),
                len(plan.withdraw),
            )
        self._send(plan, stopping, started)
        if not self.synced:
            self.synced = True
            self.synced_at = time.time()
            if self.config.bgp.graceful_restart is not None:
                for line in end_of_rib_commands(self.peers):
                    self.speaker.send(line)

    def withdraw_all(self) -> None:
        """Withdraw every route ExaBGP holds for us (SIGTERM)."""
        self._send(Plan(withdraw=list(self.announced)), lambda: False, self.clock())

    def _send(self, plan: Plan, stopping: Callable[[], bool], started: float) -> None:
        if not plan:
            return
        written: list[Command] = []
        for command in render_commands(plan, self.peers, self.config.speaker.prefixes_per_line):
            if command.action is Action.ANNOUNCE and stopping():
                break
            self.speaker.send(command.line, self._on_ack(command))
            written.append(command)
            for prefix in command.prefixes:
                if command.attributes is not None:
                    self.announced[prefix] = command.attributes
                else:
                    self.announced.pop(prefix, None)
        if self.on_commands is not None:
            self.on_commands(written, self.clock() - started)

    def _on_ack(self, command: Command) -> Callable[[bool], None]:
        def acknowledge(accepted: bool) -> None:
            if not accepted:
                self.post(AckFailed(command))

        return acknowledge
