"""The store: objects, the global resourceVersion, the bounded event history and the open watches, one lock."""

from __future__ import annotations

import bisect
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lab.fakeapi.objects import Event, ObjectFilter, StoredObject, WriteRequest, generated_name
from lab.fakeapi.pagination import ListSnapshot, SnapshotCache
from lab.fakeapi.wire import (
    RESOURCES,
    ApiError,
    Resource,
    WriteMode,
    encode,
    parse_resource_version,
    too_old_line,
    utc_timestamp,
)


@dataclass(slots=True, eq=False)
class WatchCursor:
    """How far one open watch has got through the history, and what it asked for."""

    resource: Resource
    object_filter: ObjectFilter
    position: int
    expiry_epoch: int
    bookmark_epoch: int
    allow_bookmarks: bool
    connection: socket.socket | None
    dropped: bool = False


@dataclass(slots=True)
class WatchWakeup:
    """What a watch found when it woke: new events, a bookmark request, an expiry, or a drop."""

    events: list[Event] = field(default_factory=list)
    bookmark_requested: bool = False
    error_line: bytes | None = None
    dropped: bool = False


@dataclass(slots=True)
class OpenedWatch:
    """A watch just opened: its cursor, the objects it starts with, or the 410 line it must end with."""

    cursor: WatchCursor
    initial_objects: list[StoredObject]
    error_line: bytes | None


class Store:
    """Objects, the global resourceVersion, the bounded event history and the open watches, under one lock."""

    def __init__(self, history_size: int) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self._condition = threading.Condition()
        self._objects: dict[Resource, dict[tuple[str, str], StoredObject]] = {r: {} for r in RESOURCES}
        self._sorted_keys: dict[Resource, list[tuple[str, str]] | None] = dict.fromkeys(RESOURCES)
        self._resource_version = 1
        self._history_size = history_size
        self._history: list[Event | None] = [None] * history_size  # ring indexed by rv % size
        self._compacted_resource_version = 1  # no history at or before this rv survives
        self._expiry_epoch = 0
        self._bookmark_epoch = 0
        self._closed = False
        self._watches: set[WatchCursor] = set()
        self._list_snapshots = SnapshotCache()

    # writes

    def write(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        namespace: str,
        mode: WriteMode,
        url_name: str | None = None,
    ) -> tuple[StoredObject, bool]:
        """Create or replace one object; returns it and whether it was created."""
        request = WriteRequest.parse(resource, obj, namespace, url_name)
        with self._condition:
            objects = self._objects[resource]
            name = request.name or generated_name(objects, namespace, request.generate_name, mode)
            existing = objects.get((namespace, name))
            if existing is None:
                uid, created, generation = str(uuid.uuid4()), utc_timestamp(), 1
            else:
                request.check_may_overwrite(existing, mode)
                uid, created = existing.uid, existing.creation_timestamp
                generation = existing.generation + (existing.spec_json != request.spec_json)
            metadata: dict[str, Any] = {
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": "",
                "generation": generation,
                "creationTimestamp": created,
            }
            if not resource.namespaced:
                del metadata["namespace"]  # a cluster-scoped object has none, as the real API server serves it
            metadata.update(
                (key, value)
                for key, value in request.metadata.items()
                if key not in metadata and (resource.namespaced or key != "namespace")
            )
            if existing is not None and generation == existing.generation:
                # Like etcd, an update that changes nothing is not a write: no new rv, no event.
                metadata["resourceVersion"] = str(existing.resource_version)
                if request.body(encode(metadata)) == existing.body:
                    return existing, False
            resource_version = self._resource_version + 1
            metadata["resourceVersion"] = str(resource_version)
            metadata_json = encode(metadata)
            metadata_end = len(resource.object_head) + len(metadata_json)
            stored = StoredObject(
                resource=resource,
                namespace=namespace,
                name=name,
                resource_version=resource_version,
                uid=uid,
                creation_timestamp=created,
                generation=generation,
                labels=request.labels,
                body=request.body(metadata_json),
                metadata_end=metadata_end,
                spec_end=metadata_end + len(request.spec_json),
            )
            objects[stored.key] = stored
            if existing is None:
                self._sorted_keys[resource] = None
            self._record(Event(resource_version, "ADDED" if existing is None else "MODIFIED", stored, existing))
            return stored, existing is None

    def delete(self, resource: Resource, namespace: str, name: str) -> StoredObject | None:
        """Delete one object; returns it as the DELETED event carries it, or None if it was absent."""
        with self._condition:
            existing = self._objects[resource].pop((namespace, name), None)
            if existing is None:
                return None
            self._sorted_keys[resource] = None
            resource_version = self._resource_version + 1
            deleted = existing.with_resource_version(resource_version)
            self._record(Event(resource_version, "DELETED", deleted, None))
            return deleted

    def _record(self, event: Event) -> None:
        self._resource_version = event.resource_version
        self._history[event.resource_version % self._history_size] = event
        self._condition.notify_all()

    # reads

    def get(self, resource: Resource, namespace: str, name: str) -> StoredObject | None:
        with self._condition:
            return self._objects[resource].get((namespace, name))

    @property
    def resource_version(self) -> int:
        with self._condition:
            return self._resource_version

    def object_counts(self) -> dict[str, int]:
        with self._condition:
            return {resource.plural: len(self._objects[resource]) for resource in RESOURCES}

    def _objects_in(self, resource: Resource, namespace: str | None) -> list[StoredObject]:
        """The objects of one resource (in one namespace), in namespace/name order. Caller holds the lock."""
        objects = self._objects[resource]
        keys = self._sorted_keys[resource]
        if keys is None:
            keys = sorted(objects)
            self._sorted_keys[resource] = keys
        if namespace is None:
            first, end = 0, len(keys)
        else:
            first = bisect.bisect_left(keys, (namespace, ""))
            end = bisect.bisect_left(keys, (namespace + "\x00", ""))
        return [objects[keys[index]] for index in range(first, end)]

    def _history_floor(self) -> int:
        """Watches may start from any rv at or after this one; events after it are all in the ring."""
        return max(self._compacted_resource_version, self._resource_version - self._history_size)

    def list_page(
        self,
        resource: Resource,
        object_filter: ObjectFilter,
        *,
        limit: int,
        continue_token: str | None,
        resource_version: str | None,
    ) -> bytes:
        """One page of a list response, as JSON."""
        if continue_token:
            snapshot_id, snapshot, start = self._list_snapshots.resume(continue_token, resource, object_filter)
            return self._list_snapshots.page(snapshot, snapshot_id, start, limit)
        requested = parse_resource_version(resource_version) if resource_version else 0
        with self._condition:
            if requested > self._resource_version:
                raise ApiError(
                    504, f"Too large resource version: {requested}, current: {self._resource_version}", reason="Timeout"
                )
            candidates = self._objects_in(resource, object_filter.namespace)
            list_resource_version = self._resource_version
        bodies = [stored.body for stored in candidates if object_filter.matches(stored)]
        snapshot = ListSnapshot(resource, object_filter, list_resource_version, bodies, time.monotonic())
        return self._list_snapshots.page(snapshot, "", 0, limit)

    # watches

    def open_watch(
        self,
        resource: Resource,
        object_filter: ObjectFilter,
        *,
        resource_version: str | None,
        allow_bookmarks: bool,
        send_initial_events: bool,
        connection: socket.socket | None,
    ) -> OpenedWatch:
        from_current_state = send_initial_events or resource_version in (None, "", "0")
        requested = 0 if from_current_state else parse_resource_version(resource_version or "")
        with self._condition:
            if self._closed:
                raise ApiError(503, "the fake API server is shutting down")
            current = self._resource_version
            initial_objects: list[StoredObject] = []
            error_line: bytes | None = None
            if from_current_state:
                initial_objects = self._objects_in(resource, object_filter.namespace)
                position = current
            elif requested > current:
                raise ApiError(504, f"Too large resource version: {requested}, current: {current}", reason="Timeout")
            else:
                floor = self._history_floor()
                if requested < floor:
                    error_line = too_old_line(requested, floor)
                position = requested
            cursor = WatchCursor(
                resource=resource,
                object_filter=object_filter,
                position=position,
                expiry_epoch=self._expiry_epoch,
                bookmark_epoch=self._bookmark_epoch,
                allow_bookmarks=allow_bookmarks,
                connection=connection,
            )
            self._watches.add(cursor)
        return OpenedWatch(cursor, initial_objects, error_line)

    def wait_for_events(self, cursor: WatchCursor, timeout: float) -> WatchWakeup:
        """Block until the watch has something to send or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                if cursor.dropped or self._closed:
                    return WatchWakeup(dropped=True)
                if cursor.expiry_epoch != self._expiry_epoch or cursor.position < self._history_floor():
                    return WatchWakeup(error_line=too_old_line(cursor.position, self._history_floor()))
                bookmark_requested = cursor.allow_bookmarks and cursor.bookmark_epoch != self._bookmark_epoch
                cursor.bookmark_epoch = self._bookmark_epoch
                if cursor.position < self._resource_version or bookmark_requested:
                    events = [
                        event
                        for resource_version in range(cursor.position + 1, self._resource_version + 1)
                        if (event := self._history[resource_version % self._history_size]) is not None
                        and event.object.resource is cursor.resource
                    ]
                    cursor.position = self._resource_version
                    return WatchWakeup(events=events, bookmark_requested=bookmark_requested)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return WatchWakeup()
                self._condition.wait(remaining)

    def close_watch(self, cursor: WatchCursor) -> None:
        with self._condition:
            self._watches.discard(cursor)

    def open_watch_counts(self) -> dict[str, int]:
        with self._condition:
            counts = dict.fromkeys((resource.plural for resource in RESOURCES), 0)
            for cursor in self._watches:
                counts[cursor.resource.plural] += 1
            return counts

    def drop_watches(self) -> list[socket.socket]:
        """Mark every open watch dropped; returns their connections for the caller to cut."""
        with self._condition:
            connections = []
            for cursor in self._watches:
                cursor.dropped = True
                if cursor.connection is not None:
                    connections.append(cursor.connection)
            self._condition.notify_all()
            return connections

    def expire_history(self) -> None:
        with self._condition:
            self._compacted_resource_version = self._resource_version
            self._history = [None] * self._history_size
            self._expiry_epoch += 1
            self._list_snapshots.clear()
            self._condition.notify_all()

    def request_bookmarks(self) -> None:
        with self._condition:
            self._bookmark_epoch += 1
            self._condition.notify_all()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
