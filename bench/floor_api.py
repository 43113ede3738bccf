"""The speaker floor: a trivial ExaBGP API process writing prefixes in the fastest form, no Kubernetes at all.

ExaBGP runs it as `python3 bench/floor_api.py SPEC.json run --config PATH` (the lab appends the last three
words); only the standard library is imported, so it starts in a few tens of milliseconds.

SPEC (JSON): {"mode": "bulk" | "steady", "status": path of a JSON-lines file it appends its milestones to,
"peers": {"ipv4": [addresses], "ipv6": [addresses]}, "prefixes": {"ipv4": path, "ipv6": path} (one prefix
a line), "per_line": prefixes per bulk line (1: one `announce route` line each), "window": lines written
before waiting for their acks (0: no waiting; with exabgp.api.ack=false there are none to wait for),
"delay": seconds to wait before the first line, "pace": seconds per page of two lines (a producer's rate),
"ack": whether ExaBGP sends acks, "form": "family" writes one `announce ipv4|ipv6 unicast PREFIX` line per
prefix instead of the bulk form, "interleave": alternate the families' lines, "attributes": words after
`attributes` (default "next-hop self"), "control": for steady mode, a Unix socket path on which each
request line `announce|withdraw PREFIX...` is forwarded to ExaBGP as one `route` line per prefix and
answered `ok` once written (and acked, with acks on); `announce*|withdraw* PREFIX...` (E's floor) is not
answered: these requests are written as bulk `attributes ... nlri` lines (one per action and family) a batch
at a time, a batch being those that arrived while ExaBGP acked the previous one}.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Status:
    """Milestones appended as JSON lines, each with CLOCK_BOOTTIME seconds (the benchmark's clock)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, event: str, **fields: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps({"event": event, "at": _now(), "pid": os.getpid(), **fields}) + "\n")


def _selector(peers: list[str]) -> str:
    return " , ".join(f"neighbor {peer}" for peer in peers)


def bulk_lines(spec: dict[str, Any]) -> list[bytes]:
    """Every command line, per family, in the configured form."""
    per_line = int(spec.get("per_line", 500))
    words = str(spec.get("attributes", "next-hop self"))
    by_family: list[list[bytes]] = []
    for family in ("ipv4", "ipv6"):
        peers = spec["peers"].get(family) or []
        path = spec["prefixes"].get(family)
        if not peers or not path:
            continue
        prefixes = Path(path).read_text(encoding="ascii").split()
        selector = _selector(peers)
        lines: list[bytes] = []
        if spec.get("form") == "family":
            lines = [f"{selector} announce {family} unicast {prefix} {words}\n".encode() for prefix in prefixes]
        elif per_line <= 1:
            lines = [f"{selector} announce route {prefix} {words}\n".encode() for prefix in prefixes]
        else:
            for start in range(0, len(prefixes), per_line):
                chunk = " ".join(prefixes[start : start + per_line])
                lines.append(f"{selector} announce attributes {words} nlri {chunk}\n".encode())
        by_family.append(lines)
    if spec.get("interleave") and len(by_family) == 2:
        merged: list[bytes] = []
        first, second = by_family
        for index in range(max(len(first), len(second))):
            merged += first[index : index + 1] + second[index : index + 1]
        return merged
    return [line for lines in by_family for line in lines]


class Pipe:
    """Non-blocking writes to ExaBGP (fd 1) and ack counting from it (fd 0), in one select loop."""

    def __init__(self, ack: bool) -> None:
        self.ack = ack
        self.out = sys.stdout.fileno()
        self.inp = sys.stdin.fileno()
        os.set_blocking(self.out, False)
        self.acks = 0
        self.errors = 0
        self.closed = False
        self._partial = b""

    def read(self) -> None:
        try:
            data = os.read(self.inp, 1 << 16)
        except BlockingIOError:
            return
        if not data:
            self.closed = True
            return
        text = self._partial + data
        lines = text.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            word = line.strip()
            if word == b"done":
                self.acks += 1
            elif word == b"error":
                self.acks += 1
                self.errors += 1
            elif word.startswith(b"shutdown"):
                self.closed = True

    def pump(self, lines: list[bytes], window: int, pace: float = 0.0, page_lines: int = 2) -> None:
        """Write every line, at most `window` awaiting their ack (0: unbounded), then return (acks pending).

        pace > 0 emulates a producer: line i is available only `pace` seconds per page (of page_lines lines)
        after the pump started, as a list page converted into one line per family would be."""
        index = 0
        sent = 0
        buffer = b""
        started = time.monotonic()
        while (index < len(lines) or buffer) and not self.closed:
            timeout = 1.0
            while not buffer and index < len(lines) and (window <= 0 or not self.ack or sent - self.acks < window):
                available = started + pace * (index // page_lines + 1) if pace > 0 else 0.0
                wait = available - time.monotonic()
                if wait > 0:
                    timeout = min(timeout, wait)
                    break
                buffer = lines[index]
                index += 1
                sent += 1
            wants_write = bool(buffer)
            readable, writable, _ = select.select([self.inp], [self.out] if wants_write else [], [], timeout)
            if readable:
                self.read()
            if writable and buffer:
                try:
                    written = os.write(self.out, buffer)
                except BlockingIOError:
                    written = 0
                buffer = buffer[written:]
        self.sent = sent

    def wait_acks(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.acks < count and not self.closed and time.monotonic() < deadline:
            readable, _, _ = select.select([self.inp], [], [], 0.5)
            if readable:
                self.read()
        return self.acks >= count

    def drain_forever(self) -> None:
        while not self.closed:
            readable, _, _ = select.select([self.inp], [], [], 1.0)
            if readable:
                self.read()


def run_bulk(spec: dict[str, Any], status: Status, pipe: Pipe) -> None:
    lines = bulk_lines(spec)
    status.write("built", lines=len(lines))
    delay = float(spec.get("delay", 0.0))
    if delay > 0:  # emulates an API process that needs this long before its first line (start-up, list...)
        time.sleep(delay)
    pipe.pump(lines, int(spec.get("window", 0)), float(spec.get("pace", 0.0)))
    status.write("written", lines=len(lines))
    if pipe.ack and pipe.wait_acks(len(lines), 600.0):
        status.write("acked", lines=len(lines), errors=pipe.errors)
    pipe.drain_forever()


def batch_lines(requests: list[bytes], peers: dict[str, list[str]], words: str) -> list[bytes]:
    """`announce*|withdraw* PREFIX...` requests as bulk lines, one per (action, family) in order of first use."""
    groups: dict[tuple[str, str], list[str]] = {}
    for request in requests:
        action, *prefixes = request.decode("ascii").split()
        for prefix in prefixes:
            family = "ipv6" if ":" in prefix else "ipv4"
            groups.setdefault((action.rstrip("*"), family), []).append(prefix)
    return [
        f"{_selector(peers[family])} {action} attributes {words} nlri {' '.join(prefixes)}\n".encode()
        for (action, family), prefixes in groups.items()
    ]


class _Batch:
    """E's requests, written one batch at a time: those that arrived while ExaBGP acked the previous batch."""

    def __init__(self, pipe: Pipe, peers: dict[str, list[str]], words: str) -> None:
        self.pipe, self.peers, self.words = pipe, peers, words
        self.pending: list[bytes] = []
        self.acked_at = 0  # the ack count at which every line of the previous batches is acked

    def add(self, requests: Iterable[bytes]) -> None:
        self.pending.extend(requests)
        self.flush()

    def flush(self) -> None:
        if self.pending and (not self.pipe.ack or self.pipe.acks >= self.acked_at):
            lines = batch_lines(self.pending, self.peers, self.words)
            self.pending = []
            self.acked_at = self.pipe.acks + len(lines)
            self.pipe.pump(lines, 0)


def run_steady(spec: dict[str, Any], status: Status, pipe: Pipe) -> None:
    """Announce the bulk prefixes (if any), then forward announce/withdraw requests from the control socket,
    one `route` line per prefix."""
    lines = bulk_lines(spec)
    if lines:
        pipe.pump(lines, int(spec.get("window", 0)))
        status.write("written", lines=len(lines))
    path = spec["control"]
    Path(path).unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    status.write("listening", control=path)
    peers: dict[str, list[str]] = spec["peers"]
    words = str(spec.get("attributes", "next-hop self"))
    clients: list[socket.socket] = []
    batch = _Batch(pipe, peers, words)
    partial: dict[socket.socket, bytes] = {}
    while not pipe.closed:
        readable, _, _ = select.select([pipe.inp, server, *clients], [], [], 1.0)
        for ready in readable:
            if ready is server:
                client, _ = server.accept()
                clients.append(client)
                partial[client] = b""
            elif isinstance(ready, socket.socket):
                data = ready.recv(65536)
                if not data:
                    clients.remove(ready)
                    ready.close()
                    continue
                text = partial[ready] + data
                *requests, partial[ready] = text.split(b"\n")
                batch.add(request for request in requests if request.split(b" ", 1)[0].endswith(b"*"))
                for request in requests:
                    if request.split(b" ", 1)[0].endswith(b"*"):
                        continue
                    action, *prefixes = request.decode("ascii").split()
                    lines = []
                    for prefix in prefixes:
                        family = "ipv6" if ":" in prefix else "ipv4"
                        lines.append(f"{_selector(peers[family])} {action} route {prefix} {words}\n".encode())
                    before = pipe.acks
                    pipe.pump(lines, 0)
                    if pipe.ack:
                        pipe.wait_acks(before + len(lines), 30.0)
                    ready.sendall(b"ok\n")
            else:
                pipe.read()
        batch.flush()


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    status = Status(spec["status"])
    status.write("started")
    pipe = Pipe(bool(spec.get("ack", True)))
    if spec.get("mode", "bulk") == "steady":
        run_steady(spec, status, pipe)
    else:
        run_bulk(spec, status, pipe)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
