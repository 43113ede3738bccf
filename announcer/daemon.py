"""The loop: watch events to the desired table, the diff to commands, the commands to ExaBGP."""

from __future__ import annotations

import io
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from announcer.config import Config
from announcer.convert import ObjectError, object_key, service_view, slice_view
from announcer.desired import DesiredTable, ObjectKey, Policy
from announcer.exabgp import ExaBgpPipe, PipeClosed
from announcer.kube import (
    Backoff,
    Changed,
    ListPage,
    Relisted,
    Resource,
    ResourceWatcher,
    WatchEvent,
    make_api_client,
)
from announcer.metrics import DaemonMetrics
from announcer.model import Attributes, Family, IPAddress, Prefix, Problem, ServiceView, SliceView
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


@dataclass(frozen=True)
class AckFailed:
    """ExaBGP did not accept a command; its routes are no longer counted as announced."""

    command: Command


@dataclass(frozen=True)
class NeighbourUp:
    """A BGP session came up (only subscribed with graceful restart, for the End-of-RIB)."""

    peer: str


@dataclass(frozen=True)
class Converted:
    """A Kubernetes object as the decision needs it, converted by the watcher thread that read it."""

    kind: str
    key: ObjectKey | None  # None: no usable namespace/name; the object is ignored, with the error
    view: ServiceView | SliceView | None
    problems: tuple[Problem, ...] = ()
    error: str = ""


def converter(resource: Resource, annotation_prefix: str) -> Callable[[dict[str, Any]], Converted]:
    """The function a watcher applies to each object it reads (pure)."""
    kind = "Service" if resource is Resource.SERVICES else "EndpointSlice"

    def convert(obj: dict[str, Any]) -> Converted:
        try:
            key = object_key(obj)
            if resource is Resource.SERVICES:
                view, problems = service_view(obj, annotation_prefix)
                return Converted(kind, key, view, tuple(problems))
            slice_, problems = slice_view(obj)
            return Converted(kind, key, slice_, tuple(problems))
        except ObjectError as error:
            return Converted(kind, None, None, (), str(error))

    return convert


class Wake:
    """Nothing to apply: wakes the loop (a signal arrived)."""


LoopEvent = WatchEvent | AckFailed | NeighbourUp | Wake


class Announcer:
    """Holds the desired table and what ExaBGP was told; turns events into commands on the pipe."""

    def __init__(self, config: Config, pipe: ExaBgpPipe, events: queue.Queue[LoopEvent]) -> None:
        self.config = config
        self.pipe = pipe
        self.events = events
        self.table = DesiredTable(config.node, Policy.from_config(config))
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
        self.problems: dict[tuple[str, ObjectKey], tuple[Problem, ...]] = {}
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

    def _page(self, event: ListPage) -> None:
        """Objects of a list page: added or updated now; deletions wait for the whole list."""
        converted: list[Converted] = event.objects
        for item in converted:
            self._report(item)
            if isinstance(item.view, ServiceView):
                self.table.upsert_service(item.view)
            elif isinstance(item.view, SliceView):
                self.table.upsert_slice(item.view)

    def _relisted(self, event: Relisted) -> None:
        """The whole list (its pages already applied): whatever it no longer holds goes."""
        converted: list[Converted] = event.objects
        if event.resource is Resource.SERVICES:
            self.table.replace_services(item.view for item in converted if isinstance(item.view, ServiceView))
        else:
            self.table.replace_slices(item.view for item in converted if isinstance(item.view, SliceView))
        self.listed.add(event.resource)

    def _changed(self, event: Changed) -> None:
        item: Converted = event.obj
        if item.key is None:
            self._report(item)
            return
        if event.kind == "DELETED":
            self.problems.pop((item.kind, item.key), None)
            if event.resource is Resource.SERVICES:
                self.table.delete_service(item.key)
            else:
                self.table.delete_slice(item.key)
            return
        self._report(item)
        if isinstance(item.view, ServiceView):
            self.table.upsert_service(item.view)
        elif isinstance(item.view, SliceView):
            self.table.upsert_slice(item.view)
        elif event.resource is Resource.ENDPOINTSLICES:
            self.table.delete_slice(item.key)  # no longer a slice of any Service

    def _report(self, item: Converted) -> None:
        """Log an object's problems once, when they change."""
        if item.key is None:
            log.warning("%s ignored: %s", item.kind, item.error)
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
            self.retry_at = time.monotonic() + self.retry_backoff.next_delay()

    def _neighbour_up(self, peer: str) -> None:
        """A session came up: retry what ExaBGP refused now; with graceful restart, send its End-of-RIB."""
        self.retry_backoff.reset()
        if self.retry:
            self.retry_at = time.monotonic()
        if self.synced and self.config.bgp.graceful_restart is not None:
            for line in end_of_rib_commands({family: [a for a in peers if str(a) == peer]
                                             for family, peers in self.peers.items()}):  # fmt: skip
                self.pipe.send(line)

    def _due_retries(self) -> set[Prefix]:
        if self.retry_at is None or time.monotonic() < self.retry_at:
            return set()
        due, self.retry, self.retry_at = self.retry, set(), None
        return due

    # --- commands ------------------------------------------------------------------------------------------
    def ready_to_sync(self) -> bool:
        return self.listed == {Resource.SERVICES, Resource.ENDPOINTSLICES}

    def sync(self, stop: threading.Event) -> None:
        """Send what changed. Until both resources are fully listed, only announce (the first pages' routes go
        out while the rest is read); then reconcile everything ExaBGP held at start, withdrawals included."""
        started = time.monotonic()
        resynced = self.queried and self.pipe.take_resync()  # answers were lost: re-read what ExaBGP holds
        if not self.queried or resynced:
            if not self.queried:
                self.pipe.synchronise(QUERY_TIMEOUT)  # answers queued for a previous announcer process
            answer = self.pipe.query("show adj-rib out extensive", QUERY_TIMEOUT)
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
            self._send(plan, stop, started)
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
        self._send(plan, stop, started)
        if not self.synced:
            self.synced = True
            self.synced_at = time.time()
            if self.config.bgp.graceful_restart is not None:
                for line in end_of_rib_commands(self.peers):
                    self.pipe.send(line)

    def withdraw_all(self, stop: threading.Event | None = None) -> None:
        plan = Plan(withdraw=list(self.announced))
        self._send(plan, stop or threading.Event(), time.monotonic())

    def _send(self, plan: Plan, stop: threading.Event, started: float) -> None:
        if not plan:
            return
        written: list[Command] = []
        for command in render_commands(plan, self.peers, self.config.speaker.prefixes_per_line):
            if stop.is_set() and command.action is Action.ANNOUNCE:
                break
            self.pipe.send(command.line, self._on_ack(command))
            written.append(command)
            for prefix in command.prefixes:
                if command.attributes is not None:
                    self.announced[prefix] = command.attributes
                else:
                    self.announced.pop(prefix, None)
        if self.on_commands is not None:
            self.on_commands(written, time.monotonic() - started)

    def _on_ack(self, command: Command) -> Callable[[bool], None]:
        def acknowledge(accepted: bool) -> None:
            if not accepted:
                self.events.put(AckFailed(command))

        return acknowledge


def _gather(events: queue.Queue[LoopEvent], first_wait: float, batch_delay: float) -> list[LoopEvent]:
    """The next event, and those that follow within batch_delay (a burst becomes one diff)."""
    try:
        batch = [events.get(timeout=first_wait)]
    except queue.Empty:
        return []
    deadline = time.monotonic() + batch_delay
    while True:
        remaining = deadline - time.monotonic()
        try:
            batch.append(events.get(timeout=remaining) if remaining > 0 else events.get_nowait())
        except queue.Empty:
            return batch


def run_daemon(config: Config) -> int:
    """ExaBGP's API process: runs until SIGTERM/SIGINT (withdraw all, exit 0), 'shutdown' or EOF (exit)."""
    events: queue.Queue[LoopEvent] = queue.Queue()
    stop = threading.Event()

    def on_signal(number: int, _frame: FrameType | None) -> None:
        log.info("signal %s: withdrawing every route and exiting", signal.Signals(number).name)
        stop.set()
        events.put(Wake())

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # A reader of our own on fd 0: sys.stdin's lock would stop the interpreter's exit while a thread reads it.
    answers = io.BufferedReader(io.FileIO(sys.stdin.fileno(), "rb", closefd=False))
    pipe = ExaBgpPipe(
        sys.stdout.buffer,
        answers,
        max_in_flight=config.speaker.max_in_flight,
        ack_timeout=config.speaker.ack_timeout,
        on_neighbour_up=lambda peer: events.put(NeighbourUp(peer)),
    )
    pipe.start()
    announcer = Announcer(config, pipe, events)
    metrics = None if config.metrics.listen is None else DaemonMetrics(announcer, pipe, config.metrics.listen)
    if metrics is not None:
        announcer.on_commands = metrics.commands_written
    api_client = make_api_client(config.watch.kubeconfig)
    watchers = [
        ResourceWatcher(
            resource,
            api_client,
            events.put if metrics is None else metrics.stamping(events.put),
            stop,
            convert=converter(resource, config.announce.annotation_prefix),
            label_selector=config.announce.service_label_selector if resource is Resource.SERVICES else "",
            page_size=config.watch.page_size,
            watch_timeout=config.watch.watch_timeout,
            request_timeout=config.watch.request_timeout,
            backoff=Backoff(config.watch.backoff_initial, config.watch.backoff_max),
        )
        for resource in Resource
    ]
    if metrics is not None:
        metrics.serve(watchers)
    for watcher in watchers:
        watcher.start()
    log.info("announcer started for node %s with %d peers", config.node, len(config.bgp.peers))
    try:
        while not stop.is_set() and not pipe.closed.is_set():
            batch = _gather(events, 0.5, config.speaker.batch_delay)
            for event in batch:
                announcer.handle(event)
            if not stop.is_set():
                announcer.sync(stop)
                if metrics is not None:
                    metrics.iterated(batch)
        if stop.is_set() and not pipe.closed.is_set():
            announcer.withdraw_all()
            if not pipe.drain(config.speaker.shutdown_timeout):
                log.warning("not every withdraw was acknowledged within %.1f s", config.speaker.shutdown_timeout)
    except PipeClosed as error:
        log.info("ExaBGP pipe closed: %s", error)
    finally:
        stop.set()
        for watcher in watchers:
            watcher.close()
    log.info("announcer exiting")
    return 0
