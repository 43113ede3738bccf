"""KubeApi sends exactly the requests the client's generated methods send, and the daemon never imports them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import urllib3
import yaml
from kubernetes import client

from announcer.kube import KubeApi, Resource, make_api_client
from lab.recording_api import Recorded, RecordingApi, kubeconfig_text

TOKEN = "abc.DEF-123_token"  # noqa: S105  (made up: the recording server only compares it)
NODE = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-a", "labels": {"rack": "r1"}}}
GENERATED_MODULE = re.compile(r"kubernetes\.client\.(api|models)\.\w+")


@pytest.fixture
def recording() -> Iterator[RecordingApi]:
    with RecordingApi(nodes={"node-a": NODE}) as api:
        yield api


@pytest.fixture
def api_client(recording: RecordingApi, tmp_path: Path) -> Iterator[object]:
    """An ApiClient made as the daemon makes it, from a kubeconfig whose user has a bearer token."""
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig_text(recording.url, TOKEN))
    made = make_api_client(path)
    yield made
    made.close()  # type: ignore[attr-defined]


def sent(recording: RecordingApi, call: Callable[[], object]) -> list[Recorded]:
    """The requests one call made (its raw response, if any, read to the end and released)."""
    response = call()
    if isinstance(response, urllib3.BaseHTTPResponse):
        response.read()
        response.release_conn()
    return recording.take()


# (what, the generated method as kubernetes' own API classes call it, the same request through KubeApi)
Call = tuple[str, Callable[[object], object], Callable[[KubeApi], object]]
CALLS: list[Call] = [
    (
        "services: first page, label selector",
        lambda c: client.CoreV1Api(c).list_service_for_all_namespaces(label_selector="app in (a,b)", limit=500, _preload_content=False, _request_timeout=5.0),
        lambda k: k.request(Resource.SERVICES, label_selector="app in (a,b)", timeout=5.0, limit=500),
    ),
    (
        "services: next page (a continue token to quote)",
        lambda c: client.CoreV1Api(c).list_service_for_all_namespaces(limit=500, _continue="eyJ2Ijo/+x==", _preload_content=False, _request_timeout=5.0),
        lambda k: k.request(Resource.SERVICES, timeout=5.0, limit=500, _continue="eyJ2Ijo/+x=="),
    ),
    (
        "services: watch from a resourceVersion, with bookmarks",
        lambda c: client.CoreV1Api(c).list_service_for_all_namespaces(
            label_selector="app=x", watch=True, resource_version="41", allow_watch_bookmarks=True, timeout_seconds=300,
            _preload_content=False, _request_timeout=(3.0, 303.0),
        ),
        lambda k: k.request(
            Resource.SERVICES, label_selector="app=x", timeout=(3.0, 303.0), watch=True, resource_version="41",
            allow_watch_bookmarks=True, timeout_seconds=300,
        ),
    ),
    (
        "services: watch from an empty resourceVersion",
        lambda c: client.CoreV1Api(c).list_service_for_all_namespaces(watch=True, resource_version="", _preload_content=False, _request_timeout=(3.0, 303.0)),
        lambda k: k.request(Resource.SERVICES, timeout=(3.0, 303.0), watch=True, resource_version=""),
    ),
    (
        "endpointslices: list",
        lambda c: client.DiscoveryV1Api(c).list_endpoint_slice_for_all_namespaces(limit=2, _preload_content=False, _request_timeout=5.0),
        lambda k: k.request(Resource.ENDPOINTSLICES, timeout=5.0, limit=2),
    ),
    (
        "endpointslices: watch",
        lambda c: client.DiscoveryV1Api(c).list_endpoint_slice_for_all_namespaces(
            watch=True, resource_version="7", allow_watch_bookmarks=True, timeout_seconds=60,
            _preload_content=False, _request_timeout=(3.0, 303.0),
        ),
        lambda k: k.request(
            Resource.ENDPOINTSLICES, timeout=(3.0, 303.0), watch=True, resource_version="7",
            allow_watch_bookmarks=True, timeout_seconds=60,
        ),
    ),
    (
        "nodes: list by field selector",
        lambda c: client.CoreV1Api(c).list_node(field_selector="metadata.name=node-a", limit=500, _preload_content=False, _request_timeout=5.0),
        lambda k: k.request(Resource.NODES, field_selector="metadata.name=node-a", timeout=5.0, limit=500),
    ),
    (
        "nodes: watch by field selector",
        lambda c: client.CoreV1Api(c).list_node(
            field_selector="metadata.name=node-a", watch=True, resource_version="9", allow_watch_bookmarks=True,
            timeout_seconds=300, _preload_content=False, _request_timeout=(3.0, 303.0),
        ),
        lambda k: k.request(
            Resource.NODES, field_selector="metadata.name=node-a", timeout=(3.0, 303.0), watch=True,
            resource_version="9", allow_watch_bookmarks=True, timeout_seconds=300,
        ),
    ),
    (
        "nodes: read one",
        lambda c: client.CoreV1Api(c).read_node("node-a", _preload_content=False, _request_timeout=5.0),
        lambda k: k.read_node("node-a", 5.0),
    ),
    (
        "pods: read one (the stop's lookup)",
        lambda c: client.CoreV1Api(c).read_namespaced_pod("announcer-x7k2p", "service-announcer", _preload_content=False, _request_timeout=2.0),
        lambda k: k.read_pod("service-announcer", "announcer-x7k2p", 2.0),
    ),
    (
        "daemonsets: read one (the stop's lookup)",
        lambda c: client.AppsV1Api(c).read_namespaced_daemon_set("service-announcer", "service-announcer", _preload_content=False, _request_timeout=2.0),
        lambda k: k.read_daemonset("service-announcer", "service-announcer", 2.0),
    ),
]  # fmt: skip


@pytest.mark.parametrize("call", CALLS, ids=[call[0] for call in CALLS])
def test_each_request_is_the_one_the_generated_client_sends(
    recording: RecordingApi, api_client: object, call: Call
) -> None:
    """Same method, path, query string (names, order, quoting) and headers (Authorization, Accept, User-Agent)."""
    _, generated, ours = call
    expected = sent(recording, lambda: generated(api_client))
    got = sent(recording, lambda: ours(KubeApi(api_client)))
    assert len(expected) == 1
    assert got == expected
    assert got[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert got[0].headers["accept"] == "application/json"


def test_the_bodies_come_back_raw(recording: RecordingApi, api_client: object) -> None:
    """A list answers urllib3's unread response (the caller decodes it); read_node the Node's JSON."""
    kube = KubeApi(api_client)
    response = kube.request(Resource.SERVICES, timeout=5.0, limit=1)
    assert response.data == b'{"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}'
    response.release_conn()
    assert kube.read_node("node-a", 5.0) == NODE


@pytest.mark.parametrize("status", [403, 410, 500, 503])
def test_an_error_status_raises_the_same_exception_as_the_generated_client(
    recording: RecordingApi, api_client: object, status: int
) -> None:
    recording.status = status
    with pytest.raises(client.ApiException) as generated:
        client.CoreV1Api(api_client).list_service_for_all_namespaces(
            limit=1, _preload_content=False, _request_timeout=5.0
        )
    with pytest.raises(client.ApiException) as ours:
        KubeApi(api_client).request(Resource.SERVICES, timeout=5.0, limit=1)
    assert type(ours.value) is type(generated.value)
    assert (
        (ours.value.status, ours.value.reason)
        == (generated.value.status, generated.value.reason)
        == (
            status,
            generated.value.reason,
        )
    )
    assert ours.value.status == status
    with pytest.raises(client.ApiException) as read:
        KubeApi(api_client).read_node("node-a", 5.0)
    assert read.value.status == status


def test_a_node_the_api_server_does_not_know_reads_as_none(recording: RecordingApi, api_client: object) -> None:
    assert KubeApi(api_client).read_node("node-z", 5.0) is None
    assert [request.path for request in recording.take()] == ["/api/v1/nodes/node-z"]


def test_an_unknown_list_parameter_is_refused_before_any_request(recording: RecordingApi, api_client: object) -> None:
    with pytest.raises(TypeError, match="pretty"):
        KubeApi(api_client).request(Resource.SERVICES, timeout=5.0, pretty="true")
    assert recording.take() == []


# `announcer run` with a hook that writes sys.modules at the interpreter's exit (argv[1]: the file). Not -X importtime:
# it does not report modules loaded by importlib.import_module, which is how kubernetes.client loads its API classes.
RUN_RECORDING_MODULES = """
import atexit, json, sys
from pathlib import Path
out = Path(sys.argv.pop(1))
atexit.register(lambda: out.write_text(json.dumps(sorted(sys.modules))))
from announcer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_daemon_lists_and_watches_without_importing_the_generated_api_classes(tmp_path: Path) -> None:
    """The real `announcer run` (Services, EndpointSlices and this Node listed, then watched, until ExaBGP goes):
    the client's ApiClient is imported, no generated API or model module is."""
    config = {
        "node_name": "node-a",
        "bgp": {"local_as": 64513, "router_id": "192.0.2.11", "peers": [{"address": "192.0.2.1", "peer_as": 64512}]},
        "node_state": {"withdraw_when_cordoned": True},
    }
    (tmp_path / "announcer.yaml").write_text(yaml.safe_dump(config))
    modules_file = tmp_path / "modules.json"
    with RecordingApi(nodes={"node-a": NODE}, hold_watches=True) as recording:
        (tmp_path / "kubeconfig").write_text(kubeconfig_text(recording.url, TOKEN))
        environment = {**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig")}
        environment.pop("NODE_NAME", None)
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                RUN_RECORDING_MODULES,
                str(modules_file),
                "run",
                "--config",
                str(tmp_path / "announcer.yaml"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=environment,
        )
        try:
            assert recording.wait_for_watches(3, timeout=60), recording.requests
        finally:
            assert process.stdin is not None
            process.stdin.close()  # ExaBGP gone: the announcer exits (normally, so the exit hook runs)
            assert process.wait(timeout=30) == 0
        requests = recording.take()
    listed = {request.path for request in requests if not request.is_watch}
    assert listed == {"/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices", "/api/v1/nodes"}
    assert all(request.headers["authorization"] == f"Bearer {TOKEN}" for request in requests)
    modules = set(json.loads(modules_file.read_text()))
    assert {"kubernetes.client.api_client", "kubernetes.client.rest", "announcer.daemon"} <= modules
    assert sorted(module for module in modules if GENERATED_MODULE.fullmatch(module)) == []
    assert "prometheus_client" not in modules  # metrics are off in this configuration
