"""The API-server benchmark's bookkeeping (logs, latencies, metric deltas, the null ExaBGP) and one small real run."""

from __future__ import annotations

import io
import ipaddress
import math
from pathlib import Path

import pytest

from bench.apiserver import Plan, run
from bench.apiserver_model import (
    DUAL_STACK_LIMIT,
    FIRST_SYNC,
    ROWS,
    CommandLog,
    Write,
    by_kind,
    delta,
    expected_prefixes,
    latencies,
    marginal,
    p,
    parse_command,
    parse_metrics,
    render,
    seed_objects,
)
from bench.null_exabgp import VERSION, answers, serve

DOCUMENTATION = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
]


# --- the null ExaBGP -------------------------------------------------------------------------------------------------
def test_the_null_exabgp_answers_as_exabgp_does() -> None:
    assert answers("version") == [VERSION, "done"]
    assert answers("show adj-rib out extensive") == ["done"]  # holds nothing
    assert answers("reset") == []
    assert answers("neighbor 2001:db8::1 announce route 2001:db8:96::8:0/128 next-hop self") == ["done"]


def test_the_null_exabgp_acks_every_line_and_logs_it_with_its_time() -> None:
    reply, log = io.BytesIO(), io.StringIO()
    ticks = iter([10, 20, 30])
    read = serve([b"version\n", b"show adj-rib out extensive\n", b"neighbor 192.0.2.1 withdraw route 198.51.100.9/32\n"],
                 reply, log, now=lambda: next(ticks))  # fmt: skip
    assert read == 3
    assert reply.getvalue().decode().splitlines() == [VERSION, "done", "done", "done"]
    assert log.getvalue().splitlines() == [
        "10 version",
        "20 show adj-rib out extensive",
        "30 neighbor 192.0.2.1 withdraw route 198.51.100.9/32",
    ]


# --- command logs and latencies --------------------------------------------------------------------------------------
def test_a_command_s_action_and_prefixes_are_read_in_both_forms() -> None:
    assert parse_command("neighbor 2001:db8::1 announce route 2001:db8:96::8:0/128 next-hop self") == (
        "announce",
        ["2001:db8:96::8:0/128"],
    )
    bulk = "neighbor 192.0.2.1 , neighbor 192.0.2.5 withdraw attributes next-hop self nlri 198.51.100.9/32 198.51.100.10/32"
    assert parse_command(bulk) == ("withdraw", ["198.51.100.9/32", "198.51.100.10/32"])
    assert parse_command("version") == ("", [])
    assert parse_command("neighbor 192.0.2.1 announce eor ipv4 unicast") == ("announce", [])


def test_a_log_read_in_chunks_keeps_the_first_arrival_and_the_first_sync_mark() -> None:
    log = CommandLog()
    log.feed("5 version\n7 " + FIRST_SYNC + "\n9 neighbor 192.0.2.1 announce attributes next-hop self nlri 1")
    assert log.lines == 1
    assert log.first_sync_ns == 7
    log.feed("98.51.100.9/32 198.51.100.10/32\n12 neighbor 192.0.2.1 withdraw route 198.51.100.9/32 next-hop self\n")
    log.feed("15 neighbor 192.0.2.1 announce route 198.51.100.10/32 next-hop self\n")
    assert log.lines == 4
    assert log.last_line_ns == 15
    assert log.arrivals[("announce", "198.51.100.9/32")] == 9
    assert log.arrivals[("announce", "198.51.100.10/32")] == 9  # the first arrival counts
    assert log.arrivals[("withdraw", "198.51.100.9/32")] == 12
    assert log.announced == {"198.51.100.10/32"}


def test_a_write_s_latency_is_until_the_last_announcer_had_it_and_missing_pairs_are_counted() -> None:
    first, second = CommandLog(), CommandLog()
    first.feed("1002000000 n announce route 2001:db8:96::8:0/128\n1011000000 n withdraw route 2001:db8:96::8:0/128\n")
    second.feed("1005000000 n announce route 2001:db8:96::8:0/128\n")
    writes = [
        Write(1_000_000_000, "announce", "2001:db8:96::8:0/128"),
        Write(1_010_000_000, "withdraw", "2001:db8:96::8:0/128"),
    ]
    every, pairs, missing = latencies(writes, [first, second])
    assert every == pytest.approx([0.005])  # the withdrawal never reached the second: no "every" figure for it
    assert sorted(pairs) == pytest.approx([0.001, 0.002, 0.005])
    assert missing == 1


def test_percentiles_are_nearest_rank_and_nan_when_empty() -> None:
    values = [float(v) for v in range(1, 101)]
    assert p(values, 0.99) == 99.0
    assert p(values, 0.5) == 50.0
    assert p([3.0], 0.99) == 3.0
    assert math.isnan(p([], 0.99))


# --- kube-apiserver's metrics ----------------------------------------------------------------------------------------
METRICS = """# HELP apiserver_watch_events_sizes Watch event size distribution in bytes
apiserver_watch_events_sizes_sum{group="",resource="services",version="v1"} 3000
apiserver_watch_events_sizes_sum{group="discovery.k8s.io",resource="endpointslices",version="v1"} 500
apiserver_watch_events_total{group="",resource="services",version="v1"} 3
apiserver_response_sizes_sum{component="apiserver",group="",resource="services",scope="cluster",subresource="",verb="LIST",version="v1"} 1e+06
weird_metric{note="a, b"} 2
"""


def test_watch_bytes_are_summed_per_resource_and_deltas_cover_new_resources() -> None:
    samples = parse_metrics(METRICS)
    assert by_kind(samples, "apiserver_watch_events_sizes_sum") == {"services": 3000.0, "endpointslices": 500.0}
    assert samples[("weird_metric", frozenset({("note", "a, b")}))] == 2.0
    assert delta({"services": 1000.0}, {"services": 3000.0, "endpointslices": 500.0}) == {
        "endpointslices": 500.0,
        "services": 2000.0,
    }


def test_each_announcer_s_bytes_are_the_run_s_less_the_writes_alone_per_node_and_change() -> None:
    alone = [
        {"watch_bytes_total": 800.0, "watch_events_total": 10.0, "apiserver_cpu_changes": 1.0, "changes_made": 10.0}
    ]
    # 10 changes, 4 announcers: each gets 1 event of 1,200 bytes per change, beside kube-apiserver's own 800 bytes
    k4 = {"watch_bytes_total": 800.0 + 4 * 10 * 1200, "watch_events_total": 10.0 + 40, "apiserver_cpu_changes": 1.4,
          "changes_made": 10.0}  # fmt: skip
    figures = marginal(k4, alone, 4)
    assert figures["watch_bytes_per_node_change"] == pytest.approx(1200.0)
    assert figures["watch_events_per_node_change"] == pytest.approx(1.0)
    assert figures["apiserver_cpu_per_change_node"] == pytest.approx(0.01)
    assert marginal(k4, [], 4)["watch_events_per_node_change"] == pytest.approx(50 / 40)  # nothing to subtract


# --- the objects -----------------------------------------------------------------------------------------------------
def test_the_seeded_objects_use_documentation_prefixes_and_two_slices_per_service() -> None:
    services, slices = seed_objects(300, DUAL_STACK_LIMIT)
    assert len(services) == 300
    assert len(slices) == 600
    addresses = [a for s in services for a in s["spec"]["clusterIPs"]]  # type: ignore[index]
    addresses += [a for s in slices for e in s["endpoints"] for a in e["addresses"]]  # type: ignore[attr-defined]
    assert all(any(ipaddress.ip_address(a) in net for net in DOCUMENTATION) for a in addresses)
    assert len({a for s in services for a in s["spec"]["clusterIPs"]}) == 300 + DUAL_STACK_LIMIT  # type: ignore[index]
    assert expected_prefixes(300, DUAL_STACK_LIMIT) == 300 + DUAL_STACK_LIMIT + 1  # and the `kubernetes` Service
    assert expected_prefixes(50, DUAL_STACK_LIMIT) == 50 + 50 + 1  # fewer Services than the dual-stack count
    with pytest.raises(ValueError, match="dual-stack"):
        seed_objects(300, DUAL_STACK_LIMIT + 1)


def test_the_table_has_a_column_per_k_and_a_row_per_figure() -> None:
    table = render({0: [{"load": 1.0}], 2: [{"load": 2.0, "latency_p99": 0.012}, {"load": 4.0, "latency_p99": 0.02}]},
                   "heading")  # fmt: skip
    lines = table.splitlines()
    assert lines[2] == "| figure | K = 0 | K = 2 |"
    assert len(lines) == 4 + len(ROWS)
    assert "| 16.0 ms (12.0-20.0) |" in table
    assert "| 1.00 | 3.00 (2.00-4.00) |" in table


# --- one small real run ----------------------------------------------------------------------------------------------
@pytest.mark.kube
@pytest.mark.timeout(120)
def test_a_small_real_run_reaches_every_announcer_with_every_change(tmp_path: Path) -> None:
    """K = 0 and K = 2 against the real kube-apiserver: 50 Services, 100 EndpointSlices, 20 changes."""
    plan = Plan(nodes=(0, 2), services=50, dual_stack=10, changes=20, rate=50.0, runs=1, idle_seconds=1.0,
                raw_watchers=(3,))  # fmt: skip
    seeded, results, raw = run(tmp_path, plan, lambda line: None)
    assert seeded["services_per_second"] > 0
    assert sorted(results) == [0, 2]
    (figures,) = results[2]
    assert figures["missing"] == 0
    assert figures["changes_made"] == 20
    assert figures["watch_events_per_node_change"] == pytest.approx(1.0, abs=0.2)  # one Service event per node
    assert 300 < figures["watch_bytes_per_node_change"] < 5000
    assert 0 < figures["latency_p99"] < 5
    assert figures["first_sync_log_max"] > 0
    assert figures["apiserver_peak_rss"] > 0
    assert f"| {ROWS[0][1]} | n/a |" in render(results, "heading")
    (plain,) = raw[3]  # three plain watches read every change too, as many bytes as the announcers' watches
    assert plain["client_bytes_per_watcher_change"] >= plain["watch_bytes_per_node_change"] * 0.9
    assert plain["watch_bytes_per_node_change"] == pytest.approx(figures["watch_bytes_per_node_change"], rel=0.1)
