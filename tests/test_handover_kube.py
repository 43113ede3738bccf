"""The stop's lookup against the real kube-apiserver: this pod's DaemonSet and Node as the announcer's account reads
them (no controller runs there: the DaemonSet, its pod and the Node are made by hand), and `announcer run` at SIGTERM."""

from __future__ import annotations

import copy
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from announcer.handover import Found, Presence, StopAction, Unknown, decide_stop
from announcer.handover_lookup import ENV_POD_NAME, ENV_POD_NAMESPACE, WatchedNode, look_up
from announcer.kube import KubeApi, make_api_client
from announcer.policy import NodeRule, NodeView
from lab.controlplane import ADMIN, ANNOUNCER, NOBODY, ControlPlane, Identity
from tests.exabgp_double import CONFIG, V4_PEERS, ExaBgpDouble
from tests.kube_support import allocated_service, create

pytestmark = pytest.mark.kube

NAMESPACE = "service-announcer"  # where deploy/base/rbac.yaml's Role lets the announcer's account read
HOLD = "example.com/hold"  # a finalizer of the tests' own: the object stays, being deleted, until it is taken off
GRACEFUL_RESTART = 120


@dataclass
class Scene:
    """A Node, a DaemonSet in the product's namespace and a pod it controls on that Node, named for one test."""

    plane: ControlPlane
    node: str
    daemonset: str
    pod: str
    tmp: Path

    @property
    def environ(self) -> dict[str, str]:
        return {ENV_POD_NAME: self.pod, ENV_POD_NAMESPACE: NAMESPACE}

    def api(self, identity: Identity = ANNOUNCER) -> KubeApi:
        path = self.tmp / f"kubeconfig-{identity.name.replace(':', '-')}"
        path.write_text(self.plane.kubeconfig_text(identity), encoding="utf-8")
        return KubeApi(make_api_client(path))

    def look_up(self, identity: Identity = ANNOUNCER, **overrides: Any) -> Found | Unknown:
        arguments: dict[str, Any] = {"watched": None, "limit": 2.0, **overrides}
        environ = arguments.pop("environ", self.environ)
        return look_up(self.api(identity), environ, self.node, NodeRule(), **arguments)

    def delete(self, path: str) -> None:
        status, answer = self.plane.request("DELETE", path)
        assert status in (200, 202), f"DELETE {path}: {status} {answer}"

    def release(self, path: str) -> None:
        """Take the tests' finalizer off (the object then goes, if it was being deleted)."""
        self.plane.request("PATCH", path, {"metadata": {"finalizers": None}})

    @property
    def daemonset_path(self) -> str:
        return f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{self.daemonset}"

    @property
    def node_path(self) -> str:
        return f"/api/v1/nodes/{self.node}"


def daemonset_object(name: str, finalizers: list[str]) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": NAMESPACE, "finalizers": finalizers},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "announcer", "image": "registry.example/service-announcer:0.1.0"}]},
            },
        },
    }


def pod_object(name: str, node: str, owner: dict[str, Any] | None) -> dict[str, Any]:
    """A pod as the DaemonSet controller would make it (owner: the DaemonSet, or None for a bare pod)."""
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        metadata["labels"] = owner["spec"]["selector"]["matchLabels"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "serviceAccountName": "service-announcer",
            "automountServiceAccountToken": False,
            "containers": [{"name": "announcer", "image": "registry.example/service-announcer:0.1.0"}],
        },
    }


def make_scene(
    plane: ControlPlane,
    tmp: Path,
    tag: str,
    *,
    node_finalizers: list[str] | None = None,
    ready: str = "True",
    owned: bool = True,
) -> Scene:
    suffix = f"{zlib.crc32(tag.encode()):08x}"
    scene = Scene(plane, f"node-{suffix}", f"announcer-{suffix}", f"announcer-{suffix}-x7k2p", tmp)
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": scene.node, "finalizers": node_finalizers or []}}
    create(plane, "/api/v1/nodes", node)
    condition = {"type": "Ready", "status": ready, "reason": "Test", "lastHeartbeatTime": None}
    status, answer = plane.request("PATCH", f"{scene.node_path}/status", {"status": {"conditions": [condition]}})
    assert status == 200, answer
    owner = create(plane, f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets", daemonset_object(scene.daemonset, [HOLD]))
    create(plane, f"/api/v1/namespaces/{NAMESPACE}/pods", pod_object(scene.pod, scene.node, owner if owned else None))
    return scene


@pytest.fixture
def scenes(control_plane: ControlPlane) -> Iterator[list[Scene]]:
    """The scenes a test makes, deleted afterwards (finalizers taken off first)."""
    made: list[Scene] = []
    yield made
    for scene in made:
        for path in (scene.daemonset_path, scene.node_path):
            scene.release(path)
            scene.plane.request("DELETE", path)
        scene.plane.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{scene.pod}?gracePeriodSeconds=0")


@pytest.fixture
def scene(control_plane: ControlPlane, scenes: list[Scene], tmp_path: Path, request: pytest.FixtureRequest) -> Scene:
    made = make_scene(control_plane, tmp_path, request.node.nodeid)
    scenes.append(made)
    return made


# --- the lookup --------------------------------------------------------------------------------------------------
def test_a_pod_of_a_present_daemonset_on_a_ready_node_is_handed_over(scene: Scene) -> None:
    facts = scene.look_up()
    assert isinstance(facts, Found), facts
    assert facts.daemonset is Presence.PRESENT
    assert facts.node is not None
    assert (facts.node.name, facts.node.ready, facts.node.deleting) == (scene.node, "True", False)
    assert decide_stop(GRACEFUL_RESTART, "auto", facts).action is StopAction.HAND_OVER


def test_a_deleted_daemonset_is_missing_and_the_stop_withdraws(scene: Scene) -> None:
    """`kubectl delete daemonset` (or uninstalling): the DaemonSet is gone before its pods are stopped."""
    scene.release(scene.daemonset_path)
    scene.delete(scene.daemonset_path)
    facts = scene.look_up()
    assert facts == Found(Presence.MISSING, None, NodeRule())
    decision = decide_stop(GRACEFUL_RESTART, "auto", facts)
    assert (decision.action, decision.reason) == (
        StopAction.WITHDRAW,
        "the pod's DaemonSet is missing: no next pod comes",
    )


def test_a_daemonset_being_deleted_withdraws(scene: Scene) -> None:
    """Foreground deletion (or a finalizer) keeps the DaemonSet, with a deletionTimestamp, while its pods stop."""
    scene.delete(scene.daemonset_path)
    facts = scene.look_up()
    assert isinstance(facts, Found) and facts.daemonset is Presence.DELETING, facts
    assert decide_stop(GRACEFUL_RESTART, "auto", facts).action is StopAction.WITHDRAW


def test_a_node_being_deleted_withdraws(control_plane: ControlPlane, scenes: list[Scene], tmp_path: Path) -> None:
    scene = make_scene(control_plane, tmp_path, "node being deleted", node_finalizers=[HOLD])
    scenes.append(scene)
    scene.delete(scene.node_path)
    facts = scene.look_up()
    assert isinstance(facts, Found) and facts.node is not None and facts.node.deleting, facts
    assert "is being deleted" in decide_stop(GRACEFUL_RESTART, "auto", facts).reason


def test_a_missing_node_withdraws(scene: Scene) -> None:
    scene.delete(scene.node_path)
    facts = scene.look_up()
    assert facts == Found(Presence.PRESENT, None, NodeRule())
    assert decide_stop(GRACEFUL_RESTART, "auto", facts).action is StopAction.WITHDRAW


def test_a_node_that_is_not_ready_withdraws(control_plane: ControlPlane, scenes: list[Scene], tmp_path: Path) -> None:
    scene = make_scene(control_plane, tmp_path, "node not ready", ready="False")
    scenes.append(scene)
    decision = decide_stop(GRACEFUL_RESTART, "auto", scene.look_up())
    assert (decision.action, decision.reason) == (
        StopAction.WITHDRAW,
        f"Node {scene.node} is not Ready (False): a next pod may not start",
    )


def test_the_node_watch_answers_for_the_node_without_a_get(scene: Scene) -> None:
    """With node-state rules on, the Node the watch last saw is used as it is (here: not known, so withdraw)."""
    watched = NodeView(scene.node, {}, {}, ready="True")
    assert scene.look_up(watched=WatchedNode(watched)) == Found(Presence.PRESENT, watched, NodeRule())
    assert scene.look_up(watched=WatchedNode(None)) == Found(Presence.PRESENT, None, NodeRule())


def test_a_pod_no_daemonset_controls_cannot_tell(
    control_plane: ControlPlane, scenes: list[Scene], tmp_path: Path
) -> None:
    scene = make_scene(control_plane, tmp_path, "bare pod", owned=False)
    scenes.append(scene)
    assert scene.look_up() == Unknown("the pod has no controller (metadata.ownerReferences)")


@pytest.mark.parametrize(
    ("environ", "why"),
    [
        ({}, "POD_NAME or POD_NAMESPACE is not set (the downward API gives them)"),
        ({ENV_POD_NAME: "x"}, "POD_NAME or POD_NAMESPACE is not set"),
        ({ENV_POD_NAME: "../nodes/x", ENV_POD_NAMESPACE: NAMESPACE}, "is not a Kubernetes name"),
        ({ENV_POD_NAME: "gone-pod", ENV_POD_NAMESPACE: NAMESPACE}, f"Pod {NAMESPACE}/gone-pod is not found"),
    ],
    ids=["nothing set", "no namespace", "not a name", "no such pod"],
)
def test_without_its_own_pod_it_cannot_tell(scene: Scene, environ: dict[str, str], why: str) -> None:
    facts = scene.look_up(environ=environ)
    assert isinstance(facts, Unknown) and why in facts.why, facts


def test_an_account_without_the_role_cannot_tell_and_the_reason_names_the_role(scene: Scene) -> None:
    facts = scene.look_up(identity=NOBODY)
    assert isinstance(facts, Unknown), facts
    assert "API server answered 403" in facts.why
    assert "see deploy/base/rbac.yaml's Role" in facts.why


def test_a_pod_outside_the_roles_namespace_is_refused(scene: Scene) -> None:
    facts = scene.look_up(environ={ENV_POD_NAME: scene.pod, ENV_POD_NAMESPACE: "default"})
    assert isinstance(facts, Unknown) and "403" in facts.why, facts


def test_an_api_server_that_never_answers_is_given_up_within_the_limit(scene: Scene, tmp_path: Path) -> None:
    """A connection accepted and never answered: the lookup ends at its limit, whatever the requests do."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        text = scene.plane.kubeconfig_text(ANNOUNCER).replace(scene.plane.url, f"https://{listener.getsockname()[0]}:"
                                                                              f"{listener.getsockname()[1]}")  # fmt: skip
        path = tmp_path / "kubeconfig-silent"
        path.write_text(text, encoding="utf-8")
        started = time.monotonic()
        facts = look_up(KubeApi(make_api_client(path)), scene.environ, scene.node, NodeRule(), watched=None, limit=1.0)
        took = time.monotonic() - started
    finally:
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        listener.close()
    assert facts == Unknown("the API server did not answer within 1.0 s")
    assert took < 1.5


# --- `announcer run` at SIGTERM ----------------------------------------------------------------------------------
HAND_OVER_CASES = {
    "auto, a next pod comes: hand over": ("auto", False, "stopping: handing over to the DaemonSet's next pod: routes kept "
                                          f"by the peers as stale for up to {GRACEFUL_RESTART} s (graceful restart)"),
    "auto, the DaemonSet gone: withdraw": ("auto", True, "withdrawing every route and exiting (the pod's DaemonSet is "
                                           "missing: no next pod comes)"),
    "withdraw: withdraw": ("withdraw", False, "withdrawing every route and exiting (speaker.stop is withdraw)"),
}  # fmt: skip


@pytest.mark.parametrize("case", HAND_OVER_CASES.values(), ids=list(HAND_OVER_CASES))
def test_sigterm_hands_over_or_withdraws_as_the_lookup_decides(
    scene: Scene, namespace: str, tmp_path: Path, case: tuple[str, bool, str]
) -> None:
    """The announcer as ExaBGP's API process (the ExaBGP double), with graceful restart: handed over, it writes no
    withdraw and exits 0; withdrawing, it withdraws every route first."""
    setting, daemonset_deleted, logged = case
    handed_over = "handing over" in logged
    document = copy.deepcopy(CONFIG)
    document["node_name"] = scene.node
    document["bgp"]["graceful_restart"] = GRACEFUL_RESTART
    document["speaker"] = {**document["speaker"], "stop": setting}
    document["announce"] = {**document["announce"], "service_label_selector": f"announcer-test={namespace}"}
    create(
        scene.plane,
        f"/api/v1/namespaces/{namespace}/services",
        allocated_service("web", namespace, "SingleStack", ["IPv4"], labels={"announcer-test": namespace}),
    )
    exabgp = ExaBgpDouble(
        tmp_path,
        scene.plane.url,
        document,
        kubeconfig=scene.plane.kubeconfig_text(ANNOUNCER),
        environment=scene.environ,
    ).start()
    try:
        exabgp.wait_for(lambda: bool(exabgp.prefixes(V4_PEERS[0])), 30, "the Service's route")
        exabgp.wait_for(lambda: sum(" announce eor " in line for line in exabgp.lines) == 2, 10, "End-of-RIB")
        if daemonset_deleted:
            scene.release(scene.daemonset_path)
            scene.delete(scene.daemonset_path)
        assert exabgp.signal() == 0
    finally:
        exabgp.stop()
    withdraws = [line for line in exabgp.lines if " withdraw " in line]
    assert (withdraws == []) is handed_over, withdraws
    assert logged in exabgp.stderr()


def test_the_announcers_account_reads_its_pod_but_not_others_secrets(scene: Scene) -> None:
    """The Role is as narrow as it says: the pod yes, a Secret no (a 403, not a 404)."""
    assert scene.api().read_pod(NAMESPACE, scene.pod, 5.0) is not None
    status, _ = scene.plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/anything", identity=ANNOUNCER)
    assert status == 403
    status, _ = scene.plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{scene.pod}", identity=ADMIN)
    assert status == 200
