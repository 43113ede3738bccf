"""The announcer process against the real kube-apiserver and etcd: allocation, RBAC, node state, render, restarts."""

from __future__ import annotations

import copy
import ipaddress
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from announcer.config import ConfigError
from announcer.convert import Converted, ObjectKind, converter, shape_of
from announcer.kube import Backoff, KubeApi, ListPage, Relisted, Resource, ResourceWatcher, WatchEvent, make_api_client
from lab.controlplane import ANNOUNCER, NOBODY, ControlPlane, Identity, free_port
from tests.conftest import make_config
from tests.exabgp_double import CONFIG, V4_PEERS, V6_PEER, ExaBgpDouble
from tests.factories import endpoint, endpoint_slice
from tests.kube_support import allocated_service, create, wait_until
from tests.test_peers_per_node import RACKS
from tests.test_state import Harness

pytestmark = pytest.mark.kube

ALL_NODE_RULES = {"withdraw_on_label": True, "withdraw_when_cordoned": True, "withdraw_when_not_ready": True}
WITHDRAW_LABEL = "bgp.announcer.io/withdraw"


# --- helpers -------------------------------------------------------------------------------------------------------
class Announcer:
    """`announcer run` (as ExaBGP's API process, against the ExaBGP double) with a kubeconfig for the real server."""

    def __init__(self, tmp: Path, plane: ControlPlane, config: dict[str, Any], identity: Identity = ANNOUNCER) -> None:
        self.port = free_port()
        document = copy.deepcopy(CONFIG)
        for key, value in config.items():
            document[key] = {**document.get(key, {}), **value} if isinstance(value, dict) else value
        document["metrics"] = {"listen": f"127.0.0.1:{self.port}"}
        self.exabgp = ExaBgpDouble(tmp, plane.url, document, kubeconfig=plane.kubeconfig_text(identity)).start()

    def v4(self) -> set[str]:
        tables = [self.exabgp.prefixes(peer) for peer in V4_PEERS]
        assert tables[0] == tables[1], "both IPv4 peers hold the same routes"
        return tables[0]

    def v6(self) -> set[str]:
        return self.exabgp.prefixes(V6_PEER)

    def wait_routes(self, v4: set[str], v6: set[str], timeout: float = 20.0) -> None:
        self.exabgp.wait_for(lambda: self.v4() == v4 and self.v6() == v6, timeout, f"IPv4 {v4} and IPv6 {v6}")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError as error:
            return 0, str(error)

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics, None when absent."""
        _, text = self.get("/metrics")
        wanted = name + (
            "{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}" if labels else ""
        )
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == wanted:
                return float(value)
        return None

    def withdraws(self) -> list[str]:
        return [line for line in self.exabgp.lines if " withdraw " in line]

    def stop(self) -> None:
        self.exabgp.stop()


@pytest.fixture
def announcers() -> Iterator[list[Announcer]]:
    started: list[Announcer] = []
    yield started
    for announcer in started:
        announcer.stop()


def selected(namespace: str) -> dict[str, Any]:
    """Configuration sections that make the announcer see only this test's Services (the server is shared)."""
    return {"announce": {"service_label_selector": f"announcer-test={namespace}"}}


def labelled(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    obj["metadata"]["namespace"] = namespace
    obj["metadata"].setdefault("labels", {})["announcer-test"] = namespace
    return obj


def new_service(
    name: str, namespace: str, policy: str, families: list[str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A Service for the API server to allocate, labelled for this test's announcer."""
    return allocated_service(name, namespace, policy, families, labels={"announcer-test": namespace}, **spec)


def host_prefix(address: str) -> str:
    return f"{address}/{32 if ipaddress.ip_address(address).version == 4 else 128}"


def by_family(addresses: list[str]) -> tuple[set[str], set[str]]:
    prefixes = [host_prefix(address) for address in addresses]
    return {p for p in prefixes if "." in p}, {p for p in prefixes if ":" in p}


def services_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services"


def make_node(plane: ControlPlane, name: str, *, ready: str = "True", labels: dict[str, str] | None = None) -> None:
    """A Node made through the API (no kubelet runs), its Ready condition set through the status subresource."""
    create(
        plane, "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}}
    )
    set_ready(plane, name, ready)


def set_ready(plane: ControlPlane, name: str, ready: str) -> None:
    condition = {"type": "Ready", "status": ready, "reason": "Test", "lastHeartbeatTime": None}
    status, answer = plane.request("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"conditions": [condition]}})
    assert status == 200, answer


def patch_node(plane: ControlPlane, name: str, patch: dict[str, Any]) -> None:
    status, answer = plane.request("PATCH", f"/api/v1/nodes/{name}", patch)
    assert status == 200, answer


# --- allocation and announcement -----------------------------------------------------------------------------------
POLICIES = [
    ("single-v4", "SingleStack", None, ["IPv4"]),
    ("single-v6", "SingleStack", ["IPv6"], ["IPv6"]),
    ("prefer-dual", "PreferDualStack", None, ["IPv4", "IPv6"]),
    ("require-dual", "RequireDualStack", None, ["IPv4", "IPv6"]),
    ("require-dual-v6-first", "RequireDualStack", ["IPv6", "IPv4"], ["IPv6", "IPv4"]),
]


def test_every_cluster_ip_the_api_server_allocates_is_announced_to_its_family_and_withdrawn_on_delete(
    tmp_path: Path, control_plane: ControlPlane, namespace: str, announcers: list[Announcer]
) -> None:
    """Each ipFamilyPolicy, allocated by the real dual-stack allocator: every address of spec.clusterIPs goes to the
    peers of its family only; deleting a dual-stack Service withdraws both."""
    allocated: dict[str, list[str]] = {}
    for name, policy, families, expected_families in POLICIES:
        answer = create(control_plane, services_path(namespace), new_service(name, namespace, policy, families))
        addresses = answer["spec"]["clusterIPs"]
        assert [f"IPv{ipaddress.ip_address(a).version}" for a in addresses] == expected_families, (name, addresses)
        allocated[name] = addresses
    announcer = Announcer(tmp_path, control_plane, selected(namespace))
    announcers.append(announcer)
    v4, v6 = by_family([address for addresses in allocated.values() for address in addresses])
    assert len(v4) == 4 and len(v6) == 4
    announcer.wait_routes(v4, v6)
    wait_until(lambda: announcer.get("/readyz")[0] == 200, 10, "readiness")
    status, deleted = control_plane.request("DELETE", f"{services_path(namespace)}/require-dual")
    assert status == 200, deleted
    gone_v4, gone_v6 = by_family(allocated["require-dual"])
    announcer.wait_routes(v4 - gone_v4, v6 - gone_v6)
    assert sorted(announcer.withdraws()) == sorted(
        [f"neighbor {' , neighbor '.join(V4_PEERS)} withdraw route {p} next-hop self" for p in gone_v4]
        + [f"neighbor {V6_PEER} withdraw route {p} next-hop self" for p in gone_v6]
    )
    assert announcer.metric("announcer_watch_up", resource="services") == 1


def test_local_policy_follows_the_endpointslices_of_this_node_per_family(
    tmp_path: Path, control_plane: ControlPlane, namespace: str, announcers: list[Announcer]
) -> None:
    """externalTrafficPolicy Local: the /32 only while node-a has a ready IPv4 endpoint, the /128 likewise."""
    obj = new_service("web", namespace, "RequireDualStack", type="LoadBalancer", externalTrafficPolicy="Local")
    addresses = create(control_plane, services_path(namespace), obj)["spec"]["clusterIPs"]
    v4, _ = by_family(addresses)
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    ipv4_slice = labelled(endpoint_slice("web", "IPv4", [endpoint("node-a", "198.51.100.200")]), namespace)
    create(control_plane, slices, ipv4_slice)
    create(
        control_plane, slices, labelled(endpoint_slice("web", "IPv6", [endpoint("node-b", "2001:db8:a::1")]), namespace)
    )
    announcer = Announcer(tmp_path, control_plane, selected(namespace))
    announcers.append(announcer)
    announcer.wait_routes(v4, set())
    ipv4_slice["endpoints"][0]["conditions"]["ready"] = False
    status, answer = control_plane.request("PATCH", f"{slices}/web-ipv4", {"endpoints": ipv4_slice["endpoints"]})
    assert status == 200, answer
    announcer.wait_routes(set(), set())


# --- RBAC --------------------------------------------------------------------------------------------------------
def deploy_rules() -> list[dict[str, Any]]:
    documents = yaml.safe_load_all((Path(__file__).parents[1] / "deploy/base/rbac.yaml").read_text(encoding="utf-8"))
    role = next(doc for doc in documents if doc and doc["kind"] == "ClusterRole")
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def account_without(plane: ControlPlane, namespace: str, resource: str, verb: str) -> Identity:
    """A ServiceAccount bound to deploy/base's ClusterRole less one verb on one resource, and a real token for it
    (TokenRequest)."""
    rules = copy.deepcopy(deploy_rules())
    for rule in rules:
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    rules = [rule for rule in rules if rule["verbs"]]
    name = f"less-{namespace}"
    plane.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "announcer", "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
             "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": "announcer", "namespace": namespace}]},
        ]
    )  # fmt: skip
    token = plane.kubectl("create", "token", "announcer", "-n", namespace, "--duration=1h").stdout.strip()
    return Identity(f"system:serviceaccount:{namespace}:announcer", (), token)


@pytest.mark.parametrize(
    "removed",
    [
        ("services", "list"),
        ("services", "watch"),
        ("endpointslices", "list"),
        ("endpointslices", "watch"),
        ("nodes", "list"),
        ("nodes", "watch"),
    ],
    ids=" ".join,
)
def test_each_verb_removed_from_the_cluster_role_fails_visibly_and_node_state_fails_closed(
    tmp_path: Path, control_plane: ControlPlane, namespace: str, announcers: list[Announcer], removed: tuple[str, str]
) -> None:
    """The announcer's own role less one verb, with node state on: the 403 is in the log (naming the resource), in
    announcer_watch_refused and announcer_watch_up, and /readyz says not ready; without `list nodes` nothing is
    announced at all (fail closed)."""
    resource, verb = removed
    node = f"n-{namespace}"
    make_node(control_plane, node)
    addresses = create(control_plane, services_path(namespace), new_service("web", namespace, "RequireDualStack"))
    identity = account_without(control_plane, namespace, resource, verb)
    config = {**selected(namespace), "node_name": node, "node_state": ALL_NODE_RULES}
    announcer = Announcer(tmp_path, control_plane, config, identity)
    announcers.append(announcer)
    wait_until(lambda: announcer.metric("announcer_watch_refused", resource=resource) == 1, 20, "the refusal metric")
    assert announcer.metric("announcer_watch_up", resource=resource) == 0
    status, text = announcer.get("/readyz")
    assert status == 503 and f"refused by the API server ({resource}: API server answered 403 Forbidden" in text
    assert f"{resource}: API server answered 403 Forbidden (the announcer's account may not list and watch" in (
        announcer.exabgp.stderr()
    )
    if resource == "nodes" and verb == "list":
        time.sleep(2)  # Services and EndpointSlices are listed and watched meanwhile
        assert announcer.v4() == set() and announcer.v6() == set(), "nothing announced while the Node is unknown"
    elif verb == "watch":  # listed, then every watch refused: the listed routes are announced
        announcer.wait_routes(*by_family(addresses["spec"]["clusterIPs"]))


# --- node state with real Node objects -------------------------------------------------------------------------------
def test_node_state_follows_cordon_labels_and_the_ready_condition_of_a_real_node(
    tmp_path: Path, control_plane: ControlPlane, namespace: str, announcers: list[Announcer]
) -> None:
    node = f"n-{namespace}"
    addresses = create(control_plane, services_path(namespace), new_service("web", namespace, "RequireDualStack"))
    v4, v6 = by_family(addresses["spec"]["clusterIPs"])
    announcer = Announcer(
        tmp_path, control_plane, {**selected(namespace), "node_name": node, "node_state": ALL_NODE_RULES}
    )
    announcers.append(announcer)
    wait_until(lambda: "not known" in announcer.get("/readyz")[1], 20, "not ready while the Node is missing")
    assert announcer.v4() == set() and announcer.v6() == set(), "fail closed: the Node does not exist yet"
    assert announcer.metric("announcer_node_state_withdrawing", reason="nodeUnknown") == 1
    assert f"Node {node} is missing: node state announces nothing while it is" in announcer.exabgp.stderr()
    make_node(control_plane, node)
    announcer.wait_routes(v4, v6)
    wait_until(lambda: announcer.get("/readyz")[0] == 200, 10, "ready once the Node is known")
    assert announcer.metric("announcer_node_state_withdrawing", reason="nodeUnknown") == 0
    steps: list[tuple[str, dict[str, Any] | str]] = [
        ("cordon", {"spec": {"unschedulable": True}}),
        ("uncordon", {"spec": {"unschedulable": None}}),
        ("label", {"metadata": {"labels": {WITHDRAW_LABEL: "true"}}}),
        ("unlabel", {"metadata": {"labels": {WITHDRAW_LABEL: None}}}),
        ("not ready", "False"),
        ("ready", "True"),
    ]
    for step, change in steps:
        if isinstance(change, str):
            set_ready(control_plane, node, change)
        else:
            patch_node(control_plane, node, change)
        withdrawn = step in ("cordon", "label", "not ready")
        announcer.wait_routes(set() if withdrawn else v4, set() if withdrawn else v6)
    control_plane.request("DELETE", f"/api/v1/nodes/{node}")
    announcer.wait_routes(set(), set())


# --- render ----------------------------------------------------------------------------------------------------------
def render(
    tmp_path: Path, plane: ControlPlane, config: dict[str, Any], kubeconfig: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "kubeconfig").write_text(kubeconfig)
    document = {**copy.deepcopy(CONFIG), **config, "watch": {"kubeconfig": str(tmp_path / "kubeconfig")}}
    (tmp_path / "announcer.yaml").write_text(yaml.safe_dump(document))
    return subprocess.run(
        [sys.executable, "-m", "announcer", "render", "--config", str(tmp_path / "announcer.yaml"), "--output", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_render_reads_the_real_server_as_the_announcers_account(
    tmp_path: Path, control_plane: ControlPlane, namespace: str
) -> None:
    addresses = create(control_plane, services_path(namespace), new_service("web", namespace, "PreferDualStack"))
    done = render(tmp_path, control_plane, selected(namespace), control_plane.kubeconfig_text(ANNOUNCER))
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]
    assert {(row["address"], row["announced"]) for row in rows} == {
        (host_prefix(address), True) for address in addresses["spec"]["clusterIPs"]
    }


@pytest.mark.parametrize(
    ("who", "said"),
    [
        ("nobody", "cannot list services: API server answered 403 Forbidden (the announcer's account may not list"),
        ("bad token", "cannot list services: API server answered 401 Unauthorized (the kubeconfig's or the "),
        ("no server", "cannot list services: connection problem: MaxRetryError"),
    ],
)
def test_render_says_in_one_sentence_why_it_cannot_read_the_cluster(
    tmp_path: Path, control_plane: ControlPlane, who: str, said: str
) -> None:
    kubeconfig = control_plane.kubeconfig_text(NOBODY if who == "nobody" else Identity("x", (), "not-a-token"))
    if who == "no server":
        kubeconfig = kubeconfig.replace(control_plane.url, f"https://127.0.0.1:{free_port()}")
    done = render(tmp_path, control_plane, {"watch": {"request_timeout": 2}}, kubeconfig)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"announcer render: {said}"), done.stderr


# --- the API server and etcd restarted -----------------------------------------------------------------------------
@pytest.fixture
def own_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this test's own (restarting the session's would disturb the others)."""
    with ControlPlane(tmp_path_factory.mktemp("own-plane")) as plane:
        yield plane


# After /readyz, a Service created then reaches ExaBGP within the watch backoff's cap (0.4 s in these tests), a
# relist (410) and a sync: bounded here at 10 s; measured below 2 s.
AFTER_READY = 10.0


@pytest.mark.parametrize("what", ["kube-apiserver", "etcd"])
def test_a_restart_withdraws_and_flaps_nothing_and_a_service_created_after_it_is_announced(
    tmp_path: Path, own_plane: ControlPlane, announcers: list[Announcer], what: str
) -> None:
    own_plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "r"}}])
    before = create(own_plane, services_path("r"), new_service("before", "r", "RequireDualStack"))
    announcer = Announcer(tmp_path, own_plane, selected("r"))
    announcers.append(announcer)
    v4, v6 = by_family(before["spec"]["clusterIPs"])
    announcer.wait_routes(v4, v6)
    lines = len(announcer.exabgp.lines)
    if what == "kube-apiserver":
        own_plane.stop_apiserver()
        time.sleep(3)
        own_plane.start_apiserver()
    else:
        own_plane.stop_etcd()
        time.sleep(3)
        own_plane.start_etcd()
        wait_until(lambda: own_plane.readyz() == 200, 30, "kube-apiserver ready again with etcd back")
    ready_at = time.monotonic()
    during = create(own_plane, services_path("r"), new_service("after", "r", "RequireDualStack"))
    more_v4, more_v6 = by_family(during["spec"]["clusterIPs"])
    announcer.wait_routes(v4 | more_v4, v6 | more_v6, timeout=AFTER_READY)
    print(f"{what} restart: the new Service announced {time.monotonic() - ready_at:.2f} s after /readyz")
    announcer.exabgp.wait_quiet()
    assert announcer.withdraws() == []
    assert sorted(line for line in announcer.exabgp.lines[lines:] if " announce " in line) == sorted(
        [f"neighbor {' , neighbor '.join(V4_PEERS)} announce route {p} next-hop self" for p in more_v4]
        + [f"neighbor {V6_PEER} announce route {p} next-hop self" for p in more_v6]
    ), "only the new Service's routes: nothing re-announced"


# --- etcd compacted during a paginated first list ------------------------------------------------------------------
# kube-apiserver 1.35 serves a paginated list from its watch cache's snapshots (ListFromCacheSnapshot, on by default
# since 1.34): a continue token outlives an etcd compaction. Without them (the feature off, or the watch cache off for
# a resource) the pages come from etcd at the first page's revision, and the compaction expires the token (410).
@pytest.mark.parametrize(
    ("flags", "expired"),
    [((), 0), (("--feature-gates=ListFromCacheSnapshot=false",), 1)],
    ids=["pages from the watch cache", "pages from etcd"],
)
def test_etcd_compacted_during_a_paginated_first_list_flaps_nothing(
    tmp_path_factory: pytest.TempPathFactory, flags: tuple[str, ...], expired: int
) -> None:
    """The first list is read 5 Services a page; after the first page a Service is written and etcd compacted. When
    that expires the continue token, the watcher lists again from the start; either way the state machine fed with
    every event it handed on sends no withdraw."""
    with ControlPlane(tmp_path_factory.mktemp("compacted"), apiserver_flags=flags) as plane:
        _list_across_a_compaction(plane, "compacted", expired)


def _list_across_a_compaction(control_plane: ControlPlane, namespace: str, expired: int) -> None:
    control_plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    for index in range(12):
        create(control_plane, services_path(namespace), new_service(f"s{index}", namespace, "RequireDualStack"))
    events: list[WatchEvent[Converted]] = []
    relisted = threading.Event()

    def sink(event: WatchEvent[Converted]) -> None:
        if isinstance(event, ListPage) and not events:
            create(control_plane, services_path(namespace), new_service("mid-list", namespace, "SingleStack"))
            control_plane.compact()
        events.append(event)
        if isinstance(event, Relisted):
            relisted.set()

    stop = threading.Event()
    watcher = ResourceWatcher(
        Resource.SERVICES,
        KubeApi(make_api_client(control_plane.kubeconfig(ANNOUNCER))),
        sink,
        stop,
        convert=converter(ObjectKind.SERVICE, "bgp.announcer.io/"),
        shape=shape_of(ObjectKind.SERVICE),
        label_selector=f"announcer-test={namespace}",
        page_size=5,
        backoff=Backoff(0.05, 0.2),
    )
    watcher.start()
    try:
        assert relisted.wait(30), f"no complete list; events: {events}"
    finally:
        stop.set()
        watcher.close()
        watcher.join(10)
    assert watcher.stats.expired == expired
    complete = [event for event in events if isinstance(event, Relisted)]
    # the list's snapshot: the 12 Services before it, and the one written mid-list too when the list started again
    assert len(complete) == 1 and len(complete[0].objects) == 12 + expired
    harness = Harness(make_config(announce={"service_label_selector": f"announcer-test={namespace}"}))
    harness.feed(*events, Relisted(Resource.ENDPOINTSLICES, []))
    assert harness.announcer.synced
    assert [line for line in harness.speaker.lines if " withdraw " in line] == []
    assert len(harness.announcer.announced) == 24 + expired


# --- the label selector check and the API server's own parser ------------------------------------------------------
SELECTORS = [
    # refused by check-config (tests/test_config.py)
    "a in (b", "a in b", "a=b=c", "a b", "a,", ",a", "!a=b", "a in (b c)", "a notin", "app=web;x", "-app=web",
    "a=" + "v" * 64, "bad_/key=1", "a=b)", "a in (b,(c))", "a>b", "!a>1", "a>-1",
    # accepted
    "app=web", "app==web,tier!=db", "env in (prod, staging),!canary", "a notin ()", "example.com/app", "a=",
    " app = web ", "a in (b,)", "team", "!example.com/skip,x!=y", "a=in", "in=b", "a>1", "a< 01,b",
]  # fmt: skip


@pytest.mark.parametrize("selector", SELECTORS)
def test_check_config_accepts_a_service_label_selector_exactly_when_the_api_server_does(
    control_plane: ControlPlane, selector: str
) -> None:
    """announce.service_label_selector is checked up front by our own reading of the grammar: the real API server's
    answer to a list with it (200 or 400) is the judge."""
    try:
        make_config(announce={"service_label_selector": selector})
        ours = True
    except ConfigError:
        ours = False
    status, answer = control_plane.request(
        "GET", "/api/v1/services?limit=1&labelSelector=" + urllib.parse.quote(selector), identity=ANNOUNCER
    )
    assert status in (200, 400), answer
    assert ours == (status == 200), f"check-config {'accepts' if ours else 'refuses'}, the API server: {answer}"


# --- per-node peers: the one GET of this node's Node -------------------------------------------------------------
@pytest.mark.parametrize("allowed", [True, False], ids=["get nodes granted", "get nodes removed"])
def test_per_node_peers_read_this_nodes_labels_and_without_get_nodes_the_start_fails_naming_it(
    tmp_path: Path, control_plane: ControlPlane, namespace: str, allowed: bool
) -> None:
    """`announcer exabgp-conf` with peers chosen by node labels reads this node's Node with one GET: with deploy/base's
    role it renders the rack's own peer only; with `get nodes` removed it exits 2 with one sentence naming the
    Node, the 403 and the RBAC file."""
    node = f"n-{namespace}"
    make_node(control_plane, node, labels={"topology.kubernetes.io/zone": "rack2"})
    identity = ANNOUNCER if allowed else account_without(control_plane, namespace, "nodes", "get")
    (tmp_path / "kubeconfig").write_text(control_plane.kubeconfig_text(identity))
    document = {
        **copy.deepcopy(CONFIG),
        "node_name": node,
        "bgp": {**RACKS, "local_as_node_key": "bgp.announcer.io/local-as"},
        "watch": {"kubeconfig": str(tmp_path / "kubeconfig")},
    }
    (tmp_path / "announcer.yaml").write_text(yaml.safe_dump(document))
    done = subprocess.run(
        [sys.executable, "-m", "announcer", "exabgp-conf", "--config", str(tmp_path / "announcer.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if allowed:
        assert done.returncode == 0, done.stderr
        assert "neighbor 192.0.2.5 " in done.stdout and "neighbor 192.0.2.1 " not in done.stdout
    else:
        assert done.returncode == 2
        assert done.stderr.strip() == (
            f"announcer: configuration error: Node {node}: cannot be read from the API server: API server answered "
            "403 Forbidden (the announcer's account may not get nodes: see deploy/base/rbac.yaml; a restarting API "
            "server also answers 403 until its authorizer is ready)"
        )
