"""FakeApiServer: the public face of the stand-in API server (lifecycle, objects, faults, stats)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final

from lab.fakeapi.connections import ConnectionRegistry, cut
from lab.fakeapi.faults import RequestCounters
from lab.fakeapi.handler import Backend
from lab.fakeapi.listener import Listener
from lab.fakeapi.store import Store
from lab.fakeapi.wire import DEFAULT_NAMESPACE, ApiError, resource_for_kind

_LOG = logging.getLogger(__name__)

_BIND_ATTEMPTS: Final = 100  # rebinding after an unreachable period retries this often, 20 ms apart


class FakeApiServer:
    """A kube-apiserver stand-in for Services and EndpointSlices, with faults to inject.

    Use ``with FakeApiServer().start() as api:`` and point the official client at ``api.url``.

    Out of process, the same faults are POSTs with a JSON body of the method's arguments:
    ``/_lab/drop_watches``, ``/_lab/fail_next`` (``{"count": 2, "status": 500, "only": "list"}``),
    ``/_lab/expire_history``, ``/_lab/send_bookmarks``, ``/_lab/set_unreachable`` (``{"seconds": 3}``;
    ``null`` lasts until SIGUSR2 to the command-line server, which SIGUSR1 makes unreachable too);
    ``GET /_lab/stats`` returns ``stats()``. Dashes work as well as underscores in the action names.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        history_size: int = 10_000,
        bookmark_interval: float = 1.0,
    ) -> None:
        if bookmark_interval <= 0:
            raise ValueError("bookmark_interval must be positive")
        self._host = host.strip("[]")
        self._port = port
        self._store = Store(history_size)
        self._counters = RequestCounters()
        self._connections = ConnectionRegistry()
        self._backend = Backend(
            server=self,
            store=self._store,
            counters=self._counters,
            connections=self._connections,
            bookmark_interval=bookmark_interval,
            go_unreachable=lambda seconds, spare: self._go_unreachable(seconds, spare=spare),
        )
        self._listener_lock = threading.Lock()
        self._listener: Listener | None = None
        self._listener_thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._unreachable_period = 0  # bumped per set_unreachable, so a stale timer cannot end a newer one
        self._reachable_timer: threading.Timer | None = None

    # lifecycle

    def start(self) -> FakeApiServer:
        """Bind and serve in background threads; returns self."""
        with self._listener_lock:
            if self._started:
                raise RuntimeError("FakeApiServer already started")
            self._open_listener()
            self._started = True
        _LOG.info("fakeapi: serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving; open watches are cut without a terminating chunk, like a dying server's."""
        self._store.close()
        with self._listener_lock:
            self._stopped = True
            self._cancel_reachable_timer()
            self._close_listener()
        self._connections.cut_all()

    def __enter__(self) -> FakeApiServer:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://host:port``; unspecified addresses are given as loopback, IPv6 in brackets."""
        if not self._port:
            raise RuntimeError("the port is chosen at start(); call start() first")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self._host, self._host)  # noqa: S104
        return f"http://[{host}]:{self._port}" if ":" in host else f"http://{host}:{self._port}"

    def _open_listener(self) -> None:
        """Bind (rebinding the same port after an outage) and serve. Caller holds _listener_lock."""
        for attempt in range(_BIND_ATTEMPTS):
            try:
                listener = Listener((self._host, self._port), self._backend)
                break
            except OSError:
                if not self._started or attempt == _BIND_ATTEMPTS - 1:
                    raise
                time.sleep(0.02)
        self._port = int(listener.server_address[1])
        thread = threading.Thread(
            target=listener.serve_forever,
            kwargs={"poll_interval": 0.01},  # also how long stop() and set_unreachable() take
            name=f"fakeapi-listener-{self._port}",
            daemon=True,
        )
        thread.start()
        self._listener, self._listener_thread = listener, thread

    def _close_listener(self) -> None:
        """Stop accepting and close the listening socket, so connections are refused. Caller holds the lock."""
        listener, thread = self._listener, self._listener_thread
        self._listener = self._listener_thread = None
        if listener is not None:
            listener.shutdown()
            listener.server_close()
        if thread is not None:
            thread.join()

    # objects

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object by kind, namespace and name; returns the stored object."""
        resource = resource_for_kind(obj.get("kind"))
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
        try:
            scope = (namespace or DEFAULT_NAMESPACE) if resource.namespaced else ""
            stored, _ = self._store.write(resource, obj, scope, "apply")
        except ApiError as error:
            raise ValueError(error.message) from None
        decoded: dict[str, Any] = json.loads(stored.body)
        return decoded

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete an object; False if there was none."""
        return self._store.delete(resource_for_kind(kind), namespace, name) is not None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        stored = self._store.get(resource_for_kind(kind), namespace, name)
        if stored is None:
            return None
        decoded: dict[str, Any] = json.loads(stored.body)
        return decoded

    def resource_version(self) -> int:
        """The current global resourceVersion (the last write's)."""
        return self._store.resource_version

    # faults

    def drop_watches(self) -> None:
        """Cut every open watch connection without the terminating chunk."""
        for connection in self._store.drop_watches():
            cut(connection)

    def fail_next(self, count: int, status: int = 500, *, only: str | None = None) -> None:
        """Answer the next ``count`` API requests (only lists or only watches if asked) with ``status``."""
        self._counters.fail_next(count, status, only=only)

    def expire_history(self) -> None:
        """Compact: every open watch gets a 410 ERROR event, watches from any older rv get 410."""
        self._store.expire_history()

    def set_unreachable(self, seconds: float | None) -> None:
        """Close the listener and every connection for ``seconds`` (None: until set_reachable())."""
        self._go_unreachable(seconds, spare=None)

    def set_reachable(self) -> None:
        """Listen again on the same address and port."""
        with self._listener_lock:
            self._become_reachable()

    def send_bookmarks(self) -> None:
        """Send a BOOKMARK now on every watch that allowed bookmarks."""
        self._store.request_bookmarks()

    def stats(self) -> dict[str, Any]:
        """Request counters per resource plural, open watches, objects, resourceVersion, reachability."""
        counters = self._counters.snapshot()
        with self._listener_lock:
            reachable = self._listener is not None
        return {
            **counters,
            "open_watches": self._store.open_watch_counts(),
            "objects": self._store.object_counts(),
            "resource_version": self._store.resource_version,
            "reachable": reachable,
        }

    def _go_unreachable(self, seconds: float | None, *, spare: socket.socket | None) -> None:
        """Close the listener and all connections but ``spare`` (the lab request asking for this)."""
        with self._listener_lock:
            self._cancel_reachable_timer()
            self._unreachable_period += 1
            self._close_listener()
            if seconds is not None and not self._stopped:
                timer = threading.Timer(seconds, self._end_unreachable_period, (self._unreachable_period,))
                timer.daemon = True
                timer.start()
                self._reachable_timer = timer
        self._store.drop_watches()
        self._connections.cut_all(spare=spare)
        _LOG.info("fakeapi: unreachable %s", "until set_reachable()" if seconds is None else f"for {seconds} s")

    def _end_unreachable_period(self, period: int) -> None:
        with self._listener_lock:
            if period == self._unreachable_period:
                self._become_reachable()

    def _become_reachable(self) -> None:
        """Caller holds _listener_lock."""
        self._cancel_reachable_timer()
        if self._started and not self._stopped and self._listener is None:
            self._open_listener()
            _LOG.info("fakeapi: reachable again on %s", self.url)

    def _cancel_reachable_timer(self) -> None:
        if self._reachable_timer is not None:
            self._reachable_timer.cancel()
            self._reachable_timer = None
