"""Prometheus metrics on a dedicated registry, and one small HTTP server for /metrics, /healthz, /readyz, /status."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import platform
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import prometheus_client
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from announcer.config import ConfigError
from announcer.convert import Converted
from announcer.desired import DesiredTable
from announcer.exabgp import ExaBgpPipe
from announcer.kube import Changed, Relisted, ResourceWatcher
from announcer.model import Attributes, Family, Kind, Prefix, family_of
from announcer.policy import NODE_UNKNOWN_REASON
from announcer.reconcile import Action, Command
from announcer.sessions import SessionState
from announcer.status import PeerBoard, PeerState, SessionCollector, status_document

log = logging.getLogger(__name__)

Event = TypeVar("Event")

# /healthz answers 503 once the main loop has neither finished a pass, written a command, nor read a line of an answer
# it waits for, for this long. A pass normally ends every 0.5 s; a first sync of many routes writes commands
# throughout; the start-up read of a large adj-rib-out reads lines throughout (200,000 took 112 s here).
HEALTHY_WITHIN_SECONDS = 60.0
# The announced-routes gauge is recounted (one walk over the announced routes) at most this often.
ROUTES_RECOUNT_SECONDS = 1.0
# Event-to-command latency: a lone change is applied at once, a burst gathered up to 20 ms (daemon.BURST_LIMIT), a
# big sync can take a minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ACK_RESULTS = ("done", "error", "timeout")
# A route still announced that no Service or aggregate wants any more (its withdraw failed, or is pending).
STALE_KIND = "stale"

READY = "ready: synced, and the pipe to ExaBGP is open\n"
READY_WITH_SESSIONS = "ready: synced, the pipe to ExaBGP is open, a BGP session is up for every family\n"

_TEXT = ("Content-Type", "text/plain; charset=utf-8")


class LoopState(Protocol):
    """What the metrics read from the daemon's Announcer: on the main thread, except `synced` (a bool)."""

    @property
    def announced(self) -> Mapping[Prefix, Attributes]: ...

    @property
    def table(self) -> DesiredTable: ...

    @property
    def synced(self) -> bool: ...

    @property
    def synced_at(self) -> float | None: ...


class _PipeCollector:
    """Read at scrape time from the pipe's own counters: acks by result, and whether the pipe is open."""

    def __init__(self, pipe: ExaBgpPipe) -> None:
        self.pipe = pipe

    def collect(self) -> Iterable[Metric]:
        acks = CounterMetricFamily(
            "announcer_exabgp_acks",
            "Answers from ExaBGP to commands, by result (done, error, timeout).",
            labels=["result"],
        )
        for result in ACK_RESULTS:
            acks.add_metric([result], self.pipe.acks_total.get(result, 0))
        yield acks
        yield GaugeMetricFamily(
            "announcer_exabgp_pipe_open",
            "1 while the command pipe to ExaBGP is open, 0 once ExaBGP closed it or said 'shutdown'.",
            value=0 if self.pipe.closed.is_set() else 1,
        )


class _WatchCollector:
    """Read at scrape time from each watcher's WatchStats."""

    def __init__(self, watchers: Sequence[ResourceWatcher[Converted]]) -> None:
        self.watchers = list(watchers)

    def collect(self) -> Iterable[Metric]:
        restarts = CounterMetricFamily(
            "announcer_watch_restarts",
            "Watches or lists that failed (connection lost, API error, timeout) and were retried after a backoff.",
            labels=["resource"],
        )
        relists = CounterMetricFamily(
            "announcer_watch_relists",
            "Complete lists after the first one, made because the watch's resourceVersion expired (410).",
            labels=["resource"],
        )
        events = CounterMetricFamily(
            "announcer_watch_events", "ADDED, MODIFIED and DELETED watch events received.", labels=["resource"]
        )
        up = GaugeMetricFamily(
            "announcer_watch_up",
            "1 while the last list or watch request of a resource succeeded, 0 while it fails (retried with backoff).",
            labels=["resource"],
        )
        refused = GaugeMetricFamily(
            "announcer_watch_refused",
            "1 while the API server refuses a resource's list or watch (401 or 403: credentials or RBAC), else 0.",
            labels=["resource"],
        )
        for watcher in self.watchers:
            stats = watcher.stats
            restarts.add_metric([watcher.resource.value], stats.restarts)
            relists.add_metric([watcher.resource.value], max(stats.lists - 1, 0))
            events.add_metric([watcher.resource.value], stats.events)
            up.add_metric([watcher.resource.value], 0 if stats.failing else 1)
            refused.add_metric([watcher.resource.value], 1 if stats.refused else 0)
        yield from (restarts, relists, events, up, refused)


class DaemonMetrics:
    """The announcer's metrics, fed by the main loop and read by the HTTP thread, with health and readiness.

    The main loop calls `stamping` (around the watchers' sink), `commands_written` (Announcer.on_commands) and
    `iterated` (after each pass); the HTTP thread only reads gauges, counters and a few scalars.
    """

    def __init__(
        self,
        state: LoopState,
        pipe: ExaBgpPipe,
        listen: tuple[str, int],
        *,
        healthy_within: float = HEALTHY_WITHIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        peers: PeerState | None = None,
        ready_requires_sessions: bool = False,
    ) -> None:
        self.state = state
        self.ready_requires_sessions = ready_requires_sessions
        self.pipe = pipe
        self.listen = listen  # (host, port), parsed once by the configuration
        self.healthy_within = healthy_within
        self._clock = clock
        self._wall_clock = wall_clock
        self.registry = prometheus_client.CollectorRegistry()
        self.announced_routes = prometheus_client.Gauge(
            "announcer_announced_routes",
            f"Routes this node has ExaBGP announce, by family and kind ('{STALE_KIND}': wanted by nothing any more).",
            ["family", "kind"],
            registry=self.registry,
        )
        self.addresses_not_announced = prometheus_client.Gauge(
            "announcer_addresses_not_announced",
            "Service addresses (or Services without one) this node does not announce, by reason and kind.",
            ["reason", "kind"],
            registry=self.registry,
        )
        self.annotations_refused = prometheus_client.Gauge(
            "announcer_annotations_refused",
            "Services whose annotation the admin's policy ignores, by annotation and the rule (annotations.KIND.RULE) "
            "that refused it.",
            ["annotation", "rule"],
            registry=self.registry,
        )
        self.commands = prometheus_client.Counter(
            "announcer_exabgp_commands",
            "Route command lines written to ExaBGP (one line can carry many prefixes), by action and family.",
            ["action", "family"],
            registry=self.registry,
        )
        self.node_withdrawing = prometheus_client.Gauge(
            "announcer_node_state_withdrawing",
            f"1 while node state withdraws everything this node announces, per reason ('{NODE_UNKNOWN_REASON}': a "
            "rule is on and this node's Node is not known: not listed yet, missing, or forbidden).",
            ["reason"],
            registry=self.registry,
        )
        self._node_reasons_seen: set[str] = set()
        build = prometheus_client.Info(
            "announcer_build", "The announcer's version and the Python it runs on (value 1).", registry=self.registry
        )
        build.info({"version": importlib.metadata.version("service-announcer"), "python": platform.python_version()})
        self.last_full_sync = prometheus_client.Gauge(
            "announcer_last_full_sync_timestamp_seconds",
            "Unix time of the last sync from complete lists: the first one, then each one after a re-list.",
            registry=self.registry,
        )
        self.event_to_command = prometheus_client.Histogram(
            "announcer_event_to_command_seconds",
            "From a watch event's arrival in the announcer to the commands it led to being written to ExaBGP.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_PipeCollector(pipe))
        self.peers = peers
        self.board = None if peers is None else PeerBoard(peers)  # per peer: session, routes held, retries
        if self.board is not None:
            self.registry.register(SessionCollector(self.board))
        prometheus_client.ProcessCollector(registry=self.registry)
        # Label sets ever shown stay shown (at 0 when nothing has them): a series that vanishes reads as "unknown".
        self._route_labels_seen = {(family.value, kind.value) for family in Family for kind in Kind}
        self._reason_labels_seen: set[tuple[str, str]] = set()
        self._refusal_labels_seen: set[tuple[str, str]] = set()
        _set_counts(self.announced_routes, self._route_labels_seen, {})
        self._show_node_state()
        self._command_counters = {
            (action, family): self.commands.labels(action.value, family.value) for action in Action for family in Family
        }
        self._arrivals: dict[int, float] = {}
        self._arrivals_lock = threading.Lock()
        self._iterated_at = clock()
        self._written_at: float | None = None
        self._routes_dirty = False
        self._routes_counted_at = -math.inf
        self._seen_synced = False
        self.server: WSGIServer | None = None
        self._watchers: list[ResourceWatcher[Converted]] = []  # set by serve()

    # --- fed by the main loop ------------------------------------------------------------------------------
    def stamping(self, forward: Callable[[Event], None]) -> Callable[[Event], None]:
        """A watcher sink that notes when each watch event arrived, then hands it on (watcher threads)."""

        def stamp_and_forward(event: Event) -> None:
            if isinstance(event, Changed):
                with self._arrivals_lock:
                    self._arrivals[id(event)] = self._clock()
            forward(event)

        return stamp_and_forward

    def commands_written(self, commands: Sequence[Command], _seconds: float) -> None:
        """Announcer.on_commands: the lines of one sync have been written to ExaBGP."""
        for command in commands:
            self._command_counters[(command.action, command.family)].inc()
        self._written_at = self._clock()
        self._routes_dirty = True

    def iterated(self, batch: Sequence[object]) -> None:
        """After a pass of the main loop (its events handled, then a sync): heartbeat, latency and gauges."""
        now = self._clock()
        self._iterated_at = now
        written_at, self._written_at = self._written_at, None
        relisted = False
        for event in batch:
            if isinstance(event, Changed):
                with self._arrivals_lock:
                    arrived = self._arrivals.pop(id(event), None)
                if arrived is not None and written_at is not None:
                    self.event_to_command.observe(max(written_at - arrived, 0.0))
            elif isinstance(event, Relisted):
                relisted = True
        if batch:
            self._routes_dirty = True
            self._count_not_announced()
            self._show_node_state()
        if self.state.synced and not self._seen_synced:
            self._seen_synced = True
            self._routes_dirty = True
            self.last_full_sync.set(self.state.synced_at or self._wall_clock())
        elif self.state.synced and relisted:
            self.last_full_sync.set(self._wall_clock())
        recount = self._routes_dirty and now - self._routes_counted_at >= ROUTES_RECOUNT_SECONDS
        if recount:
            self._count_routes()
            self._routes_dirty = False
            self._routes_counted_at = now
        if self.board is not None:
            self.board.refresh(recount=recount)

    def _count_routes(self) -> None:
        counts: Counter[tuple[str, str]] = Counter()
        best = self.state.table.best
        for prefix in self.state.announced:
            wanted = best(prefix)
            counts[(family_of(prefix).value, STALE_KIND if wanted is None else wanted.kind.value)] += 1
        _set_counts(self.announced_routes, self._route_labels_seen, counts)

    def _show_node_state(self) -> None:
        reasons = set(self.state.table.node_reasons)
        self._node_reasons_seen |= reasons
        for reason in self._node_reasons_seen:
            self.node_withdrawing.labels(reason).set(1 if reason in reasons else 0)

    def _count_not_announced(self) -> None:
        counts = {
            (reason.value, kind.value): count for (reason, kind), count in self.state.table.not_wanted_counts.items()
        }
        _set_counts(self.addresses_not_announced, self._reason_labels_seen, counts)
        _set_counts(self.annotations_refused, self._refusal_labels_seen, dict(self.state.table.refused_counts))

    # --- read by the HTTP thread ---------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        """Healthy while the main loop has finished a pass, written a command, or read a line of an answer it waits
        for, within healthy_within."""
        progress = max(self._iterated_at, self.pipe.last_write_at or -math.inf, self.pipe.last_answer_at or -math.inf)
        age = self._clock() - progress
        if age <= self.healthy_within:
            return True, f"ok: the main loop made progress {age:.1f} s ago\n"
        return False, f"stale: the main loop made no progress for {age:.1f} s (limit {self.healthy_within:.0f} s)\n"

    def readiness(self) -> tuple[bool, str]:
        """Ready once the first full sync is done, while the pipe to ExaBGP is open, no list or watch is refused
        (401/403), with a node-state rule on, this node's Node is known, and, with metrics.ready_requires_sessions,
        every configured family has an established session."""
        if self.pipe.closed.is_set():
            return False, "not ready: the pipe to ExaBGP is closed\n"
        refused = [
            f"{watcher.resource.value}: {watcher.stats.failing}" for watcher in self._watchers if watcher.stats.refused
        ]
        if refused:
            return False, f"not ready: refused by the API server ({'; '.join(refused)})\n"
        if not self.state.synced:
            return False, "not ready: waiting for the first full sync\n"
        if NODE_UNKNOWN_REASON in self.state.table.node_reasons:
            return False, f"not ready: Node {self.state.table.node} is not known, so node state announces nothing\n"
        missing = self._families_without_session()
        if missing:
            return False, f"not ready: no established BGP session for {'; '.join(missing)}\n"
        return True, READY_WITH_SESSIONS if self.ready_requires_sessions else READY

    def _families_without_session(self) -> list[str]:
        """With metrics.ready_requires_sessions: each configured family without an established session, and the
        states of its peers."""
        if not self.ready_requires_sessions or self.peers is None:
            return []
        sessions = self.peers.sessions.current  # replaced as a whole on each change: safe to read here
        missing = []
        for family in Family:
            of_family = [session for session in sessions.values() if session.family is family]
            if of_family and not any(session.state is SessionState.UP for session in of_family):
                states = ", ".join(f"{session.peer} {session.state.value}" for session in of_family)
                missing.append(f"{family.value} ({states})")
        return missing

    def wsgi_app(self) -> WSGIApplication:
        """/metrics from the registry, /healthz and /readyz as 200 or 503 with a one-line reason."""
        metrics_app: WSGIApplication = prometheus_client.make_wsgi_app(self.registry)
        checks = {"/healthz": self.health, "/readyz": self.readiness}

        def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if environ.get("REQUEST_METHOD") != "GET":
                start_response("405 Method Not Allowed", [_TEXT, ("Allow", "GET")])
                return [b"only GET\n"]
            if path == "/metrics":
                return metrics_app(environ, start_response)
            if path == "/status" and self.board is not None:
                document = status_document(
                    self.board.snapshot,
                    ready=self.readiness(),
                    exabgp_version=self.pipe.exabgp_version,
                    last_error=self.pipe.last_error,
                )
                start_response("200 OK", [("Content-Type", "application/json")])
                return [json.dumps(document, indent=1).encode() + b"\n"]
            check = checks.get(path)
            if check is None:
                start_response("404 Not Found", [_TEXT])
                return [b"not found: /metrics, /healthz, /readyz or /status\n"]
            ok, text = check()
            start_response("200 OK" if ok else "503 Service Unavailable", [_TEXT])  # a new list: wsgiref adds to it
            return [text.encode()]

        return application

    def serve(self, watchers: Sequence[ResourceWatcher[Converted]]) -> None:
        """Start the HTTP server thread on metrics.listen; ConfigError (naming the key) if it cannot bind."""
        self._watchers = list(watchers)
        self.registry.register(_WatchCollector(watchers))
        host, port = self.listen
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            server = (_HttpServer6 if ":" in host else _HttpServer)((host, port), _QuietHandler)
        except OSError as error:
            raise ConfigError(f"metrics.listen: cannot listen on {shown}: {error.strerror or error}") from None
        server.set_app(self.wsgi_app())
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        self.server = server
        log.info("metrics on http://%s/metrics, health on /healthz and /readyz, peers on /status", shown)

    def close(self) -> None:
        """Stop the HTTP server (tests; the daemon's server thread ends with the process)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class _HttpServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request, and no reverse DNS lookup of the listen address at bind."""

    daemon_threads = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the debug log (stderr), not once per probe at every level."""

    def log_message(self, message_format: str, *args: Any) -> None:
        log.debug("metrics: %s %s", self.address_string(), message_format % args)


def _set_counts(
    gauge: prometheus_client.Gauge, seen: set[tuple[str, str]], counts: Mapping[tuple[str, str], int]
) -> None:
    """Set a two-label gauge to these counts; label sets seen before and absent now go to 0."""
    seen.update(counts)
    for labels in seen:
        gauge.labels(*labels).set(max(counts.get(labels, 0), 0))
