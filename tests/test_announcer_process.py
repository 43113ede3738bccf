"""The whole announcer process against the stand-in API server (real client, real HTTP) and an ExaBGP double."""

from __future__ import annotations

import copy
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.fakeapi import FakeApiServer
from tests.exabgp_double import CONFIG, START_UP_LINES, V4_PEERS, V6_PEER, ExaBgpDouble
from tests.factories import endpoint, endpoint_slice, service


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.5).start() as server:
        yield server


def start(tmp_path: Path, api: FakeApiServer, **options: Any) -> ExaBgpDouble:
    config = copy.deepcopy(CONFIG)
    for key, value in options.pop("config", {}).items():
        config[key] = {**config.get(key, {}), **value}
    return ExaBgpDouble(tmp_path, api.url, config, **options).start()


@pytest.fixture
def exabgp(tmp_path: Path, api: FakeApiServer) -> Iterator[ExaBgpDouble]:
    double = start(tmp_path, api)
    yield double
    double.stop()


def v4(exabgp: ExaBgpDouble) -> set[str]:
    """The prefixes every IPv4 neighbour holds (asserting they agree)."""
    tables = [exabgp.prefixes(peer) for peer in V4_PEERS]
    assert tables[0] == tables[1]
    return tables[0]


def first_sync(exabgp: ExaBgpDouble) -> None:
    exabgp.wait_for(lambda: "show adj-rib out extensive" in exabgp.lines, what="the start-up adj-rib-out query")


@pytest.mark.parametrize(
    "cluster_ips",
    [["198.51.100.10", "2001:db8:96::a"], ["2001:db8:96::a", "198.51.100.10"]],
    ids=["IPv4-primary RequireDualStack", "IPv6-primary dual-stack"],
)
def test_a_dual_stack_service_is_announced_per_family_and_withdrawn_on_delete(
    api: FakeApiServer, exabgp: ExaBgpDouble, cluster_ips: list[str]
) -> None:
    """Both clusterIPs are announced, the /32 only to IPv4 neighbours and the /128 only to the IPv6 one."""
    first_sync(exabgp)
    api.apply(service("web", cluster_ips))
    exabgp.wait_for(lambda: exabgp.prefixes(V6_PEER) == {"2001:db8:96::a/128"}, what="the /128")
    exabgp.wait_for(lambda: v4(exabgp) == {"198.51.100.10/32"}, what="the /32")
    assert all(
        line.startswith("neighbor 192.0.2.1 , neighbor 192.0.2.5 ") == ("198.51.100.10/32" in line)
        for line in exabgp.lines
        if " announce " in line
    )
    api.delete("Service", "default", "web")
    exabgp.wait_for(lambda: not v4(exabgp) and not exabgp.prefixes(V6_PEER), what="both withdraws")
    withdraws = [line for line in exabgp.lines if " withdraw " in line]
    assert withdraws == [
        "neighbor 192.0.2.1 , neighbor 192.0.2.5 withdraw route 198.51.100.10/32 next-hop self",
        "neighbor 2001:db8::1 withdraw route 2001:db8:96::a/128 next-hop self",
    ]
    assert exabgp.errors == []


def test_prefer_dual_stack_narrowed_to_single_stack_withdraws_only_the_lost_family(
    api: FakeApiServer, exabgp: ExaBgpDouble
) -> None:
    first_sync(exabgp)
    api.apply(service("web", ["198.51.100.10", "2001:db8:96::a"], policy="PreferDualStack"))
    exabgp.wait_for(lambda: exabgp.prefixes(V6_PEER) == {"2001:db8:96::a/128"} and v4(exabgp) == {"198.51.100.10/32"})
    count = len(exabgp.lines)
    api.apply(service("web", ["198.51.100.10"], policy="SingleStack"))
    exabgp.wait_for(lambda: not exabgp.prefixes(V6_PEER), what="the /128 withdrawn")
    exabgp.wait_quiet()
    assert exabgp.lines[count:] == ["neighbor 2001:db8::1 withdraw route 2001:db8:96::a/128 next-hop self"]


def test_start_up_reconciles_with_what_exabgp_still_holds(tmp_path: Path, api: FakeApiServer) -> None:
    """A restarted announcer withdraws stale routes, leaves still-wanted ones alone, and adds missing ones."""
    api.apply(service("kept", ["198.51.100.10", "2001:db8:96::a"]))
    api.apply(service("new", ["198.51.100.11"]))
    words = "next-hop 192.0.2.11 community 64513:100"
    held = [
        f"neighbor {peer} local-ip 192.0.2.11 local-as 64513 peer-as 64512 router-id 192.0.2.11 "
        f"family-allowed in-open ipv4 unicast {prefix} {words}"
        for peer in V4_PEERS
        for prefix in ("198.51.100.10/32", "198.51.100.99/32")
    ] + [
        f"neighbor {V6_PEER} local-ip 2001:db8::11 local-as 64513 peer-as 64512 router-id 192.0.2.11 "
        "family-allowed in-open ipv6 unicast 2001:db8:96::a/128 next-hop 2001:db8::11 community 64513:100"
    ]
    config = {"attributes": {"default": {"communities": ["64513:100"]}}}
    withdraw_stale = "neighbor 192.0.2.1 , neighbor 192.0.2.5 withdraw route 198.51.100.99/32 next-hop self"
    announce_missing = (
        "neighbor 192.0.2.1 , neighbor 192.0.2.5 announce route 198.51.100.11/32 next-hop self community [64513:100]"
    )
    exabgp = start(tmp_path, api, held=held, config=config)
    try:
        exabgp.wait_for(
            lambda: {withdraw_stale, announce_missing} <= set(exabgp.lines),
            what="the stale withdraw and missing announce",
        )
        exabgp.wait_quiet()
        # The pipelined first sync promises no order between the two (announcements may start before the lists
        # end, withdrawals wait for them): each exactly once, and nothing about the routes still wanted.
        sent = Counter(line for line in exabgp.lines if line not in START_UP_LINES)
        assert sent == Counter({withdraw_stale: 1, announce_missing: 1})
        assert v4(exabgp) == {"198.51.100.11/32"}
        assert exabgp.prefixes(V6_PEER) == set()
    finally:
        exabgp.stop()


def test_an_expired_watch_relists_without_touching_unchanged_routes(api: FakeApiServer, exabgp: ExaBgpDouble) -> None:
    """410 Expired: re-list, then only what changed meanwhile produces commands."""
    first_sync(exabgp)
    api.apply(service("web", ["198.51.100.10", "2001:db8:96::a"]))
    exabgp.wait_for(lambda: v4(exabgp) == {"198.51.100.10/32"})
    exabgp.wait_quiet()
    lists_before = api.stats()["lists_served"]["services"]
    count = len(exabgp.lines)
    api.expire_history()
    deadline = time.monotonic() + 10
    while api.stats()["lists_served"]["services"] == lists_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.stats()["lists_served"]["services"] > lists_before, "the announcer did not re-list after 410"
    exabgp.wait_quiet()
    assert exabgp.lines[count:] == []
    api.apply(service("other", ["198.51.100.12"]))
    exabgp.wait_for(lambda: v4(exabgp) == {"198.51.100.10/32", "198.51.100.12/32"}, what="the change after re-list")


def test_dropped_watches_and_server_errors_keep_routes_and_catch_up(api: FakeApiServer, exabgp: ExaBgpDouble) -> None:
    first_sync(exabgp)
    api.apply(service("web", ["198.51.100.10"]))
    exabgp.wait_for(lambda: v4(exabgp) == {"198.51.100.10/32"})
    api.fail_next(3, 500)
    api.drop_watches()
    api.apply(service("late", ["198.51.100.13"]))
    exabgp.wait_for(lambda: v4(exabgp) == {"198.51.100.10/32", "198.51.100.13/32"}, what="the change after errors")
    assert not [line for line in exabgp.lines if " withdraw " in line]


def test_an_unreachable_api_server_keeps_routes_then_changes_arrive(api: FakeApiServer, exabgp: ExaBgpDouble) -> None:
    first_sync(exabgp)
    api.apply(service("web", ["198.51.100.10", "2001:db8:96::a"]))
    exabgp.wait_for(lambda: v4(exabgp) == {"198.51.100.10/32"})
    api.set_unreachable(None)
    time.sleep(2.0)
    assert v4(exabgp) == {"198.51.100.10/32"}
    assert exabgp.prefixes(V6_PEER) == {"2001:db8:96::a/128"}
    api.set_reachable()
    api.apply(service("web", ["198.51.100.10"], policy="SingleStack"))
    exabgp.wait_for(lambda: not exabgp.prefixes(V6_PEER), what="the change made after the outage")
    assert v4(exabgp) == {"198.51.100.10/32"}


def test_sigterm_withdraws_everything_and_exits_zero(api: FakeApiServer, exabgp: ExaBgpDouble) -> None:
    first_sync(exabgp)
    api.apply(service("web", ["198.51.100.10", "2001:db8:96::a"]))
    exabgp.wait_for(lambda: bool(v4(exabgp)) and bool(exabgp.prefixes(V6_PEER)))
    assert exabgp.signal(signal.SIGTERM) == 0
    assert not v4(exabgp)
    assert not exabgp.prefixes(V6_PEER)


def test_eof_on_stdin_exits_promptly_without_withdrawing(api: FakeApiServer, exabgp: ExaBgpDouble) -> None:
    """ExaBGP went away: nothing to withdraw to, and the process must not linger."""
    first_sync(exabgp)
    api.apply(service("web", ["198.51.100.10"]))
    exabgp.wait_for(lambda: v4(exabgp) == {"198.51.100.10/32"})
    started = time.monotonic()
    assert exabgp.close_stdin() == 0
    assert time.monotonic() - started < 3
    assert not [line for line in exabgp.lines if " withdraw " in line]


def test_local_policy_follows_endpoint_slices_per_family(api: FakeApiServer, exabgp: ExaBgpDouble) -> None:
    first_sync(exabgp)
    api.apply(
        service("web", ["198.51.100.10", "2001:db8:96::a"], service_type="NodePort", external_traffic_policy="Local")
    )
    api.apply(endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.50")]))
    api.apply(endpoint_slice("web", "IPv6", [endpoint("node-b", "2001:db8:5::50")]))
    exabgp.wait_for(lambda: v4(exabgp) == {"198.51.100.10/32"}, what="the /32 with a local IPv4 endpoint")
    exabgp.wait_quiet()
    assert exabgp.prefixes(V6_PEER) == set()
    api.apply(endpoint_slice("web", "IPv6", [endpoint("node-a", "2001:db8:5::50")]))
    exabgp.wait_for(lambda: exabgp.prefixes(V6_PEER) == {"2001:db8:96::a/128"}, what="the /128 once local")
    api.apply(endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.50", ready=False, serving=False)]))
    exabgp.wait_for(lambda: not v4(exabgp), what="the /32 withdrawn when not ready")


def test_a_hostile_annotation_is_ignored_and_the_service_still_announced(
    api: FakeApiServer, exabgp: ExaBgpDouble
) -> None:
    """Words from an annotation never reach the command stream; the error names the object and field."""
    first_sync(exabgp)
    api.apply(
        service(
            "web",
            ["198.51.100.10"],
            annotations={"bgp.announcer.io/communities": "65000:1 shutdown", "bgp.announcer.io/med": "5\nshutdown"},
        )
    )
    exabgp.wait_for(lambda: v4(exabgp) == {"198.51.100.10/32"})
    assert not any("shutdown" in line for line in exabgp.lines)
    exabgp.wait_for(lambda: "Service default/web: metadata.annotations[bgp.announcer.io/med]" in exabgp.stderr())
    assert "Service default/web: metadata.annotations[bgp.announcer.io/communities]" in exabgp.stderr()


def test_graceful_restart_sends_end_of_rib_only_after_the_first_full_sync(tmp_path: Path, api: FakeApiServer) -> None:
    for index in range(1, 30):
        api.apply(service(f"s{index}", [f"198.51.100.{index}"]))
    exabgp = start(tmp_path, api, config={"bgp": {"graceful_restart": 120}})
    try:
        exabgp.wait_for(lambda: any(" announce eor ipv4 " in line for line in exabgp.lines), what="the End-of-RIB")
        eor = next(index for index, line in enumerate(exabgp.lines) if " announce eor ipv4 unicast" in line)
        announced_before_eor = {p for line in exabgp.lines[:eor] if " announce " in line for p in line.split()
                                if p.startswith("198.51.100.")}  # fmt: skip
        assert len(announced_before_eor) == 29
    finally:
        exabgp.stop()


def test_routes_exabgp_refused_are_sent_again_after_a_backoff(tmp_path: Path, api: FakeApiServer) -> None:
    """ExaBGP 5.0 answers 'error' to IPv6 'next-hop self' before it knows its local address: retry, don't drop."""
    refusing = [True]
    exabgp = start(tmp_path, api, refuse=lambda line: refusing[0] and line.startswith(f"neighbor {V6_PEER} announce"))
    try:
        first_sync(exabgp)
        api.apply(service("web", ["198.51.100.10", "2001:db8:96::a"]))
        exabgp.wait_for(lambda: bool(exabgp.errors), what="the refused IPv6 announce")
        assert exabgp.prefixes(V6_PEER) == set()
        refusing[0] = False
        exabgp.wait_for(lambda: exabgp.prefixes(V6_PEER) == {"2001:db8:96::a/128"}, timeout=5.0)
        assert v4(exabgp) == {"198.51.100.10/32"}
    finally:
        exabgp.stop()


def test_a_session_coming_up_retries_refused_routes_at_once(tmp_path: Path, api: FakeApiServer) -> None:
    """The retry does not wait for its backoff (at least 0.5 s) when ExaBGP says a session came up."""
    exabgp = start(tmp_path, api, refuse=lambda line: line.startswith(f"neighbor {V6_PEER} announce"))
    try:
        first_sync(exabgp)
        api.apply(service("web", ["2001:db8:96::a"]))
        exabgp.wait_for(lambda: len(exabgp.errors) == 1, what="the refused IPv6 announce")
        exabgp.tell(f"neighbor {V6_PEER} up")
        exabgp.wait_for(lambda: len(exabgp.errors) == 2, timeout=0.4, what="an immediate retry")
    finally:
        exabgp.stop()


def test_a_paged_first_sync_announces_every_service_and_withdraws_the_stale_route_once(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """With 1,200 Services (three list pages) every Service is announced once and the stale route withdrawn once.

    Whether the first pages' lines precede the withdraw depends on thread scheduling (a loaded machine may read every
    page before the loop's first pass; withdrawals are then rendered first): the ordering itself, first pages out
    at once and withdrawals held until both lists are complete, is asserted deterministically in process by
    tests/test_state.py::test_announcements_go_out_with_the_first_page_and_withdrawals_wait_for_both_lists."""
    for index in range(1200):
        api.apply(service(f"s{index}", [f"2001:db8:96::{index + 1:x}"]))
    held = [
        f"neighbor {V6_PEER} local-ip 2001:db8::11 local-as 64513 peer-as 64512 router-id 192.0.2.11 "
        "family-allowed in-open ipv6 unicast 2001:db8:97::1/128 next-hop 2001:db8::11"
    ]
    exabgp = start(tmp_path, api, held=held)
    try:
        stale = f"neighbor {V6_PEER} withdraw route 2001:db8:97::1/128 next-hop self"
        exabgp.wait_for(lambda: len(exabgp.prefixes(V6_PEER)) == 1200, timeout=30, what="all 1,200 prefixes")
        exabgp.wait_for(lambda: stale in exabgp.lines, what="the stale route's withdraw")
        exabgp.wait_quiet()
        commands = [line for line in exabgp.lines if line.startswith("neighbor ")]
        assert commands.count(stale) == 1
        assert [line for line in commands if " withdraw " in line] == [stale]
        assert len(exabgp.prefixes(V6_PEER)) == 1200, "nothing announced was withdrawn again"
        assert "first sync: ExaBGP holds 1 prefixes; 1200 to announce, 1 to withdraw" in exabgp.stderr()
    finally:
        exabgp.stop()
