"""The ExaBGP pipe's matching of answers to commands, against the real ExaBGP and the announcer with a double."""

from __future__ import annotations

import copy
import getpass
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from announcer.exabgp import answered_in_order
from announcer.reconcile import parse_adj_rib_out
from lab.fakeapi import FakeApiServer
from lab.lab import project_tool
from tests.exabgp_double import CONFIG, V4_PEERS, ExaBgpDouble
from tests.factories import service
from tests.real_exabgp import rendered_exabgp

# --- the real ExaBGP, its neighbours passive and never connected, with a probe script as its API process ------
# The neighbours sit on loopback: nothing connects to them, and ExaBGP only listens on 127.0.0.1.
ESTABLISHED_NEVER = ("127.0.0.2", "127.0.0.3")
UNKNOWN_PEER = "127.0.0.9"  # not a neighbour: ExaBGP answers 'error' in order ("no neighbor matching")

# Runs inside ExaBGP as its API process; the body of each test follows it. Incarnations count respawns.
PROBE_PRELUDE = """
import io, json, os, signal, sys, threading, time
from announcer.exabgp import ExaBgpPipe

RESULT = os.environ["PROBE_RESULT"]
COUNTER = RESULT + ".incarnation"
INCARNATION = int(open(COUNTER).read()) if os.path.exists(COUNTER) else 0
open(COUNTER, "w").write(str(INCARNATION + 1))
STDIN = io.BufferedReader(io.FileIO(0, "rb", closefd=False))
EXABGP = os.getppid()


def pipe(max_in_flight=8, ack_timeout=10.0):
    opened = ExaBgpPipe(sys.stdout.buffer, STDIN, max_in_flight=max_in_flight, ack_timeout=ack_timeout)
    opened.start()
    return opened


def finish(result):
    with open(RESULT + ".tmp", "w") as file:
        json.dump(result, file)
    os.rename(RESULT + ".tmp", RESULT)
    while os.getppid() == EXABGP:  # ExaBGP would respawn a process that exits; the test kills ExaBGP
        time.sleep(0.1)
    os._exit(0)


def routes(number, base=0):  # host routes of 198.51.100.0/24 then 203.0.113.0/24 (512, then again)
    return " ".join(f"{('198.51.100', '203.0.113')[(i // 256) % 2]}.{i % 256}/32" for i in range(base, base + number))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def exabgp_conf(script: Path) -> str:
    port = free_port()
    neighbours = "".join(
        f"""
neighbor {peer} {{
    router-id 127.0.0.1;
    local-address 127.0.0.1;
    local-as 64513;
    peer-as 64512;
    passive true;
    listen {port};
    family {{ ipv4 unicast; }}
    api {{ processes [ probe ]; }}
}}
"""
        for peer in ESTABLISHED_NEVER
    )
    return f"process probe {{\n    run {sys.executable} {script};\n    encoder text;\n}}\n{neighbours}"


def run_probe(tmp_path: Path, body: str, timeout: float = 60.0) -> Any:
    """Run the real ExaBGP with the probe as its API process; the JSON the probe passes to finish()."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE_PRELUDE + textwrap.dedent(body))
    conf = tmp_path / "exabgp.conf"
    conf.write_text(exabgp_conf(script))
    result = tmp_path / "result.json"
    environment = {
        **os.environ,
        "PROBE_RESULT": str(result),
        "exabgp_daemon_user": getpass.getuser(),
        "exabgp_daemon_drop": "false",
        "exabgp_api_cli": "false",
        "exabgp_api_ack": "true",
        "exabgp_log_processes": "false",
    }
    log_path = tmp_path / "exabgp.log"
    with log_path.open("wb") as log, subprocess.Popen(
        [str(project_tool("exabgp")), str(conf)], env=environment, stdout=log, stderr=subprocess.STDOUT
    ) as exabgp:  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while not result.exists():
                if exabgp.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the probe gave no result; ExaBGP's log:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.05)
        finally:
            exabgp.kill()
            exabgp.wait(timeout=10)
    return json.loads(result.read_text())


def test_the_lines_the_announcer_writes_are_classified_by_whether_exabgp_answers_them_in_order() -> None:
    assert answered_in_order("neighbor 192.0.2.1 , neighbor 192.0.2.5 announce route 198.51.100.1/32 next-hop self")
    assert answered_in_order("neighbor 2001:db8::1 withdraw attributes next-hop self nlri 2001:db8:96::1/128")
    assert answered_in_order("show adj-rib out extensive")
    assert not answered_in_order("neighbor 192.0.2.1 , neighbor 192.0.2.5 announce eor ipv4 unicast")
    assert not answered_in_order("version")
    assert not answered_in_order("neighbor 192.0.2.1 teardown 2")


def test_real_exabgp_an_end_of_rib_refused_at_once_is_credited_to_itself_not_to_the_routes_sent_before_it(
    tmp_path: Path,
) -> None:
    """ExaBGP answers 'announce eor' naming no established peer with 'error' as it reads the line, ahead of the
    bulk line still being applied; every command gets its own answer all the same."""
    results = run_probe(
        tmp_path,
        f"""
        results = {{}}
        commands = [
            ("bulk", "neighbor {ESTABLISHED_NEVER[0]} announce attributes next-hop self nlri " + routes(400)),
            ("unknown peer", "neighbor {UNKNOWN_PEER} announce route 203.0.113.1/32 next-hop self"),
            ("eor", "neighbor {ESTABLISHED_NEVER[1]} announce eor ipv4 unicast"),
            ("route", "neighbor {ESTABLISHED_NEVER[0]} announce route 203.0.113.2/32 next-hop self"),
            ("unknown peer again", "neighbor {UNKNOWN_PEER} withdraw route 203.0.113.1/32 next-hop self"),
        ]
        opened = pipe()
        for name, line in commands:
            opened.send(line, lambda ok, name=name: results.__setitem__(name, ok))
        opened.drain(30)
        finish(results)
        """,
    )
    assert results == {"bulk": True, "unknown peer": False, "eor": False, "route": True, "unknown peer again": False}


def test_real_exabgp_answers_that_come_after_the_ack_timeout_are_never_credited_to_later_commands(
    tmp_path: Path,
) -> None:
    """ExaBGP stopped (SIGSTOP) for longer than the ack timeout with four commands in flight: they are reported
    refused (unknown), and once ExaBGP runs again every later command gets exactly its own answer."""
    results = run_probe(
        tmp_path,
        f"""
        good = "neighbor {ESTABLISHED_NEVER[0]} announce route 203.0.113.{{}}/32 next-hop self"
        bad = "neighbor {UNKNOWN_PEER} announce route 203.0.113.{{}}/32 next-hop self"
        results = []
        opened = pipe(max_in_flight=4, ack_timeout=2.0)
        os.kill(EXABGP, signal.SIGSTOP)
        threading.Timer(4.0, os.kill, (EXABGP, signal.SIGCONT)).start()
        for index, letter in enumerate("ggggbgbgbbbb"):
            kind = "good" if letter == "g" else "bad"
            line = (good if kind == "good" else bad).format(index + 1)
            opened.send(line, lambda ok, index=index, kind=kind: results.append((index, kind, ok)))
        opened.drain(30)
        finish({{"results": results, "resyncs": getattr(opened, "resyncs_total", None)}})
        """,
    )
    outcome = {index: (kind, ok) for index, kind, ok in results["results"]}
    assert sorted(outcome) == list(range(12)), "every command got an outcome"
    assert [index for index, (kind, ok) in outcome.items() if kind == "bad" and ok] == [], "a refusal read as done"
    assert [outcome[index][1] for index in range(4)] == [False] * 4, "in flight when the answers were lost"
    assert [outcome[index] for index in range(4, 12)] == [
        (kind, kind == "good") for kind in ["bad", "good"] * 2 + ["bad"] * 4
    ]
    assert results["resyncs"] == 1


def test_real_exabgp_answers_version_at_once_ahead_of_the_commands_still_queued(tmp_path: Path) -> None:
    """`version` is answered with `exabgp 5.0.x` then `done` as ExaBGP reads it, before the answer of a bulk
    line written earlier: a point to synchronise on only once `reset` dropped the queued commands."""
    lines = run_probe(
        tmp_path,
        f"""
        sys.stdout.write("neighbor {ESTABLISHED_NEVER[0]} announce attributes next-hop self nlri " + routes(400) + "\\n")
        sys.stdout.write("version\\n")
        sys.stdout.flush()
        finish([STDIN.readline().decode().strip() for _ in range(3)])
        """,
    )
    assert re.fullmatch(r"exabgp 5\.0\.\d+", lines[0]), lines
    assert lines[1:] == ["done", "done"]


def test_real_exabgp_a_respawned_process_reads_only_its_own_answers_once_synchronised(tmp_path: Path) -> None:
    """The first incarnation writes 3,000 announcements and exits; ExaBGP respawns it and writes it the answers
    of the dead one's queued commands. After synchronise() the adj-rib-out read twice, a second apart, is the
    same, and every ack is credited to a command of the new process."""
    result = run_probe(
        tmp_path,
        f"""
        if INCARNATION == 0:
            for index in range(3000):
                sys.stdout.write(f"neighbor {ESTABLISHED_NEVER[0]} announce route {{routes(1, index)}} next-hop self\\n")
            sys.stdout.flush()
            os._exit(0)
        opened = pipe()
        time.sleep(0.2)  # stale answers arrive before the new process writes anything, and after 'version'
        version = opened.synchronise(30)
        first = opened.query("show adj-rib out extensive", 30)
        time.sleep(1.0)
        second = opened.query("show adj-rib out extensive", 30)
        finish({{"version": version, "first": first, "second": second, "acks": opened.acks_total,
                 "stale": opened.stale_total, "incarnation": INCARNATION}})
        """,
    )
    assert result["incarnation"] == 1
    assert re.fullmatch(r"exabgp 5\.0\.\d+", result["version"])
    assert result["stale"] > 0, "the dead process's answers reached the new one"
    assert result["first"] == result["second"]
    assert result["first"], "the dead process's announcements that ExaBGP applied"
    assert all(re.search(r" ipv4 unicast (198\.51\.100|203\.0\.113)\.\d+/32 ", line) for line in result["first"])
    assert result["acks"] == {"done": 2, "error": 0, "timeout": 0}


# --- the announcer process respawned by the real ExaBGP -----------------------------------------------------------
# ExaBGP's API process: the first incarnation floods announcements and dies, the second is the announcer, the
# third (after the test kills the announcer) reads ExaBGP's adj-rib-out without the announcer's code.
RESPAWNED = """
import os, sys, time

EXABGP = os.getppid()
RESULT = os.environ["PROBE_RESULT"]
COUNTER = RESULT + ".incarnation"
INCARNATION = int(open(COUNTER).read()) if os.path.exists(COUNTER) else 0
open(COUNTER, "w").write(str(INCARNATION + 1))
if INCARNATION == 0:
    for index in range(10000):
        sys.stdout.write(
            f"neighbor 127.0.0.2 , neighbor 127.0.0.3 announce route 203.0.113.{index % 256}/32 next-hop self\\n"
        )
    sys.stdout.flush()
    os._exit(0)
if INCARNATION == 1:
    open(RESULT + ".announcer", "w").write(str(os.getpid()))
    os.execv(sys.executable, [sys.executable, "-m", "announcer", *sys.argv[1:]])
sys.stdout.write("reset\\nversion\\n")
sys.stdout.flush()
while not sys.stdin.readline().startswith("exabgp "):
    pass
assert sys.stdin.readline().strip() == "done"
sys.stdout.write("show adj-rib out extensive\\n")
sys.stdout.flush()
held = []
while (line := sys.stdin.readline().strip()) != "done":
    held.append(line)
with open(RESULT + ".tmp", "w") as file:
    file.write("\\n".join(held))
os.rename(RESULT + ".tmp", RESULT)
while os.getppid() == EXABGP:
    time.sleep(0.1)
"""


def wait_for_file(path: Path, exabgp: subprocess.Popen[bytes], log_path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if exabgp.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {path.name}; ExaBGP's log:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.05)
    return path.read_text()


def every_command_answered(metrics_port: int, log_path: Path) -> bool:
    """The announcer's first sync is done and ExaBGP answered every line it wrote (and its two start-up queries:
    'show adj-rib out extensive', 'show neighbor summary')."""
    if "first sync: ExaBGP holds" not in log_path.read_text():
        return False
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        samples = [
            sample for family in text_string_to_metric_families(response.read().decode()) for sample in family.samples
        ]
    answered = sum(sample.value for sample in samples if sample.name == "announcer_exabgp_acks_total")
    written = sum(sample.value for sample in samples if sample.name == "announcer_exabgp_commands_total")
    return written > 0 and answered == written + 2


def test_real_exabgp_a_respawned_announcer_withdraws_what_exabgp_holds_despite_the_dead_ones_answers(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """A dead API process left thousands of announcements queued in ExaBGP, whose answers ExaBGP writes to the
    announcer it respawns: the announcer still reads what ExaBGP holds, withdraws all of it but its Service's
    route, and ExaBGP's adj-rib-out (read after the announcer is killed) holds exactly that route per peer."""
    api.apply(service("web", ["198.51.100.10"]))
    wrapper = tmp_path / "api-process"
    wrapper.write_text(f"#!{sys.executable}\n{RESPAWNED}")
    wrapper.chmod(0o755)
    port, metrics_port = free_port(), free_port()
    config = {
        "node_name": "node-a",
        "bgp": {
            "local_as": 64513,
            "router_id": "127.0.0.1",
            "peers": [
                {"address": peer, "peer_as": 64512, "local_address": "127.0.0.1", "passive": True, "port": port}
                for peer in ESTABLISHED_NEVER
            ],
        },
        "watch": {"watch_timeout": 5, "request_timeout": 3, "backoff_initial": 0.05, "backoff_max": 0.4},
        "speaker": {"batch_delay": 0.005, "announcer_command": str(wrapper)},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
    }
    argv, environment = rendered_exabgp(tmp_path, config, api.url)
    environment["PROBE_RESULT"] = str(tmp_path / "held")
    log_path = tmp_path / "exabgp.log"
    with log_path.open("wb") as log, subprocess.Popen(
        argv, env=environment, stdout=log, stderr=subprocess.STDOUT
    ) as exabgp:  # fmt: skip
        try:
            pid = int(wait_for_file(tmp_path / "held.announcer", exabgp, log_path))
            deadline = time.monotonic() + 60
            while not every_command_answered(metrics_port, log_path):
                assert time.monotonic() < deadline and exabgp.poll() is None, log_path.read_text()[-4000:]
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)  # nothing of it left queued in ExaBGP for the next one's `reset` to drop
            held = wait_for_file(tmp_path / "held", exabgp, log_path).splitlines()
        finally:
            exabgp.kill()
            exabgp.wait(timeout=10)
    held_per_prefix = {str(prefix): sorted(peers) for prefix, peers in parse_adj_rib_out(held).items()}
    assert held_per_prefix == {"198.51.100.10/32": sorted(ESTABLISHED_NEVER)}, held
    first_sync = re.search(
        r"first sync: ExaBGP holds (\d+) prefixes; 1 to announce, (\d+) to withdraw", log_path.read_text()
    )
    assert first_sync is not None, log_path.read_text()[-4000:]
    assert first_sync[1] == first_sync[2] != "0", "what the flood left in ExaBGP is read and withdrawn"


# --- the announcer process with the ExaBGP double ---------------------------------------------------------------
@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.5).start() as server:
        yield server


def held_line(peer: str, prefix: str) -> str:
    return (
        f"neighbor {peer} local-ip 192.0.2.11 local-as 64513 peer-as 64512 router-id 192.0.2.11 "
        f"family-allowed in-open ipv4 unicast {prefix} next-hop 192.0.2.11"
    )


def test_a_respawned_announcer_reconciles_with_what_exabgp_holds_not_with_the_dead_ones_answers(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """Answers queued for the previous announcer process (two acks, then a stale adj-rib-out with its 'done')
    arrive before the new process's start-up query is answered: the stale route is not withdrawn, the one
    ExaBGP holds and nobody wants is, and the wanted one is announced."""
    api.apply(service("web", ["198.51.100.10"]))
    stale = ["done", "error", *(held_line(peer, "198.51.100.77/32") for peer in V4_PEERS), "done"]
    held = [held_line(peer, "198.51.100.99/32") for peer in V4_PEERS]
    exabgp = ExaBgpDouble(tmp_path, api.url, copy.deepcopy(CONFIG), held=held, stale=stale).start()
    try:
        exabgp.wait_for(lambda: exabgp.prefixes(V4_PEERS[0]) == {"198.51.100.10/32"}, what="the wanted route")
        exabgp.wait_quiet()
        commands = [line for line in exabgp.lines if line.startswith("neighbor ")]
        # The pipelined first sync promises no order between the two (announcements may go before the lists end,
        # withdrawals wait for them): each exactly once, and nothing about the stale answers' route.
        assert sorted(commands) == [
            "neighbor 192.0.2.1 , neighbor 192.0.2.5 announce route 198.51.100.10/32 next-hop self",
            "neighbor 192.0.2.1 , neighbor 192.0.2.5 withdraw route 198.51.100.99/32 next-hop self",
        ]
        assert exabgp.errors == []
    finally:
        exabgp.stop()


def test_after_an_ack_timeout_the_announcer_resynchronises_and_rereads_the_adj_rib_out(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """ExaBGP never answers one announcement: past the ack timeout the announcer drops ExaBGP's queue (`reset`),
    synchronises on `version`, reads `show adj-rib out extensive` again, and sends what ExaBGP lacks."""
    line = "neighbor 192.0.2.1 , neighbor 192.0.2.5 announce route 198.51.100.10/32 next-hop self"
    seen: list[str] = []

    def the_first_time(text: str) -> bool:
        if text == line:
            seen.append(text)
        return text == line and len(seen) == 1

    exabgp = ExaBgpDouble(
        tmp_path, api.url, {**copy.deepcopy(CONFIG), "speaker": {"batch_delay": 0.005, "ack_timeout": 1.0}},
        unanswered=the_first_time,
    ).start()  # fmt: skip
    try:
        exabgp.wait_for(lambda: "show adj-rib out extensive" in exabgp.lines, what="the start-up query")
        api.apply(service("web", ["198.51.100.10"]))
        exabgp.wait_for(lambda: exabgp.lines.count(line) == 2, timeout=15, what="the announcement sent again")
        after = exabgp.lines[exabgp.lines.index(line) + 1 :]
        assert after[: after.index(line)] == ["reset", "version", "show adj-rib out extensive"]
        assert "1 commands in flight reported refused, resynchronising" in exabgp.stderr()
    finally:
        exabgp.stop()


def test_an_end_of_rib_refused_at_once_does_not_make_the_announcer_resend_an_accepted_line(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """With graceful restart and no session up, ExaBGP refuses each End-of-RIB as it reads it, ahead of the
    answers of the route lines before it: no route line is taken as refused (and sent again), no End-of-RIB as
    accepted."""
    for index in range(1, 30):
        api.apply(service(f"s{index}", [f"198.51.100.{index}", f"2001:db8:96::{index:x}"]))
    config = copy.deepcopy(CONFIG)
    config["bgp"] = {**config["bgp"], "graceful_restart": 120}
    config["speaker"] = {**config["speaker"], "prefixes_per_line": 10}
    exabgp = ExaBgpDouble(tmp_path, api.url, config, in_order_delay=0.05, eor_refused_at_once=True).start()
    try:
        exabgp.wait_for(lambda: sum(" announce eor " in line for line in exabgp.lines) == 2, what="both End-of-RIBs")
        exabgp.wait_quiet(2.0, timeout=20)  # a retry of a line taken as refused comes after a 1 s backoff
        routes = [line for line in exabgp.lines if " announce attributes " in line or " announce route " in line]
        assert len(routes) == len(set(routes)) == 6, routes
        assert len(exabgp.prefixes(V4_PEERS[0])) == 29
        assert "ExaBGP answered 'error' to: neighbor 192.0.2.1 , neighbor 192.0.2.5 announce eor" in exabgp.stderr()
        assert "ExaBGP answered 'error' to: neighbor 2001:db8::1 announce eor" in exabgp.stderr()
    finally:
        exabgp.stop()
