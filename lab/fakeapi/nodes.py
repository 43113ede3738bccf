"""Node objects for the stand-in API server: a builder of a kubelet-like Node and the cordon/label/Ready edits."""

from __future__ import annotations

import copy
from typing import Any


def node_object(
    name: str, *, labels: dict[str, str] | None = None, unschedulable: bool = False, ready: str = "True"
) -> dict[str, Any]:
    """A Node as a kubelet registers it (cluster-scoped: no namespace), with a Ready condition."""
    spec: dict[str, Any] = {"unschedulable": True} if unschedulable else {}
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": "KubeletReady" if ready == "True" else "NodeStatusUnknown",
                },
            ]
        },
    }


def edited(
    node: dict[str, Any],
    *,
    labels: dict[str, str | None] | None = None,
    unschedulable: bool | None = None,
    ready: str | None = None,
) -> dict[str, Any]:
    """A copy of a Node with labels set (None removes one), cordoned/uncordoned, or its Ready status changed."""
    result = copy.deepcopy(node)
    result["metadata"].pop("resourceVersion", None)
    current = result["metadata"].setdefault("labels", {})
    for key, value in (labels or {}).items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    if unschedulable is not None:
        if unschedulable:
            result.setdefault("spec", {})["unschedulable"] = True
        else:
            result.setdefault("spec", {}).pop("unschedulable", None)
    if ready is not None:
        for condition in result["status"]["conditions"]:
            if condition["type"] == "Ready":
                condition["status"] = ready
    return result
