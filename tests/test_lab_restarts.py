"""The lab's wait for a started process: a daemon that exits while starting is restarted, as systemd would, within a limit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lab import netns

# Exits with status 2 (as kubelet's fatal errors do) until it has been started `runs` times; then marks itself up and
# stays. Each start is counted in a file, so the test reads how often the process really ran.
FLAKY = """
import pathlib, sys, time
count = pathlib.Path(sys.argv[1]); runs = int(sys.argv[2])
started = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(started))
print(f"start {started}", flush=True)
if started < runs:
    print("fatal error: concurrent map read and map write", flush=True)
    sys.exit(2)
pathlib.Path(sys.argv[3]).write_text("up")
time.sleep(60)
"""


def start_flaky(tmp_path: Path, runs: int) -> tuple[netns.ProcessRecord, list[str]]:
    argv = [sys.executable, "-c", FLAKY, str(tmp_path / "count"), str(runs), str(tmp_path / "up")]
    return netns.start_process("flaky", argv, netns=None, log_path=tmp_path / "flaky.log"), argv


def restarter(tmp_path: Path, argv: list[str], limit: int, started: list[netns.ProcessRecord]) -> netns.Restart:
    def start(old: netns.ProcessRecord) -> netns.ProcessRecord:
        record = netns.start_process(old.name, argv, netns=None, log_path=tmp_path / "flaky.log")
        started.append(record)
        return record

    return netns.restarter(start, limit=limit, delay=0.05)


def test_a_process_that_exits_while_starting_is_started_again_and_the_wait_ends_when_it_is_ready(
    tmp_path: Path,
) -> None:
    first, argv = start_flaky(tmp_path, runs=3)
    started: list[netns.ProcessRecord] = []
    try:
        netns.wait_started("flaky", (tmp_path / "up").exists, [first], 30.0,
                           restart=restarter(tmp_path, argv, 3, started))  # fmt: skip
        assert (tmp_path / "count").read_text() == "3"
        assert len(started) == 2
        assert netns.is_same_process(started[-1])
    finally:
        for record in (first, *started):
            netns.stop_process(record, 5.0)


def test_a_process_that_keeps_exiting_fails_the_wait_after_the_limit_with_its_log(tmp_path: Path) -> None:
    first, argv = start_flaky(tmp_path, runs=10)
    started: list[netns.ProcessRecord] = []
    with pytest.raises(RuntimeError, match=r"flaky: flaky exited 3 times") as raised:
        netns.wait_started("flaky", (tmp_path / "up").exists, [first], 30.0,
                           restart=restarter(tmp_path, argv, 2, started))  # fmt: skip
    assert (tmp_path / "count").read_text() == "3"
    assert len(started) == 2
    assert "concurrent map read and map write" in str(raised.value)
    assert "start 3" in str(raised.value)


def test_without_a_restart_the_first_exit_fails_the_wait(tmp_path: Path) -> None:
    first, _ = start_flaky(tmp_path, runs=2)
    with pytest.raises(RuntimeError, match=r"flaky: flaky exited; its log"):
        netns.wait_started("flaky", (tmp_path / "up").exists, [first], 30.0)
    assert (tmp_path / "count").read_text() == "1"
