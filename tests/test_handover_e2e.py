"""End to end against FRR, the real ExaBGP and the real control plane: the image's entrypoint stopping a node with
graceful restart on, handing its routes over to the next pod (kept at FRR, stale, then fresh) or withdrawing them."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lab.controlplane import ControlPlane
from lab.frr import FAMILIES
from lab.lab import REPOSITORY, Lab
from tests.kube_support import allocated_service, create
from tests.lab_support import BackgroundSampler, LabKeeper
from tests.test_e2e import ARRIVAL, BOTH, NODE_A, NODE_ADDRESS, SESSIONS, FrrReceived, host_prefix, wait_for_announced

pytestmark = [pytest.mark.lab, pytest.mark.kube]

HANDOVER_CONFIG = REPOSITORY / "lab" / "files" / "announcer-handover.yaml"
PRODUCT = "service-announcer"  # the namespace deploy/base/rbac.yaml's Role covers, and the DaemonSet's name
NAMESPACE = "e2e-handover"
KUBERNETES_SERVICE = "198.51.100.1"  # the real API server's own Service: every node announces it
NODE_A_PEERS = tuple(NODE_ADDRESS[family][NODE_A] for family in FAMILIES)


class RibWatch(BackgroundSampler):
    """Samples FRR's table in a thread: per sample, node-a's valid paths and their stale flags, and its sessions."""

    interval = 0.05

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab
        self.samples: list[tuple[int, int, tuple[str, ...]]] = []  # (valid, stale, session states)

    def sample(self) -> tuple[int, int, tuple[str, ...]]:
        frr = self.lab.frr()
        valid = stale = 0
        for family in FAMILIES:
            for paths in frr.vtysh_json(f"show bgp {family} unicast json").get("routes", {}).values():
                for path in paths:
                    if str(path.get("peerId", "")) in NODE_A_PEERS and path.get("valid"):
                        valid += 1
                        stale += bool(path.get("stale"))
        states = frr.session_states()
        return valid, stale, tuple(states.get(peer, "?") for peer in NODE_A_PEERS)

    def take(self) -> None:
        self.samples.append(self.sample())


def notifications_from_node_a(lab: Lab) -> int:
    neighbors = lab.frr().neighbors()
    return sum(int(neighbors[peer]["messageStats"]["notificationsRecv"]) for peer in NODE_A_PEERS)


def start_node_a(lab: Lab, pod: str) -> None:
    """node-a's ExaBGP through the image's entrypoint, as the DaemonSet's pod on node-a (downward API's values)."""
    lab.stop_exabgp(NODE_A)
    lab.start_entrypoint(NODE_A, environment={"POD_NAME": pod, "POD_NAMESPACE": PRODUCT})


@dataclass
class HandoverLab:
    """The lab, and the name of node-a's pod (one per test: a deleted pod may linger, being deleted, for a while)."""

    lab: Lab
    pod: str


@pytest.fixture
def handover_lab(lab_keeper: LabKeeper, request: pytest.FixtureRequest) -> Iterator[HandoverLab]:
    """The lab on the real kube-apiserver with graceful restart on every node; node-a's Node (Ready), the DaemonSet
    and node-a's pod made by hand (no controller runs there), a dual-stack Service; node-a's ExaBGP started through
    the entrypoint. Afterwards every object goes and node-a runs ExaBGP directly again."""
    lab = lab_keeper.get(config_path=HANDOVER_CONFIG, kube="real")
    pod = f"{PRODUCT}-{zlib.crc32(request.node.nodeid.encode()):08x}"
    plane: ControlPlane = lab.api
    plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
    made: list[str] = []
    try:
        create(plane, "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_A}})
        made.append(f"/api/v1/nodes/{NODE_A}")
        ready = {"type": "Ready", "status": "True", "reason": "Test", "lastHeartbeatTime": None}
        status, answer = plane.request("PATCH", f"/api/v1/nodes/{NODE_A}/status", {"status": {"conditions": [ready]}})
        assert status == 200, answer
        owner = create(plane, f"/apis/apps/v1/namespaces/{PRODUCT}/daemonsets", daemonset_object())
        made.append(f"/apis/apps/v1/namespaces/{PRODUCT}/daemonsets/{PRODUCT}")
        create(plane, f"/api/v1/namespaces/{PRODUCT}/pods", pod_object(owner, pod))
        made.append(f"/api/v1/namespaces/{PRODUCT}/pods/{pod}?gracePeriodSeconds=0")  # no kubelet to wait for
        start_node_a(lab, pod)
        lab.wait_established(SESSIONS)
        lab.frr().vtysh("configure terminal", "debug bgp updates in")  # FrrReceived reads bgpd's log
        yield HandoverLab(lab, pod)
    finally:
        for path in reversed(made):
            plane.request("DELETE", path)
        plane.kubectl("delete", "services", "--all", "-n", NAMESPACE, "--timeout=60s", check=False)
        lab.stop_exabgp(NODE_A)
        lab.start_exabgp(NODE_A)
        lab.wait_established(SESSIONS)
        wait_for_announced(lab, dict.fromkeys([KUBERNETES_SERVICE], BOTH))


def daemonset_object() -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": PRODUCT}
    container = {"name": "announcer", "image": "registry.example/service-announcer:0.1.0"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": PRODUCT, "namespace": PRODUCT},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def pod_object(owner: dict[str, Any], name: str) -> dict[str, Any]:
    """node-a's pod as the DaemonSet controller makes it: controlled by the DaemonSet, bound to node-a."""
    reference = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": PRODUCT, "uid": owner["metadata"]["uid"],
                 "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": PRODUCT, "ownerReferences": [reference],
                     "labels": owner["spec"]["selector"]["matchLabels"]},
        "spec": {"nodeName": NODE_A, "serviceAccountName": PRODUCT, "automountServiceAccountToken": False,
                 "containers": owner["spec"]["template"]["spec"]["containers"]},
    }  # fmt: skip


def dual_stack_service(lab: Lab) -> list[str]:
    """A RequireDualStack Service: every address FRR must hold from both nodes, the `kubernetes` Service's too."""
    obj = allocated_service("web", NAMESPACE, "RequireDualStack")
    addresses: list[str] = create(lab.api, f"/api/v1/namespaces/{NAMESPACE}/services", obj)["spec"]["clusterIPs"]
    every = [KUBERNETES_SERVICE, *addresses]
    wait_for_announced(lab, dict.fromkeys(every, BOTH))
    return every


def test_a_rollout_restart_hands_the_routes_over_and_frr_never_misses_one_nor_keeps_one_stale(
    handover_lab: HandoverLab,
) -> None:
    """SIGTERM to node-a's entrypoint while its DaemonSet and Node stay (a `kubectl rollout restart`): the announcer
    hands over (no withdraw), ExaBGP closes its sessions without a NOTIFICATION, FRR keeps every route of node-a,
    stale; the next ExaBGP and announcer announce them again and send End-of-RIB: fresh, none stale, none missing at
    any sample."""
    lab = handover_lab.lab
    every = dual_stack_service(lab)
    full = len(every)
    log = lab.node(NODE_A).exabgp_log
    notifications, received = notifications_from_node_a(lab), FrrReceived.from_now(lab)
    with RibWatch(lab) as watch:
        offset = log.stat().st_size
        lab.signal_exabgp(NODE_A)
        assert lab.wait_exabgp_exit(NODE_A, timeout=20.0), "the entrypoint did not exit"
        stopped = log.read_bytes()[offset:].decode(errors="replace")
        lab.wait_for(lambda _: watch.sample()[1] == full, timeout=10.0)  # FRR keeps every route of node-a, stale
        assert "Established" not in watch.sample()[2]
        start_node_a(lab, handover_lab.pod)
        lab.wait_established(SESSIONS)
        lab.wait_for(lambda _: watch.sample()[:2] == (full, 0), timeout=ARRIVAL)
        time.sleep(1.0)
    wait_for_announced(lab, dict.fromkeys(every, BOTH))
    assert "stopping: handing over to the DaemonSet's next pod: routes kept by the peers as stale for up to 60 s" in (
        stopped
    ), stopped
    assert min(valid for valid, _, _ in watch.samples) == full, "a route of node-a went missing at FRR"
    assert max(stale for _, stale, _ in watch.samples) == full, "FRR held node-a's routes as stale meanwhile"
    assert watch.samples[-1][:2] == (full, 0)
    assert notifications_from_node_a(lab) == notifications, "ExaBGP closed without a NOTIFICATION"
    withdrawn = [update for update in received.updates() if update[1] == "withdraw"]
    assert withdrawn == [], "nothing was withdrawn"
    print(f"hand-over: {len(watch.samples)} samples, {full} routes kept throughout")


def test_a_stop_whose_daemonset_is_gone_withdraws_before_the_sessions_close(handover_lab: HandoverLab) -> None:
    """The DaemonSet deleted (uninstalled), then SIGTERM to node-a's entrypoint: no next pod comes, so the announcer
    withdraws every route and FRR drops them on UPDATEs before ExaBGP closes the sessions: never stale."""
    lab = handover_lab.lab
    every = dual_stack_service(lab)
    plane: ControlPlane = lab.api
    status, answer = plane.request("DELETE", f"/apis/apps/v1/namespaces/{PRODUCT}/daemonsets/{PRODUCT}")
    assert status in (200, 202), answer
    log = lab.node(NODE_A).exabgp_log
    received = FrrReceived.from_now(lab)
    with RibWatch(lab) as watch:
        offset = log.stat().st_size
        lab.signal_exabgp(NODE_A)
        assert lab.wait_exabgp_exit(NODE_A, timeout=20.0), "the entrypoint did not exit"
        stopped = log.read_bytes()[offset:].decode(errors="replace")
        time.sleep(0.5)
    assert "withdrawing every route and exiting (the pod's DaemonSet is missing: no next pod comes)" in stopped
    assert watch.samples[-1][0] == 0, "node-a's routes are gone from FRR"
    assert max(stale for _, stale, _ in watch.samples) == 0, "withdrawn, never left stale"
    withdrawn = {(peer, prefix) for peer, action, prefix in received.updates() if action == "withdraw"}
    expected = {(NODE_ADDRESS["ipv6" if ":" in a else "ipv4"][NODE_A], host_prefix(a)) for a in every}
    assert withdrawn == expected, "every route withdrawn by UPDATE, before the session closed"
