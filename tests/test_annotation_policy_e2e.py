"""End to end against FRR: the admin's annotation policy decides what a Service editor's annotations reach."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from announcer.model import family_of, host_prefix
from lab.lab import Lab
from tests import test_e2e
from tests.factories import service
from tests.test_e2e import BOTH, Cluster, wait_for_announced

pytestmark = pytest.mark.lab
# The end-to-end module's fixture over the default lab (examples/announcer.yaml).
cluster = test_e2e.cluster


def paths(lab: Lab, text: str) -> list[dict[str, Any]]:
    """FRR's paths (one per node) for an address's host route."""
    address = ipaddress.ip_address(text)
    document = lab.frr().vtysh_json(f"show bgp {family_of(address).value} unicast {host_prefix(address)} json")
    found: list[dict[str, Any]] = document["paths"]
    return found


def test_a_blackhole_community_and_an_out_of_bounds_med_never_reach_the_router_while_allowed_ones_do(
    lab: Lab, cluster: Cluster
) -> None:
    """examples/announcer.yaml allows communities 64513:* and MED up to 1000: a Service asking for blackhole and
    MED 5000 reaches FRR with the configured community 64513:100 and no MED; one asking for 64513:7 and MED 5 gets
    them, on both nodes' paths."""
    hostile, allowed = "198.51.100.40", "198.51.100.41"
    cluster.apply(
        service("e2e-hostile", [hostile], annotations={"bgp.announcer.io/communities": "blackhole,no-export",
                                                       "bgp.announcer.io/med": "5000"}),
        service("e2e-allowed", [allowed], annotations={"bgp.announcer.io/communities": "64513:7",
                                                       "bgp.announcer.io/med": "5"}),
    )  # fmt: skip
    wait_for_announced(lab, {hostile: BOTH, allowed: BOTH})
    hostile_paths, allowed_paths = paths(lab, hostile), paths(lab, allowed)
    assert [(p["community"]["string"], p.get("metric")) for p in hostile_paths] == [("64513:100", None)] * 2
    assert [(p["community"]["string"], p.get("metric")) for p in allowed_paths] == [("64513:7", 5)] * 2
