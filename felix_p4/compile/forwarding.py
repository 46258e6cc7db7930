"""Ports and forwarding: port classification, source check and routes for workloads and host."""

from __future__ import annotations

import ipaddress

import attrs

from felix_p4.model.endpoints import WorkloadEndpoint
from felix_p4.model.values import IPNetwork
from felix_p4.pipeline import (
    ALLOW_SOURCE,
    BRIDGE_TO,
    HOST_PORT,
    NO_ROUTE,
    PEER_PORTS,
    PORT_CLASSIFY,
    ROUTES,
    SOURCE_CHECK,
    TO_HOST,
    TO_WORKLOAD,
    UPLINK_PORT,
    WORKLOAD_PORT,
)
from felix_p4.pipeline.entries import Exact, Lpm, Match, TableEntry
from felix_p4.pipeline.fields import prefix6

DEFAULT_GATEWAY_MAC = 0xEEEEEEEEEEEE


class CannotForward(Exception):
    """An endpoint the pipeline cannot deliver to (reported to Felix as "error")."""


@attrs.frozen(slots=True)
class ForwardingSettings:
    gateway_mac: int = DEFAULT_GATEWAY_MAC
    host_port: int | None = None
    uplink_port: int | None = None


def _prefix(name: str, net: IPNetwork) -> tuple[dict[str, Match], int]:
    """IPv4: one LPM field; IPv6: ternary halves prioritised by prefix length."""
    if isinstance(net, ipaddress.IPv6Network):
        return prefix6(name, net)
    return {name: Lpm(int(net.network_address), net.prefixlen)}, 0


def endpoint_entries(
    endpoint: WorkloadEndpoint,
    port: int,
    settings: ForwardingSettings,
    egress_program: int,
    ingress_program: int,
) -> list[TableEntry]:
    """Everything one local workload needs: its port, its allowed sources, routes to it,
    and the policy programs for what it sends and receives."""
    if endpoint.mac is None:
        raise CannotForward("endpoint has no MAC address; the pipeline cannot address it")
    entries = [
        TableEntry.make(
            PORT_CLASSIFY.name,
            {"port": Exact(port)},
            WORKLOAD_PORT.name,
            {"gateway_mac": settings.gateway_mac, "egress_program": egress_program, "port": port},
        )
    ]
    sources: dict[IPNetwork, None] = dict.fromkeys(
        (*endpoint.ipv4_nets, *endpoint.ipv6_nets, *endpoint.allow_spoofed_source_prefixes)
    )
    for net in sources:
        match, priority = _prefix("src", net)
        entries.append(
            TableEntry.make(
                SOURCE_CHECK[net.version].name,
                {"port": Exact(port), **match},
                ALLOW_SOURCE.name,
                priority=priority,
            )
        )
    route_params = {
        "port": port,
        "dmac": endpoint.mac,
        "smac": settings.gateway_mac,
        "ingress_program": ingress_program,
    }
    routed: tuple[IPNetwork, ...] = (*endpoint.ipv4_nets, *endpoint.ipv6_nets)
    for dst in routed:
        match, priority = _prefix("dst", dst)
        entries.append(
            TableEntry.make(
                ROUTES[dst.version].name, match, TO_WORKLOAD.name, route_params, priority
            )
        )
    return entries


def blackhole_entries(endpoint: WorkloadEndpoint) -> list[TableEntry]:
    """For an endpoint that cannot be protected as Felix asks: its addresses route to drop
    (rather than to the host) and its port stays unknown, so it neither sends nor receives."""
    routed: tuple[IPNetwork, ...] = (*endpoint.ipv4_nets, *endpoint.ipv6_nets)
    entries = []
    for dst in routed:
        match, priority = _prefix("dst", dst)
        entries.append(
            TableEntry.make(ROUTES[dst.version].name, match, NO_ROUTE.name, priority=priority)
        )
    return entries


def node_entries(settings: ForwardingSettings) -> list[TableEntry]:
    """Node-wide entries: the host port and the catch-all routes that hand traffic to it, and
    the uplink bridged to the host port."""
    if settings.host_port is None:
        return []
    host = settings.host_port
    entries = [TableEntry.make(PORT_CLASSIFY.name, {"port": Exact(host)}, HOST_PORT.name)]
    uplink = settings.uplink_port
    if uplink is not None:
        # The node's network port, and the bridge carrying the host's own traffic.
        entries += [
            TableEntry.make(PORT_CLASSIFY.name, {"port": Exact(uplink)}, UPLINK_PORT.name),
            TableEntry.make(
                PEER_PORTS.name, {"port": Exact(host)}, BRIDGE_TO.name, {"port": uplink}
            ),
            TableEntry.make(
                PEER_PORTS.name, {"port": Exact(uplink)}, BRIDGE_TO.name, {"port": host}
            ),
        ]
    for version, net in ((4, ipaddress.ip_network("0.0.0.0/0")), (6, ipaddress.ip_network("::/0"))):
        match, priority = _prefix("dst", net)
        entries.append(
            TableEntry.make(ROUTES[version].name, match, TO_HOST.name, {"port": host}, priority)
        )
    return entries
