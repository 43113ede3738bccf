"""The wire format: compact JSON, the served resource types, Status errors and watch event lines."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal, TypeAlias

DEFAULT_NAMESPACE: Final = "default"
ENVELOPE_FIELDS: Final = frozenset({"kind", "apiVersion", "metadata", "status"})
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
VERSION_INFO: Final[Mapping[str, str]] = {
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

RequestCategory: TypeAlias = Literal["list", "watch", "get", "write"]
WriteMode: TypeAlias = Literal["create", "replace", "apply"]


def encode(value: object) -> bytes:
    """Compact UTF-8 JSON, the one serialisation used for everything served."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Resource:
    """One served resource type, with the JSON fragments every object and list of it starts with."""

    __slots__ = ("api_version", "group", "kind", "list_head", "namespaced", "object_head", "path_prefix", "plural")

    def __init__(self, kind: str, api_version: str, plural: str, path_prefix: str, *, namespaced: bool = True) -> None:
        self.kind = kind
        self.namespaced = namespaced  # False: cluster-scoped (Nodes), stored under the namespace ""
        self.api_version = api_version
        self.plural = plural
        self.path_prefix = path_prefix
        self.group = api_version.rpartition("/")[0]
        type_fields = b'"apiVersion":' + encode(api_version) + b',"metadata":'
        self.object_head = b'{"kind":' + encode(kind) + b"," + type_fields
        self.list_head = b'{"kind":' + encode(kind + "List") + b"," + type_fields

    def status_details(self, name: str) -> dict[str, str]:
        details = {"name": name, "kind": self.plural}
        if self.group:
            details["group"] = self.group
        return details


SERVICES: Final = Resource("Service", "v1", "services", "/api/v1")
ENDPOINT_SLICES: Final = Resource("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", "/apis/discovery.k8s.io/v1")
NODES: Final = Resource("Node", "v1", "nodes", "/api/v1", namespaced=False)
RESOURCES: Final = (SERVICES, ENDPOINT_SLICES, NODES)
RESOURCES_BY_KIND: Final = {resource.kind: resource for resource in RESOURCES}
RESOURCES_BY_PLURAL: Final = {resource.plural: resource for resource in RESOURCES}
RESOURCE_PATH: Final = re.compile(
    r"(?P<prefix>/api/v1|/apis/discovery\.k8s\.io/v1)"
    r"(?:/namespaces/(?P<namespace>[^/]+))?"
    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?/?"
)


def resource_for_kind(kind: object) -> Resource:
    """The served resource of a kind; ValueError naming the served kinds otherwise."""
    resource = RESOURCES_BY_KIND.get(kind) if isinstance(kind, str) else None
    if resource is None:
        raise ValueError(f"unsupported kind {kind!r}: the fake API server serves {sorted(RESOURCES_BY_KIND)}")
    return resource


class ApiError(Exception):
    """An error answered with a Kubernetes Status object."""

    def __init__(
        self, code: int, message: str, *, reason: str | None = None, details: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _STATUS_REASONS.get(code, "Unknown")
        self.details = details


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(404, f'{resource.plural} "{name}" not found', details=resource.status_details(name))


def status_json(error: ApiError) -> bytes:
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
    return encode(status)


def event_line(event_type: str, object_json: bytes) -> bytes:
    return b'{"type":"' + event_type.encode() + b'","object":' + object_json + b"}\n"


def too_old_line(requested: int, oldest: int) -> bytes:
    error = ApiError(410, f"too old resource version: {requested} ({oldest})", reason="Expired")
    return event_line("ERROR", status_json(error))


def bookmark_line(resource: Resource, resource_version: int, *, initial_events_end: bool = False) -> bytes:
    metadata: dict[str, object] = {"resourceVersion": str(resource_version)}
    if initial_events_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return event_line("BOOKMARK", resource.object_head + encode(metadata) + b"}")


def parse_resource_version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ApiError(400, f"invalid resource version: {text!r}")
    return value


def utc_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
