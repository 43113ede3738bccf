"""The Helm chart (charts/service-announcer) rendered by real helm: deploy/base's objects, accepted by the API server."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from announcer.config_load import parse_config
from announcer.exabgp_conf import render_exabgp_conf
from lab.controlplane import ADMIN, ControlPlane
from lab.lab import project_tool
from tests.kube_support import DEPLOY, REPOSITORY, helm_path, kustomize

pytestmark = pytest.mark.kube

CHART = DEPLOY.parent / "charts" / "service-announcer"
CALICO_VALUES = CHART / "values-calico.yaml"
RELEASE = "service-announcer"
NAMESPACE = "service-announcer"
NODE_ENVIRONMENT = {"NODE_NAME": "node-a", "ROUTER_ID": "192.0.2.11"}
# What the chart adds to every object and kustomize does not: Helm's standard labels and the config checksum.
HELM_LABELS = (
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
CHECKSUM = "checksum/config"
NAME_LABEL = "app.kubernetes.io/name"
VARIANTS = {"default": ((), DEPLOY / "base"), "calico": (("-f", str(CALICO_VALUES)), DEPLOY / "overlays" / "calico")}


def helm(*arguments: str) -> subprocess.CompletedProcess[str]:
    """helm (scripts/helm-build's), its configuration, cache and data folders in the temporary folder, not ~."""
    folder = str(Path(tempfile.gettempdir()) / "service-announcer-helm-home")
    env = {**os.environ, "HELM_CONFIG_HOME": folder, "HELM_CACHE_HOME": folder, "HELM_DATA_HOME": folder}
    return subprocess.run(
        [str(helm_path()), *arguments], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def render(*arguments: str, release: str = RELEASE) -> list[dict[str, Any]]:
    """The objects `helm template` renders from the chart in namespace service-announcer, with extra arguments."""
    completed = helm("template", release, str(CHART), "--namespace", NAMESPACE, *arguments)
    assert completed.returncode == 0, f"helm template {' '.join(arguments)}: {completed.stderr}"
    return [item for item in yaml.safe_load_all(completed.stdout) if item]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [item for item in objects if item["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The DaemonSet's one container."""
    [found] = only(objects, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert isinstance(found, dict)
    return found


def announcer_yaml(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The configuration file the rendered ConfigMap holds."""
    document: dict[str, Any] = yaml.safe_load(only(objects, "ConfigMap")["data"]["announcer.yaml"])
    return document


def checksum(*arguments: str) -> str:
    annotation: str = only(render(*arguments), "DaemonSet")["spec"]["template"]["metadata"]["annotations"][CHECKSUM]
    return annotation


def _strip_labels(metadata: dict[str, Any], keys: tuple[str, ...]) -> None:
    labels = metadata.get("labels", {})
    for key in keys:
        labels.pop(key, None)
    if not labels:
        metadata.pop("labels", None)


def normalised(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The objects by (kind, name), ready to compare field by field: Helm's labels and the checksum annotation
    removed, kustomize's ConfigMap hash suffix removed, the configuration file parsed (comments and key order aside)."""
    result = {}
    for original in objects:
        obj = copy.deepcopy(original)
        # deploy/base labels only the DaemonSet and its pods (app.kubernetes.io/name); the chart labels everything.
        _strip_labels(obj["metadata"], HELM_LABELS if obj["kind"] == "DaemonSet" else (*HELM_LABELS, NAME_LABEL))
        if obj["kind"] == "ConfigMap":
            obj["metadata"]["name"] = re.sub(r"-[a-z0-9]{10}$", "", obj["metadata"]["name"])
            obj["data"] = {key: yaml.safe_load(value) for key, value in obj["data"].items()}
        if obj["kind"] == "DaemonSet":
            spec = obj["spec"]
            _strip_labels(spec["template"]["metadata"], HELM_LABELS)
            for key in HELM_LABELS:
                spec["selector"]["matchLabels"].pop(key, None)
            spec["template"]["metadata"]["annotations"].pop(CHECKSUM, None)
            for volume in spec["template"]["spec"]["volumes"]:
                if "configMap" in volume:
                    volume["configMap"]["name"] = re.sub(r"-[a-z0-9]{10}$", "", volume["configMap"]["name"])
        result[obj["kind"], obj["metadata"]["name"]] = obj
    return result


# --- the chart itself -----------------------------------------------------------------------------------------------
def test_the_charts_version_and_app_version_are_the_projects() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    version = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert chart["version"] == version
    assert chart["appVersion"] == version
    image = container(render())["image"]
    assert image == f"service-announcer:{version}", "the image tag defaults to the appVersion"


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_helm_lint_finds_nothing(variant: str) -> None:
    """`helm lint --strict` (warnings fail too) with the default values and with values-calico.yaml."""
    arguments, _ = VARIANTS[variant]
    linted = helm("lint", "--strict", str(CHART), *arguments)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout
    assert "[WARNING]" not in linted.stdout and "[ERROR]" not in linted.stdout, linted.stdout


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_the_chart_renders_the_objects_kustomize_renders(variant: str) -> None:
    """Default values: deploy/base (Namespace with namespace.create); values-calico.yaml: deploy/overlays/calico.
    Equal object by object, field by field, once Helm's labels and checksum and kustomize's name hash are set aside."""
    arguments, directory = VARIANTS[variant]
    charted = normalised(render(*arguments, "--set", "namespace.create=true"))
    kustomized = normalised(kustomize(directory))
    assert sorted(charted) == sorted(kustomized)
    for key, obj in kustomized.items():
        assert charted[key] == obj, f"{key}: the chart renders it differently"
    assert "Namespace" not in {obj["kind"] for obj in render(*arguments)}, "no Namespace unless namespace.create"


def test_every_object_carries_helms_labels_and_the_pods_are_selected_by_release() -> None:
    objects = render(release="edge")
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", obj["kind"]
        assert labels["app.kubernetes.io/instance"] == "edge", obj["kind"]
    spec = only(objects, "DaemonSet")["spec"]
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "service-announcer",
                                              "app.kubernetes.io/instance": "edge"}  # fmt: skip
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("calcio=true", "at '': additional properties 'calcio' not allowed"),
        ("calico=yes", "at '/calico': got string, want boolean"),
        ("stopTimeout=0", "at '/stopTimeout': minimum: got 0, want 1"),
        ("image.tga=0.2.0", "at '/image': additional properties 'tga' not allowed"),
        ("extraEnv[0].value=x", "at '/extraEnv/0': missing property 'name'"),
    ],
)
def test_values_schema_refuses_a_misspelt_or_mistyped_value_naming_it(value: str, complaint: str) -> None:
    """values.schema.json: a misspelt `calico` would otherwise be ignored and keep ROUTER_ID; helm names the key."""
    refused = helm("template", RELEASE, str(CHART), "--set", value)
    assert refused.returncode != 0
    assert complaint in refused.stderr, refused.stderr


# --- RBAC -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("release", [RELEASE, "edge"])
def test_the_rendered_rbac_is_deploy_bases_bound_to_the_pods_account(release: str) -> None:
    """The ClusterRole and the Role grant exactly deploy/base/rbac.yaml's rules (which tests/test_deploy.py ties to the
    code), and the bindings give them to the ServiceAccount the pods run as, whatever the release is called."""
    objects = render(release=release)
    base = kustomize(DEPLOY / "base")
    role, account, binding = (only(objects, kind) for kind in ("ClusterRole", "ServiceAccount", "ClusterRoleBinding"))
    assert role["rules"] == only(base, "ClusterRole")["rules"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}  # fmt: skip
    subjects = [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}]
    assert binding["subjects"] == subjects
    namespaced, namespaced_binding = only(objects, "Role"), only(objects, "RoleBinding")
    assert namespaced["rules"] == only(base, "Role")["rules"]
    assert namespaced["metadata"]["namespace"] == namespaced_binding["metadata"]["namespace"] == NAMESPACE
    assert namespaced_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                             "name": namespaced["metadata"]["name"]}  # fmt: skip
    assert namespaced_binding["subjects"] == subjects
    assert only(objects, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    expected = "service-announcer" if release == RELEASE else f"{release}-service-announcer"
    assert {obj["metadata"]["name"] for obj in objects} == {expected}


def test_without_its_own_account_and_role_it_names_the_key_it_needs() -> None:
    objects = render("--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                     "--set", "serviceAccount.name=existing")  # fmt: skip
    assert {obj["kind"] for obj in objects} == {"ConfigMap", "DaemonSet"}
    assert only(objects, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    refused = helm("template", RELEASE, str(CHART), "--set", "serviceAccount.create=false")
    assert refused.returncode != 0
    assert "serviceAccount.name: required when serviceAccount.create is false" in refused.stderr


# --- the configuration ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_the_rendered_configuration_passes_the_projects_validation(variant: str, tmp_path: Path) -> None:
    """The ConfigMap's announcer.yaml is the kustomization's file, parse_config accepts it with the DaemonSet's
    environment, `announcer check-config` accepts it, and it renders an exabgp.conf."""
    arguments, directory = VARIANTS[variant]
    objects = render(*arguments)
    document = announcer_yaml(objects)
    assert document == yaml.safe_load((directory / "announcer.yaml").read_text(encoding="utf-8"))
    env = {entry["name"]: entry for entry in container(objects)["env"]}
    environ = {name: value for name, value in NODE_ENVIRONMENT.items() if name in env}
    config = parse_config(document, f"helm {variant}", environ=environ)
    assert config.node == "node-a"
    assert str(config.bgp.router_id) == ("127.0.0.1" if variant == "calico" else "192.0.2.11")
    assert "processes [ announcer ];" in render_exabgp_conf(config, "/etc/announcer/announcer.yaml")
    path = tmp_path / "announcer.yaml"
    path.write_text(only(objects, "ConfigMap")["data"]["announcer.yaml"], encoding="utf-8")
    checked = subprocess.run([str(project_tool("announcer")), "check-config", "--config", str(path)],
                             capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **environ})  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def test_strings_that_yaml_would_read_as_other_types_reach_the_announcer_as_written(tmp_path: Path) -> None:
    """Helm re-serialises .Values.config: communities like 64513:59 (a base-60 number to YAML 1.1), 'on', '0x10' and
    addresses stay strings when the announcer's YAML reader loads the ConfigMap, and large numbers stay integers."""
    strings = ["64513:59", "on", "no", "0x10", "012", "1e3", "190:20:30", "null", "~", "2001:db8::1", "[::]:9479"]
    values = tmp_path / "values.yaml"
    # JSON, so every string is quoted in the values file helm reads (PyYAML would leave 1e3 bare, a float to helm).
    values.write_text(json.dumps({"config": {"x": strings, "bgp": {"local_as": 4294967295}}}), encoding="utf-8")
    document = announcer_yaml(render("-f", str(values)))
    assert document["x"] == strings
    assert document["bgp"]["local_as"] == 4294967295


def test_the_probes_port_and_prometheus_annotation_follow_metrics_listen() -> None:
    pod = only(render("--set", "config.metrics.listen=[::]:9555"), "DaemonSet")["spec"]["template"]
    [announcer] = pod["spec"]["containers"]
    assert announcer["ports"] == [{"name": "metrics", "containerPort": 9555, "protocol": "TCP"}]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9555"
    for probe in ("livenessProbe", "readinessProbe"):
        assert announcer[probe]["httpGet"]["port"] == "metrics"
    for value, complaint in (
        ("null", "config.metrics.listen: required"),
        ("localhost", 'config.metrics.listen: "localhost" has no port'),
    ):
        refused = helm("template", RELEASE, str(CHART), "--set", f"config.metrics.listen={value}")
        assert refused.returncode != 0
        assert complaint in refused.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (["stopTimeout=5"], "stopTimeout: 5 must be above config.speaker.shutdown_timeout (5)"),
        (["config.speaker.shutdown_timeout=12"], "stopTimeout: 10 must be above config.speaker.shutdown_timeout (12)"),
        (
            ["terminationGracePeriodSeconds=14"],
            "terminationGracePeriodSeconds: 14 must be at least stopTimeout + 5 (15)",
        ),
    ],
)
def test_stop_times_out_of_order_are_refused_naming_the_key(values: list[str], complaint: str) -> None:
    """As tests/test_deploy.py checks deploy/base: the withdraw fits in stopTimeout, which fits in the grace period."""
    arguments = [word for value in values for word in ("--set", value)]
    refused = helm("template", RELEASE, str(CHART), *arguments)
    assert refused.returncode != 0
    assert complaint in refused.stderr, refused.stderr
    accepted = render("--set", "config.speaker.shutdown_timeout=2.5", "--set", "stopTimeout=3",
                      "--set", "terminationGracePeriodSeconds=8")  # fmt: skip
    assert only(accepted, "DaemonSet")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 8
    assert {"name": "ANNOUNCER_STOP_TIMEOUT", "value": "3"} in container(accepted)["env"]


# --- the checksum: a configuration change rolls the pods ----------------------------------------------------------
def test_a_configuration_change_changes_the_pods_checksum_and_nothing_else_does() -> None:
    default = checksum()
    assert re.fullmatch(r"[0-9a-f]{64}", default)
    assert checksum() == default, "the same values, the same checksum"
    assert checksum("--set", "config.bgp.hold_time=90") != default
    assert checksum("--set", "config.bgp.peers[0].peer_as=64999") != default
    assert checksum("-f", str(CALICO_VALUES)) != default
    assert checksum("--set", "image.tag=0.2.0", "--set", "resources.limits.cpu=2", "--set", "calico=true") == default


def test_calico_drops_only_the_router_id_from_the_environment() -> None:
    def env(*arguments: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = container(render(*arguments))["env"]
        return found

    default, calico = env(), env("--set", "calico=true")
    assert [entry for entry in default if entry["name"] != "ROUTER_ID"] == calico
    assert {"name": "ROUTER_ID", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}} in default
    secret = {"name": "BGP_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "bgp", "key": "password"}}}
    values = ["--set-json", f"extraEnv={json.dumps([secret])}"]
    assert env(*values)[-1] == secret


# --- the real API server --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_the_api_server_accepts_every_rendered_object(control_plane: ControlPlane, variant: str) -> None:
    """Server-side dry run of `helm template` (namespace.create on: the Namespace too) on the real kube-apiserver."""
    arguments, _ = VARIANTS[variant]
    objects = render(*arguments, "--set", "namespace.create=true")
    assert {obj["kind"] for obj in objects} == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                                "Role", "RoleBinding", "ConfigMap", "DaemonSet"}  # fmt: skip
    applied = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "--force-conflicts", "-f", "-",
        input_text=yaml.safe_dump_all(objects), check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    lines = applied.stdout.splitlines()
    for obj in objects:
        kind = obj["kind"].lower()
        assert any(re.fullmatch(rf"{kind}(\.[a-z0-9.]+)?/{obj['metadata']['name']} serverside-applied \(server dry run\)",
                                line) for line in lines), applied.stdout  # fmt: skip


def test_install_upgrade_and_uninstall_on_the_real_api_server(control_plane: ControlPlane) -> None:
    """`helm install` creates the objects (the account may list Services), `helm upgrade` with a changed configuration
    changes the pod template (a rollout) and with the same values does not, `helm uninstall` removes every object."""
    kubeconfig, namespace, release = str(control_plane.kubeconfig(ADMIN)), "helm-install-test", "edge"
    name = f"{release}-service-announcer"

    def daemon_set() -> dict[str, Any]:
        shown = control_plane.kubectl("get", "daemonset", name, "-n", namespace, "-o", "json")
        found: dict[str, Any] = json.loads(shown.stdout)
        return found

    installed = helm("install", release, str(CHART), "-n", namespace, "--create-namespace", "--kubeconfig", kubeconfig)
    assert installed.returncode == 0, installed.stderr
    try:
        first = daemon_set()
        account = f"system:serviceaccount:{namespace}:{name}"
        for verb, resource, answer in (("list", "services", "yes"), ("get", "nodes", "yes"), ("list", "secrets", "no")):
            allowed = control_plane.kubectl("auth", "can-i", verb, resource, "-A", "--as", account, check=False)
            assert allowed.stdout.strip() == answer, f"{verb} {resource}: {allowed.stdout}{allowed.stderr}"
        for resource, where, answer in (("pods", namespace, "yes"), ("daemonsets.apps", namespace, "yes"),
                                        ("pods", "default", "no")):  # fmt: skip
            allowed = control_plane.kubectl("auth", "can-i", "get", resource, "-n", where, "--as", account, check=False)
            assert allowed.stdout.strip() == answer, f"get {resource} in {where}: {allowed.stdout}{allowed.stderr}"
        upgrade = ("upgrade", release, str(CHART), "-n", namespace, "--kubeconfig", kubeconfig)
        same = helm(*upgrade)
        assert same.returncode == 0, same.stderr
        assert daemon_set()["metadata"]["generation"] == first["metadata"]["generation"], "nothing changed, no rollout"
        changed = helm(*upgrade, "--set", "config.bgp.hold_time=90")
        assert changed.returncode == 0, changed.stderr
        second = daemon_set()
        assert second["metadata"]["generation"] == first["metadata"]["generation"] + 1
        before, after = (obj["spec"]["template"]["metadata"]["annotations"][CHECKSUM] for obj in (first, second))
        assert before != after
        configmap = control_plane.kubectl("get", "configmap", name, "-n", namespace, "-o", "json")
        assert yaml.safe_load(json.loads(configmap.stdout)["data"]["announcer.yaml"])["bgp"]["hold_time"] == 90
    finally:
        uninstalled = helm("uninstall", release, "-n", namespace, "--kubeconfig", kubeconfig)
    assert uninstalled.returncode == 0, uninstalled.stderr
    for kind, scope in (("daemonset", ("-n", namespace)), ("configmap", ("-n", namespace)), ("clusterrole", ()),
                        ("clusterrolebinding", ()), ("serviceaccount", ("-n", namespace)), ("role", ("-n", namespace)),
                        ("rolebinding", ("-n", namespace))):  # fmt: skip
        gone = control_plane.kubectl("get", kind, name, *scope, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, f"{kind}/{name} left after helm uninstall"
