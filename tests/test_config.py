"""Configuration: validation that names the key, the exit code, and exabgp.conf rendered from it."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from announcer.config import ConfigError
from announcer.config_doc import reference_table
from announcer.config_load import load_config, parse_config, read_password, read_passwords
from announcer.exabgp_conf import render_exabgp_conf
from tests.conftest import BASE_CONFIG, make_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "announcer.yaml"


def test_the_checked_in_exabgp_conf_is_the_rendering_of_the_example_config() -> None:
    """No second hand-kept list of peers: exabgp.conf must match 'announcer exabgp-conf' of the example."""
    rendered = subprocess.run(
        [sys.executable, "-m", "announcer", "exabgp-conf", "--config", str(EXAMPLE),
         "--config-path", "/etc/announcer/announcer.yaml"],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    assert rendered == (ROOT / "exabgp.conf").read_text()


def test_each_peer_gets_a_neighbour_block_with_only_its_own_family() -> None:
    text = render_exabgp_conf(make_config(), "/etc/announcer.yaml")
    blocks = text.split("\nneighbor ")[1:]
    assert [block.split(" ", 1)[0] for block in blocks] == ["192.0.2.1", "192.0.2.5", "2001:db8::1"]
    for block in blocks:
        family = "ipv6" if block.startswith("2001") else "ipv4"
        other = "ipv4" if family == "ipv6" else "ipv6"
        assert f"{family} unicast;" in block
        assert f"{other} unicast" not in block
        assert "processes [ announcer ];" in block


def test_graceful_restart_renders_manual_end_of_rib() -> None:
    text = render_exabgp_conf(make_config(bgp={"graceful_restart": 120}), "/x.yaml")
    assert text.count("manual-eor true;") == 3
    assert text.count("graceful-restart 120;") == 3


def test_a_password_from_the_environment_reaches_exabgp_conf_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEER_SECRET", "s3cret-pass")
    config = make_config(
        bgp={"peers": [{"address": "192.0.2.1", "peer_as": 64512, "password": {"env": "PEER_SECRET"}}]}
    )
    peer = config.bgp.peers[0]
    assert peer.password is not None
    text = render_exabgp_conf(config, "/x.yaml", {"192.0.2.1": read_password(peer.password)})
    assert f"md5-password {base64.b64encode(b's3cret-pass').decode()};" in text
    assert "s3cret-pass" not in repr(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bgp": {**BASE_CONFIG["bgp"], "local_as": 0}}, "bgp.local_as: Input should be greater than or equal to 1"),
        ({"bgp": {**BASE_CONFIG["bgp"], "peers": []}}, "bgp.peers: List should have at least 1 item"),
        ({"bgp": {**BASE_CONFIG["bgp"], "peers": [{"address": "192.0.2.300", "peer_as": 1}]}}, "bgp.peers.0.address"),
        ({"bgp": {**BASE_CONFIG["bgp"], "peers": [{"address": "192.0.2.1", "peer_as": 1, "local_address": "2001:db8::2"}]}},
         "local_address and address must be of the same family"),
        ({"bgp": {**BASE_CONFIG["bgp"], "peers": [{"address": "192.0.2.1", "peer_as": 1}] * 2}}, "declared twice"),
        ({"bgp": {**BASE_CONFIG["bgp"], "hold_time": 2}}, "bgp.hold_time: must be 0 or between 3"),
        ({"announce": {"external_ips": {"enabled": True, "allowlist": ["198.51.100.1/24"]}}},
         "announce.external_ips.allowlist"),
        ({"announce": {"service_label_selector": "app=web;shutdown"}}, "announce.service_label_selector"),
        ({"announce": {"annotation_prefix": "bad prefix"}}, "announce.annotation_prefix"),
        ({"attributes": {"default": {"communities": ["65536:1"]}}}, "attributes.default.communities"),
        ({"attributes": {"default": {"large_communities": ["1:2"]}}}, "attributes.default.large_communities"),
        ({"attributes": {"default": {"med": -1}}}, "attributes.default.med"),
        ({"speaker": {"prefixes_per_line": 100000}}, "speaker.prefixes_per_line"),
        ({"tpyo": 1}, "tpyo: unknown key"),
        ({"bgp": {**BASE_CONFIG["bgp"], "routerid": "1.2.3.4"}}, "bgp.routerid: unknown key"),
        ({"node_name": "Node_A"}, "node_name: must be a DNS subdomain name"),
        ({"speaker": {"announcer_command": "/bin/announcer; }\nneighbor 192.0.2.9 {"}}, "speaker.announcer_command"),
        ({"speaker": {"environment": {"a b;touch /tmp/x": "1"}}}, "speaker.environment: 'a b;touch"),
        ({"speaker": {"environment": {"exabgp.log.level": "INFO\nexabgp_api_ack=false"}}}, "speaker.environment.exabgp.log.level: 'INFO\\nexabgp_api_ack=false' is not a log level"),
    ],
    ids=[
        "AS zero", "no peers", "a peer address that is not an address", "a local address of the other family",
        "a peer declared twice", "a hold time of two seconds", "an allowlist CIDR with host bits",
        "a label selector with a semicolon", "an annotation prefix with a space", "a community half over 65535",
        "a large community with two parts", "a negative MED", "a chunk size over the limit", "an unknown top-level key",
        "a misspelt key", "a node name with capitals", "an API command that closes the run line",
        "an environment key that is a shell command",
        "an environment value with a newline",
    ],
)  # fmt: skip
def test_a_bad_configuration_is_refused_with_the_key_named(change: dict[str, object], message: str) -> None:
    document = {**BASE_CONFIG, **change}
    with pytest.raises(ConfigError) as caught:
        parse_config(document, "announcer.yaml", environ={})
    assert message in str(caught.value)
    assert str(caught.value).startswith("announcer.yaml: ")


def test_node_name_and_router_id_come_from_the_environment() -> None:
    config = parse_config(BASE_CONFIG, "c", environ={"NODE_NAME": "node-b", "ROUTER_ID": "192.0.2.12"})
    assert config.node == "node-b"
    assert str(config.bgp.router_id) == "192.0.2.12"


@pytest.mark.parametrize("command", ["check-config", "exabgp-conf", "run"])
def test_every_command_exits_2_on_a_bad_configuration_naming_the_key(tmp_path: Path, command: str) -> None:
    path = tmp_path / "announcer.yaml"
    path.write_text(
        yaml.safe_dump({**BASE_CONFIG, "bgp": {**BASE_CONFIG["bgp"], "peers": [{"address": "x", "peer_as": 1}]}})
    )
    result = subprocess.run(
        [sys.executable, "-m", "announcer", command, "--config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "bgp.peers.0.address" in result.stderr
    assert result.stdout == ""


def test_yaml_that_does_not_parse_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "announcer.yaml"
    path.write_text("bgp: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, environ={})


def test_the_example_configuration_is_valid() -> None:
    config = load_config(EXAMPLE, environ={})
    assert {str(peer.address) for peer in config.bgp.peers} == {"192.0.2.1", "2001:db8::1"}


def test_run_without_a_node_name_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "announcer.yaml"
    path.write_text(yaml.safe_dump({key: value for key, value in BASE_CONFIG.items() if key != "node_name"}))
    result = subprocess.run(
        [sys.executable, "-m", "announcer", "run", "--config", str(path)],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "node_name: not set" in result.stderr


def test_the_readme_configuration_reference_documents_every_key() -> None:
    """The README's table is the models' own documentation; regenerate it when a setting changes."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- config-reference:start -->\n")[1].split("\n<!-- config-reference:end -->")[0]
    assert table == reference_table()


NO_ROUTER_ID = {key: value for key, value in BASE_CONFIG["bgp"].items() if key != "router_id"}
EXABGP_REFUSES = {
    "a passive peer without local_address": (
        {"bgp": {**BASE_CONFIG["bgp"], "peers": [{"address": "192.0.2.1", "peer_as": 1, "passive": True}]}},
        "bgp.peers.0.local_address: required when passive is true",
    ),
    "a peer address with a zone index": (
        {"bgp": {**BASE_CONFIG["bgp"], "peers": [{"address": "fe80::1%eth0", "peer_as": 1}]}},
        "bgp.peers.0.address: 'fe80::1%eth0' has a zone index",
    ),
    "a local address with a zone index": (
        {"bgp": {**BASE_CONFIG["bgp"], "peers": [
            {"address": "2001:db8::1", "peer_as": 1, "local_address": "fe80::2%eth0"}]}},
        "bgp.peers.0.local_address",
    ),
    "no router_id with local_address auto": (
        {"bgp": NO_ROUTER_ID},
        "bgp.router_id: required by ExaBGP",
    ),
    "no router_id with an IPv6 peer and its local address set": (
        {"bgp": {**NO_ROUTER_ID, "peers": [
            {"address": "2001:db8::1", "peer_as": 1, "local_address": "2001:db8::2"}]}},
        "bgp.router_id: required by ExaBGP",
    ),
}  # fmt: skip


@pytest.mark.parametrize("command", ["check-config", "exabgp-conf"])
@pytest.mark.parametrize(("change", "key"), EXABGP_REFUSES.values(), ids=EXABGP_REFUSES.keys())
def test_check_config_refuses_what_exabgp_refuses_exiting_2_naming_the_key(
    tmp_path: Path, command: str, change: dict[str, object], key: str
) -> None:
    """One validator serves every command: check-config refuses exactly what exabgp-conf would."""
    path = tmp_path / "announcer.yaml"
    path.write_text(yaml.safe_dump({**BASE_CONFIG, **change}))
    result = subprocess.run(
        [sys.executable, "-m", "announcer", command, "--config", str(path)],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert result.stdout == ""


def test_an_ipv4_only_configuration_with_explicit_local_addresses_needs_no_router_id() -> None:
    """ExaBGP takes the router-id from an IPv4 local address: the rule does not over-reach."""
    config = parse_config(
        {**BASE_CONFIG, "bgp": {**NO_ROUTER_ID, "peers": [
            {"address": "192.0.2.1", "peer_as": 1, "local_address": "192.0.2.11", "passive": True}]}},
        "c", environ={},
    )  # fmt: skip
    assert config.bgp.router_id is None
    assert config.bgp.peers[0].passive


def test_metrics_listen_is_parsed_once_into_an_address() -> None:
    config = make_config(metrics={"listen": "[::1]:9479"})
    assert config.metrics.address == ("::1", 9479)
    assert make_config().metrics.address is None


EXABGP = Path(sys.executable).parent / "exabgp"


def exabgp_validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """The real ExaBGP's own configuration check (no session is opened)."""
    path = tmp_path / "exabgp.conf"
    path.write_text(text)
    return subprocess.run([str(EXABGP), "validate", str(path)], capture_output=True, text=True, check=False, timeout=60)


def test_the_real_exabgp_refuses_what_the_new_peer_rules_refuse_and_takes_what_they_let_through(tmp_path: Path) -> None:
    """The schema's passive and zone-index rules are ExaBGP 5.0's own: the refused forms fail its validation and the
    accepted rendering passes it."""
    passive = make_config(bgp={"peers": [
        {"address": "2001:db8::1", "peer_as": 64512, "passive": True, "local_address": "2001:db8::11"}]})  # fmt: skip
    assert exabgp_validate(tmp_path, render_exabgp_conf(passive, "/x.yaml")).returncode == 0
    auto = render_exabgp_conf(passive, "/x.yaml").replace("local-address 2001:db8::11;", "local-address auto;")
    refused = exabgp_validate(tmp_path, auto)
    assert refused.returncode != 0
    assert "incomplete neighbor, missing local-address" in refused.stderr
    zoned = render_exabgp_conf(passive, "/x.yaml").replace("neighbor 2001:db8::1 {", "neighbor fe80::1%eth0 {")
    refused = exabgp_validate(tmp_path, zoned)
    assert refused.returncode != 0
    assert '"fe80::1%eth0" is an invalid IP address' in refused.stderr


def test_exabgp_conf_refuses_a_config_path_that_would_end_the_run_line(tmp_path: Path) -> None:
    """ExaBGP splits the run line at ';' and ',' and does not read shell quoting: such a path is refused, exit 2."""
    path = tmp_path / "announcer.yaml"
    path.write_text(yaml.safe_dump(BASE_CONFIG))
    result = subprocess.run(
        [sys.executable, "-m", "announcer", "exabgp-conf", "--config", str(path), "--config-path", "/etc/a.yaml; }"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--config-path" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("exabgp.api.ack", "false"),
        ("exabgp.api.encoder", "json"),
        ("exabgp.api.respawn", "false"),
        ("exabgp.daemon.daemonize", "true"),
    ],
    ids=["acks off", "the JSON encoder", "no respawn", "daemonized"],
)
def test_an_override_of_a_setting_the_pipe_relies_on_is_refused_naming_it(key: str, value: str) -> None:
    """`exabgp.api.ack: false` passed check-config and left the node announcing nothing, restarting every 60 s."""
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE_CONFIG, "speaker": {"environment": {key: value}}}, "announcer.yaml", environ={})
    assert f"announcer.yaml: speaker.environment.{key}: " in str(caught.value)
    assert "the announcer relies on" in str(caught.value)


def test_every_bad_environment_setting_is_named_with_its_value() -> None:
    environment = {"exabgp.api.acks": "true", "exabgp.log.packets": "flase", "exabgp.log.destination": "'/x'"}
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE_CONFIG, "speaker": {"environment": environment}}, "c", environ={})
    lines = str(caught.value).splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("c: speaker.environment.exabgp.api.acks: 'exabgp.api.acks' is not an ExaBGP setting")
    assert lines[1].startswith("c: speaker.environment.exabgp.log.packets: 'flase' is not")
    assert lines[2].startswith("c: speaker.environment.exabgp.log.destination: \"'/x'\"")


@pytest.mark.parametrize(
    "selector",
    ["a in (b", "a in b", "a=b=c", "a b", "a,", ",a", "!a=b", "a in (b c)", "a notin", "app=web;x",
     "-app=web", "a=" + "v" * 64, "bad_/key=1", "a=b)", "a = b c", "a in (b,(c))", "a>b", "a<", "!a>1", "a>-1",
     "a>99999999999999999999"],
)  # fmt: skip
def test_a_label_selector_the_api_server_would_refuse_is_refused_naming_it(selector: str) -> None:
    """The watch retried the API server's 400 for ever: Kubernetes' selector grammar is checked up front."""
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE_CONFIG, "announce": {"service_label_selector": selector}}, "c", environ={})
    assert str(caught.value).startswith("c: announce.service_label_selector: ")
    assert repr(selector) in str(caught.value)


@pytest.mark.parametrize(
    "selector",
    ["", "app=web", "app==web,tier!=db", "env in (prod, staging),!canary", "a notin ()", "example.com/app",
     "a=", " app = web ", "a in (b,)", "a in (in, notin)", "team", "!example.com/skip,x!=y", "a=in", "a!=notin", "in=b", "a>1", "a< 01,b"],
)  # fmt: skip
def test_a_label_selector_of_kubernetes_grammar_is_accepted(selector: str) -> None:
    config = parse_config({**BASE_CONFIG, "announce": {"service_label_selector": selector}}, "c", environ={})
    assert config.announce.service_label_selector == selector


@pytest.mark.parametrize(
    ("router_id", "why"),
    [("0.0.0.0", "zero"), ("224.0.0.5", "multicast"), ("239.255.255.255", "multicast"),
     ("255.255.255.255", "broadcast")],
)  # fmt: skip
def test_a_router_id_no_bgp_speaker_may_use_is_refused_from_the_file_and_from_router_id(
    router_id: str, why: str
) -> None:
    for document, environ in (
        ({**BASE_CONFIG, "bgp": {**BASE_CONFIG["bgp"], "router_id": router_id}}, {}),
        (BASE_CONFIG, {"ROUTER_ID": router_id}),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(document, "c", environ=environ)
        assert str(caught.value).startswith(f"c: bgp.router_id: {router_id!r} is")
        assert why in str(caught.value)


def config_error(document: dict[str, object], environ: dict[str, str] | None = None) -> list[str]:
    """check-config's lines for a document (source 'c')."""
    with pytest.raises(ConfigError) as caught:
        parse_config(document, "c", environ=environ or {})
    return str(caught.value).splitlines()


@pytest.mark.parametrize(
    ("peer", "line"),
    [({"address": "192.0.2.300", "peer_as": 1}, "c: bgp.peers.0.address: '192.0.2.300' is not an IPv4 or IPv6 address"),
     ({"address": "2001:db8::g", "peer_as": 1}, "c: bgp.peers.0.address: '2001:db8::g' is not an IPv4 or IPv6 address"),
     ({"address": "192.0.2.1", "peer_as": 1, "local_address": "1.2.3"},
      "c: bgp.peers.0.local_address: '1.2.3' is not an IPv4 or IPv6 address, nor 'auto'")],
    ids=["IPv4", "IPv6", "local address"],
)  # fmt: skip
def test_a_bad_address_is_one_line_with_the_bad_value_and_no_pydantic_internals(
    peer: dict[str, object], line: str
) -> None:
    assert config_error({**BASE_CONFIG, "bgp": {**BASE_CONFIG["bgp"], "peers": [peer]}}) == [line]


def test_a_bad_router_id_names_its_value() -> None:
    assert config_error({**BASE_CONFIG, "bgp": {**BASE_CONFIG["bgp"], "router_id": "10.0.0"}}) == [
        "c: bgp.router_id: '10.0.0' is not an IPv4 address"
    ]


def test_every_bad_item_of_a_list_is_reported_not_only_the_first() -> None:
    document = {
        **BASE_CONFIG,
        "bgp": {**BASE_CONFIG["bgp"], "peers": [
            {"address": "192.0.2.1", "peer_as": 1, "node_selector": {"a/": "x", "b": "y z", "ok": "fine"}}]},
        "announce": {
            "external_ips": {"enabled": True, "allowlist": ["10.0.0.1/8", "198.51.100.0/24", "10.0.0.0/33"]},
            "service_cidrs": ["fd00::1/64", "x"],
        },
        "attributes": {"default": {"communities": ["65536:1", "1:1", "1:70000"],
                                   "large_communities": ["1:2", "1:2:3", "x"]}},
    }  # fmt: skip
    lines = config_error(document)
    for expected in (
        "c: bgp.peers.0.node_selector: 'a/' is not a label key",
        "c: bgp.peers.0.node_selector: 'y z' (of 'b') is not a label value",
        "c: announce.external_ips.allowlist.0: '10.0.0.1/8' is not a CIDR",
        "c: announce.external_ips.allowlist.2: '10.0.0.0/33' is not a CIDR",
        "c: announce.service_cidrs.0: 'fd00::1/64' is not a CIDR",
        "c: announce.service_cidrs.1: 'x' is not a CIDR",
        "c: attributes.default.communities.0: '65536:1'",
        "c: attributes.default.communities.2: '1:70000'",
        "c: attributes.default.large_communities.0: '1:2'",
        "c: attributes.default.large_communities.2: 'x'",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    assert len(lines) == 10, lines


def test_a_value_of_the_wrong_type_or_range_is_named_with_the_value() -> None:
    lines = config_error({**BASE_CONFIG, "bgp": {**BASE_CONFIG["bgp"], "local_as": "sixty", "hold_time": 2.5}})
    assert lines == [
        "c: bgp.local_as: Input should be a valid integer, unable to parse string as an integer (got 'sixty')",
        "c: bgp.hold_time: Input should be a valid integer, got a number with a fractional part (got 2.5)",
    ]


# --- accepted, but doing nothing or failing later: warnings ----------------------------------------------------
def test_a_passive_peer_below_port_1024_is_warned_about_naming_its_port() -> None:
    """The shipped image runs ExaBGP as uid 10001 without NET_BIND_SERVICE: its listener on 179 fails and it exits."""
    config = make_config(bgp={"peers": [
        {"address": "192.0.2.1", "peer_as": 1, "local_address": "192.0.2.11", "passive": True},
        {"address": "192.0.2.5", "peer_as": 1, "local_address": "192.0.2.11", "passive": True, "port": 1790},
        {"address": "192.0.2.9", "peer_as": 1, "port": 179}]})  # fmt: skip
    warnings = config.warnings()
    assert [warning for warning in warnings if warning.startswith("bgp.peers")] == [
        "bgp.peers.0.port: 179 with passive true: ExaBGP listens on this port, and below 1024 that needs root or "
        "NET_BIND_SERVICE, which the shipped image (uid 10001) does not have, so ExaBGP would exit at start; use a "
        "port of 1024 or more on both sides (as the Calico setup's 1790), or grant the capability"
    ]


@pytest.mark.parametrize("kind", ["external_ips", "load_balancer_ips"])
def test_an_enabled_address_kind_with_an_empty_allowlist_is_warned_about(kind: str) -> None:
    config = make_config(announce={kind: {"enabled": True}})
    assert config.warnings() == [
        f"announce.{kind}.allowlist: empty while enabled is true, so no address of this kind is announced (only "
        "addresses inside the allowlist are); add the CIDRs to announce, or set enabled false"
    ]
    assert make_config(announce={kind: {"enabled": False}}).warnings() == []
    assert make_config().warnings() == []


def test_check_config_prints_each_warning_naming_the_file_and_the_key_and_still_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "announcer.yaml"
    path.write_text(yaml.safe_dump({**BASE_CONFIG, "announce": {"external_ips": {"enabled": True}}}))
    for command in ("check-config", "exabgp-conf"):
        result = subprocess.run([sys.executable, "-m", "announcer", command, "--config", str(path)],
                                capture_output=True, text=True, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"announcer: warning: {path}: announce.external_ips.allowlist: empty while enabled is true" in (
            result.stderr
        )


def test_a_password_problem_names_the_peer_it_belongs_to() -> None:
    config = make_config(bgp={"peers": [
        {"address": "192.0.2.1", "peer_as": 1, "password": {"env": "FIRST"}},
        {"address": "192.0.2.5", "peer_as": 1, "password": {"env": "SECOND"}}]})  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        read_passwords(config, {"FIRST": "fine"})
    assert str(caught.value) == "bgp.peers[192.0.2.5].password.env: environment variable SECOND is not set"
