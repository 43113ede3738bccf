"""The route state machine in process, through its Speaker seam, with a recording fake of ExaBGP's pipe."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import pytest

from announcer.config import Config
from announcer.convert import Converted, ObjectKind, convert_object
from announcer.kube import Changed, ListPage, Relisted, Resource
from announcer.model import NO_ATTRIBUTES, Family, ServiceView, parse_prefix
from announcer.reconcile import UNKNOWN_ATTRIBUTES
from announcer.sessions import NeighbourEvent, SessionState
from announcer.state import Announcer, Answered, LoopEvent, Speaker
from tests.conftest import make_config
from tests.factories import endpoint, endpoint_slice, service

V4 = "neighbor 192.0.2.1 , neighbor 192.0.2.5"
V6 = "neighbor 2001:db8::1"
QUERY = "show adj-rib out extensive"


def held_line(peer: str, prefix: str, extra: str = "") -> str:
    """One route of 'show adj-rib out extensive' as ExaBGP 5 prints it."""
    family = "ipv6" if ":" in prefix else "ipv4"
    return (
        f"neighbor {peer} local-ip 192.0.2.11 local-as 64513 peer-as 64512 router-id 192.0.2.11 "
        f"family-allowed in-open {family} unicast {prefix} next-hop 192.0.2.11{extra}"
    )


class RecordingSpeaker:
    """Records every line; acks are given by the test, in any order, as ExaBGP would."""

    def __init__(self, held: list[str] | None = None) -> None:
        self.held = held or []
        self.lines: list[str] = []
        self.awaiting: list[tuple[str, Callable[[bool], None] | None]] = []
        self.synchronised = False
        self.resync = False  # set by a test: answers were lost, the next sync re-reads what ExaBGP holds

    def send(self, line: str, on_ack: Callable[[bool], None] | None = None) -> None:
        self.lines.append(line)
        self.awaiting.append((line, on_ack))

    def query(self, line: str, timeout: float) -> list[str]:
        self.lines.append(line)
        return list(self.held)

    def synchronise(self, timeout: float) -> str:
        self.synchronised = True
        return "exabgp 5.0.15"

    def take_resync(self) -> bool:
        """As the pipe: once after lost answers, every command still in flight reported refused first."""
        resync, self.resync = self.resync, False
        if resync:
            self.answer(False)
        return resync

    def answer(self, accepted: bool, where: Callable[[str], bool] = lambda line: True) -> int:
        """Answer every awaiting command the predicate picks; how many were answered."""
        chosen = [(line, ack) for line, ack in self.awaiting if where(line)]
        self.awaiting = [(line, ack) for line, ack in self.awaiting if not where(line)]
        for _, ack in chosen:
            if ack is not None:
                ack(accepted)
        return len(chosen)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class Harness:
    """An Announcer on a recording speaker, a clock the test moves, and the loop's hand-back of events."""

    def __init__(
        self, config: Config | None = None, held: list[str] | None = None, speaker: RecordingSpeaker | None = None
    ) -> None:
        self.speaker = speaker or RecordingSpeaker(held)
        self.posted: list[LoopEvent] = []
        self.now = 1000.0
        self.announcer = Announcer(config or make_config(), self.speaker, self.posted.append, clock=lambda: self.now)

    def feed(self, *events: LoopEvent) -> None:
        """Hand events to the Announcer as the loop would, then the ones it posted itself, then sync."""
        for event in events:
            self.announcer.handle(event)
        self.loop()

    def loop(self, stopping: Callable[[], bool] = lambda: False) -> None:
        self.handle_posted()
        self.announcer.sync(stopping)

    def handle_posted(self) -> None:
        while self.posted:
            self.announcer.handle(self.posted.pop(0))

    def list_everything(self, *services: dict[str, Any]) -> None:
        objects = [svc(obj) for obj in services]
        self.feed(
            ListPage(Resource.SERVICES, objects),
            Relisted(Resource.SERVICES, objects),
            Relisted(Resource.ENDPOINTSLICES, []),
        )


def svc(obj: dict[str, Any]) -> Converted:
    return convert_object(ObjectKind.SERVICE, obj, "bgp.announcer.io/")


WEB = service("web", ["198.51.100.10", "2001:db8:96::a"])
WEB_V4 = f"{V4} announce route 198.51.100.10/32 next-hop self"
WEB_V6 = f"{V6} announce route 2001:db8:96::a/128 next-hop self"


def test_the_recording_fake_is_a_speaker() -> None:
    speaker: Speaker = RecordingSpeaker()
    assert speaker.query(QUERY, 1.0) == []


def test_start_up_asks_exabgp_once_what_it_holds_and_leaves_routes_held_alike_untouched() -> None:
    held = [held_line(peer, "198.51.100.10/32") for peer in ("192.0.2.1", "192.0.2.5")]
    harness = Harness(held=held)
    harness.list_everything(WEB)
    assert harness.speaker.take() == [QUERY, WEB_V6]
    harness.list_everything(WEB)
    assert harness.speaker.take() == []


def test_announcements_go_out_with_the_first_page_and_withdrawals_wait_for_both_lists() -> None:
    stale = [held_line(peer, "198.51.100.99/32") for peer in ("192.0.2.1", "192.0.2.5")]
    harness = Harness(held=stale)
    harness.feed(ListPage(Resource.SERVICES, [svc(WEB)]))
    assert harness.speaker.take() == [QUERY, WEB_V4]
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == [WEB_V6], "IPv6 once no IPv4 line is in flight"
    harness.feed(Relisted(Resource.SERVICES, [svc(WEB)]))
    assert harness.speaker.take() == [], "EndpointSlices are not listed yet: no withdrawal"
    harness.feed(Relisted(Resource.ENDPOINTSLICES, []))
    assert harness.speaker.take() == [f"{V4} withdraw route 198.51.100.99/32 next-hop self"]
    assert harness.announcer.synced


SHOP = service("shop", ["198.51.100.12", "2001:db8:96::c"])
SHOP_V4 = f"{V4} announce route 198.51.100.12/32 next-hop self"


def test_before_the_full_sync_ipv6_announcements_wait_while_ipv4_ones_are_written_or_in_flight() -> None:
    """ExaBGP applies lines in order and sends IPv4 packed, IPv6 one prefix per UPDATE: the IPv4 table of every page
    read so far goes first (BENCHMARKS.md, "The first sync: IPv4 first"), and IPv6 fills ExaBGP's idle time."""
    harness = Harness()
    harness.feed(ListPage(Resource.SERVICES, [svc(WEB)]))
    assert harness.speaker.take() == [QUERY, WEB_V4]
    harness.feed(ListPage(Resource.SERVICES, [svc(SHOP)]))
    assert harness.speaker.take() == [SHOP_V4], "the second page's IPv4 goes ahead of the first page's IPv6"
    harness.speaker.answer(True, lambda line: line == WEB_V4)
    harness.loop()
    assert harness.speaker.take() == [], "an IPv4 line is still in flight"
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == [
        f"{V6} announce attributes next-hop self nlri 2001:db8:96::a/128 2001:db8:96::c/128"
    ]
    harness.feed(Relisted(Resource.SERVICES, [svc(WEB), svc(SHOP)]), Relisted(Resource.ENDPOINTSLICES, []))
    assert harness.speaker.take() == []
    assert harness.announcer.synced


def test_the_lists_complete_send_every_ipv6_announcement_that_waited_behind_ipv4() -> None:
    harness = Harness()
    harness.feed(ListPage(Resource.SERVICES, [svc(WEB)]))
    assert harness.speaker.take() == [QUERY, WEB_V4]
    harness.feed(Relisted(Resource.SERVICES, [svc(WEB)]), Relisted(Resource.ENDPOINTSLICES, []))
    assert harness.speaker.take() == [WEB_V6], "sent with the IPv4 line still in flight: nothing else can go first"


def test_without_ipv4_peers_ipv6_announcements_go_out_with_their_page() -> None:
    harness = Harness(make_config(bgp={"peers": [{"address": "2001:db8::1", "peer_as": 64512}]}))
    harness.feed(ListPage(Resource.SERVICES, [svc(WEB)]))
    assert harness.speaker.take() == [QUERY, WEB_V6]


def test_a_service_deleted_before_the_first_full_sync_is_withdrawn_only_at_it() -> None:
    harness = Harness()
    harness.feed(ListPage(Resource.SERVICES, [svc(WEB)]))
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == [QUERY, WEB_V4, WEB_V6]
    harness.feed(Changed(Resource.SERVICES, "DELETED", svc(WEB)))
    assert harness.speaker.take() == []
    assert harness.announcer.deferred == {
        parse_prefix("198.51.100.10/32"),
        parse_prefix("2001:db8:96::a/128"),
    }
    harness.feed(Relisted(Resource.SERVICES, []), Relisted(Resource.ENDPOINTSLICES, []))
    assert harness.speaker.take() == [
        f"{V4} withdraw route 198.51.100.10/32 next-hop self",
        f"{V6} withdraw route 2001:db8:96::a/128 next-hop self",
    ]


def test_a_refused_announce_is_sent_again_after_the_backoff_not_before() -> None:
    harness = Harness()
    harness.list_everything(WEB)
    harness.speaker.take()
    assert harness.speaker.answer(False, lambda line: line == WEB_V6) == 1
    harness.speaker.answer(True)
    assert [(type(event), event.accepted) for event in harness.posted if isinstance(event, Answered)] == [
        (Answered, False),
        (Answered, True),
    ], "the ack's thread only posts events"
    harness.loop()
    assert harness.speaker.take() == [], "the retry waits for its backoff"
    harness.now += 0.4
    harness.loop()
    assert harness.speaker.take() == []
    harness.now += 1.0  # the first delay is at most 1 s
    harness.loop()
    assert harness.speaker.take() == [WEB_V6]


def test_a_refused_withdraw_keeps_the_prefix_held_reads_what_exabgp_holds_and_withdraws_it_per_peer() -> None:
    harness = Harness()
    harness.list_everything(WEB)
    harness.speaker.answer(True)
    harness.speaker.take()
    harness.feed(Changed(Resource.SERVICES, "DELETED", svc(WEB)))
    withdraw_v4 = f"{V4} withdraw route 198.51.100.10/32 next-hop self"
    assert withdraw_v4 in harness.speaker.take()
    harness.speaker.held = [held_line(peer, "198.51.100.10/32") for peer in ("192.0.2.1", "192.0.2.5")]
    harness.speaker.answer(False, lambda line: line == withdraw_v4)
    harness.announcer.handle(harness.posted.pop(0))
    assert parse_prefix("198.51.100.10/32") in harness.announcer.announced
    harness.loop()
    assert harness.speaker.take() == [
        QUERY,
        "neighbor 192.0.2.1 withdraw route 198.51.100.10/32 next-hop self",
        "neighbor 192.0.2.5 withdraw route 198.51.100.10/32 next-hop self",
    ]


def test_a_session_coming_up_retries_refused_routes_at_once() -> None:
    harness = Harness()
    harness.list_everything(WEB)
    harness.speaker.take()
    harness.speaker.answer(False, lambda line: line == WEB_V6)
    harness.loop()
    harness.feed(NeighbourEvent("2001:db8::1", SessionState.UP))
    assert harness.speaker.take() == [WEB_V6]


def test_end_of_rib_follows_the_first_full_sync_s_routes_per_family_once_exabgp_accepted_them() -> None:
    harness = Harness(make_config(bgp={"graceful_restart": 120}))
    harness.feed(ListPage(Resource.SERVICES, [svc(WEB)]))
    assert not [line for line in harness.speaker.lines if " eor " in line], "no EOR before the full sync"
    harness.feed(Relisted(Resource.SERVICES, [svc(WEB)]), Relisted(Resource.ENDPOINTSLICES, []))
    assert harness.speaker.take() == [QUERY, WEB_V4, WEB_V6], "no EOR before ExaBGP accepted the routes"
    harness.speaker.answer(True, lambda line: line == WEB_V4)
    harness.loop()
    assert harness.speaker.take() == [f"{V4} announce eor ipv4 unicast"]
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == [f"{V6} announce eor ipv6 unicast"]
    harness.loop()
    assert harness.speaker.take() == [], "End-of-RIB is sent once"


def test_a_session_coming_up_after_the_sync_gets_its_own_end_of_rib_only() -> None:
    harness = Harness(make_config(bgp={"graceful_restart": 120}))
    harness.list_everything(WEB)
    harness.speaker.answer(True)
    harness.loop()
    harness.speaker.take()
    harness.feed(NeighbourEvent("192.0.2.5", SessionState.UP))
    assert harness.speaker.take() == ["neighbor 192.0.2.5 announce eor ipv4 unicast"]


def test_no_end_of_rib_without_graceful_restart() -> None:
    harness = Harness()
    harness.list_everything(WEB)
    harness.feed(NeighbourEvent("192.0.2.5", SessionState.UP))
    assert not [line for line in harness.speaker.lines if " eor " in line]


def test_withdraw_all_withdraws_every_route_held_including_those_found_at_start() -> None:
    """The SIGTERM path: what ExaBGP held before we started goes too, not only what we announced."""
    stale = [held_line(peer, "198.51.100.99/32") for peer in ("192.0.2.1", "192.0.2.5")]
    harness = Harness(held=stale)
    harness.feed(ListPage(Resource.SERVICES, [svc(WEB)]))
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == [QUERY, WEB_V4, WEB_V6]
    harness.announcer.withdraw_all()
    assert harness.speaker.take() == [
        f"{V4} withdraw attributes next-hop self nlri 198.51.100.10/32 198.51.100.99/32",
        f"{V6} withdraw route 2001:db8:96::a/128 next-hop self",
    ]
    assert harness.announcer.announced == {}


def test_a_stop_during_a_sync_writes_no_further_announcement() -> None:
    harness = Harness()
    harness.feed(ListPage(Resource.SERVICES, []))
    harness.speaker.take()
    harness.announcer.handle(ListPage(Resource.SERVICES, [svc(WEB)]))
    harness.loop(stopping=lambda: True)
    assert harness.speaker.take() == []


def test_an_object_whose_problems_do_not_change_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    bad = service("web", ["198.51.100.10", "2001:db8:96::a"])
    bad["spec"]["clusterIPs"][1] = "not-an-address"
    harness = Harness()
    with caplog.at_level(logging.WARNING, logger="announcer.state"):
        harness.list_everything(bad)
        harness.feed(Changed(Resource.SERVICES, "MODIFIED", svc(bad)))
        harness.list_everything(bad)
    assert [record.getMessage() for record in caplog.records] == [
        "Service default/web: spec.clusterIPs[1]: 'not-an-address' is not an IP address"
    ]


def test_an_object_that_fails_to_apply_is_named_once_and_skipped_and_the_others_apply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = Converted(ObjectKind.SERVICE, ("default", "broken"), ServiceView("default", "broken", cluster_ips=("x",)))  # type: ignore[arg-type]
    harness = Harness()
    with caplog.at_level(logging.ERROR, logger="announcer.state"):
        harness.feed(ListPage(Resource.SERVICES, [broken, svc(WEB)]))
    assert harness.speaker.take() == [QUERY, WEB_V4]
    assert [record.getMessage() for record in caplog.records] == [
        "Service default/broken skipped: applying it failed (AttributeError: 'str' object has no attribute 'version')"
    ]


def test_an_unreadable_update_of_an_endpoint_slice_keeps_what_it_contributed() -> None:
    """A slice whose new version defeated conversion is skipped: its Local Service stays announced."""
    local = service("web", ["198.51.100.10"], service_type="NodePort", external_traffic_policy="Local")
    here = convert_object(
        ObjectKind.ENDPOINT_SLICE, endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.50")]), "x/"
    )
    harness = Harness()
    harness.feed(
        ListPage(Resource.SERVICES, [svc(local)]),
        Relisted(Resource.SERVICES, [svc(local)]),
        ListPage(Resource.ENDPOINTSLICES, [here]),
        Relisted(Resource.ENDPOINTSLICES, [here]),
    )
    assert harness.speaker.take() == [QUERY, WEB_V4]
    assert here.key is not None
    unreadable = Converted(ObjectKind.ENDPOINT_SLICE, here.key, None, (), unreadable=True)
    harness.feed(Changed(Resource.ENDPOINTSLICES, "MODIFIED", unreadable))
    assert harness.speaker.take() == []
    no_service = convert_object(ObjectKind.ENDPOINT_SLICE, {**endpoint_slice("web", "IPv4", []), "metadata": {
        "namespace": "default", "name": here.key[1]}}, "x/")  # fmt: skip
    assert no_service.view is None and not no_service.unreadable
    harness.feed(Changed(Resource.ENDPOINTSLICES, "MODIFIED", no_service))
    assert harness.speaker.take() == [f"{V4} withdraw route 198.51.100.10/32 next-hop self"]


def test_start_up_synchronises_with_exabgp_before_its_first_question() -> None:
    """Answers queued for a previous announcer process must not be read as the answer to the start-up query."""
    harness = Harness()
    harness.list_everything(WEB)
    assert harness.speaker.synchronised
    assert harness.speaker.take()[0] == QUERY


def test_after_lost_answers_the_announcer_rereads_what_exabgp_holds_and_sends_what_differs() -> None:
    harness = Harness()
    harness.list_everything(WEB)
    harness.speaker.answer(True)
    harness.speaker.take()
    # ExaBGP dropped the IPv6 route while the answers were lost; it still holds the IPv4 one (both peers).
    harness.speaker.held = [held_line(peer, "198.51.100.10/32") for peer in ("192.0.2.1", "192.0.2.5")]
    harness.speaker.resync = True
    harness.loop()
    assert harness.speaker.take() == [QUERY, WEB_V6]
    harness.loop()
    assert harness.speaker.take() == [], "one re-read per resynchronisation"


# --- ExaBGP refusing a line: what each peer holds, a peer that cannot take routes, End-of-RIB (issue #9) -----
V4_NET = parse_prefix("198.51.100.10/32")
API = service("api", ["198.51.100.11"])


def alone(peer: str, prefix: str = "198.51.100.10/32") -> str:
    return f"neighbor {peer} announce route {prefix} next-hop self"


def test_a_refused_announce_stays_held_unknown_and_deleting_it_withdraws_it_where_exabgp_holds_it() -> None:
    """ExaBGP refused the IPv4 line after the first peer took the route (the second could not): the prefix is not
    forgotten but held with unknown attributes by both; the Service deleted, ExaBGP's adj-rib-out is read and
    the route is withdrawn from the peer holding it, and from no other."""
    harness = Harness()
    harness.list_everything(WEB)
    harness.speaker.take()
    harness.speaker.answer(False, lambda line: line == WEB_V4)
    harness.speaker.answer(True)
    harness.handle_posted()
    assert V4_NET in harness.announcer.announced, "refused, yet maybe held: not forgotten"
    assert [harness.announcer.announced.of(V4_NET, peer) for peer in harness.announcer.peers[Family.IPV4]] == [
        UNKNOWN_ATTRIBUTES,
        UNKNOWN_ATTRIBUTES,
    ]
    harness.speaker.held = [held_line("192.0.2.1", "198.51.100.10/32"), held_line(V6.split()[1], "2001:db8:96::a/128")]
    harness.feed(Changed(Resource.SERVICES, "DELETED", svc(WEB)))
    lines = harness.speaker.take()
    assert lines[0] == QUERY
    assert sorted(lines[1:]) == sorted([
        "neighbor 192.0.2.1 withdraw route 198.51.100.10/32 next-hop self",
        f"{V6} withdraw route 2001:db8:96::a/128 next-hop self",
    ])  # fmt: skip
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == []
    assert harness.announcer.announced == {}


def test_a_refused_line_goes_at_once_to_each_peer_alone_and_a_refusing_peer_never_holds_back_the_others() -> None:
    """ExaBGP stops a line at the first peer it cannot resolve 'next-hop self' for (not connected yet, listed
    first): the route goes at once to each peer alone; the healthy one takes it, and from then on gets every new
    route in lines of its own at once, while the refusing one is retried on its own backoff, then rejoins the
    bulk lines once it accepts."""
    harness = Harness()
    harness.list_everything(WEB)
    harness.speaker.take()
    harness.speaker.answer(False, lambda line: line == WEB_V4)
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == [alone("192.0.2.1"), alone("192.0.2.5")], "at once, no backoff"
    harness.speaker.answer(False, lambda line: line == alone("192.0.2.1"))
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == []
    held = harness.announcer.announced
    assert (held.of(V4_NET, ipaddress.ip_address("192.0.2.1")), held.of(V4_NET, ipaddress.ip_address("192.0.2.5"))) == (
        UNKNOWN_ATTRIBUTES,
        NO_ATTRIBUTES,
    )
    harness.feed(Changed(Resource.SERVICES, "ADDED", svc(API)))
    assert harness.speaker.take() == [alone("192.0.2.5", "198.51.100.11/32")], "the healthy peer at once, alone"
    harness.speaker.answer(True)
    harness.now += 1.0
    harness.loop()
    assert harness.speaker.take() == [
        "neighbor 192.0.2.1 announce attributes next-hop self nlri 198.51.100.10/32 198.51.100.11/32"
    ]
    harness.speaker.answer(True)
    harness.loop()
    assert harness.announcer.announced == {V4_NET: NO_ATTRIBUTES, parse_prefix("198.51.100.11/32"):
        NO_ATTRIBUTES, parse_prefix("2001:db8:96::a/128"): NO_ATTRIBUTES}  # fmt: skip
    harness.feed(Changed(Resource.SERVICES, "ADDED", svc(service("db", ["198.51.100.12"]))))
    assert harness.speaker.take() == [f"{V4} announce route 198.51.100.12/32 next-hop self"], "bulk again"


def test_end_of_rib_waits_for_the_retry_of_what_the_first_sync_got_refused() -> None:
    harness = Harness(make_config(bgp={"graceful_restart": 120}))
    harness.list_everything(WEB)
    harness.speaker.take()
    harness.speaker.answer(False, lambda line: line == WEB_V6)
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == [f"{V4} announce eor ipv4 unicast"], "the IPv6 route was refused: no EOR yet"
    harness.now += 1.0
    harness.loop()
    assert harness.speaker.take() == [WEB_V6]
    harness.loop()
    assert harness.speaker.take() == [], "not before the retry is accepted"
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == [f"{V6} announce eor ipv6 unicast"]


def test_a_session_coming_up_gets_its_end_of_rib_only_after_its_retried_routes_are_accepted() -> None:
    harness = Harness(make_config(bgp={"graceful_restart": 120}))
    harness.list_everything(WEB)
    harness.speaker.take()
    harness.speaker.answer(False, lambda line: line == WEB_V6)
    harness.speaker.answer(True)
    harness.loop()
    harness.speaker.take()
    harness.feed(NeighbourEvent("2001:db8::1", SessionState.UP))
    assert harness.speaker.take() == [WEB_V6], "the retry at once, the End-of-RIB not yet"
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == [f"{V6} announce eor ipv6 unicast"]


def test_a_peer_that_keeps_refusing_holds_back_no_other_peer_s_end_of_rib() -> None:
    """The first IPv4 peer never connects: the second gets its routes alone and its End-of-RIB; the first none."""
    harness = Harness(make_config(bgp={"graceful_restart": 120}))
    harness.list_everything(WEB)
    harness.speaker.take()
    harness.speaker.answer(False, lambda line: line == WEB_V4)
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == [alone("192.0.2.1"), alone("192.0.2.5"), f"{V6} announce eor ipv6 unicast"]
    harness.speaker.answer(False, lambda line: line == alone("192.0.2.1"))
    harness.speaker.answer(True)
    harness.loop()
    assert harness.speaker.take() == ["neighbor 192.0.2.5 announce eor ipv4 unicast"]


def test_while_the_lists_are_read_ipv6_goes_out_a_few_hundred_prefixes_ahead_at_most() -> None:
    """A later page's IPv4 line never waits behind more than IPV6_LINES_AHEAD x IPV6_AHEAD_PREFIXES IPv6 routes."""
    many = [svc(service(f"s{n}", [f"198.51.100.{n}", f"2001:db8:96::{n:x}"])) for n in range(1, 251)]
    harness = Harness()
    harness.feed(ListPage(Resource.SERVICES, many))
    assert [line.split(" nlri ")[0] for line in harness.speaker.take()] == [
        QUERY,
        f"{V4} announce attributes next-hop self",
    ]
    harness.speaker.answer(True)
    harness.loop()
    (line,) = harness.speaker.take()
    assert line.startswith(f"{V6} announce attributes next-hop self nlri ")
    assert len(line.split(" nlri ")[1].split()) == 200
    harness.speaker.answer(True)
    harness.loop()
    (line,) = harness.speaker.take()
    assert len(line.split(" nlri ")[1].split()) == 50
