"""The loop: watch events to the desired table, the diff to commands, the commands to ExaBGP; signals."""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from announcer.config import Config
from announcer.convert import Converted, ObjectKind, converter, shape_of
from announcer.exabgp import ExaBgpPipe, PipeClosed, Stopping
from announcer.handover import StopAction, decide_stop, lookup_needed
from announcer.handover_lookup import LOOKUP_LIMIT, WatchedNode, look_up
from announcer.kube import (
    Backoff,
    Changed,
    KubeApi,
    ListPage,
    Relisted,
    Resource,
    ResourceWatcher,
    WatchEvent,
    make_api_client,
    node_field_selector,
)
from announcer.sessions import SessionsRead, parse_neighbor_summary
from announcer.state import QUERY_TIMEOUT, Announcer, LoopEvent, Wake

if TYPE_CHECKING:  # imported when metrics are on: prometheus_client is not needed without them
    from announcer.metrics import DaemonMetrics

log = logging.getLogger(__name__)

KINDS = {
    Resource.SERVICES: ObjectKind.SERVICE,
    Resource.ENDPOINTSLICES: ObjectKind.ENDPOINT_SLICE,
    Resource.NODES: ObjectKind.NODE,
}
WATCH_EVENTS = (Changed, ListPage, Relisted)  # what a burst is made of (acks and wake-ups are not)
# How long a burst's events are gathered into one diff at most: a change that comes during a long burst waits at
# most this long (plus the time to apply what came before it) before its commands are written.
BURST_LIMIT = 0.02
# How long changes wait at most for ExaBGP to answer the lines in flight before theirs are written anyway (then the
# pipe's ack window and ack timeout apply as to any line).
DEFER_LIMIT = 0.5
# Once synced, changes wait while more than this many of our lines await ExaBGP's answer (0: until all are answered).
DEFER_IN_FLIGHT = 0
# How long past shutdown_timeout the process may still run after SIGTERM: the orderly stop ends by shutdown_timeout
# (its waits are bounded); this only ends one that is stuck where nothing can bound it (a write to a pipe ExaBGP no
# longer reads).
STOP_GRACE = 1.0


# A first sync allocates millions of objects that nearly all live on (the desired table, the announced routes) or die
# by reference counting (the pages' JSON); the collector finds almost nothing (under 1,000 objects in a 10k-Service
# sync). With its default thresholds (700, 10, 10) it ran ~700 times there and rescanned the growing heap: 0.5 of the
# announcer's 1.7 CPU s at 10k Services. Raised, it runs a few young passes (50,000 allocations apart), for the same
# peak RSS. Once the first sync is out, the default thresholds are back and what is alive then is frozen (gc.freeze):
# freed by reference counting as ever, but never rescanned by the older passes (0.1-0.3 CPU s each at 10k).
FIRST_SYNC_GC_THRESHOLDS = (50_000, 50, 100)


class FirstSyncGc:
    """The collector's thresholds raised from start-up until the first sync is out; then restored, and the
    long-lived objects of the start-up and the first sync frozen."""

    def __init__(self, thresholds: tuple[int, int, int] = FIRST_SYNC_GC_THRESHOLDS) -> None:
        self._saved = gc.get_threshold()
        gc.set_threshold(*thresholds)
        self.raised = True

    def synced(self) -> None:
        """The first sync is out (idempotent)."""
        if self.raised:
            self.restore()
            gc.freeze()

    def restore(self) -> None:
        """The thresholds as they were (idempotent)."""
        if self.raised:
            self.raised = False
            gc.set_threshold(*self._saved)


class StopSignals:
    """SIGTERM and SIGINT, handled without a lock: the handler only records the signal in a plain attribute.

    Waking the loop is the interpreter's own C-level signal.set_wakeup_fd write (async-signal-safe) to a socket
    pair; a thread reading the other end calls `wake` (which may take locks: it is not in a signal handler).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.received_at = 0.0  # time.monotonic() of the first signal
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)  # a full buffer drops the byte instead of blocking the signal path
        self._previous_fd = -1

    def handler(self, number: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received_at = time.monotonic()
            self.received = number

    def adopt(self, early: tuple[int, float] | None) -> None:
        """A signal that came before the handlers were installed (recorded by the command line): as if it came now."""
        if early is not None and self.received is None:
            self.received_at = early[1]
            self.received = early[0]

    def install(self, wake: Callable[[], None]) -> None:
        """Install the handlers and the wake-up (main thread only)."""
        signal.signal(signal.SIGTERM, self.handler)
        signal.signal(signal.SIGINT, self.handler)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._wake_on_signal, args=(wake,), name="signal-wake", daemon=True).start()

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        self._writer.close()  # ends the wake thread's read

    def _wake_on_signal(self, wake: Callable[[], None]) -> None:
        """Each byte is a signal's number, written at C level before the main thread runs the Python handler:
        recorded here too, so `wake` sees the signal whatever the main thread is doing."""
        with contextlib.suppress(OSError):
            while numbers := self._reader.recv(64):
                for number in numbers:
                    if number in (signal.SIGTERM, signal.SIGINT):
                        self.handler(number, None)
                wake()
        self._reader.close()


class StopWatchdog:
    """Ends the process STOP_GRACE s after the stop's deadline if the orderly stop has not ended it by then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed = False

    def arm(self, deadline: float) -> None:
        """Once (any thread): exit at time.monotonic() `deadline` + STOP_GRACE."""
        with self._lock:
            if self._armed:
                return
            self._armed = True
        timer = threading.Timer(max(0.0, deadline + STOP_GRACE - time.monotonic()), self._expire)
        timer.daemon = True
        timer.start()

    @staticmethod
    def _expire() -> None:
        log.error("the stop did not end within shutdown_timeout (a write to ExaBGP blocks?): exiting now")
        logging.shutdown()
        os._exit(0)


def _drain(events: queue.Queue[LoopEvent], batch: list[LoopEvent]) -> int:
    """Append every event already queued to `batch`, without waiting; returns how many of them were watch events."""
    changes = 0
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return changes
        batch.append(event)
        if isinstance(event, WATCH_EVENTS):
            changes += 1


def _gather(
    events: queue.Queue[LoopEvent], first_wait: float, batch_delay: float, burst_limit: float = BURST_LIMIT
) -> list[LoopEvent]:
    """The next event and every event already queued behind it. A lone change is applied at once; while a burst
    goes on (another watch event was already queued), events are gathered as long as the next one comes within
    batch_delay of the previous one, for at most burst_limit, so a burst becomes a few diffs of many prefixes."""
    try:
        batch = [events.get(timeout=first_wait)]
    except queue.Empty:
        return []
    changes = _drain(events, batch) + isinstance(batch[0], WATCH_EVENTS)
    if changes < 2 or batch_delay <= 0:
        return batch
    end = time.monotonic() + burst_limit
    while (remaining := end - time.monotonic()) > 0:
        try:
            batch.append(events.get(timeout=min(batch_delay, remaining)))
        except queue.Empty:
            return batch
        _drain(events, batch)
    return batch


def _watchers(
    config: Config, api: KubeApi, sink: Callable[[WatchEvent[Converted]], None], stop: threading.Event
) -> list[ResourceWatcher[Converted]]:
    """One watcher per resource, decoding each object into its slim shape and converting it with convert.py as it reads
    it; this node's Node only when a node-state rule is on."""
    resources = [
        resource for resource in Resource if resource is not Resource.NODES or config.node_state.rule().enabled
    ]
    return [
        ResourceWatcher(
            resource,
            api,
            sink,
            stop,
            convert=converter(KINDS[resource], config.announce.annotation_prefix),
            shape=shape_of(KINDS[resource]),
            label_selector=config.announce.service_label_selector if resource is Resource.SERVICES else "",
            field_selector=node_field_selector(config.node) if resource is Resource.NODES else "",
            page_size=config.watch.page_size,
            watch_timeout=config.watch.watch_timeout,
            request_timeout=config.watch.request_timeout,
            backoff=Backoff(config.watch.backoff_initial, config.watch.backoff_max),
        )
        for resource in resources
    ]


def _loop(
    announcer: Announcer,
    events: queue.Queue[LoopEvent],
    pipe: ExaBgpPipe,
    signals: StopSignals,
    *,
    metrics: DaemonMetrics | None,
    batch_delay: float,
    first_sync_gc: FirstSyncGc | None = None,
) -> None:
    """Events to the table, the table to commands, until a signal or the pipe's end.

    Once synced, changes that come while ExaBGP still has lines of ours to answer are only applied to the table;
    their commands go out when the last of those lines is answered (each answer wakes the loop), when nothing came
    for a while, or DEFER_LIMIT after the first of them: ExaBGP gets a burst in a few long lines rather than many
    short ones, and applies them sooner (E, 5,000 changes in 1 s: BENCHMARKS.md). A lone change with nothing in
    flight goes out at once."""
    handled: list[LoopEvent] = []  # the events applied since the last sync (for the metrics)
    deferred_since: float | None = None
    while signals.received is None and not pipe.closed.is_set():
        batch = _gather(events, 0.5, batch_delay)
        for event in batch:
            announcer.handle(event)
        handled += batch
        if batch and announcer.synced and pipe.in_flight() > DEFER_IN_FLIGHT and signals.received is None:
            deferred_since = time.monotonic() if deferred_since is None else deferred_since
            if time.monotonic() - deferred_since < DEFER_LIMIT:
                continue
        deferred_since = None
        if signals.received is None:
            announcer.sync(lambda: signals.received is not None)
            if first_sync_gc is not None and announcer.synced:
                first_sync_gc.synced()
            if metrics is not None:
                metrics.iterated(handled)
        handled = []


def _read_sessions(pipe: ExaBgpPipe, events: queue.Queue[LoopEvent]) -> None:
    """Ask ExaBGP every session's state and post it: a respawned announcer is told nothing of sessions already up.
    Posted behind the neighbour lines read before the answer, so a later line wins over it and an earlier one not."""
    try:
        answer = pipe.query("show neighbor summary", QUERY_TIMEOUT)
    except PipeClosed as error:
        if pipe.closed.is_set():
            raise
        log.warning("ExaBGP did not tell the sessions' states (%s): unknown until each one changes", error)
        return
    events.put(SessionsRead(parse_neighbor_summary(answer)))


def _stop(config: Config, api: KubeApi, announcer: Announcer, pipe: ExaBgpPipe, signals: StopSignals) -> None:
    """After the stop signal: hand the routes over to the DaemonSet's next pod (nothing written: the peers keep them
    as stale, graceful restart) when handover.py says one comes, else withdraw them all. The API server is asked
    only when a hand-over is possible, within LOOKUP_LIMIT (at most half of shutdown_timeout)."""
    number = signals.received or signal.SIGTERM
    name = signal.Signals(number).name
    if pipe.closed.is_set():  # ExaBGP is going (it said 'shutdown', or closed the pipe): nothing can be written
        log.info("signal %s: ExaBGP's pipe is closed: nothing to withdraw; exiting", name)
        return
    graceful_restart, setting, rule = config.bgp.graceful_restart, config.speaker.stop, config.node_state.rule()
    facts = None
    if lookup_needed(graceful_restart, setting):
        watched = WatchedNode(announcer.table.node_view) if rule.enabled else None
        limit = min(LOOKUP_LIMIT, config.speaker.shutdown_timeout / 2)
        facts = look_up(api, os.environ, config.node, rule, watched=watched, limit=limit)
    decision = decide_stop(graceful_restart, setting, facts)
    if decision.action is StopAction.HAND_OVER:
        log.info("signal %s: stopping: handing over to the DaemonSet's next pod: %s", name, decision.reason)
        return
    shutdown_timeout = config.speaker.shutdown_timeout
    _withdraw_all(announcer, pipe, number, signals.received_at, shutdown_timeout, reason=decision.reason)


def _withdraw_all(
    announcer: Announcer, pipe: ExaBgpPipe, number: int, received_at: float, shutdown_timeout: float, *, reason: str
) -> None:
    """The orderly stop after signal `number`: the withdraw of everything ExaBGP holds for us written at once, then
    its acks awaited, all by shutdown_timeout after the signal (the pipe's waits end then, raising PipeClosed)."""
    log.info("signal %s: withdrawing every route and exiting (%s)", signal.Signals(number).name, reason)
    if pipe.closed.is_set():
        return
    deadline = received_at + shutdown_timeout
    pipe.shut_down(deadline)
    announcer.withdraw_all()
    if not pipe.drain(deadline - time.monotonic()):
        log.warning("not every withdraw was acknowledged within %.1f s", shutdown_timeout)


def run_daemon(config: Config, early_signal: Callable[[], tuple[int, float] | None] = lambda: None) -> int:
    """ExaBGP's API process: runs until SIGTERM/SIGINT (withdraw all, exit 0), 'shutdown' or EOF (exit).

    A stop signal is honoured within shutdown_timeout whatever the loop is doing: it interrupts the pipe's waits
    (a wedged ExaBGP), the withdraw-all is written without waiting for acks, and a watchdog ends whatever still
    blocks. `early_signal` gives a signal the command line recorded before these handlers were installed."""
    first_sync_gc = FirstSyncGc()
    events: queue.Queue[LoopEvent] = queue.Queue()
    stop = threading.Event()
    signals = StopSignals()

    # A reader of our own on fd 0: sys.stdin's lock would stop the interpreter's exit while a thread reads it.
    answers = io.BufferedReader(io.FileIO(sys.stdin.fileno(), "rb", closefd=False))
    pipe = ExaBgpPipe(
        sys.stdout.buffer,
        answers,
        max_in_flight=config.speaker.max_in_flight,
        ack_timeout=config.speaker.ack_timeout,
        on_neighbour=events.put,
    )
    watchdog = StopWatchdog()

    def wake() -> None:  # the signal-wake thread (or here, for an early signal): not a signal handler
        if signals.received is not None:
            pipe.interrupt()
            watchdog.arm(signals.received_at + config.speaker.shutdown_timeout)
        events.put(Wake())

    signals.install(wake)
    signals.adopt(early_signal())
    if signals.received is not None:
        wake()
    pipe.start()
    announcer = Announcer(config, pipe, events.put)
    announcer.on_first_read = lambda: _read_sessions(pipe, events)
    address = config.metrics.address
    metrics = None
    if address is not None:
        from announcer.metrics import DaemonMetrics

        metrics = DaemonMetrics(
            announcer, pipe, address, peers=announcer, ready_requires_sessions=config.metrics.ready_requires_sessions
        )
    if metrics is not None:
        announcer.on_commands = metrics.commands_written
    sink = events.put if metrics is None else metrics.stamping(events.put)
    api = KubeApi(make_api_client(config.watch.kubeconfig))
    watchers = _watchers(config, api, sink, stop)
    if metrics is not None:
        metrics.serve(watchers)
    for watcher in watchers:
        watcher.start()
    log.info("announcer started for node %s with %d peers", config.node, len(config.bgp.peers))
    try:
        with contextlib.suppress(Stopping):  # a wait of the pipe ended by the signal
            _loop(
                announcer,
                events,
                pipe,
                signals,
                metrics=metrics,
                batch_delay=config.speaker.batch_delay,
                first_sync_gc=first_sync_gc,
            )
        if signals.received is not None:
            stop.set()
            _stop(config, api, announcer, pipe, signals)
    except PipeClosed as error:
        log.info("ExaBGP pipe closed: %s", error)
    finally:
        first_sync_gc.restore()
        stop.set()
        for watcher in watchers:
            watcher.close()
        signals.close()
    log.info("announcer exiting")
    return 0
