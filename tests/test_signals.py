"""SIGTERM's handler takes no lock: a signal landing while the main thread holds the event queue's lock still stops."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The main thread holds the loop queue's lock (as inside Queue.get or put) when SIGTERM arrives: the handler runs
# right there, in that thread. A handler that puts to the queue waits for a lock its own thread holds.
HARNESS = textwrap.dedent(
    """
    import os, queue, signal
    from announcer.daemon import StopSignals

    events = queue.Queue()
    signals = StopSignals()
    signals.install(lambda: events.put("wake"))
    if {old_design!r}:
        signal.signal(signal.SIGTERM, lambda number, frame: events.put("wake"))
    with events.mutex:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs at a bytecode boundary in here
            pass
        seen = signals.received
    print(seen, events.get(timeout=5), flush=True)
    """
)


def run_harness(old_design: bool) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            [sys.executable, "-c", HARNESS.format(old_design=old_design)],
            capture_output=True, text=True, check=False, timeout=4,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None


def test_sigterm_while_the_main_thread_holds_the_queue_lock_sets_the_flag_and_wakes_the_loop() -> None:
    result = run_harness(old_design=False)
    assert result is not None, "the signal handler deadlocked"
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["15", "wake"]


def test_the_harness_catches_a_handler_that_puts_to_the_queue() -> None:
    """The design this replaced (Queue.put in the handler) hangs in the same harness: the test above can fail."""
    assert run_harness(old_design=True) is None
