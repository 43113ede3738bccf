"""BGP session visibility: ExaBGP's neighbour lines parsed, each change recorded, counted and logged once."""

from __future__ import annotations

import ipaddress
import logging
import os
import threading

import pytest

from announcer.exabgp import ExaBgpPipe
from announcer.model import Family
from announcer.sessions import (
    NeighbourEvent,
    Sessions,
    SessionsRead,
    SessionState,
    parse_neighbor_summary,
    parse_neighbour_event,
)
from tests.conftest import make_config
from tests.test_state import WEB, WEB_V6, Harness

PEER4 = ipaddress.ip_address("192.0.2.1")
PEER6 = ipaddress.ip_address("2001:db8::1")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("neighbor 192.0.2.1 up", NeighbourEvent("192.0.2.1", SessionState.UP)),
        ("neighbor 2001:db8::1 connected", NeighbourEvent("2001:db8::1", SessionState.CONNECTED)),
        (
            "neighbor 192.0.2.1 down - peer reset, message (notification) error (6,4,Administratively Reset)",
            NeighbourEvent(
                "192.0.2.1", SessionState.DOWN, "peer reset, message (notification) error (6,4,Administratively Reset)"
            ),
        ),
        (
            "neighbor 192.0.2.1 down - bad \x1b[31m text",
            NeighbourEvent("192.0.2.1", SessionState.DOWN, "bad ?[31m text"),
        ),
        ("neighbor 192.0.2.1 local-ip 192.0.2.11 local-as 64513 peer-as 64512 ipv4 unicast 10.0.0.1/32", None),
        ("neighbor 192.0.2.1 down -", NeighbourEvent("192.0.2.1", SessionState.DOWN)),
        ("neighbor 192.0.2.1 upper", None),
        ("done", None),
    ],
)
def test_exabgp_5_neighbour_lines_as_its_text_encoder_writes_them_are_parsed_and_nothing_else(
    line: str, expected: NeighbourEvent | None
) -> None:
    assert parse_neighbour_event(line) == expected


def test_a_down_reason_is_capped() -> None:
    event = parse_neighbour_event("neighbor 192.0.2.1 down - " + "x" * 1000)
    assert event is not None and len(event.reason) == 200


def test_the_summary_of_exabgp_5_tells_each_peer_s_state() -> None:
    """`show neighbor summary` as ExaBGP 5.0.15 prints it (bgp/neighbor.py summary_header and summary)."""
    answer = [
        "Peer            AS        up/down state       |     #sent     #recvd",
        "192.0.2.1       64512     0:00:12 established           3          0",
        "192.0.2.5       64512        down active                0          0",
        "2001:db8::1     64512        down opensent              0          0",
        "192.0.2.9       64512   1 day, 2:03:04 established      12          0",
    ]
    assert parse_neighbor_summary(answer) == {
        "192.0.2.1": SessionState.UP,
        "192.0.2.5": SessionState.DOWN,
        "2001:db8::1": SessionState.CONNECTED,
        "192.0.2.9": SessionState.UP,
    }


def test_sessions_record_a_change_once_count_changes_between_down_and_up_and_keep_the_last_down_reason() -> None:
    sessions = Sessions([PEER4, PEER6])
    assert sessions.current[PEER4].state is SessionState.UNKNOWN
    first = sessions.set("192.0.2.1", SessionState.DOWN, 10.0, "connection refused")
    assert first is not None and (first.old, first.new) == (SessionState.UNKNOWN, SessionState.DOWN)
    assert sessions.set("192.0.2.1", SessionState.DOWN, 11.0) is None, "the same state twice is no change"
    sessions.set("192.0.2.1", SessionState.DOWN, 11.5, "hold timer expired")
    assert sessions.current[PEER4].last_down_reason == "hold timer expired", "but a new reason is kept"
    sessions.set("192.0.2.1", SessionState.DOWN, 11.8, "connection refused")
    sessions.set("192.0.2.1", SessionState.CONNECTED, 12.0)
    sessions.set("192.0.2.1", SessionState.UP, 13.0)
    session = sessions.current[PEER4]
    assert (session.state, session.since, session.changes) == (SessionState.UP, 13.0, 1)
    assert session.last_down_reason == "connection refused"
    assert sessions.established(Family.IPV4) == [PEER4]
    assert sessions.established(Family.IPV6) == []
    assert sessions.set("192.0.2.99", SessionState.UP, 14.0) is None, "not a configured peer"


def test_every_session_change_is_logged_with_the_peer_family_and_old_and_new_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the announcer logged nothing about peers."""
    harness = Harness()
    harness.list_everything(WEB)
    with caplog.at_level(logging.INFO, logger="announcer.state"):
        harness.feed(NeighbourEvent("2001:db8::1", SessionState.DOWN, "connection refused"))
        harness.feed(NeighbourEvent("2001:db8::1", SessionState.DOWN, "connection refused"))
        harness.feed(NeighbourEvent("2001:db8::1", SessionState.UP))
    messages = [record.getMessage() for record in caplog.records if "session" in record.getMessage()]
    assert messages == [
        "BGP session 2001:db8::1 (ipv6): unknown -> down (connection refused)",
        "BGP session 2001:db8::1 (ipv6): down -> up",
    ]
    assert harness.announcer.sessions.current[PEER6].state is SessionState.UP
    assert harness.announcer.sessions.current[PEER6].changes == 1


def test_a_refusing_peer_s_connect_attempts_are_logged_at_debug_and_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Real ExaBGP 5.0.15 writes `connected` then `down - closing connection` for every connect attempt to a peer that
    refuses (seen in test_status.py's real-ExaBGP test): one info line when it is first down, none per attempt."""
    harness = Harness()
    with caplog.at_level(logging.DEBUG, logger="announcer.state"):
        for _attempt in range(3):
            harness.feed(NeighbourEvent("192.0.2.1", SessionState.CONNECTED))
            harness.feed(NeighbourEvent("192.0.2.1", SessionState.DOWN, "closing connection"))
        harness.now += 5
        harness.feed(NeighbourEvent("192.0.2.1", SessionState.CONNECTED))
        harness.feed(NeighbourEvent("192.0.2.1", SessionState.UP))
    info = [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO]
    assert info == [
        "BGP session 192.0.2.1 (ipv4): unknown -> down (closing connection)",
        "BGP session 192.0.2.1 (ipv4): down -> up",
    ]
    assert sum(record.levelno == logging.DEBUG for record in caplog.records) == 6
    assert harness.announcer.sessions.current[PEER4].changes == 1


def test_the_states_read_at_start_up_are_recorded_and_logged_and_a_later_line_wins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: a respawned announcer was told nothing of the sessions already up."""
    harness = Harness()
    with caplog.at_level(logging.INFO, logger="announcer.state"):
        harness.feed(SessionsRead({"192.0.2.1": SessionState.UP, "2001:db8::1": SessionState.DOWN}))
    assert "BGP session 192.0.2.1 (ipv4): unknown -> up" in caplog.text
    states = {str(peer): session.state for peer, session in harness.announcer.sessions.current.items()}
    assert states == {"192.0.2.1": SessionState.UP, "192.0.2.5": SessionState.UNKNOWN, "2001:db8::1": SessionState.DOWN}
    harness.feed(NeighbourEvent("2001:db8::1", SessionState.UP))
    assert harness.announcer.sessions.current[PEER6].state is SessionState.UP


def test_the_start_up_read_of_exabgp_s_adj_rib_out_calls_on_first_read_once() -> None:
    harness = Harness()
    calls: list[list[str]] = []
    harness.announcer.on_first_read = lambda: calls.append(list(harness.speaker.lines))
    harness.list_everything(WEB)
    harness.list_everything(WEB)
    assert calls == [["show adj-rib out extensive"]], "after the adj-rib-out was read, before any route"


def test_a_session_coming_up_still_retries_what_that_peer_refused() -> None:
    harness = Harness()
    harness.list_everything(WEB)
    harness.speaker.take()
    harness.speaker.answer(False, lambda line: line == WEB_V6)
    harness.loop()
    harness.feed(NeighbourEvent("2001:db8::1", SessionState.DOWN))
    assert harness.speaker.take() == []
    harness.feed(NeighbourEvent("2001:db8::1", SessionState.UP))
    assert harness.speaker.take() == [WEB_V6]


def test_the_pipe_hands_on_every_neighbour_line_and_takes_none_of_them_for_an_answer() -> None:
    """Before: the pipe handed on `up` only; `down` and `connected` were dropped."""
    answers_r, answers_w = os.pipe()
    commands_r, commands_w = os.pipe()
    seen: list[NeighbourEvent] = []
    got = threading.Event()

    def on_neighbour(event: NeighbourEvent) -> None:
        seen.append(event)
        if len(seen) == 3:
            got.set()

    with open(commands_w, "wb") as commands, open(answers_r, "rb") as answers:
        pipe = ExaBgpPipe(commands, answers, max_in_flight=4, ack_timeout=5.0, on_neighbour=on_neighbour)
        pipe.start()
        with open(answers_w, "wb", buffering=0) as exabgp:
            exabgp.write(b"neighbor 192.0.2.1 connected\n\nneighbor 192.0.2.1 up\nneighbor 192.0.2.1 down - gone\n")
            assert got.wait(5)
        assert [(event.peer, event.state, event.reason) for event in seen] == [
            ("192.0.2.1", SessionState.CONNECTED, ""),
            ("192.0.2.1", SessionState.UP, ""),
            ("192.0.2.1", SessionState.DOWN, "gone"),
        ]
        assert pipe.stale_total == 0
    os.close(commands_r)


def test_states_read_at_start_up_owe_no_second_end_of_rib() -> None:
    """With graceful restart the first sync owes every peer its End-of-RIB; a session found up by the start-up read
    did not come up then, so it is owed no other one (a NeighbourEvent 'up' is)."""
    harness = Harness(make_config(bgp={"graceful_restart": 120}))
    harness.list_everything(WEB)
    harness.speaker.answer(True)
    harness.loop()
    harness.speaker.answer(True)
    harness.loop()
    assert sum(" announce eor " in line for line in harness.speaker.take()) == 2
    harness.feed(SessionsRead({"192.0.2.1": SessionState.UP, "2001:db8::1": SessionState.UP}))
    assert harness.speaker.take() == []
    harness.feed(NeighbourEvent("192.0.2.5", SessionState.UP))
    assert harness.speaker.take() == ["neighbor 192.0.2.5 announce eor ipv4 unicast"]
