"""The HTTP/1.1 request handler: routing, lists, gets, writes, chunked watch streams and the /_lab/ actions."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from lab.fakeapi.connections import ConnectionRegistry, peer_has_closed
from lab.fakeapi.faults import RequestCounters
from lab.fakeapi.objects import ObjectFilter
from lab.fakeapi.store import Store, WatchCursor
from lab.fakeapi.wire import (
    DEFAULT_NAMESPACE,
    RESOURCE_PATH,
    RESOURCES_BY_PLURAL,
    VERSION_INFO,
    ApiError,
    RequestCategory,
    Resource,
    bookmark_line,
    encode,
    event_line,
    not_found,
    status_json,
)

if TYPE_CHECKING:
    from lab.fakeapi.listener import Listener
    from lab.fakeapi.server import FakeApiServer

_LOG = logging.getLogger(__name__)

_PEER_CHECK_INTERVAL: Final = 0.5  # seconds between checks that an idle watch's client is still there
_WRITE_BATCH_BYTES: Final = 256 * 1024  # watch chunks are coalesced into sendall() calls of about this size


@dataclass(frozen=True, slots=True)
class Backend:
    """What requests are served from: the server's store, counters, connections and fault controls."""

    server: FakeApiServer
    store: Store
    counters: RequestCounters
    connections: ConnectionRegistry
    bookmark_interval: float
    go_unreachable: Callable[[float | None, socket.socket | None], None]  # (seconds, connection to spare)


def _scope(resource: Resource, namespace: str | None) -> str:
    """The namespace an object is stored under: '' for a cluster-scoped resource."""
    return (namespace or DEFAULT_NAMESPACE) if resource.namespaced else ""


def _query_int(query: Mapping[str, str], name: str) -> int:
    text = query.get(name) or "0"
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, f"invalid {name}: {text!r}") from None


def _query_flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("true", "1")


class RequestHandler(BaseHTTPRequestHandler):
    """Routes one HTTP/1.1 connection's requests to the FakeApiServer."""

    protocol_version = "HTTP/1.1"
    server: Listener
    _response_started = False

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def version_string(self) -> str:
        return "fakeapi"

    def log_message(self, format: str, *args: Any) -> None:
        _LOG.debug("fakeapi: %s " + format, self.address_string(), *args)

    @property
    def _backend(self) -> Backend:
        return self.server.backend

    def _dispatch(self) -> None:
        self._response_started = False
        try:
            request_body = self._read_request_body()
            self._route(request_body)
        except ApiError as error:
            if self._response_started:
                self.close_connection = True
            else:
                self._send_status(error)
        except OSError as error:
            _LOG.debug("fakeapi: %s %s: connection ended: %s", self.command, self.path, error)
            self.close_connection = True
        except Exception:
            _LOG.exception("fakeapi: %s %s failed", self.command, self.path)
            if self._response_started:
                self.close_connection = True
            else:
                self._send_status(ApiError(500, "internal error in the fake API server"))

    def _read_request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise ApiError(400, "chunked request bodies are not supported by the fake API server")
        length_text = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, f"invalid Content-Length: {length_text!r}") from None
        return self.rfile.read(length) if length > 0 else b""

    # responses

    def _send_bytes(
        self, code: int, body: bytes, content_type: str = "application/json", *, close: bool = False
    ) -> None:
        self._response_started = True
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_status(self, error: ApiError) -> None:
        self._send_bytes(error.code, status_json(error))

    def _start_chunked(self) -> None:
        self._response_started = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send_chunks(self, lines: Iterable[bytes]) -> None:
        """Send each line as its own chunk, coalescing chunks into large socket writes."""
        pending = bytearray()
        for line in lines:
            pending += b"%x\r\n" % len(line)
            pending += line
            pending += b"\r\n"
            if len(pending) >= _WRITE_BATCH_BYTES:
                self.wfile.write(pending)
                pending.clear()
        if pending:
            self.wfile.write(pending)

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    # routing

    def _route(self, request_body: bytes) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/") or "/"
        if path.startswith("/_lab/"):
            self._route_lab(path.removeprefix("/_lab/").replace("-", "_"), request_body)
            return
        if path in ("/healthz", "/livez", "/readyz") and self.command == "GET":
            self._send_bytes(200, b"ok", "text/plain; charset=utf-8")
            return
        if path == "/version" and self.command == "GET":
            self._send_bytes(200, encode(VERSION_INFO))
            return
        match = RESOURCE_PATH.fullmatch(path)
        resource = RESOURCES_BY_PLURAL.get(match["plural"]) if match else None
        if match is None or resource is None or resource.path_prefix != match["prefix"]:
            raise ApiError(404, "the server could not find the requested resource")
        namespace = unquote(match["namespace"]) if match["namespace"] else None
        name = unquote(match["name"]) if match["name"] else None
        self._route_resource(resource, namespace, name, query, request_body)

    def _route_resource(
        self,
        resource: Resource,
        namespace: str | None,
        name: str | None,
        query: Mapping[str, str],
        request_body: bytes,
    ) -> None:
        method = self.command
        category: RequestCategory
        scoped = namespace is not None or not resource.namespaced  # a path that names one object's scope
        if (name is not None and not scoped) or (namespace is not None and not resource.namespaced):
            raise ApiError(404, "the server could not find the requested resource")
        if not resource.namespaced:
            namespace = ""  # cluster-scoped objects are stored under the namespace ""
        if method == "GET":
            category = "watch" if _query_flag(query, "watch") else "list" if name is None else "get"
        elif (method == "POST" and scoped and name is None) or (
            method in ("PUT", "DELETE") and scoped and name is not None
        ):
            category = "write"
        else:
            raise ApiError(405, f"the server does not allow {method} on this resource path")
        backend = self._backend
        backend.counters.count_request(resource, category)
        injected_status = backend.counters.take_injected_failure(category)
        if injected_status is not None:
            raise ApiError(injected_status, f"injected failure: {method} {self.path} answered {injected_status}")
        if category == "watch":
            self._serve_watch(resource, ObjectFilter.from_query(namespace, name, query), query)
        elif category == "list":
            body = backend.store.list_page(
                resource,
                ObjectFilter.from_query(namespace, None, query),
                limit=_query_int(query, "limit"),
                continue_token=query.get("continue") or None,
                resource_version=query.get("resourceVersion") or None,
            )
            backend.counters.count_list_served(resource)
            self._send_bytes(200, body)
        elif category == "get":
            stored = backend.store.get(resource, _scope(resource, namespace), name or "")
            if stored is None:
                raise not_found(resource, name or "")
            self._send_bytes(200, stored.body)
        else:
            self._serve_write(resource, _scope(resource, namespace), name, request_body)

    def _serve_write(self, resource: Resource, namespace: str, name: str | None, request_body: bytes) -> None:
        store = self._backend.store
        if self.command == "DELETE":
            deleted = store.delete(resource, namespace, name or "")
            if deleted is None:
                raise not_found(resource, name or "")
            self._send_bytes(200, deleted.body)
            return
        try:
            obj = json.loads(request_body)
        except ValueError:
            raise ApiError(400, "the request body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "the request body must be a JSON object")
        if self.command == "POST":
            stored, _ = store.write(resource, obj, namespace, "create")
            self._send_bytes(201, stored.body)
        else:
            stored, created = store.write(resource, obj, namespace, "replace", url_name=name)
            self._send_bytes(201 if created else 200, stored.body)

    # watches

    def _serve_watch(self, resource: Resource, object_filter: ObjectFilter, query: Mapping[str, str]) -> None:
        store = self._backend.store
        send_initial_events = _query_flag(query, "sendInitialEvents")
        opened = store.open_watch(
            resource,
            object_filter,
            resource_version=query.get("resourceVersion"),
            allow_bookmarks=_query_flag(query, "allowWatchBookmarks"),
            send_initial_events=send_initial_events,
            connection=self.connection if isinstance(self.connection, socket.socket) else None,
        )
        cursor = opened.cursor
        try:
            self._start_chunked()
            if opened.error_line is not None:
                self._send_chunks([opened.error_line])
                self._end_chunked()
                return
            self._send_chunks(
                event_line("ADDED", stored.body) for stored in opened.initial_objects if object_filter.matches(stored)
            )
            if send_initial_events:
                self._send_chunks([bookmark_line(resource, cursor.position, initial_events_end=True)])
            self._stream_watch_events(cursor, _query_int(query, "timeoutSeconds"))
        finally:
            store.close_watch(cursor)

    def _stream_watch_events(self, cursor: WatchCursor, timeout_seconds: int) -> None:
        backend = self._backend
        now = time.monotonic()
        deadline = now + timeout_seconds if timeout_seconds > 0 else float("inf")
        next_bookmark = now + backend.bookmark_interval if cursor.allow_bookmarks else float("inf")
        next_peer_check = now + _PEER_CHECK_INTERVAL
        while True:
            wake_at = min(deadline, next_bookmark, next_peer_check)
            wakeup = backend.store.wait_for_events(cursor, max(0.0, wake_at - time.monotonic()))
            if wakeup.dropped:
                self.close_connection = True  # no terminating chunk: the client sees the stream break
                return
            if wakeup.error_line is not None:
                self._send_chunks([wakeup.error_line])
                self._end_chunked()
                return
            lines = [line for event in wakeup.events if (line := cursor.object_filter.watch_line(event))]
            now = time.monotonic()
            if wakeup.bookmark_requested or now >= next_bookmark:
                lines.append(bookmark_line(cursor.resource, cursor.position))
                next_bookmark = now + backend.bookmark_interval
            if lines:
                self._send_chunks(lines)
            if now >= deadline:
                self._end_chunked()
                return
            if now >= next_peer_check:
                if peer_has_closed(self.connection):
                    self.close_connection = True
                    return
                next_peer_check = now + _PEER_CHECK_INTERVAL

    # fault injection over HTTP

    def _route_lab(self, action: str, request_body: bytes) -> None:
        backend = self._backend
        api = backend.server
        if action == "stats" and self.command == "GET":
            self._send_bytes(200, encode(api.stats()))
            return
        if self.command != "POST":
            raise ApiError(405, "/_lab/ actions are POSTs (GET only for /_lab/stats)")
        try:
            arguments = json.loads(request_body) if request_body.strip() else {}
        except ValueError:
            raise ApiError(400, "the request body is not valid JSON") from None
        if not isinstance(arguments, dict):
            raise ApiError(400, "the request body must be a JSON object")
        try:
            if action == "drop_watches":
                api.drop_watches()
            elif action == "expire_history":
                api.expire_history()
            elif action == "send_bookmarks":
                api.send_bookmarks()
            elif action == "fail_next":
                api.fail_next(
                    int(arguments.get("count", 1)), int(arguments.get("status", 500)), only=arguments.get("only")
                )
            elif action == "set_unreachable":
                seconds = arguments.get("seconds")
                backend.go_unreachable(None if seconds is None else float(seconds), self.connection)
                self._send_bytes(200, encode({"unreachable": True}), close=True)
                return
            else:
                raise ApiError(404, f"no such lab action: {action!r}")
        except (TypeError, ValueError) as error:
            raise ApiError(400, f"bad arguments for {action}: {error}") from None
        self._send_bytes(200, encode(api.stats()))
