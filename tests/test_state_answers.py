"""What answers do to the state machine: a route held back while a line is in flight, answers lost to a timeout."""

from __future__ import annotations

from announcer.kube import Changed, Resource
from announcer.state import Answered
from tests.conftest import make_config
from tests.factories import service
from tests.test_state import API, QUERY, V4, WEB, WEB_V4, Harness, held_line, svc


def test_after_an_ack_timeout_nothing_the_reread_shows_held_is_sent_again() -> None:
    """Issue 18 item 6: the pipe gave up on a line in flight (its answer lost) and reported it refused; ExaBGP had
    applied it. The re-read shows every route held as wanted: the late 'refused' of the given-up line must not
    mark them unknown and send them again peer by peer."""
    harness = Harness()
    harness.list_everything(WEB)
    harness.speaker.answer(True)
    harness.feed(Changed(Resource.SERVICES, "ADDED", svc(API)))
    assert harness.speaker.take()[-1] == f"{V4} announce route 198.51.100.11/32 next-hop self"
    both = ("192.0.2.1", "192.0.2.5")
    harness.speaker.held = [
        *(held_line(peer, prefix) for peer in both for prefix in ("198.51.100.10/32", "198.51.100.11/32")),
        held_line("2001:db8::1", "2001:db8:96::a/128"),
    ]
    harness.speaker.resync = True
    harness.loop()
    assert harness.speaker.take() == [QUERY]
    assert [event.accepted for event in harness.posted if isinstance(event, Answered)] == [False]
    harness.loop()
    harness.now += 60.0
    harness.loop()
    assert harness.speaker.take() == [], "what the re-read shows held is not sent again"


def test_a_change_held_back_while_a_later_line_is_in_flight_is_sent_once_that_line_is_accepted() -> None:
    """Issue 18 item 3: L1 (both IPv4 peers) is refused while L2, a later line for the same prefix, is in flight;
    a new Service is then held back for the refusing peers. L2 accepted, both peers took a line: the held-back
    route goes out then, not only after an unrelated event."""
    harness = Harness(make_config(annotations={"med": {"enabled": True}}))  # L2 comes from a MED annotation
    harness.list_everything(WEB)  # L1: WEB_V4
    med = service("web", ["198.51.100.10", "2001:db8:96::a"], annotations={"bgp.announcer.io/med": "5"})
    harness.feed(Changed(Resource.SERVICES, "MODIFIED", svc(med)))  # L2: the same prefix, MED 5
    harness.speaker.take()
    harness.speaker.answer(False, lambda line: line == WEB_V4)
    harness.loop()
    assert harness.speaker.take() == [], "L2 holds what L1 would have: nothing to resend"
    harness.feed(Changed(Resource.SERVICES, "ADDED", svc(API)))
    assert harness.speaker.take() == [], "held back for the refusing peers"
    harness.speaker.answer(True)
    harness.loop()
    for _ in range(600):  # ten simulated minutes
        harness.now += 1.0
        harness.loop()
    sent = harness.speaker.take()
    for peer in ("192.0.2.1", "192.0.2.5"):
        assert any(f"neighbor {peer}" in line and "198.51.100.11/32" in line for line in sent), (peer, sent)
    assert harness.announcer.retry_at == {} and not any(harness.announcer.retry.values())
