"""The whole desired state: what Felix has told us, applied payload by payload."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

import attrs

from calico_proto import felixbackend_pb2 as fb
from felix_p4.model.endpoints import (
    WorkloadEndpoint,
    WorkloadEndpointKey,
    workload_endpoint_from_proto,
)
from felix_p4.model.felix_config import FelixConfig
from felix_p4.model.policy import (
    IpSet,
    IpSetMember,
    Policy,
    PolicyKey,
    Profile,
    members,
    policy_from_proto,
    profile_from_proto,
    set_type_name,
)
from felix_p4.model.services import (
    EndpointSlice,
    Service,
    ServiceKey,
    endpoint_slice_from_k8s,
    service_from_felix,
    service_from_k8s,
)
from felix_p4.model.values import InvalidObject, IPNetwork, parse_net

log = logging.getLogger(__name__)


@attrs.frozen(slots=True)
class HostAddresses:
    hostname: str
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None


@attrs.frozen(slots=True)
class Route:
    dst: IPNetwork
    types: int
    dst_node_name: str
    dst_node_ip: str
    local_workload: bool


@attrs.frozen(slots=True)
class IpamPool:
    cidr: IPNetwork
    masquerade: bool
    ipip_mode: str
    vxlan_mode: str


@attrs.define
class Changes:
    """What an apply must revisit: endpoints by key, and whether node-wide state moved."""

    endpoints: set[WorkloadEndpointKey] = attrs.Factory(set)
    node: bool = False
    policies: set[PolicyKey] = attrs.Factory(set)
    profiles: set[str] = attrs.Factory(set)
    ipsets: set[str] = attrs.Factory(set)
    services: set[ServiceKey] = attrs.Factory(set)
    # Sets changed only by deltas in this batch: their net (added, removed) members.
    ipset_deltas: dict[str, tuple[frozenset[IpSetMember], frozenset[IpSetMember]]] = attrs.Factory(
        dict
    )

    def __bool__(self) -> bool:
        return (
            bool(self.endpoints or self.policies or self.profiles or self.ipsets or self.services)
            or self.node
        )

    def clear(self) -> None:
        self.endpoints.clear()
        self.policies.clear()
        self.profiles.clear()
        self.ipsets.clear()
        self.ipset_deltas.clear()
        self.services.clear()
        self.node = False


@attrs.define
class DataplaneState:
    """Felix's desired dataplane, mutated only through the apply_* methods.

    Each method validates first and mutates only on success, so a bad object never
    replaces a good one already held.
    """

    config: FelixConfig = attrs.Factory(FelixConfig)
    endpoints: dict[WorkloadEndpointKey, WorkloadEndpoint] = attrs.Factory(dict)
    hosts: dict[str, HostAddresses] = attrs.Factory(dict)
    routes: dict[IPNetwork, Route] = attrs.Factory(dict)
    pools: dict[str, IpamPool] = attrs.Factory(dict)
    policies: dict[PolicyKey, Policy] = attrs.Factory(dict)
    profiles: dict[str, Profile] = attrs.Factory(dict)
    ipsets: dict[str, IpSet] = attrs.Factory(dict)
    # Services: front ends from Kubernetes (preferred) or Felix, backends from EndpointSlices.
    kube_services: dict[ServiceKey, Service] = attrs.Factory(dict)
    felix_services: dict[ServiceKey, Service] = attrs.Factory(dict)
    slices: dict[ServiceKey, EndpointSlice] = attrs.Factory(dict)
    slices_of: dict[ServiceKey, set[ServiceKey]] = attrs.Factory(dict)
    services_synced: bool = False
    in_sync: bool = False
    changes: Changes = attrs.Factory(Changes)

    def apply_config(self, pb: fb.ConfigUpdate) -> None:
        self.config = FelixConfig.from_map(dict(pb.config))
        self.changes.node = True

    def apply_workload_endpoint_update(self, pb: fb.WorkloadEndpointUpdate) -> WorkloadEndpointKey:
        key = WorkloadEndpointKey.from_proto(pb.id)
        try:
            endpoint = workload_endpoint_from_proto(key, pb.endpoint)
        except InvalidObject as exc:
            raise InvalidEndpoint(key, str(exc)) from exc
        if self.endpoints.get(key) != endpoint:
            self.endpoints[key] = endpoint
            self.changes.endpoints.add(key)
        return key

    def apply_workload_endpoint_remove(self, pb: fb.WorkloadEndpointRemove) -> WorkloadEndpointKey:
        key = WorkloadEndpointKey.from_proto(pb.id)
        if self.endpoints.pop(key, None) is not None:
            self.changes.endpoints.add(key)
        return key

    def apply_host_metadata(self, hostname: str, ipv4: str, ipv6: str) -> None:
        v4 = _address(ipv4, 4) if ipv4 else None
        v6 = _address(ipv6, 6) if ipv6 else None
        self.hosts[hostname] = HostAddresses(hostname, v4, v6)  # type: ignore[arg-type]
        self.changes.node = True

    def remove_host_metadata(self, hostname: str) -> None:
        if self.hosts.pop(hostname, None) is not None:
            self.changes.node = True

    def apply_route_update(self, pb: fb.RouteUpdate) -> None:
        dst = parse_net(pb.dst, "dst")
        self.routes[dst] = Route(
            dst, int(pb.types), pb.dst_node_name, pb.dst_node_ip, pb.local_workload
        )
        self.changes.node = True

    def apply_route_remove(self, pb: fb.RouteRemove) -> None:
        if self.routes.pop(parse_net(pb.dst, "dst"), None) is not None:
            self.changes.node = True

    def apply_ipam_pool_update(self, pb: fb.IPAMPoolUpdate) -> None:
        self.pools[pb.id] = IpamPool(
            parse_net(pb.pool.cidr, "cidr"),
            pb.pool.masquerade,
            pb.pool.ipip_mode,
            pb.pool.vxlan_mode,
        )
        self.changes.node = True

    def apply_ipam_pool_remove(self, pb: fb.IPAMPoolRemove) -> None:
        if self.pools.pop(pb.id, None) is not None:
            self.changes.node = True

    def apply_policy_update(self, pb: fb.ActivePolicyUpdate) -> None:
        policy = policy_from_proto(pb)
        if self.policies.get(policy.key) != policy:
            self.policies[policy.key] = policy
            self.changes.policies.add(policy.key)

    def apply_policy_remove(self, pb: fb.ActivePolicyRemove) -> None:
        key = PolicyKey.from_proto(pb.id)
        if self.policies.pop(key, None) is not None:
            self.changes.policies.add(key)

    def apply_profile_update(self, pb: fb.ActiveProfileUpdate) -> None:
        profile = profile_from_proto(pb)
        if self.profiles.get(profile.id) != profile:
            self.profiles[profile.id] = profile
            self.changes.profiles.add(profile.id)

    def apply_profile_remove(self, pb: fb.ActiveProfileRemove) -> None:
        if self.profiles.pop(pb.id.name, None) is not None:
            self.changes.profiles.add(pb.id.name)

    def apply_ipset_update(self, pb: fb.IPSetUpdate) -> None:
        set_type = set_type_name(pb.type)
        ipset = IpSet(pb.id, set_type, members(list(pb.members), set_type))
        if self.ipsets.get(pb.id) != ipset:
            self.ipsets[pb.id] = ipset
            self.changes.ipsets.add(pb.id)
            self.changes.ipset_deltas.pop(pb.id, None)  # replaced: reclassify it whole

    def apply_ipset_delta(self, pb: fb.IPSetDeltaUpdate) -> None:
        old = self.ipsets.get(pb.id)
        if old is None:
            raise InvalidObject(f"IP set delta for unknown set {pb.id!r}")
        added = members(list(pb.added_members), old.type)
        removed = members(list(pb.removed_members), old.type)
        # Felix's adds and removes are disjoint; adds first, then removes, as Felix applies them.
        self.ipsets[pb.id] = attrs.evolve(old, members=(old.members | added) - removed)
        changes = self.changes
        if pb.id in changes.ipsets and pb.id not in changes.ipset_deltas:
            return  # already replaced in this batch: it is reclassified whole
        changes.ipsets.add(pb.id)
        prior_added, prior_removed = changes.ipset_deltas.get(pb.id, (frozenset(), frozenset()))
        changes.ipset_deltas[pb.id] = (
            (prior_added - removed) | added,
            (prior_removed - added) | removed,
        )

    def apply_ipset_remove(self, pb: fb.IPSetRemove) -> None:
        if self.ipsets.pop(pb.id, None) is not None:
            self.changes.ipsets.add(pb.id)
            self.changes.ipset_deltas.pop(pb.id, None)

    def service(self, key: ServiceKey) -> Service | None:
        return self.kube_services.get(key) or self.felix_services.get(key)

    def service_slices(self, key: ServiceKey) -> list[EndpointSlice]:
        return [self.slices[s] for s in sorted(self.slices_of.get(key, ()))]

    def apply_service_update(self, pb: fb.ServiceUpdate) -> None:
        service = service_from_felix(pb)
        if self.felix_services.get(service.key) != service:
            self.felix_services[service.key] = service
            self.changes.services.add(service.key)

    def apply_service_remove(self, pb: fb.ServiceRemove) -> None:
        key = ServiceKey(pb.namespace or "default", pb.name)
        if self.felix_services.pop(key, None) is not None:
            self.changes.services.add(key)

    def apply_kube_object(self, event_type: str, kind: str, obj: Mapping[str, Any]) -> None:
        """A Service or EndpointSlice event from the Kubernetes source."""
        if kind == "Service":
            service = service_from_k8s(obj)
            if event_type == "DELETED":
                self.kube_services.pop(service.key, None)
            else:
                self.kube_services[service.key] = service
            self.changes.services.add(service.key)
            return
        meta = obj.get("metadata") or {}
        slice_key = ServiceKey(str(meta.get("namespace") or "default"), str(meta.get("name")))
        old = self.slices.pop(slice_key, None)
        if old is not None:
            self.slices_of.get(old.service, set()).discard(slice_key)
            self.changes.services.add(old.service)
        if event_type == "DELETED":
            return
        endpoint_slice = endpoint_slice_from_k8s(obj)
        if endpoint_slice is None:
            return
        self.slices[slice_key] = endpoint_slice
        self.slices_of.setdefault(endpoint_slice.service, set()).add(slice_key)
        self.changes.services.add(endpoint_slice.service)

    def reset_kube(self) -> None:
        """The Kubernetes source starts over: forget what it said (a fresh list follows)."""
        self.changes.services.update(self.kube_services)
        self.changes.services.update(s.service for s in self.slices.values())
        self.kube_services.clear()
        self.slices.clear()
        self.slices_of.clear()
        self.services_synced = False


class InvalidEndpoint(InvalidObject):
    """An endpoint update that failed validation; Felix hears "error" for its key."""

    def __init__(self, key: WorkloadEndpointKey, reason: str) -> None:
        super().__init__(f"workload endpoint {key}: {reason}")
        self.key = key


def _address(text: str, version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidObject(f"invalid IP address {text!r}") from None
    if addr.version != version:
        raise InvalidObject(f"{text!r} is not an IPv{version} address")
    return addr
