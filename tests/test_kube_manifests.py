"""The manifests as users apply them: every kustomization under deploy/ built by real kustomize, the objects
accepted by the real kube-apiserver (server-side dry run), and the RBAC it grants checked by the API server itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab.controlplane import ANNOUNCER, ControlPlane
from tests.kube_support import DEPLOY, kustomizations, kustomize

pytestmark = pytest.mark.kube


def test_every_kustomization_under_deploy_is_found() -> None:
    assert [path.relative_to(DEPLOY).as_posix() for path in kustomizations()] == ["base", "overlays/calico"]


@pytest.mark.parametrize("directory", kustomizations(), ids=lambda path: path.relative_to(DEPLOY).as_posix())
def test_kustomize_renders_it_and_the_api_server_accepts_every_object(
    control_plane: ControlPlane, directory: Path
) -> None:
    objects = kustomize(directory)
    assert {obj["kind"] for obj in objects} >= {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                                "RoleBinding", "DaemonSet"}  # fmt: skip
    applied = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "--force-conflicts", "-f", "-",
        input_text=yaml.safe_dump_all(objects), check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    for obj in objects:
        assert f"{obj['kind'].lower()}/{obj['metadata']['name']} serverside-applied (server dry run)" in (
            applied.stdout.replace("clusterrolebinding.rbac.authorization.k8s.io", "clusterrolebinding")
            .replace("clusterrole.rbac.authorization.k8s.io", "clusterrole")
            .replace("rolebinding.rbac.authorization.k8s.io", "rolebinding")
            .replace("role.rbac.authorization.k8s.io", "role")
            .replace("daemonset.apps", "daemonset")
        ), applied.stdout


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("list", "services", True),
        ("watch", "services", True),
        ("list", "endpointslices.discovery.k8s.io", True),
        ("watch", "endpointslices.discovery.k8s.io", True),
        ("get", "nodes", True),
        ("list", "nodes", True),
        ("watch", "nodes", True),
        ("get", "services", False),
        ("create", "services", False),
        ("list", "secrets", False),
        ("list", "pods", False),
        ("patch", "nodes", False),
        ("list", "endpoints", False),
    ],
)
def test_the_api_server_grants_the_announcers_account_exactly_what_it_calls(
    control_plane: ControlPlane, verb: str, resource: str, allowed: bool
) -> None:
    """`kubectl auth can-i` as the ServiceAccount deploy/base/rbac.yaml binds (applied by the control plane)."""
    answer = control_plane.kubectl("auth", "can-i", verb, resource, "--all-namespaces", identity=ANNOUNCER, check=False)
    assert answer.stdout.strip() == ("yes" if allowed else "no"), answer.stdout + answer.stderr


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("get", "pods", "service-announcer", True),
        ("get", "daemonsets.apps", "service-announcer", True),
        ("list", "pods", "service-announcer", False),
        ("watch", "pods", "service-announcer", False),
        ("list", "daemonsets.apps", "service-announcer", False),
        ("update", "daemonsets.apps", "service-announcer", False),
        ("delete", "pods", "service-announcer", False),
        ("get", "pods", "default", False),
        ("get", "daemonsets.apps", "kube-system", False),
        ("get", "secrets", "service-announcer", False),
        ("patch", "pods", "service-announcer", False),
    ],
)
def test_the_announcers_account_may_get_pods_and_daemonsets_only_in_its_own_namespace(
    control_plane: ControlPlane, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    """The Role deploy/base/rbac.yaml binds in the product's namespace: the stop reads its own Pod and DaemonSet."""
    answer = control_plane.kubectl("auth", "can-i", verb, resource, "-n", namespace, identity=ANNOUNCER, check=False)
    assert answer.stdout.strip() == ("yes" if allowed else "no"), answer.stdout + answer.stderr
