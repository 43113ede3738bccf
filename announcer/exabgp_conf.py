"""Pure rendering of exabgp.conf and ExaBGP's environment from the announcer's configuration."""

from __future__ import annotations

import base64
import re
import shlex
import sys

from announcer.config import Config, ConfigError
from announcer.config_bgp import Peer
from announcer.fields import parse_uint32
from announcer.policy import NodeView, selector_matches

PROCESS_NAME = "announcer"

# ExaBGP settings the announcer needs (and the benchmark chose); config.speaker.environment overrides them, except
# those the pipe relies on (exabgp_settings.PIPE_SETTINGS), which the schema refuses to change.
DEFAULT_ENVIRONMENT: dict[str, str] = {
    "exabgp.api.ack": "true",
    "exabgp.api.cli": "false",
    "exabgp.api.encoder": "text",
    "exabgp.daemon.drop": "false",
    "exabgp.log.level": "INFO",
    "exabgp.log.destination": "stdout",
    "exabgp.log.short": "false",  # each line with the time (HH:MM:SS, local time) and ExaBGP's PID
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


def announcer_command(config: Config, config_path: str, *, selected: bool = False) -> str:
    """The command line ExaBGP runs as its API process; `selected`: the peers are a node's selection (for_node)."""
    if not re.fullmatch(r"[A-Za-z0-9_./=:+-]+", config_path):  # one word on ExaBGP's run line
        raise ConfigError(f"--config-path {config_path!r}: one word of letters, digits and _ . / = : + - only")
    base = config.speaker.announcer_command or f"{shlex.quote(sys.executable)} -m announcer"
    command = f"{base} run --config {config_path}"
    if selected or needs_node(config):  # the peers this node's exabgp.conf holds, so the process commands these
        # One option per peer: ExaBGP's configuration parser splits a 'run' line at commas.
        command += "".join(f" --peer {peer.address}" for peer in config.bgp.peers)
    return command


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
        f"    hold-time {config.bgp.hold_time if peer.hold_time is None else peer.hold_time};",
        "    group-updates true;",
        "    adj-rib-out true;",
    ]
    if peer.interface is not None:
        lines.append(f"    source-interface {peer.interface};")
    if peer.ttl is not None:
        lines.append(f"    outgoing-ttl {peer.ttl};")
    if peer.min_ttl is not None:
        lines.append(f"    incoming-ttl {peer.min_ttl};")
    if peer.port != 179:
        lines.append(f"    connect {peer.port};")
    if peer.passive:
        lines.append("    passive true;")
        lines.append(f"    listen {peer.port};")
    if password is not None:
        # Base64, which ExaBGP decodes into the key it gives the kernel: its parser un-escapes '\\' and '\\u....'
        # before it splits a line, takes ' and " as quotes and ; # { } as the end of a statement, so a password
        # written as text could lose characters or inject statements; base64's alphabet holds none of those.
        encoded = base64.b64encode(password.encode("ascii")).decode("ascii")
        lines += ["    md5-base64 true;", f"    md5-password {encoded};"]
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


def render_exabgp_conf(
    config: Config, config_path: str, passwords: dict[str, str] | None = None, *, selected: bool = False
) -> str:
    """A complete exabgp.conf: the announcer process and one single-family neighbour block per peer; `selected`:
    the configuration is a node's selection (for_node), whose peers the process line then names."""
    secrets = passwords or {}
    lines = [
        "# Rendered by 'announcer exabgp-conf' from the announcer configuration; do not edit by hand.",
        f"process {PROCESS_NAME} {{",
        f"    run {announcer_command(config, config_path, selected=selected)};",
        "    encoder text;",
        "}",
    ]
    for peer in config.bgp.peers:
        lines.append("")
        lines += _neighbour_block(config, peer, secrets.get(str(peer.address)))
    return "\n".join(lines) + "\n"


# --- peers per node (issue #11, item 3) ---------------------------------------------------------------------------
def needs_node(config: Config) -> bool:
    """Whether rendering for a node needs its labels: a peer has a node selector, or the AS comes from the Node."""
    return config.bgp.local_as_node_key is not None or any(peer.node_selector for peer in config.bgp.peers)


def node_local_as(config: Config, node: NodeView) -> int:
    """The node's AS from its label (else annotation) local_as_node_key, or bgp.local_as; ConfigError naming both."""
    key = config.bgp.local_as_node_key
    if key is None:
        return config.bgp.local_as
    where = "label" if key in node.labels else "annotation"
    text = node.labels.get(key, node.annotations.get(key))
    if text is None:
        return config.bgp.local_as
    try:
        number = parse_uint32(text)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"Node {node.name}: {where} {key}: {text[:40]!r} is not an AS number from 1 to 4294967295")
    return number


def selected_peers(config: Config, node: NodeView) -> list[Peer]:
    """The peers whose node_selector matches this node's labels (matchLabels), in configuration order."""
    return [peer for peer in config.bgp.peers if selector_matches(peer.node_selector, node.labels)]


def for_node(config: Config, node: NodeView | None) -> Config:
    """The configuration as this node uses it: only its selected peers, its own AS. Unchanged without a node (the
    configuration selects nothing by node); ConfigError if no peer selects the node."""
    if node is None:
        return config
    peers = selected_peers(config, node)
    if not peers:
        raise ConfigError(f"bgp.peers: no peer's node_selector matches Node {node.name} (labels {dict(node.labels)})")
    bgp = config.bgp.model_copy(update={"peers": peers, "local_as": node_local_as(config, node)})
    return config.model_copy(update={"bgp": bgp})


def explain_node(config: Config, node: NodeView) -> str:
    """check-config's answer for one node: its AS and, for every peer, whether it peers with it and why."""
    lines = [f"node {node.name}: local-as {node_local_as(config, node)}"]
    for peer in config.bgp.peers:
        selector = ",".join(f"{key}={value}" for key, value in sorted(peer.node_selector.items())) or "(every node)"
        chosen = selector_matches(peer.node_selector, node.labels)
        lines.append(f"  {'peer   ' if chosen else 'skip   '} {peer.address} as {peer.peer_as}  selector {selector}")
    if not selected_peers(config, node):
        lines.append("  error: no peer selects this node")
    return "\n".join(lines) + "\n"


def exabgp_environment(config: Config) -> dict[str, str]:
    """ExaBGP's settings as exabgp.* keys: the announcer's defaults, then the configured overrides."""
    return {**DEFAULT_ENVIRONMENT, **config.speaker.environment}


def render_exabgp_env(config: Config) -> str:
    """ExaBGP's settings as shell environment assignments (exabgp_section_key=value), one per line."""
    return "".join(
        f"{key.replace('.', '_')}={shlex.quote(value)}\n" for key, value in sorted(exabgp_environment(config).items())
    )
