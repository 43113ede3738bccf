"""What ExaBGP's own parser reads back from the exabgp.conf and the settings the announcer renders, for any value."""

from __future__ import annotations

import base64
import json
import os
import shlex
import string
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from announcer.config import ConfigError
from announcer.config_bgp import PasswordSource
from announcer.config_load import read_password
from announcer.exabgp_conf import render_exabgp_conf, render_exabgp_env
from announcer.exabgp_settings import EXABGP_SETTINGS
from lab.lab import project_tool
from tests.conftest import make_config

PRINTABLE_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def exabgp_configuration(tmp_path: Path, text: str) -> Any:
    """What ExaBGP's configuration parser (the installed exabgp package, as `exabgp validate`) makes of the text;
    AssertionError with ExaBGP's own message if it refuses it."""
    from exabgp.configuration.configuration import Configuration
    from exabgp.environment import getenv
    from exabgp.logger import log

    log.init(getenv())
    path = tmp_path / "exabgp.conf"
    path.write_text(text)
    configuration = Configuration([str(path)])
    assert configuration.reload(), f"ExaBGP refused the rendered exabgp.conf: {configuration.error}"
    return configuration


def exabgp_neighbours(tmp_path: Path, text: str) -> dict[str, Any]:
    """The neighbours ExaBGP makes of the text, by peer address."""
    neighbours = exabgp_configuration(tmp_path, text).neighbors.values()
    return {str(neighbour["peer-address"]): neighbour for neighbour in neighbours}


class RecordingSocket:
    """Stands in for the socket ExaBGP sets the TCP MD5 key on; keeps the key the kernel would get."""

    def __init__(self) -> None:
        self.key: bytes | None = None

    def setsockopt(self, _level: int, _option: int, value: bytes) -> None:
        sockaddr_size = 128  # __kernel_sockaddr_storage, then struct tcp_md5sig's '2xH4x80s'
        (length,) = struct.unpack_from("H", value, sockaddr_size + 2)
        self.key = value[sockaddr_size + 8 : sockaddr_size + 8 + length]


def md5_key_exabgp_uses(neighbour: Any) -> bytes | None:
    """The key ExaBGP hands the kernel for this neighbour (reactor/network/tcp.py `md5`, the function it calls
    for both outgoing and listening sockets)."""
    from exabgp.reactor.network.tcp import md5

    socket = RecordingSocket()
    md5(socket, str(neighbour["peer-address"]), 179, neighbour["md5-password"], neighbour["md5-base64"])
    return socket.key


@settings(max_examples=150, deadline=None)
@given(key=st.text(PRINTABLE_ASCII, min_size=1, max_size=80))
@example(key="ab\\cd")
@example(key="it's")
@example(key="x'';hold-time 3;peer-as 65099;#")
@example(key="x'';hold-time 3;peer-as 65099;#\\u0022")
@example(key='say "hi"')
@example(key="a,b  [c] (d) x ")
@example(key="kernel")
@example(key="0123abcdef")
def test_every_password_accepted_reaches_the_kernel_through_exabgp_exactly_as_configured(
    tmp_path_factory: pytest.TempPathFactory, key: str
) -> None:
    """Any printable ASCII password of 1 to 80 characters is accepted, and ExaBGP's own parser reads back exactly
    it, as the key it gives the socket, with nothing else of the neighbour changed (no injected statement)."""
    config = make_config(bgp={"hold_time": 90, "peers": [
        {"address": "192.0.2.1", "peer_as": 64512, "local_address": "192.0.2.11",
         "password": {"env": "PEER_SECRET"}}]})  # fmt: skip
    source = config.bgp.peers[0].password
    assert source is not None
    accepted = read_password(source, {"PEER_SECRET": key})
    text = render_exabgp_conf(config, "/x.yaml", {"192.0.2.1": accepted})
    neighbour = exabgp_neighbours(tmp_path_factory.mktemp("conf"), text)["192.0.2.1"]
    assert md5_key_exabgp_uses(neighbour) == key.encode("ascii")
    assert (neighbour["hold-time"], neighbour["peer-as"]) == (90, 64512)


@pytest.mark.parametrize(
    "password", ["", "x" * 81, "caf\u00e9", "line\nbreak"], ids=["empty", "81 characters", "not ASCII", "a newline"]
)
def test_a_password_that_cannot_be_a_tcp_md5_key_is_refused_naming_its_source(password: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_password(PasswordSource(env="PEER_SECRET"), {"PEER_SECRET": password})
    assert "bgp.peers[].password" in str(caught.value)
    assert "PEER_SECRET" in str(caught.value)


# --- ExaBGP's environment (speaker.environment, rendered by `announcer exabgp-env`) -------------------------------
def exabgp_setting_readers() -> dict[str, Any]:
    """ExaBGP's own reader of each setting, by the name the announcer's configuration uses (exabgp.SECTION.KEY)."""
    from exabgp.environment.setup import CONFIGURATION

    return {
        f"exabgp.{section}.{option}": definition["read"]
        for section, options in CONFIGURATION.items()
        for option, definition in options.items()
    }


_BOOLEAN_WORDS = ("1", "yes", "on", "enable", "true", "0", "no", "off", "disable", "false")
_VALUES = st.one_of(
    st.sampled_from(
        ["true", "False", "YES", "flase", "", " true", "0", "12", " 5", "1_0", "+3", "-1", "0.1", "nan", "1e3",
         "INFO", "warning", "verbose", "stdout", "'stdout'", " /tmp/log", "/var/log/exabgp.log", "0137", "9",
         "192.0.2.1 2001:db8::1", "192.0.2.1  192.0.2.2", "host:", "text", "json", "root", "x y", "a;b", "$(id)"]
    ),
    st.text(PRINTABLE_ASCII, max_size=12),
)  # fmt: skip


_MEANINGS: dict[str, Any] = {
    "boolean": lambda value: value.lower() in _BOOLEAN_WORDS[:5],
    "integer": int,
    "real": float,
    "syslog_value": str.upper,
    "umask_read": lambda value: int(value, 8),
    "ip_list": str.split,
}


def _expected_reading(reader: Any, value: str) -> object:
    """What ExaBGP must make of the value for it to mean what was configured (unquote, user: the text itself)."""
    if reader.__name__ == "boolean":
        assert value.lower() in _BOOLEAN_WORDS, f"{value!r} is not a word ExaBGP reads as a boolean"
    return _MEANINGS.get(reader.__name__, str)(value)


@settings(max_examples=300, deadline=None)
@given(
    key=st.one_of(st.sampled_from(sorted(exabgp_setting_readers())), st.just("exabgp.api.acks")),
    value=_VALUES,
)
@example(key="exabgp.api.acks", value="true")
@example(key="exabgp.log.packets", value="flase")
@example(key="exabgp.log.destination", value="'/var/log/x'")
@example(key="exabgp.tcp.bind", value="192.0.2.1  192.0.2.2")
def test_every_environment_setting_accepted_is_read_by_exabgp_as_configured(key: str, value: str) -> None:
    """A setting check-config accepts is one ExaBGP has, and its reader (exabgp/environment/setup.py) makes of the
    value that `exabgp-env` renders, after the shell's unquoting, what was configured: no unknown key ignored, no
    boolean misspelt into 'false', no quote or space stripped from a text."""
    try:
        config = make_config(speaker={"environment": {key: value}})
    except ConfigError:
        return
    readers = exabgp_setting_readers()
    assert key in readers, f"{key} is not one of ExaBGP's settings: it would be ignored"
    rendered = dict(line.partition("=")[::2] for line in render_exabgp_env(config).splitlines())
    (shell_value,) = shlex.split(rendered[key.replace(".", "_")]) or [""]
    reader = readers[key]
    try:
        reading = reader(shell_value)
    except TypeError:
        if reader.__name__ == "user":  # a user name this machine lacks; the node's image has its own users
            return
        raise
    if reader.__name__ == "ip_list":
        reading = [str(address) for address in reading]
    assert reading == _expected_reading(reader, value)


def test_the_schemas_table_of_exabgp_settings_is_the_installed_exabgps() -> None:
    """Every setting ExaBGP reads from the environment (but api.show-routes-format, whose '-' no shell variable name
    can hold) is in the table, with the kind of value its reader takes: a new or renamed setting fails here."""
    kinds = {"boolean": "boolean", "integer": "integer", "real": "real", "unquote": "text", "user": "user",
             "umask_read": "octal", "syslog_value": "level", "ip_list": "addresses", "api": "encoder"}  # fmt: skip
    installed = {key: kinds[reader.__name__] for key, reader in exabgp_setting_readers().items() if "-" not in key}
    assert installed == EXABGP_SETTINGS


# --- the other configured strings in exabgp.conf: the run line, the interface -------------------------------------
COMMAND_WORD = st.text(st.sampled_from(string.ascii_letters + string.digits + "_./=:+@%-"), min_size=1, max_size=12)


@settings(max_examples=100, deadline=None)
@given(arguments=st.lists(COMMAND_WORD, max_size=4), spaces=st.sampled_from([" ", "  "]))
@example(arguments=["--a=b:c", "x@y%z", "+1"], spaces="  ")
def test_the_configured_api_command_is_the_argv_exabgp_runs(
    tmp_path_factory: pytest.TempPathFactory, arguments: list[str], spaces: str
) -> None:
    """speaker.announcer_command reaches ExaBGP's process as exactly its words, then 'run --config PATH'."""
    command = spaces.join([sys.executable, *arguments])
    try:
        config = make_config(speaker={"announcer_command": command})
    except ConfigError:
        return
    text = render_exabgp_conf(config, "/etc/announcer/announcer.yaml")
    configuration = exabgp_configuration(tmp_path_factory.mktemp("conf"), text)
    expected = [sys.executable, *arguments, "run", "--config", "/etc/announcer/announcer.yaml"]
    assert configuration.processes["announcer"]["run"] == expected


@settings(max_examples=50, deadline=None)
@given(interface=st.text(PRINTABLE_ASCII, min_size=1, max_size=16))
@example(interface="eth0.100")
@example(interface="br-lan_1")
def test_the_configured_interface_is_the_one_exabgp_binds_to(
    tmp_path_factory: pytest.TempPathFactory, interface: str
) -> None:
    try:
        config = make_config(bgp={"peers": [{"address": "fe80::1", "peer_as": 64512, "interface": interface}]})
    except ConfigError:
        return
    text = render_exabgp_conf(config, "/x.yaml")
    neighbour = exabgp_neighbours(tmp_path_factory.mktemp("conf"), text)["fe80::1"]
    assert neighbour["source-interface"] == interface


@pytest.mark.parametrize(
    "key", ["ab\\cd", "it's", "x'';hold-time 3;peer-as 65099;#", "x\\u0022;hold-time 3;#"],
    ids=["a backslash", "a quote", "an injection", "a \\u escape"],
)  # fmt: skip
def test_exabgp_validate_takes_the_issues_passwords_with_the_neighbour_unchanged(tmp_path: Path, key: str) -> None:
    """Issue 18's own reproduction, through the CLI: `announcer exabgp-conf` then `exabgp validate -n -v` (the
    project environment's ExaBGP) loads the file and shows the configured hold time and peer AS, and the password
    as its base64."""
    config = {"node_name": "node-a", "bgp": {"local_as": 64513, "router_id": "192.0.2.11", "hold_time": 90, "peers": [
        {"address": "192.0.2.1", "peer_as": 64512, "local_address": "192.0.2.11", "password": {"env": "PW"}}]}}  # fmt: skip
    (tmp_path / "announcer.yaml").write_text(json.dumps(config))
    environment = {**os.environ, "PW": key}
    conf = subprocess.run(
        [sys.executable, "-m", "announcer", "exabgp-conf", "--config", str(tmp_path / "announcer.yaml")],
        capture_output=True, text=True, check=True, env=environment, timeout=60,
    ).stdout  # fmt: skip
    (tmp_path / "exabgp.conf").write_text(conf)
    validated = subprocess.run(
        [str(project_tool("exabgp")), "validate", "-n", "-v", str(tmp_path / "exabgp.conf")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    output = validated.stdout + validated.stderr
    assert validated.returncode == 0, output
    shown = {line.split("|")[0].split(".")[-1].strip(): line.split("|")[1].strip() for line in output.splitlines()
             if line.startswith("configuration") and "|" in line}  # fmt: skip
    assert shown["hold-time"] == "'90'"
    assert shown["peer-as"] == "'64512'"
    assert shown["md5-password"] == repr(base64.b64encode(key.encode()).decode())


def test_the_entrypoints_shell_reads_every_rendered_setting_back_as_configured(tmp_path: Path) -> None:
    """deploy/entrypoint.sh sources `exabgp-env`'s output with `set -a`: the shell's values are the configured ones,
    for texts holding what a shell would otherwise expand or split."""
    environment = {
        "exabgp.log.destination": '/var/log/it\'s $HOME `id` "x" a  b;c',
        "exabgp.api.pipename": "p$(id)",
        "exabgp.tcp.bind": "192.0.2.1 2001:db8::1",
        "exabgp.log.level": "WARNING",
    }
    config = make_config(speaker={"environment": environment})
    (tmp_path / "exabgp-env.sh").write_text(render_exabgp_env(config))
    dumped = subprocess.run(
        ["/bin/sh", "-c", f'set -a; . "{tmp_path}/exabgp-env.sh"; exec env -0'],
        capture_output=True, check=True, env={"PATH": "/usr/bin:/bin"}, timeout=30,
    ).stdout.decode()  # fmt: skip
    exported = dict(entry.partition("=")[::2] for entry in dumped.split("\0") if entry)
    for key, value in environment.items():
        assert exported[key.replace(".", "_")] == value
