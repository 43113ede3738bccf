"""The pipe to ExaBGP: one command per line on stdout, acks and answers read from stdin by a thread."""

# Which answers can overtake (ExaBGP 5.0.x, exabgp/reactor/loop.py `Reactor.run`): each command line read from a
# process is dispatched at once (`API.response`, reactor/api/__init__.py). Most handlers only queue a generator
# (`reactor.asynchronous.schedule`), and `ASYNC._run_async` (reactor/asynchronous.py) runs each to its end before
# the next, in arrival order, so their `done`/`error` come back in command order: `announce|withdraw route|attributes`
# (reactor/api/command/announce.py: even "no neighbor matching" is answered inside the generator) and
# `show adj-rib in|out` (command/rib.py `show_adj_rib`). Everything else may be answered at dispatch, ahead of
# every queued command: an unknown line or an empty one (`API.response`), `version`/`reset`/`#`/`*-ack`
# (command/reactor.py), and, before anything is queued, `announce eor` / `announce route-refresh` /
# `flush adj-rib out` naming no *established* peer, `clear adj-rib` naming no peer, `teardown`
# (announce.py `announce_eor`, rib.py, neighbor.py). So the pipe sends every line that is not known to be
# answered in order alone: after the window drained, and nothing else until its answer came.
#
# Lost answers: after an ack timeout nothing tells which queued answer belongs to which command. And when the API
# process dies, ExaBGP respawns it under the same service name (reactor/api/processes.py `_handle_problem`)
# without clearing the dead process's queued generators: their answers reach the new process, also after the
# answer of `version` (answered at dispatch). Both are resolved by `reset` (command/reactor.py `reset`:
# `ASYNC.clear(service)` drops this process's queued commands, answers nothing) then `version` (answers
# `exabgp 5.0.x` then `done` at once): every line before the `exabgp` line is stale and nothing stale can follow
# it. Which of the commands in flight took effect is unknown then: the owner re-reads `show adj-rib out`.
# Seen on ExaBGP 5.0.15 (tests/test_exabgp_pipe.py); `reset` and `version` are the same from 5.0.0 on.

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from announcer.sessions import NeighbourEvent, parse_neighbour_event

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 512 * 1024  # ExaBGP 5.0.12+ caps a command line at 1 MiB; stay far below it.
_VERSION_ANSWER = re.compile(r"^exabgp \S+$")
_ADDRESS = r"[0-9a-fA-F.:]+"
_IN_ORDER = re.compile(
    rf"^(?:neighbor {_ADDRESS}(?: , neighbor {_ADDRESS})* )?(?:announce|withdraw) (?:route|attributes) "
    r"|^show adj-rib (?:in|out)(?: extensive)?$"
)


def answered_in_order(line: str) -> bool:
    """Whether ExaBGP answers this line in command order (from its queue), not possibly at once (see above)."""
    return _IN_ORDER.match(line) is not None


class PipeClosed(Exception):
    """ExaBGP closed the pipe, said 'shutdown', or stopped answering."""


class Stopping(Exception):
    """A stop was asked for (SIGTERM): a wait of the pipe ended early; the caller goes on to the orderly stop."""


@dataclass
class _Pending:
    line: str
    sent_at: float
    on_ack: Callable[[bool], None] | None
    answer: list[str] | None = None  # collects the lines of a 'show' command's answer
    read_at: float = 0.0  # time.monotonic() of its answer's last line read (or of its writing)
    finished: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    alone: bool = False  # its answer may overtake: nothing else is in flight with it


@dataclass
class _Sync:
    """A synchronisation in progress: every line is stale until the 'exabgp <version>' line, then 'done'."""

    version: str | None = None
    discarded: int = 0
    ok: bool = False
    finished: threading.Event = field(default_factory=threading.Event)


class ExaBgpPipe:
    """Writes commands with at most N awaiting their ack, and reads stdin so ExaBGP's pipe never fills."""

    def __init__(
        self,
        commands_out: BinaryIO,
        answers_in: BinaryIO,
        *,
        max_in_flight: int,
        ack_timeout: float,
        on_neighbour: Callable[[NeighbourEvent], None] | None = None,
        sync_timeout: float = 60.0,
    ) -> None:
        self._out = commands_out
        self._in = answers_in
        self._max_in_flight = max_in_flight
        self._ack_timeout = ack_timeout
        self._sync_timeout = sync_timeout  # how long ExaBGP may take to answer 'version' after lost answers
        self._on_neighbour = on_neighbour  # a session's state line (reader thread): hand it on, nothing more
        self._pending: deque[_Pending] = deque()
        self._lock = threading.Condition()
        self._write_lock = threading.Lock()
        self._sync: _Sync | None = None
        self._lost = False  # answers were given up on: nothing is written before a resynchronisation
        self._resynced = False  # a resynchronisation after lost answers that the owner has not taken yet
        self._interrupted = False  # a stop was asked for: waits end raising Stopping, until shut_down
        self._deadline: float | None = None  # the orderly stop: commands go at once, every wait ends by then
        self.closed = threading.Event()
        self.shutdown_requested = threading.Event()
        self.sent_total = 0
        self.last_write_at: float | None = None  # time.monotonic() of the last command written (liveness)
        self.last_answer_at: float | None = None  # ... of the last line read of a 'show' answer awaited (liveness)
        self.acks_total: dict[str, int] = {"done": 0, "error": 0, "timeout": 0}
        self.resyncs_total = 0
        self.stale_total = 0  # lines read that answered no command of this process (discarded)
        self.exabgp_version: str | None = None  # from the last synchronisation's 'exabgp <version>' line
        self.last_error: tuple[float, str] | None = None  # time.time() and what of the last command not accepted
        self._reader = threading.Thread(target=self._read_answers, name="exabgp-reader", daemon=True)

    def start(self) -> None:
        self._reader.start()

    # --- writing -------------------------------------------------------------------------------------------
    def send(self, line: str, on_ack: Callable[[bool], None] | None = None) -> None:
        """Write one command, waiting first while N commands await their ack; a command whose answer may
        overtake others is written only once every ack came, and nothing follows it before its own."""
        self._write(_Pending(line, 0.0, on_ack, alone=not answered_in_order(line)))

    def query(self, line: str, timeout: float) -> list[str]:
        """Send a 'show' command and return its answer lines (without the final 'done'). `timeout` bounds the
        silence, not the whole answer: ExaBGP may take as long as it keeps sending lines (an adj-rib-out of
        400,000 routes takes about a minute), but not `timeout` s without one."""
        pending = _Pending(line, 0.0, None, answer=[], alone=not answered_in_order(line))
        self._write(pending)
        with self._lock:
            while not pending.finished.is_set() and not self.closed.is_set():
                silent = time.monotonic() - max(pending.sent_at, pending.read_at)
                if silent >= timeout:
                    read = len(pending.answer or ())
                    raise PipeClosed(f"ExaBGP sent no line of its answer to {line!r} for {timeout} s ({read} read)")
                self._wait(timeout - silent)
        if not pending.ok:
            raise PipeClosed(f"ExaBGP answered 'error' (or nothing) to {line!r}")
        return pending.answer or []

    def synchronise(self, timeout: float) -> str:
        """Make sure every answer read from now on belongs to a command written from now on: waits for the acks
        in flight (giving them up after `timeout`), then sends `reset` and `version` and discards every line
        up to ExaBGP's `exabgp <version>` line and its `done`. Call it before the first command: answers meant
        for a previous announcer process may still come. Returns ExaBGP's version."""
        if not self.drain(timeout):
            with self._lock:
                self._give_up("ExaBGP did not answer within the synchronisation's time")
        return self._synchronise(timeout)

    def take_resync(self) -> bool:
        """True once after answers were lost (an ack timed out): the pipe resynchronised with ExaBGP, the commands
        then in flight were reported refused, and the caller must re-read ExaBGP's adj-rib-out to know what it
        holds. Also gives up on overdue acks, so the caller notices a lost answer without writing anything."""
        with self._lock:
            self._expire_overdue()
            lost = self._lost
        if lost:
            self._synchronise(self._sync_timeout)
        with self._lock:
            resynced, self._resynced = self._resynced, False
            return resynced

    def drain(self, timeout: float) -> bool:
        """Wait until every command sent has its ack; False if the time (or the stop's) ran out or the pipe closed."""
        deadline = time.monotonic() + timeout
        if self._deadline is not None:
            deadline = min(deadline, self._deadline)
        with self._lock:
            while self._pending and not self.closed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wait(min(remaining, 0.1))
            return not self._pending

    def interrupt(self) -> None:
        """A stop was asked for (from any thread): every wait in the pipe ends now, raising Stopping in the thread
        that waited (the main loop's), until `shut_down` starts the orderly stop."""
        with self._lock:
            self._interrupted = True
            self._lock.notify_all()

    def shut_down(self, deadline: float) -> None:
        """The orderly stop (time.monotonic() `deadline`): from now on a command is written at once, without waiting
        for acks, the window or a resynchronisation (ExaBGP applies it in order whenever it reads it), and every
        wait ends by `deadline`: a drain returns False, a query or synchronisation raises PipeClosed."""
        with self._lock:
            self._deadline = deadline
            self._lock.notify_all()

    def _wait(self, seconds: float) -> None:
        """Wait on the condition (lock held) at most `seconds`, ending early as a stop requires."""
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise PipeClosed("the stop's time (shutdown_timeout) ran out")
            seconds = min(seconds, remaining)
        elif self._interrupted:
            raise Stopping("a stop was asked for")
        self._lock.wait(seconds)

    @property
    def synchronising(self) -> bool:
        """Whether a synchronisation waits for ExaBGP's answer to 'version'."""
        with self._lock:
            return self._sync is not None

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def _write(self, pending: _Pending) -> None:
        data = pending.line.encode("ascii") + b"\n"
        if b"\n" in data[:-1] or b"\r" in data or len(data) > MAX_LINE_BYTES:
            raise ValueError(f"refusing a malformed command line of {len(data)} bytes")
        while True:
            with self._lock:
                while self._deadline is None and not self._lost and self._blocked(pending):
                    if self.closed.is_set():
                        raise PipeClosed("the pipe to ExaBGP is closed")
                    if not self._expire_overdue():
                        self._wait(0.05)
                if self.closed.is_set():
                    raise PipeClosed("the pipe to ExaBGP is closed")
                if self._deadline is None and self._interrupted:
                    raise Stopping("a stop was asked for")
                if not self._lost or self._deadline is not None:
                    pending.sent_at = time.monotonic()
                    self._pending.append(pending)
                    break
            self._synchronise(self._sync_timeout)
        self._write_bytes(data)
        self.sent_total += 1
        self.last_write_at = time.monotonic()

    def _blocked(self, pending: _Pending) -> bool:
        """Whether `pending` must wait (lock held): the window is full, a command whose answer may overtake is
        in flight, `pending` is such a command and others are in flight, or a synchronisation runs."""
        if self._sync is not None:
            return True
        if not self._pending:
            return False
        return pending.alone or self._pending[0].alone or len(self._pending) >= self._max_in_flight

    def _write_bytes(self, data: bytes) -> None:
        with self._write_lock:
            try:
                self._out.write(data)
                self._out.flush()
            except (BrokenPipeError, OSError, ValueError) as error:
                self._close(f"writing to ExaBGP failed: {error}")
                raise PipeClosed(str(error)) from None

    def _expire_overdue(self) -> bool:
        """Give up on every ack in flight once the oldest is overdue (lock held): a late answer would otherwise
        be credited to the next command. True if it did."""
        if not self._pending or time.monotonic() - self._pending[0].sent_at <= self._ack_timeout:
            return False
        self._give_up(f"no ack from ExaBGP within {self._ack_timeout:.0f} s for: {self._pending[0].line[:200]}")
        return True

    def _give_up(self, why: str) -> None:
        """Report every command in flight as not accepted and stop writing until a resynchronisation (lock held)."""
        if self._pending:
            log.error("%s; %d commands in flight reported refused, resynchronising", why, len(self._pending))
        while self._pending:
            self._finish(self._pending.popleft(), "timeout")
        self._lost = True

    def _synchronise(self, timeout: float) -> str:
        """Send `reset` and `version` with nothing in flight; return once ExaBGP's answer to `version` is read."""
        with self._lock:
            while self._sync is not None and not self.closed.is_set():  # another thread synchronises
                self._wait(0.05)
            if self.closed.is_set():
                raise PipeClosed("the pipe to ExaBGP is closed")
            if self._pending:
                self._give_up("synchronising with ExaBGP")
            sync = self._sync = _Sync()
        try:
            self._write_bytes(b"reset\nversion\n")
            self.last_write_at = time.monotonic()
            end = time.monotonic() + timeout
            with self._lock:
                while not sync.finished.is_set() and (remaining := end - time.monotonic()) > 0:
                    self._wait(remaining)
            finished = sync.finished.is_set()
        finally:
            with self._lock:
                self._sync = None
                self._lock.notify_all()
        version = sync.version
        if not finished or not sync.ok or version is None:
            raise PipeClosed(f"ExaBGP did not answer 'version' within {timeout} s")
        with self._lock:
            self.exabgp_version = version
            if self._lost:
                self._lost = False
                self._resynced = True
                self.resyncs_total += 1
        log.info("synchronised with %s (%d stale lines discarded)", version, sync.discarded)
        return version

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
        if text == "shutdown" or text.startswith("shutdown "):
            self.shutdown_requested.set()
            self._close("ExaBGP is shutting down")
            return
        event = parse_neighbour_event(text)
        if event is not None:
            if self._on_neighbour is not None:
                self._on_neighbour(event)
            return
        with self._lock:
            if self._sync is not None:
                self._synchronising(self._sync, text)
            elif text in ("done", "error"):
                self._acknowledge(text)
            elif self._pending and self._pending[0].answer is not None:
                self._pending[0].answer.append(text)
                self._pending[0].read_at = self.last_answer_at = time.monotonic()
            else:
                log.debug("unexpected line from ExaBGP: %.200r", text)

    def _acknowledge(self, result: str) -> None:
        """'done' or 'error' for the oldest command in flight (lock held)."""
        if not self._pending:
            self.stale_total += 1  # before the first synchronisation: meant for a previous process
            level = logging.DEBUG if self.exabgp_version is None else logging.WARNING
            log.log(level, "an ack with no command awaiting it: %s", result)
            return
        self._finish(self._pending.popleft(), result)

    def _synchronising(self, sync: _Sync, text: str) -> None:
        """A line read while synchronising (lock held): stale before the version line; then its 'done'."""
        if sync.version is None:
            if _VERSION_ANSWER.match(text):
                sync.version = text
            else:
                sync.discarded += 1
                self.stale_total += 1
            return
        if text in ("done", "error"):
            sync.ok = text == "done"
            sync.finished.set()
            self._lock.notify_all()
        else:
            sync.discarded += 1
            self.stale_total += 1

    def _finish(self, pending: _Pending, result: str) -> None:
        """Record an ack (lock held) and run the command's callback."""
        self.acks_total[result] = self.acks_total.get(result, 0) + 1
        pending.ok = result == "done"
        if result == "error":
            log.error("ExaBGP answered 'error' to: %s", pending.line[:200])
        if result != "done":
            what = "no answer from ExaBGP in time" if result == "timeout" else f"ExaBGP answered {result!r}"
            self.last_error = (time.time(), f"{what} to: {pending.line[:200]}")
        pending.finished.set()
        self._lock.notify_all()
        if pending.on_ack is not None:
            pending.on_ack(pending.ok)

    def _close(self, why: str) -> None:
        if not self.closed.is_set():
            log.info("%s", why)
        with self._lock:
            self.closed.set()
            if self._sync is not None:
                self._sync.finished.set()  # unanswered: the synchronisation fails now, not at its timeout
            self._lock.notify_all()
