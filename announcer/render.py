"""`announcer render`: the prefixes a node would announce and the addresses it would not, with the reason."""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from announcer.config import Config, ConfigError
from announcer.convert import ObjectError, service_view, slice_view
from announcer.desired import DesiredTable
from announcer.model import Problem, ServiceView, SliceView, family_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One line of the rendered view."""

    family: str
    address: str
    kind: str
    service: str
    announced: bool
    detail: str
    peers: str


def build_table(config: Config, node: str, objects: list[dict[str, Any]]) -> tuple[DesiredTable, list[Problem | str]]:
    """The desired table of a node for these Kubernetes objects (Services and EndpointSlices, any order)."""
    table = DesiredTable(node, config.policy())
    services: list[ServiceView] = []
    slices: list[SliceView] = []
    problems: list[Problem | str] = []
    for obj in objects:
        kind = obj.get("kind")
        try:
            if kind == "Service":
                service, found = service_view(obj, config.announce.annotation_prefix)
                services.append(service)
                problems.extend(found)
            elif kind == "EndpointSlice":
                endpoint_slice, found = slice_view(obj)
                problems.extend(found)
                if endpoint_slice is not None:
                    slices.append(endpoint_slice)
        except ObjectError as error:
            problems.append(f"{kind} ignored: {error}")
    table.replace_slices(slices)
    table.replace_services(services)
    return table, problems


def rows(config: Config, table: DesiredTable) -> list[Row]:
    """Announced prefixes first, then the addresses not announced, each sorted."""
    peers = {
        family: ", ".join(str(peer.address) for peer in config.bgp.peers_of(family)) for family in config.families()
    }
    announced: list[Row] = []
    skipped: list[Row] = []
    for (namespace, name), decision in table.decisions.items():
        owner = f"{namespace}/{name}" if namespace else "(config)"
        for wanted in decision.wanted:
            family = family_of(wanted.prefix)
            announced.append(
                Row(
                    family.label,
                    str(wanted.prefix),
                    wanted.kind.value,
                    owner,
                    True,
                    wanted.attributes.describe(),
                    peers.get(family, "-"),
                )
            )
        for item in decision.not_wanted:
            label = family_of(item.address).label if item.address is not None else "-"
            address = str(item.address) if item.address is not None else "-"
            skipped.append(Row(label, address, item.kind.value, owner, False, item.reason_text, "-"))
    announced.sort(key=lambda row: (row.family, _address_key(row.address), row.service))
    skipped.sort(key=lambda row: (row.service, row.family, _address_key(row.address)))
    return announced + skipped


def _address_key(text: str) -> tuple[int, int]:
    """Numeric order for addresses and prefixes; '-' first."""
    if text == "-":
        return (0, 0)
    network = ipaddress.ip_network(text, strict=False)
    return (network.version, int(network.network_address))


def format_table(table_rows: list[Row]) -> str:
    headers = ("FAMILY", "PREFIX/ADDRESS", "KIND", "SERVICE", "ANNOUNCED", "ATTRIBUTES/REASON", "PEERS")
    cells = [headers] + [
        (row.family, row.address, row.kind, row.service, "yes" if row.announced else "no", row.detail, row.peers)
        for row in table_rows
    ]
    widths = [max(len(line[column]) for line in cells) for column in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def _objects_from_file(path: Path) -> list[dict[str, Any]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"--from-file {path}: cannot read a JSON document: {error}") from None
    items = document.get("items") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise ConfigError(f"--from-file {path}: expected a List with 'items' (kubectl get ... -o json)")
    return [item for item in items if isinstance(item, dict)]


def _objects_from_cluster(config: Config) -> list[dict[str, Any]]:
    import kubernetes

    from announcer.kube import make_api_client

    client = make_api_client(config.watch.kubeconfig)
    core = kubernetes.client.CoreV1Api(client)
    discovery = kubernetes.client.DiscoveryV1Api(client)
    objects: list[dict[str, Any]] = []
    calls: tuple[tuple[Callable[..., Any], str, str], ...] = (
        (core.list_service_for_all_namespaces, "Service", config.announce.service_label_selector),
        (discovery.list_endpoint_slice_for_all_namespaces, "EndpointSlice", ""),
    )
    for call, kind, selector in calls:
        response = call(_preload_content=False, label_selector=selector)
        objects.extend({**item, "kind": kind} for item in json.loads(response.data).get("items", []))
    return objects


def render_main(config: Config, node: str | None, from_file: Path | None, output: str) -> int:
    """The `render` command."""
    node_name = node or config.node
    objects = _objects_from_file(from_file) if from_file is not None else _objects_from_cluster(config)
    table, problems = build_table(config, node_name, objects)
    for problem in problems:
        log.warning("%s", problem)
    table_rows = rows(config, table)
    if output == "json":
        json.dump({"node": node_name, "rows": [row.__dict__ for row in table_rows]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(f"node {node_name}\n{format_table(table_rows)}\n")
    return 0
