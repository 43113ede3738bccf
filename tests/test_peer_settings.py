"""Per-peer settings: hold time, TTL (eBGP multihop) and GTSM, MD5 from a file, and which address kinds a peer gets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from announcer.config import Config, ConfigError
from announcer.config_load import parse_config, read_passwords
from announcer.exabgp_conf import render_exabgp_conf
from announcer.kube import Relisted, Resource
from tests.conftest import BASE_CONFIG
from tests.factories import service
from tests.test_exabgp_roundtrip import exabgp_neighbours, md5_key_exabgp_uses
from tests.test_state import Harness, svc


def config_with(*peers: dict[str, Any], **sections: Any) -> Config:
    document = copy.deepcopy(BASE_CONFIG)
    document["bgp"]["peers"] = list(peers)
    document.update(sections)
    return parse_config(document, "test", environ={})


TUNED = {"address": "192.0.2.1", "peer_as": 64512, "hold_time": 9, "ttl": 2, "min_ttl": 254}
PLAIN = {"address": "192.0.2.5", "peer_as": 64512}
V6 = {"address": "2001:db8::1", "peer_as": 64512}


def test_exabgp_reads_back_each_peer_s_hold_time_ttl_and_minimum_ttl_as_configured(tmp_path: Path) -> None:
    """The tuned peer gets its own values; the other keeps bgp.hold_time and ExaBGP's defaults (no TTL set)."""
    text = render_exabgp_conf(config_with(TUNED, PLAIN, V6), "/x.yaml")
    neighbours = exabgp_neighbours(tmp_path, text)
    tuned, plain = neighbours["192.0.2.1"], neighbours["192.0.2.5"]
    assert (tuned["hold-time"], tuned["outgoing-ttl"], tuned["incoming-ttl"]) == (9, 2, 254)
    assert (plain["hold-time"], plain["outgoing-ttl"], plain["incoming-ttl"]) == (90, None, None)


def test_a_password_from_a_mounted_secret_file_reaches_exabgp_exactly(tmp_path: Path) -> None:
    secret = tmp_path / "bgp-password"
    secret.write_text("s3cret;#{x}\n")
    config = config_with({**PLAIN, "local_address": "192.0.2.11", "password": {"file": str(secret)}}, V6)
    text = render_exabgp_conf(config, "/x.yaml", read_passwords(config, {}))
    assert "s3cret" not in text
    assert md5_key_exabgp_uses(exabgp_neighbours(tmp_path, text)["192.0.2.5"]) == b"s3cret;#{x}"


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ({"hold_time": 2}, "bgp.peers.0.hold_time"),
        ({"hold_time": 65536}, "bgp.peers.0.hold_time"),
        ({"ttl": 0}, "bgp.peers.0.ttl"),
        ({"ttl": 256}, "bgp.peers.0.ttl"),
        ({"min_ttl": 0}, "bgp.peers.0.min_ttl"),
        ({"keepalive": 3}, "bgp.peers.0.keepalive"),
        ({"receive": {"cluster_ip": False}}, "bgp.peers.0.receive.cluster_ip"),
        ({"receive": "none"}, "bgp.peers.0.receive"),
    ],
    ids=str,
)
def test_check_config_refuses_a_bad_peer_setting_naming_its_key(peer: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_with({**PLAIN, **peer}, V6)
    assert f"test: {key}: " in str(caught.value)


LB_SERVICE = service("web", ["198.51.100.10"], service_type="LoadBalancer", ingress=[{"ip": "198.51.100.130"}])


def test_a_peer_excluded_from_load_balancer_ips_is_never_named_for_them() -> None:
    """192.0.2.5 takes cluster IPs only: the LB /32 goes to 192.0.2.1 alone, the cluster /32 to both, and the
    LB /32's withdrawal names 192.0.2.1 alone too."""
    config = config_with(
        {"address": "192.0.2.1", "peer_as": 64512},
        {**PLAIN, "receive": {"load_balancer_ips": False}},
        V6,
        announce=BASE_CONFIG["announce"],
    )
    harness = Harness(config)
    harness.list_everything(LB_SERVICE)
    lines = [line for line in harness.speaker.take() if "announce" in line]
    assert lines == [
        "neighbor 192.0.2.1 , neighbor 192.0.2.5 announce route 198.51.100.10/32 next-hop self",
        "neighbor 192.0.2.1 announce route 198.51.100.130/32 next-hop self",
    ]
    harness.speaker.answer(True)
    harness.handle_posted()
    harness.feed(Relisted(Resource.SERVICES, [svc(service("web", ["198.51.100.10"]))]))
    assert harness.speaker.take() == ["neighbor 192.0.2.1 withdraw route 198.51.100.130/32 next-hop self"]


def test_a_restarted_announcer_leaves_a_route_held_only_by_its_receivers_alone() -> None:
    """ExaBGP holds the LB /32 for 192.0.2.1 only (the peer excluded never had it): nothing is sent again."""
    from tests.test_state import held_line

    config = config_with(
        {"address": "192.0.2.1", "peer_as": 64512},
        {**PLAIN, "receive": {"load_balancer_ips": False}},
        V6,
        announce=BASE_CONFIG["announce"],
    )
    held = [held_line(peer, "198.51.100.10/32") for peer in ("192.0.2.1", "192.0.2.5")]
    held.append(held_line("192.0.2.1", "198.51.100.130/32"))
    harness = Harness(config, held=held)
    harness.list_everything(LB_SERVICE)
    assert harness.speaker.take() == ["show adj-rib out extensive"]


def test_render_lists_for_each_prefix_only_the_peers_its_kind_goes_to() -> None:
    from announcer.convert import ObjectKind, convert_object
    from announcer.render import build_table, rows

    config = config_with(
        {"address": "192.0.2.1", "peer_as": 64512},
        {**PLAIN, "receive": {"load_balancer_ips": False}},
        V6,
        announce=BASE_CONFIG["announce"],
    )
    table, _ = build_table(config, "node-a", [convert_object(ObjectKind.SERVICE, LB_SERVICE, "bgp.announcer.io/")])
    peers = {row.address: row.peers for row in rows(config, table) if row.announced}
    assert peers == {"198.51.100.10/32": "192.0.2.1, 192.0.2.5", "198.51.100.130/32": "192.0.2.1"}


def test_check_config_warns_about_a_peer_that_receives_no_kind_of_address() -> None:
    off = {"cluster_ips": False, "external_ips": False, "load_balancer_ips": False, "service_cidrs": False}
    warnings = config_with({**PLAIN, "receive": off}, V6).warnings()
    assert [w for w in warnings if w.startswith("bgp.peers.0.receive: ")], warnings
    assert config_with(PLAIN, V6).warnings() == []
