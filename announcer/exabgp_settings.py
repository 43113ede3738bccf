"""ExaBGP's environment settings: which exist, the values ExaBGP reads as written, and those the announcer needs."""

from __future__ import annotations

import ipaddress
import re

# ExaBGP 5.0's settings (exabgp/environment/setup.py) by the kind of value its reader takes. ExaBGP ignores a key it
# does not know, and its readers are lenient where a typo changes the meaning: a boolean is true for five words and
# false for anything else, a text loses its surrounding spaces and quotes. tests/test_exabgp_roundtrip.py holds this
# table against the installed ExaBGP and reads every accepted value back with ExaBGP's own readers.
_BY_KIND = {
    "boolean": """profile.enable pdb.enable daemon.daemonize daemon.drop log.enable log.all log.configuration
        log.reactor log.daemon log.processes log.network log.statistics log.packets log.rib log.message log.timers
        log.routes log.parser log.short tcp.once tcp.acl bgp.passive cache.attributes cache.nexthops api.ack
        api.compact api.respawn api.terminate api.cli debug.pdb debug.memory debug.configuration debug.selfcheck
        debug.defensive debug.rotate""",
    "integer": "tcp.attempts tcp.delay tcp.port bgp.openwait api.chunk",
    "text": "profile.file daemon.pid log.destination api.pipename debug.route",
}
EXABGP_SETTINGS: dict[str, str] = {
    **{f"exabgp.{name}": kind for kind, names in _BY_KIND.items() for name in names.split()},
    "exabgp.reactor.speed": "real",
    "exabgp.daemon.user": "user",
    "exabgp.daemon.umask": "octal",
    "exabgp.log.level": "level",
    "exabgp.tcp.bind": "addresses",
    "exabgp.api.encoder": "encoder",
}
_SETTING_VALUES = {
    "boolean": (r"(?i)true|false|yes|no|on|off|enable|disable|1|0", "true, false, yes, no, on, off, enable, disable"),
    "integer": (r"[0-9]{1,9}", "a whole number"),
    "real": (r"[0-9]{1,6}(\.[0-9]{1,6})?", "a decimal number such as 0.1"),
    "octal": (r"0?[0-7]{3}", "an octal umask such as 0137"),
    "level": (r"(?i)fatal|critical|error|warning|info|debug|notset", "a log level such as INFO or WARNING"),
    "user": (r"[a-z_][a-z0-9_-]{0,31}", "a user name"),
    # printable ASCII; ExaBGP strips spaces, then ' and ", from both ends
    "text": (r"([!#-&(-~]([ -~]*[!#-&(-~])?)?", "printable ASCII not beginning or ending with a space or a quote"),
    "encoder": (r"text|json", "text or json"),
}
# The settings the pipe (exabgp.py), the state machine and the entrypoint rely on, with the value they need.
PIPE_SETTINGS = {
    "exabgp.api.ack": ("true", "every command waits for ExaBGP's done or error"),
    "exabgp.api.encoder": ("text", "the pipe reads ExaBGP's text answers: show adj-rib out, version, neighbour events"),
    "exabgp.api.respawn": (
        "true",
        "ExaBGP restarts a dead announcer, which then resynchronises; without it the routes stay announced and "
        "nothing updates them",
    ),
    "exabgp.daemon.daemonize": (
        "false",
        "the entrypoint runs ExaBGP in the foreground and waits for it: a daemonized ExaBGP's parent exits at once, "
        "and the node with it",
    ),
}


def exabgp_setting_problem(key: str, value: str) -> str | None:
    """Why ExaBGP would not read this setting as written ('KEY: ...' for check-config), or None."""
    if key not in EXABGP_SETTINGS:
        named = f"{key}: " if re.fullmatch(r"[a-z][a-z0-9_.]*", key) else ""
        return f"{named}{key[:80]!r} is not an ExaBGP setting (exabgp.SECTION.KEY, as `exabgp env` lists them)"
    kind = EXABGP_SETTINGS[key]
    if key in PIPE_SETTINGS and value.lower() != PIPE_SETTINGS[key][0]:
        required, why = PIPE_SETTINGS[key]
        return f"{key}: {value[:80]!r}: the announcer relies on {required!r} ({why}); leave it unset"
    if kind == "addresses":
        words = value.split(" ") if value else []
        if not all(_is_ip_address(word) for word in words):
            return f"{key}: {value[:80]!r} is not IP addresses separated by single spaces"
        return None
    pattern, expected = _SETTING_VALUES[kind]
    if not re.fullmatch(pattern, value):
        return f"{key}: {value[:80]!r} is not {expected}"
    return None


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
