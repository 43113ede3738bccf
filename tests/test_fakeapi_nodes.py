"""The stand-in API server serves Nodes as the real one does: cluster-scoped, fieldSelector, watch, bookmarks."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from kubernetes import client

from announcer.convert import ObjectKind, converter
from announcer.kube import Changed, KubeApi, Relisted, Resource, ResourceWatcher, list_pages, node_field_selector
from announcer.policy import NodeView
from lab.fakeapi import FakeApiServer
from lab.fakeapi.nodes import edited, node_object
from tests.test_kube import eventually


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=3600.0, history_size=4).start() as server:
        server.apply(node_object("node-a"))
        server.apply(node_object("node-b"))
        yield server


def at(watcher: ResourceWatcher[Any], version: str) -> bool:
    return watcher.resource_version == version


def get(api: FakeApiServer, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(api.url + path, timeout=5) as response:  # noqa: S310  (the local stand-in)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_nodes_are_cluster_scoped_have_no_namespace_and_a_namespaced_path_is_not_found(api: FakeApiServer) -> None:
    status, body = get(api, "/api/v1/nodes/node-a")
    assert status == 200
    assert body["kind"] == "Node"
    assert "namespace" not in body["metadata"]
    assert get(api, "/api/v1/namespaces/default/nodes")[0] == 404
    assert get(api, "/api/v1/nodes/node-z")[0] == 404


def test_a_field_selector_on_metadata_name_lists_only_that_node(api: FakeApiServer) -> None:
    with client.ApiClient(client.Configuration(host=api.url)) as api_client:
        pages = list(list_pages(KubeApi(api_client), Resource.NODES, field_selector=node_field_selector("node-b")))
        assert [item["metadata"]["name"] for page in pages for item in page.items] == ["node-b"]  # type: ignore[index]
        assert KubeApi(api_client).read_node("node-z", 5.0) is None
        read = KubeApi(api_client).read_node("node-a", 5.0)
        assert isinstance(read, dict)
        assert read["metadata"]["name"] == "node-a"


def test_the_watcher_sees_only_its_node_change_and_resumes_from_a_bookmark(api: FakeApiServer) -> None:
    events: list[Any] = []
    stop = threading.Event()
    with client.ApiClient(client.Configuration(host=api.url)) as api_client:
        watcher = ResourceWatcher(
            Resource.NODES,
            api_client,
            events.append,
            stop,
            convert=converter(ObjectKind.NODE, "bgp.announcer.io/"),
            field_selector=node_field_selector("node-a"),
        )
        watcher.start()
        try:
            eventually(lambda: any(isinstance(event, Relisted) for event in events), "the first list")
            listed = next(event for event in events if isinstance(event, Relisted))
            assert [item.key for item in listed.objects] == [("", "node-a")]
            api.apply(edited(node_object("node-b"), unschedulable=True))
            api.apply(edited(node_object("node-a"), unschedulable=True))
            eventually(lambda: any(isinstance(event, Changed) for event in events), "node-a's change")
            changes = [event for event in events if isinstance(event, Changed)]
            assert [(event.kind, event.obj.key) for event in changes] == [("MODIFIED", ("", "node-a"))]
            view = changes[0].obj.view
            assert isinstance(view, NodeView)
            assert view.unschedulable
            for index in range(6):  # writes to another node only: bookmarks carry the resourceVersion on
                api.apply(edited(node_object("node-b"), labels={"n": str(index)}))
                api.send_bookmarks()
                eventually(partial(at, watcher, str(api.resource_version())), "the bookmark")
            api.drop_watches()
            api.delete("Node", "", "node-a")
            eventually(lambda: sum(isinstance(event, Changed) for event in events) == 2, "the deletion")
            assert events[-1].kind == "DELETED"
            assert api.stats()["lists_served"]["nodes"] == 1, "resumed from the bookmark, no re-list"
        finally:
            stop.set()
            watcher.close()
            watcher.join(5)
