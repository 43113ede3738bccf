"""Benchmark labs share their namespace names: a second one waits for the first instead of failing (no lab)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.lab_env import IsolatedLab
from lab import netns


def taker(state_dir: Path) -> IsolatedLab:
    return IsolatedLab("bt-", nodes=("node-a",), state_dir=state_dir)


def test_a_second_benchmark_lab_waits_for_the_first_to_release_the_lock(tmp_path: Path) -> None:
    first, second = taker(tmp_path), taker(tmp_path)
    first._take_address_lock()
    taken = threading.Event()

    def take() -> None:
        second._take_address_lock()
        taken.set()

    waiting = threading.Thread(target=take)
    waiting.start()
    try:
        assert not taken.wait(0.5)  # blocked while the first holds it
        first.release_lock()
        assert taken.wait(5.0)
    finally:
        first.release_lock()
        waiting.join(5.0)
        second.release_lock()


def test_a_lab_brought_up_without_the_lock_is_waited_for_while_its_owner_lives(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    try:
        state = netns.LabState.for_prefix("bt-", tmp_path)
        state.owner_pid = owner.pid
        state.save()
        started = time.monotonic()
        lab = taker(tmp_path)
        lab._take_address_lock()
        waited = time.monotonic() - started
        lab.release_lock()
    finally:
        owner.wait()
    assert 1.0 <= waited < 5.0, waited
