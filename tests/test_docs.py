"""The documentation points at what exists: links and repository paths resolve inside the checkout, BIRD commands fit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")],
    key=lambda path: path.relative_to(ROOT).as_posix(),
)
# `deploy/base/rbac.yaml`, `tests/test_helm.py::test_...`, `lab/files/calico-3.29/`: a path in the repository (not a
# pattern such as `lab/files/frr-rack{1,2}.conf`).
REPOSITORY_PATH = re.compile(
    r"`((?:announcer|bench|charts|deploy|docker|docs|examples|lab|scripts|tests)/[^`\s:*<{]*)(?:`|::)"
)
# A relative path that climbs out of the document's folder, in a link or in the text.
CLIMBING = re.compile(r"(?<![\w./])((?:\.\./)+[\w./-]+)")


def ids(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("document", DOCUMENTS, ids=ids)
def test_every_link_and_repository_path_exists_inside_the_checkout(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)", text):
        if re.match(r"[a-z]+://", target):
            continue
        resolved = (document.parent / target).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            missing.append(f"link {target}")
    for path in REPOSITORY_PATH.findall(text):
        if not (ROOT / path.rstrip("/.,")).exists():
            missing.append(f"path {path}")
    for path in CLIMBING.findall(text):
        resolved = (document.parent / path).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            missing.append(f"relative path {path}")
    assert missing == []


def test_calico_nodes_bird_is_asked_with_birdcl_on_its_own_socket() -> None:
    """calico-node ships birdcl and birdcl6, not birdc: BIRD's socket /var/run/calico/bird.ctl, BIRD6's bird6.ctl."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    commands = re.findall(r"\b(bird\w*) -s (/var/run/calico/\S+)", text)
    assert commands, "docs/operations.md shows how to ask calico-node's BIRD"
    for client, socket in commands:
        assert (client, socket) in (("birdcl", "/var/run/calico/bird.ctl"), ("birdcl6", "/var/run/calico/bird6.ctl"))
    assert {client for client, _ in commands} == {"birdcl", "birdcl6"}


def _granted(role: dict[str, Any]) -> dict[str, set[str]]:
    return {
        (f"{group}/{resource}" if group else resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def _stated(text: str) -> dict[str, set[str]]:
    stated: dict[str, set[str]] = {}
    for verbs, resources in re.findall(r"((?:`\w+`(?:, | and |,? and )?)+) on ((?:`[\w./]+`(?: and )?)+)", text):
        for resource in re.findall(r"`([\w./]+)`", resources):
            stated[resource] = set(re.findall(r"`(\w+)`", verbs))
    return stated


def test_the_operations_guide_states_the_cluster_roles_grants_exactly() -> None:
    """docs/operations.md's row for base/rbac.yaml names each resource with exactly the verbs the ClusterRole grants
    (it once said "nothing else" while the role also granted nodes), then, after the ClusterRoleBinding, exactly the
    namespaced Role's."""
    rbac = [
        document for document in yaml.safe_load_all((ROOT / "deploy" / "base" / "rbac.yaml").read_text()) if document
    ]
    cluster_role = next(document for document in rbac if document["kind"] == "ClusterRole")
    role = next(document for document in rbac if document["kind"] == "Role")
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `base/rbac.yaml` |"))
    cluster_part, binding, role_part = row.partition("ClusterRoleBinding")
    assert binding, "the row names the ClusterRoleBinding between the two roles"
    assert _stated(cluster_part) == _granted(cluster_role)
    assert _stated(role_part) == _granted(role)
    assert "RoleBinding" in role_part
    assert "nothing else" not in row
