"""Shared fixtures: configurations built the way users write them."""

from __future__ import annotations

import copy
from typing import Any

from announcer.config import Config
from announcer.config_load import parse_config

# The lab fixtures live in one place for the whole session: one keeper, so one lab at a time (they share
# 203.0.113.240/28 in the root namespace), swapped between the end-to-end and smoke modules instead of colliding.
from tests.kube_support import control_plane, namespace  # noqa: F401
from tests.lab_support import lab, lab_keeper, static_lab  # noqa: F401

BASE_CONFIG: dict[str, Any] = {
    "node_name": "node-a",
    "bgp": {
        "local_as": 64513,
        "router_id": "192.0.2.11",
        "peers": [
            {"address": "192.0.2.1", "peer_as": 64512},
            {"address": "192.0.2.5", "peer_as": 64512},
            {"address": "2001:db8::1", "peer_as": 64512},
        ],
    },
    "announce": {
        "external_ips": {"enabled": True, "allowlist": ["198.51.100.64/26", "2001:db8:e::/64"]},
        "load_balancer_ips": {"enabled": True, "allowlist": ["198.51.100.128/26", "2001:db8:1b::/64"]},
    },
}


def make_config(**sections: Any) -> Config:
    """The base configuration with whole top-level sections replaced or merged (dicts merge one level)."""
    document = copy.deepcopy(BASE_CONFIG)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    return parse_config(document, "test", environ={})
