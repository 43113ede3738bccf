"""Paginated lists: item snapshots frozen at the first page, and the continue tokens that name them."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from lab.fakeapi.objects import ObjectFilter
from lab.fakeapi.wire import ApiError, Resource, encode

_CONTINUE_TTL: Final = 300.0  # seconds a paginated list snapshot stays usable (etcd compacts about as often)
_MAX_LIST_SNAPSHOTS: Final = 256


@dataclass(slots=True)
class ListSnapshot:
    """The items of a paginated list, frozen at its first page so every page shows one consistent state."""

    resource: Resource
    object_filter: ObjectFilter
    resource_version: int
    bodies: list[bytes]
    created: float


def encode_continue_token(snapshot_id: str, resource_version: int, start: int) -> str:
    token = encode({"v": "fakeapi/v1", "rv": resource_version, "id": snapshot_id, "start": start})
    return base64.urlsafe_b64encode(token).decode()


def decode_continue_token(token: str) -> tuple[str, int]:
    """The snapshot id and the first item index a continue token names; 400 when it is not one of ours."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        snapshot_id, start = decoded["id"], decoded["start"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise ApiError(400, f"invalid continue token: {token!r}") from None
    if not isinstance(snapshot_id, str) or not isinstance(start, int) or start < 0:
        raise ApiError(400, f"invalid continue token: {token!r}")
    return snapshot_id, start


class SnapshotCache:
    """The snapshots of unfinished paginated lists (oldest dropped first), each usable for a few minutes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: OrderedDict[str, ListSnapshot] = OrderedDict()

    def resume(self, token: str, resource: Resource, object_filter: ObjectFilter) -> tuple[str, ListSnapshot, int]:
        """The snapshot id, snapshot and start index a continue token names; 410 once it has expired."""
        snapshot_id, start = decode_continue_token(token)
        with self._lock:
            snapshot = self._snapshots.get(snapshot_id)
            if snapshot is None or time.monotonic() - snapshot.created > _CONTINUE_TTL:
                self._snapshots.pop(snapshot_id, None)
                raise ApiError(
                    410,
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter.",
                    reason="Expired",
                )
        if snapshot.resource is not resource or snapshot.object_filter != object_filter:
            raise ApiError(400, "the continue token does not belong to this list request")
        return snapshot_id, snapshot, start

    def page(self, snapshot: ListSnapshot, snapshot_id: str, start: int, limit: int) -> bytes:
        """One page of a list response as JSON, keeping the snapshot while pages remain (dropping it after)."""
        end = len(snapshot.bodies) if limit <= 0 else min(start + limit, len(snapshot.bodies))
        metadata: dict[str, object] = {"resourceVersion": str(snapshot.resource_version)}
        if end < len(snapshot.bodies):
            if not snapshot_id:
                snapshot_id = self._keep(snapshot)
            metadata["continue"] = encode_continue_token(snapshot_id, snapshot.resource_version, end)
            if not snapshot.object_filter.has_selectors:
                metadata["remainingItemCount"] = len(snapshot.bodies) - end
        elif snapshot_id:
            with self._lock:
                self._snapshots.pop(snapshot_id, None)
        return b"".join(
            (
                snapshot.resource.list_head,
                encode(metadata),
                b',"items":[',
                b",".join(snapshot.bodies[start:end]),
                b"]}",
            )
        )

    def clear(self) -> None:
        """Forget every snapshot (a compaction: their continue tokens now answer 410)."""
        with self._lock:
            self._snapshots.clear()

    def _keep(self, snapshot: ListSnapshot) -> str:
        snapshot_id = secrets.token_urlsafe(12)
        with self._lock:
            self._snapshots[snapshot_id] = snapshot
            while len(self._snapshots) > _MAX_LIST_SNAPSHOTS:
                self._snapshots.popitem(last=False)
        return snapshot_id
