"""How long the ExaBGP pipe waits: for a long answer while it keeps coming, and not past a stop."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import pytest

from announcer.exabgp import ExaBgpPipe, PipeClosed, Stopping
from announcer.metrics import DaemonMetrics
from tests.test_metrics import FakeState

Answer = Callable[[str, BinaryIO], None]


class SlowExaBgp:
    """ExaBGP's end of the pipe, in process: reads each command and answers it with `answer` (on its own thread)."""

    def __init__(self, answer: Answer, max_in_flight: int) -> None:
        commands_read, commands_write = os.pipe()
        answers_read, answers_write = os.pipe()
        self.commands = open(commands_read, "rb")  # noqa: SIM115  (closed in close())
        self.answers = open(answers_write, "wb", buffering=0)  # noqa: SIM115
        self.commands_out = open(commands_write, "wb")  # noqa: SIM115
        self.answers_in = open(answers_read, "rb")  # noqa: SIM115
        self.pipe = ExaBgpPipe(
            self.commands_out,
            self.answers_in,
            max_in_flight=max_in_flight,
            ack_timeout=30.0,
        )
        self.answer = answer
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        for raw in self.commands:
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            self.answer(line, self.answers)

    def close(self) -> None:
        self.commands_out.close()  # ends _serve once the answer it writes is out
        self.thread.join(timeout=5)
        self.answers.close()  # the pipe's reader sees the end
        self.pipe.closed.wait(timeout=5)
        self.answers_in.close()
        self.commands.close()


@contextmanager
def slow_exabgp(answer: Answer, max_in_flight: int = 8) -> Iterator[SlowExaBgp]:
    exabgp = SlowExaBgp(answer, max_in_flight)
    exabgp.thread.start()
    exabgp.pipe.start()
    try:
        yield exabgp
    finally:
        exabgp.close()


def route(index: int) -> str:
    return f"neighbor 192.0.2.1 local-ip 192.0.2.11 ipv4 unicast 10.0.{index // 256}.{index % 256}/32 next-hop self"


def steadily(lines: int, every: float, then: str | None = "done") -> Answer:
    """Answers 'show adj-rib out extensive' a line every `every` s, then `then` (None: falls silent)."""

    def answer(line: str, out: BinaryIO) -> None:
        if line != "show adj-rib out extensive":
            return
        for index in range(lines):
            out.write(route(index).encode() + b"\n")
            time.sleep(every)
        if then is not None:
            out.write(then.encode() + b"\n")

    return answer


def test_a_long_answer_that_keeps_coming_is_read_to_its_end_past_the_limit() -> None:
    """Issue 18 item 10: the limit is on silence, not on the whole answer. 30 lines 0.05 s apart take 1.5 s, three
    times a limit of 0.5 s; no gap comes near it."""
    with slow_exabgp(steadily(30, 0.05)) as exabgp:
        answer = exabgp.pipe.query("show adj-rib out extensive", 0.5)
    assert answer == [route(index) for index in range(30)]


def test_an_answer_that_stops_coming_is_given_up_after_the_limit_of_silence() -> None:
    with slow_exabgp(steadily(3, 0.0, then=None)) as exabgp, pytest.raises(PipeClosed, match=r"\(3 read\)"):
        exabgp.pipe.query("show adj-rib out extensive", 0.3)


def silent(line: str, out: BinaryIO) -> None:
    """A wedged ExaBGP: reads every line, answers none."""


def test_a_stop_ends_a_synchronisation_exabgp_never_answers() -> None:
    """Issue 18 item 4, in the pipe: `interrupt` (the signal's wake-up thread) ends the main thread's wait for
    'version' at once, raising Stopping, instead of after the synchronisation's limit."""
    raised: list[BaseException] = []

    def synchronise(pipe: ExaBgpPipe) -> None:
        try:
            pipe.synchronise(60.0)
        except BaseException as error:
            raised.append(error)

    with slow_exabgp(silent) as exabgp:
        waiting = threading.Thread(target=synchronise, args=(exabgp.pipe,))
        waiting.start()
        while "version" not in exabgp.lines:
            time.sleep(0.01)
        exabgp.pipe.interrupt()
        waiting.join(timeout=10)
        assert not waiting.is_alive(), "still waiting for 'version'"
    assert [type(error) for error in raised] == [Stopping]


def test_once_shut_down_commands_go_at_once_and_the_wait_for_their_acks_ends_at_the_deadline() -> None:
    """The orderly stop: the window (one command here, unanswered) does not hold the withdraws back, and draining
    ends at the stop's deadline, not at the drain's own limit."""
    with slow_exabgp(silent, max_in_flight=1) as exabgp:
        pipe = exabgp.pipe
        pipe.send("neighbor 192.0.2.1 announce route 10.0.0.1/32 next-hop self")
        pipe.shut_down(time.monotonic() + 0.2)
        for index in range(3):
            pipe.send(f"neighbor 192.0.2.1 withdraw route 10.0.0.{index}/32 next-hop self")
        assert pipe.drain(60.0) is False
        while len(exabgp.lines) < 4:
            time.sleep(0.01)
    assert [line.split()[2] for line in exabgp.lines] == ["announce", "withdraw", "withdraw", "withdraw"]


def test_a_long_read_keeps_the_liveness_probe_healthy_while_lines_come() -> None:
    """Issue 18 item 10's restart loop, the other way in: the start-up read of 200,000 lines took 112 s against
    real ExaBGP here, with no pass finished and no command written meanwhile. /healthz counts the answer's lines
    as progress, or the kubelet would restart the announcer in the middle of the read."""
    seen: list[bool] = []
    state = FakeState()

    def answer(line: str, out: BinaryIO) -> None:
        steadily(20, 0.05, then=None)(line, out)  # a second of lines, twice the probe's limit here
        time.sleep(0.05)  # the pipe's reader has read them
        seen.append(metrics.health()[0])
        out.write(b"done\n")

    with slow_exabgp(answer) as exabgp:
        metrics = DaemonMetrics(state, exabgp.pipe, ("127.0.0.1", 0), healthy_within=0.5)
        assert len(exabgp.pipe.query("show adj-rib out extensive", 0.5)) == 20
    assert seen == [True]
