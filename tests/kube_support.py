"""Tests against the real control plane: the session's etcd and kube-apiserver, kustomize, helm, and objects made by API."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.controlplane import ADMIN, ControlPlane, binaries
from tests.factories import service

REPOSITORY = Path(__file__).resolve().parents[1]
DEPLOY = REPOSITORY / "deploy"
HELM_BUILD = REPOSITORY / "scripts" / "helm-build"
TEST_NAMESPACE = "announcer-test"


def kubectl_path() -> Path:
    """The kubectl built at the pinned Kubernetes version (scripts/kube-build; cached)."""
    return binaries() / "kubectl"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects real kustomize (`kubectl kustomize`) renders from a kustomization directory."""
    completed = subprocess.run(
        [str(kubectl_path()), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, f"kubectl kustomize {directory}: {completed.stderr}"
    return [item for item in yaml.safe_load_all(completed.stdout) if item]


@functools.cache
def helm_path() -> Path:
    """The helm built at lab/helm/go.mod's version (scripts/helm-build: about 4 minutes the first time, then cached)."""
    completed = subprocess.run([str(HELM_BUILD)], stdout=subprocess.PIPE, text=True, timeout=3600, check=False)
    assert completed.returncode == 0, f"scripts/helm-build failed (exit {completed.returncode}; its output above)"
    return Path(completed.stdout.strip().splitlines()[-1]) / "helm"


def kustomizations() -> list[Path]:
    """Every folder under deploy/ that holds a kustomization.yaml."""
    return sorted(path.parent for path in DEPLOY.rglob("kustomization.yaml"))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd and kube-apiserver on loopback for the whole session (deploy/base's RBAC applied), stopped at the end."""
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    plane.start(progress=lambda line: print(line, file=sys.stderr))
    print(f"control plane: kube-apiserver ready in {plane.ready_seconds:.2f} s on {plane.url}", file=sys.stderr)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test's own, its Services and EndpointSlices deleted afterwards (no namespace controller
    runs, so deleting the namespace would leave them)."""
    name = f"t-{zlib.crc32(request.node.nodeid.encode()):08x}"
    control_plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])
    try:
        yield name
    finally:
        control_plane.kubectl("delete", "services,endpointslices", "--all", "-n", name, "--wait=false", check=False)


def allocated_service(
    name: str,
    namespace: str,
    policy: str | None,
    families: list[str] | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Service for the API server to allocate: no clusterIP, only the policy and the families (when given)."""
    obj = service(name, namespace=namespace, labels=labels)
    if policy is not None:
        obj["spec"]["ipFamilyPolicy"] = policy
    if families is not None:
        obj["spec"]["ipFamilies"] = families
    obj["spec"].update(spec)
    return obj


def create(plane: ControlPlane, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST an object as the admin; fail the test with the API server's answer if it is refused."""
    status, answer = plane.request("POST", path, body, ADMIN)
    assert status == 201, f"POST {path}: {status} {answer}"
    assert isinstance(answer, dict)
    return answer


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until predicate returns something true; fail naming `what` at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s", pytrace=False)
        time.sleep(interval)
