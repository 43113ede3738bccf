"""Where a node's labels come from for peer selection: the API server (one GET), a file, or the command line."""

from __future__ import annotations

import json
from pathlib import Path

from announcer.config import Config, ConfigError
from announcer.convert import ObjectKind, convert_object
from announcer.policy import NodeView


def _view(obj: object, source: str) -> NodeView:
    item = convert_object(ObjectKind.NODE, obj, "")
    if not isinstance(item.view, NodeView):
        raise ConfigError(f"{source}: not a Node: {item.error}")
    if item.problems:
        raise ConfigError(f"{source}: " + "; ".join(str(problem) for problem in item.problems))
    return item.view


def node_from_api(config: Config, name: str) -> NodeView:
    """This node's Node, read once from the API server; ConfigError if there is none (peers cannot be chosen)."""
    from announcer.kube import KubeApi, Resource, describe_failure, make_api_client

    try:
        obj = KubeApi(make_api_client(config.watch.kubeconfig)).read_node(name, config.watch.request_timeout)
    except Exception as error:  # unreachable, refused, 403: the start fails with the reason, not a traceback
        reason = describe_failure(error, Resource.NODES, verb="get")
        raise ConfigError(f"Node {name}: cannot be read from the API server: {reason}") from None
    if obj is None:
        raise ConfigError(f"Node {name}: not found by the API server; its labels select the peers")
    return _view(obj, f"Node {name}")


def node_from_file(path: Path) -> NodeView:
    """A Node from 'kubectl get node NAME -o json' output."""
    try:
        document: object = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"--node-from-file {path}: cannot read a JSON document: {error}") from None
    return _view(document, f"--node-from-file {path}")


def node_from_labels(name: str, text: str) -> NodeView:
    """A node known only by its labels, 'k=v,k=v' (check-config and offline rendering)."""
    labels: dict[str, str] = {}
    for term in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = term.partition("=")
        if not separator:
            raise ConfigError(f"--node-labels: {term!r} is not KEY=VALUE")
        labels[key] = value
    return NodeView(name, labels, {})


def only_peers(config: Config, peers: list[str] | None) -> Config:
    """The configuration restricted to the peers exabgp.conf holds for this node (run --peer), in its order."""
    if peers is None:
        return config
    wanted = [text for text in peers if text]
    known = {str(peer.address): peer for peer in config.bgp.peers}
    unknown = [text for text in wanted if text not in known]
    if unknown or not wanted:
        raise ConfigError(f"--peer: {', '.join(unknown) or '(none)'}: not a configured peer's address")
    chosen = [peer for peer in config.bgp.peers if str(peer.address) in wanted]
    return config.model_copy(update={"bgp": config.bgp.model_copy(update={"peers": chosen})})
