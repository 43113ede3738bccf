"""The only module that knows Kubernetes object shapes: raw JSON (or its shape) to validated views, problems named."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from announcer.fields import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    MAX_LIST_ITEMS,
    annotation_text,
    list_field,
    parse_addresses,
    parse_uint32,
    shown,
    string_map,
)
from announcer.model import (
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
from announcer.policy import (
    COMMUNITIES,
    LARGE_COMMUNITIES,
    LOCAL_PREFERENCE,
    MED,
    NODE_READY_UNKNOWN,
    OPT_OUT,
    REQUIRE_ENDPOINTS,
    NodeView,
)
from announcer.shapes import EndpointShape, NodeShape, ObjectShape, ServiceShape, SliceShape

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_SEPARATORS = re.compile(r"[ ,]+")


class ObjectError(ValueError):
    """An object that cannot be identified (no usable namespace or name); it is ignored as a whole."""


def object_key(obj: Mapping[str, object]) -> tuple[str, str]:
    """(namespace, name) of a Kubernetes object, validated, or ObjectError."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ObjectError("metadata: missing or not an object")
    return _object_key(metadata.get("namespace"), metadata.get("name"))


def _object_key(namespace: object, name: object) -> tuple[str, str]:
    """(namespace, name) from metadata's values, validated, or ObjectError."""
    if not isinstance(namespace, str) or not DNS_LABEL.fullmatch(namespace):
        raise ObjectError(f"metadata.namespace: {shown(namespace)} is not a namespace name")
    if not isinstance(name, str) or not DNS_SUBDOMAIN.fullmatch(name):
        raise ObjectError(f"metadata.name: {shown(name)} is not an object name")
    return namespace, name


def _cluster_ips(values: object, single: object, where: str, problems: list[Problem]) -> tuple[bool, list[IPAddress]]:
    """(headless, one address per family in spec.clusterIPs order), from spec.clusterIPs and spec.clusterIP."""
    field = "spec.clusterIPs"
    if values is None:
        values, field = ([] if single in (None, "") else [single]), "spec.clusterIP"
    if values == ["None"] or single == "None":
        return True, []
    chosen: list[IPAddress] = []
    for item_field, address in parse_addresses(list_field(values, field, where, problems), where, problems):
        if any(family_of(other) == family_of(address) for other in chosen):
            problems.append(Problem(where, item_field, f"a second {family_of(address).label} address"))
            continue
        chosen.append(address)
    return False, chosen


def _load_balancer_ips(ingress: object, where: str, problems: list[Problem]) -> list[IPAddress]:
    """status.loadBalancer.ingress[].ip, skipping hostname-only entries and ipMode Proxy."""
    candidates = [
        (f"{field}.ip", entry.get("ip"))
        for field, entry in list_field(ingress, "status.loadBalancer.ingress", where, problems)
        if isinstance(entry, Mapping) and entry.get("ip") is not None and entry.get("ipMode") != "Proxy"
    ]
    return [address for _, address in parse_addresses(candidates, where, problems)]


def _traffic_local(value: object, field: str, where: str, problems: list[Problem]) -> bool:
    if value in (None, "Cluster"):
        return False
    if value == "Local":
        return True
    problems.append(Problem(where, f"spec.{field}", f"{shown(value)} is neither Cluster nor Local; Cluster used"))
    return False


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
        text = annotation_text(annotations[key], field, where, problems)
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
    text = annotation_text(annotations[key], field, where, problems)
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
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        where = f"Service {namespace}/{name}"
        return ServiceView(namespace, name), [Problem(where, "spec", "missing or not an object; nothing announced")]
    status = obj.get("status")
    load_balancer = status.get("loadBalancer") if isinstance(status, Mapping) else None
    return _service_view(
        namespace,
        name,
        annotation_prefix,
        annotations=_metadata(obj).get("annotations"),
        service_type=spec.get("type", "ClusterIP"),
        cluster_ips=spec.get("clusterIPs"),
        cluster_ip=spec.get("clusterIP"),
        external_ips=spec.get("externalIPs"),
        external_policy=spec.get("externalTrafficPolicy"),
        internal_policy=spec.get("internalTrafficPolicy"),
        ingress=load_balancer.get("ingress") if isinstance(load_balancer, Mapping) else None,
    )


def _service_shape_view(
    obj: ServiceShape, key: tuple[str, str], annotation_prefix: str
) -> tuple[ServiceView, list[Problem]]:
    """service_view() of a Service decoded into its shape (spec an object, status an object or null)."""
    spec, status = obj.spec, obj.status
    load_balancer = status.loadBalancer if status is not None else None
    return _service_view(
        key[0],
        key[1],
        annotation_prefix,
        annotations=obj.metadata.annotations,
        service_type=spec.type,
        cluster_ips=spec.clusterIPs,
        cluster_ip=spec.clusterIP,
        external_ips=spec.externalIPs,
        external_policy=spec.externalTrafficPolicy,
        internal_policy=spec.internalTrafficPolicy,
        ingress=load_balancer.ingress if load_balancer is not None else None,
    )


def _service_view(
    namespace: str,
    name: str,
    annotation_prefix: str,
    *,
    annotations: object,
    service_type: object,
    cluster_ips: object,
    cluster_ip: object,
    external_ips: object,
    external_policy: object,
    internal_policy: object,
    ingress: object,
) -> tuple[ServiceView, list[Problem]]:
    """Every check of a Service's fields, whichever way they were read."""
    where = f"Service {namespace}/{name}"
    problems: list[Problem] = []
    if service_type not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        problems.append(Problem(where, "spec.type", f"{shown(service_type)} is not a Service type"))
        return ServiceView(namespace, name, service_type="invalid"), problems
    annotations = annotations or {}
    if not isinstance(annotations, Mapping):
        problems.append(Problem(where, "metadata.annotations", "not an object; ignored"))
        annotations = {}
    opted_out, overrides = _overrides(annotations, annotation_prefix, where, problems)
    if service_type == "ExternalName":
        return ServiceView(namespace, name, service_type=service_type, opted_out=opted_out), problems
    headless, chosen = _cluster_ips(cluster_ips, cluster_ip, where, problems)
    return (
        ServiceView(
            namespace=namespace,
            name=name,
            service_type=service_type,
            headless=headless,
            cluster_ips=tuple(chosen),
            external_ips=tuple(
                address
                for _, address in parse_addresses(
                    list_field(external_ips, "spec.externalIPs", where, problems), where, problems
                )
            ),
            load_balancer_ips=tuple(_load_balancer_ips(ingress, where, problems)),
            external_traffic_local=_traffic_local(external_policy, "externalTrafficPolicy", where, problems),
            internal_traffic_local=_traffic_local(internal_policy, "internalTrafficPolicy", where, problems),
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
    return _can_serve(conditions.get("ready"), conditions.get("serving"))


def _can_serve(ready: object, serving: object) -> bool:
    return ready is None or ready is True or serving is True


_ADDRESS_TYPES = {"IPv4": Family.IPV4, "IPv6": Family.IPV6, "FQDN": None}


def slice_view(obj: Mapping[str, object]) -> tuple[SliceView | None, list[Problem]]:
    """The slim view of an EndpointSlice (None if it belongs to no Service); ObjectError if it has no name."""
    namespace, name = object_key(obj)
    return _slice_view(namespace, name, _metadata(obj).get("labels"), obj.get("addressType"), obj.get("endpoints"))


def _slice_view(
    namespace: str, name: str, labels: object, address_type: object, endpoints: object
) -> tuple[SliceView | None, list[Problem]]:
    """Every check of an EndpointSlice's fields; endpoints as raw JSON or as their shapes."""
    where = f"EndpointSlice {namespace}/{name}"
    problems: list[Problem] = []
    labels = labels or {}
    service_name = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, Mapping) else None
    if service_name is None:
        return None, problems
    if not isinstance(service_name, str) or not DNS_LABEL.fullmatch(service_name):
        problems.append(Problem(where, f"metadata.labels[{SERVICE_NAME_LABEL}]", "not a Service name; ignored"))
        return None, problems
    if not isinstance(address_type, str) or address_type not in _ADDRESS_TYPES:
        problems.append(Problem(where, "addressType", f"{shown(address_type)} is not IPv4, IPv6 or FQDN"))
        return None, problems
    endpoints = endpoints or []
    if not isinstance(endpoints, list):
        problems.append(Problem(where, "endpoints", "must be a list; no endpoint counted"))
        endpoints = []
    nodes: set[str] = set()
    unplaced = False
    for index, endpoint in enumerate(endpoints):
        if isinstance(endpoint, EndpointShape):
            node, conditions = endpoint.nodeName, endpoint.conditions
            serves = conditions is None or _can_serve(conditions.ready, conditions.serving)
        elif isinstance(endpoint, Mapping):
            node, serves = endpoint.get("nodeName"), endpoint_can_serve(endpoint)
        else:
            problems.append(Problem(where, f"endpoints[{index}]", "not an object"))
            continue
        if not serves:
            continue
        if node is None:
            unplaced = True
            continue
        if not isinstance(node, str) or not DNS_SUBDOMAIN.fullmatch(node):
            problems.append(Problem(where, f"endpoints[{index}].nodeName", f"{shown(node)} is not a node name"))
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
    return _node_key(metadata.get("name"))


def _node_key(name: object) -> tuple[str, str]:
    if not isinstance(name, str) or not DNS_SUBDOMAIN.fullmatch(name):
        raise ObjectError(f"metadata.name: {shown(name)} is not a node name")
    return "", name


def _ready(conditions: object, where: str, problems: list[Problem]) -> str:
    """status.conditions[type=Ready].status; 'Unknown' when absent or malformed (named)."""
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
            problems.append(Problem(where, field, f"{shown(value)} is not True, False or Unknown; Unknown used"))
            return NODE_READY_UNKNOWN
    return NODE_READY_UNKNOWN


def node_view(obj: Mapping[str, object]) -> tuple[NodeView, list[Problem]]:
    """The view of a Node: labels, annotations, spec.unschedulable and the Ready condition, each validated."""
    _, name = node_key(obj)
    metadata = _metadata(obj)
    spec, status = obj.get("spec"), obj.get("status")
    return _node_view(
        name,
        metadata.get("labels"),
        metadata.get("annotations"),
        spec_is_object=spec is None or isinstance(spec, Mapping),
        unschedulable=spec.get("unschedulable") if isinstance(spec, Mapping) else None,
        conditions=status.get("conditions") if isinstance(status, Mapping) else None,
        deletion=metadata.get("deletionTimestamp"),
    )


def _node_view(
    name: str,
    labels: object,
    annotations: object,
    *,
    spec_is_object: bool,
    unschedulable: object,
    conditions: object,
    deletion: object = None,
) -> tuple[NodeView, list[Problem]]:
    """Every check of a Node's fields, whichever way they were read (any deletionTimestamp: being deleted)."""
    where = f"Node {name}"
    problems: list[Problem] = []
    kept_labels = string_map(labels, "metadata.labels", where, problems)
    kept_annotations = string_map(annotations, "metadata.annotations", where, problems)
    cordoned = False
    if not spec_is_object:
        problems.append(Problem(where, "spec", "not an object; taken as schedulable"))
    elif isinstance(unschedulable, bool):
        cordoned = unschedulable
    elif unschedulable is not None:
        problems.append(
            Problem(where, "spec.unschedulable", f"{shown(unschedulable)} is not a boolean; taken as false")
        )
    ready = _ready(conditions, where, problems)
    return NodeView(name, kept_labels, kept_annotations, cordoned, ready, deleting=deletion is not None), problems


# --- the stop's hand-over (announcer/handover.py): this pod's controlling DaemonSet, and objects being deleted -----
def controlling_daemonset(pod: object) -> str:
    """The name of the apps/v1 DaemonSet a Pod's controller ownerReference names; ObjectError saying why not."""
    metadata = pod.get("metadata") if isinstance(pod, Mapping) else None
    references = metadata.get("ownerReferences") if isinstance(metadata, Mapping) else None
    controllers = [
        reference
        for reference in (references if isinstance(references, list) else [])[:MAX_LIST_ITEMS]
        if isinstance(reference, Mapping) and reference.get("controller") is True
    ]
    if not controllers:
        raise ObjectError("the pod has no controller (metadata.ownerReferences)")
    owner = controllers[0]
    kind, version, name = owner.get("kind"), owner.get("apiVersion"), owner.get("name")
    if kind != "DaemonSet" or version != "apps/v1":
        raise ObjectError(f"the pod's controller is a {shown(kind)} ({shown(version)}), not an apps/v1 DaemonSet")
    if not isinstance(name, str) or not DNS_SUBDOMAIN.fullmatch(name):
        raise ObjectError(f"the pod's controller name {shown(name)} is not a DaemonSet name")
    return name


def being_deleted(obj: object) -> bool:
    """Whether an object carries metadata.deletionTimestamp (its deletion has begun; finalizers hold it)."""
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    return isinstance(metadata, Mapping) and metadata.get("deletionTimestamp") is not None


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


_SHAPES: dict[ObjectKind, type[ObjectShape]] = {
    ObjectKind.SERVICE: ServiceShape,
    ObjectKind.ENDPOINT_SLICE: SliceShape,
    ObjectKind.NODE: NodeShape,
}


def shape_of(kind: ObjectKind) -> type[ObjectShape]:
    """The slim shape (shapes.py) a decoder may fill for an object of this kind instead of the raw JSON."""
    return _SHAPES[kind]


def convert_object(kind: ObjectKind, obj: object, annotation_prefix: str) -> Converted:
    """Raw JSON, or its shape_of(kind), of a Service, EndpointSlice or Node to its view; never raises on what the
    object holds: what cannot be read is named instead (a shape of another kind is a bug: TypeError)."""
    if isinstance(obj, ObjectShape):
        if not isinstance(obj, _SHAPES[kind]):
            raise TypeError(f"a {type(obj).__name__} is not the shape of a {kind.value}")
    elif not isinstance(obj, Mapping):
        return Converted(kind, None, None, (), f"{shown(obj)[:40]} is not an object")
    try:
        key = _key(kind, obj)
    except ObjectError as error:
        return Converted(kind, None, None, (), str(error))
    try:
        view, problems = _view(kind, obj, key, annotation_prefix)
        return Converted(kind, key, view, tuple(problems))
    except Exception as error:  # a shape no rule above foresaw: this object is skipped, never the watch
        where = f"{kind.value} {key[0]}/{key[1]}"
        problem = Problem(where, "(object)", f"cannot be read ({type(error).__name__}: {error}); ignored")
        return Converted(kind, key, None, (problem,), unreadable=True)


def _key(kind: ObjectKind, obj: ObjectShape | Mapping[str, object]) -> tuple[str, str]:
    if isinstance(obj, NodeShape):
        return _node_key(obj.metadata.name)
    if isinstance(obj, ServiceShape | SliceShape):
        return _object_key(obj.metadata.namespace, obj.metadata.name)
    if isinstance(obj, ObjectShape):
        raise TypeError(f"{type(obj).__name__}: not an object's shape")
    return node_key(obj) if kind is ObjectKind.NODE else object_key(obj)


def _view(
    kind: ObjectKind, obj: ObjectShape | Mapping[str, object], key: tuple[str, str], annotation_prefix: str
) -> tuple[ServiceView | SliceView | NodeView | None, list[Problem]]:
    if isinstance(obj, ServiceShape):
        return _service_shape_view(obj, key, annotation_prefix)
    if isinstance(obj, SliceShape):
        return _slice_view(key[0], key[1], obj.metadata.labels, obj.addressType, obj.endpoints)
    if isinstance(obj, NodeShape):
        spec, status = obj.spec, obj.status
        return _node_view(
            key[1],
            obj.metadata.labels,
            obj.metadata.annotations,
            spec_is_object=True,
            unschedulable=spec.unschedulable if spec is not None else None,
            conditions=status.conditions if status is not None else None,
            deletion=obj.metadata.deletionTimestamp,
        )
    if isinstance(obj, ObjectShape):
        raise TypeError(f"{type(obj).__name__}: not an object's shape")
    if kind is ObjectKind.NODE:
        return node_view(obj)
    if kind is ObjectKind.SERVICE:
        return service_view(obj, annotation_prefix)
    return slice_view(obj)


def converter(kind: ObjectKind, annotation_prefix: str) -> Callable[[object], Converted]:
    """The function a watcher applies to each object it reads."""

    def convert(obj: object) -> Converted:
        return convert_object(kind, obj, annotation_prefix)

    return convert
