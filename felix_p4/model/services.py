"""Kubernetes Services and their EndpointSlices as typed values, and which backends serve a
service port the way kube-proxy chooses them.

Front ends (addresses, ports, types, policies) come from the Kubernetes Service object, or from
Felix's ServiceUpdate when no object is known; backends only from EndpointSlices. The edges
(felix_p4.k8s.convert, felix_p4.felix.convert) turn those objects into these values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from felix_p4.model.policy import IPAddress
from felix_p4.model.values import InvalidObject, parse_address

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


def parse_addresses(values: Iterable[Any], what: str) -> tuple[IPAddress, ...]:
    return tuple(parse_address(str(value), what) for value in values)


def service_protocol(text: Any) -> int:
    proto = SERVICE_PROTOCOLS.get(str(text or "TCP").upper())
    if proto is None:
        raise InvalidObject(f"unknown service protocol {text!r}")
    return proto


def parse_port(value: Any, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise InvalidObject(f"invalid {what} {value!r}") from None
    if not 0 <= port <= 65535:
        raise InvalidObject(f"{what} {port} out of range")
    return port


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
