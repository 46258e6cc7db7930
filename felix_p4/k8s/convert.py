"""Kubernetes Services and EndpointSlices (API server JSON) into the model's typed values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from felix_p4.model.services import (
    DEFAULT_AFFINITY_SECONDS,
    SERVICE_NAME_LABEL,
    Endpoint,
    EndpointSlice,
    Service,
    ServiceKey,
    ServicePort,
    parse_addresses,
    parse_port,
    service_protocol,
)
from felix_p4.model.values import InvalidObject


def _meta_key(obj: Mapping[str, Any]) -> ServiceKey:
    meta = obj.get("metadata") or {}
    if not meta.get("name"):
        raise InvalidObject("object has no metadata.name")
    return ServiceKey(str(meta.get("namespace") or "default"), str(meta["name"]))


def service_from_k8s(obj: Mapping[str, Any]) -> Service:
    """A v1 Service as the API server returns it (camelCase JSON)."""
    key = _meta_key(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    cluster_ips = [ip for ip in cluster_ips if ip and ip != "None"]  # headless: no front end
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    ports = tuple(
        ServicePort(
            str(p.get("name") or ""),
            service_protocol(p.get("protocol")),
            parse_port(p.get("port"), "service port"),
            parse_port(p.get("nodePort") or 0, "nodePort"),
        )
        for p in spec.get("ports") or []
    )
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_SECONDS)
    return Service(
        key=key,
        type=str(spec.get("type") or "ClusterIP"),
        cluster_ips=parse_addresses(cluster_ips, "clusterIP"),
        external_ips=parse_addresses(spec.get("externalIPs") or [], "externalIP"),
        load_balancer_ips=parse_addresses(
            [i["ip"] for i in ingress if isinstance(i, Mapping) and i.get("ip")],
            "load balancer IP",
        ),
        ports=ports,
        affinity_seconds=affinity,
        internal_local=spec.get("internalTrafficPolicy") == "Local",
        external_local=spec.get("externalTrafficPolicy") == "Local",
    )


def endpoint_slice_from_k8s(obj: Mapping[str, Any]) -> EndpointSlice | None:
    """A discovery.k8s.io/v1 EndpointSlice; None for FQDN slices and slices of no service."""
    key = _meta_key(obj)
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service_name = labels.get(SERVICE_NAME_LABEL)
    family = {"IPv4": 4, "IPv6": 6}.get(str(obj.get("addressType")))
    if not service_name or family is None:
        return None
    endpoints = []
    for ep in obj.get("endpoints") or []:
        conditions = ep.get("conditions") or {}
        # Unset conditions mean ready (and serving mirrors ready), as kube-proxy reads them.
        ready = conditions.get("ready") is not False
        serving = conditions.get("serving")
        endpoints.append(
            Endpoint(
                parse_addresses(ep.get("addresses") or [], "endpoint address"),
                ready,
                ready if serving is None else bool(serving),
                bool(conditions.get("terminating")),
                str(ep.get("nodeName") or ""),
            )
        )
    ports = tuple(
        (
            str(p.get("name") or ""),
            service_protocol(p.get("protocol")),
            parse_port(p.get("port"), "slice port"),
        )
        for p in obj.get("ports") or []
        if p.get("port") is not None
    )
    return EndpointSlice(
        key, ServiceKey(key.namespace, str(service_name)), family, ports, tuple(endpoints)
    )
