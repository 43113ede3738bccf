"""Objects decoded into their slim shapes convert exactly as their raw JSON does; one that does not fit never costs
its page or its watch, and its faults are named as before."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from announcer.convert import Converted, ObjectKind, convert_object, converter, shape_of
from announcer.decode import object_name, object_version, read_event, read_page, shape_decoder
from announcer.kube import Backoff, Changed, KubeApi, Relisted, Resource, ResourceWatcher, list_pages
from announcer.shapes import NodeShape, ServiceShape, SliceShape
from bench.lab_env import service_object
from lab.fakeapi import FakeApiServer
from tests.factories import endpoint, endpoint_slice, service
from tests.test_hostile import PREFIX, endpoint_values, hostile_services, json_scalars, json_values
from tests.test_kube import eventually


def both_ways(kind: ObjectKind, body: bytes) -> tuple[object, Converted, Converted]:
    """(what the shape decoder made of body, its conversion, the conversion of json.loads(body))."""
    decoded = shape_decoder(shape_of(kind))(body)
    return decoded, convert_object(kind, decoded, PREFIX), convert_object(kind, json.loads(body), PREFIX)


# --- the hostile corpus, encoded as an API server would send it --------------------------------------------------


@settings(max_examples=3_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_services())
def test_a_hostile_service_converts_from_its_shape_exactly_as_from_its_raw_json(obj: dict[str, Any]) -> None:
    _, shaped, raw = both_ways(ObjectKind.SERVICE, json.dumps(obj).encode())
    assert shaped == raw


SERVICE_LABEL = {"kubernetes.io/service-name": "web"}
hostile_slices = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {"namespace": st.just("default"), "name": st.just("s")},
            optional={
                "labels": st.one_of(
                    st.just(SERVICE_LABEL),
                    st.just(SERVICE_LABEL),
                    st.fixed_dictionaries({"kubernetes.io/service-name": json_scalars}),
                    json_values,
                )
            },
        ),
        "endpoints": endpoint_values,
    },
    optional={"addressType": st.one_of(st.sampled_from(["IPv4", "IPv6", "FQDN"]), json_values)},
)
# Slices that fit the shape, with hostile leaves: the typed path's own reading of endpoints and conditions.
fitting_slices = st.fixed_dictionaries(
    {
        "metadata": st.just({"namespace": "default", "name": "s", "labels": SERVICE_LABEL}),
        "addressType": st.sampled_from(["IPv4", "IPv6", "FQDN", "ipv4"]),
        "endpoints": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "nodeName": st.one_of(st.sampled_from(["node-a", "node-b", "Node_C", "a\nshutdown"]), json_scalars),
                    "conditions": st.one_of(
                        st.none(),
                        st.dictionaries(st.sampled_from(["ready", "serving", "terminating"]), json_scalars),
                    ),
                },
            ),
            max_size=5,
        ),
    }
)


@settings(max_examples=3_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(hostile_slices, fitting_slices))
def test_a_hostile_endpoint_slice_converts_from_its_shape_exactly_as_from_its_raw_json(obj: dict[str, Any]) -> None:
    _, shaped, raw = both_ways(ObjectKind.ENDPOINT_SLICE, json.dumps(obj).encode())
    assert shaped == raw


conditions = st.lists(
    st.one_of(
        st.fixed_dictionaries({"type": st.sampled_from(["Ready", "DiskPressure"])}, optional={"status": json_scalars}),
        json_values,
    ),
    max_size=3,
)
hostile_nodes = st.fixed_dictionaries(
    {"metadata": st.fixed_dictionaries({"name": st.one_of(st.just("node-a"), json_scalars)})},
    optional={
        "spec": st.one_of(st.fixed_dictionaries({}, optional={"unschedulable": json_scalars}), json_values),
        "status": st.one_of(
            st.fixed_dictionaries({}, optional={"conditions": st.one_of(conditions, json_values)}), json_values
        ),
    },
)


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_nodes, st.one_of(json_values, st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)))
def test_a_hostile_node_converts_from_its_shape_exactly_as_from_its_raw_json(
    obj: dict[str, Any], labels: object
) -> None:
    obj["metadata"]["labels"] = labels
    obj["metadata"]["annotations"] = labels
    _, shaped, raw = both_ways(ObjectKind.NODE, json.dumps(obj).encode())
    assert shaped == raw


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(list(ObjectKind)))
def test_any_json_value_as_a_whole_object_converts_from_its_decoding_as_from_its_raw_json(
    value: object, kind: ObjectKind
) -> None:
    _, shaped, raw = both_ways(kind, json.dumps(value).encode())
    assert shaped == raw


# --- which objects take the typed path, and which fall back -------------------------------------------------------

WELL_FORMED = service("web", ["198.51.100.10", "2001:db8:96::a"])


def changed(obj: dict[str, Any], path: str | tuple[str, ...], value: object) -> dict[str, Any]:
    """A copy of obj with the path (dotted, or its parts) set to value."""
    copy: dict[str, Any] = json.loads(json.dumps(obj))
    *parents, last = path.split(".") if isinstance(path, str) else path
    target = copy
    for name in parents:
        target = target.setdefault(name, {})
    target[last] = value
    return copy


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("spec.clusterIPs", "198.51.100.10", "spec.clusterIPs"),
        ("spec.clusterIPs", [["198.51.100.10"]], "spec.clusterIPs[0]"),
        ("spec.type", 5, "spec.type"),
        ("spec.type", None, "spec.type"),
        ("metadata.annotations", ["x"], "metadata.annotations"),
        (("metadata", "annotations", f"{PREFIX}med"), 7, f"metadata.annotations[{PREFIX}med]"),
        ("spec.externalTrafficPolicy", {"Local": True}, "spec.externalTrafficPolicy"),
        ("status.loadBalancer.ingress", "198.51.100.7", "status.loadBalancer.ingress"),
    ],
)
def test_wrong_leaves_take_the_typed_path_and_are_named_as_before(
    path: str | tuple[str, ...], value: object, field: str
) -> None:
    decoded, shaped, raw = both_ways(ObjectKind.SERVICE, json.dumps(changed(WELL_FORMED, path, value)).encode())
    assert isinstance(decoded, ServiceShape)
    assert shaped == raw
    assert field in [problem.field for problem in shaped.problems]


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("spec", ["ClusterIP"], "Service default/web: spec: missing or not an object; nothing announced"),
        ("spec", None, "Service default/web: spec: missing or not an object; nothing announced"),
        ("metadata", "web", ""),
        ("metadata", None, ""),
        ("status", [1], None),
        ("status.loadBalancer", "up", None),
    ],
)
def test_containers_of_another_shape_fall_back_to_the_raw_json_and_are_named_as_before(
    path: str, value: object, problem: str | None
) -> None:
    decoded, shaped, raw = both_ways(ObjectKind.SERVICE, json.dumps(changed(WELL_FORMED, path, value)).encode())
    assert isinstance(decoded, dict)
    assert shaped == raw
    if problem:
        assert [str(item) for item in shaped.problems] == [problem]
    elif problem == "":
        assert shaped.key is None and shaped.error


@pytest.mark.parametrize("name", [["web"], "Web", None, 5])
def test_a_bad_name_is_read_from_the_shape_and_refused_as_before(name: object) -> None:
    decoded, shaped, raw = both_ways(
        ObjectKind.SERVICE, json.dumps(changed(WELL_FORMED, "metadata.name", name)).encode()
    )
    assert isinstance(decoded, ServiceShape)
    assert shaped == raw
    assert shaped.key is None
    assert shaped.error.startswith("metadata.name: ")


@pytest.mark.parametrize(
    ("endpoints", "typed"),
    [
        ([{"nodeName": "node-a", "conditions": {"ready": False, "serving": True}}, {"nodeName": "Bad"}], True),
        ([{"nodeName": "node-a", "conditions": None}, {"nodeName": 5}], True),
        (None, True),
        ("node-a", False),
        ([{"nodeName": "node-a"}, "node-b"], False),
        ([{"nodeName": "node-a", "conditions": [True]}], False),
    ],
)
def test_endpoint_slices_take_the_typed_path_where_they_fit(endpoints: object, typed: bool) -> None:
    obj = changed(endpoint_slice("web", "IPv4", []), "endpoints", endpoints)
    decoded, shaped, raw = both_ways(ObjectKind.ENDPOINT_SLICE, json.dumps(obj).encode())
    assert isinstance(decoded, SliceShape) is typed
    assert shaped == raw


def test_a_real_node_takes_the_typed_path() -> None:
    node = {
        "metadata": {"name": "node-a", "labels": {"rack": "r1"}, "annotations": {"a": "b"}, "managedFields": [{}]},
        "spec": {"unschedulable": True, "podCIDR": "10.0.0.0/24"},
        "status": {"conditions": [{"type": "Ready", "status": "False"}], "images": [{"names": ["x"]}]},
    }
    decoded, shaped, raw = both_ways(ObjectKind.NODE, json.dumps(node).encode())
    assert isinstance(decoded, NodeShape)
    assert shaped == raw
    assert shaped.problems == ()


@pytest.mark.parametrize("index", [0, 1, 4_999, 9_999])
def test_the_benchmark_services_take_the_typed_path(index: int) -> None:
    decoded, shaped, raw = both_ways(ObjectKind.SERVICE, json.dumps(service_object(index)).encode())
    assert isinstance(decoded, ServiceShape)
    assert shaped == raw
    assert shaped.view is not None and shaped.problems == ()


# --- JSON that the two decoders read differently ------------------------------------------------------------------

WEB = b'"metadata":{"namespace":"default","name":"web"'


@pytest.mark.parametrize(
    "body",
    [
        # duplicate keys: the last one counts, for both decoders and at every depth
        b"{" + WEB + b',"name":"other"},"spec":{"clusterIP":"198.51.100.1","clusterIP":"198.51.100.2"}}',
        b"{" + WEB + b'},"spec":{"clusterIP":"198.51.100.1"},"spec":{"clusterIP":"198.51.100.3"}}',
        # integers beyond 64 bits
        b"{" + WEB + b'},"spec":{"clusterIPs":[123456789012345678901234567890]}}',
        # a lone surrogate escape
        b"{" + WEB + b',"annotations":{"bgp.announcer.io/med":"\\ud800"}},"spec":{"clusterIP":"198.51.100.1"}}',
        # what only Python's decoder reads: NaN, Infinity, out-of-range exponents, a BOM, UTF-16
        b"{" + WEB + b'},"spec":{"clusterIP":"198.51.100.1","ports":[{"port":NaN}]}}',
        b"{" + WEB + b'},"spec":{"clusterIPs":[Infinity]}}',
        b"{" + WEB + b'},"spec":{"clusterIPs":[1e400]}}',
        b"\xef\xbb\xbf{" + WEB + b'},"spec":{"clusterIP":"198.51.100.1"}}',
        ('{"metadata":{"namespace":"default","name":"web"},"spec":{"clusterIP":"198.51.100.1"}}').encode("utf-16"),
        # escapes and whitespace
        b" {\n" + WEB + b'},"spec":{"clusterIP":"198.51.100.\\u0031"}} ',
    ],
)
def test_json_the_decoders_read_differently_converts_as_the_raw_json_does(body: bytes) -> None:
    _, shaped, raw = both_ways(ObjectKind.SERVICE, body)
    assert shaped == raw


# --- pages -------------------------------------------------------------------------------------------------------

GOOD = json.dumps(WELL_FORMED).encode()


@pytest.mark.parametrize(
    "body",
    [
        b'{"metadata":{"resourceVersion":"7","continue":"abc"},"items":[' + GOOD + b',5,null,{"spec":[]}]}',
        b'{"metadata":{"resourceVersion":7,"continue":3},"items":[' + GOOD + b"]}",
        b'{"metadata":{"resourceVersion":"7"},"items":null}',
        b'{"metadata":{"resourceVersion":"7"},"items":{"a":' + GOOD + b"}}",
        b'{"metadata":"7","items":[' + GOOD + b"]}",
        b'{"metadata":{"resourceVersion":"7"},"items":[' + GOOD + b',{"spec":{"x":NaN}}]}',
        b"[]",
        b'"page"',
    ],
)
def test_a_page_of_any_shape_yields_what_the_raw_json_path_yields(body: bytes) -> None:
    typed_items, *typed_rest = read_page(body, ServiceShape)
    raw_items, *raw_rest = read_page(body, None)
    assert typed_rest == raw_rest
    convert = converter(ObjectKind.SERVICE, PREFIX)
    assert [convert(item) for item in typed_items] == [convert(item) for item in raw_items]


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"ADDED","object":' + GOOD + b"}",
        b'{"type":"MODIFIED","object":{"metadata":{"namespace":"default","name":"web","resourceVersion":"9"},"spec":[]}}',
        b'{"type":"DELETED","object":{"metadata":{"name":"web","namespace":"default"},"spec":{"x":NaN}}}',
        b'{"type":"ADDED","object":null}',
        b'{"type":"ADDED"}',
        b'{"type":"BOOKMARK","object":{"kind":"Service","metadata":{"resourceVersion":"12"}}}',
        b'{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old resource version"}}',
        b'{"type":["ADDED"],"object":' + GOOD + b"}",
        b'{"type":"ADDED","object":' + GOOD + b',"type":"DELETED"}',
        b'[{"type":"ADDED"}]',
    ],
)
def test_a_watch_event_line_of_any_shape_reads_as_the_raw_json_path_reads_it(line: bytes) -> None:
    (typed_kind, typed_obj), (raw_kind, raw_obj) = read_event(line, ServiceShape), read_event(line, None)
    assert typed_kind == raw_kind
    assert object_version(typed_obj) == object_version(raw_obj)
    assert object_name(typed_obj) == object_name(raw_obj)
    if raw_kind in ("ADDED", "MODIFIED", "DELETED"):
        convert = converter(ObjectKind.SERVICE, PREFIX)
        assert convert(typed_obj) == convert(raw_obj)
    else:
        assert typed_obj == raw_obj


def hostile_mix() -> list[dict[str, Any]]:
    """Well-formed Services (the benchmark's) with Services of every wrong shape between them, valid names all."""
    objects = [service_object(index) for index in range(8)]
    wrong = [
        changed(WELL_FORMED, "spec", ["ClusterIP"]),
        changed(WELL_FORMED, "spec.clusterIPs", "198.51.100.10"),
        changed(WELL_FORMED, "status", [1]),
        changed(WELL_FORMED, "status.loadBalancer", "up"),
        changed(WELL_FORMED, "metadata.annotations", {f"{PREFIX}communities": ["65000:1"]}),
        changed(WELL_FORMED, "spec.ports", [{"port": float("nan")}]),  # only Python's decoder reads NaN
        changed(WELL_FORMED, "spec.type", "Gateway"),
    ]
    for index, obj in enumerate(wrong):
        obj["metadata"]["name"] = f"wrong-{index}"
        objects.insert(1 + index, obj)
    return objects


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=3600.0, history_size=64).start() as server:
        yield server


def test_a_page_mixing_well_formed_and_wrong_services_yields_the_same_views_and_problems(api: FakeApiServer) -> None:
    """Over real HTTP from the stand-in: each Service read on its own, the well-formed ones typed, the others from
    their raw JSON; the pages (one of them holds NaN, which only Python's decoder reads) convert as before."""
    for obj in hostile_mix():
        api.apply(obj)
    convert = converter(ObjectKind.SERVICE, PREFIX)
    with client.ApiClient(client.Configuration(host=api.url)) as api_client:
        kube = KubeApi(api_client)
        typed = list(list_pages(kube, Resource.SERVICES, page_size=4, request_timeout=5.0, shape=ServiceShape))
        raw = list(list_pages(kube, Resource.SERVICES, page_size=4, request_timeout=5.0))
    assert [page.resource_version for page in typed] == [page.resource_version for page in raw]
    typed_items = [item for page in typed for item in page.items]
    assert [convert(item) for item in typed_items] == [convert(item) for page in raw for item in page.items]
    assert len(typed_items) == 15
    shapes = sum(isinstance(item, ServiceShape) for item in typed_items)
    assert shapes >= 8, "the benchmark's Services (and those with wrong leaves) are decoded into their shape"
    problems = {str(problem) for item in typed_items for problem in convert(item).problems}
    assert "Service default/wrong-0: spec: missing or not an object; nothing announced" in problems
    assert any(problem.startswith("Service default/wrong-6: spec.type:") for problem in problems)


# --- watches -----------------------------------------------------------------------------------------------------


class ShapedWatch:
    """A Services watcher decoding into ServiceShape and converting, its events recorded."""

    def __init__(self, api: FakeApiServer) -> None:
        self.events: list[Any] = []
        self.stop = threading.Event()
        self.client = client.ApiClient(client.Configuration(host=api.url))
        self.watcher = ResourceWatcher(
            Resource.SERVICES,
            self.client,
            self.events.append,
            self.stop,
            convert=converter(ObjectKind.SERVICE, PREFIX),
            shape=ServiceShape,
            backoff=Backoff(0.05, 0.1),
        )
        self.watcher.start()
        eventually(lambda: any(isinstance(event, Relisted) for event in self.events), "the first list")

    def changes(self) -> list[Changed[Converted]]:
        return [event for event in self.events if isinstance(event, Changed)]

    def close(self) -> None:
        self.stop.set()
        self.watcher.close()
        self.watcher.join(5)
        self.client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def watch(api: FakeApiServer) -> Iterator[ShapedWatch]:
    api.apply(service("a", ["198.51.100.1"]))
    watching = ShapedWatch(api)
    yield watching
    watching.close()


def test_watch_events_of_unforeseen_shapes_are_named_and_the_watch_goes_on(
    api: FakeApiServer, watch: ShapedWatch, caplog: pytest.LogCaptureFixture
) -> None:
    objects = hostile_mix()
    with caplog.at_level(logging.WARNING, logger="announcer.kube"):
        for obj in objects:
            api.apply(obj)
        eventually(lambda: len(watch.changes()) == len(objects), "every event")
    convert = converter(ObjectKind.SERVICE, PREFIX)
    assert [event.obj for event in watch.changes()] == [convert(obj) for obj in objects]
    problems = [str(problem) for event in watch.changes() for problem in event.obj.problems]
    assert "Service default/wrong-0: spec: missing or not an object; nothing announced" in problems
    assert watch.watcher.stats.restarts == 0 and watch.watcher.stats.skipped == 0
    assert api.stats()["watch_requests"]["services"] == 1
    assert watch.watcher.resource_version == str(api.resource_version())
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_bookmark_moves_the_resume_point_of_a_shaped_watch(api: FakeApiServer, watch: ShapedWatch) -> None:
    api.apply(endpoint_slice("web", "IPv4", [endpoint("node-a", "192.0.2.50")]))
    api.send_bookmarks()
    eventually(lambda: watch.watcher.resource_version == str(api.resource_version()), "the bookmark's version")
    assert watch.changes() == []


def test_a_410_error_event_on_a_shaped_watch_means_a_relist(api: FakeApiServer, watch: ShapedWatch) -> None:
    api.apply(service("b", ["198.51.100.2"]))
    eventually(lambda: len(watch.changes()) == 1, "b")
    api.expire_history()
    eventually(lambda: watch.watcher.stats.expired >= 1, "the 410 ERROR event")
    eventually(lambda: api.stats()["lists_served"]["services"] >= 2, "the re-list")
    relisted = [event for event in watch.events if isinstance(event, Relisted)][-1]
    assert sorted(item.key for item in relisted.objects) == [("default", "a"), ("default", "b")]
