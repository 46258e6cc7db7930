"""Ports and forwarding: port classification, source check and routes for workloads and host."""

from __future__ import annotations

import ipaddress

import attrs

from felix_p4.compile.fields import prefix6
from felix_p4.model.endpoints import WorkloadEndpoint
from felix_p4.model.values import IPNetwork
from felix_p4.p4.entries import Exact, Lpm, Match, TableEntry
from felix_p4.p4.schema import PipelineSchema

PORT_CLASSIFY = "port_classify"
SOURCE_CHECK = {4: "source_check_v4", 6: "source_check_v6"}
ROUTES = {4: "routes_v4", 6: "routes_v6"}

DEFAULT_GATEWAY_MAC = 0xEEEEEEEEEEEE


class CannotForward(Exception):
    """An endpoint the pipeline cannot deliver to (reported to Felix as "error")."""


@attrs.frozen(slots=True)
class ForwardingSettings:
    gateway_mac: int = DEFAULT_GATEWAY_MAC
    host_port: int | None = None


def check_schema(schema: PipelineSchema) -> None:
    """Fail fast, by name, if the device's pipeline lacks what this compiler emits."""
    schema.require(
        PORT_CLASSIFY,
        {"port": 32},
        {"workload_port": {"gateway_mac": 48, "egress_program": 16, "port": 32}, "host_port": {}},
    )
    route_actions = {
        "to_workload": {"port": 32, "dmac": 48, "smac": 48, "ingress_program": 16},
        "to_host": {"port": 32},
        "no_route": {},
    }
    schema.require(SOURCE_CHECK[4], {"port": 32, "src": 32}, {"allow_source": {}})
    schema.require(SOURCE_CHECK[6], {"port": 32, "src_hi": 64, "src_lo": 64}, {"allow_source": {}})
    schema.require(ROUTES[4], {"dst": 32}, route_actions)
    schema.require(ROUTES[6], {"dst_hi": 64, "dst_lo": 64}, route_actions)


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
            PORT_CLASSIFY,
            {"port": Exact(port)},
            "workload_port",
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
                SOURCE_CHECK[net.version],
                {"port": Exact(port), **match},
                "allow_source",
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
            TableEntry.make(ROUTES[dst.version], match, "to_workload", route_params, priority)
        )
    return entries


def blackhole_entries(endpoint: WorkloadEndpoint) -> list[TableEntry]:
    """For an endpoint that cannot be protected as Felix asks: its addresses route to drop
    (rather than to the host) and its port stays unknown, so it neither sends nor receives."""
    routed: tuple[IPNetwork, ...] = (*endpoint.ipv4_nets, *endpoint.ipv6_nets)
    entries = []
    for dst in routed:
        match, priority = _prefix("dst", dst)
        entries.append(TableEntry.make(ROUTES[dst.version], match, "no_route", priority=priority))
    return entries


def node_entries(settings: ForwardingSettings) -> list[TableEntry]:
    """Node-wide entries: the host port and the catch-all routes that hand traffic to it."""
    if settings.host_port is None:
        return []
    host = settings.host_port
    entries = [TableEntry.make(PORT_CLASSIFY, {"port": Exact(host)}, "host_port")]
    for version, net in ((4, ipaddress.ip_network("0.0.0.0/0")), (6, ipaddress.ip_network("::/0"))):
        match, priority = _prefix("dst", net)
        entries.append(TableEntry.make(ROUTES[version], match, "to_host", {"port": host}, priority))
    return entries
