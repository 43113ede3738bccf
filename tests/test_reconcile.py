"""The diff and the command stream: per-family neighbours, bulk lines, golden files, adj-rib-out parsing."""

from __future__ import annotations

import ipaddress
import os
import random
from pathlib import Path

import pytest

from announcer.model import Attributes, Family, IPAddress, Prefix, host_prefix, parse_prefix
from announcer.reconcile import (
    UNKNOWN_ATTRIBUTES,
    Holdings,
    Plan,
    announced_from_held,
    end_of_rib_commands,
    parse_adj_rib_out,
    plan_changes,
    render_commands,
)

GOLDEN = Path(__file__).parent / "golden"
PEERS: dict[Family, list[IPAddress]] = {
    Family.IPV4: [ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv4Address("192.0.2.5")],
    Family.IPV6: [ipaddress.IPv6Address("2001:db8::1")],
}
PLAIN = Attributes(communities=((64513, 100),))
RICH = Attributes(((65000, 1), (65535, 65281)), ((64513, 1, 2),), 200, 10)


def net(text: str) -> Prefix:
    return parse_prefix(text)


def check_golden(name: str, lines: list[str]) -> None:
    """Compare with tests/golden/NAME; UPDATE_GOLDEN=1 rewrites the file."""
    path = GOLDEN / name
    text = "\n".join(lines) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()


def test_a_dual_stack_service_renders_each_prefix_only_towards_its_family() -> None:
    """The /32 goes to the IPv4 neighbours only, the /128 to the IPv6 neighbour only."""
    plan = Plan(announce={net("198.51.100.10/32"): PLAIN, net("2001:db8:96::a/128"): PLAIN})
    lines = [command.line for command in render_commands(plan, PEERS, 500)]
    check_golden("dual_stack_announce.txt", lines)
    assert lines == [
        "neighbor 192.0.2.1 , neighbor 192.0.2.5 announce route 198.51.100.10/32 next-hop self community [64513:100]",
        "neighbor 2001:db8::1 announce route 2001:db8:96::a/128 next-hop self community [64513:100]",
    ]


def test_a_mixed_plan_renders_withdraws_first_then_bulk_announces_grouped_by_attributes() -> None:
    """Bulk 'announce attributes ... nlri' lines, chunked, one group per attribute set, withdraws before."""
    announce = {net(f"198.51.100.{i}/32"): PLAIN for i in range(1, 6)}
    announce |= {net("198.51.100.40/32"): RICH, net("2001:db8:96::a/128"): RICH, net("2001:db8:96::b/128"): RICH}
    plan = Plan(announce=announce, withdraw=[net("198.51.100.50/32"), net("2001:db8:96::f/128")])
    check_golden("mixed_plan.txt", [command.line for command in render_commands(plan, PEERS, 2)])


def test_prefixes_of_a_family_without_peers_are_not_rendered() -> None:
    plan = Plan(announce={net("198.51.100.10/32"): PLAIN, net("2001:db8:96::a/128"): PLAIN})
    commands = render_commands(plan, {Family.IPV4: PEERS[Family.IPV4]}, 500)
    assert [command.prefixes for command in commands] == [(net("198.51.100.10/32"),)]


def test_every_bulk_line_stays_within_the_chunk_size_and_covers_each_prefix_once() -> None:
    announce = {parse_prefix(f"2001:db8:96::{i:x}/128"): PLAIN for i in range(1, 1234)}
    commands = render_commands(Plan(announce=announce), PEERS, 500)
    assert [len(command.prefixes) for command in commands] == [500, 500, 233]
    assert sorted(p for command in commands for p in command.prefixes) == sorted(announce)
    assert all(
        command.line.startswith("neighbor 2001:db8::1 announce attributes next-hop self") for command in commands
    )


@pytest.mark.parametrize(
    ("desired", "held", "expected"),
    [
        (PLAIN, None, "announce"),
        (PLAIN, PLAIN, "nothing"),
        (RICH, PLAIN, "announce"),
        (None, PLAIN, "withdraw"),
        (None, None, "nothing"),
        (PLAIN, UNKNOWN_ATTRIBUTES, "announce"),
    ],
    ids=[
        "wanted and not held is announced",
        "wanted and held alike is left alone",
        "wanted with other attributes is re-announced",
        "held and no longer wanted is withdrawn",
        "neither wanted nor held is ignored",
        "held with unreadable attributes is re-announced",
    ],
)
def test_plan_changes(desired: Attributes | None, held: Attributes | None, expected: str) -> None:
    prefix = net("198.51.100.10/32")
    plan = plan_changes([prefix], lambda _: desired, Holdings(PEERS, {prefix: held} if held else {}))
    outcome = "announce" if plan.announce else "withdraw" if plan.withdraw else "nothing"
    assert outcome == expected


ADJ_RIB_OUT = """\
neighbor 192.0.2.1 local-ip 192.0.2.11 local-as 64513 peer-as 64512 router-id 192.0.2.11 family-allowed in-open ipv4 unicast 198.51.100.10/32 next-hop 192.0.2.11 med 10 local-preference 200 community [ 65000:1 no-export ] large-community 64513:1:2
neighbor 192.0.2.5 local-ip 192.0.2.11 local-as 64513 peer-as 64512 router-id 192.0.2.11 family-allowed in-open ipv4 unicast 198.51.100.10/32 next-hop 192.0.2.11 med 10 local-preference 200 community [ 65000:1 no-export ] large-community 64513:1:2
neighbor 192.0.2.1 local-ip 192.0.2.11 local-as 64513 peer-as 64512 router-id 192.0.2.11 family-allowed in-open ipv4 unicast 198.51.100.11/32 next-hop 192.0.2.11 community 64513:100
neighbor 2001:db8::1 local-ip 2001:db8::11 local-as 64513 peer-as 64512 router-id 192.0.2.11 family-allowed in-open ipv6 unicast 2001:db8:96::a/128 next-hop 2001:db8::11 community 64513:100
"""


def test_adj_rib_out_is_parsed_per_prefix_and_neighbour_with_its_attributes() -> None:
    """ExaBGP's own 'show adj-rib out extensive' lines, as seen from 5.0.15."""
    held = parse_adj_rib_out(ADJ_RIB_OUT.splitlines())
    assert held[net("198.51.100.10/32")]["192.0.2.5"] == RICH
    assert held[net("2001:db8:96::a/128")] == {"2001:db8::1": PLAIN}


def test_a_route_held_by_only_some_peers_of_its_family_counts_as_unknown() -> None:
    """Then the plan re-announces it to all of them (ExaBGP ignores identical repeats)."""
    announced = announced_from_held(parse_adj_rib_out(ADJ_RIB_OUT.splitlines()), PEERS)
    assert announced == {
        net("198.51.100.10/32"): RICH,
        net("198.51.100.11/32"): UNKNOWN_ATTRIBUTES,
        net("2001:db8:96::a/128"): PLAIN,
    }


def test_end_of_rib_is_sent_per_family_to_that_family_s_peers() -> None:
    assert end_of_rib_commands(PEERS) == [
        "neighbor 192.0.2.1 , neighbor 192.0.2.5 announce eor ipv4 unicast",
        "neighbor 2001:db8::1 announce eor ipv6 unicast",
    ]


V4_A, V4_B = PEERS[Family.IPV4]


def test_holdings_keep_per_peer_only_what_differs_and_fold_back_when_every_peer_agrees() -> None:
    held = Holdings(PEERS)
    prefix = net("198.51.100.10/32")
    held.record(prefix, (V4_A, V4_B), PLAIN)
    assert (held.uniform, held.split) == ({prefix: PLAIN}, {})
    held.record(prefix, (V4_B,), UNKNOWN_ATTRIBUTES)
    assert held.split == {prefix: {V4_A: PLAIN, V4_B: UNKNOWN_ATTRIBUTES}} and held[prefix] == UNKNOWN_ATTRIBUTES
    held.record(prefix, (V4_A,), UNKNOWN_ATTRIBUTES)
    assert prefix in held.split, "unknown for every peer stays per peer: each is retried alone"
    held.record(prefix, (V4_A,), None)
    held.record(prefix, (V4_B,), RICH)
    assert (held.of(prefix, V4_A), held.of(prefix, V4_B)) == (None, RICH)
    held.record(prefix, (V4_A,), RICH)
    assert (held.uniform, held.split) == ({prefix: RICH}, {})
    held.record(prefix, (V4_A, V4_B), None)
    assert dict(held) == {}


def test_holdings_read_from_the_adj_rib_out_per_peer() -> None:
    held = Holdings(PEERS)
    held.load(parse_adj_rib_out(ADJ_RIB_OUT.splitlines()))
    assert held.uniform == {net("198.51.100.10/32"): RICH, net("2001:db8:96::a/128"): PLAIN}
    assert held.split == {net("198.51.100.11/32"): {V4_A: PLAIN}}


def test_a_plan_sends_each_peer_only_what_it_lacks_and_a_refusing_peer_alone() -> None:
    """Per-peer lines where the peers of a family differ, bulk lines where they agree."""
    held = Holdings(PEERS)
    held.load(parse_adj_rib_out(ADJ_RIB_OUT.splitlines()))
    wanted = {net("198.51.100.10/32"): RICH, net("198.51.100.11/32"): PLAIN, net("198.51.100.12/32"): PLAIN}
    plan = plan_changes([*wanted, net("2001:db8:96::a/128")], wanted.get, held)
    lines = [command.line for command in render_commands(plan, PEERS, 500)]
    check_golden("per_peer_plan.txt", lines)
    assert lines == [
        "neighbor 2001:db8::1 withdraw route 2001:db8:96::a/128 next-hop self",
        "neighbor 192.0.2.1 , neighbor 192.0.2.5 announce route 198.51.100.12/32 next-hop self community [64513:100]",
        "neighbor 192.0.2.5 announce route 198.51.100.11/32 next-hop self community [64513:100]",
    ]
    apart = plan_changes([net("198.51.100.12/32")], wanted.get, held, apart=[V4_A])
    assert [command.line for command in render_commands(apart, PEERS, 500)] == [
        "neighbor 192.0.2.1 announce route 198.51.100.12/32 next-hop self community [64513:100]",
        "neighbor 192.0.2.5 announce route 198.51.100.12/32 next-hop self community [64513:100]",
    ], "peer by peer, in configuration order"


def test_prefix_text_is_ipaddress_canonical_text_for_every_shape_of_address() -> None:
    """Prefixes are rendered by their own formatter: the text ExaBGP gets is exactly ipaddress's (RFC 5952), for
    zero runs of every length and place, ties, IPv4-mapped and -compatible addresses, and random ones."""
    rng = random.Random(12)  # noqa: S311 (fixed test data, not cryptography)
    values = [0, 1, (1 << 128) - 1, 0xFFFF << 32, 0xFFFF << 32 | 0xC0000201, 0xC0000201, 1 << 112, 1 << 16 | 1]
    values += [int(f"{rng.getrandbits(8):08b}".translate({48: "0000", 49: "ffff"}), 16) for _ in range(2000)]
    values += [rng.getrandbits(128) for _ in range(2000)]
    words = [0, 0, 0, 1, 0xFFFF, 0x0DB8]
    values += [int("".join(f"{rng.choice(words):04x}" for _ in range(8)), 16) for _ in range(20000)]
    for value in values:
        expected = ipaddress.IPv6Network((value, 128))
        assert str(net(str(expected))) == str(expected)
        assert str(host_prefix(ipaddress.IPv6Address(value))) == str(expected)
    for text in ("198.51.100.10/32", "0.0.0.0/0", "255.255.255.255/32", "10.0.0.0/8"):
        assert str(net(text)) == text
        assert net(text).network() == ipaddress.ip_network(text)


def test_prefixes_order_by_family_address_then_length_and_never_equal_across_families() -> None:
    """IPv4 before IPv6, then by address, then by length; an IPv4 and an IPv6 prefix of the same number differ."""
    texts = ["2001:db8::/32", "198.51.100.0/24", "::c633:640a/128", "198.51.100.10/32", "198.51.100.0/25", "::/0"]
    assert [str(p) for p in sorted(net(t) for t in texts)] == [
        "198.51.100.0/24", "198.51.100.0/25", "198.51.100.10/32", "::/0", "::c633:640a/128", "2001:db8::/32",
    ]  # fmt: skip
    number = int(ipaddress.IPv4Address("198.51.100.10"))
    assert host_prefix(ipaddress.IPv4Address(number)) != host_prefix(ipaddress.IPv6Address(number))
    assert len({net(t) for t in texts}) == len(texts)
