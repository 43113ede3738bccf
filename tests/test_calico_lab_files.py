"""The lab's Calico fixtures: recorded renderings kept as recorded, the labelled variant derived only by removal."""

from __future__ import annotations

import difflib
import re

import pytest

from lab.calico import CALICO_FILES, excluded_node_rendering, frr_tor_config, parse_kernel_routes, recorded_rendering

SERVICE_ROUTE = re.compile(r"route (198\.51\.100\.\d+/\d+|2001:db8:(96|e|1b)::\S*/\d+) blackhole;")
SERVICE_EXPORT = re.compile(r"if \( net ~ (198\.51\.100\.\d+/\d+|2001:db8:(96|e|1b)::\S*/\d+) \) then \{ accept; \}")


@pytest.mark.parametrize("node", ["node-a", "node-b"])
def test_the_recorded_renderings_differ_from_calico_output_only_by_the_commented_krt_tunnel(node: str) -> None:
    files = recorded_rendering(node)
    assert sorted(files) == sorted(
        ["bird.cfg", "bird6.cfg", "bird_aggr.cfg", "bird6_aggr.cfg", "bird_ipam.cfg", "bird6_ipam.cfg"]
    )
    for name, text in files.items():
        assert text.startswith(f"# calico-node v3.29.7's rendering for {node} "), name
        assert "krt_tunnel" not in text.replace('# krt_tunnel = "";', ""), name
    assert files["bird_ipam.cfg"].count('# krt_tunnel = "";') == 1
    assert (CALICO_FILES / "README.md").read_text(encoding="utf-8").startswith("# Recorded Calico 3.29 outputs")


@pytest.mark.parametrize("node", ["node-a", "node-b"])
def test_the_labelled_variant_only_drops_static_service_routes(node: str) -> None:
    """Exactly the static service routes go (aggregates and per-Service ones, and their export lines); the pod
    block, its export and the kernel filter's reject CIDRs stay."""
    recorded = recorded_rendering(node)
    derived = excluded_node_rendering(recorded)
    for name, text in recorded.items():
        diff = list(difflib.ndiff(text.splitlines(), derived[name].splitlines()))
        removed = [line[2:].strip() for line in diff if line.startswith("- ")]
        added = [line[2:] for line in diff if line.startswith("+ ")]
        if name.endswith("_aggr.cfg"):
            assert removed[0] == "# Static routes." and removed[1:]
            assert all(SERVICE_ROUTE.fullmatch(line) for line in removed[1:]), removed
        elif name.endswith("_ipam.cfg"):
            assert removed[0] == "# Export static routes." and removed[1:]
            assert all(SERVICE_EXPORT.fullmatch(line) for line in removed[1:]), removed
            assert "filter calico_kernel_programming" in derived[name]
            assert derived[name].count("then { reject; }") == text.count("then { reject; }")
        else:
            assert removed == [] and added == []
            continue
        assert all(line.startswith("# ") for line in added) and "DERIVED, NOT RECORDED" in added[0]


def test_the_frr_variant_without_add_path_adds_one_line_per_neighbour() -> None:
    neighbours = ["192.0.2.11", "192.0.2.12", "2001:db8::11", "2001:db8::12"]
    assert "disable-addpath-rx" not in frr_tor_config(True, neighbours)
    lines = frr_tor_config(False, neighbours).splitlines()
    assert sorted(line.strip() for line in lines if "disable-addpath-rx" in line) == sorted(
        f"neighbor {address} disable-addpath-rx" for address in neighbours
    )


def test_kernel_routes_inside_the_service_ranges_are_found_in_any_table() -> None:
    text = (
        '[{"type":"blackhole","dst":"10.244.0.0/26","protocol":"bird"},'
        '{"dst":"198.51.100.10","gateway":"192.0.2.1","protocol":"bird","table":"local"},'
        '{"dst":"default","gateway":"192.0.2.1"}]'
    )
    routes = parse_kernel_routes(text, "ipv4")
    assert [(r.destination, r.table) for r in routes if r.in_service_ranges()] == [("198.51.100.10/32", "local")]
    six = parse_kernel_routes('[{"dst":"2001:db8:96::a","table":"main"},{"dst":"2001:db8::/64"}]', "ipv6")
    assert [r.destination for r in six if r.in_service_ranges()] == ["2001:db8:96::a/128"]
