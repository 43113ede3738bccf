"""The pipe to ExaBGP: one command per line on stdout, acks and answers read from stdin by a thread."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 512 * 1024  # ExaBGP 5.0.12+ caps a command line at 1 MiB; stay far below it.
_NEIGHBOUR_EVENT = re.compile(r"^neighbor (?P<peer>[0-9a-fA-F.:]+) (?P<state>up|down|connected)\b")


class PipeClosed(Exception):
    """ExaBGP closed the pipe, said 'shutdown', or stopped answering."""


@dataclass
class _Pending:
    line: str
    sent_at: float
    on_ack: Callable[[bool], None] | None
    answer: list[str] | None = None  # collects the lines of a 'show' command's answer
    finished: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


class ExaBgpPipe:
    """Writes commands with at most N awaiting their ack, and reads stdin so ExaBGP's pipe never fills."""

    def __init__(
        self,
        commands_out: BinaryIO,
        answers_in: BinaryIO,
        *,
        max_in_flight: int,
        ack_timeout: float,
        on_neighbour_up: Callable[[str], None] | None = None,
    ) -> None:
        self._out = commands_out
        self._in = answers_in
        self._max_in_flight = max_in_flight
        self._ack_timeout = ack_timeout
        self._on_neighbour_up = on_neighbour_up
        self._pending: deque[_Pending] = deque()
        self._lock = threading.Condition()
        self._write_lock = threading.Lock()
        self.closed = threading.Event()
        self.shutdown_requested = threading.Event()
        self.sent_total = 0
        self.last_write_at: float | None = None  # time.monotonic() of the last command written (liveness)
        self.acks_total: dict[str, int] = {"done": 0, "error": 0, "timeout": 0}
        self._reader = threading.Thread(target=self._read_answers, name="exabgp-reader", daemon=True)

    def start(self) -> None:
        self._reader.start()

    # --- writing -------------------------------------------------------------------------------------------
    def send(self, line: str, on_ack: Callable[[bool], None] | None = None) -> None:
        """Write one command, waiting first while N commands await their ack."""
        self._write(_Pending(line, 0.0, on_ack))

    def query(self, line: str, timeout: float) -> list[str]:
        """Send a 'show' command and return its answer lines (without the final 'done')."""
        pending = _Pending(line, 0.0, None, answer=[])
        self._write(pending)
        if not pending.finished.wait(timeout):
            raise PipeClosed(f"no answer to {line!r} within {timeout} s")
        if not pending.ok:
            raise PipeClosed(f"ExaBGP answered 'error' to {line!r}")
        return pending.answer or []

    def drain(self, timeout: float) -> bool:
        """Wait until every command sent has its ack; False if the time ran out or the pipe closed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending and not self.closed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))
            return not self._pending

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def _write(self, pending: _Pending) -> None:
        data = pending.line.encode("ascii") + b"\n"
        if b"\n" in data[:-1] or b"\r" in data or len(data) > MAX_LINE_BYTES:
            raise ValueError(f"refusing a malformed command line of {len(data)} bytes")
        with self._lock:
            while len(self._pending) >= self._max_in_flight:
                self._expire_overdue()
                if self.closed.is_set():
                    raise PipeClosed("the pipe to ExaBGP is closed")
                self._lock.wait(0.05)
            if self.closed.is_set():
                raise PipeClosed("the pipe to ExaBGP is closed")
            pending.sent_at = time.monotonic()
            self._pending.append(pending)
        with self._write_lock:
            try:
                self._out.write(data)
                self._out.flush()
            except (BrokenPipeError, OSError, ValueError) as error:
                self._close(f"writing to ExaBGP failed: {error}")
                raise PipeClosed(str(error)) from None
        self.sent_total += 1
        self.last_write_at = time.monotonic()

    def _expire_overdue(self) -> None:
        """Give up on acks that never came (ExaBGP 4.2 sends none for some bad lines); lock held."""
        now = time.monotonic()
        while self._pending and now - self._pending[0].sent_at > self._ack_timeout:
            overdue = self._pending.popleft()
            log.error("no ack from ExaBGP within %.0f s for: %s", self._ack_timeout, overdue.line[:200])
            self._finish(overdue, "timeout")

    # --- reading -------------------------------------------------------------------------------------------
    def _read_answers(self) -> None:
        try:
            for raw in self._in:
                self._handle(raw.decode("ascii", errors="replace").strip())
        except (OSError, ValueError) as error:
            log.warning("reading from ExaBGP failed: %s", error)
        self._close("ExaBGP closed our standard input")

    def _handle(self, text: str) -> None:
        if not text:
            return
        if text in ("done", "error"):
            with self._lock:
                if not self._pending:
                    log.debug("an ack with no command awaiting it: %s", text)
                    return
                self._finish(self._pending.popleft(), text)
            return
        if text == "shutdown" or text.startswith("shutdown "):
            self.shutdown_requested.set()
            self._close("ExaBGP is shutting down")
            return
        event = _NEIGHBOUR_EVENT.match(text)
        if event is not None and "local-ip" not in text:
            if event["state"] == "up" and self._on_neighbour_up is not None:
                self._on_neighbour_up(event["peer"])
            return
        with self._lock:
            head = self._pending[0] if self._pending else None
            if head is not None and head.answer is not None:
                head.answer.append(text)
                return
        log.debug("unexpected line from ExaBGP: %.200r", text)

    def _finish(self, pending: _Pending, result: str) -> None:
        """Record an ack (lock held) and run the command's callback."""
        self.acks_total[result] = self.acks_total.get(result, 0) + 1
        pending.ok = result == "done"
        if result == "error":
            log.error("ExaBGP answered 'error' to: %s", pending.line[:200])
        pending.finished.set()
        self._lock.notify_all()
        if pending.on_ack is not None:
            pending.on_ack(pending.ok)

    def _close(self, why: str) -> None:
        if not self.closed.is_set():
            log.info("%s", why)
        with self._lock:
            self.closed.set()
            self._lock.notify_all()
