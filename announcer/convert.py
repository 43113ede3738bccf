"""The only module that knows Kubernetes object shapes: raw JSON to validated views, with problems named."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from announcer.model import (
    UINT32_MAX,
    AttributeOverrides,
    Family,
    IPAddress,
    Problem,
    ServiceView,
    SliceView,
    family_of,
    parse_community,
    parse_large_community,
)
from announcer.policy import NODE_READY_UNKNOWN, NodeView

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
OPT_OUT = "opt-out"
COMMUNITIES = "communities"
LARGE_COMMUNITIES = "large-communities"
LOCAL_PREFERENCE = "local-preference"
MED = "med"
REQUIRE_ENDPOINTS = "require-endpoints"
MAX_ANNOTATION_LENGTH = 1024
MAX_LIST_ITEMS = 64

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NUMBER = re.compile(r"^[0-9]{1,10}$")
_SEPARATORS = re.compile(r"[ ,]+")


class ObjectError(ValueError):
    """An object that cannot be identified (no usable namespace or name); it is ignored as a whole."""


def object_key(obj: Mapping[str, object]) -> tuple[str, str]:
    """(namespace, name) of a Kubernetes object, validated, or ObjectError."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ObjectError("metadata: missing or not an object")
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace):
        raise ObjectError(f"metadata.namespace: {_shown(namespace)} is not a namespace name")
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.fullmatch(name):
        raise ObjectError(f"metadata.name: {_shown(name)} is not an object name")
    return namespace, name


def _shown(value: object) -> str:
    """A value made safe and short for a log line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Ranges no Service address may be in, as (first, last) integers: cheaper than ipaddress's is_* properties.
_REFUSED_IPV4 = (
    (0x00000000, 0x00FFFFFF, "is in 0.0.0.0/8 (this network)"),
    (0x7F000000, 0x7FFFFFFF, "is a loopback address"),
    (0xA9FE0000, 0xA9FEFFFF, "is a link-local address"),
    (0xE0000000, 0xEFFFFFFF, "is a multicast address"),
    (0xF0000000, 0xFFFFFFFF, "is a reserved or broadcast address"),
)
_REFUSED_IPV6 = (
    (0, 1, "is unspecified or loopback"),
    (0xFFFF << 32, (0xFFFF << 32) | 0xFFFFFFFF, "is an IPv4-mapped IPv6 address"),
    (0xFE80 << 112, (0xFEC0 << 112) - 1, "is a link-local address"),
    (0xFF00 << 112, (1 << 128) - 1, "is a multicast address"),
)


@functools.lru_cache(maxsize=131_072)
def _parse_address_text(text: str) -> IPAddress:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise ValueError(f"{text!r} has a zone index")
    number = int(address)
    for first, last, why in _REFUSED_IPV4 if address.version == 4 else _REFUSED_IPV6:
        if first <= number <= last:
            raise ValueError(f"{text!r} {why}")
    return address


def parse_service_address(value: object) -> IPAddress:
    """A unicast address a Service may carry; ValueError with the reason otherwise."""
    if not isinstance(value, str) or not value.isascii() or len(value) > 45:
        raise ValueError(f"{_shown(value)} is not an IP address")
    try:
        return _parse_address_text(value)
    except ValueError as error:
        if "does not appear to be" in str(error) or "Octet" in str(error) or "Expected" in str(error):
            raise ValueError(f"{_shown(value)} is not an IP address") from None
        raise


def _parse_addresses(
    candidates: Iterable[tuple[str, object]], where: str, problems: list[Problem]
) -> list[tuple[str, IPAddress]]:
    """(field, address) for each candidate that is a valid service address, first occurrence only."""
    addresses: list[tuple[str, IPAddress]] = []
    seen: set[IPAddress] = set()
    for field, value in candidates:
        try:
            address = parse_service_address(value)
        except ValueError as error:
            problems.append(Problem(where, field, str(error)))
            continue
        if address not in seen:
            seen.add(address)
            addresses.append((field, address))
    return addresses


def _list_field(values: object, field: str, where: str, problems: list[Problem]) -> list[tuple[str, object]]:
    """(field[index], item) of a list field, bounded; a problem if it is not a list."""
    if values is None:
        return []
    if not isinstance(values, list):
        problems.append(Problem(where, field, "must be a list"))
        return []
    if len(values) > MAX_LIST_ITEMS:
        problems.append(Problem(where, field, f"more than {MAX_LIST_ITEMS} entries; the rest are ignored"))
    return [(f"{field}[{index}]", value) for index, value in enumerate(values[:MAX_LIST_ITEMS])]


def _cluster_ips(spec: Mapping[str, object], where: str, problems: list[Problem]) -> tuple[bool, list[IPAddress]]:
    """(headless, one address per family in spec.clusterIPs order)."""
    values = spec.get("clusterIPs")
    field = "spec.clusterIPs"
    if values is None:
        single = spec.get("clusterIP")
        values, field = ([] if single in (None, "") else [single]), "spec.clusterIP"
    if values == ["None"] or spec.get("clusterIP") == "None":
        return True, []
    chosen: list[IPAddress] = []
    for item_field, address in _parse_addresses(_list_field(values, field, where, problems), where, problems):
        if any(family_of(other) == family_of(address) for other in chosen):
            problems.append(Problem(where, item_field, f"a second {family_of(address).label} address"))
            continue
        chosen.append(address)
    return False, chosen


def _load_balancer_ips(status: object, where: str, problems: list[Problem]) -> list[IPAddress]:
    """status.loadBalancer.ingress[].ip, skipping hostname-only entries and ipMode Proxy."""
    load_balancer = status.get("loadBalancer") if isinstance(status, Mapping) else None
    ingress = load_balancer.get("ingress") if isinstance(load_balancer, Mapping) else None
    candidates = [
        (f"{field}.ip", entry.get("ip"))
        for field, entry in _list_field(ingress, "status.loadBalancer.ingress", where, problems)
        if isinstance(entry, Mapping) and entry.get("ip") is not None and entry.get("ipMode") != "Proxy"
    ]
    return [address for _, address in _parse_addresses(candidates, where, problems)]


def _traffic_local(spec: Mapping[str, object], field: str, where: str, problems: list[Problem]) -> bool:
    value = spec.get(field)
    if value in (None, "Cluster"):
        return False
    if value == "Local":
        return True
    problems.append(Problem(where, f"spec.{field}", f"{_shown(value)} is neither Cluster nor Local; Cluster used"))
    return False


def _annotation_text(value: object, field: str, where: str, problems: list[Problem]) -> str | None:
    if not isinstance(value, str):
        problems.append(Problem(where, field, f"{_shown(value)} is not a string; ignored"))
        return None
    if len(value) > MAX_ANNOTATION_LENGTH or not value.isascii() or not value.isprintable():
        problems.append(Problem(where, field, f"{_shown(value)} has characters that are not allowed; ignored"))
        return None
    return value.strip()


def parse_uint32(text: str) -> int:
    """ASCII decimal digits (at most 10) of a number from 0 to 2**32 - 1, or ValueError."""
    if not _NUMBER.fullmatch(text) or int(text) > UINT32_MAX:
        raise ValueError(f"{text!r} is not a number from 0 to {UINT32_MAX}")
    return int(text)


def is_dns_subdomain(value: str) -> bool:
    """A Kubernetes DNS subdomain name (RFC 1123): lower-case letters, digits, '-' and '.', at most 253 characters."""
    return _DNS_SUBDOMAIN.fullmatch(value) is not None


def _overrides(
    annotations: Mapping[str, object], prefix: str, where: str, problems: list[Problem]
) -> tuple[bool, AttributeOverrides]:
    """(opted out, attribute overrides) from the Service's annotations; invalid ones are ignored."""
    opted_out = False
    communities: tuple[tuple[int, int], ...] | None = None
    large_communities: tuple[tuple[int, int, int], ...] | None = None
    numbers: dict[str, int] = {}
    for suffix in (OPT_OUT, COMMUNITIES, LARGE_COMMUNITIES, LOCAL_PREFERENCE, MED):
        key = prefix + suffix
        if key not in annotations:
            continue
        field = f"metadata.annotations[{key}]"
        text = _annotation_text(annotations[key], field, where, problems)
        if text is None:
            continue
        try:
            if suffix == OPT_OUT:
                if text not in ("true", "false"):
                    raise ValueError(f"{text!r} is neither 'true' nor 'false'")
                opted_out = text == "true"
            elif suffix in (COMMUNITIES, LARGE_COMMUNITIES):
                words = [word for word in _SEPARATORS.split(text) if word]
                if len(words) > MAX_LIST_ITEMS:
                    raise ValueError(f"more than {MAX_LIST_ITEMS} communities")
                if suffix == COMMUNITIES:
                    communities = tuple(sorted({parse_community(word) for word in words}))
                else:
                    large_communities = tuple(sorted({parse_large_community(word) for word in words}))
            else:
                numbers[suffix] = parse_uint32(text)
        except ValueError as error:
            problems.append(Problem(where, field, f"{error}; ignored"))
    return opted_out, AttributeOverrides(
        communities=communities,
        large_communities=large_communities,
        local_preference=numbers.get(LOCAL_PREFERENCE),
        med=numbers.get(MED),
    )


def _require_endpoints(
    annotations: Mapping[str, object], prefix: str, where: str, problems: list[Problem]
) -> bool | None:
    """The require-endpoints annotation: 'true' or 'false', None when absent or invalid (the config decides)."""
    key = prefix + REQUIRE_ENDPOINTS
    if key not in annotations:
        return None
    field = f"metadata.annotations[{key}]"
    text = _annotation_text(annotations[key], field, where, problems)
    if text is None:
        return None
    if text not in ("true", "false"):
        problems.append(Problem(where, field, f"{text!r} is neither 'true' nor 'false'; ignored"))
        return None
    return text == "true"


def _metadata(obj: Mapping[str, object]) -> Mapping[str, object]:
    """The metadata of an object whose key object_key() has read (so a mapping)."""
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def service_view(obj: Mapping[str, object], annotation_prefix: str) -> tuple[ServiceView, list[Problem]]:
    """The slim view of a Service and the problems found in it; ObjectError if it has no usable name."""
    namespace, name = object_key(obj)
    where = f"Service {namespace}/{name}"
    problems: list[Problem] = []
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        problems.append(Problem(where, "spec", "missing or not an object; nothing announced"))
        return ServiceView(namespace, name), problems
    service_type = spec.get("type", "ClusterIP")
    if service_type not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        problems.append(Problem(where, "spec.type", f"{_shown(service_type)} is not a Service type"))
        return ServiceView(namespace, name, service_type="invalid"), problems
    annotations = _metadata(obj).get("annotations") or {}
    if not isinstance(annotations, Mapping):
        problems.append(Problem(where, "metadata.annotations", "not an object; ignored"))
        annotations = {}
    opted_out, overrides = _overrides(annotations, annotation_prefix, where, problems)
    if service_type == "ExternalName":
        return ServiceView(namespace, name, service_type=service_type, opted_out=opted_out), problems
    headless, cluster_ips = _cluster_ips(spec, where, problems)
    return (
        ServiceView(
            namespace=namespace,
            name=name,
            service_type=service_type,
            headless=headless,
            cluster_ips=tuple(cluster_ips),
            external_ips=tuple(
                address
                for _, address in _parse_addresses(
                    _list_field(spec.get("externalIPs"), "spec.externalIPs", where, problems), where, problems
                )
            ),
            load_balancer_ips=tuple(_load_balancer_ips(obj.get("status"), where, problems)),
            external_traffic_local=_traffic_local(spec, "externalTrafficPolicy", where, problems),
            internal_traffic_local=_traffic_local(spec, "internalTrafficPolicy", where, problems),
            opted_out=opted_out,
            overrides=overrides,
            require_endpoints=_require_endpoints(annotations, annotation_prefix, where, problems),
        ),
        problems,
    )


def endpoint_can_serve(endpoint: Mapping[str, object]) -> bool:
    """Ready unset or true; else serving true (a terminating endpoint that still serves)."""
    conditions = endpoint.get("conditions")
    if not isinstance(conditions, Mapping):
        return True
    ready = conditions.get("ready")
    if ready is None or ready is True:
        return True
    return conditions.get("serving") is True


_ADDRESS_TYPES = {"IPv4": Family.IPV4, "IPv6": Family.IPV6, "FQDN": None}


def slice_view(obj: Mapping[str, object]) -> tuple[SliceView | None, list[Problem]]:
    """The slim view of an EndpointSlice (None if it belongs to no Service); ObjectError if it has no name."""
    namespace, name = object_key(obj)
    where = f"EndpointSlice {namespace}/{name}"
    problems: list[Problem] = []
    labels = _metadata(obj).get("labels") or {}
    service_name = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, Mapping) else None
    if service_name is None:
        return None, problems
    if not isinstance(service_name, str) or not _DNS_LABEL.fullmatch(service_name):
        problems.append(Problem(where, f"metadata.labels[{SERVICE_NAME_LABEL}]", "not a Service name; ignored"))
        return None, problems
    address_type = obj.get("addressType")
    if not isinstance(address_type, str) or address_type not in _ADDRESS_TYPES:
        problems.append(Problem(where, "addressType", f"{_shown(address_type)} is not IPv4, IPv6 or FQDN"))
        return None, problems
    endpoints = obj.get("endpoints") or []
    if not isinstance(endpoints, list):
        problems.append(Problem(where, "endpoints", "must be a list; no endpoint counted"))
        endpoints = []
    nodes: set[str] = set()
    unplaced = False
    for index, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, Mapping):
            problems.append(Problem(where, f"endpoints[{index}]", "not an object"))
            continue
        node = endpoint.get("nodeName")
        if not endpoint_can_serve(endpoint):
            continue
        if node is None:
            unplaced = True
            continue
        if not isinstance(node, str) or not _DNS_SUBDOMAIN.fullmatch(node):
            problems.append(Problem(where, f"endpoints[{index}].nodeName", f"{_shown(node)} is not a node name"))
            continue
        nodes.add(node)
    view = SliceView(namespace, name, service_name, _ADDRESS_TYPES[address_type], frozenset(nodes), unplaced)
    return view, problems


# --- Nodes (issue #11): this node's labels, annotations, cordon and Ready condition --------------------------------
_READY_STATUSES = ("True", "False", "Unknown")


def node_key(obj: Mapping[str, object]) -> tuple[str, str]:
    """('', name) of a Node (cluster-scoped), validated, or ObjectError."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ObjectError("metadata: missing or not an object")
    name = metadata.get("name")
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.fullmatch(name):
        raise ObjectError(f"metadata.name: {_shown(name)} is not a node name")
    return "", name


def _string_map(value: object, field: str, where: str, problems: list[Problem]) -> dict[str, str]:
    """A labels or annotations map; entries that are not string to string are named and dropped."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(Problem(where, field, "not an object; ignored"))
        return {}
    kept: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(key, str) and isinstance(item, str):
            kept[key] = item
        else:
            problems.append(Problem(where, f"{field}[{_shown(key)}]", f"{_shown(item)} is not a string; ignored"))
    return kept


def _ready(status: object, where: str, problems: list[Problem]) -> str:
    """status.conditions[type=Ready].status; 'Unknown' when absent or malformed (named)."""
    if status is None:
        return NODE_READY_UNKNOWN
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if conditions is None:
        return NODE_READY_UNKNOWN
    if not isinstance(conditions, list):
        problems.append(Problem(where, "status.conditions", "must be a list; Ready taken as Unknown"))
        return NODE_READY_UNKNOWN
    for index, condition in enumerate(conditions[:MAX_LIST_ITEMS]):
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            value = condition.get("status")
            if isinstance(value, str) and value in _READY_STATUSES:
                return value
            field = f"status.conditions[{index}].status"
            problems.append(Problem(where, field, f"{_shown(value)} is not True, False or Unknown; Unknown used"))
            return NODE_READY_UNKNOWN
    return NODE_READY_UNKNOWN


def node_view(obj: Mapping[str, object]) -> tuple[NodeView, list[Problem]]:
    """The view of a Node: labels, annotations, spec.unschedulable and the Ready condition, each validated."""
    _, name = node_key(obj)
    where = f"Node {name}"
    problems: list[Problem] = []
    metadata = _metadata(obj)
    labels = _string_map(metadata.get("labels"), "metadata.labels", where, problems)
    annotations = _string_map(metadata.get("annotations"), "metadata.annotations", where, problems)
    spec = obj.get("spec")
    unschedulable = False
    if spec is not None and not isinstance(spec, Mapping):
        problems.append(Problem(where, "spec", "not an object; taken as schedulable"))
    elif isinstance(spec, Mapping):
        value = spec.get("unschedulable")
        if isinstance(value, bool):
            unschedulable = value
        elif value is not None:
            problems.append(Problem(where, "spec.unschedulable", f"{_shown(value)} is not a boolean; taken as false"))
    return NodeView(name, labels, annotations, unschedulable, _ready(obj.get("status"), where, problems)), problems


class ObjectKind(Enum):
    """The kinds of object the announcer reads."""

    SERVICE = "Service"
    ENDPOINT_SLICE = "EndpointSlice"
    NODE = "Node"


@dataclass(frozen=True)
class Converted:
    """One Kubernetes object as the decision needs it, with the problems found in it.

    key None: the object has no usable namespace/name and is ignored as a whole, `error` saying why. view None
    with a key: nothing of it counts (e.g. an EndpointSlice of no Service). unreadable: its shape defeated the
    conversion itself; what an earlier version of it contributed is kept.
    """

    kind: ObjectKind
    key: tuple[str, str] | None
    view: ServiceView | SliceView | NodeView | None
    problems: tuple[Problem, ...] = ()
    error: str = ""
    unreadable: bool = False


def convert_object(kind: ObjectKind, obj: object, annotation_prefix: str) -> Converted:
    """Raw JSON of a Service or EndpointSlice to its view; never raises: what cannot be read is named instead."""
    if not isinstance(obj, Mapping):
        return Converted(kind, None, None, (), f"{_shown(obj)[:40]} is not an object")
    try:
        key = node_key(obj) if kind is ObjectKind.NODE else object_key(obj)
    except ObjectError as error:
        return Converted(kind, None, None, (), str(error))
    try:
        if kind is ObjectKind.NODE:
            node, problems = node_view(obj)
            return Converted(kind, key, node, tuple(problems))
        if kind is ObjectKind.SERVICE:
            view, problems = service_view(obj, annotation_prefix)
            return Converted(kind, key, view, tuple(problems))
        slice_, problems = slice_view(obj)
        return Converted(kind, key, slice_, tuple(problems))
    except Exception as error:  # a shape no rule above foresaw: this object is skipped, never the watch
        where = f"{kind.value} {key[0]}/{key[1]}"
        problem = Problem(where, "(object)", f"cannot be read ({type(error).__name__}: {error}); ignored")
        return Converted(kind, key, None, (problem,), unreadable=True)


def converter(kind: ObjectKind, annotation_prefix: str) -> Callable[[object], Converted]:
    """The function a watcher applies to each object it reads."""

    def convert(obj: object) -> Converted:
        return convert_object(kind, obj, annotation_prefix)

    return convert
