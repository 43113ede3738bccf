"""The stand-in API server, driven over real HTTP by the official kubernetes client and by plain urllib."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client import ApiException  # the same class as kubernetes.client.rest.ApiException
from kubernetes.watch import Watch

from lab.fakeapi import FakeApiServer

WAIT_SECONDS = 5.0
WatchStream = Generator[dict[str, Any], None, None]


# --- helpers -------------------------------------------------------------------------------------------


def service(
    name: str, namespace: str = "default", *, labels: dict[str, str] | None = None, ip: str = "10.96.0.1"
) -> dict[str, Any]:
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80}]},
    }


def endpoint_slice(name: str, service_name: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def list_json(list_call: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """A list call's raw JSON, as the announcer reads it (no model deserialisation)."""
    response = list_call(_preload_content=False, **kwargs)
    try:
        decoded: dict[str, Any] = json.loads(response.data)
    finally:
        response.release_conn()
    return decoded


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["metadata"]["name"] for item in items]


def take_events(stream: WatchStream, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of a watch stream; closes the stream."""
    events: list[dict[str, Any]] = []
    try:
        for event in stream:
            events.append(event)
            if len(events) == count:
                break
    finally:
        stream.close()
    return events


def watch_stream(list_call: Callable[..., Any], **kwargs: Any) -> WatchStream:
    """The official client's Watch.stream (untyped in kubernetes 37), e.g. deserialize=False for raw dicts."""
    stream: WatchStream = Watch().stream(list_call, **kwargs)  # type: ignore[no-untyped-call]
    return stream


def status_of(error: ApiException) -> dict[str, Any]:
    """The Status object an ApiException carries."""
    status: dict[str, Any] = json.loads(error.body or "{}")
    return status


def summary(event: dict[str, Any]) -> tuple[str, str]:
    return event["type"], event["object"]["metadata"].get("name", "")


def http(method: str, url: str, payload: object | None = None) -> tuple[int, Any]:
    """One plain-HTTP request, the way an out-of-process test or the demo drives the server."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 (test URL)
    try:
        with urllib.request.urlopen(request, timeout=WAIT_SECONDS) as response:  # noqa: S310 (test URL)
            body = response.read()
            return response.status, json.loads(body) if body.startswith((b"{", b"[")) else body.decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def connection_refused(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=60.0).start() as server:
        yield server


@pytest.fixture
def api_client(api: FakeApiServer) -> Iterator[Any]:
    with client.ApiClient(client.Configuration(host=api.url)) as official_client:
        yield official_client


@pytest.fixture
def core(api_client: Any) -> Any:
    return client.CoreV1Api(api_client)


@pytest.fixture
def discovery(api_client: Any) -> Any:
    return client.DiscoveryV1Api(api_client)


# --- store and lists -----------------------------------------------------------------------------------


def test_every_write_bumps_one_resource_version_shared_by_services_and_endpoint_slices(
    api: FakeApiServer, core: Any, discovery: Any
) -> None:
    """Writes to either resource advance one global rv; list metadata shows the current one."""
    start = api.resource_version()
    created = api.apply(service("web", "shop"))
    slice_created = api.apply(endpoint_slice("web-abc", "web", "shop"))
    updated = api.apply(service("web", "shop", ip="10.96.0.2"))

    assert [created["metadata"]["resourceVersion"], slice_created["metadata"]["resourceVersion"]] == [
        str(start + 1),
        str(start + 2),
    ]
    assert updated["metadata"]["resourceVersion"] == str(start + 3) == str(api.resource_version())
    assert list_json(core.list_service_for_all_namespaces)["metadata"]["resourceVersion"] == str(start + 3)
    endpoint_slices = list_json(discovery.list_endpoint_slice_for_all_namespaces)
    assert endpoint_slices["kind"] == "EndpointSliceList"
    assert endpoint_slices["apiVersion"] == "discovery.k8s.io/v1"
    assert endpoint_slices["metadata"]["resourceVersion"] == str(start + 3)


def test_create_stamps_identity_and_replace_keeps_it(api: FakeApiServer) -> None:
    """Create sets kind, apiVersion, uid, creationTimestamp, namespace and generation; replace keeps them."""
    created = api.apply({"kind": "Service", "metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.9"}})
    metadata = created["metadata"]
    assert (created["kind"], created["apiVersion"]) == ("Service", "v1")
    assert metadata["namespace"] == "default"
    assert metadata["generation"] == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", metadata["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", metadata["creationTimestamp"])

    relabelled = api.apply(service("web", labels={"tier": "front"}, ip="10.96.0.9") | {"spec": created["spec"]})
    respecced = api.apply(service("web", ip="10.96.0.10"))
    assert relabelled["metadata"]["uid"] == respecced["metadata"]["uid"] == metadata["uid"]
    assert respecced["metadata"]["creationTimestamp"] == metadata["creationTimestamp"]
    assert relabelled["metadata"]["generation"] == 1, "a metadata-only change keeps the generation"
    assert respecced["metadata"]["generation"] == 2
    assert api.get("Service", "default", "web") == respecced


def test_an_update_that_changes_nothing_is_not_a_write(api: FakeApiServer) -> None:
    """Like etcd, re-applying an identical object neither bumps the rv nor makes an event."""
    first = api.apply(service("web"))
    again = api.apply(service("web"))
    assert again == first
    assert api.resource_version() == int(first["metadata"]["resourceVersion"])


def test_lists_are_in_namespace_and_name_order_and_can_be_namespaced(api: FakeApiServer, core: Any) -> None:
    """All-namespace lists sort by namespace then name; namespaced lists hold only their namespace."""
    for namespace, name in [("b", "z"), ("a", "y"), ("b", "a"), ("ab", "x"), ("a", "b")]:
        api.apply(service(name, namespace))

    everything = list_json(core.list_service_for_all_namespaces)["items"]
    assert [(item["metadata"]["namespace"], item["metadata"]["name"]) for item in everything] == [
        ("a", "b"),
        ("a", "y"),
        ("ab", "x"),
        ("b", "a"),
        ("b", "z"),
    ]
    assert names(list_json(core.list_namespaced_service, namespace="a")["items"]) == ["b", "y"]
    assert core.read_namespaced_service("x", "ab").metadata.namespace == "ab"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_service("x", "a")
    assert missing.value.status == 404


def test_pagination_returns_every_item_once_from_the_first_pages_snapshot(api: FakeApiServer, core: Any) -> None:
    """limit/continue pages share the first page's rv and content, whatever is written in between."""
    for index in range(7):
        api.apply(service(f"svc-{index}"))

    first = list_json(core.list_service_for_all_namespaces, limit=3)
    snapshot_version = first["metadata"]["resourceVersion"]
    assert first["metadata"]["remainingItemCount"] == 4
    api.delete("Service", "default", "svc-5")
    api.apply(service("svc-7"))
    api.apply(service("svc-4", ip="10.96.9.9"))

    pages = [first]
    while token := pages[-1]["metadata"].get("continue"):
        pages.append(list_json(core.list_service_for_all_namespaces, limit=3, _continue=token))

    assert [len(page["items"]) for page in pages] == [3, 3, 1]
    assert {page["metadata"]["resourceVersion"] for page in pages} == {snapshot_version}
    items = [item for page in pages for item in page["items"]]
    assert names(items) == [f"svc-{index}" for index in range(7)]
    assert items[4]["spec"]["clusterIP"] == "10.96.0.1", "the later update is not in the snapshot"


def test_a_continue_token_expires_with_the_history(api: FakeApiServer, core: Any) -> None:
    """After compaction a continue token is answered 410 Expired, as the real server does."""
    for index in range(3):
        api.apply(service(f"svc-{index}"))
    token = list_json(core.list_service_for_all_namespaces, limit=1)["metadata"]["continue"]
    api.expire_history()
    with pytest.raises(ApiException) as expired:
        core.list_service_for_all_namespaces(limit=1, _continue=token)
    assert expired.value.status == 410
    assert status_of(expired.value)["reason"] == "Expired"


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["api-web", "web"]),
        ("app==web,tier=front", ["web"]),
        ("app!=web", ["db", "plain"]),
        ("tier", ["db", "web"]),
        ("!tier", ["api-web", "plain"]),
        ("app in (db, web)", ["api-web", "db", "web"]),
        ("app notin (web),tier", ["db"]),
        ("", ["api-web", "db", "plain", "web"]),
    ],
)
def test_label_selectors_filter_lists(api: FakeApiServer, core: Any, selector: str, expected: list[str]) -> None:
    """Equality- and set-based label selectors, ANDed by commas, select what the real server would."""
    api.apply(service("web", labels={"app": "web", "tier": "front"}))
    api.apply(service("api-web", labels={"app": "web"}))
    api.apply(service("db", labels={"app": "db", "tier": "back"}))
    api.apply(service("plain"))
    assert names(list_json(core.list_service_for_all_namespaces, label_selector=selector)["items"]) == expected


def test_a_malformed_label_selector_is_a_bad_request(api: FakeApiServer, core: Any) -> None:
    """A selector the real server would reject is answered 400 BadRequest, not silently ignored."""
    with pytest.raises(ApiException) as invalid:
        core.list_service_for_all_namespaces(label_selector="app in web")
    assert invalid.value.status == 400
    assert status_of(invalid.value)["reason"] == "BadRequest"


def test_endpoint_slices_are_served_by_the_discovery_api(api: FakeApiServer, discovery: Any) -> None:
    """EndpointSlices list, filter by the service-name label, read and watch through DiscoveryV1Api."""
    api.apply(endpoint_slice("web-1", "web"))
    api.apply(endpoint_slice("db-1", "db"))
    api.apply(endpoint_slice("web-2", "web", "other"))

    selected = list_json(
        discovery.list_endpoint_slice_for_all_namespaces, label_selector="kubernetes.io/service-name=web"
    )
    assert names(selected["items"]) == ["web-1", "web-2"]
    assert names(list_json(discovery.list_namespaced_endpoint_slice, namespace="other")["items"]) == ["web-2"]
    assert discovery.read_namespaced_endpoint_slice("db-1", "default").endpoints[0].addresses == ["192.0.2.10"]

    rv = selected["metadata"]["resourceVersion"]
    api.delete("EndpointSlice", "default", "web-1")
    stream = watch_stream(
        discovery.list_endpoint_slice_for_all_namespaces, resource_version=rv, timeout_seconds=5, deserialize=False
    )
    (deleted,) = take_events(stream, 1)
    assert summary(deleted) == ("DELETED", "web-1")
    assert deleted["object"]["kind"] == "EndpointSlice"


# --- watches --------------------------------------------------------------------------------------------


def test_a_watch_from_a_listed_resource_version_sees_later_writes_in_order(api: FakeApiServer, core: Any) -> None:
    """ADDED, MODIFIED and DELETED arrive in write order, each carrying its write's resourceVersion."""
    api.apply(service("old"))
    listed = list_json(core.list_service_for_all_namespaces)
    api.apply(service("new"))
    api.apply(service("old", ip="10.96.0.7"))
    api.delete("Service", "default", "new")
    api.apply(endpoint_slice("not-a-service", "old"))  # another resource: not on this watch

    stream = watch_stream(
        core.list_service_for_all_namespaces,
        resource_version=listed["metadata"]["resourceVersion"],
        allow_watch_bookmarks=True,
        timeout_seconds=5,
        deserialize=False,
    )
    events = take_events(stream, 3)

    assert [summary(event) for event in events] == [("ADDED", "new"), ("MODIFIED", "old"), ("DELETED", "new")]
    versions = [int(event["object"]["metadata"]["resourceVersion"]) for event in events]
    first_write = int(listed["metadata"]["resourceVersion"]) + 1
    assert versions == [first_write, first_write + 1, first_write + 2]
    assert events[1]["object"]["spec"]["clusterIP"] == "10.96.0.7"


def test_live_writes_reach_an_open_watch(api: FakeApiServer, core: Any) -> None:
    """Events written after the watch opened are streamed as they happen, each as its own line."""
    received: list[tuple[str, str]] = []
    stream = watch_stream(
        core.list_service_for_all_namespaces,
        resource_version=str(api.resource_version()),
        timeout_seconds=5,
        deserialize=False,
    )

    def consume() -> None:
        for event in stream:
            received.append(summary(event))
            if len(received) == 2:
                stream.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    wait_open_watch(api)
    api.apply(service("first"))
    wait_until(lambda: len(received) == 1, "the first event to be streamed before the second write")
    api.apply(service("second"))
    consumer.join(WAIT_SECONDS)
    assert received == [("ADDED", "first"), ("ADDED", "second")]


def test_a_watch_without_resource_version_starts_with_the_current_state(api: FakeApiServer, core: Any) -> None:
    """No rv (or "0"): synthetic ADDED events for every current object, in order, then live ones."""
    api.apply(service("b"))
    api.apply(service("a"))
    for resource_version in (None, "0"):
        stream = watch_stream(
            core.list_service_for_all_namespaces, resource_version=resource_version, timeout_seconds=5
        )
        events = take_events(stream, 2)
        assert [(event["type"], event["object"].metadata.name) for event in events] == [("ADDED", "a"), ("ADDED", "b")]


def test_a_label_selector_watch_sees_objects_enter_and_leave_the_selection(api: FakeApiServer, core: Any) -> None:
    """Gaining the label is ADDED, losing it is DELETED (previous content, new rv), outsiders are unseen."""
    api.apply(service("web", labels={"app": "web"}))
    rv = str(api.resource_version())
    api.apply(service("web", labels={"app": "web"}, ip="10.96.0.2"))
    api.apply(service("web", labels={}, ip="10.96.0.2"))
    api.apply(service("other", ip="10.96.0.3"))
    api.apply(service("web", labels={"app": "web"}, ip="10.96.0.4"))
    api.delete("Service", "default", "web")

    stream = watch_stream(
        core.list_service_for_all_namespaces,
        resource_version=rv,
        label_selector="app=web",
        timeout_seconds=5,
        deserialize=False,
    )
    events = take_events(stream, 4)

    assert [summary(event) for event in events] == [
        ("MODIFIED", "web"),
        ("DELETED", "web"),
        ("ADDED", "web"),
        ("DELETED", "web"),
    ]
    left = events[1]["object"]
    assert left["metadata"]["labels"] == {"app": "web"}, "DELETED carries the last matching content"
    assert left["metadata"]["resourceVersion"] == str(int(rv) + 2)


def test_bookmarks_arrive_periodically_with_the_current_resource_version() -> None:
    """With allowWatchBookmarks, a BOOKMARK with the current rv comes every bookmark_interval."""
    with (
        FakeApiServer(bookmark_interval=0.1).start() as api,
        client.ApiClient(client.Configuration(host=api.url)) as api_client,
    ):
        api.apply(service("web"))
        stream = watch_stream(
            client.CoreV1Api(api_client).list_service_for_all_namespaces,
            resource_version=str(api.resource_version()),
            allow_watch_bookmarks=True,
            timeout_seconds=5,
            deserialize=False,
        )
        bookmarks = take_events(stream, 2)
    assert [event["type"] for event in bookmarks] == ["BOOKMARK", "BOOKMARK"]
    assert bookmarks[0]["object"] == {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(api.resource_version())},
    }


def test_send_bookmarks_sends_one_now_to_watches_that_allow_them(api: FakeApiServer, core: Any) -> None:
    """send_bookmarks() reaches a watch long before the (60 s) periodic bookmark would."""
    stream = watch_stream(
        core.list_service_for_all_namespaces,
        resource_version=str(api.resource_version()),
        allow_watch_bookmarks=True,
        timeout_seconds=5,
        deserialize=False,
    )
    trigger = threading.Thread(target=after_watch_opens, args=(api, api.send_bookmarks))
    trigger.start()
    started = time.monotonic()
    (bookmark,) = take_events(stream, 1)
    trigger.join()
    assert bookmark["type"] == "BOOKMARK"
    assert time.monotonic() - started < 2


def wait_open_watch(api: FakeApiServer) -> None:
    wait_until(lambda: api.stats()["open_watches"]["services"] == 1, "the watch to open")


def after_watch_opens(api: FakeApiServer, action: Callable[[], None]) -> None:
    wait_open_watch(api)
    action()


def test_timeout_seconds_ends_the_stream_cleanly(api: FakeApiServer, core: Any) -> None:
    """After timeoutSeconds the server ends the chunked response; the client's stream just stops."""
    started = time.monotonic()
    events = list(watch_stream(core.list_service_for_all_namespaces, resource_version="1", timeout_seconds=1))
    assert events == []
    assert 0.9 < time.monotonic() - started < 3


def test_a_watch_from_a_compacted_resource_version_raises_410(api: FakeApiServer, core: Any) -> None:
    """After expire_history the client gets the ERROR event as ApiException(410) and, with a timeout, no retry."""
    api.apply(service("web"))
    stale = str(api.resource_version() - 1)
    api.expire_history()
    with pytest.raises(ApiException) as expired:
        list(watch_stream(core.list_service_for_all_namespaces, resource_version=stale, timeout_seconds=5))
    assert expired.value.status == 410
    assert f"too old resource version: {stale} ({api.resource_version()})" in expired.value.reason
    assert api.stats()["watch_requests"]["services"] == 1


def test_the_410_arrives_as_an_error_event_in_a_200_response(api: FakeApiServer) -> None:
    """On the wire: HTTP 200, one ERROR line holding an Expired Status, then a clean end of the body."""
    api.apply(service("web"))
    api.expire_history()
    status, body = http("GET", f"{api.url}/api/v1/services?watch=true&resourceVersion=1")
    assert status == 200
    assert body == {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: 1 ({api.resource_version()})",
            "reason": "Expired",
            "code": 410,
        },
    }


def test_the_installed_client_cannot_read_error_events_without_deserialising(api: FakeApiServer, core: Any) -> None:
    """kubernetes 37's Watch.stream(deserialize=False) looks up event['raw_object'] on ERROR: a KeyError."""
    api.apply(service("web"))
    api.expire_history()
    with pytest.raises(KeyError, match="raw_object"):
        list(
            watch_stream(
                core.list_service_for_all_namespaces, resource_version="1", timeout_seconds=5, deserialize=False
            )
        )


def test_expiring_history_ends_every_open_watch_with_410(api: FakeApiServer, core: Any) -> None:
    """expire_history() while a watch is open: the watch gets the 410 ERROR event and ends."""
    stream = watch_stream(
        core.list_service_for_all_namespaces, resource_version=str(api.resource_version()), timeout_seconds=5
    )
    trigger = threading.Thread(target=after_watch_opens, args=(api, api.expire_history))
    trigger.start()
    with pytest.raises(ApiException) as expired:
        list(stream)
    trigger.join()
    assert expired.value.status == 410


def test_a_short_history_expires_resource_versions_that_fell_out_of_it() -> None:
    """With history_size=3 only the last three writes can be replayed; older rvs are 410."""
    with (
        FakeApiServer(history_size=3).start() as api,
        client.ApiClient(client.Configuration(host=api.url)) as api_client,
    ):
        oldest = api.resource_version()
        for index in range(5):
            api.apply(service(f"svc-{index}"))
        list_services = client.CoreV1Api(api_client).list_service_for_all_namespaces
        with pytest.raises(ApiException) as expired:
            list(watch_stream(list_services, resource_version=str(oldest), timeout_seconds=5))
        assert expired.value.status == 410
        retained = str(api.resource_version() - 3)
        replayed = take_events(watch_stream(list_services, resource_version=retained, timeout_seconds=5), 3)
        assert [event["object"].metadata.name for event in replayed] == ["svc-2", "svc-3", "svc-4"]


def test_a_watch_from_a_future_resource_version_is_refused(api: FakeApiServer, core: Any) -> None:
    """A resourceVersion beyond the current one is answered 504 Timeout ("Too large resource version")."""
    with pytest.raises(ApiException) as too_large:
        list(watch_stream(core.list_service_for_all_namespaces, resource_version="999", timeout_seconds=1))
    assert too_large.value.status == 504


# --- faults ---------------------------------------------------------------------------------------------


def test_fail_next_answers_the_next_requests_with_a_status(api: FakeApiServer, core: Any) -> None:
    """fail_next(1) fails exactly one request with a Status body; then the server answers normally."""
    api.fail_next(1)
    with pytest.raises(ApiException) as failed:
        core.list_service_for_all_namespaces()
    assert failed.value.status == 500
    status = status_of(failed.value)
    assert (status["kind"], status["status"], status["reason"], status["code"]) == (
        "Status",
        "Failure",
        "InternalError",
        500,
    )
    assert list_json(core.list_service_for_all_namespaces)["items"] == []
    assert api.stats()["injected_failures"] == 1


def test_fail_next_can_target_only_watches(api: FakeApiServer, core: Any) -> None:
    """only="watch" leaves lists alone; counters tell attempted lists and watches from served lists."""
    api.fail_next(2, 503, only="watch")
    assert list_json(core.list_service_for_all_namespaces)["items"] == []
    for _ in range(2):
        with pytest.raises(ApiException) as failed:
            list(watch_stream(core.list_service_for_all_namespaces, timeout_seconds=1))
        assert failed.value.status == 503
    stats = api.stats()
    assert (stats["list_requests"]["services"], stats["watch_requests"]["services"]) == (1, 2)
    assert stats["lists_served"]["services"] == 1


def test_dropping_watches_breaks_the_stream_with_a_protocol_error(api: FakeApiServer, core: Any) -> None:
    """drop_watches() closes the socket without the last chunk: urllib3 raises ProtocolError."""
    api.apply(service("web"))
    stream = watch_stream(core.list_service_for_all_namespaces, timeout_seconds=5, deserialize=False)
    assert summary(next(stream)) == ("ADDED", "web")
    api.drop_watches()
    with pytest.raises(urllib3.exceptions.ProtocolError):  # "Response ended prematurely"
        next(stream)
    wait_until(lambda: api.stats()["open_watches"]["services"] == 0, "the dropped watch to close")


def test_a_watch_whose_client_went_away_is_no_longer_counted(api: FakeApiServer, core: Any) -> None:
    """The server notices a watch client that hung up, even with no events to send."""
    stream = watch_stream(core.list_service_for_all_namespaces, timeout_seconds=30, deserialize=False)
    api.apply(service("web"))
    take_events(stream, 1)
    wait_until(lambda: api.stats()["open_watches"]["services"] == 0, "the server to notice the client left")


def test_unreachable_refuses_connections_until_reachable_again_on_the_same_port(api: FakeApiServer, core: Any) -> None:
    """set_unreachable(None) closes the listener (connections refused) until set_reachable() rebinds it."""
    api.apply(service("web"))
    url = api.url
    api.set_unreachable(None)
    assert connection_refused(url)
    assert api.stats()["reachable"] is False
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_service_for_all_namespaces()

    api.set_reachable()
    assert api.url == url
    assert names(list_json(core.list_service_for_all_namespaces)["items"]) == ["web"]


def test_an_unreachable_period_ends_by_itself_and_cuts_open_watches(api: FakeApiServer, core: Any) -> None:
    """set_unreachable(seconds) cuts open watches mid-stream and listens again after the period."""
    stream = watch_stream(core.list_service_for_all_namespaces, timeout_seconds=5)
    api.apply(service("web"))
    next(stream)
    api.set_unreachable(0.5)
    assert connection_refused(api.url)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        next(stream)
    wait_until(lambda: not connection_refused(api.url), "the listener to come back")
    assert api.stats()["open_watches"]["services"] == 0


# --- plain HTTP -----------------------------------------------------------------------------------------


def test_http_writes_create_replace_and_delete_like_kubectl_would(api: FakeApiServer, core: Any) -> None:
    """POST creates (409 AlreadyExists twice), PUT replaces (409 Conflict on a stale rv), DELETE 404s twice."""
    services = f"{api.url}/api/v1/namespaces/shop/services"
    status, created = http("POST", services, service("web", "shop"))
    assert status == 201
    assert created["metadata"]["namespace"] == "shop"

    status, conflict = http("POST", services, service("web", "shop"))
    assert (status, conflict["reason"], conflict["message"]) == (409, "AlreadyExists", 'services "web" already exists')

    replacement = service("web", "shop", ip="10.96.0.5")
    status, replaced = http("PUT", f"{services}/web", replacement)
    assert (status, replaced["spec"]["clusterIP"]) == (200, "10.96.0.5")
    assert core.read_namespaced_service("web", "shop").spec.cluster_ip == "10.96.0.5"

    stale = replacement | {"metadata": created["metadata"]}
    status, rejected = http("PUT", f"{services}/web", stale)
    assert (status, rejected["reason"]) == (409, "Conflict")

    status, deleted = http("DELETE", f"{services}/web")
    assert (status, deleted["metadata"]["name"]) == (200, "web")
    status, missing = http("DELETE", f"{services}/web")
    assert (status, missing["reason"], missing["code"]) == (404, "NotFound", 404)

    slices = f"{api.url}/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
    assert http("PUT", f"{slices}/web-1", endpoint_slice("web-1", "web", "shop"))[0] == 201
    assert http("GET", f"{slices}/web-1")[1]["addressType"] == "IPv4"
    assert http("DELETE", f"{slices}/web-1")[0] == 200
    assert api.get("EndpointSlice", "shop", "web-1") is None


def test_lab_endpoints_inject_faults_from_another_process(api: FakeApiServer) -> None:
    """Every fault is also a POST under /_lab/, and the counters are GET /_lab/stats."""
    lab = f"{api.url}/_lab"
    assert http("POST", f"{lab}/fail_next", {"count": 1, "status": 500, "only": "list"})[0] == 200
    assert http("GET", f"{api.url}/api/v1/services")[0] == 500
    assert http("GET", f"{api.url}/api/v1/services")[0] == 200
    assert http("POST", f"{lab}/expire_history")[0] == 200
    assert http("POST", f"{lab}/send_bookmarks")[0] == 200
    assert http("POST", f"{lab}/drop_watches")[0] == 200
    status, stats = http("GET", f"{lab}/stats")
    assert (status, stats["list_requests"]["services"], stats["injected_failures"]) == (200, 2, 1)

    assert http("POST", f"{lab}/set_unreachable", {"seconds": 0.5})[0] == 200
    assert connection_refused(api.url)
    wait_until(lambda: not connection_refused(api.url), "the listener to come back")
    assert http("GET", f"{api.url}/healthz") == (200, "ok")


def test_version_and_healthz_answer_like_the_real_server(api: FakeApiServer, api_client: Any) -> None:
    """/version deserialises as VersionInfo, /healthz is "ok", unknown resources are a NotFound Status."""
    assert client.VersionApi(api_client).get_code().major == "1"
    assert http("GET", f"{api.url}/healthz") == (200, "ok")
    status, not_found = http("GET", f"{api.url}/api/v1/pods")
    assert (status, not_found["reason"]) == (404, "NotFound")


def test_the_server_listens_on_ipv6() -> None:
    """An IPv6 host gets an IPv6 listener and a bracketed URL."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with FakeApiServer("::1").start() as api:
        api.apply(service("web"))
        assert api.url.startswith("http://[::1]:")
        assert names(http("GET", f"{api.url}/api/v1/services")[1]["items"]) == ["web"]


def test_the_command_line_serves_a_seed_file_until_sigterm(tmp_path: Path) -> None:
    """python -m lab.fakeapi seeds from a kind: List, logs its URL to stderr, exits 0 on SIGTERM."""
    seed = tmp_path / "seed.yaml"
    seed.write_text(
        "kind: List\nitems:\n"
        "- {kind: Service, metadata: {name: web, namespace: shop}, spec: {clusterIP: 10.96.0.1}}\n"
        "- {kind: EndpointSlice, metadata: {name: web-1, namespace: shop}, addressType: IPv4, endpoints: []}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "lab.fakeapi", "--listen", "127.0.0.1:0", "--seed", str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        announced = None
        while not announced and (line := process.stderr.readline()):
            announced = re.search(r"serving on (http://\S+)", line)
        assert announced, "the server logs its URL to stderr"
        url = announced[1]
        assert names(http("GET", f"{url}/api/v1/namespaces/shop/services")[1]["items"]) == ["web"]
        assert names(http("GET", f"{url}/apis/discovery.k8s.io/v1/endpointslices")[1]["items"]) == ["web-1"]
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=WAIT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert stdout == "", "nothing is printed to stdout"
