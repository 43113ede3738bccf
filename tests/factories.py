"""Builders of Kubernetes Service and EndpointSlice JSON in the API server's own shapes, for tests."""

from __future__ import annotations

import ipaddress
from typing import Any


def service(
    name: str,
    cluster_ips: list[str] | None = None,
    *,
    namespace: str = "default",
    service_type: str = "ClusterIP",
    policy: str | None = None,
    external_traffic_policy: str | None = None,
    internal_traffic_policy: str | None = None,
    external_ips: list[str] | None = None,
    ingress: list[dict[str, Any]] | None = None,
    annotations: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Service; ipFamilies and ipFamilyPolicy follow from the cluster IPs unless given."""
    ips = cluster_ips if cluster_ips is not None else []
    spec: dict[str, Any] = {"type": service_type, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    if ips:
        spec["clusterIP"] = ips[0]
        spec["clusterIPs"] = ips
        if ips != ["None"]:
            spec["ipFamilies"] = ["IPv4" if ipaddress.ip_address(ip).version == 4 else "IPv6" for ip in ips]
        spec["ipFamilyPolicy"] = policy or ("RequireDualStack" if len(ips) == 2 else "SingleStack")
    if external_traffic_policy is not None:
        spec["externalTrafficPolicy"] = external_traffic_policy
    if internal_traffic_policy is not None:
        spec["internalTrafficPolicy"] = internal_traffic_policy
    if external_ips is not None:
        spec["externalIPs"] = external_ips
    if service_type == "ExternalName":
        spec = {"type": "ExternalName", "externalName": "db.example.com"}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    obj: dict[str, Any] = {"kind": "Service", "apiVersion": "v1", "metadata": metadata, "spec": spec}
    if ingress is not None:
        obj["status"] = {"loadBalancer": {"ingress": ingress}}
    return obj


def endpoint(node: str, address: str, *, ready: bool | None = True, serving: bool | None = None,
             terminating: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """One endpoint of a slice with its conditions (None leaves a condition unset)."""
    conditions = {
        key: value
        for key, value in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if value is not None
    }
    return {"addresses": [address], "nodeName": node, "conditions": conditions}


def endpoint_slice(
    service_name: str,
    address_type: str,
    endpoints: list[dict[str, Any]],
    *,
    name: str | None = None,
    namespace: str = "default",
) -> dict[str, Any]:
    """An EndpointSlice of a Service, one address family."""
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name or f"{service_name}-{address_type.lower()}",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
