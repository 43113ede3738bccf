"""Peers per node (issue #11, item 3): a peer's node selector, the node's own AS, and where the labels come from."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from announcer.cli import main
from announcer.config import ConfigError
from announcer.exabgp_conf import for_node, needs_node, node_local_as, render_exabgp_conf, selected_peers
from announcer.node_source import node_from_labels, only_peers
from announcer.policy import NodeView, selector_matches
from lab.fakeapi import FakeApiServer
from lab.fakeapi.nodes import node_object
from lab.lab import kubeconfig_text
from tests.conftest import BASE_CONFIG, make_config

RACKS: dict[str, Any] = {
    "local_as": 64513,
    "router_id": "192.0.2.11",
    "local_as_node_key": "bgp.announcer.io/local-as",
    "peers": [
        {"address": "192.0.2.1", "peer_as": 64512, "node_selector": {"topology.kubernetes.io/zone": "rack1"}},
        {"address": "192.0.2.5", "peer_as": 64514, "node_selector": {"topology.kubernetes.io/zone": "rack2"}},
        {"address": "2001:db8::1", "peer_as": 64512},
    ],
}
RACK1 = NodeView("node-a", {"topology.kubernetes.io/zone": "rack1"}, {})
RACK2 = NodeView("node-b", {"topology.kubernetes.io/zone": "rack2", "bgp.announcer.io/local-as": "64620"}, {})


def racks() -> Any:
    return make_config(bgp=RACKS)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"a": "1"}, {"a": "1", "b": "2"}, True),
        ({"a": "1", "b": "2"}, {"a": "1"}, False),
        ({"a": "1"}, {"a": "2"}, False),
        ({"a": ""}, {}, False),
        ({"a": ""}, {"a": ""}, True),
    ],
)
def test_match_labels_semantics(selector: dict[str, str], labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


def test_each_rack_gets_its_own_router_and_the_unselected_peer_of_every_node() -> None:
    config = racks()
    assert [str(peer.address) for peer in selected_peers(config, RACK1)] == ["192.0.2.1", "2001:db8::1"]
    assert [str(peer.address) for peer in selected_peers(config, RACK2)] == ["192.0.2.5", "2001:db8::1"]


def test_the_node_s_as_comes_from_its_label_then_its_annotation_else_local_as() -> None:
    config = racks()
    assert node_local_as(config, RACK1) == 64513
    assert node_local_as(config, RACK2) == 64620
    annotated = NodeView("node-c", {}, {"bgp.announcer.io/local-as": "4200000001"})
    assert node_local_as(config, annotated) == 4200000001


@pytest.mark.parametrize("value", ["0", "4294967296", "64512 shutdown", "-1", "١٢"])
def test_a_bad_as_on_the_node_is_refused_naming_the_node_and_the_key(value: str) -> None:
    node = NodeView("node-c", {"bgp.announcer.io/local-as": value}, {})
    with pytest.raises(ConfigError, match=r"Node node-c: label bgp.announcer.io/local-as: .* not an AS number"):
        node_local_as(racks(), node)


def test_rendering_for_a_rack_holds_only_its_peers_with_its_as_and_tells_the_process_which() -> None:
    text = render_exabgp_conf(for_node(racks(), RACK2), "/etc/announcer.yaml")
    assert "neighbor 192.0.2.5 {" in text
    assert "neighbor 192.0.2.1 {" not in text
    assert text.count("local-as 64620;") == 2
    assert "run --config /etc/announcer.yaml --peer 192.0.2.5 --peer 2001:db8::1;" in text


def test_a_node_whose_selected_peers_carry_no_selector_still_tells_the_process_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Peers rack1 (IPv4), every node (IPv4) and rack1 (IPv6), no AS from the Node: a rack2 node's exabgp.conf holds
    only the unselected IPv4 peer, and the process must command only it (else its IPv6 lines name a neighbour
    ExaBGP does not have, answered 'error' for ever)."""
    bgp = {
        "local_as": 64513,
        "router_id": "192.0.2.11",
        "peers": [
            {"address": "192.0.2.1", "peer_as": 64512, "node_selector": {"rack": "r1"}},
            {"address": "192.0.2.5", "peer_as": 64512},
            {"address": "2001:db8::1", "peer_as": 64512, "node_selector": {"rack": "r1"}},
        ],
    }
    path = tmp_path / "announcer.yaml"
    path.write_text(yaml.safe_dump({**BASE_CONFIG, "bgp": bgp}))
    assert main(["exabgp-conf", "--config", str(path), "--node-labels", "rack=r2"]) == 0
    text = capsys.readouterr().out
    assert "neighbor 192.0.2.5 {" in text
    assert "neighbor 192.0.2.1 {" not in text
    assert "neighbor 2001:db8::1 {" not in text
    assert f"run --config {path.resolve()} --peer 192.0.2.5;" in text


def test_a_configuration_that_selects_nothing_by_node_renders_as_before() -> None:
    config = make_config()
    assert not needs_node(config)
    assert for_node(config, None) is config
    assert "--peer" not in render_exabgp_conf(config, "/c.yaml")


def test_a_node_no_peer_selects_is_an_error_naming_it() -> None:
    bgp = copy.deepcopy(RACKS)
    bgp["peers"] = bgp["peers"][:2]
    with pytest.raises(ConfigError, match=r"bgp.peers: no peer's node_selector matches Node node-z"):
        for_node(make_config(bgp=bgp), NodeView("node-z", {}, {}))


@pytest.mark.parametrize(
    ("selector", "key"),
    [({"Bad Key": "x"}, "bgp.peers.0.node_selector"), ({"rack": "a b"}, "bgp.peers.0.node_selector")],
)
def test_a_node_selector_that_is_not_labels_is_refused_naming_the_key(selector: dict[str, str], key: str) -> None:
    bgp = copy.deepcopy(RACKS)
    bgp["peers"][0]["node_selector"] = selector
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_config(bgp=bgp)


def test_a_local_as_key_that_is_not_a_label_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"bgp\.local_as_node_key: .*label key"):
        make_config(bgp={**RACKS, "local_as_node_key": "no spaces allowed"})


def test_run_peer_restricts_to_configured_peers_and_refuses_others() -> None:
    config = only_peers(racks(), ["192.0.2.5", "2001:db8::1"])
    assert [str(peer.address) for peer in config.bgp.peers] == ["192.0.2.5", "2001:db8::1"]
    with pytest.raises(ConfigError, match=r"--peer: 192\.0\.2\.9: not a configured peer"):
        only_peers(racks(), ["192.0.2.9"])


def test_node_labels_from_the_command_line() -> None:
    assert node_from_labels("n", "a=1, b=2,c=").labels == {"a": "1", "b": "2", "c": ""}
    with pytest.raises(ConfigError, match="--node-labels: 'a' is not KEY=VALUE"):
        node_from_labels("n", "a")


# --- the commands ------------------------------------------------------------------------------------------------
def write_config(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "announcer.yaml"
    path.write_text(yaml.safe_dump({**BASE_CONFIG, "bgp": RACKS, **extra}))
    return path


def test_check_config_explains_what_a_node_with_these_labels_gets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    labels = "topology.kubernetes.io/zone=rack2,bgp.announcer.io/local-as=64620"
    assert main(["check-config", "--config", str(config), "--node", "node-b", "--node-labels", labels]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "node node-b: local-as 64620"
    assert [line.split()[:2] for line in out[1:]] == [["skip", "192.0.2.1"], ["peer", "192.0.2.5"],
                                                       ["peer", "2001:db8::1"]]  # fmt: skip


def test_check_config_fails_for_a_node_no_peer_selects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "announcer.yaml"
    path.write_text(yaml.safe_dump({**BASE_CONFIG, "bgp": {**RACKS, "peers": RACKS["peers"][:2]}}))
    assert main(["check-config", "--config", str(path), "--node-labels", "rack=none"]) == 2
    captured = capsys.readouterr()
    assert "error: no peer selects this node" in captured.out
    assert "no peer's node_selector matches Node node-a" in captured.err


def test_exabgp_conf_offline_from_a_node_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    node_file = tmp_path / "node.json"
    node_file.write_text(json.dumps(node_object("node-a", labels={"topology.kubernetes.io/zone": "rack1"})))
    assert main(["exabgp-conf", "--config", str(config), "--node-from-file", str(node_file)]) == 0
    text = capsys.readouterr().out
    assert "neighbor 192.0.2.1 {" in text
    assert "neighbor 192.0.2.5 {" not in text


def test_exabgp_conf_reads_this_node_s_labels_from_the_api_server(tmp_path: Path) -> None:
    with FakeApiServer().start() as api:
        api.apply(node_object("node-a", labels={"topology.kubernetes.io/zone": "rack1"}))
        api.apply(node_object("node-b", labels={"topology.kubernetes.io/zone": "rack2"}))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(kubeconfig_text(api.url))
        config = write_config(tmp_path, watch={"kubeconfig": str(kubeconfig)})
        command = [sys.executable, "-m", "announcer", "exabgp-conf", "--config", str(config)]
        result = subprocess.run(command, capture_output=True, text=True, env={"NODE_NAME": "node-b"}, check=False)
        missing = subprocess.run(command, capture_output=True, text=True, env={"NODE_NAME": "node-z"}, check=False)
        requests = api.stats()
    assert result.returncode == 0, result.stderr
    assert "neighbor 192.0.2.5 {" in result.stdout
    assert "neighbor 192.0.2.1 {" not in result.stdout
    assert missing.returncode == 2
    assert "Node node-z: not found" in missing.stderr
    assert requests["list_requests"]["nodes"] == 0, "one GET of this node, no list of every node"


def test_exabgp_conf_names_the_node_when_the_api_server_cannot_be_reached(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text("http://127.0.0.1:9"))  # discard port: connection refused
    config = write_config(tmp_path, watch={"kubeconfig": str(kubeconfig), "request_timeout": 2})
    command = [sys.executable, "-m", "announcer", "exabgp-conf", "--config", str(config)]
    result = subprocess.run(command, capture_output=True, text=True, env={"NODE_NAME": "node-b"}, check=False)
    assert result.returncode == 2
    assert "Node node-b: cannot be read from the API server" in result.stderr
    assert "Traceback" not in result.stderr
