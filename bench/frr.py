"""Cheap FRR polling: bgpd's vty socket spoken directly (no vtysh process per poll), prefix counts per peer."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# vtysh's end-of-answer marker: three NUL bytes, then the command's status byte.
_TERMINATOR = b"\x00\x00\x00"


class VtyError(RuntimeError):
    """bgpd refused a command or the socket closed."""


class BgpdVty:
    """One persistent connection to bgpd's vty socket (RUN/bgpd.vty), as vtysh speaks it.

    A Unix socket bound in the filesystem is reachable from any network namespace, so the benchmark polls
    the router from its own process: one poll costs bgpd the command and this process one JSON decode.
    """

    def __init__(self, runtime_dir: Path, timeout: float = 30.0) -> None:
        self.path = runtime_dir / "bgpd.vty"
        self.timeout = timeout
        self._socket: socket.socket | None = None
        self.polls = 0

    def _connect(self) -> socket.socket:
        if self._socket is None:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.settimeout(self.timeout)
            connection.connect(str(self.path))
            self._socket = connection
        return self._socket

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def command(self, line: str) -> str:
        """Run one command; its output as text. bgpd now and then resets the connection under a burst of UPDATEs
        (seen during E): the command, read-only, is sent once more on a new connection."""
        try:
            return self._command(line)
        except VtyError as error:
            if self._socket is not None:  # bgpd answered with an error status: not a lost connection
                raise
            time.sleep(0.01)
            try:
                return self._command(line)
            except VtyError as again:
                raise again from error

    def _command(self, line: str) -> str:
        connection = self._connect()
        try:
            connection.sendall(line.encode("ascii") + b"\x00")
            chunks: list[bytes] = []
            tail = b""
            while True:
                data = connection.recv(1 << 20)
                if not data:
                    self.close()
                    raise VtyError(f"bgpd closed the vty socket during {line!r}")
                chunks.append(data)
                tail = (tail + data)[-4:]
                if len(tail) == 4 and tail[:3] == _TERMINATOR:
                    break
        except OSError as error:
            self.close()
            raise VtyError(f"{line!r}: {error}") from error
        self.polls += 1
        output = b"".join(chunks)[:-4]
        if tail[3] != 0:
            raise VtyError(f"bgpd answered status {tail[3]} to {line!r}: {output[:200]!r}")
        return output.decode("utf-8", errors="replace")

    def json(self, line: str) -> Any:
        return json.loads(self.command(line) or "{}")

    def prefix_counts(self, family: str) -> dict[str, int]:
        """pfxRcd per Established neighbour of one family ('show bgp <family> unicast summary json')."""
        document = self.json(f"show bgp {family} unicast summary json")
        peers = document.get("peers", {}) if isinstance(document, dict) else {}
        return {
            str(address): int(info.get("pfxRcd", 0))
            for address, info in peers.items()
            if info.get("state") == "Established"
        }

    def states(self, family: str) -> dict[str, str]:
        document = self.json(f"show bgp {family} unicast summary json")
        peers = document.get("peers", {}) if isinstance(document, dict) else {}
        return {str(address): str(info.get("state", "?")) for address, info in peers.items()}

    def has_prefix(self, family: str, prefix: str) -> bool:
        """Whether some valid path for exactly this prefix is in the BGP table."""
        document = self.json(f"show bgp {family} unicast {prefix} json")
        if not isinstance(document, dict):
            return False
        return any(path.get("valid") for path in document.get("paths", []) if isinstance(path, dict))

    def wait_counts(
        self,
        wanted: Mapping[str, Mapping[str, int]],
        timeout: float,
        interval: float = 0.005,
        on_poll: Callable[[], None] | None = None,
    ) -> dict[str, float] | None:
        """Wait until every family's peers hold exactly the wanted counts; seconds (monotonic) each family
        finished at, or None at timeout. wanted: {family: {peer: count}}."""
        done: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while len(done) < len(wanted):
            for family, counts in wanted.items():
                if family in done:
                    continue
                held = self.prefix_counts(family)
                now = time.monotonic()  # the answer's arrival: an upper bound on when FRR held them
                if all(held.get(peer) == count for peer, count in counts.items()):
                    done[family] = now
            if on_poll is not None:
                on_poll()
            if len(done) == len(wanted):
                break
            if time.monotonic() > deadline:
                return None
            time.sleep(interval)
        return done
