"""Other nodes: Felix's routes, VTEPs and host addresses into routes, next hops, the node's
tunnel configuration and the sources allowed to send us tunnels (pipeline/tunnel.p4).

Pure: what the host's neighbour table says (next-hop MACs) comes in as a mapping.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import attrs

from felix_p4.compile.forwarding import _prefix
from felix_p4.compile.tunnels import ipv4_header_seed, vxlan6_udp_seed
from felix_p4.model.state import (
    LOCAL_TUNNEL,
    LOCAL_WORKLOAD,
    POOL_IPIP,
    POOL_NO_ENCAP,
    POOL_VXLAN,
    REMOTE_TUNNEL,
    REMOTE_WORKLOAD,
    DataplaneState,
    Route,
    Vtep,
)
from felix_p4.model.values import IPNetwork
from felix_p4.pipeline import (
    ALLOW_TUNNEL,
    BLACKHOLE,
    NEXT_HOPS,
    NODE,
    NODE_CONFIG,
    ROUTES,
    SET_NEXT_HOP,
    TO_HOST,
    TO_IPIP,
    TO_NODE,
    TO_NODE6,
    TO_VXLAN,
    TO_VXLAN6,
    TUNNEL_IPIP,
    TUNNEL_SOURCES,
    TUNNEL_VXLAN,
    VXLAN_PORT,
)
from felix_p4.pipeline.entries import Exact, TableEntry
from felix_p4.pipeline.fields import ternary128

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NextHop = tuple[int, IPAddress]  # (IP version, the node address a tunnel or route goes to)
IP_PROTO_UDP, IP_PROTO_IPIP = 17, 4


@attrs.frozen(slots=True)
class NodeNetwork:
    """This node's side of it: where the host and the network are, and its own MAC there."""

    host_port: int | None
    uplink_port: int | None
    node_mac: int  # the host's MAC on the network (outer source, what the host accepts)


@attrs.frozen(slots=True)
class Compiled:
    routes: dict[IPNetwork, TableEntry]  # by destination
    node: TableEntry  # the node table's default entry
    sources: list[TableEntry]
    next_hops: dict[NextHop, TableEntry]  # the ones whose MAC is known
    wanted: set[NextHop]  # every next hop a route needs (resolved or not)
    unresolved: dict[IPNetwork, str]  # routes without an entry, and why


def _own(state: DataplaneState) -> tuple[Vtep | None, ipaddress.IPv4Address | None]:
    me = state.config.hostname
    vtep = state.vteps.get(me)
    host = state.hosts.get(me)
    ip4 = (vtep.parent if vtep and vtep.parent else None) or (host.ipv4 if host else None)
    return vtep, ip4


def compile_routes(
    state: DataplaneState, node: NodeNetwork, macs: Mapping[NextHop, int]
) -> Compiled:
    vtep, ip4 = _own(state)
    host = state.hosts.get(state.config.hostname)
    ip6 = (vtep.parent_v6 if vtep and vtep.parent_v6 else None) or (host.ipv6 if host else None)
    vni = state.config.network.vxlan_vni
    routes: dict[IPNetwork, TableEntry] = {}
    unresolved: dict[IPNetwork, str] = {}
    wanted: set[NextHop] = set()
    for route in state.routes.values():
        entry, why, hop = _route(state, route, node, vtep, ip4, ip6, vni)
        if entry is not None:
            routes[route.dst] = entry
        elif why:
            unresolved[route.dst] = why
        if hop is not None:
            wanted.add(hop)
    node_entry = attrs.evolve(
        TableEntry.make(
            NODE.name,
            {},
            NODE_CONFIG.name,
            {
                "node_mac": node.node_mac,
                "vtep_mac": (vtep.mac or 0) if vtep else 0,
                "vtep_mac6": (vtep.mac_v6 or 0) if vtep else 0,
                "ip4": int(ip4) if ip4 else 0,
                "ip6_hi": int(ip6) >> 64 if ip6 else 0,
                "ip6_lo": int(ip6) & ((1 << 64) - 1) if ip6 else 0,
                "vni": vni,
            },
        ),
        is_default=True,
    )
    next_hops = {}
    if node.uplink_port is not None:
        for hop in sorted(wanted, key=lambda h: (h[0], int(h[1]))):
            mac = macs.get(hop)
            if mac is not None:
                next_hops[hop] = TableEntry.make(
                    NEXT_HOPS.name,
                    {"ip_version": Exact(hop[0]), **_halves_exact("addr", int(hop[1]))},
                    SET_NEXT_HOP.name,
                    {"dmac": mac, "port": node.uplink_port},
                )
    return Compiled(routes, node_entry, _sources(state), next_hops, wanted, unresolved)


def _halves_exact(name: str, value: int) -> dict[str, Exact]:
    return {f"{name}_hi": Exact(value >> 64), f"{name}_lo": Exact(value & ((1 << 64) - 1))}


def _route(
    state: DataplaneState,
    route: Route,
    node: NodeNetwork,
    vtep: Vtep | None,
    ip4: ipaddress.IPv4Address | None,
    ip6: ipaddress.IPv6Address | None,
    vni: int,
) -> tuple[TableEntry | None, str, NextHop | None]:
    """One route's entry (or why it has none), and the next hop it needs."""
    dst = route.dst
    host_route = dst.prefixlen == dst.max_prefixlen
    table = ROUTES[dst.version].name
    match, priority = _prefix("dst", dst)
    if route.has(LOCAL_WORKLOAD):
        if route.local_workload or host_route:
            return None, "", None  # a local pod: the forwarding manager's entry
        # This node's block: what no pod has is dropped (Felix's blackhole route).
        return TableEntry.make(table, match, BLACKHOLE.name, priority=priority), "", None
    if route.has(LOCAL_TUNNEL):
        if node.host_port is None:
            return None, "no host port for this node's tunnel address", None
        entry = TableEntry.make(table, match, TO_HOST.name, {"port": node.host_port}, priority)
        return entry, "", None
    # Another node's block or borrowed address (Felix also routes a borrowed tunnel address);
    # pools, host addresses and tunnel addresses inside blocks need no entry of their own.
    if not (route.has(REMOTE_WORKLOAD) or (route.has(REMOTE_TUNNEL) and route.borrowed)):
        return None, "", None
    if route.same_subnet or route.pool_type == POOL_NO_ENCAP:
        if not route.dst_node_ip:
            return None, f"no address for node {route.dst_node_name}", None
        addr = ipaddress.ip_address(route.dst_node_ip)
        if addr.version != dst.version:
            return None, f"node {route.dst_node_name} has no IPv{dst.version} address", None
        if dst.version == 4:
            params = {"node": int(addr)}
            action = TO_NODE.name
        else:
            params = {"node_hi": int(addr) >> 64, "node_lo": int(addr) & ((1 << 64) - 1)}
            action = TO_NODE6.name
        return TableEntry.make(table, match, action, params, priority), "", (addr.version, addr)
    if route.pool_type == POOL_VXLAN:
        port = state.config.network.vxlan_port
        if port != VXLAN_PORT:
            return (
                None,
                f"VXLANPort {port}: the pipeline's parser knows VXLAN on {VXLAN_PORT}",
                None,
            )
        remote = state.vteps.get(route.dst_node_name)
        if dst.version == 4:
            if remote is None or remote.parent is None or remote.mac is None:
                return None, f"no IPv4 VTEP for node {route.dst_node_name}", None
            if ip4 is None or vtep is None or vtep.mac is None:
                return None, "this node has no IPv4 VTEP", None
            seed = ipv4_header_seed(int(ip4), int(remote.parent), IP_PROTO_UDP)
            params4 = {"node": int(remote.parent), "vtep_mac": remote.mac, "csum_seed": seed}
            entry = TableEntry.make(table, match, TO_VXLAN.name, params4, priority)
            return entry, "", (4, remote.parent)
        if remote is None or remote.parent_v6 is None or remote.mac_v6 is None:
            return None, f"no IPv6 VTEP for node {route.dst_node_name}", None
        if ip6 is None or vtep is None or vtep.mac_v6 is None:
            return None, "this node has no IPv6 VTEP", None
        seed = vxlan6_udp_seed(int(ip6), int(remote.parent_v6), vni, remote.mac_v6, vtep.mac_v6)
        parent = int(remote.parent_v6)
        params6 = {
            "node_hi": parent >> 64,
            "node_lo": parent & ((1 << 64) - 1),
            "vtep_mac": remote.mac_v6,
            "csum_seed": seed,
        }
        entry = TableEntry.make(table, match, TO_VXLAN6.name, params6, priority)
        return entry, "", (6, remote.parent_v6)
    if route.pool_type == POOL_IPIP:
        if dst.version != 4:
            return None, "IP-in-IP carries IPv4 only", None
        # Felix's IP-in-IP routes go to the node's host address (HostMetadata), not dst_node_ip.
        remote_host = state.hosts.get(route.dst_node_name)
        if remote_host is None or remote_host.ipv4 is None:
            return None, f"no IPv4 address for node {route.dst_node_name}", None
        if ip4 is None:
            return None, "this node has no IPv4 address", None
        seed = ipv4_header_seed(int(ip4), int(remote_host.ipv4), IP_PROTO_IPIP)
        params = {"node": int(remote_host.ipv4), "csum_seed": seed}
        entry = TableEntry.make(table, match, TO_IPIP.name, params, priority)
        return entry, "", (4, remote_host.ipv4)
    return None, "", None  # no pool (a load-balancer pool): the host's business


def _sources(state: DataplaneState) -> list[TableEntry]:
    """Who may send us tunnels: VXLAN from the other nodes' VTEP parents, IP-in-IP from the
    other nodes' addresses, both from ExternalNodesCIDRList (as a Calico node's filter)."""
    me = state.config.hostname
    vxlan: set[IPNetwork] = set()
    ipip: set[IPNetwork] = set()
    for name, vtep in state.vteps.items():
        if name == me:
            continue
        for parent in (vtep.parent, vtep.parent_v6):
            if parent is not None:
                vxlan.add(ipaddress.ip_network(parent))
    for name, host in state.hosts.items():
        if name != me and host.ipv4 is not None:
            ipip.add(ipaddress.ip_network(host.ipv4))
    for net in state.config.network.external_nodes:
        vxlan.add(net)
        if net.version == 4:
            ipip.add(net)
    entries = []
    for kind, nets in ((TUNNEL_VXLAN, vxlan), (TUNNEL_IPIP, ipip)):
        for net in sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen)):
            # The key holds an IPv4 source in the low half (the high half zero).
            width = net.max_prefixlen
            mask = ((1 << 128) - 1) ^ ((1 << (width - net.prefixlen)) - 1)
            match = ternary128("src", int(net.network_address), mask)
            priority = net.prefixlen + 1
            entries.append(
                TableEntry.make(
                    TUNNEL_SOURCES.name,
                    {"kind": Exact(kind), "ip_version": Exact(net.version), **match},
                    ALLOW_TUNNEL.name,
                    priority=priority,
                )
            )
    return entries
