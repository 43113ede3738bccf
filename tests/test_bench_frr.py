"""The benchmark's FRR poll over bgpd's vty socket (no FRR: a stand-in socket speaks vtysh's framing)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from bench.frr import BgpdVty


def _serve(path: Path, resets: int, answer: bytes) -> threading.Thread:
    """A vty stand-in: resets the first `resets` connections as soon as a command arrives, answers the others."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def run() -> None:
        with server:
            for number in range(resets + 1):
                connection, _ = server.accept()
                with connection:
                    connection.recv(4096)
                    if number < resets:
                        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        continue  # closed with linger 0: the client sees a reset
                    connection.sendall(answer + b"\x00\x00\x00\x00")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_vty_connection_reset_during_a_burst_is_retried_once_on_a_new_connection(tmp_path: Path) -> None:
    """bgpd resets the benchmark's vty connection now and then under a 5,000-change burst; a show command is
    read-only, so it is sent again once on a fresh connection instead of ending the run."""
    thread = _serve(tmp_path / "bgpd.vty", resets=1, answer=b'{"peers": {}}')
    vty = BgpdVty(tmp_path, timeout=5.0)
    assert vty.json("show bgp ipv4 unicast summary json") == {"peers": {}}
    vty.close()
    thread.join(5.0)
