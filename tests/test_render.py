"""`announcer render`: what a node would announce, and the reason for every address it would not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from lab.fakeapi import FakeApiServer
from lab.lab import kubeconfig_text
from tests.conftest import BASE_CONFIG
from tests.factories import endpoint, endpoint_slice, service


def run_render(
    tmp_path: Path, objects: list[dict[str, Any]], node: str, output: str
) -> subprocess.CompletedProcess[str]:
    """`announcer render --from-file` over a kubectl-style List of these objects."""
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    config = tmp_path / "announcer.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG))
    return subprocess.run(
        [sys.executable, "-m", "announcer", "render", "--config", str(config), "--node", node,
         "--from-file", str(cluster), "--output", output],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def render(tmp_path: Path, output: str, node: str = "node-a") -> str:
    objects = [
        service("web", ["198.51.100.10", "2001:db8:96::a"]),
        service("local", ["198.51.100.11", "2001:db8:96::b"], service_type="NodePort", external_traffic_policy="Local"),
        endpoint_slice("local", "IPv4", [endpoint("node-a", "192.0.2.50")]),
        service("headless", ["None"]),
        service("ext", ["198.51.100.12"], external_ips=["203.0.113.7"]),
    ]
    result = run_render(tmp_path, objects, node, output)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_json_view_lists_each_prefix_with_its_peers_and_each_refused_address_with_its_reason(
    tmp_path: Path,
) -> None:
    rows = json.loads(render(tmp_path, "json"))["rows"]
    announced = {(row["address"], row["service"], row["peers"]) for row in rows if row["announced"]}
    refused = {(row["address"], row["service"], row["detail"]) for row in rows if not row["announced"]}
    v4_peers, v6_peers = "192.0.2.1, 192.0.2.5", "2001:db8::1"
    assert announced == {
        ("198.51.100.10/32", "default/web", v4_peers),
        ("2001:db8:96::a/128", "default/web", v6_peers),
        ("198.51.100.11/32", "default/local", v4_peers),
        ("198.51.100.12/32", "default/ext", v4_peers),
    }
    assert refused == {
        ("2001:db8:96::b", "default/local", "noLocalEndpoint(IPv6)"),
        ("-", "default/headless", "headless"),
        ("203.0.113.7", "default/ext", "outsideAllowlist"),
    }


def test_another_node_without_the_local_endpoint_would_announce_neither_address_of_the_local_service(
    tmp_path: Path,
) -> None:
    rows = json.loads(render(tmp_path, "json", node="node-b"))["rows"]
    local = {(row["address"], row["detail"]) for row in rows if row["service"] == "default/local"}
    assert local == {("198.51.100.11", "noLocalEndpoint(IPv4)"), ("2001:db8:96::b", "noLocalEndpoint(IPv6)")}


def test_the_table_view_has_a_header_and_one_line_per_row(tmp_path: Path) -> None:
    lines = render(tmp_path, "table").splitlines()
    assert lines[0] == "node node-a"
    assert lines[1].split() == [
        "FAMILY",
        "PREFIX/ADDRESS",
        "KIND",
        "SERVICE",
        "ANNOUNCED",
        "ATTRIBUTES/REASON",
        "PEERS",
    ]
    assert len(lines) == 2 + 7
    assert lines[2].split()[:5] == ["IPv4", "198.51.100.10/32", "clusterIP", "default/web", "yes"]


def test_render_from_the_cluster_lists_page_by_page_like_the_daemon(tmp_path: Path) -> None:
    """Without --from-file, render reads both resources with the daemon's paginated, time-bounded listing."""
    with FakeApiServer().start() as api:
        for index in range(5):
            api.apply(service(f"s{index}", [f"198.51.100.{index + 1}"]))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(kubeconfig_text(api.url))
        config = tmp_path / "announcer.yaml"
        config.write_text(yaml.safe_dump({**BASE_CONFIG, "watch": {"kubeconfig": str(kubeconfig), "page_size": 2}}))
        result = subprocess.run(
            [sys.executable, "-m", "announcer", "render", "--config", str(config), "--output", "json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        requests = api.stats()["list_requests"]
    rows = json.loads(result.stdout)["rows"]
    assert sorted(row["address"] for row in rows if row["announced"]) == [f"198.51.100.{i}/32" for i in range(1, 6)]
    assert requests == {"services": 3, "endpointslices": 1, "nodes": 0}, "no Node read while node state is off"


def test_an_item_whose_kind_is_not_a_string_is_passed_over_not_a_crash(tmp_path: Path) -> None:
    """kubectl output edited by hand (or hostile): a list or a mapping as `kind` is no kind the announcer reads."""
    objects: list[dict[str, Any]] = [{"kind": ["Service"]}, {"kind": {"Service": 1}}, service("web", ["198.51.100.10"])]
    result = run_render(tmp_path, objects, "node-a", "json")
    assert result.returncode == 0, result.stderr
    assert "198.51.100.10/32" in result.stdout


def test_render_into_a_reader_that_has_gone_exits_quietly(tmp_path: Path) -> None:
    """`announcer render ... | head -1` once head has exited: writing the table meets EPIPE, and render exits 0 with
    no traceback, also none from the interpreter's flush at exit (issue 18, item 9). The pipe's reading end is closed
    before render writes, which is what a reader that stopped early leaves."""
    config = tmp_path / "announcer.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG))
    listing = tmp_path / "objects.json"
    listing.write_text(json.dumps({"kind": "List", "items": [service("web", ["198.51.100.10"])]}))
    command = [sys.executable, "-m", "announcer", "render", "--config", str(config), "--from-file", str(listing)]
    reading, writing = os.pipe()
    os.close(reading)
    try:
        done = subprocess.run(command, stdout=writing, stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(writing)
    errors = done.stderr.decode()
    assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors
    assert done.returncode == 0


def test_render_names_each_annotation_the_policy_would_ignore(tmp_path: Path) -> None:
    """A preview before an upgrade: the refused annotation on stderr, the route with the configured attributes."""
    annotated = service("web", ["198.51.100.10"], annotations={"bgp.announcer.io/communities": "blackhole"})
    result = run_render(tmp_path, [annotated], "node-a", "json")
    assert result.returncode == 0, result.stderr
    assert (
        "Service default/web: metadata.annotations[bgp.announcer.io/communities]: refused by "
        "annotations.communities.enabled (annotations of this kind are not enabled); ignored"
    ) in result.stderr
    assert "65535:666" not in result.stdout
