"""Every accepted connection, so faults and shutdown can cut them all; checks for a peer that went away."""

from __future__ import annotations

import contextlib
import socket
import threading


class ConnectionRegistry:
    """Every accepted connection, so faults and shutdown can cut them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()

    def add(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def discard(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def cut_all(self, spare: socket.socket | None = None) -> None:
        with self._lock:
            connections = [connection for connection in self._connections if connection is not spare]
        for connection in connections:
            cut(connection)


def cut(connection: socket.socket) -> None:
    """End a connection abruptly; the thread serving it notices and closes it."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


def peer_has_closed(connection: socket.socket) -> bool:
    """Whether the client has closed its end (checked without consuming anything it sent)."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
