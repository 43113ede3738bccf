"""IPv6 link-local peers in the configuration (issue #11 item 5): what check-config takes, refuses, and renders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from announcer.config import ConfigError
from announcer.exabgp_conf import render_exabgp_conf
from tests.conftest import BASE_CONFIG, make_config

EXABGP = Path(sys.executable).parent / "exabgp"
LINK_LOCAL_PEER = {"address": "fe80::1", "interface": "eth0", "local_address": "fe80::2", "peer_as": 64512}


def with_peer(**peer: Any) -> dict[str, Any]:
    return {"bgp": {**BASE_CONFIG["bgp"], "peers": [peer]}}


def test_a_link_local_peer_with_its_interface_renders_source_interface_and_the_real_exabgp_validates_it(
    tmp_path: Path,
) -> None:
    config = make_config(**with_peer(**LINK_LOCAL_PEER))
    text = render_exabgp_conf(config, "/x.yaml")
    block = text[text.index("neighbor fe80::1 {") :]
    assert "    local-address fe80::2;\n" in block
    assert "    source-interface eth0;\n" in block
    path = tmp_path / "exabgp.conf"
    path.write_text(text)
    checked = subprocess.run(
        [str(EXABGP), "validate", str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr


def test_a_global_peer_renders_no_source_interface_unless_given() -> None:
    assert "source-interface" not in render_exabgp_conf(make_config(), "/x.yaml")
    config = make_config(**with_peer(address="2001:db8::1", peer_as=64512, interface="bond0.100"))
    assert "    source-interface bond0.100;\n" in render_exabgp_conf(config, "/x.yaml")


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ({"address": "fe80::1%eth0", "peer_as": 1},
         "bgp.peers.0.address: 'fe80::1%eth0' has a zone index ('%...'), which ExaBGP does not accept "
         "(it reads addresses with inet_pton); write the address without it and name the link with the peer's "
         "interface key (address: fe80::1, interface: eth0)"),
        ({"address": "fe80::1", "peer_as": 1},
         "bgp.peers.0.interface: required for the link-local address fe80::1"),
        ({"address": "2001:db8::1", "peer_as": 1, "local_address": "fe80::2", "interface": "eth0"},
         "bgp.peers.0.local_address: a link-local local_address needs a link-local peer address"),
        ({**LINK_LOCAL_PEER, "passive": True},
         "bgp.peers.0.passive: ExaBGP 5.0 cannot listen for a link-local peer"),
        ({**LINK_LOCAL_PEER, "interface": "eth0; shutdown"}, "bgp.peers.0.interface: String should match pattern"),
        ({**LINK_LOCAL_PEER, "interface": "a-very-long-interface"}, "bgp.peers.0.interface"),
    ],
)  # fmt: skip
def test_check_config_refuses_link_local_forms_exabgp_cannot_use_naming_the_key(
    peer: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        make_config(**with_peer(**peer))
    assert message in str(error.value)
