"""`announcer calico-resources` agrees with the lab's Calico reference; the Calico example loads in the real ExaBGP."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from announcer.calico import calico_resources, parse_ranges
from announcer.cli import EXIT_CONFIG, EXIT_OK, main
from announcer.config import ConfigError
from announcer.config_load import parse_config
from lab.calico import CALICO_CONFIG, CALICO_RESOURCES
from lab.lab import EXAMPLE_CONFIG, project_tool

CLUSTER_RANGES = "198.51.100.0/26,2001:db8:96::/112"
SERVICE_FIELDS = ("asNumber", "serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs")


def by_kind_and_name(documents: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents if isinstance(doc, dict)}


def rendered(capsys: pytest.CaptureFixture[str], config: Path = CALICO_CONFIG) -> dict[tuple[str, str], dict[str, Any]]:
    assert main(["calico-resources", "--config", str(config), "--service-cluster-ip-range", CLUSTER_RANGES]) == EXIT_OK
    return by_kind_and_name(list(yaml.safe_load_all(capsys.readouterr().out)))


def reference() -> dict[tuple[str, str], dict[str, Any]]:
    return by_kind_and_name(list(yaml.safe_load_all(CALICO_RESOURCES.read_text(encoding="utf-8"))))


def calico_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CALICO_CONFIG.read_text(encoding="utf-8"))
    return document


def test_the_printed_resources_agree_with_the_lab_reference_on_every_field_that_matters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The ExaBGP BGPPeers and both BGPFilters equal the reference's (every field, rules in order); the
    BGPConfiguration's AS and service ranges equal the reference's. The ToR peers and the IP pools are the
    cluster's own, not printed."""
    mine, theirs = rendered(capsys), reference()
    peers = [("BGPPeer", "exabgp-local-v4"), ("BGPPeer", "exabgp-local-v6")]
    filters = [("BGPFilter", "exabgp-local"), ("BGPFilter", "tor-services")]
    assert sorted(mine) == sorted([("BGPConfiguration", "default"), *peers, *filters])
    for key in [*peers, *filters]:
        assert mine[key] == theirs[key], key
    configuration = mine[("BGPConfiguration", "default")]["spec"]
    assert configuration == {field: theirs[("BGPConfiguration", "default")]["spec"][field] for field in SERVICE_FIELDS}
    assert mine[("BGPPeer", "exabgp-local-v4")]["spec"]["sourceAddress"] == "None"


def test_the_resources_follow_the_configuration(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Another AS, port and allowlist show in the peers, the filters and the BGPConfiguration."""
    document = calico_document()
    document["bgp"]["local_as"] = 65010
    for peer in document["bgp"]["peers"]:
        peer["peer_as"], peer["port"] = 65010, 1791
    document["announce"]["external_ips"] = {"enabled": False}
    path = tmp_path / "announcer.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    mine = rendered(capsys, path)
    assert mine[("BGPPeer", "exabgp-local-v6")]["spec"] == {
        "peerIP": "[::1]:1791", "asNumber": 65010, "sourceAddress": "None", "filters": ["exabgp-local"]
    }  # fmt: skip
    spec = mine[("BGPConfiguration", "default")]["spec"]
    assert spec["asNumber"] == 65010
    assert spec["serviceExternalIPs"] == []
    cidrs = [rule.get("cidr") for rule in mine[("BGPFilter", "exabgp-local")]["spec"]["importV4"]]
    assert cidrs == ["198.51.100.0/26", "198.51.100.128/26", None]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"address": "192.0.2.11", "local_address": "192.0.2.11"}, "bgp.peers[0].address"),
        ({"passive": False}, "bgp.peers[0].passive"),
        ({"local_address": "127.0.0.2"}, "bgp.peers[0].local_address"),
        ({"port": 179}, "bgp.peers[0].port"),
        ({"peer_as": 64512}, "bgp.peers[0].peer_as"),
    ],
)
def test_a_configuration_that_cannot_sit_behind_bird_is_refused_naming_the_key(
    change: dict[str, Any], key: str
) -> None:
    document = calico_document()
    document["bgp"]["peers"][0].update(change)
    config = parse_config(document, "test", environ={"NODE_NAME": "node-a"})
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        calico_resources(config, parse_ranges([CLUSTER_RANGES]))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"announce": {"aggregation": {"cluster_ips": {"aggregation_length_ipv4": 24}}}},
         "announce.aggregation.cluster_ips.aggregation_length_ipv4"),
        ({"announce": {"aggregation": {"load_balancer_ips": {"aggregation_length_ipv6": 64}}}},
         "announce.aggregation.load_balancer_ips.aggregation_length_ipv6"),
        ({"bgp": {"local_as_node_key": "bgp.announcer.io/local-as"}}, "bgp.local_as_node_key"),
        ({"peer": {"node_selector": {"rack": "r1"}}}, "bgp.peers[0].node_selector"),
    ],
)  # fmt: skip
def test_what_bird_would_drop_or_a_per_node_as_would_break_is_refused_naming_the_key(
    change: dict[str, Any], key: str
) -> None:
    """BIRD imports host routes only from ExaBGP (BGPFilter exabgp-local), and ExaBGP shares one AS with it."""
    document = calico_document()
    for section, values in change.items():
        target = document["bgp"]["peers"][0] if section == "peer" else document.setdefault(section, {})
        target.update(values)
    config = parse_config(document, "test", environ={"NODE_NAME": "node-a"})
    with pytest.raises(ConfigError, match=re.escape(key)):
        calico_resources(config, parse_ranges([CLUSTER_RANGES]))


def test_missing_cluster_ranges_and_announced_aggregates_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_config(calico_document(), "test", environ={})
    with pytest.raises(ConfigError, match="--service-cluster-ip-range"):
        calico_resources(config, [])
    document = copy.deepcopy(calico_document())
    document["announce"]["service_cidrs"] = ["198.51.100.0/26"]
    with pytest.raises(ConfigError, match=r"announce\.service_cidrs"):
        calico_resources(parse_config(document, "test", environ={}), parse_ranges([CLUSTER_RANGES]))
    assert main(["calico-resources", "--config", str(CALICO_CONFIG), "--service-cluster-ip-range", "198.51.100.1/26"])
    assert "198.51.100.1/26" in capsys.readouterr().err
    assert main(
        ["calico-resources", "--config", str(EXAMPLE_CONFIG), "--service-cluster-ip-range", CLUSTER_RANGES]
    ) == (EXIT_CONFIG)
    assert "bgp.peers[0].address" in capsys.readouterr().err


@pytest.mark.parametrize("example", [CALICO_CONFIG, EXAMPLE_CONFIG], ids=["beside-calico", "direct-to-router"])
def test_the_rendered_exabgp_conf_is_accepted_by_the_real_exabgp(
    example: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`exabgp validate` (ExaBGP from the project's environment) loads what `announcer exabgp-conf` renders for the
    Calico example (passive on loopback:1790, explicit local addresses) and for the direct-to-router one."""
    assert main(["exabgp-conf", "--config", str(example)]) == EXIT_OK
    conf = tmp_path / "exabgp.conf"
    conf.write_text(capsys.readouterr().out, encoding="utf-8")
    if example == CALICO_CONFIG:
        text = conf.read_text(encoding="utf-8")
        for address in ("127.0.0.1", "::1"):
            assert f"neighbor {address} {{" in text and f"local-address {address};" in text
        assert text.count("passive true;") == 2 and text.count("listen 1790;") == 2
        assert "router-id 127.0.0.1;" in text
    # ExaBGP resolves a relative 'run' program (the direct example's 'announcer') on PATH: the project's tools.
    path = f"{os.environ.get('PATH', '/usr/bin:/bin')}:{project_tool('exabgp').parent}"
    result = subprocess.run(
        [str(project_tool("exabgp")), "validate", str(conf)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path, env={**os.environ, "PATH": path},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_real_exabgp_refuses_a_passive_peer_without_local_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The combination the configuration must refuse (ExaBGP 5.0.15: 'missing local-address')."""
    assert main(["exabgp-conf", "--config", str(CALICO_CONFIG)]) == EXIT_OK
    conf = tmp_path / "exabgp.conf"
    conf.write_text(capsys.readouterr().out.replace("local-address ::1;", "local-address auto;"), encoding="utf-8")
    result = subprocess.run(
        [str(project_tool("exabgp")), "validate", str(conf)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "missing local-address" in result.stdout + result.stderr
