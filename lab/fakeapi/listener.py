"""One listening socket of a FakeApiServer (threaded HTTP), replaced by a fresh one after an unreachable period."""

from __future__ import annotations

import logging
import socket
import socketserver
import sys
from http.server import ThreadingHTTPServer
from typing import Any

from lab.fakeapi.handler import Backend, RequestHandler

_LOG = logging.getLogger(__name__)


class Listener(ThreadingHTTPServer):
    """One listening socket of a FakeApiServer; replaced by a fresh one after an unreachable period."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.backend = backend
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a lab without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.backend.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        if isinstance(request, socket.socket):
            self.backend.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            _LOG.debug("fakeapi: connection from %s ended: %s", client_address, error)
        else:
            _LOG.exception("fakeapi: error serving %s", client_address)
