"""Kubernetes Services and their EndpointSlices as typed values, and which backends serve a
service port the way kube-proxy chooses them.

Front ends (addresses, ports, types, policies) come from the Kubernetes Service object, or from
Felix's ServiceUpdate when no object is known; backends only from EndpointSlices.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from calico_proto import felixbackend_pb2 as fb
from felix_p4.model.policy import IPAddress
from felix_p4.model.values import InvalidObject

SERVICE_PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
DEFAULT_AFFINITY_SECONDS = 10800  # Kubernetes' default ClientIP affinity timeout
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@attrs.frozen(slots=True, order=True)
class ServiceKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@attrs.frozen(slots=True)
class ServicePort:
    name: str
    protocol: int
    port: int
    node_port: int = 0


@attrs.frozen(slots=True)
class Service:
    key: ServiceKey
    type: str  # ClusterIP | NodePort | LoadBalancer | ExternalName
    cluster_ips: tuple[IPAddress, ...]
    external_ips: tuple[IPAddress, ...]
    load_balancer_ips: tuple[IPAddress, ...]
    ports: tuple[ServicePort, ...]
    affinity_seconds: int = 0  # 0: no session affinity
    internal_local: bool = False  # internalTrafficPolicy: Local
    external_local: bool = False  # externalTrafficPolicy: Local


@attrs.frozen(slots=True)
class Endpoint:
    addresses: tuple[IPAddress, ...]
    ready: bool
    serving: bool
    terminating: bool
    node_name: str


@attrs.frozen(slots=True)
class EndpointSlice:
    key: ServiceKey  # the slice's own namespace/name
    service: ServiceKey
    family: int  # 4 or 6 (FQDN slices are not used)
    ports: tuple[tuple[str, int, int], ...]  # (name, protocol, port)
    endpoints: tuple[Endpoint, ...]


def _addresses(values: Iterable[Any], what: str) -> tuple[IPAddress, ...]:
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_address(str(value)))
        except ValueError:
            raise InvalidObject(f"invalid {what} {value!r}") from None
    return tuple(out)


def _protocol(text: Any) -> int:
    proto = SERVICE_PROTOCOLS.get(str(text or "TCP").upper())
    if proto is None:
        raise InvalidObject(f"unknown service protocol {text!r}")
    return proto


def _port(value: Any, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise InvalidObject(f"invalid {what} {value!r}") from None
    if not 0 <= port <= 65535:
        raise InvalidObject(f"{what} {port} out of range")
    return port


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
            _protocol(p.get("protocol")),
            _port(p.get("port"), "service port"),
            _port(p.get("nodePort") or 0, "nodePort"),
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
        cluster_ips=_addresses(cluster_ips, "clusterIP"),
        external_ips=_addresses(spec.get("externalIPs") or [], "externalIP"),
        load_balancer_ips=_addresses(
            [i["ip"] for i in ingress if isinstance(i, Mapping) and i.get("ip")],
            "load balancer IP",
        ),
        ports=ports,
        affinity_seconds=affinity,
        internal_local=spec.get("internalTrafficPolicy") == "Local",
        external_local=spec.get("externalTrafficPolicy") == "Local",
    )


def service_from_felix(pb: fb.ServiceUpdate) -> Service:
    """Felix's ServiceUpdate: front ends only (no traffic policies, no affinity)."""
    return Service(
        key=ServiceKey(pb.namespace or "default", pb.name),
        type=pb.type or "ClusterIP",
        cluster_ips=_addresses([ip for ip in pb.cluster_ips if ip and ip != "None"], "clusterIP"),
        external_ips=_addresses(pb.external_ips, "externalIP"),
        load_balancer_ips=_addresses([pb.loadbalancer_ip] if pb.loadbalancer_ip else [], "LB IP"),
        ports=tuple(
            ServicePort(
                "", _protocol(p.Protocol), _port(p.Port, "port"), _port(p.NodePort, "nodePort")
            )
            for p in pb.ports
        ),
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
                _addresses(ep.get("addresses") or [], "endpoint address"),
                ready,
                ready if serving is None else bool(serving),
                bool(conditions.get("terminating")),
                str(ep.get("nodeName") or ""),
            )
        )
    ports = tuple(
        (str(p.get("name") or ""), _protocol(p.get("protocol")), _port(p.get("port"), "slice port"))
        for p in obj.get("ports") or []
        if p.get("port") is not None
    )
    return EndpointSlice(
        key, ServiceKey(key.namespace, str(service_name)), family, ports, tuple(endpoints)
    )


def backends(
    service: Service,
    port: ServicePort,
    slices: Iterable[EndpointSlice],
    family: int,
    local_node: str | None,
) -> list[tuple[IPAddress, int]]:
    """(address, target port) of the endpoints that serve `port`, as kube-proxy picks them:
    ready endpoints; if none, serving-and-terminating ones; with `local_node`, only that
    node's. Named target ports are resolved per slice (the slice port with the same name)."""
    ready: list[tuple[IPAddress, int]] = []
    fallback: list[tuple[IPAddress, int]] = []
    for s in slices:
        if s.family != family:
            continue
        target = next(
            (p for name, proto, p in s.ports if name == port.name and proto == port.protocol),
            None,
        )
        if target is None:
            continue
        for ep in s.endpoints:
            if local_node is not None and ep.node_name != local_node:
                continue
            for addr in ep.addresses:
                if addr.version != family:
                    continue
                if ep.ready:
                    ready.append((addr, target))
                elif ep.serving and ep.terminating:
                    fallback.append((addr, target))
    return sorted(set(ready or fallback), key=lambda b: (int(b[0]), b[1]))
