"""deploy/overlays/calico/ and the calico-node sidecar: the Calico-mode configuration, and no ROUTER_ID from status.hostIP."""

from __future__ import annotations

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
from tests.kube_support import kustomize

REPOSITORY = Path(__file__).resolve().parents[1]
DEPLOY = REPOSITORY / "deploy"
OVERLAY = DEPLOY / "overlays" / "calico"
DOCS = REPOSITORY / "docs" / "operations.md"
RANGES = parse_ranges(["198.51.100.0/26,2001:db8:96::/112"])


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def overlay_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """deploy/overlays/calico/ as real kustomize (`kubectl kustomize`) builds it."""
    return {_key(obj): obj for obj in kustomize(OVERLAY)}


def test_the_calico_daemonset_takes_no_router_id_from_the_node_address() -> None:
    container = overlay_objects()[("DaemonSet", "service-announcer")]["spec"]["template"]["spec"]["containers"][0]
    env = {entry["name"]: entry for entry in container["env"]}
    assert "ROUTER_ID" not in env
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "status.hostIP" not in yaml.safe_dump(container)


def test_the_calico_configmap_sits_behind_bird_like_the_lab_example(tmp_path: Path) -> None:
    """Its configuration passes calico-resources' checks, gives the same Calico resources as the lab's example,
    keeps router id 127.0.0.1 with the DaemonSet's environment, and renders an exabgp.conf the real ExaBGP loads."""
    objects = overlay_objects()
    [configmap] = [obj for (kind, _), obj in objects.items() if kind == "ConfigMap"]
    volumes = objects[("DaemonSet", "service-announcer")]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": configmap["metadata"]["name"]}} in volumes
    document = yaml.safe_load(configmap["data"]["announcer.yaml"])
    assert document == yaml.safe_load((OVERLAY / "announcer.yaml").read_text(encoding="utf-8")), "the overlay's file"
    config = parse_config(document, "deploy/overlays/calico/announcer.yaml", environ={"NODE_NAME": "node-a"})
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
