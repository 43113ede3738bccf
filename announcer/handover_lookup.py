"""At a stop: this pod's DaemonSet and this node's Node, read from the API server within a bound, for handover.py."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from announcer.convert import ObjectError, ObjectKind, being_deleted, controlling_daemonset, convert_object
from announcer.fields import DNS_LABEL, DNS_SUBDOMAIN
from announcer.handover import Found, Presence, Unknown
from announcer.kube import KubeApi, describe_read_failure
from announcer.policy import NodeRule, NodeView

ENV_POD_NAME = "POD_NAME"  # metadata.name, from the downward API
ENV_POD_NAMESPACE = "POD_NAMESPACE"  # metadata.namespace, from the downward API
LOOKUP_LIMIT = 2.0  # the whole lookup, every request included (s): the withdraw, if it comes to that, must still fit


@dataclass(frozen=True)
class WatchedNode:
    """This node's Node as the node-state watch last saw it (None: not known), so the stop need not read it."""

    view: NodeView | None


def look_up(
    api: KubeApi,
    environ: Mapping[str, str],
    node: str,
    rule: NodeRule,
    *,
    watched: WatchedNode | None,
    limit: float = LOOKUP_LIMIT,
) -> Found | Unknown:
    """The facts the stop's decision reads, or Unknown(why) when they cannot be had within `limit` seconds (the
    requests go on in a daemon thread that nothing waits for)."""
    result: list[Found | Unknown] = []

    def run() -> None:
        try:
            presence = _daemonset(api, environ, limit)
            if presence is not Presence.PRESENT:  # the decision is made: the Node need not be read
                result.append(Found(presence, None, rule))
                return
            view = watched.view if watched is not None else _node(api, node, limit)
        except _CannotTell as error:
            result.append(Unknown(str(error)))
            return
        result.append(Found(presence, view, rule))

    thread = threading.Thread(target=run, name="stop-lookup", daemon=True)
    thread.start()
    thread.join(limit)
    return result[0] if result else Unknown(f"the API server did not answer within {limit:.1f} s")


class _CannotTell(Exception):
    """Why the facts cannot be had: one clause."""


def _daemonset(api: KubeApi, environ: Mapping[str, str], limit: float) -> Presence:
    """The DaemonSet that controls this pod: present, missing, or being deleted."""
    pod_name, namespace = environ.get(ENV_POD_NAME, ""), environ.get(ENV_POD_NAMESPACE, "")
    if not pod_name or not namespace:
        raise _CannotTell(f"{ENV_POD_NAME} or {ENV_POD_NAMESPACE} is not set (the downward API gives them)")
    if not DNS_SUBDOMAIN.fullmatch(pod_name) or not DNS_LABEL.fullmatch(namespace):
        raise _CannotTell(f"{ENV_POD_NAME} or {ENV_POD_NAMESPACE} is not a Kubernetes name")
    try:
        pod = api.read_pod(namespace, pod_name, limit)
    except Exception as error:
        raise _CannotTell(f"reading Pod {namespace}/{pod_name}: {describe_read_failure(error, 'pods')}") from None
    if pod is None:
        raise _CannotTell(f"Pod {namespace}/{pod_name} is not found")
    try:
        owner = controlling_daemonset(pod)
    except ObjectError as error:
        raise _CannotTell(str(error)) from None
    try:
        daemonset = api.read_daemonset(namespace, owner, limit)
    except Exception as error:
        reason = describe_read_failure(error, "apps/daemonsets")
        raise _CannotTell(f"reading DaemonSet {namespace}/{owner}: {reason}") from None
    if daemonset is None:
        return Presence.MISSING
    return Presence.DELETING if being_deleted(daemonset) else Presence.PRESENT


def _node(api: KubeApi, node: str, limit: float) -> NodeView | None:
    """This node's Node, read once (None: missing)."""
    try:
        obj = api.read_node(node, limit)
    except Exception as error:
        raise _CannotTell(f"reading Node {node}: {describe_read_failure(error, 'nodes')}") from None
    if obj is None:
        return None
    item = convert_object(ObjectKind.NODE, obj, "")
    if not isinstance(item.view, NodeView):
        raise _CannotTell(f"Node {node} cannot be read: {item.error}")
    return item.view
