"""Stored objects encoded once per write, history events, list/watch filters, and checked write requests."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lab.fakeapi.selector import Requirement, parse_selector
from lab.fakeapi.wire import ENVELOPE_FIELDS, ApiError, Resource, WriteMode, encode, event_line


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object as served: its JSON encoded once per write, plus what filtering and updates need.

    ``body`` is ``resource.object_head + metadata JSON + spec fields + status + "}"``; the offsets let a
    write or delete swap the metadata without decoding the rest.
    """

    resource: Resource
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

    def with_resource_version(self, resource_version: int) -> StoredObject:
        """The same object stamped with another resourceVersion (what a DELETED event carries)."""
        metadata = self.metadata()
        metadata["resourceVersion"] = str(resource_version)
        metadata_json = encode(metadata)
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
class Event:
    """One write in the history ring; the watch lines built from it are cached per event type."""

    resource_version: int
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    object: StoredObject
    previous: StoredObject | None
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
            cached = event_line(event_type, object_json)
            self.lines[event_type] = cached
        return cached


@dataclass(frozen=True, slots=True)
class ObjectFilter:
    """Which objects a list or watch request selects."""

    namespace: str | None = None
    name: str | None = None
    labels: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    @classmethod
    def from_query(cls, namespace: str | None, name: str | None, query: Mapping[str, str]) -> ObjectFilter:
        """The filter of a request path's namespace and name and its labelSelector and fieldSelector."""
        return cls(
            namespace=namespace,
            name=name,
            labels=parse_selector(query.get("labelSelector", ""), fields=False),
            fields=parse_selector(query.get("fieldSelector", ""), fields=True),
        )

    @property
    def has_selectors(self) -> bool:
        return bool(self.labels or self.fields)

    def matches(self, stored: StoredObject) -> bool:
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

    def watch_line(self, event: Event) -> bytes | None:
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


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A create or replace request's object, checked and with its spec and status already encoded."""

    resource: Resource
    name: str
    generate_name: str
    metadata: Mapping[str, Any]
    labels: Mapping[str, str]
    spec_json: bytes  # the fields other than kind, apiVersion, metadata and status, as ',"a":..,"b":..'
    status_json: bytes  # ',"status":{..}' or empty
    precondition: str  # metadata.resourceVersion sent with a replace: it must still be current

    @classmethod
    def parse(cls, resource: Resource, obj: Mapping[str, Any], namespace: str, url_name: str | None) -> WriteRequest:
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise ApiError(400, "metadata must be an object")
        kind = obj.get("kind")
        if kind not in (None, "", resource.kind):
            raise ApiError(400, f"kind {kind!r} does not match the resource {resource.plural}")
        if metadata.get("namespace") not in (None, "", namespace):
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
        name = metadata.get("name") or url_name or ""
        if url_name is not None and name != url_name:
            raise ApiError(400, f"the name of the object ({name}) does not match the name on the URL ({url_name})")
        labels = metadata.get("labels") or {}
        if not isinstance(labels, Mapping) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in labels.items()
        ):
            raise ApiError(400, "metadata.labels must map strings to strings")
        if not isinstance(name, str) or not isinstance(metadata.get("generateName") or "", str):
            raise ApiError(400, "metadata.name and metadata.generateName must be strings")
        spec_fields = {key: value for key, value in obj.items() if key not in ENVELOPE_FIELDS}
        try:
            spec_json = b"," + encode(spec_fields)[1:-1] if spec_fields else b""
            status_json = b',"status":' + encode(obj["status"]) if "status" in obj else b""
        except (TypeError, ValueError) as error:
            raise ApiError(400, f"the object is not JSON-serialisable: {error}") from None
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

    def check_may_overwrite(self, existing: StoredObject, mode: WriteMode) -> None:
        plural, name = self.resource.plural, existing.name
        if mode == "create":
            raise ApiError(
                409,
                f'{plural} "{name}" already exists',
                reason="AlreadyExists",
                details=self.resource.status_details(name),
            )
        if mode == "replace" and self.precondition and self.precondition != str(existing.resource_version):
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                reason="Conflict",
                details=self.resource.status_details(name),
            )


def generated_name(
    objects: Mapping[tuple[str, str], StoredObject], namespace: str, prefix: str, mode: WriteMode
) -> str:
    """A free name from metadata.generateName (creates only)."""
    if mode != "create" or not prefix:
        raise ApiError(422, "metadata.name: Required value: name or generateName is required")
    while True:
        name = prefix + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        if (namespace, name) not in objects:
            return name
