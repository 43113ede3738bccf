"""Loading the configuration: the YAML file, NODE_NAME/ROUTER_ID from the environment, and the secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from announcer.config import ENV_NODE_NAME, ENV_ROUTER_ID, Config, ConfigError, validate_config
from announcer.config_bgp import PasswordSource

MAX_PASSWORD_LENGTH = 80  # TCP_MD5SIG_MAXKEYLEN, and ExaBGP's MAX_MD5_PASSWORD_LENGTH


def parse_config(data: object, source: str = "config", environ: Mapping[str, str] | None = None) -> Config:
    """Validate a decoded YAML document, applying NODE_NAME and ROUTER_ID from the environment."""
    environment = os.environ if environ is None else environ
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): must be a mapping")
    document = dict(data)
    if environment.get(ENV_NODE_NAME):
        document["node_name"] = environment[ENV_NODE_NAME]
    if environment.get(ENV_ROUTER_ID) and isinstance(document.get("bgp"), dict):
        document["bgp"] = {**document["bgp"], "router_id": environment[ENV_ROUTER_ID]}
    return validate_config(document, source)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the YAML file at path."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(data, str(path), environ)


def read_password(source: PasswordSource, environ: Mapping[str, str] | None = None) -> str:
    """A peer's password, read now from its source (environment variable or file); ConfigError naming the source
    (never the value) if it cannot be a TCP MD5 key. Every printable ASCII character is fine: exabgp.conf carries
    it base64-encoded (exabgp_conf.py), which ExaBGP reads back exactly (tests/test_exabgp_roundtrip.py)."""
    environment = os.environ if environ is None else environ
    if source.env is not None:
        value = environment.get(source.env)
        where = f"environment variable {source.env}"
        if value is None:
            raise ConfigError(f"bgp.peers[].password.env: {where} is not set")
    elif source.file is not None:
        where = f"file {source.file}"
        try:
            value = source.file.read_text(encoding="utf-8").rstrip("\n")
        except OSError as error:
            raise ConfigError(f"bgp.peers[].password.file: cannot read {source.file}: {error}") from error
    else:
        raise ConfigError("bgp.peers[].password: give exactly one of 'env' or 'file'")
    if not value or not value.isascii() or not value.isprintable() or len(value) > MAX_PASSWORD_LENGTH:
        raise ConfigError(
            f"bgp.peers[].password: the password in {where} must be 1 to {MAX_PASSWORD_LENGTH} printable ASCII "
            "characters (a TCP MD5 key; ExaBGP's limit)"
        )
    return value


def read_passwords(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every peer's password by peer address, read now; a problem names the peer ('bgp.peers[ADDRESS]...')."""
    passwords = {}
    for peer in config.bgp.peers:
        if peer.password is None:
            continue
        try:
            passwords[str(peer.address)] = read_password(peer.password, environ)
        except ConfigError as error:
            raise ConfigError(str(error).replace("bgp.peers[]", f"bgp.peers[{peer.address}]", 1)) from None
    return passwords
