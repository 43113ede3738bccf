"""M plain watches of Services on the real kube-apiserver, each counting the bytes it reads: its cost per watcher."""

# The announcers' own CPU bounds how many can run on this machine (50 decode 38 MB each), and 50 watchers' share of
# kube-apiserver's CPU hides in the spread of the writes' own cost. A watch stream read by a thread that only counts
# bytes costs this side little, so hundreds of them show what one more watcher of every change costs the server.

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
from urllib.parse import urlsplit

from lab.controlplane import ANNOUNCER, ControlPlane

READY_TIMEOUT = 60.0


class RawWatchers:
    """`count` watches of /api/v1/services from the current resourceVersion, as the announcer's ServiceAccount."""

    def __init__(self, plane: ControlPlane, count: int) -> None:
        address = urlsplit(plane.url)
        self.host, self.port = address.hostname or "127.0.0.1", address.port or 443
        self.context = ssl.create_default_context(cafile=str(plane.ca_path))
        self.count = count
        self.read = [0] * count
        self.connections: list[http.client.HTTPSConnection] = []
        self.threads: list[threading.Thread] = []
        self.ready = threading.Semaphore(0)
        self.failures: list[str] = []

    def _current_version(self) -> str:
        connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
        try:
            connection.request("GET", "/api/v1/services?limit=1", headers=self._headers())
            answer = connection.getresponse()
            document = json.loads(answer.read())
        finally:
            connection.close()
        return str(document["metadata"]["resourceVersion"])

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ANNOUNCER.token}", "Accept": "application/json"}

    def start(self) -> RawWatchers:
        """Open every watch; return once each has its answer's headers (it is registered with the watch cache)."""
        version = self._current_version()
        path = f"/api/v1/services?watch=1&resourceVersion={version}&allowWatchBookmarks=true&timeoutSeconds=1800"
        for index in range(self.count):
            connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=1800)
            self.connections.append(connection)
            thread = threading.Thread(target=self._watch, args=(index, connection, path), daemon=True)
            self.threads.append(thread)
            thread.start()
        for _ in range(self.count):
            if not self.ready.acquire(timeout=READY_TIMEOUT):
                raise RuntimeError(f"raw watches: not all {self.count} open within {READY_TIMEOUT:.0f} s")
        if self.failures:
            raise RuntimeError(f"raw watches: {len(self.failures)} failed, e.g. {self.failures[0]}")
        return self

    def _watch(self, index: int, connection: http.client.HTTPSConnection, path: str) -> None:
        try:
            connection.request("GET", path, headers=self._headers())
            answer = connection.getresponse()
            if answer.status != 200:
                self.failures.append(f"{answer.status} {answer.read()[:200]!r}")
        except (OSError, http.client.HTTPException) as error:
            self.failures.append(str(error))
            return
        finally:
            self.ready.release()
        try:
            while chunk := answer.read1(65536):
                self.read[index] += len(chunk)
        except (OSError, ValueError, http.client.HTTPException):
            return  # closed by close()

    def close(self) -> None:
        for connection in self.connections:
            if connection.sock is not None:
                with contextlib.suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=10)
        for connection in self.connections:
            connection.close()
