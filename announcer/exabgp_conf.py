"""Pure rendering of exabgp.conf and ExaBGP's environment from the announcer's configuration."""

from __future__ import annotations

import shlex
import sys

from announcer.config import Config, Peer

PROCESS_NAME = "announcer"

# ExaBGP settings the announcer needs (and the benchmark chose); config.speaker.environment overrides them.
DEFAULT_ENVIRONMENT: dict[str, str] = {
    "exabgp.api.ack": "true",
    "exabgp.api.cli": "false",
    "exabgp.api.encoder": "text",
    "exabgp.daemon.drop": "false",
    "exabgp.log.level": "INFO",
    "exabgp.log.destination": "stdout",
    "exabgp.log.routes": "false",
    "exabgp.log.packets": "false",
    "exabgp.log.rib": "false",
    "exabgp.log.message": "false",
    "exabgp.log.network": "true",
    "exabgp.log.configuration": "false",  # at DEBUG it would print md5-password lines
    "exabgp.log.processes": "false",  # one "route added" line per route: 25-30 % of a bulk load (bench)
    "exabgp.log.reactor": "true",
    "exabgp.reactor.speed": "0.1",
}


def announcer_command(config: Config, config_path: str) -> str:
    """The command line ExaBGP runs as its API process."""
    base = config.speaker.announcer_command or f"{shlex.quote(sys.executable)} -m announcer"
    return f"{base} run --config {shlex.quote(config_path)}"


def _neighbour_block(config: Config, peer: Peer, password: str | None) -> list[str]:
    family = peer.family.value
    router_id = config.bgp.router_id
    lines = [f"neighbor {peer.address} {{"]
    if router_id is not None:
        lines.append(f"    router-id {router_id};")
    lines += [
        f"    local-address {peer.local_address};",
        f"    local-as {config.bgp.local_as};",
        f"    peer-as {peer.peer_as};",
        f"    hold-time {config.bgp.hold_time};",
        "    group-updates true;",
        "    adj-rib-out true;",
    ]
    if peer.interface is not None:
        lines.append(f"    source-interface {peer.interface};")
    if peer.port != 179:
        lines.append(f"    connect {peer.port};")
    if peer.passive:
        lines.append("    passive true;")
        lines.append(f"    listen {peer.port};")
    if password is not None:
        lines.append(f'    md5-password "{password}";')
    if config.bgp.graceful_restart is not None:
        lines.append("    manual-eor true;")
        lines += ["    capability {", f"        graceful-restart {config.bgp.graceful_restart};", "    }"]
    lines += [
        "    family {",
        f"        {family} unicast;",
        "    }",
        "    api {",
        f"        processes [ {PROCESS_NAME} ];",
        "        neighbor-changes;",
        "    }",
        "}",
    ]
    return lines


def render_exabgp_conf(config: Config, config_path: str, passwords: dict[str, str] | None = None) -> str:
    """A complete exabgp.conf: the announcer process and one single-family neighbour block per peer."""
    secrets = passwords or {}
    lines = [
        "# Rendered by 'announcer exabgp-conf' from the announcer configuration; do not edit by hand.",
        f"process {PROCESS_NAME} {{",
        f"    run {announcer_command(config, config_path)};",
        "    encoder text;",
        "}",
    ]
    for peer in config.bgp.peers:
        lines.append("")
        lines += _neighbour_block(config, peer, secrets.get(str(peer.address)))
    return "\n".join(lines) + "\n"


def exabgp_environment(config: Config) -> dict[str, str]:
    """ExaBGP's settings as exabgp.* keys: the announcer's defaults, then the configured overrides."""
    return {**DEFAULT_ENVIRONMENT, **config.speaker.environment}


def render_exabgp_env(config: Config) -> str:
    """ExaBGP's settings as shell environment assignments (exabgp_section_key=value), one per line."""
    return "".join(
        f"{key.replace('.', '_')}={shlex.quote(value)}\n" for key, value in sorted(exabgp_environment(config).items())
    )
