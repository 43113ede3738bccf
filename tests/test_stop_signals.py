"""SIGTERM is honoured within shutdown_timeout whatever the announcer is doing: wedged ExaBGP, or the first instants."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.fakeapi import FakeApiServer
from tests.exabgp_double import CONFIG, V4_PEERS, ExaBgpDouble
from tests.factories import service

# The old limit was 60 s on the main loop's thread; the announcer must be gone well before it.
SHUTDOWN_TIMEOUT = 2.0
GONE_WITHIN = 15.0
WEB_V4 = "neighbor 192.0.2.1 , neighbor 192.0.2.5 withdraw route 198.51.100.10/32 next-hop self"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.5).start() as server:
        yield server


def configured(**speaker: Any) -> dict[str, Any]:
    config = copy.deepcopy(CONFIG)
    config["speaker"] = {**config["speaker"], "shutdown_timeout": SHUTDOWN_TIMEOUT, **speaker}
    return config


def stop(exabgp: ExaBgpDouble) -> int | None:
    """SIGTERM; the exit code, or None if the announcer was still running GONE_WITHIN s later."""
    try:
        assert exabgp.process is not None
        exabgp.process.terminate()
        return exabgp.process.wait(timeout=GONE_WITHIN)
    except subprocess.TimeoutExpired:
        return None


def held_line(peer: str, prefix: str) -> str:
    return (
        f"neighbor {peer} local-ip 192.0.2.11 local-as 64513 peer-as 64512 router-id 192.0.2.11 "
        f"family-allowed in-open ipv4 unicast {prefix} next-hop 192.0.2.11"
    )


def test_sigterm_while_exabgp_is_wedged_in_a_resynchronisation_writes_the_withdraws_and_exits_in_time(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """Issue 18 item 4: ExaBGP stops answering; past the ack timeout the announcer resynchronises, and ExaBGP does
    not answer 'version' either. SIGTERM then: the withdraw of what ExaBGP was told is written, and the announcer
    exits 0 once shutdown_timeout has passed, not after the synchronisation's 60 s."""
    exabgp = ExaBgpDouble(tmp_path, api.url, configured(ack_timeout=1.0)).start()
    try:
        exabgp.wait_for(lambda: "show adj-rib out extensive" in exabgp.lines, what="the start-up query")
        api.apply(service("web", ["198.51.100.10"]))
        exabgp.wait_for(lambda: exabgp.prefixes(V4_PEERS[0]) == {"198.51.100.10/32"}, what="the route")
        exabgp.wedged = True
        api.apply(service("api", ["198.51.100.11"]))
        exabgp.wait_for(lambda: exabgp.lines.count("version") == 2, what="the resynchronisation after the ack timeout")
        assert stop(exabgp) == 0, "not gone within 15 s (shutdown_timeout 2 s)"
        after = exabgp.lines[len(exabgp.lines) - exabgp.lines[::-1].index("version") :]
        assert any(line.startswith("neighbor 192.0.2.1 , neighbor 192.0.2.5 withdraw ") for line in after), after
        assert "198.51.100.10/32" in " ".join(after)
    finally:
        exabgp.stop()
    assert "not every withdraw was acknowledged within 2.0 s" in exabgp.stderr()


def test_sigterm_while_exabgp_never_answered_the_start_up_synchronisation_exits_in_time(
    tmp_path: Path, api: FakeApiServer
) -> None:
    exabgp = ExaBgpDouble(tmp_path, api.url, configured())
    exabgp.wedged = True
    exabgp.start()
    try:
        exabgp.wait_for(lambda: "version" in exabgp.lines, what="the start-up synchronisation")
        assert stop(exabgp) == 0, "not gone within 15 s (shutdown_timeout 2 s)"
    finally:
        exabgp.stop()
    assert not [line for line in exabgp.lines if line.startswith("neighbor ")]
