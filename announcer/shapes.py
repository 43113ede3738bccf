"""The slim typed shapes a decoder fills from Services, EndpointSlices and Nodes: only what conversion reads."""

from __future__ import annotations

import msgspec

# Leaves are `object`: whatever JSON value the field holds reaches convert.py, which checks it as it checks the raw
# JSON. Only the containers are typed: an object whose containers have another shape does not fit, and its decoder
# hands convert.py the raw JSON instead. A field left out here is skipped by the decoder, never built (managedFields,
# ports, selectors, the Node's images). Field names are the API's, in camelCase.


class VersionMeta(msgspec.Struct):
    """metadata.resourceVersion."""

    resourceVersion: object = None  # noqa: N815


class ObjectShape(msgspec.Struct):
    """Any object a watch event carries: only its resourceVersion, for the watcher's resume point."""

    metadata: VersionMeta


class ServiceMeta(VersionMeta):
    """A Service's metadata: its key and its annotations."""

    name: object = None
    namespace: object = None
    annotations: object = None


class ServiceSpec(msgspec.Struct):
    """The spec fields of a Service the decision reads; `type` defaults as the API server's does."""

    type: object = "ClusterIP"
    clusterIP: object = None  # noqa: N815
    clusterIPs: object = None  # noqa: N815
    externalIPs: object = None  # noqa: N815
    externalTrafficPolicy: object = None  # noqa: N815
    internalTrafficPolicy: object = None  # noqa: N815


class LoadBalancerStatus(msgspec.Struct):
    """status.loadBalancer."""

    ingress: object = None


class ServiceStatus(msgspec.Struct):
    """status."""

    loadBalancer: LoadBalancerStatus | None = None  # noqa: N815


class ServiceShape(ObjectShape):
    """A Service: metadata and spec must be objects, status an object or null."""

    metadata: ServiceMeta
    spec: ServiceSpec
    status: ServiceStatus | None = None


class SliceMeta(VersionMeta):
    """An EndpointSlice's metadata: its key and its labels (the Service it belongs to)."""

    name: object = None
    namespace: object = None
    labels: object = None


class EndpointConditions(msgspec.Struct):
    """endpoints[].conditions."""

    ready: object = None
    serving: object = None


class EndpointShape(msgspec.Struct):
    """endpoints[]: its node and its conditions (an object or null)."""

    nodeName: object = None  # noqa: N815
    conditions: EndpointConditions | None = None


class SliceShape(ObjectShape):
    """An EndpointSlice: endpoints a list of objects, or null."""

    metadata: SliceMeta
    addressType: object = None  # noqa: N815
    endpoints: list[EndpointShape] | None = None


class NodeMeta(VersionMeta):
    """A Node's metadata: its name, labels, annotations and deletion timestamp."""

    name: object = None
    labels: object = None
    annotations: object = None
    deletionTimestamp: object = None  # noqa: N815


class NodeSpec(msgspec.Struct):
    """spec.unschedulable (cordon)."""

    unschedulable: object = None


class NodeStatus(msgspec.Struct):
    """status.conditions (Ready among them)."""

    conditions: object = None


class NodeShape(ObjectShape):
    """A Node: spec and status objects or null."""

    metadata: NodeMeta
    spec: NodeSpec | None = None
    status: NodeStatus | None = None
