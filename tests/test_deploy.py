"""deploy/base/ agrees with the code: RBAC grants exactly what it calls, probes hit metrics.listen, the entrypoint stops in order."""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from announcer import kube
from announcer.config import Config, parse_listen
from announcer.config_load import parse_config
from announcer.exabgp_conf import render_exabgp_conf
from announcer.handover_lookup import ENV_POD_NAME, ENV_POD_NAMESPACE
from lab.lab import project_tool
from tests.kube_support import kustomize

REPOSITORY = Path(__file__).resolve().parents[1]
DEPLOY = REPOSITORY / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
DOCS = REPOSITORY / "docs" / "operations.md"
NODE_ENVIRONMENT = {"NODE_NAME": "node-a", "ROUTER_ID": "192.0.2.11"}

# The Kubernetes client's API classes the announcer may use, and the API group each one serves.
API_GROUPS = {"CoreV1Api": "", "DiscoveryV1Api": "discovery.k8s.io"}
# Client method prefix -> RBAC verb.
METHOD_VERBS = {"list": "list", "read": "get", "create": "create", "replace": "update", "patch": "patch",
                "delete_collection": "deletecollection", "delete": "delete"}  # fmt: skip
Grant = tuple[str, str, str]  # (API group, resource, verb)


# --- reading the manifests -----------------------------------------------------------------------------------
@functools.cache
def _rendered() -> str:
    return yaml.safe_dump_all(kustomize(DEPLOY / "base"))


def manifests() -> list[dict[str, Any]]:
    """Every object real kustomize renders from deploy/base/ (a fresh copy each call)."""
    return [item for item in yaml.safe_load_all(_rendered()) if item]


def only(kind: str) -> dict[str, Any]:
    found = [item for item in manifests() if item["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = only("DaemonSet")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1, "one container: ExaBGP with the announcer as its API process"
    found: dict[str, Any] = containers[0]
    return found


def environment() -> dict[str, Any]:
    return {entry["name"]: entry for entry in container().get("env", [])}


def dockerfile_env(name: str) -> str:
    text = (REPOSITORY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                key, _, value = word.partition("=")
                if key == name:
                    return value
    raise AssertionError(f"the Dockerfile sets no {name}")


def configmap_document() -> dict[str, Any]:
    """The configuration file the ConfigMap holds, at the path the container reads it from."""
    configmap = only("ConfigMap")
    mounts = {mount["name"]: mount for mount in container()["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}
    config_path = Path(dockerfile_env("ANNOUNCER_CONFIG"))
    mounted = [mounts[name] for name, volume in volumes.items() if volume.get("configMap", {}).get("name")
               == configmap["metadata"]["name"]]  # fmt: skip
    assert len(mounted) == 1, "the ConfigMap is mounted once"
    assert Path(mounted[0]["mountPath"]) == config_path.parent
    document: dict[str, Any] = yaml.safe_load(configmap["data"][config_path.name])
    return document


def configmap_config() -> Config:
    return parse_config(configmap_document(), "deploy/base/announcer.yaml", environ=NODE_ENVIRONMENT)


# --- what the code calls ---------------------------------------------------------------------------------------
def _resource_of(method: str) -> tuple[str, str]:
    """('list', 'services') for 'list_service_for_all_namespaces', and so on."""
    for prefix, verb in METHOD_VERBS.items():
        match = re.fullmatch(rf"{prefix}_(?:namespaced_)?(?P<kind>[a-z_]+?)(?:_for_all_namespaces)?", method)
        if match is not None:
            return verb, match["kind"].replace("_", "") + "s"
    raise AssertionError(f"cannot tell the RBAC verb of {method}: extend METHOD_VERBS")


def _grant_of_path(path: str, verb: str) -> Grant:
    """("discovery.k8s.io", "endpointslices", verb) for "/apis/discovery.k8s.io/v1/endpointslices", and so on."""
    match = re.fullmatch(
        r"/(?:api/v1|apis/(?P<group>[a-z0-9.-]+)/v[a-z0-9]+)/(?:namespaces/\{namespace\}/)?(?P<resource>[a-z]+)"
        r"(?:/\{name\})?",
        path,
    )
    assert match is not None, f"cannot tell the API group and resource of {path}"
    return match["group"] or "", match["resource"], verb


def grants_the_code_uses() -> set[Grant]:
    """(group, resource, verb) of every Kubernetes API call in announcer/*.py (the daemon's watchers and the
    render command): the generated API classes' methods, and kube.py's own requests (kube.COLLECTIONS: list, and
    watch when it passes watch=True; kube.NODE: get), which only kube.py may send."""
    used: set[Grant] = set()
    for module in sorted((REPOSITORY / "announcer").glob("*.py")):
        text = module.read_text(encoding="utf-8")
        assert "kubernetes.dynamic" not in text, f"{module.name}: raw API calls"
        watches = "watch=True" in text or "kubernetes.watch" in text
        if module.name == "kube.py":
            used |= {_grant_of_path(path, "list") for path in kube.COLLECTIONS.values()}
            used |= {_grant_of_path(path, "watch") for path in kube.COLLECTIONS.values() if watches}
            used.add(_grant_of_path(kube.NODE, "get"))
        else:
            assert "call_api" not in text and "param_serialize" not in text, f"{module.name}: raw API calls"
        calls = re.findall(r"kubernetes\.client\.(\w+Api)\([^)]*\)\.(\w+)", text)  # CoreV1Api(c).list_...
        kept = re.findall(r"(\w+) = kubernetes\.client\.(\w+Api)\(", text)  # core = CoreV1Api(c); core.list_...
        for variable, api_class in kept:
            calls += [(api_class, method) for method in re.findall(rf"\b{variable}\.(\w+)", text)]
        constructed = re.findall(r"kubernetes\.client\.(\w+Api)\(", text)
        assert len(constructed) <= len(calls), f"{module.name}: an API object this scan cannot follow"
        for api_class, method in calls:
            assert api_class in API_GROUPS, f"{module.name}: {api_class} is not in API_GROUPS"
            assert hasattr(getattr(kubernetes.client, api_class), method), f"{api_class} has no {method}"
            verb, resource = _resource_of(method)
            used.add((API_GROUPS[api_class], resource, verb))
            if verb == "list" and watches:
                used.add((API_GROUPS[api_class], resource, "watch"))
    return used


def namespaced_grants_the_code_uses() -> set[Grant]:
    """(group, resource, verb) of kube.py's requests inside the announcer's own namespace (kube.NAMESPACED_GETS: get):
    a Role there grants them, not the ClusterRole."""
    return {_grant_of_path(path, "get") for path in kube.NAMESPACED_GETS}


def granted(role: dict[str, Any]) -> set[Grant]:
    found: set[Grant] = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"no resourceNames or nonResourceURLs: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"no wildcards: {rule}"
                    found.add((group, resource, verb))
    return found


# --- tests: RBAC -------------------------------------------------------------------------------------------------
def test_the_code_lists_and_watches_services_and_endpointslices_and_reads_nodes_and_nothing_else() -> None:
    """The scan itself: if the code starts calling something new, this and the next test say so."""
    assert grants_the_code_uses() == {
        ("", "services", "list"),
        ("", "services", "watch"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
        ("", "nodes", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
    }


def test_the_code_reads_only_pods_and_daemonsets_by_name_in_its_own_namespace() -> None:
    """At a stop: its own Pod and the DaemonSet that owns it (handover_lookup.py), each by name."""
    assert all("{namespace}" in path and path.endswith("/{name}") for path in kube.NAMESPACED_GETS)
    assert namespaced_grants_the_code_uses() == {("", "pods", "get"), ("apps", "daemonsets", "get")}


def test_the_cluster_role_grants_exactly_what_the_code_calls() -> None:
    roles = [item for item in manifests() if item["kind"] in ("Role", "ClusterRole")]
    assert sorted(role["kind"] for role in roles) == ["ClusterRole", "Role"], "one ClusterRole and one Role"
    assert granted(only("ClusterRole")) == grants_the_code_uses()


def test_the_role_grants_exactly_what_the_code_reads_in_its_namespace() -> None:
    role = only("Role")
    assert granted(role) == namespaced_grants_the_code_uses()
    assert role["metadata"]["namespace"] == only("DaemonSet")["metadata"]["namespace"]


def test_the_binding_gives_the_role_to_the_daemon_sets_service_account() -> None:
    role = only("ClusterRole")
    account = only("ServiceAccount")
    binding = only("ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}  # fmt: skip
    subjects = [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]
    assert binding["subjects"] == subjects
    namespaced = only("RoleBinding")
    assert namespaced["metadata"]["namespace"] == account["metadata"]["namespace"]
    assert namespaced["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                     "name": only("Role")["metadata"]["name"]}  # fmt: skip
    assert namespaced["subjects"] == subjects
    assert pod_spec()["serviceAccountName"] == account["metadata"]["name"]
    assert only("DaemonSet")["metadata"]["namespace"] == account["metadata"]["namespace"]


def test_the_configmaps_configuration_validates_and_renders_an_exabgp_conf() -> None:
    """parse_config accepts it, with NODE_NAME and ROUTER_ID as the DaemonSet sets them, and without."""
    config = configmap_config()
    assert config.node == "node-a"
    assert str(config.bgp.router_id) == "192.0.2.11"
    text = render_exabgp_conf(config, dockerfile_env("ANNOUNCER_CONFIG"))
    assert "processes [ announcer ];" in text
    bare = parse_config(configmap_document(), "deploy/base/announcer.yaml", environ={"ROUTER_ID": "192.0.2.11"})
    assert bare.node_name is None, "the node name comes from the DaemonSet, not the shared file"


def _configmap_names(deploy: Path, directory: str) -> tuple[str, str]:
    """(the ConfigMap's name, the name the DaemonSet's config volume mounts) as real kustomize builds directory."""
    objects = kustomize(deploy / directory)
    [configmap] = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "ConfigMap"]
    [daemon_set] = [obj for obj in objects if obj["kind"] == "DaemonSet"]
    volumes = {volume["name"]: volume for volume in daemon_set["spec"]["template"]["spec"]["volumes"]}
    return configmap, volumes["config"]["configMap"]["name"]


def test_a_changed_configuration_file_renames_the_configmap_so_apply_rolls_the_pods(tmp_path: Path) -> None:
    """The configuration is read once at start: kustomize's configMapGenerator names the ConfigMap after a hash of
    announcer.yaml, the pod template follows the new name, and the DaemonSet rolls. The Calico overlay's own file
    replaces the base's, so only a change to it renames the overlay's ConfigMap."""
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, deploy, ignore=shutil.ignore_patterns("helm"))
    base, overlay = _configmap_names(deploy, "base"), _configmap_names(deploy, "overlays/calico")
    assert base[0] == base[1] and overlay[0] == overlay[1], "the DaemonSet mounts the generated ConfigMap"
    assert base[0].startswith("service-announcer-") and overlay[0].startswith("service-announcer-")
    assert base[0] != overlay[0]
    assert _configmap_names(deploy, "base") == base, "the same file, the same name"
    for directory in ("base", "overlays/calico"):
        path = deploy / directory / "announcer.yaml"
        path.write_text(path.read_text(encoding="utf-8").replace("hold_time: 30", "hold_time: 90"), encoding="utf-8")
        if directory == "base":
            changed = _configmap_names(deploy, "base")
            assert changed[0] == changed[1] != base[0]
            assert _configmap_names(deploy, "overlays/calico") == overlay, "the overlay's file replaces the base's"
    changed = _configmap_names(deploy, "overlays/calico")
    assert changed[0] == changed[1] != overlay[0]


def test_probes_ask_the_metrics_listen_port_for_healthz_and_readyz() -> None:
    """Liveness on /healthz and readiness on /readyz, at the port of metrics.listen, which listens on every
    address (the kubelet probes the pod IP, the node's address with hostNetwork)."""
    listen = configmap_config().metrics.listen
    assert listen is not None, "metrics.listen is set: the probes need it"
    host, port = parse_listen(listen)
    assert host in ("0.0.0.0", "::")
    ports = {entry["name"]: entry["containerPort"] for entry in container()["ports"]}
    for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        probe = container()[probe_name]["httpGet"]
        assert probe["path"] == path
        assert ports.get(probe["port"], probe["port"]) == port, f"{probe_name} asks another port"
        assert "host" not in probe and probe.get("scheme", "HTTP") == "HTTP"
    annotations = only("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_liveness_gives_the_loop_longer_than_a_long_sync_pause() -> None:
    """The probe fails only after failureThreshold x periodSeconds, on top of /healthz's own window."""
    probe = container()["livenessProbe"]
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 30
    assert probe["timeoutSeconds"] >= 2


# --- tests: the pod ------------------------------------------------------------------------------------------------
def test_the_pod_runs_on_the_host_network_as_the_images_user_without_privileges() -> None:
    spec = pod_spec()
    assert spec["hostNetwork"] is True
    user = re.search(r"^USER (\d+):(\d+)$", (REPOSITORY / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    assert user is not None
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == int(user[1])
    assert spec["securityContext"]["runAsGroup"] == int(user[2])
    context = container()["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert not context.get("privileged", False)
    assert "add" not in context["capabilities"]
    resources = container()["resources"]
    assert set(resources) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


def test_a_read_only_root_has_writable_mounts_where_the_entrypoint_and_client_write() -> None:
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}
    writable = {
        mount["mountPath"]
        for mount in container()["volumeMounts"]
        if not mount.get("readOnly") and "emptyDir" in volumes[mount["name"]]
    }
    assert {dockerfile_env("ANNOUNCER_RUN_DIR"), "/tmp"} <= writable  # noqa: S108  (the container's /tmp)
    run = next(mount["name"] for mount in container()["volumeMounts"] if mount["mountPath"] == "/run/announcer")
    assert volumes[run]["emptyDir"].get("medium") == "Memory", "exabgp.conf holds passwords: keep it off disk"


def test_node_name_and_router_id_come_from_the_downward_api() -> None:
    env = environment()
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["ROUTER_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}


def test_the_pods_name_and_namespace_come_from_the_downward_api_for_the_stops_lookup() -> None:
    env = environment()
    assert env[ENV_POD_NAME]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env[ENV_POD_NAMESPACE]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_every_password_variable_the_configuration_names_is_set_from_a_secret() -> None:
    env = environment()
    for peer in configmap_config().bgp.peers:
        if peer.password is not None and peer.password.env is not None:
            assert "secretKeyRef" in env[peer.password.env]["valueFrom"], f"{peer.password.env} from a Secret"


def test_the_grace_period_covers_the_withdraw_then_exabgps_stop() -> None:
    """speaker.shutdown_timeout < ANNOUNCER_STOP_TIMEOUT, and the pod is not killed before the entrypoint is done."""
    stop_timeout = int(environment()["ANNOUNCER_STOP_TIMEOUT"]["value"])
    assert configmap_config().speaker.shutdown_timeout < stop_timeout
    assert pod_spec()["terminationGracePeriodSeconds"] >= stop_timeout + 5


def test_the_rollout_replaces_one_node_at_a_time_and_waits_for_readiness() -> None:
    spec = only("DaemonSet")["spec"]
    assert spec["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    assert spec["minReadySeconds"] > 0
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_every_yaml_block_in_the_operations_guide_parses() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "docs/operations.md shows its manifests as yaml blocks"
    for block in blocks:
        list(yaml.safe_load_all(block))


# --- tests: the entrypoint ----------------------------------------------------------------------------------------
FAKE_EXABGP = """\
import os, signal, subprocess, sys, time
log = open(os.environ["FAKE_LOG"], "a", buffering=1)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
child, count, started = None, 0, time.monotonic()
log.write("exabgp: started with " + sys.argv[1] + "\\n")
while not stopping:
    if child is None or child.poll() is not None:  # ExaBGP respawns its API process
        count += 1
        child = subprocess.Popen([sys.executable, os.environ["FAKE_CHILD"], str(count)])
    if os.environ.get("FAKE_EXABGP_EXIT") and time.monotonic() - started > 1:
        child.kill()
        child.wait()
        sys.exit(int(os.environ["FAKE_EXABGP_EXIT"]))
    time.sleep(0.02)
log.write("exabgp: SIGTERM\\n")
child.terminate()  # as ExaBGP does: SIGTERM, then SIGKILL 2 s later
try:
    child.wait(timeout=2)
except subprocess.TimeoutExpired:
    child.kill()
    child.wait()
"""
FAKE_CHILD = """\
import os, signal, sys, time
log = open(os.environ["FAKE_LOG"], "a", buffering=1)
number = sys.argv[1]
def marker():
    state = "present" if os.path.exists(os.environ["ANNOUNCER_STOPPING_FILE"]) else "absent"
    log.write(f"announcer {number}: stopping marker {state}\\n")
def withdraw(*_):
    marker()
    if os.environ.get("FAKE_CHILD_HANGS"):
        return
    time.sleep(0.4)
    log.write(f"announcer {number}: withdrawn\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, withdraw)
marker()
log.write(f"announcer {number}: started\\n")
while True:
    time.sleep(0.05)
"""
FAKE_ANNOUNCER = """\
#!/bin/sh
case "$1" in
    exabgp-conf) echo "# exabgp.conf" ;;
    exabgp-env) echo "exabgp_api_ack=true" ;;
esac
"""


class Entrypoint:
    """deploy/entrypoint.sh with stand-ins for `announcer` and `exabgp` on PATH, logging to one file."""

    def __init__(self, tmp_path: Path, **environment: str) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        self.log = tmp_path / "log"
        self.run_dir = tmp_path / "run"
        for name, text in (("exabgp", f"#!{sys.executable}\n{FAKE_EXABGP}"), ("announcer", FAKE_ANNOUNCER)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        (tmp_path / "child.py").write_text(FAKE_CHILD)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(self.log),
               "FAKE_CHILD": str(tmp_path / "child.py"), "ANNOUNCER_RUN_DIR": str(self.run_dir),
               "ANNOUNCER_CONFIG": str(tmp_path / "announcer.yaml"), **environment}  # fmt: skip
        self.stderr = tmp_path / "stderr"
        with self.stderr.open("wb") as stderr:
            self.process = subprocess.Popen([str(ENTRYPOINT)], env=env, stderr=stderr, stdout=subprocess.DEVNULL,
                                            start_new_session=True)  # fmt: skip

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def wait_for_line(self, line: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines():
            assert time.monotonic() < deadline, f"no {line!r} in {self.lines()}"
            time.sleep(0.02)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


@pytest.fixture
def entrypoint_factory() -> Iterator[list[Entrypoint]]:
    """The entrypoints a test starts; each in its own process group, killed whole at the end."""
    started: list[Entrypoint] = []
    yield started
    for entry in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(entry.process.pid, signal.SIGKILL)
        entry.process.wait()


def test_sigterm_stops_the_announcer_first_then_exabgp(tmp_path: Path, entrypoint_factory: list[Entrypoint]) -> None:
    """The announcer withdraws (and exits) before ExaBGP hears of the stop; the entrypoint exits with ExaBGP's 0."""
    entry = Entrypoint(tmp_path)
    entrypoint_factory.append(entry)
    entry.wait_for_line("announcer 1: started")
    assert entry.stop() == 0
    lines = entry.lines()
    assert lines[0] == f"exabgp: started with {entry.run_dir / 'exabgp.conf'}"
    assert lines.index("announcer 1: withdrawn") < lines.index("exabgp: SIGTERM")
    assert "stopping: the announcer first" in entry.stderr.read_text()
    assert (entry.run_dir / "exabgp.conf").stat().st_mode & 0o077 == 0, "exabgp.conf is readable by its owner only"


def test_the_stop_marker_exists_from_the_stop_on_so_a_respawned_announcer_stays_idle(
    tmp_path: Path, entrypoint_factory: list[Entrypoint]
) -> None:
    """ANNOUNCER_STOPPING_FILE (in ExaBGP's, so the announcer's, environment) is created before the announcer hears
    of the stop; the API process ExaBGP respawns meanwhile starts with it present (`announcer run` then announces
    nothing: tests/test_stopping.py). A new start removes a marker an earlier run left."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "stopping").touch()  # left by an earlier container's stop
    entry = Entrypoint(tmp_path, ANNOUNCER_FLUSH_SECONDS="1")  # time for ExaBGP to respawn the announcer
    entrypoint_factory.append(entry)
    entry.wait_for_line("announcer 1: started")
    assert entry.stop() == 0
    lines = entry.lines()
    first, second = (lines.index(f"announcer {number}: started") for number in (1, 2))
    assert lines[first - 1] == "announcer 1: stopping marker absent"
    assert lines[first + 1] == "announcer 1: stopping marker present"  # on SIGTERM
    assert lines[second - 1] == "announcer 2: stopping marker present"
    assert lines.index("announcer 1: withdrawn") < lines.index("announcer 2: started") < lines.index("exabgp: SIGTERM")


def test_an_announcer_that_does_not_exit_gets_stop_timeout_seconds(
    tmp_path: Path, entrypoint_factory: list[Entrypoint]
) -> None:
    entry = Entrypoint(tmp_path, FAKE_CHILD_HANGS="1", ANNOUNCER_STOP_TIMEOUT="1")
    entrypoint_factory.append(entry)
    entry.wait_for_line("announcer 1: started")
    started = time.monotonic()
    assert entry.stop() == 0
    assert 1.0 <= time.monotonic() - started < 5
    assert "did not exit within 1 s; stopping ExaBGP anyway" in entry.stderr.read_text()
    assert "exabgp: SIGTERM" in entry.lines()


def test_exabgp_exiting_by_itself_ends_the_entrypoint_with_its_status(
    tmp_path: Path, entrypoint_factory: list[Entrypoint]
) -> None:
    entry = Entrypoint(tmp_path, FAKE_EXABGP_EXIT="3")
    entrypoint_factory.append(entry)
    assert entry.process.wait(timeout=20) == 3
    assert "ExaBGP exited with status 3" in entry.stderr.read_text()


# --- tests: passwords stay out of logs ------------------------------------------------------------------------
PASSWORD = "Pa55-word.for+MD5"  # noqa: S105  (a test password)
PASSWORD_BASE64 = base64.b64encode(PASSWORD.encode()).decode()  # as exabgp.conf carries it


def password_config(tmp_path: Path, **extra: Any) -> Path:
    document = configmap_document()
    document["bgp"]["peers"][0]["password"] = {"env": "BGP_PASSWORD"}
    document["bgp"]["peers"][1]["password"] = {"file": str(tmp_path / "password")}
    document.update(extra)
    (tmp_path / "password").write_text(PASSWORD + "\n")
    path = tmp_path / "announcer.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run_announcer(*arguments: str, password: str | None = PASSWORD) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **NODE_ENVIRONMENT}
    env.pop("BGP_PASSWORD", None)
    if password is not None:
        env["BGP_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "announcer", *arguments], env=env, capture_output=True,
                          text=True, check=False, timeout=60)  # fmt: skip


@pytest.mark.parametrize("log_level", ["info", "debug"])
def test_passwords_reach_exabgp_conf_but_never_the_log(tmp_path: Path, log_level: str) -> None:
    """check-config, exabgp-conf and exabgp-env log nothing of the password, whether from env or file; only
    exabgp.conf (stdout of exabgp-conf) carries it."""
    config = password_config(tmp_path, log_level=log_level)
    rendered = run_announcer("exabgp-conf", "--config", str(config))
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.count(f"md5-password {PASSWORD_BASE64};") == 2
    for command in ("check-config", "exabgp-env"):
        result = run_announcer(command, "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stderr + result.stdout
        assert PASSWORD_BASE64 not in result.stderr + result.stdout
    assert PASSWORD not in rendered.stderr
    assert PASSWORD_BASE64 not in rendered.stderr


@pytest.mark.parametrize(
    ("password", "complaint"),
    [
        (None, "environment variable BGP_PASSWORD is not set"),
        (PASSWORD + "\u00e9", "the password in environment variable BGP_PASSWORD must be 1 to 80 printable ASCII"),
    ],
    ids=["unset", "not ASCII"],
)
def test_a_rejected_password_is_named_by_its_source_not_its_value(
    tmp_path: Path, password: str | None, complaint: str
) -> None:
    config = password_config(tmp_path)
    for command in ("check-config", "exabgp-conf"):
        result = run_announcer(command, "--config", str(config), password=password)
        assert result.returncode == 2
        assert complaint in result.stderr
        assert PASSWORD not in result.stderr + result.stdout


def exabgp_output(tmp_path: Path, **environment: str) -> str:
    """What ExaBGP itself prints while loading the rendered exabgp.conf with the rendered environment."""
    config = password_config(tmp_path, speaker={"announcer_command": "/bin/cat"})
    rendered = run_announcer("exabgp-conf", "--config", str(config))
    (tmp_path / "exabgp.conf").write_text(rendered.stdout)
    settings = run_announcer("exabgp-env", "--config", str(config)).stdout
    env = {**os.environ, **{key: "".join(shlex.split(value)) for key, _, value in
                            (line.partition("=") for line in settings.splitlines())}, **environment}  # fmt: skip
    with subprocess.Popen([str(project_tool("exabgp")), str(tmp_path / "exabgp.conf")], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as exabgp:  # fmt: skip
        assert exabgp.stdout is not None
        output = []
        deadline = time.monotonic() + 20
        for line in exabgp.stdout:
            output.append(line)
            if "loaded new configuration successfully" in line or time.monotonic() > deadline:
                break
        exabgp.kill()
    text = "".join(output)
    assert "loaded new configuration successfully" in text, text[-2000:]
    return text


def test_exabgp_loading_the_rendered_configuration_does_not_log_the_password(tmp_path: Path) -> None:
    """ExaBGP's own log (the container's stdout) at the level the announcer renders (INFO)."""
    output = exabgp_output(tmp_path)
    assert PASSWORD not in output
    assert PASSWORD_BASE64 not in output


def test_exabgp_at_debug_level_does_not_log_the_password(tmp_path: Path) -> None:
    output = exabgp_output(tmp_path, exabgp_log_level="DEBUG")
    assert PASSWORD not in output
    assert PASSWORD_BASE64 not in output
