"""A tiny stand-in API server that records every request's method, path, query and headers (what a client sends)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

NODE_PREFIX = "/api/v1/nodes/"


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived: method, path, raw query string and headers (names lower-cased)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]

    @property
    def is_watch(self) -> bool:
        return parse_qs(self.query).get("watch") == ["true"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        recorded = Recorded(
            "GET", parts.path, parts.query, {name.lower(): value for name, value in self.headers.items()}
        )
        self.server.owner.arrived(recorded)
        api = self.server.owner
        if api.status is not None:
            self._send(api.status, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": api.status})
        elif recorded.is_watch:
            self._watch()
        elif parts.path.startswith(NODE_PREFIX):
            node = api.nodes.get(parts.path.removeprefix(NODE_PREFIX))
            if node is None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})
            else:
                self._send(200, node)
        else:
            self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})

    def _send(self, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _watch(self) -> None:
        """One BOOKMARK, then the end of the watch, or (hold_watches) nothing more until the server stops."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        api = self.server.owner
        if api.hold_watches:
            self.wfile.flush()
            api.watching()
            api.stopped.wait()
            return
        event = b'{"type":"BOOKMARK","object":{"kind":"Status","metadata":{"resourceVersion":"2"}}}\n'
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))
        api.watching()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: RecordingApi) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


class RecordingApi:
    """Plays a cluster without Services or EndpointSlices: lists of no items, watches that end after one BOOKMARK
    (or stay open: hold_watches), the Nodes given (any other one 404); or answers `status` to everything.

    `on_request` runs in the request's thread before it is answered (the client is waiting for the answer).
    """

    def __init__(
        self,
        *,
        nodes: dict[str, object] | None = None,
        hold_watches: bool = False,
        on_request: Callable[[Recorded], None] | None = None,
    ) -> None:
        self.nodes = dict(nodes or {})
        self.hold_watches = hold_watches
        self.on_request = on_request
        self.status: int | None = None  # answer every request with this status (a Status body) when set
        self.requests: list[Recorded] = []
        self.watches = 0
        self.stopped = threading.Event()
        self.changed = threading.Condition()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def arrived(self, recorded: Recorded) -> None:
        if self.on_request is not None:
            self.on_request(recorded)
        with self.changed:
            self.requests.append(recorded)
            self.changed.notify_all()

    def watching(self) -> None:
        with self.changed:
            self.watches += 1
            self.changed.notify_all()

    def wait_for_watches(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.watches >= count, timeout=timeout)

    def take(self) -> list[Recorded]:
        """The requests recorded since the last take."""
        with self.changed:
            taken, self.requests = self.requests, []
        return taken

    def start(self) -> RecordingApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RecordingApi:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def kubeconfig_text(server: str, token: str) -> str:
    """A kubeconfig for server (plain HTTP) whose user authenticates with a bearer token."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "recorded", "cluster": {"server": server}}],
        "users": [{"name": "recorded", "user": {"token": token}}],
        "contexts": [{"name": "recorded", "context": {"cluster": "recorded", "user": "recorded"}}],
        "current-context": "recorded",
    }
    return json.dumps(document)  # JSON is YAML: the client's kubeconfig loader reads it
