"""Metrics, /healthz and /readyz: scraped over HTTP from the real process, and from DaemonMetrics alone."""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import io
import os
import platform
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from announcer.config import ConfigError, parse_listen
from announcer.desired import DesiredTable
from announcer.exabgp import ExaBgpPipe
from announcer.kube import Changed, Resource
from announcer.metrics import DaemonMetrics
from announcer.model import Attributes, Family, Prefix, parse_prefix
from announcer.reconcile import Action, Command
from lab.fakeapi import FakeApiServer
from tests.conftest import make_config
from tests.exabgp_double import CONFIG, V4_PEERS, V6_PEER, ExaBgpDouble
from tests.factories import endpoint, endpoint_slice, service

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- helpers -------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    """Status and body of one request; 503 and 404 are answers, not errors."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  (a loopback URL we build)
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port: int) -> Samples:
    """Every sample of /metrics, keyed by name and sorted labels."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels}; have {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def server_up(port: int) -> bool:
    try:
        get(port, "/healthz")
    except OSError:
        return False
    return True


# --- the whole process ---------------------------------------------------------------------------------------
@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.5).start() as server:
        yield server


class Running:
    """The announcer process behind an ExaBGP double, with its metrics port."""

    def __init__(self, tmp_path: Path, api: FakeApiServer, **sections: Any) -> None:
        self.port = free_port()
        config = copy.deepcopy(CONFIG)
        config["metrics"] = {"listen": f"127.0.0.1:{self.port}"}
        for key, section in sections.items():
            config[key] = {**config.get(key, {}), **section} if isinstance(section, dict) else section
        self.exabgp = ExaBgpDouble(tmp_path, api.url, config).start()
        try:
            eventually(lambda: server_up(self.port), "the metrics server to listen")
        except BaseException:
            self.exabgp.stop()
            raise

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *_exception: object) -> None:
        self.exabgp.stop()

    def ready(self) -> None:
        eventually(lambda: get(self.port, "/readyz")[0] == 200, "/readyz to answer 200")

    def v4(self) -> set[str]:
        tables = [self.exabgp.prefixes(peer) for peer in V4_PEERS]
        assert tables[0] == tables[1]
        return tables[0]


@pytest.fixture
def running(tmp_path: Path, api: FakeApiServer) -> Iterator[Running]:
    with Running(tmp_path, api) as process:
        yield process


def test_readyz_is_503_until_the_first_full_sync_while_healthz_and_the_pipe_are_up(
    tmp_path: Path, api: FakeApiServer
) -> None:
    """With the API server down the process is alive but not ready, and counts watch restarts; once the API
    server answers, the first sync makes it ready and sets the time of the last full sync."""
    api.set_unreachable(None)
    with Running(tmp_path, api) as process:
        eventually(
            lambda: value(scrape(process.port), "announcer_watch_restarts_total", resource="services") >= 2,
            "watch restarts to be counted",
        )
        status, body = get(process.port, "/readyz")
        assert (status, body) == (503, "not ready: waiting for the first full sync\n"), repr(body)
        assert get(process.port, "/healthz")[0] == 200
        samples = scrape(process.port)
        assert value(samples, "announcer_exabgp_pipe_open") == 1
        build = {"version": importlib.metadata.version("service-announcer"), "python": platform.python_version()}
        assert value(samples, "announcer_build_info", **build) == 1
        assert value(samples, "announcer_last_full_sync_timestamp_seconds") == 0
        assert value(samples, "announcer_watch_relists_total", resource="services") == 0
        assert "show adj-rib out extensive" not in process.exabgp.lines

        before = time.time()
        api.set_reachable()
        process.ready()
        assert get(process.port, "/readyz")[1] == "ready: synced, and the pipe to ExaBGP is open\n"
        synced_at = value(scrape(process.port), "announcer_last_full_sync_timestamp_seconds")
        assert before <= synced_at <= time.time()
        assert process.exabgp.errors == []


def test_a_dual_stack_service_moves_route_gauges_command_counters_acks_and_latency(
    api: FakeApiServer, running: Running
) -> None:
    """One announce line per family, one route per family in the gauge, acks 'done', one latency observation;
    deleting the Service gives one withdraw line per family and the gauges go back to zero."""
    running.ready()
    before = scrape(running.port)
    api.apply(service("web", ["198.51.100.10", "2001:db8:96::a"]))
    running.exabgp.wait_for(lambda: running.v4() == {"198.51.100.10/32"} and bool(running.exabgp.prefixes(V6_PEER)))

    def routes(samples: Samples, family: str) -> float:
        return value(samples, "announcer_announced_routes", family=family, kind="clusterIP")

    eventually(lambda: routes(scrape(running.port), "ipv4") == 1 == routes(scrape(running.port), "ipv6"), "routes")
    after = scrape(running.port)
    for family in ("ipv4", "ipv6"):
        sent = value(after, "announcer_exabgp_commands_total", action="announce", family=family)
        assert sent - value(before, "announcer_exabgp_commands_total", action="announce", family=family) == 1
        assert value(after, "announcer_announced_routes", family=family, kind="externalIP") == 0
    done = value(after, "announcer_exabgp_acks_total", result="done")
    assert done - value(before, "announcer_exabgp_acks_total", result="done") >= 2
    assert value(after, "announcer_exabgp_acks_total", result="error") == 0
    assert value(after, "announcer_exabgp_acks_total", result="timeout") == 0
    latencies = value(after, "announcer_event_to_command_seconds_count") - value(
        before, "announcer_event_to_command_seconds_count"
    )
    seconds = value(after, "announcer_event_to_command_seconds_sum") - value(
        before, "announcer_event_to_command_seconds_sum"
    )
    assert latencies == 1
    assert 0 < seconds < 2
    assert value(after, "announcer_watch_events_total", resource="services") >= 1

    api.delete("Service", "default", "web")
    eventually(lambda: routes(scrape(running.port), "ipv4") == 0 == routes(scrape(running.port), "ipv6"), "zeros")
    gone = scrape(running.port)
    for family in ("ipv4", "ipv6"):
        assert value(gone, "announcer_exabgp_commands_total", action="withdraw", family=family) == 1
    assert (
        value(gone, "announcer_event_to_command_seconds_count")
        == value(after, "announcer_event_to_command_seconds_count") + 1
    )
    assert running.exabgp.errors == []


def test_addresses_not_announced_are_counted_by_reason_and_kind(api: FakeApiServer, running: Running) -> None:
    """A headless Service and an external IP outside the allowlist show up by reason; deleting them gives 0."""
    running.ready()
    api.apply(service("db", ["None"]))
    api.apply(service("web", ["198.51.100.10"], external_ips=["203.0.113.7", "198.51.100.70"]))
    running.exabgp.wait_for(lambda: running.v4() == {"198.51.100.10/32", "198.51.100.70/32"})

    def not_announced(reason: str, kind: str) -> float:
        samples = scrape(running.port)
        key = ("announcer_addresses_not_announced", (("kind", kind), ("reason", reason)))
        return samples.get(key, -1)

    eventually(lambda: not_announced("headless", "clusterIP") == 1, "the headless Service")
    assert not_announced("outsideAllowlist", "externalIP") == 1
    eventually(
        lambda: value(scrape(running.port), "announcer_announced_routes", family="ipv4", kind="externalIP") == 1,
        "the allowed external IP in the routes gauge",
    )
    api.delete("Service", "default", "db")
    api.delete("Service", "default", "web")
    eventually(lambda: not_announced("headless", "clusterIP") == 0, "the headless count back to 0")
    assert not_announced("outsideAllowlist", "externalIP") == 0


def test_an_expired_watch_counts_a_relist_per_resource_and_moves_the_last_full_sync(
    api: FakeApiServer, running: Running
) -> None:
    """410 Expired makes both watchers re-list; the sync after it is a full sync."""
    running.ready()
    first = scrape(running.port)
    assert value(first, "announcer_watch_relists_total", resource="services") == 0
    api.expire_history()
    eventually(
        lambda: all(
            value(scrape(running.port), "announcer_watch_relists_total", resource=resource.value) >= 1
            for resource in (Resource.SERVICES, Resource.ENDPOINTSLICES)  # no Node watcher: node state is off
        ),
        "a re-list of each resource",
    )
    eventually(
        lambda: (
            value(scrape(running.port), "announcer_last_full_sync_timestamp_seconds")
            > value(first, "announcer_last_full_sync_timestamp_seconds")
        ),
        "the last full sync time to move",
    )


def test_the_http_endpoint_logs_to_stderr_and_never_writes_to_exabgps_pipe(tmp_path: Path, api: FakeApiServer) -> None:
    """Requests (good, unknown, another method, malformed) are logged on stderr at debug level; stdout carries
    only commands ExaBGP accepts."""
    with Running(tmp_path, api, log_level="debug") as process:
        process.ready()
        assert get(process.port, "/nowhere")[0] == 404
        assert get(process.port, "/metrics", method="POST")[0] == 405
        assert get(process.port, "/healthz", method="HEAD")[0] == 405
        with socket.create_connection(("127.0.0.1", process.port), timeout=5) as raw:
            raw.sendall(b"GET / x HTTP/1.1\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.0 400 Bad request syntax")
        api.apply(service("web", ["198.51.100.10"]))
        process.exabgp.wait_for(lambda: process.v4() == {"198.51.100.10/32"})
        eventually(lambda: '"GET /nowhere HTTP/1.1" 404' in process.exabgp.stderr(), "the request logged on stderr")
        assert "Bad request syntax" in process.exabgp.stderr()
        assert process.exabgp.errors == []
        assert not any("HTTP" in line or "metrics" in line for line in process.exabgp.lines)


# --- DaemonMetrics alone -------------------------------------------------------------------------------------
class FakeState:
    """The Announcer's fields the metrics read."""

    def __init__(self) -> None:
        config = make_config()
        self.table = DesiredTable(config.node, config.policy())
        self.announced: dict[Prefix, Attributes] = {}
        self.synced = False
        self.synced_at: float | None = None


@contextlib.contextmanager
def pipe_to_exabgp(
    *, start: bool = False, max_in_flight: int = 8, ack_timeout: float = 30.0
) -> Iterator[tuple[ExaBgpPipe, int]]:
    """A pipe writing commands into memory and reading answers from an OS pipe, whose write end is given."""
    read_end, answers = os.pipe()
    with os.fdopen(read_end, "rb") as answers_in:
        pipe = ExaBgpPipe(io.BytesIO(), answers_in, max_in_flight=max_in_flight, ack_timeout=ack_timeout)
        if start:
            pipe.start()
        try:
            yield pipe, answers
        finally:
            os.close(answers)
            if start:
                assert pipe.closed.wait(5), "the reader saw the end of the answers"


@pytest.fixture
def served() -> Iterator[tuple[DaemonMetrics, FakeState, ExaBgpPipe, int]]:
    state = FakeState()
    with pipe_to_exabgp(start=True, max_in_flight=1, ack_timeout=0.1) as (pipe, answers):
        metrics = DaemonMetrics(state, pipe, ("127.0.0.1", free_port()), healthy_within=1.0)
        metrics.serve([])
        yield metrics, state, pipe, answers
        metrics.close()


def test_healthz_turns_503_when_the_loop_neither_iterates_nor_writes_and_back_to_200_when_it_does(
    served: tuple[DaemonMetrics, FakeState, ExaBgpPipe, int],
) -> None:
    metrics, _state, pipe, answers = served
    port = metrics.listen[1]
    assert get(port, "/healthz")[0] == 200
    time.sleep(1.2)
    status, body = get(port, "/healthz")
    assert status == 503
    assert body.startswith("stale: the main loop made no progress for 1.")
    pipe.send("neighbor 192.0.2.1 announce route 198.51.100.10/32 next-hop self")
    assert get(port, "/healthz")[0] == 200, "a command written is progress (a long first sync)"
    os.write(answers, b"done\n")
    time.sleep(1.2)
    assert get(port, "/healthz")[0] == 503
    metrics.iterated([])
    assert get(port, "/healthz")[0] == 200


def test_readyz_needs_the_first_sync_and_an_open_pipe(served: tuple[DaemonMetrics, FakeState, ExaBgpPipe, int]) -> None:
    metrics, state, pipe, _answers = served
    port = metrics.listen[1]
    assert get(port, "/readyz") == (503, "not ready: waiting for the first full sync\n")
    state.synced, state.synced_at = True, 1_700_000_000.0
    assert get(port, "/readyz")[0] == 200
    metrics.iterated([])
    assert value(scrape(port), "announcer_last_full_sync_timestamp_seconds") == 1_700_000_000.0
    pipe.closed.set()
    assert get(port, "/readyz") == (503, "not ready: the pipe to ExaBGP is closed\n")
    assert value(scrape(port), "announcer_exabgp_pipe_open") == 0


def answer_the_resynchronisation(pipe: ExaBgpPipe, answers: int) -> None:
    """ExaBGP's answer to the 'version' the pipe sends to resynchronise after an ack timeout."""
    deadline = time.monotonic() + 5
    while not pipe.synchronising and time.monotonic() < deadline:
        time.sleep(0.01)
    os.write(answers, b"exabgp 5.0.15\ndone\n")


def test_acks_are_counted_by_result_including_those_that_never_came(
    served: tuple[DaemonMetrics, FakeState, ExaBgpPipe, int],
) -> None:
    """'done' and 'error' as ExaBGP answers them; a command unanswered past ack_timeout counts as 'timeout'."""
    metrics, _state, pipe, answers = served
    port = metrics.listen[1]
    line = "neighbor 192.0.2.1 announce route 198.51.100.10/32 next-hop self"
    pipe.send(line)
    os.write(answers, b"done\n")
    assert pipe.drain(5)
    pipe.send(line)
    os.write(answers, b"error\n")
    assert pipe.drain(5)
    pipe.send(line)
    time.sleep(0.2)
    resync = threading.Thread(target=answer_the_resynchronisation, args=(pipe, answers))
    resync.start()
    pipe.send(line)  # waits for the one in flight, gives it up as timed out, resynchronises with ExaBGP
    resync.join()
    samples = scrape(port)
    assert [
        value(samples, "announcer_exabgp_acks_total", result=result) for result in ("done", "error", "timeout")
    ] == [
        1,
        1,
        1,
    ]


def test_latency_runs_from_the_events_arrival_to_the_commands_written_and_skips_events_without_commands() -> None:
    """Events are stamped as the watcher hands them over; only a pass that wrote commands observes them."""
    now = [100.0]
    with pipe_to_exabgp() as (pipe, _answers):
        metrics = DaemonMetrics(FakeState(), pipe, ("127.0.0.1", 9479), clock=lambda: now[0])
    sample = metrics.registry.get_sample_value
    queued: list[object] = []
    sink = metrics.stamping(queued.append)
    relevant = Changed(Resource.SERVICES, "ADDED", {"metadata": {"name": "a"}})
    sink(relevant)
    now[0] = 100.25
    metrics.commands_written([Command("x", Action.ANNOUNCE, Family.IPV4, ())], 0.01)
    now[0] = 100.5
    metrics.iterated(queued)
    assert queued == [relevant], "the event is handed on unchanged"
    assert sample("announcer_event_to_command_seconds_sum") == pytest.approx(0.25)
    assert sample("announcer_event_to_command_seconds_count") == 1
    assert sample("announcer_exabgp_commands_total", {"action": "announce", "family": "ipv4"}) == 1
    assert sample("announcer_exabgp_commands_total", {"action": "withdraw", "family": "ipv6"}) == 0

    irrelevant = Changed(Resource.ENDPOINTSLICES, "MODIFIED", {"metadata": {"name": "b"}})
    sink(irrelevant)
    now[0] = 107.0
    metrics.iterated([irrelevant])
    assert sample("announcer_event_to_command_seconds_count") == 1, "no command followed: nothing observed"


def test_a_route_no_longer_wanted_but_still_announced_counts_as_stale() -> None:
    """The routes gauge follows what ExaBGP was told; a route nothing claims any more is 'stale', not lost."""
    now = [100.0]
    state = FakeState()
    with pipe_to_exabgp() as (pipe, _answers):
        metrics = DaemonMetrics(state, pipe, ("127.0.0.1", 9479), clock=lambda: now[0])
    sample = metrics.registry.get_sample_value
    state.announced[parse_prefix("198.51.100.99/32")] = Attributes()
    state.synced = True
    metrics.iterated([])
    assert sample("announcer_announced_routes", {"family": "ipv4", "kind": "stale"}) == 1
    assert sample("announcer_announced_routes", {"family": "ipv4", "kind": "clusterIP"}) == 0
    state.announced.clear()
    metrics.commands_written([], 0.0)
    now[0] = 100.5
    metrics.iterated([])
    assert sample("announcer_announced_routes", {"family": "ipv4", "kind": "stale"}) == 1, "recounted at most 1/s"
    now[0] = 101.0
    metrics.iterated([])
    assert sample("announcer_announced_routes", {"family": "ipv4", "kind": "stale"}) == 0, "shown once, kept at 0"


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:9479", ("0.0.0.0", 9479)),
        (":9479", ("0.0.0.0", 9479)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::]:9479", ("::", 9479)),
        ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
    ],
)
def test_listen_takes_an_ip_address_and_a_port(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    ("listen", "complaint"),
    [
        ("9479", "is not HOST:PORT"),
        ("localhost:9479", "must be an IP address"),
        ("::1:9479", "in brackets"),
        ("[127.0.0.1]:9479", "only IPv6 addresses go in brackets"),
        ("0.0.0.0:0", "from 1 to 65535"),
        ("0.0.0.0:65536", "from 1 to 65535"),
        ("0.0.0.0:９４７９", "from 1 to 65535"),
        ("0.0.0.0:", "from 1 to 65535"),
    ],
)
def test_a_bad_listen_address_is_a_configuration_error_naming_the_key(listen: str, complaint: str) -> None:
    """check-config refuses it, naming metrics.listen, before the daemon ever tries to bind."""
    with pytest.raises(ConfigError, match=r"^test: metrics\.listen: ") as raised:
        make_config(metrics={"listen": listen})
    assert complaint in str(raised.value)


def test_a_port_already_taken_is_a_configuration_error_naming_the_key() -> None:
    with pipe_to_exabgp() as (pipe, _answers), socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = DaemonMetrics(FakeState(), pipe, ("127.0.0.1", port))
        with pytest.raises(ConfigError, match=rf"^metrics\.listen: cannot listen on 127\.0\.0\.1:{port}: "):
            metrics.serve([])


def test_no_endpoint_anywhere_is_counted_under_its_own_reason(api: FakeApiServer, running: Running) -> None:
    """A Service requiring endpoints (annotation) with none: reason noEndpoint; a ready endpoint clears it."""
    running.ready()
    annotations = {"bgp.announcer.io/require-endpoints": "true"}
    api.apply(service("anycast", ["198.51.100.10"], annotations=annotations))

    def not_announced() -> float:
        key = ("announcer_addresses_not_announced", (("kind", "clusterIP"), ("reason", "noEndpoint")))
        return scrape(running.port).get(key, -1)

    eventually(lambda: not_announced() == 1, "the Service without endpoints")
    assert running.v4() == set()
    api.apply(endpoint_slice("anycast", "IPv4", [endpoint("node-b", "198.51.100.200")]))
    running.exabgp.wait_for(lambda: running.v4() == {"198.51.100.10/32"})
    eventually(lambda: not_announced() == 0, "the reason cleared")
    api.delete("Service", "default", "anycast")
    api.delete("EndpointSlice", "default", "anycast-ipv4")


def test_annotations_the_policy_refuses_are_counted_by_annotation_and_rule(
    api: FakeApiServer, running: Running
) -> None:
    """A Service setting MED without the admin allowing it: counted under (med, enabled) while it exists."""
    running.ready()
    api.apply(service("web", ["198.51.100.10"], annotations={"bgp.announcer.io/med": "0"}))
    running.exabgp.wait_for(lambda: running.v4() == {"198.51.100.10/32"})

    def refused() -> float:
        key = ("announcer_annotations_refused", (("annotation", "med"), ("rule", "enabled")))
        return scrape(running.port).get(key, -1)

    eventually(lambda: refused() == 1, "the refused MED annotation")
    api.delete("Service", "default", "web")
    eventually(lambda: refused() == 0, "the count back to 0")
