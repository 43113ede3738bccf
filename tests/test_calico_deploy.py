"""deploy/calico/ and the calico-node sidecar: the Calico-mode configuration, and no ROUTER_ID from status.hostIP."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from announcer.calico import calico_resources, parse_ranges
from announcer.config_load import parse_config
from announcer.exabgp_conf import render_exabgp_conf
from lab.calico import CALICO_CONFIG
from lab.lab import project_tool

REPOSITORY = Path(__file__).resolve().parents[1]
DEPLOY = REPOSITORY / "deploy"
OVERLAY = DEPLOY / "calico"
DOCS = REPOSITORY / "docs" / "operations.md"
RANGES = parse_ranges(["198.51.100.0/26,2001:db8:96::/112"])


def _documents(path: Path) -> list[dict[str, Any]]:
    return [item for item in yaml.safe_load_all(path.read_text(encoding="utf-8")) if item]


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _merge(base: Any, patch: Any) -> Any:
    """Kustomize's strategic merge for what the overlay uses: maps merge, lists of named items merge by name,
    an item with `$patch: delete` removes its namesake."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in base):
        items = {item["name"]: item for item in base}
        for item in patch:
            if item.get("$patch") == "delete":
                items.pop(item["name"], None)
            else:
                items[item["name"]] = _merge(items[item["name"]], item) if item["name"] in items else item
        return list(items.values())
    return patch


def overlay_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """deploy/calico/ built as kustomize builds it: the base's resources with the overlay's patches applied."""
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text(encoding="utf-8"))
    assert overlay["resources"] == ["../"]
    base = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))
    objects = {_key(obj): obj for name in base["resources"] for obj in _documents(DEPLOY / name)}
    for patch in overlay["patches"]:
        for obj in _documents(OVERLAY / patch["path"]):
            assert _key(obj) in objects, f"{patch['path']} patches nothing in the base"
            objects[_key(obj)] = _merge(copy.deepcopy(objects[_key(obj)]), obj)
    return objects


def test_the_calico_daemonset_takes_no_router_id_from_the_node_address() -> None:
    container = overlay_objects()[("DaemonSet", "service-announcer")]["spec"]["template"]["spec"]["containers"][0]
    env = {entry["name"]: entry for entry in container["env"]}
    assert "ROUTER_ID" not in env
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "status.hostIP" not in yaml.safe_dump(container)


def test_the_calico_configmap_sits_behind_bird_like_the_lab_example(tmp_path: Path) -> None:
    """Its configuration passes calico-resources' checks, gives the same Calico resources as the lab's example,
    keeps router id 127.0.0.1 with the DaemonSet's environment, and renders an exabgp.conf the real ExaBGP loads."""
    configmap = overlay_objects()[("ConfigMap", "service-announcer")]
    document = yaml.safe_load(configmap["data"]["announcer.yaml"])
    config = parse_config(document, "deploy/calico/configmap.yaml", environ={"NODE_NAME": "node-a"})
    example = parse_config(yaml.safe_load(CALICO_CONFIG.read_text(encoding="utf-8")), "example", environ={})
    assert calico_resources(config, RANGES) == calico_resources(example, RANGES)
    assert str(config.bgp.router_id) == "127.0.0.1"
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_exabgp_conf(config, "/etc/announcer/announcer.yaml"), encoding="utf-8")
    result = subprocess.run(
        [str(project_tool("exabgp")), "validate", str(conf)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sidecar_snippet_sets_no_router_id() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### As a sidecar in calico-node") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    containers = next(iter(yaml.safe_load_all(block.group(1))))
    env = {entry["name"] for entry in containers[0]["env"]}
    assert "NODE_NAME" in env and "ROUTER_ID" not in env
