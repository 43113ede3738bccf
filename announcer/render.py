"""`announcer render`: the prefixes a node would announce and the addresses it would not, with the reason."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from announcer.config import Config, ConfigError
from announcer.convert import Converted, ObjectKind, convert_object, shape_of
from announcer.desired import DesiredTable
from announcer.model import Kind, Problem, ServiceView, SliceView, family_of
from announcer.policy import NodeView

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


def build_table(config: Config, node: str, objects: Iterable[Converted]) -> tuple[DesiredTable, list[Problem | str]]:
    """The desired table of a node for these converted objects (Services and EndpointSlices, any order)."""
    table = DesiredTable(node, config.policy())
    services: list[ServiceView] = []
    slices: list[SliceView] = []
    problems: list[Problem | str] = []
    for item in objects:
        if item.key is None:
            problems.append(f"{item.kind.value} ignored: {item.error}")
            continue
        problems.extend(item.problems)
        if isinstance(item.view, NodeView):
            if item.view.name == node:
                table.set_node(item.view)  # other nodes' Nodes (a whole 'kubectl get nodes') are not this node
        elif isinstance(item.view, ServiceView):
            services.append(item.view)
        elif isinstance(item.view, SliceView):
            slices.append(item.view)
    table.replace_slices(slices)
    table.replace_services(services)
    prefix = config.announce.annotation_prefix
    problems.extend(f"Service {ns}/{name}: {refusal.describe(prefix)}" for (ns, name), refusal in table.take_refusals())
    return table, problems


def rows(config: Config, table: DesiredTable) -> list[Row]:
    """Announced prefixes first, then the addresses not announced, each sorted."""
    peers = {
        (family, kind): ", ".join(str(p.address) for p in config.bgp.peers_of(family) if kind in p.receive.kinds())
        for family in config.families()
        for kind in Kind
    }
    announced: list[Row] = []
    skipped: list[Row] = []
    for (namespace, name), decision in table.decisions.items():
        owner = f"{namespace}/{name}" if namespace else "(config)"
        for wanted in decision.wanted:
            family = family_of(wanted.prefix)
            if table.node_reasons:  # node state withdraws everything: the node-level reason on every row
                reason = "node: " + ", ".join(table.node_reasons)
                skipped.append(Row(family.label, str(wanted.prefix), wanted.kind.value, owner, False, reason, "-"))
                continue
            announced.append(
                Row(
                    family.label,
                    str(wanted.prefix),
                    wanted.kind.value,
                    owner,
                    True,
                    wanted.attributes.describe(),
                    peers.get((family, wanted.kind)) or "-",
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


_KINDS = {kind.value: kind for kind in ObjectKind}


def _objects_from_file(config: Config, path: Path) -> list[Converted]:
    """The Services, EndpointSlices (and Nodes) of 'kubectl get services,endpointslices,nodes -A -o json' output."""
    try:
        document: object = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"--from-file {path}: cannot read a JSON document: {error}") from None
    items = document.get("items") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise ConfigError(f"--from-file {path}: expected a List with 'items' (kubectl get ... -o json)")
    prefix = config.announce.annotation_prefix
    kinds = [(item, item.get("kind")) for item in items if isinstance(item, dict)]
    return [
        convert_object(_KINDS[kind], item, prefix) for item, kind in kinds if isinstance(kind, str) and kind in _KINDS
    ]


def _objects_from_cluster(config: Config, node: str) -> list[Converted]:
    """Both resources, listed page by page with timeouts by the routine the daemon's watchers use."""
    from announcer.kube import KubeApi, Resource, describe_failure, list_pages, make_api_client, node_field_selector

    try:
        api = KubeApi(make_api_client(config.watch.kubeconfig))
    except Exception as error:  # no kubeconfig, no in-cluster account, an unreadable file: a sentence, no traceback
        raise ClusterError(f"no Kubernetes credentials: {type(error).__name__}: {error}") from None
    kinds = {Resource.SERVICES: ObjectKind.SERVICE, Resource.ENDPOINTSLICES: ObjectKind.ENDPOINT_SLICE}
    if config.node_state.rule().enabled:
        kinds[Resource.NODES] = ObjectKind.NODE
    objects: list[Converted] = []
    for resource, kind in kinds.items():
        selector = config.announce.service_label_selector if resource is Resource.SERVICES else ""
        pages = list_pages(
            api,
            resource,
            label_selector=selector,
            field_selector=node_field_selector(node) if resource is Resource.NODES else "",
            page_size=config.watch.page_size,
            request_timeout=config.watch.request_timeout,
            shape=shape_of(kind),
        )
        try:
            for page in pages:
                objects.extend(convert_object(kind, item, config.announce.annotation_prefix) for item in page.items)
        except Exception as error:  # refused, unreachable, timed out: one sentence naming the resource
            raise ClusterError(f"cannot list {resource.value}: {describe_failure(error, resource)}") from None
    return objects


EXIT_CLUSTER = 1  # the cluster could not be read


class ClusterError(Exception):
    """The cluster could not be read (credentials, RBAC, an unreachable server): said in one sentence."""


def render_main(config: Config, node: str | None, from_file: Path | None, output: str) -> int:
    """The `render` command."""
    node_name = node or config.node
    try:
        objects = (
            _objects_from_file(config, from_file) if from_file is not None else _objects_from_cluster(config, node_name)
        )
    except ClusterError as error:
        print(f"announcer render: {error}", file=sys.stderr)
        return EXIT_CLUSTER
    table, problems = build_table(config, node_name, objects)
    for problem in problems:
        log.warning("%s", problem)
    table_rows = rows(config, table)
    if output == "json":
        document = {
            "node": node_name,
            "node_withdrawn": list(table.node_reasons),
            "rows": [row.__dict__ for row in table_rows],
        }
        text = json.dumps(document, indent=2) + "\n"
    else:
        state = f": everything withdrawn by node state ({', '.join(table.node_reasons)})" if table.node_reasons else ""
        text = f"node {node_name}{state}\n{format_table(table_rows)}\n"
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `render | head`: the reader has what it wanted; no traceback, and none at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
