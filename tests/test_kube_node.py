"""The product installed as users install it (kubectl apply -k, helm) onto a real node (kubelet, containerd, kube-proxy),
with real Pods and the real EndpointSlice controller; FRR's RIB checked per neighbour and family through the lifecycle."""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import netns
from lab.calico import CalicoLab
from lab.controlplane import ADMIN, ControlPlane
from lab.frr import FAMILIES, Family
from lab.lab import TEST_PREFIX, Lab
from lab.node_images import WEB_IMAGE
from tests.kube_support import allocated_service, create, wait_until
from tests.lab_support import LabKeeper, require_lab_prerequisites
from tests.test_helm import CHART, helm

pytestmark = [pytest.mark.lab, pytest.mark.kube]

REPOSITORY = Path(__file__).resolve().parents[1]
BASE = REPOSITORY / "deploy" / "base"
PRODUCT = "service-announcer"
NODE = "node-a"
PEER: dict[Family, str] = {"ipv4": "192.0.2.11", "ipv6": "2001:db8::11"}
KUBERNETES_SERVICE = "198.51.100.1"
WORKLOAD = "web"
# The workload's Services: every ipFamilyPolicy (and family order), each with externalTrafficPolicy Local and Cluster.
POLICIES: tuple[tuple[str, str, list[str]], ...] = (
    ("v4", "SingleStack", ["IPv4"]),
    ("v6", "SingleStack", ["IPv6"]),
    ("prefer", "PreferDualStack", ["IPv4", "IPv6"]),
    ("require", "RequireDualStack", ["IPv6", "IPv4"]),
)
INSTALL_TIMEOUT = 120.0
# node-a's IPAM blocks in calico-node's recorded BIRD configuration (BIRD announces them; the lab's pods take their
# addresses from lab/node.py's bridge range instead, so BIRD's blackhole for the block never shadows them).
CALICO_POD_BLOCK: dict[Family, str] = {"ipv4": "10.244.0.0/26", "ipv6": "fd00:10:244::/122"}


def family_of(address: str) -> Family:
    return "ipv6" if ":" in address else "ipv4"


def host_prefix(address: str) -> str:
    return f"{address}/{128 if ':' in address else 32}"


@pytest.fixture(scope="module")
def node_lab(lab_keeper: LabKeeper) -> Lab:
    """FRR and node-a as a real Kubernetes node (lab/node.py) on the real control plane."""
    return lab_keeper.get(kube="real", kube_nodes=True)


def kubectl(lab: Lab, *arguments: str, check: bool = True) -> str:
    plane: ControlPlane = lab.api
    return plane.kubectl(*arguments, check=check).stdout


def base_config() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((BASE / "announcer.yaml").read_text(encoding="utf-8"))
    return document


def write_overlay(folder: Path, config: dict[str, Any]) -> Path:
    """A kustomization on deploy/base whose ConfigMap holds config (the way a user changes the configuration)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "announcer.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, folder)],
        "configMapGenerator": [
            {"name": PRODUCT, "namespace": PRODUCT, "behavior": "replace", "files": ["announcer.yaml"]}
        ],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False), encoding="utf-8")
    return folder


def product_pods(lab: Lab) -> list[dict[str, Any]]:
    document = json.loads(kubectl(lab, "get", "pods", "-n", PRODUCT, "-o", "json"))
    return [pod for pod in document["items"] if pod["metadata"].get("deletionTimestamp") is None]


def ready_pod(lab: Lab, other_than: str | None = None) -> dict[str, Any] | None:
    """The product's pod on the node once Ready (not other_than, the one being replaced)."""
    for pod in product_pods(lab):
        conditions = pod.get("status", {}).get("conditions", [])
        if pod["metadata"]["uid"] != other_than and any(
            c["type"] == "Ready" and c["status"] == "True" for c in conditions
        ):
            return pod
    return None


def rib(lab: Lab, family: Family) -> dict[str, set[str]]:
    """FRR's routes of one family per neighbour, stale ones included (prefixes only)."""
    table = lab.frr().bgp_table(family)
    found: dict[str, set[str]] = {}
    for prefix, paths in table.items():
        for path in paths:
            if path.valid:
                found.setdefault(path.peer, set()).add(prefix)
    return found


def stale_prefixes(lab: Lab, family: Family) -> set[str]:
    return {prefix for prefix, paths in lab.frr().bgp_table(family).items() if any(p.stale for p in paths)}


def expected_rib(addresses: set[str]) -> dict[Family, dict[str, set[str]]]:
    """Each address on the node's session of its own family, nothing on the other."""
    wanted: dict[Family, dict[str, set[str]]] = {family: {} for family in FAMILIES}
    for address in addresses:
        family = family_of(address)
        wanted[family].setdefault(PEER[family], set()).add(host_prefix(address))
    return wanted


def wait_for_rib(lab: Lab, addresses: set[str], timeout: float = 60.0) -> None:
    wanted = expected_rib(addresses)

    def matches() -> bool:
        return all(rib(lab, family) == wanted[family] for family in FAMILIES)

    if not poll(matches, timeout):
        got = {family: rib(lab, family) for family in FAMILIES}
        pytest.fail(f"FRR's RIB per neighbour: expected {wanted}, got {got}", pytrace=False)


def poll(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether predicate holds within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


class Installed:
    """The product on the node from a kustomization (deploy/base with a configuration), removed at the end."""

    def __init__(self, lab: Lab, folder: Path) -> None:
        self.lab = lab
        self.folder = folder

    def apply(self, config: dict[str, Any]) -> dict[str, Any]:
        """kubectl apply -k with this configuration; returns the Ready pod (the new one when the pod rolls)."""
        before = ready_pod(self.lab)
        write_overlay(self.folder, config)
        kubectl(self.lab, "apply", "-k", str(self.folder))
        previous = None if before is None else before["metadata"]["uid"]
        pod = wait_until(lambda: ready_pod(self.lab, previous), INSTALL_TIMEOUT, "the product's pod Ready")
        assert isinstance(pod, dict)
        return pod

    def remove(self) -> None:
        """The DaemonSet goes and its pods stop; the namespace, the account and the ConfigMaps stay for the next
        test (a namespace's deletion waits for the namespace controller)."""
        kubectl(self.lab, "delete", "daemonset", PRODUCT, "-n", PRODUCT, "--ignore-not-found", "--wait=true")
        wait_until(lambda: not product_pods(self.lab), 90, "the product's pods gone")


@pytest.fixture
def installed(node_lab: Lab, tmp_path: Path) -> Iterator[Installed]:
    product = Installed(node_lab, tmp_path / "overlay")
    try:
        yield product
    finally:
        product.remove()


@pytest.fixture
def workload(node_lab: Lab) -> Iterator[dict[str, set[str]]]:
    """The test web server (one replica, readiness on /healthz) behind LoadBalancer Services of every
    ipFamilyPolicy, each with externalTrafficPolicy Local and Cluster, their ingress addresses set through the status
    subresource (one per family). Yields every address, the Local Services' and the Cluster ones'."""
    plane: ControlPlane = node_lab.api
    namespace = "workload"
    plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    labels = {"app": WORKLOAD}
    probe = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1}
    deployment: dict[str, object] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": WORKLOAD, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "web", "image": WEB_IMAGE, "imagePullPolicy": "Never",
                                    "ports": [{"containerPort": 8080}], "readinessProbe": probe}],
                },
            },
        },
    }  # fmt: skip
    plane.apply([deployment])
    addresses: dict[str, set[str]] = {"local": set(), "cluster": set()}
    index = 130
    for traffic in ("Local", "Cluster"):
        for suffix, policy, families in POLICIES:
            name = f"{traffic.lower()}-{suffix}"
            body = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"type": "LoadBalancer", "ipFamilyPolicy": policy, "ipFamilies": families,
                         "externalTrafficPolicy": traffic, "allocateLoadBalancerNodePorts": False,
                         "selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
            }  # fmt: skip
            created = create(plane, f"/api/v1/namespaces/{namespace}/services", body)
            ingress = [f"198.51.100.{index}" if family == "IPv4" else f"2001:db8:1b::{index}" for family in
                       created["spec"]["ipFamilies"]]  # fmt: skip
            index += 1
            status = {"status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}}
            answer, _ = plane.request("PATCH", f"/api/v1/namespaces/{namespace}/services/{name}/status", status)
            assert answer == 200
            addresses[traffic.lower()] |= {*created["spec"]["clusterIPs"], *ingress}
    try:
        yield addresses
    finally:
        kubectl(node_lab, "delete", "deployment,services", "--all", "-n", namespace, "--wait=true", "--timeout=90s")
        wait_until(lambda: not json.loads(kubectl(node_lab, "get", "pods", "-n", namespace, "-o", "json"))["items"],
                   90, "the workload's pods gone")  # fmt: skip


def web_pod(lab: Lab) -> dict[str, Any]:
    document = json.loads(kubectl(lab, "get", "pods", "-n", "workload", "-l", f"app={WORKLOAD}", "-o", "json"))
    pods = [pod for pod in document["items"] if pod["metadata"].get("deletionTimestamp") is None]
    assert len(pods) == 1, [pod["metadata"]["name"] for pod in pods]
    pod: dict[str, Any] = pods[0]
    return pod


def set_readiness(lab: Lab, pod: dict[str, Any], ready: bool) -> None:
    """POST /ready or /unready to the web pod, from the node (the pod network is the node's cni0 bridge)."""
    address = pod["status"]["podIP"]
    path = "ready" if ready else "unready"
    code = (
        "import urllib.request, sys; "
        f"urllib.request.urlopen(urllib.request.Request('http://{address}:8080/{path}', method='POST'), timeout=5)"
    )
    netns.run(["python3", "-c", code], netns=lab.node(NODE).namespace)


def test_deploy_base_runs_on_the_node_and_frr_learns_each_service_address_on_its_own_family(
    node_lab: Lab, installed: Installed, workload: dict[str, set[str]]
) -> None:
    """kubectl apply -k on deploy/base: the DaemonSet's pod (hostNetwork) peers with FRR from the node's addresses,
    reaches the API server through the `kubernetes` Service (kube-proxy), and every address of the Services backed
    by a real Pod is on the session of its family, exactly."""
    pod = installed.apply(base_config())
    assert pod["spec"]["nodeName"] == NODE and pod["status"]["podIP"] == PEER["ipv4"]
    wanted = {KUBERNETES_SERVICE, *workload["local"], *workload["cluster"]}
    wait_for_rib(node_lab, wanted, timeout=90)


def test_a_pod_turning_unready_withdraws_the_local_service_and_ready_again_restores_it(
    node_lab: Lab, installed: Installed, workload: dict[str, set[str]]
) -> None:
    """The readiness probe fails: the EndpointSlice controller marks the endpoint not ready in each family's slice,
    and the node withdraws the Local Services' addresses, each on its family's session (cluster IPs follow
    externalTrafficPolicy in deploy/base's configuration); the Cluster Services' stay. The probe passes again: they
    come back."""
    installed.apply(base_config())
    everything = {KUBERNETES_SERVICE, *workload["local"], *workload["cluster"]}
    wait_for_rib(node_lab, everything, timeout=90)
    pod = web_pod(node_lab)
    set_readiness(node_lab, pod, ready=False)
    wait_for_rib(node_lab, {KUBERNETES_SERVICE, *workload["cluster"]}, timeout=30)
    set_readiness(node_lab, pod, ready=True)
    wait_for_rib(node_lab, everything, timeout=30)


def test_drain_withdraws_every_route_with_the_node_state_rule_and_uncordon_brings_them_back(
    node_lab: Lab, installed: Installed, workload: dict[str, set[str]]
) -> None:
    """kubectl drain (cordon, then the Deployment's pod evicted; the DaemonSet's stays) with
    node_state.withdraw_when_cordoned: FRR keeps the sessions and holds nothing from the node; uncordon: back."""
    config = base_config()
    config["node_state"] = {"withdraw_when_cordoned": True}
    installed.apply(config)
    everything = {KUBERNETES_SERVICE, *workload["local"], *workload["cluster"]}
    wait_for_rib(node_lab, everything, timeout=90)
    kubectl(node_lab, "drain", NODE, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s")
    try:
        wait_for_rib(node_lab, set(), timeout=30)
        states = node_lab.frr().session_states()
        assert all(states[PEER[family]] == "Established" for family in FAMILIES), states
        assert ready_pod(node_lab) is not None, "drain leaves the DaemonSet's pod"
    finally:
        kubectl(node_lab, "uncordon", NODE)
    wait_for_rib(node_lab, everything, timeout=60)


def community_of(lab: Lab, address: str) -> str:
    family = family_of(address)
    document = lab.frr().vtysh_json(f"show bgp {family} unicast {host_prefix(address)} json")
    communities = {path.get("community", {}).get("string", "") for path in document.get("paths", [])}
    return " ".join(sorted(communities))


def test_a_changed_configmap_rolls_the_pod_and_the_new_setting_takes_effect(
    node_lab: Lab, installed: Installed
) -> None:
    """The configuration changed and applied again with kubectl apply -k: a new ConfigMap name, a new pod, and FRR
    sees the new default community on every route."""
    config = base_config()
    first = installed.apply(config)
    wait_for_rib(node_lab, {KUBERNETES_SERVICE}, timeout=90)
    assert community_of(node_lab, KUBERNETES_SERVICE) == "64513:100"
    changed = copy.deepcopy(config)
    changed["attributes"]["default"]["communities"] = ["64513:200"]
    second = installed.apply(changed)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    volumes = {v["name"]: v for v in second["spec"]["volumes"]}
    assert (
        volumes["config"]["configMap"]["name"]
        != {v["name"]: v for v in first["spec"]["volumes"]}["config"]["configMap"]["name"]
    )
    wait_until(lambda: community_of(node_lab, KUBERNETES_SERVICE) == "64513:200", 60, "FRR sees 64513:200")


def session_samples(lab: Lab, seconds: float) -> list[dict[str, tuple[str, int]]]:
    """FRR's view of the node's sessions, sampled as fast as vtysh answers: per peer, (state, prefixes received)."""
    samples: list[dict[str, tuple[str, int]]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        neighbors = lab.frr().neighbors()
        sample: dict[str, tuple[str, int]] = {}
        for family in FAMILIES:
            info = neighbors.get(PEER[family], {})
            counts = info.get("addressFamilyInfo", {}).get(f"{family}Unicast", {})
            sample[PEER[family]] = (str(info.get("bgpState", "?")), int(counts.get("acceptedPrefixCounter", 0)))
        samples.append(sample)
        if all(state != "Established" for state, _ in sample.values()):
            break
    return samples


def test_deleting_the_pod_withdraws_its_routes_before_the_sessions_close(node_lab: Lab, installed: Installed) -> None:
    """Without graceful restart, the pod's stop withdraws first: FRR sees both sessions Established with nothing
    received before they close. The DaemonSet's next pod then announces again."""
    first = installed.apply(base_config())
    wait_for_rib(node_lab, {KUBERNETES_SERVICE}, timeout=90)
    kubectl(node_lab, "delete", "pod", "-n", PRODUCT, first["metadata"]["name"], "--wait=false")
    samples = session_samples(node_lab, 40)
    closed = next(i for i, s in enumerate(samples) if any(state != "Established" for state, _ in s.values()))
    assert any(all(s == ("Established", 0) for s in sample.values()) for sample in samples[:closed]), samples
    wait_until(lambda: ready_pod(node_lab, first["metadata"]["uid"]), INSTALL_TIMEOUT, "the next pod Ready")
    wait_for_rib(node_lab, {KUBERNETES_SERVICE}, timeout=60)


def test_rollout_restart_with_graceful_restart_keeps_every_route_at_frr_and_leaves_none_stale(
    node_lab: Lab, installed: Installed, workload: dict[str, set[str]]
) -> None:
    """bgp.graceful_restart on, kubectl rollout restart of the DaemonSet: at no sample of FRR's RIB during the
    rollout is a route missing (stale ones count as held), and once the new pod has synced none is stale."""
    config = base_config()
    config["bgp"]["graceful_restart"] = 120
    first = installed.apply(config)
    everything = {KUBERNETES_SERVICE, *workload["local"], *workload["cluster"]}
    wanted = expected_rib(everything)
    wait_for_rib(node_lab, everything, timeout=90)
    kubectl(node_lab, "rollout", "restart", "daemonset", PRODUCT, "-n", PRODUCT)
    missing: list[str] = []
    samples = stale_samples = 0
    started = time.monotonic()
    deadline = started + INSTALL_TIMEOUT
    while time.monotonic() < deadline:
        for family in FAMILIES:
            got = rib(node_lab, family)
            lost = wanted[family].get(PEER[family], set()) - got.get(PEER[family], set())
            missing += [f"{prefix} at sample {samples}" for prefix in sorted(lost)]
        samples += 1
        stale = any(stale_prefixes(node_lab, family) for family in FAMILIES)
        stale_samples += stale
        if ready_pod(node_lab, first["metadata"]["uid"]) and not stale:
            break
    print(f"rollout: {samples} samples of FRR's RIB in {time.monotonic() - started:.1f} s, {stale_samples} with "
          f"stale routes", file=sys.stderr)  # fmt: skip
    assert samples > 5, "FRR was sampled through the rollout"
    assert not missing, f"routes missing at FRR during the rollout: {missing[:10]}"
    assert ready_pod(node_lab, first["metadata"]["uid"]) is not None, "the rollout finished"
    assert not any(stale_prefixes(node_lab, family) for family in FAMILIES)
    wait_for_rib(node_lab, everything, timeout=10)


def test_the_helm_chart_installs_the_same_product_on_the_node(node_lab: Lab, tmp_path: Path) -> None:
    """helm install (namespace created and labelled first, as docs/operations.md says): the pod runs and FRR learns
    the `kubernetes` Service on each family; helm uninstall: the pod stops and withdraws."""
    plane: ControlPlane = node_lab.api
    kubeconfig = str(plane.kubeconfig(ADMIN))
    namespace, release = "announcer-helm", "edge"
    plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace,
                  "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}])  # fmt: skip
    installed = helm("install", release, str(CHART), "-n", namespace, "--kubeconfig", kubeconfig, "--wait",
                     "--timeout", "120s")  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    try:
        wait_for_rib(node_lab, {KUBERNETES_SERVICE}, timeout=90)
    finally:
        removed = helm("uninstall", release, "-n", namespace, "--kubeconfig", kubeconfig, "--wait", "--timeout", "90s")
        assert removed.returncode == 0, removed.stderr
    wait_for_rib(node_lab, set(), timeout=60)


def test_beside_calicos_bird_the_calico_overlay_reaches_frr_through_bird_and_bird6(
    lab_keeper: LabKeeper, tmp_path: Path
) -> None:
    """The Calico topology on the real node: BIRD and BIRD6 with calico-node v3.29's recorded configuration peer with
    FRR; kubectl apply -k deploy/overlays/calico; the pod's ExaBGP (passive on loopback) gets BIRD's sessions and
    FRR learns each Service address from the node's BIRD of its family, next hop the node, beside the pod block."""
    lab_keeper.close()  # the lab addresses (and the machine-wide lock) are one lab's at a time
    require_lab_prerequisites()
    lab = CalicoLab(TEST_PREFIX, nodes=(NODE,), kube="real", kube_nodes=True)
    lab.up(timeout=60)
    try:
        lab.install_product(REPOSITORY / "deploy" / "overlays" / "calico")
        plane: ControlPlane = lab.api
        plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "calico-mode"}}])
        created = create(plane, "/api/v1/namespaces/calico-mode/services",
                         allocated_service("dual", "calico-mode", "RequireDualStack"))  # fmt: skip
        addresses = {KUBERNETES_SERVICE, *created["spec"]["clusterIPs"]}
        wanted = expected_rib(addresses)
        for family, block in CALICO_POD_BLOCK.items():
            wanted[family][PEER[family]].add(block)

        def matches() -> bool:
            return all(rib(lab, family) == wanted[family] for family in FAMILIES)

        if not poll(matches, 90):
            pytest.fail(f"expected {wanted}, got {[rib(lab, family) for family in FAMILIES]}", pytrace=False)
        hops = {family: {hop for paths in lab.frr().bgp_table(family).values() for p in paths for hop in p.next_hops}
                for family in FAMILIES}  # fmt: skip
        assert hops == {family: {PEER[family]} for family in FAMILIES}
    finally:
        lab.down()
