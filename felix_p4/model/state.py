"""The whole desired state (what Felix and Kubernetes want), changed only by typed updates."""

from __future__ import annotations

import ipaddress

import attrs

from felix_p4.model.endpoints import WorkloadEndpoint, WorkloadEndpointKey
from felix_p4.model.felix_config import FelixConfig
from felix_p4.model.policy import IpSet, IpSetMember, Policy, PolicyKey, Profile
from felix_p4.model.services import EndpointSlice, Service, ServiceKey
from felix_p4.model.values import InvalidObject, IPNetwork


@attrs.frozen(slots=True)
class HostAddresses:
    hostname: str
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None


# RouteUpdate.types is a bitmask of Felix's RouteType values.
REMOTE_WORKLOAD, REMOTE_HOST, LOCAL_WORKLOAD, LOCAL_HOST, REMOTE_TUNNEL, LOCAL_TUNNEL = (
    1,
    2,
    4,
    8,
    16,
    32,
)
# RouteUpdate.ip_pool_type: the encapsulation of the pool the destination is in.
POOL_NONE, POOL_NO_ENCAP, POOL_VXLAN, POOL_IPIP = 0, 1, 2, 3


@attrs.frozen(slots=True)
class Route:
    dst: IPNetwork
    types: int
    dst_node_name: str
    dst_node_ip: str
    local_workload: bool
    pool_type: int = POOL_NONE
    same_subnet: bool = False  # CrossSubnet and the node is in our subnet: no encapsulation
    nat_outgoing: bool = False
    borrowed: bool = False

    def has(self, kind: int) -> bool:
        return bool(self.types & kind)


@attrs.frozen(slots=True)
class Vtep:
    """A node's VXLAN tunnel endpoints (VXLANTunnelEndpointUpdate), per family."""

    node: str
    mac: int | None = None
    ipv4: ipaddress.IPv4Address | None = None  # the tunnel address
    parent: ipaddress.IPv4Address | None = None  # the node address VXLAN is sent to
    mac_v6: int | None = None
    ipv6: ipaddress.IPv6Address | None = None
    parent_v6: ipaddress.IPv6Address | None = None


@attrs.frozen(slots=True)
class IpamPool:
    cidr: IPNetwork
    masquerade: bool
    ipip_mode: str
    vxlan_mode: str
    allowed_uses: tuple[str, ...] = ()

    @property
    def load_balancer_only(self) -> bool:
        return self.allowed_uses == ("LoadBalancer",)


@attrs.define
class Changes:
    """What the next apply must revisit, by concern; `touched` names the managers concerned
    (the dispatch table of each source says which payload drives which manager)."""

    touched: set[str] = attrs.Factory(set)
    endpoints: set[WorkloadEndpointKey] = attrs.Factory(set)
    policies: set[PolicyKey] = attrs.Factory(set)
    profiles: set[str] = attrs.Factory(set)
    ipsets: set[str] = attrs.Factory(set)
    # Sets changed only by deltas in this batch: their net (added, removed) members.
    ipset_deltas: dict[str, tuple[frozenset[IpSetMember], frozenset[IpSetMember]]] = attrs.Factory(
        dict
    )
    services: set[ServiceKey] = attrs.Factory(set)
    # Node-wide forwarding (the host port and the routes to it): at InSync and after the
    # device was re-read.
    node: bool = False
    # This node's name or addresses (where NodePorts listen; which endpoints are local).
    node_addresses: bool = False
    routes: set[IPNetwork] = attrs.Factory(set)
    pools: set[str] = attrs.Factory(set)
    vteps: set[str] = attrs.Factory(set)
    hosts: set[str] = attrs.Factory(set)  # any node's addresses (tunnel sources, IP-in-IP)

    def __bool__(self) -> bool:
        return bool(self.touched)

    def clear(self) -> None:
        self.touched.clear()
        self.endpoints.clear()
        self.policies.clear()
        self.profiles.clear()
        self.ipsets.clear()
        self.ipset_deltas.clear()
        self.services.clear()
        self.node = False
        self.node_addresses = False
        self.routes.clear()
        self.pools.clear()
        self.vteps.clear()
        self.hosts.clear()


@attrs.define
class DataplaneState:
    """Felix's desired dataplane plus the Kubernetes services it does not send.

    Updates arrive already validated (the edges convert wire and API objects); each method
    changes the state only when the value differs, and records what changed.
    """

    config: FelixConfig = attrs.Factory(FelixConfig)
    endpoints: dict[WorkloadEndpointKey, WorkloadEndpoint] = attrs.Factory(dict)
    # The order Felix first sent each endpoint in: waiting endpoints are admitted in it.
    endpoint_order: dict[WorkloadEndpointKey, int] = attrs.Factory(dict)
    hosts: dict[str, HostAddresses] = attrs.Factory(dict)
    routes: dict[IPNetwork, Route] = attrs.Factory(dict)
    pools: dict[str, IpamPool] = attrs.Factory(dict)
    vteps: dict[str, Vtep] = attrs.Factory(dict)
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

    def set_config(self, config: FelixConfig) -> None:
        if config.hostname != self.config.hostname:
            self.changes.node_addresses = True
        self.config = config

    def upsert_endpoint(self, endpoint: WorkloadEndpoint) -> bool:
        if self.endpoints.get(endpoint.key) == endpoint:
            return False
        self.endpoint_order.setdefault(endpoint.key, len(self.endpoint_order))
        self.endpoints[endpoint.key] = endpoint
        self.changes.endpoints.add(endpoint.key)
        return True

    def remove_endpoint(self, key: WorkloadEndpointKey) -> None:
        self.endpoints.pop(key, None)
        self.endpoint_order.pop(key, None)
        self.changes.endpoints.add(key)

    def set_host(self, host: HostAddresses) -> None:
        if self.hosts.get(host.hostname) == host:
            return
        self.hosts[host.hostname] = host
        self.changes.hosts.add(host.hostname)
        if host.hostname == self.config.hostname:
            self.changes.node_addresses = True

    def remove_host(self, hostname: str) -> None:
        if self.hosts.pop(hostname, None) is None:
            return
        self.changes.hosts.add(hostname)
        if hostname == self.config.hostname:
            self.changes.node_addresses = True

    def upsert_route(self, route: Route) -> None:
        if self.routes.get(route.dst) != route:
            self.routes[route.dst] = route
            self.changes.routes.add(route.dst)

    def remove_route(self, dst: IPNetwork) -> None:
        if self.routes.pop(dst, None) is not None:
            self.changes.routes.add(dst)

    def upsert_vtep(self, vtep: Vtep) -> None:
        if self.vteps.get(vtep.node) != vtep:
            self.vteps[vtep.node] = vtep
            self.changes.vteps.add(vtep.node)

    def remove_vtep(self, node: str) -> None:
        if self.vteps.pop(node, None) is not None:
            self.changes.vteps.add(node)

    def upsert_pool(self, pool_id: str, pool: IpamPool) -> None:
        if self.pools.get(pool_id) != pool:
            self.pools[pool_id] = pool
            self.changes.pools.add(pool_id)

    def remove_pool(self, pool_id: str) -> None:
        if self.pools.pop(pool_id, None) is not None:
            self.changes.pools.add(pool_id)

    def upsert_policy(self, policy: Policy) -> None:
        if self.policies.get(policy.key) != policy:
            self.policies[policy.key] = policy
            self.changes.policies.add(policy.key)

    def remove_policy(self, key: PolicyKey) -> None:
        if self.policies.pop(key, None) is not None:
            self.changes.policies.add(key)

    def upsert_profile(self, profile: Profile) -> None:
        if self.profiles.get(profile.id) != profile:
            self.profiles[profile.id] = profile
            self.changes.profiles.add(profile.id)

    def remove_profile(self, profile_id: str) -> None:
        if self.profiles.pop(profile_id, None) is not None:
            self.changes.profiles.add(profile_id)

    def upsert_ipset(self, ipset: IpSet) -> None:
        if self.ipsets.get(ipset.id) != ipset:
            self.ipsets[ipset.id] = ipset
            self.changes.ipsets.add(ipset.id)
            self.changes.ipset_deltas.pop(ipset.id, None)  # replaced: reclassify it whole

    def ipset_delta(
        self, set_id: str, added: frozenset[IpSetMember], removed: frozenset[IpSetMember]
    ) -> None:
        old = self.ipsets.get(set_id)
        if old is None:
            raise InvalidObject(f"IP set delta for unknown set {set_id!r}")
        # Felix's adds and removes are disjoint; adds first, then removes, as Felix applies them.
        self.ipsets[set_id] = attrs.evolve(old, members=(old.members | added) - removed)
        changes = self.changes
        if set_id in changes.ipsets and set_id not in changes.ipset_deltas:
            return  # already replaced in this batch: it is reclassified whole
        changes.ipsets.add(set_id)
        prior_added, prior_removed = changes.ipset_deltas.get(set_id, (frozenset(), frozenset()))
        changes.ipset_deltas[set_id] = (
            (prior_added - removed) | added,
            (prior_removed - added) | removed,
        )

    def remove_ipset(self, set_id: str) -> None:
        if self.ipsets.pop(set_id, None) is not None:
            self.changes.ipsets.add(set_id)
            self.changes.ipset_deltas.pop(set_id, None)

    def service(self, key: ServiceKey) -> Service | None:
        return self.kube_services.get(key) or self.felix_services.get(key)

    def service_slices(self, key: ServiceKey) -> list[EndpointSlice]:
        return [self.slices[s] for s in sorted(self.slices_of.get(key, ()))]

    def all_services(self) -> set[ServiceKey]:
        return set(self.kube_services) | set(self.felix_services) | set(self.slices_of)

    def upsert_felix_service(self, service: Service) -> None:
        if self.felix_services.get(service.key) != service:
            self.felix_services[service.key] = service
            self.changes.services.add(service.key)

    def remove_felix_service(self, key: ServiceKey) -> None:
        if self.felix_services.pop(key, None) is not None:
            self.changes.services.add(key)

    def upsert_kube_service(self, service: Service) -> None:
        self.kube_services[service.key] = service
        self.changes.services.add(service.key)

    def remove_kube_service(self, key: ServiceKey) -> None:
        self.kube_services.pop(key, None)
        self.changes.services.add(key)

    def upsert_slice(self, endpoint_slice: EndpointSlice) -> None:
        self.remove_slice(endpoint_slice.key)
        self.slices[endpoint_slice.key] = endpoint_slice
        self.slices_of.setdefault(endpoint_slice.service, set()).add(endpoint_slice.key)
        self.changes.services.add(endpoint_slice.service)

    def remove_slice(self, slice_key: ServiceKey) -> None:
        old = self.slices.pop(slice_key, None)
        if old is not None:
            self.slices_of.get(old.service, set()).discard(slice_key)
            self.changes.services.add(old.service)
