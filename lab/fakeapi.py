"""Stand-in Kubernetes API server serving Services and EndpointSlices over real HTTP, with fault injection."""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import contextlib
import dataclasses
import json
import logging
import queue
import re
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ["FakeApiServer", "main"]

_LOG = logging.getLogger(__name__)

_DEFAULT_NAMESPACE: Final = "default"
_PEER_CHECK_INTERVAL: Final = 0.5  # seconds between checks that an idle watch's client is still there
_WRITE_BATCH_BYTES: Final = 256 * 1024  # watch chunks are coalesced into sendall() calls of about this size
_CONTINUE_TTL: Final = 300.0  # seconds a paginated list snapshot stays usable (etcd compacts about as often)
_MAX_LIST_SNAPSHOTS: Final = 256
_BIND_ATTEMPTS: Final = 100  # rebinding after an unreachable period retries this often, 20 ms apart
_ENVELOPE_FIELDS: Final = frozenset({"kind", "apiVersion", "metadata", "status"})
_STATUS_REASONS: Final[Mapping[int, str]] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_VERSION_INFO: Final[Mapping[str, str]] = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-fakeapi",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_RequestCategory: TypeAlias = Literal["list", "watch", "get", "write"]
_WriteMode: TypeAlias = Literal["create", "replace", "apply"]


def _encode(value: object) -> bytes:
    """Compact UTF-8 JSON, the one serialisation used for everything served."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class _Resource:
    """One served resource type, with the JSON fragments every object and list of it starts with."""

    __slots__ = ("api_version", "group", "kind", "list_head", "object_head", "path_prefix", "plural")

    def __init__(self, kind: str, api_version: str, plural: str, path_prefix: str) -> None:
        self.kind = kind
        self.api_version = api_version
        self.plural = plural
        self.path_prefix = path_prefix
        self.group = api_version.rpartition("/")[0]
        type_fields = b'"apiVersion":' + _encode(api_version) + b',"metadata":'
        self.object_head = b'{"kind":' + _encode(kind) + b"," + type_fields
        self.list_head = b'{"kind":' + _encode(kind + "List") + b"," + type_fields

    def status_details(self, name: str) -> dict[str, str]:
        details = {"name": name, "kind": self.plural}
        if self.group:
            details["group"] = self.group
        return details


_SERVICES: Final = _Resource("Service", "v1", "services", "/api/v1")
_ENDPOINT_SLICES: Final = _Resource(
    "EndpointSlice", "discovery.k8s.io/v1", "endpointslices", "/apis/discovery.k8s.io/v1"
)
_RESOURCES: Final = (_SERVICES, _ENDPOINT_SLICES)
_RESOURCES_BY_KIND: Final = {resource.kind: resource for resource in _RESOURCES}
_RESOURCES_BY_PLURAL: Final = {resource.plural: resource for resource in _RESOURCES}
_RESOURCE_PATH: Final = re.compile(
    r"(?P<prefix>/api/v1|/apis/discovery\.k8s\.io/v1)"
    r"(?:/namespaces/(?P<namespace>[^/]+))?"
    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?/?"
)


class _ApiError(Exception):
    """An error answered with a Kubernetes Status object."""

    def __init__(
        self, code: int, message: str, *, reason: str | None = None, details: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _STATUS_REASONS.get(code, "Unknown")
        self.details = details


def _status_json(error: _ApiError) -> bytes:
    status: dict[str, object] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": error.message,
        "reason": error.reason,
    }
    if error.details:
        status["details"] = dict(error.details)
    status["code"] = error.code
    return _encode(status)


def _event_line(event_type: str, object_json: bytes) -> bytes:
    return b'{"type":"' + event_type.encode() + b'","object":' + object_json + b"}\n"


def _too_old_line(requested: int, oldest: int) -> bytes:
    error = _ApiError(410, f"too old resource version: {requested} ({oldest})", reason="Expired")
    return _event_line("ERROR", _status_json(error))


def _bookmark_line(resource: _Resource, resource_version: int, *, initial_events_end: bool = False) -> bytes:
    metadata: dict[str, object] = {"resourceVersion": str(resource_version)}
    if initial_events_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return _event_line("BOOKMARK", resource.object_head + _encode(metadata) + b"}")


def _parse_resource_version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise _ApiError(400, f"invalid resource version: {text!r}")
    return value


def _utc_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- selectors ---------------------------------------------------------------------------------------

_LABEL_KEY: Final = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_LABEL_VALUE: Final = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_FIELD_VALUE: Final = r"[^,()=!\s]*"
_SUPPORTED_FIELDS: Final = frozenset({"metadata.name", "metadata.namespace"})

_Operator: TypeAlias = Literal["exists", "not_exists", "in", "not_in"]


@dataclass(frozen=True, slots=True)
class _Requirement:
    """One comma-separated term of a label or field selector."""

    key: str
    operator: _Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "exists":
            return value is not None
        if self.operator == "not_exists":
            return value is None
        if self.operator == "in":
            return value is not None and value in self.values
        return value is None or value not in self.values


def _split_selector_terms(text: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    start = 0
    for index, character in enumerate(text):
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
        elif character == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return [term.strip() for term in terms]


def _parse_selector(text: str, *, fields: bool) -> tuple[_Requirement, ...]:
    """Parse a label selector (equality- and set-based) or a field selector (equality only)."""
    if not text.strip():
        return ()
    value_pattern = _FIELD_VALUE if fields else _LABEL_VALUE
    equality = re.compile(rf"({_LABEL_KEY})\s*(==|=|!=)\s*({value_pattern})")
    set_based = re.compile(rf"({_LABEL_KEY})\s+(in|notin)\s*\(([^()]*)\)")
    existence = re.compile(rf"(!?)\s*({_LABEL_KEY})")
    selector_name = "fieldSelector" if fields else "labelSelector"
    requirements: list[_Requirement] = []
    for term in _split_selector_terms(text):
        if match := equality.fullmatch(term):
            key, operator, value = match.groups()
            requirement = _Requirement(key, "not_in" if operator == "!=" else "in", frozenset({value}))
        elif not fields and (match := set_based.fullmatch(term)):
            key, operator, value_list = match.groups()
            values = frozenset(value.strip() for value in value_list.split(","))
            if any(not re.fullmatch(_LABEL_VALUE, value) for value in values):
                raise _ApiError(400, f"invalid {selector_name}: {text!r}")
            requirement = _Requirement(key, "in" if operator == "in" else "not_in", values)
        elif not fields and (match := existence.fullmatch(term)):
            negation, key = match.groups()
            requirement = _Requirement(key, "not_exists" if negation else "exists")
        else:
            raise _ApiError(400, f"invalid {selector_name}: {text!r}")
        if fields and requirement.key not in _SUPPORTED_FIELDS:
            raise _ApiError(400, f'field label not supported: "{requirement.key}"')
        requirements.append(requirement)
    return tuple(requirements)


# --- stored objects and events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StoredObject:
    """One object as served: its JSON encoded once per write, plus what filtering and updates need.

    ``body`` is ``resource.object_head + metadata JSON + spec fields + status + "}"``; the offsets let a
    write or delete swap the metadata without decoding the rest.
    """

    resource: _Resource
    namespace: str
    name: str
    resource_version: int
    uid: str
    creation_timestamp: str
    generation: int
    labels: Mapping[str, str]
    body: bytes
    metadata_end: int
    spec_end: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def spec_json(self) -> bytes:
        """Everything but kind, apiVersion, metadata and status: a change here bumps the generation."""
        return self.body[self.metadata_end : self.spec_end]

    def metadata(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body[len(self.resource.object_head) : self.metadata_end])
        return decoded

    def with_resource_version(self, resource_version: int) -> _StoredObject:
        """The same object stamped with another resourceVersion (what a DELETED event carries)."""
        metadata = self.metadata()
        metadata["resourceVersion"] = str(resource_version)
        metadata_json = _encode(metadata)
        head = self.resource.object_head
        body = head + metadata_json + self.body[self.metadata_end :]
        metadata_end = len(head) + len(metadata_json)
        return dataclasses.replace(
            self,
            resource_version=resource_version,
            body=body,
            metadata_end=metadata_end,
            spec_end=self.spec_end + metadata_end - self.metadata_end,
        )

    def field_values(self) -> dict[str, str]:
        return {"metadata.name": self.name, "metadata.namespace": self.namespace}


@dataclass(slots=True, eq=False)
class _Event:
    """One write in the history ring; the watch lines built from it are cached per event type."""

    resource_version: int
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    object: _StoredObject
    previous: _StoredObject | None
    lines: dict[str, bytes] = field(default_factory=dict)

    def line(self, event_type: str) -> bytes:
        cached = self.lines.get(event_type)
        if cached is None:
            if event_type == "DELETED" and self.previous is not None:
                # The object stopped matching a watch's selector: like the watch cache, send its previous
                # content stamped with this event's resourceVersion.
                object_json = self.previous.with_resource_version(self.resource_version).body
            else:
                object_json = self.object.body
            cached = _event_line(event_type, object_json)
            self.lines[event_type] = cached
        return cached


@dataclass(frozen=True, slots=True)
class _ObjectFilter:
    """Which objects a list or watch request selects."""

    namespace: str | None = None
    name: str | None = None
    labels: tuple[_Requirement, ...] = ()
    fields: tuple[_Requirement, ...] = ()

    @property
    def has_selectors(self) -> bool:
        return bool(self.labels or self.fields)

    def matches(self, stored: _StoredObject) -> bool:
        if self.namespace is not None and stored.namespace != self.namespace:
            return False
        if self.name is not None and stored.name != self.name:
            return False
        if not all(requirement.matches(stored.labels) for requirement in self.labels):
            return False
        if self.fields:
            field_values = stored.field_values()
            return all(requirement.matches(field_values) for requirement in self.fields)
        return True

    def watch_line(self, event: _Event) -> bytes | None:
        """The line a watch with this filter gets for ``event`` (None: not shown to this watch)."""
        if self.namespace is None and self.name is None and not self.has_selectors:
            return event.line(event.type)
        matches_now = self.matches(event.object)
        if event.type != "MODIFIED" or event.previous is None:
            return event.line(event.type) if matches_now else None
        matched_before = self.matches(event.previous)
        if matches_now:
            return event.line("MODIFIED" if matched_before else "ADDED")
        return event.line("DELETED") if matched_before else None


@dataclass(slots=True, eq=False)
class _WatchCursor:
    """How far one open watch has got through the history, and what it asked for."""

    resource: _Resource
    object_filter: _ObjectFilter
    position: int
    expiry_epoch: int
    bookmark_epoch: int
    allow_bookmarks: bool
    connection: socket.socket | None
    dropped: bool = False


@dataclass(slots=True)
class _WatchWakeup:
    """What a watch found when it woke: new events, a bookmark request, an expiry, or a drop."""

    events: list[_Event] = field(default_factory=list)
    bookmark_requested: bool = False
    error_line: bytes | None = None
    dropped: bool = False


@dataclass(slots=True)
class _OpenedWatch:
    cursor: _WatchCursor
    initial_objects: list[_StoredObject]
    error_line: bytes | None


@dataclass(slots=True)
class _ListSnapshot:
    """The items of a paginated list, frozen at its first page so every page shows one consistent state."""

    resource: _Resource
    object_filter: _ObjectFilter
    resource_version: int
    bodies: list[bytes]
    created: float


@dataclass(frozen=True, slots=True)
class _WriteRequest:
    """A create or replace request's object, checked and with its spec and status already encoded."""

    resource: _Resource
    name: str
    generate_name: str
    metadata: Mapping[str, Any]
    labels: Mapping[str, str]
    spec_json: bytes  # the fields other than kind, apiVersion, metadata and status, as ',"a":..,"b":..'
    status_json: bytes  # ',"status":{..}' or empty
    precondition: str  # metadata.resourceVersion sent with a replace: it must still be current

    @classmethod
    def parse(cls, resource: _Resource, obj: Mapping[str, Any], namespace: str, url_name: str | None) -> _WriteRequest:
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise _ApiError(400, "metadata must be an object")
        kind = obj.get("kind")
        if kind not in (None, "", resource.kind):
            raise _ApiError(400, f"kind {kind!r} does not match the resource {resource.plural}")
        if metadata.get("namespace") not in (None, "", namespace):
            raise _ApiError(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        name = metadata.get("name") or url_name or ""
        if url_name is not None and name != url_name:
            raise _ApiError(400, f"the name of the object ({name}) does not match the name on the URL ({url_name})")
        labels = metadata.get("labels") or {}
        if not isinstance(labels, Mapping) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in labels.items()
        ):
            raise _ApiError(400, "metadata.labels must map strings to strings")
        if not isinstance(name, str) or not isinstance(metadata.get("generateName") or "", str):
            raise _ApiError(400, "metadata.name and metadata.generateName must be strings")
        spec_fields = {key: value for key, value in obj.items() if key not in _ENVELOPE_FIELDS}
        try:
            spec_json = b"," + _encode(spec_fields)[1:-1] if spec_fields else b""
            status_json = b',"status":' + _encode(obj["status"]) if "status" in obj else b""
        except (TypeError, ValueError) as error:
            raise _ApiError(400, f"the object is not JSON-serialisable: {error}") from None
        return cls(
            resource=resource,
            name=name,
            generate_name=metadata.get("generateName") or "",
            metadata=metadata,
            labels=dict(labels),
            spec_json=spec_json,
            status_json=status_json,
            precondition=str(metadata.get("resourceVersion") or ""),
        )

    def body(self, metadata_json: bytes) -> bytes:
        return b"".join((self.resource.object_head, metadata_json, self.spec_json, self.status_json, b"}"))

    def check_may_overwrite(self, existing: _StoredObject, mode: _WriteMode) -> None:
        plural, name = self.resource.plural, existing.name
        if mode == "create":
            raise _ApiError(
                409,
                f'{plural} "{name}" already exists',
                reason="AlreadyExists",
                details=self.resource.status_details(name),
            )
        if mode == "replace" and self.precondition and self.precondition != str(existing.resource_version):
            raise _ApiError(
                409,
                f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                reason="Conflict",
                details=self.resource.status_details(name),
            )


def _generated_name(
    objects: Mapping[tuple[str, str], _StoredObject], namespace: str, prefix: str, mode: _WriteMode
) -> str:
    if mode != "create" or not prefix:
        raise _ApiError(422, "metadata.name: Required value: name or generateName is required")
    while True:
        name = prefix + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        if (namespace, name) not in objects:
            return name


# --- the store ------------------------------------------------------------------------------------------


class _Store:
    """Objects, the global resourceVersion, the bounded event history and the open watches, under one lock."""

    def __init__(self, history_size: int) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self._condition = threading.Condition()
        self._objects: dict[_Resource, dict[tuple[str, str], _StoredObject]] = {r: {} for r in _RESOURCES}
        self._sorted_keys: dict[_Resource, list[tuple[str, str]] | None] = dict.fromkeys(_RESOURCES)
        self._resource_version = 1
        self._history_size = history_size
        self._history: list[_Event | None] = [None] * history_size  # ring indexed by rv % size
        self._compacted_resource_version = 1  # no history at or before this rv survives
        self._expiry_epoch = 0
        self._bookmark_epoch = 0
        self._closed = False
        self._watches: set[_WatchCursor] = set()
        self._list_snapshots: OrderedDict[str, _ListSnapshot] = OrderedDict()

    # writes

    def write(
        self,
        resource: _Resource,
        obj: Mapping[str, Any],
        namespace: str,
        mode: _WriteMode,
        url_name: str | None = None,
    ) -> tuple[_StoredObject, bool]:
        """Create or replace one object; returns it and whether it was created."""
        request = _WriteRequest.parse(resource, obj, namespace, url_name)
        with self._condition:
            objects = self._objects[resource]
            name = request.name or _generated_name(objects, namespace, request.generate_name, mode)
            existing = objects.get((namespace, name))
            if existing is None:
                uid, created, generation = str(uuid.uuid4()), _utc_timestamp(), 1
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
            metadata.update((key, value) for key, value in request.metadata.items() if key not in metadata)
            if existing is not None and generation == existing.generation:
                # Like etcd, an update that changes nothing is not a write: no new rv, no event.
                metadata["resourceVersion"] = str(existing.resource_version)
                if request.body(_encode(metadata)) == existing.body:
                    return existing, False
            resource_version = self._resource_version + 1
            metadata["resourceVersion"] = str(resource_version)
            metadata_json = _encode(metadata)
            metadata_end = len(resource.object_head) + len(metadata_json)
            stored = _StoredObject(
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
            self._record(_Event(resource_version, "ADDED" if existing is None else "MODIFIED", stored, existing))
            return stored, existing is None

    def delete(self, resource: _Resource, namespace: str, name: str) -> _StoredObject | None:
        """Delete one object; returns it as the DELETED event carries it, or None if it was absent."""
        with self._condition:
            existing = self._objects[resource].pop((namespace, name), None)
            if existing is None:
                return None
            self._sorted_keys[resource] = None
            resource_version = self._resource_version + 1
            deleted = existing.with_resource_version(resource_version)
            self._record(_Event(resource_version, "DELETED", deleted, None))
            return deleted

    def _record(self, event: _Event) -> None:
        self._resource_version = event.resource_version
        self._history[event.resource_version % self._history_size] = event
        self._condition.notify_all()

    # reads

    def get(self, resource: _Resource, namespace: str, name: str) -> _StoredObject | None:
        with self._condition:
            return self._objects[resource].get((namespace, name))

    @property
    def resource_version(self) -> int:
        with self._condition:
            return self._resource_version

    def object_counts(self) -> dict[str, int]:
        with self._condition:
            return {resource.plural: len(self._objects[resource]) for resource in _RESOURCES}

    def _objects_in(self, resource: _Resource, namespace: str | None) -> list[_StoredObject]:
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
        resource: _Resource,
        object_filter: _ObjectFilter,
        *,
        limit: int,
        continue_token: str | None,
        resource_version: str | None,
    ) -> bytes:
        """One page of a list response, as JSON."""
        if continue_token:
            snapshot_id, start = self._decode_continue_token(continue_token)
            with self._condition:
                snapshot = self._list_snapshots.get(snapshot_id)
                if snapshot is None or time.monotonic() - snapshot.created > _CONTINUE_TTL:
                    self._list_snapshots.pop(snapshot_id, None)
                    raise _ApiError(
                        410,
                        "The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter.",
                        reason="Expired",
                    )
            if snapshot.resource is not resource or snapshot.object_filter != object_filter:
                raise _ApiError(400, "the continue token does not belong to this list request")
        else:
            requested = _parse_resource_version(resource_version) if resource_version else 0
            with self._condition:
                if requested > self._resource_version:
                    raise _ApiError(
                        504,
                        f"Too large resource version: {requested}, current: {self._resource_version}",
                        reason="Timeout",
                    )
                candidates = self._objects_in(resource, object_filter.namespace)
                list_resource_version = self._resource_version
            bodies = [stored.body for stored in candidates if object_filter.matches(stored)]
            snapshot_id = ""
            start = 0
            snapshot = _ListSnapshot(resource, object_filter, list_resource_version, bodies, time.monotonic())
        end = len(snapshot.bodies) if limit <= 0 else min(start + limit, len(snapshot.bodies))
        metadata: dict[str, object] = {"resourceVersion": str(snapshot.resource_version)}
        if end < len(snapshot.bodies):
            if not snapshot_id:
                snapshot_id = self._keep_snapshot(snapshot)
            metadata["continue"] = self._encode_continue_token(snapshot_id, snapshot.resource_version, end)
            if not object_filter.has_selectors:
                metadata["remainingItemCount"] = len(snapshot.bodies) - end
        elif snapshot_id:
            with self._condition:
                self._list_snapshots.pop(snapshot_id, None)
        return b"".join(
            (
                resource.list_head,
                _encode(metadata),
                b',"items":[',
                b",".join(snapshot.bodies[start:end]),
                b"]}",
            )
        )

    def _keep_snapshot(self, snapshot: _ListSnapshot) -> str:
        snapshot_id = secrets.token_urlsafe(12)
        with self._condition:
            self._list_snapshots[snapshot_id] = snapshot
            while len(self._list_snapshots) > _MAX_LIST_SNAPSHOTS:
                self._list_snapshots.popitem(last=False)
        return snapshot_id

    @staticmethod
    def _encode_continue_token(snapshot_id: str, resource_version: int, start: int) -> str:
        token = _encode({"v": "fakeapi/v1", "rv": resource_version, "id": snapshot_id, "start": start})
        return base64.urlsafe_b64encode(token).decode()

    @staticmethod
    def _decode_continue_token(token: str) -> tuple[str, int]:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
            snapshot_id, start = decoded["id"], decoded["start"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise _ApiError(400, f"invalid continue token: {token!r}") from None
        if not isinstance(snapshot_id, str) or not isinstance(start, int) or start < 0:
            raise _ApiError(400, f"invalid continue token: {token!r}")
        return snapshot_id, start

    # watches

    def open_watch(
        self,
        resource: _Resource,
        object_filter: _ObjectFilter,
        *,
        resource_version: str | None,
        allow_bookmarks: bool,
        send_initial_events: bool,
        connection: socket.socket | None,
    ) -> _OpenedWatch:
        from_current_state = send_initial_events or resource_version in (None, "", "0")
        requested = 0 if from_current_state else _parse_resource_version(resource_version or "")
        with self._condition:
            if self._closed:
                raise _ApiError(503, "the fake API server is shutting down")
            current = self._resource_version
            initial_objects: list[_StoredObject] = []
            error_line: bytes | None = None
            if from_current_state:
                initial_objects = self._objects_in(resource, object_filter.namespace)
                position = current
            elif requested > current:
                raise _ApiError(504, f"Too large resource version: {requested}, current: {current}", reason="Timeout")
            else:
                floor = self._history_floor()
                if requested < floor:
                    error_line = _too_old_line(requested, floor)
                position = requested
            cursor = _WatchCursor(
                resource=resource,
                object_filter=object_filter,
                position=position,
                expiry_epoch=self._expiry_epoch,
                bookmark_epoch=self._bookmark_epoch,
                allow_bookmarks=allow_bookmarks,
                connection=connection,
            )
            self._watches.add(cursor)
        return _OpenedWatch(cursor, initial_objects, error_line)

    def wait_for_events(self, cursor: _WatchCursor, timeout: float) -> _WatchWakeup:
        """Block until the watch has something to send or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                if cursor.dropped or self._closed:
                    return _WatchWakeup(dropped=True)
                if cursor.expiry_epoch != self._expiry_epoch or cursor.position < self._history_floor():
                    return _WatchWakeup(error_line=_too_old_line(cursor.position, self._history_floor()))
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
                    return _WatchWakeup(events=events, bookmark_requested=bookmark_requested)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _WatchWakeup()
                self._condition.wait(remaining)

    def close_watch(self, cursor: _WatchCursor) -> None:
        with self._condition:
            self._watches.discard(cursor)

    def open_watch_counts(self) -> dict[str, int]:
        with self._condition:
            counts = dict.fromkeys((resource.plural for resource in _RESOURCES), 0)
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


# --- HTTP -------------------------------------------------------------------------------------------------


class _ConnectionRegistry:
    """Every accepted connection, so faults and shutdown can cut them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()

    def add(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def discard(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def cut_all(self, spare: socket.socket | None = None) -> None:
        with self._lock:
            connections = [connection for connection in self._connections if connection is not spare]
        for connection in connections:
            _cut(connection)


def _cut(connection: socket.socket) -> None:
    """End a connection abruptly; the thread serving it notices and closes it."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


def _peer_has_closed(connection: socket.socket) -> bool:
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class _Listener(ThreadingHTTPServer):
    """One listening socket of a FakeApiServer; replaced by a fresh one after an unreachable period."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: FakeApiServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.api = api
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a lab without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.api._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        if isinstance(request, socket.socket):
            self.api._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            _LOG.debug("fakeapi: connection from %s ended: %s", client_address, error)
        else:
            _LOG.exception("fakeapi: error serving %s", client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    """Routes one HTTP/1.1 connection's requests to the FakeApiServer."""

    protocol_version = "HTTP/1.1"
    server: _Listener
    _response_started = False

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def version_string(self) -> str:
        return "fakeapi"

    def log_message(self, format: str, *args: Any) -> None:
        _LOG.debug("fakeapi: %s " + format, self.address_string(), *args)

    @property
    def _api(self) -> FakeApiServer:
        return self.server.api

    def _dispatch(self) -> None:
        self._response_started = False
        try:
            request_body = self._read_request_body()
            self._route(request_body)
        except _ApiError as error:
            if self._response_started:
                self.close_connection = True
            else:
                self._send_status(error)
        except OSError as error:
            _LOG.debug("fakeapi: %s %s: connection ended: %s", self.command, self.path, error)
            self.close_connection = True
        except Exception:
            _LOG.exception("fakeapi: %s %s failed", self.command, self.path)
            if self._response_started:
                self.close_connection = True
            else:
                self._send_status(_ApiError(500, "internal error in the fake API server"))

    def _read_request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise _ApiError(400, "chunked request bodies are not supported by the fake API server")
        length_text = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise _ApiError(400, f"invalid Content-Length: {length_text!r}") from None
        return self.rfile.read(length) if length > 0 else b""

    # responses

    def _send_bytes(
        self, code: int, body: bytes, content_type: str = "application/json", *, close: bool = False
    ) -> None:
        self._response_started = True
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_status(self, error: _ApiError) -> None:
        self._send_bytes(error.code, _status_json(error))

    def _start_chunked(self) -> None:
        self._response_started = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send_chunks(self, lines: Iterable[bytes]) -> None:
        """Send each line as its own chunk, coalescing chunks into large socket writes."""
        pending = bytearray()
        for line in lines:
            pending += b"%x\r\n" % len(line)
            pending += line
            pending += b"\r\n"
            if len(pending) >= _WRITE_BATCH_BYTES:
                self.wfile.write(pending)
                pending.clear()
        if pending:
            self.wfile.write(pending)

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    # routing

    def _route(self, request_body: bytes) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/") or "/"
        if path.startswith("/_lab/"):
            self._route_lab(path.removeprefix("/_lab/").replace("-", "_"), request_body)
            return
        if path in ("/healthz", "/livez", "/readyz") and self.command == "GET":
            self._send_bytes(200, b"ok", "text/plain; charset=utf-8")
            return
        if path == "/version" and self.command == "GET":
            self._send_bytes(200, _encode(_VERSION_INFO))
            return
        match = _RESOURCE_PATH.fullmatch(path)
        resource = _RESOURCES_BY_PLURAL.get(match["plural"]) if match else None
        if match is None or resource is None or resource.path_prefix != match["prefix"]:
            raise _ApiError(404, "the server could not find the requested resource")
        namespace = unquote(match["namespace"]) if match["namespace"] else None
        name = unquote(match["name"]) if match["name"] else None
        self._route_resource(resource, namespace, name, query, request_body)

    def _route_resource(
        self,
        resource: _Resource,
        namespace: str | None,
        name: str | None,
        query: Mapping[str, str],
        request_body: bytes,
    ) -> None:
        method = self.command
        category: _RequestCategory
        if name is not None and namespace is None:
            raise _ApiError(404, "the server could not find the requested resource")
        if method == "GET":
            is_watch = query.get("watch", "").lower() in ("true", "1")
            category = "watch" if is_watch else "list" if name is None else "get"
        elif (method == "POST" and namespace is not None and name is None) or (
            method in ("PUT", "DELETE") and namespace is not None and name is not None
        ):
            category = "write"
        else:
            raise _ApiError(405, f"the server does not allow {method} on this resource path")
        self._api._count_request(resource, category)
        injected_status = self._api._take_injected_failure(category)
        if injected_status is not None:
            raise _ApiError(injected_status, f"injected failure: {method} {self.path} answered {injected_status}")
        store = self._api._store
        if category == "watch":
            self._serve_watch(resource, _object_filter(namespace, name, query), query)
        elif category == "list":
            body = store.list_page(
                resource,
                _object_filter(namespace, None, query),
                limit=_query_int(query, "limit"),
                continue_token=query.get("continue") or None,
                resource_version=query.get("resourceVersion") or None,
            )
            self._api._count_list_served(resource)
            self._send_bytes(200, body)
        elif category == "get":
            stored = store.get(resource, namespace or _DEFAULT_NAMESPACE, name or "")
            if stored is None:
                raise _not_found(resource, name or "")
            self._send_bytes(200, stored.body)
        else:
            self._serve_write(resource, namespace or _DEFAULT_NAMESPACE, name, request_body)

    def _serve_write(self, resource: _Resource, namespace: str, name: str | None, request_body: bytes) -> None:
        store = self._api._store
        if self.command == "DELETE":
            deleted = store.delete(resource, namespace, name or "")
            if deleted is None:
                raise _not_found(resource, name or "")
            self._send_bytes(200, deleted.body)
            return
        try:
            obj = json.loads(request_body)
        except ValueError:
            raise _ApiError(400, "the request body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise _ApiError(400, "the request body must be a JSON object")
        if self.command == "POST":
            stored, _ = store.write(resource, obj, namespace, "create")
            self._send_bytes(201, stored.body)
        else:
            stored, created = store.write(resource, obj, namespace, "replace", url_name=name)
            self._send_bytes(201 if created else 200, stored.body)

    def _serve_watch(self, resource: _Resource, object_filter: _ObjectFilter, query: Mapping[str, str]) -> None:
        api = self._api
        timeout_seconds = _query_int(query, "timeoutSeconds")
        allow_bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        send_initial_events = query.get("sendInitialEvents", "").lower() in ("true", "1")
        opened = api._store.open_watch(
            resource,
            object_filter,
            resource_version=query.get("resourceVersion"),
            allow_bookmarks=allow_bookmarks,
            send_initial_events=send_initial_events,
            connection=self.connection if isinstance(self.connection, socket.socket) else None,
        )
        cursor = opened.cursor
        try:
            self._start_chunked()
            if opened.error_line is not None:
                self._send_chunks([opened.error_line])
                self._end_chunked()
                return
            self._send_chunks(
                _event_line("ADDED", stored.body) for stored in opened.initial_objects if object_filter.matches(stored)
            )
            if send_initial_events:
                self._send_chunks([_bookmark_line(resource, cursor.position, initial_events_end=True)])
            self._stream_watch_events(cursor, timeout_seconds)
        finally:
            api._store.close_watch(cursor)

    def _stream_watch_events(self, cursor: _WatchCursor, timeout_seconds: int) -> None:
        api = self._api
        now = time.monotonic()
        deadline = now + timeout_seconds if timeout_seconds > 0 else float("inf")
        next_bookmark = now + api._bookmark_interval if cursor.allow_bookmarks else float("inf")
        next_peer_check = now + _PEER_CHECK_INTERVAL
        while True:
            wake_at = min(deadline, next_bookmark, next_peer_check)
            wakeup = api._store.wait_for_events(cursor, max(0.0, wake_at - time.monotonic()))
            if wakeup.dropped:
                self.close_connection = True  # no terminating chunk: the client sees the stream break
                return
            if wakeup.error_line is not None:
                self._send_chunks([wakeup.error_line])
                self._end_chunked()
                return
            lines = [line for event in wakeup.events if (line := cursor.object_filter.watch_line(event))]
            now = time.monotonic()
            if wakeup.bookmark_requested or now >= next_bookmark:
                lines.append(_bookmark_line(cursor.resource, cursor.position))
                next_bookmark = now + api._bookmark_interval
            if lines:
                self._send_chunks(lines)
            if now >= deadline:
                self._end_chunked()
                return
            if now >= next_peer_check:
                if _peer_has_closed(self.connection):
                    self.close_connection = True
                    return
                next_peer_check = now + _PEER_CHECK_INTERVAL

    def _route_lab(self, action: str, request_body: bytes) -> None:
        api = self._api
        if action == "stats" and self.command == "GET":
            self._send_bytes(200, _encode(api.stats()))
            return
        if self.command != "POST":
            raise _ApiError(405, "/_lab/ actions are POSTs (GET only for /_lab/stats)")
        try:
            arguments = json.loads(request_body) if request_body.strip() else {}
        except ValueError:
            raise _ApiError(400, "the request body is not valid JSON") from None
        if not isinstance(arguments, dict):
            raise _ApiError(400, "the request body must be a JSON object")
        try:
            if action == "drop_watches":
                api.drop_watches()
            elif action == "expire_history":
                api.expire_history()
            elif action == "send_bookmarks":
                api.send_bookmarks()
            elif action == "fail_next":
                api.fail_next(
                    int(arguments.get("count", 1)), int(arguments.get("status", 500)), only=arguments.get("only")
                )
            elif action == "set_unreachable":
                seconds = arguments.get("seconds")
                api._go_unreachable(None if seconds is None else float(seconds), spare=self.connection)
                self._send_bytes(200, _encode({"unreachable": True}), close=True)
                return
            else:
                raise _ApiError(404, f"no such lab action: {action!r}")
        except (TypeError, ValueError) as error:
            raise _ApiError(400, f"bad arguments for {action}: {error}") from None
        self._send_bytes(200, _encode(api.stats()))


def _not_found(resource: _Resource, name: str) -> _ApiError:
    return _ApiError(404, f'{resource.plural} "{name}" not found', details=resource.status_details(name))


def _query_int(query: Mapping[str, str], name: str) -> int:
    text = query.get(name) or "0"
    try:
        return int(text)
    except ValueError:
        raise _ApiError(400, f"invalid {name}: {text!r}") from None


def _object_filter(namespace: str | None, name: str | None, query: Mapping[str, str]) -> _ObjectFilter:
    return _ObjectFilter(
        namespace=namespace,
        name=name,
        labels=_parse_selector(query.get("labelSelector", ""), fields=False),
        fields=_parse_selector(query.get("fieldSelector", ""), fields=True),
    )


# --- the public server ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _InjectedFailures:
    remaining: int
    status: int
    only: Literal["list", "watch"] | None


class FakeApiServer:
    """A kube-apiserver stand-in for Services and EndpointSlices, with faults to inject.

    Use ``with FakeApiServer().start() as api:`` and point the official client at ``api.url``.

    Out of process, the same faults are POSTs with a JSON body of the method's arguments:
    ``/_lab/drop_watches``, ``/_lab/fail_next`` (``{"count": 2, "status": 500, "only": "list"}``),
    ``/_lab/expire_history``, ``/_lab/send_bookmarks``, ``/_lab/set_unreachable`` (``{"seconds": 3}``;
    ``null`` lasts until SIGUSR2 to the command-line server, which SIGUSR1 makes unreachable too);
    ``GET /_lab/stats`` returns ``stats()``. Dashes work as well as underscores in the action names.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        history_size: int = 10_000,
        bookmark_interval: float = 1.0,
    ) -> None:
        if bookmark_interval <= 0:
            raise ValueError("bookmark_interval must be positive")
        self._host = host.strip("[]")
        self._port = port
        self._bookmark_interval = bookmark_interval
        self._store = _Store(history_size)
        self._connections = _ConnectionRegistry()
        self._listener_lock = threading.Lock()
        self._listener: _Listener | None = None
        self._listener_thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._unreachable_period = 0  # bumped per set_unreachable, so a stale timer cannot end a newer one
        self._reachable_timer: threading.Timer | None = None
        self._counters_lock = threading.Lock()
        self._list_requests = dict.fromkeys((resource.plural for resource in _RESOURCES), 0)
        self._lists_served = dict.fromkeys((resource.plural for resource in _RESOURCES), 0)
        self._watch_requests = dict.fromkeys((resource.plural for resource in _RESOURCES), 0)
        self._injected_failure_count = 0
        self._injected_failures: _InjectedFailures | None = None

    # lifecycle

    def start(self) -> FakeApiServer:
        """Bind and serve in background threads; returns self."""
        with self._listener_lock:
            if self._started:
                raise RuntimeError("FakeApiServer already started")
            self._open_listener()
            self._started = True
        _LOG.info("fakeapi: serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving; open watches are cut without a terminating chunk, like a dying server's."""
        self._store.close()
        with self._listener_lock:
            self._stopped = True
            self._cancel_reachable_timer()
            self._close_listener()
        self._connections.cut_all()

    def __enter__(self) -> FakeApiServer:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://host:port``; unspecified addresses are given as loopback, IPv6 in brackets."""
        if not self._port:
            raise RuntimeError("the port is chosen at start(); call start() first")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self._host, self._host)  # noqa: S104
        return f"http://[{host}]:{self._port}" if ":" in host else f"http://{host}:{self._port}"

    def _open_listener(self) -> None:
        """Bind (rebinding the same port after an outage) and serve. Caller holds _listener_lock."""
        for attempt in range(_BIND_ATTEMPTS):
            try:
                listener = _Listener((self._host, self._port), self)
                break
            except OSError:
                if not self._started or attempt == _BIND_ATTEMPTS - 1:
                    raise
                time.sleep(0.02)
        self._port = int(listener.server_address[1])
        thread = threading.Thread(
            target=listener.serve_forever,
            kwargs={"poll_interval": 0.01},  # also how long stop() and set_unreachable() take
            name=f"fakeapi-listener-{self._port}",
            daemon=True,
        )
        thread.start()
        self._listener, self._listener_thread = listener, thread

    def _close_listener(self) -> None:
        """Stop accepting and close the listening socket, so connections are refused. Caller holds the lock."""
        listener, thread = self._listener, self._listener_thread
        self._listener = self._listener_thread = None
        if listener is not None:
            listener.shutdown()
            listener.server_close()
        if thread is not None:
            thread.join()

    # objects

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object by kind, namespace and name; returns the stored object."""
        resource = _resource_for_kind(obj.get("kind"))
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
        try:
            stored, _ = self._store.write(resource, obj, namespace or _DEFAULT_NAMESPACE, "apply")
        except _ApiError as error:
            raise ValueError(error.message) from None
        decoded: dict[str, Any] = json.loads(stored.body)
        return decoded

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete an object; False if there was none."""
        return self._store.delete(_resource_for_kind(kind), namespace, name) is not None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        stored = self._store.get(_resource_for_kind(kind), namespace, name)
        if stored is None:
            return None
        decoded: dict[str, Any] = json.loads(stored.body)
        return decoded

    def resource_version(self) -> int:
        """The current global resourceVersion (the last write's)."""
        return self._store.resource_version

    # faults

    def drop_watches(self) -> None:
        """Cut every open watch connection without the terminating chunk."""
        for connection in self._store.drop_watches():
            _cut(connection)

    def fail_next(self, count: int, status: int = 500, *, only: str | None = None) -> None:
        """Answer the next ``count`` API requests (only lists or only watches if asked) with ``status``."""
        if only not in (None, "list", "watch"):
            raise ValueError(f"only must be 'list', 'watch' or None, not {only!r}")
        category: Literal["list", "watch"] | None = "list" if only == "list" else "watch" if only else None
        if count < 0 or not 400 <= status <= 599:
            raise ValueError("count must be >= 0 and status an HTTP error status")
        with self._counters_lock:
            self._injected_failures = _InjectedFailures(count, status, category) if count else None

    def expire_history(self) -> None:
        """Compact: every open watch gets a 410 ERROR event, watches from any older rv get 410."""
        self._store.expire_history()

    def set_unreachable(self, seconds: float | None) -> None:
        """Close the listener and every connection for ``seconds`` (None: until set_reachable())."""
        self._go_unreachable(seconds, spare=None)

    def set_reachable(self) -> None:
        """Listen again on the same address and port."""
        with self._listener_lock:
            self._become_reachable()

    def send_bookmarks(self) -> None:
        """Send a BOOKMARK now on every watch that allowed bookmarks."""
        self._store.request_bookmarks()

    def stats(self) -> dict[str, Any]:
        """Request counters per resource plural, open watches, objects, resourceVersion, reachability."""
        with self._counters_lock:
            counters: dict[str, Any] = {
                "list_requests": dict(self._list_requests),
                "lists_served": dict(self._lists_served),
                "watch_requests": dict(self._watch_requests),
                "injected_failures": self._injected_failure_count,
            }
        with self._listener_lock:
            reachable = self._listener is not None
        return {
            **counters,
            "open_watches": self._store.open_watch_counts(),
            "objects": self._store.object_counts(),
            "resource_version": self._store.resource_version,
            "reachable": reachable,
        }

    def _go_unreachable(self, seconds: float | None, *, spare: socket.socket | None) -> None:
        """Close the listener and all connections but ``spare`` (the lab request asking for this)."""
        with self._listener_lock:
            self._cancel_reachable_timer()
            self._unreachable_period += 1
            self._close_listener()
            if seconds is not None and not self._stopped:
                timer = threading.Timer(seconds, self._end_unreachable_period, (self._unreachable_period,))
                timer.daemon = True
                timer.start()
                self._reachable_timer = timer
        self._store.drop_watches()
        self._connections.cut_all(spare=spare)
        _LOG.info("fakeapi: unreachable %s", "until set_reachable()" if seconds is None else f"for {seconds} s")

    def _end_unreachable_period(self, period: int) -> None:
        with self._listener_lock:
            if period == self._unreachable_period:
                self._become_reachable()

    def _become_reachable(self) -> None:
        """Caller holds _listener_lock."""
        self._cancel_reachable_timer()
        if self._started and not self._stopped and self._listener is None:
            self._open_listener()
            _LOG.info("fakeapi: reachable again on %s", self.url)

    def _cancel_reachable_timer(self) -> None:
        if self._reachable_timer is not None:
            self._reachable_timer.cancel()
            self._reachable_timer = None

    # request accounting (called by the request handler)

    def _count_request(self, resource: _Resource, category: _RequestCategory) -> None:
        with self._counters_lock:
            if category == "list":
                self._list_requests[resource.plural] += 1
            elif category == "watch":
                self._watch_requests[resource.plural] += 1

    def _count_list_served(self, resource: _Resource) -> None:
        with self._counters_lock:
            self._lists_served[resource.plural] += 1

    def _take_injected_failure(self, category: _RequestCategory) -> int | None:
        """The status to answer this request with, if a failure is pending for it."""
        with self._counters_lock:
            failures = self._injected_failures
            if failures is None or (failures.only is not None and failures.only != category):
                return None
            failures.remaining -= 1
            if failures.remaining <= 0:
                self._injected_failures = None
            self._injected_failure_count += 1
            return failures.status


def _resource_for_kind(kind: object) -> _Resource:
    resource = _RESOURCES_BY_KIND.get(kind) if isinstance(kind, str) else None
    if resource is None:
        raise ValueError(f"unsupported kind {kind!r}: the fake API server serves {sorted(_RESOURCES_BY_KIND)}")
    return resource


# --- command line -----------------------------------------------------------------------------------------


def _parse_listen(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (IPv6 as [ADDR]:PORT), got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _load_seed(path: Path) -> list[dict[str, Any]]:
    """Objects from a JSON or YAML file: a list, a ``kind: List`` with items, or (YAML) several documents."""
    text = path.read_text()
    documents: list[Any] = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
    objects: list[dict[str, Any]] = []
    for document in documents:
        if document is None:
            continue
        if isinstance(document, dict) and isinstance(document.get("items"), list):
            items = document["items"]
        else:
            items = document if isinstance(document, list) else [document]
        for item in items:
            if not isinstance(item, dict):
                raise ValueError(f"{path}: every seed item must be an object, got {item!r}")
            objects.append(item)
    return objects


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; SIGUSR1 makes the server unreachable until SIGUSR2."""
    parser = argparse.ArgumentParser(
        prog="python -m lab.fakeapi",
        description=__doc__,
        epilog="Signals: SIGTERM/SIGINT stop; SIGUSR1 makes the server unreachable until SIGUSR2.",
    )
    parser.add_argument(
        "--listen",
        type=_parse_listen,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="IPv6 as [ADDR]:PORT; port 0 picks a free one (default: 127.0.0.1:0; the URL is logged)",
    )
    parser.add_argument("--seed", type=Path, help="JSON or YAML objects to create before serving")
    parser.add_argument("--history-size", type=int, default=10_000)
    parser.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds (default: 1)")
    parser.add_argument("--log-level", default="INFO")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=arguments.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(message)s")

    host, port = arguments.listen
    api = FakeApiServer(host, port, history_size=arguments.history_size, bookmark_interval=arguments.bookmark_interval)
    if arguments.seed:
        for obj in _load_seed(arguments.seed):
            api.apply(obj)
    requests: queue.SimpleQueue[str] = queue.SimpleQueue()  # signal handlers only enqueue (re-entrancy)

    def on_signal(signal_number: int, _frame: FrameType | None) -> None:
        actions = {signal.SIGUSR1: "unreachable", signal.SIGUSR2: "reachable"}
        requests.put(actions.get(signal.Signals(signal_number), "stop"))

    for signal_number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signal_number, on_signal)
    api.start()
    try:
        while (request := requests.get()) != "stop":
            if request == "unreachable":
                api.set_unreachable(None)
            else:
                api.set_reachable()
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
