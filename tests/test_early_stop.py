"""A SIGTERM in the first instants of `announcer run` is the same orderly stop as later (issue 18 item 5)."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.fakeapi import FakeApiServer
from tests.exabgp_double import CONFIG, V4_PEERS, ExaBgpDouble
from tests.factories import service
from tests.test_exabgp_pipe import held_line
from tests.test_state import Harness

WEB_V4 = "neighbor 192.0.2.1 , neighbor 192.0.2.5 withdraw route 198.51.100.10/32 next-hop self"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.5).start() as server:
        yield server


# `announcer run` whose set-up is interrupted by SIGTERM: the signal comes while `main` picks this node's peers,
# after the imports and the configuration, before the daemon starts (the window issue 18 item 5 names).
RUN_SIGNALLED_IN_SET_UP = """
import os, signal, sys
import announcer.node_source as node_source
real = node_source.only_peers
def signalled(*arguments):
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*arguments)
node_source.only_peers = signalled
from announcer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_the_set_up_stops_in_order_and_withdraws_what_a_previous_process_left(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """Issue 18 item 5: a SIGTERM before the daemon's loop runs is the same orderly stop as later: ExaBGP's
    adj-rib-out is read (it holds a previous announcer process's route), that route withdrawn, nothing announced,
    exit 0. It used to kill the process, leaving the route announced."""
    api.apply(service("web", ["198.51.100.10"]))
    held = [held_line(peer, "198.51.100.10/32") for peer in V4_PEERS]
    command = [sys.executable, "-c", RUN_SIGNALLED_IN_SET_UP]
    exabgp = ExaBgpDouble(tmp_path, api.url, copy.deepcopy(CONFIG), held=held, command=command).start()
    try:
        assert exabgp.process is not None
        code = exabgp.process.wait(timeout=30)
    finally:
        exabgp.stop()
    assert code == 0, exabgp.stderr()[-2000:]
    assert [line for line in exabgp.lines if line.startswith("neighbor ")] == [WEB_V4]


def test_importing_the_command_line_loads_no_configuration_schema() -> None:
    """`announcer run` installs its signal handlers first thing in main: nothing slow is imported before main."""
    probe = "import sys, announcer.cli; print(sorted(m for m in ('pydantic', 'announcer.config') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_withdraw_all_before_the_start_up_read_reads_what_exabgp_holds_and_withdraws_it() -> None:
    """The Announcer's side of it: nothing listed, nothing read yet; the stop synchronises, reads ExaBGP's
    adj-rib-out and withdraws what it holds."""
    harness = Harness(held=[held_line(peer, "198.51.100.10/32") for peer in V4_PEERS])
    harness.announcer.withdraw_all()
    assert harness.speaker.synchronised
    assert harness.speaker.take() == ["show adj-rib out extensive", WEB_V4]
