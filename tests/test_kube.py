"""The watcher against the stand-in API server (real client, real HTTP): resume points, bad objects, listing."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from kubernetes import client

from announcer.convert import Converted, ObjectKind, converter
from announcer.kube import Backoff, Changed, KubeApi, Relisted, Resource, ResourceWatcher, list_pages
from announcer.shapes import ServiceShape
from lab.fakeapi import FakeApiServer
from tests.factories import endpoint, endpoint_slice, service


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Watching:
    """One ResourceWatcher of a resource, its events recorded; raw objects unless a converter is given."""

    def __init__(self, api: FakeApiServer, resource: Resource, **options: Any) -> None:
        self.events: list[Any] = []
        self.stop = threading.Event()
        self.client = client.ApiClient(client.Configuration(host=api.url))
        options.setdefault("convert", lambda obj: obj)
        self.watcher = ResourceWatcher(
            resource, self.client, self.events.append, self.stop, backoff=Backoff(0.05, 0.1), **options
        )
        self.watcher.start()
        eventually(lambda: any(isinstance(event, Relisted) for event in self.events), "the first list")

    def changed(self) -> list[str]:
        """kind:name of every watch event handed on, in order (objects as raw JSON or as their shapes)."""
        return [f"{event.kind}:{_name(event.obj)}" for event in self.events if isinstance(event, Changed)]

    def close(self) -> None:
        self.stop.set()
        self.watcher.close()
        self.watcher.join(5)
        self.client.close()  # type: ignore[no-untyped-call]


def _name(obj: Any) -> str:
    """metadata.name of an object as raw JSON or as its shape."""
    return str(obj.metadata.name if isinstance(obj, ServiceShape) else obj["metadata"]["name"])


def at_version(watching: Watching, version: str) -> bool:
    return watching.watcher.resource_version == version


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=3600.0, history_size=4).start() as server:
        yield server


@pytest.fixture(params=[None, ServiceShape], ids=["raw", "shaped"])
def services(api: FakeApiServer, request: pytest.FixtureRequest) -> Iterator[Watching]:
    """A Services watcher handing on raw JSON, or each object decoded into its shape (the daemon's way)."""
    api.apply(service("a", ["198.51.100.1"]))
    watching = Watching(api, Resource.SERVICES, shape=request.param)
    yield watching
    watching.close()


def test_a_watch_cut_mid_stream_resumes_after_the_last_event_seen(api: FakeApiServer, services: Watching) -> None:
    """A dropped connection: the next watch starts after the last event handed on, so nothing is replayed."""
    api.apply(service("b", ["198.51.100.2"]))
    api.apply(service("c", ["198.51.100.3"]))
    eventually(lambda: len(services.changed()) == 2, "b and c")
    api.drop_watches()
    eventually(lambda: api.stats()["watch_requests"].get("services", 0) >= 2, "the watch after the cut")
    api.apply(service("d", ["198.51.100.4"]))
    eventually(lambda: "ADDED:d" in services.changed(), "d after the cut")
    time.sleep(0.3)
    assert services.changed() == ["ADDED:b", "ADDED:c", "ADDED:d"]
    assert api.stats()["lists_served"]["services"] == 1


def test_an_api_server_outage_resumes_after_the_last_event_seen(api: FakeApiServer, services: Watching) -> None:
    """The server goes away (open watches cut, connections refused for a while): the watch comes back from the
    last event handed on, after however many failed attempts."""
    api.apply(service("b", ["198.51.100.2"]))
    eventually(lambda: services.changed() == ["ADDED:b"], "b")
    api.set_unreachable(0.5)
    eventually(lambda: services.watcher.stats.restarts >= 2, "failed attempts during the outage")
    api.apply(service("c", ["198.51.100.3"]))
    eventually(lambda: "ADDED:c" in services.changed(), "c after the outage")
    time.sleep(0.3)
    assert services.changed() == ["ADDED:b", "ADDED:c"]
    assert api.stats()["lists_served"]["services"] == 1


def test_a_watch_cut_after_a_bookmark_resumes_from_the_bookmark(api: FakeApiServer, services: Watching) -> None:
    """Writes to another resource move the resourceVersion on; a BOOKMARK carries it to the services watch.
    With a history of four writes only the bookmark's resourceVersion can still be watched from: resuming from
    the last Service event (or the list) would be answered 410 and cost a re-list."""
    api.apply(service("b", ["198.51.100.2"]))
    eventually(lambda: services.changed() == ["ADDED:b"], "b")
    for index in range(6):  # one at a time, each followed by a bookmark: the open watch keeps up with the history
        api.apply(endpoint_slice(f"s{index}", "IPv4", [endpoint("node-a", "192.0.2.50")]))
        api.send_bookmarks()
        eventually(partial(at_version, services, str(api.resource_version())), "the bookmark's resourceVersion")
    api.drop_watches()
    eventually(lambda: api.stats()["watch_requests"].get("services", 0) >= 2, "the watch after the cut")
    api.apply(service("c", ["198.51.100.3"]))
    eventually(lambda: "ADDED:c" in services.changed(), "c after the cut")
    assert api.stats()["lists_served"]["services"] == 1, "resumed from the bookmark, no 410 and no re-list"
    assert services.changed() == ["ADDED:b", "ADDED:c"]


def test_one_object_that_breaks_conversion_is_logged_once_and_skipped_and_the_watch_goes_on(
    api: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An unhashable addressType used to raise TypeError: the watch restarted at the same resourceVersion and met
    the same object forever. Now it is named once, with its field, and the next objects still arrive."""
    convert = converter(ObjectKind.ENDPOINT_SLICE, "bgp.announcer.io/")
    watching = Watching(api, Resource.ENDPOINTSLICES, convert=convert)
    try:
        bad = endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.50")])
        bad["metadata"]["name"] = "bad"
        bad["addressType"] = ["IPv4"]
        with caplog.at_level(logging.WARNING):
            api.apply(bad)
            api.apply(endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.51")]))
            eventually(lambda: len([e for e in watching.events if isinstance(e, Changed)]) == 2, "both slices")
            time.sleep(0.3)
        converted: list[Converted] = [event.obj for event in watching.events if isinstance(event, Changed)]
        assert [item.key for item in converted] == [("default", "bad"), ("default", "web-ipv4")]
        assert converted[0].view is None
        assert [(problem.obj, problem.field) for problem in converted[0].problems] == [
            ("EndpointSlice default/bad", "addressType")
        ]
        assert converted[1].view is not None
        assert watching.watcher.stats.restarts == 0
        assert api.stats()["watch_requests"]["endpointslices"] == 1
    finally:
        watching.close()


def test_a_converter_that_raises_skips_that_object_with_one_log_line_and_the_watch_goes_on(
    api: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a converter raises (a bug) costs that one object, never the watch."""

    def picky(obj: object) -> object:
        assert isinstance(obj, dict)
        if obj["metadata"]["name"] == "bad":
            raise TypeError("unhashable type: 'list'")
        return obj

    api.apply(service("a", ["198.51.100.1"]))
    watching = Watching(api, Resource.SERVICES, convert=picky)
    try:
        with caplog.at_level(logging.ERROR, logger="announcer.kube"):
            api.apply(service("bad", ["198.51.100.2"]))
            api.apply(service("c", ["198.51.100.3"]))
            eventually(lambda: watching.changed() == ["ADDED:c"], "c after the bad object")
        # Only what this watch said at ERROR: INFO lines (the first list's) reach caplog too once any earlier test in
        # the process configured the root logger.
        lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
        assert lines == ["services 'default'/'bad' skipped: cannot be converted (TypeError: unhashable type: 'list')"]
        assert watching.watcher.stats.restarts == 0
    finally:
        watching.close()


def test_listing_follows_continue_tokens_page_by_page_in_one_snapshot(api: FakeApiServer) -> None:
    for index in range(7):
        api.apply(service(f"s{index}", [f"198.51.100.{index + 1}"]))
    version = str(api.resource_version())
    with client.ApiClient(client.Configuration(host=api.url)) as api_client:
        pages = list(list_pages(KubeApi(api_client), Resource.SERVICES, page_size=3, request_timeout=5.0))
    assert [len(page.items) for page in pages] == [3, 3, 1]
    assert {page.resource_version for page in pages} == {version}
    names = [item["metadata"]["name"] for page in pages for item in page.items if isinstance(item, dict)]
    assert names == [f"s{index}" for index in range(7)]


class ScriptedWatchServer(http.server.ThreadingHTTPServer):
    """A minimal API server for what the stand-in cannot inject: a watch ended by an ERROR event other than 410.

    The list is empty at resourceVersion 10; the first watch sends one ADDED event (11) then ERROR 500; later
    watches end at once. Every watch's requested resourceVersion is recorded.
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.watched_from: list[str] = []


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    server: ScriptedWatchServer

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if query.get("watch") != ["true"]:
            self._send(
                [{"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "10"}, "items": []}]
            )
            return
        self.server.watched_from.append(query.get("resourceVersion", [""])[0])
        if len(self.server.watched_from) > 1:
            self._send([])
            return
        added = service("b", ["198.51.100.2"])
        added["metadata"]["resourceVersion"] = "11"
        error = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd hiccup"}
        self._send([{"type": "ADDED", "object": added}, {"type": "ERROR", "object": error}])

    def _send(self, documents: list[dict[str, Any]]) -> None:
        body = b"".join(json.dumps(document).encode() + b"\n" for document in documents)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads what it needs from the server's record."""


@pytest.mark.parametrize("shape", [None, ServiceShape], ids=["raw", "shaped"])
def test_an_error_event_other_than_410_resumes_after_the_last_event_seen(shape: type[ServiceShape] | None) -> None:
    server = ScriptedWatchServer()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    events: list[Any] = []
    stop = threading.Event()
    with client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{server.server_port}")) as api_client:
        watcher = ResourceWatcher(
            Resource.SERVICES,
            api_client,
            events.append,
            stop,
            convert=lambda obj: obj,
            shape=shape,
            backoff=Backoff(0.05, 0.1),
        )
        watcher.start()
        try:
            eventually(lambda: len(server.watched_from) >= 2, "the watch after the ERROR event")
        finally:
            stop.set()
            watcher.join(5)
            server.shutdown()
            server.server_close()
    assert server.watched_from[:2] == ["10", "11"]
    assert [_name(event.obj) for event in events if isinstance(event, Changed)] == ["b"]
