"""Felix's protobuf payloads into model values, applied to the desired state (the wire edge).

Each `apply_*` validates the whole payload first and changes the state only on success, so a
bad object never replaces a good one already held.
"""

from __future__ import annotations

import ipaddress

from calico_proto import felixbackend_pb2 as fb
from felix_p4.model.endpoints import WorkloadEndpoint, WorkloadEndpointKey
from felix_p4.model.felix_config import FelixConfig
from felix_p4.model.policy import (
    ACTIONS,
    PROTOCOLS,
    IcmpMatch,
    IpSet,
    Policy,
    PolicyKey,
    PortRange,
    Profile,
    Rule,
    TierInfo,
    members,
)
from felix_p4.model.services import (
    Service,
    ServiceKey,
    ServicePort,
    parse_addresses,
    parse_port,
    service_protocol,
)
from felix_p4.model.state import DataplaneState, HostAddresses, IpamPool, Route, Vtep
from felix_p4.model.values import InvalidObject, IPNetwork, parse_address, parse_mac, parse_net


class InvalidEndpoint(InvalidObject):
    """An endpoint update that failed validation; Felix hears "error" for its key."""

    def __init__(self, key: WorkloadEndpointKey, reason: str) -> None:
        super().__init__(f"workload endpoint {key}: {reason}")
        self.key = key


def endpoint_key(pb: fb.WorkloadEndpointID) -> WorkloadEndpointKey:
    return WorkloadEndpointKey(pb.orchestrator_id, pb.workload_id, pb.endpoint_id)


def endpoint_id(key: WorkloadEndpointKey) -> fb.WorkloadEndpointID:
    return fb.WorkloadEndpointID(
        orchestrator_id=key.orchestrator_id,
        workload_id=key.workload_id,
        endpoint_id=key.endpoint_id,
    )


def policy_key(pb: fb.PolicyID) -> PolicyKey:
    return PolicyKey(pb.name, pb.namespace, pb.kind)


def tier_info(pb: fb.TierInfo) -> TierInfo:
    return TierInfo(
        pb.name,
        tuple(policy_key(p) for p in pb.ingress_policies),
        tuple(policy_key(p) for p in pb.egress_policies),
        "Pass" if pb.default_action == "Pass" else "Deny",
    )


def _nets_of_version(texts: list[str], field: str, version: int) -> tuple[IPNetwork, ...]:
    nets = tuple(parse_net(t, field) for t in texts)
    for net in nets:
        if net.version != version:
            raise InvalidObject(f"{field} holds {net}, which is not IPv{version}")
    return nets


def workload_endpoint(key: WorkloadEndpointKey, pb: fb.WorkloadEndpoint) -> WorkloadEndpoint:
    """Validate everything the pipeline relies on; raises InvalidObject naming the field."""
    if not pb.name:
        raise InvalidObject("endpoint has no interface name")
    v4 = _nets_of_version(list(pb.ipv4_nets), "ipv4_nets", 4)
    v6 = _nets_of_version(list(pb.ipv6_nets), "ipv6_nets", 6)
    spoof = tuple(
        parse_net(t, "allow_spoofed_source_prefixes") for t in pb.allow_spoofed_source_prefixes
    )
    return WorkloadEndpoint(
        key=key,
        name=pb.name,
        mac=parse_mac(pb.mac) if pb.mac else None,
        ipv4_nets=v4,  # type: ignore[arg-type]
        ipv6_nets=v6,  # type: ignore[arg-type]
        allow_spoofed_source_prefixes=spoof,
        profile_ids=tuple(pb.profile_ids),
        state=pb.state,
        tiers=tuple(tier_info(t) for t in pb.tiers),
    )


def parse_protocol(pb: fb.Protocol, field: str) -> int:
    kind = pb.WhichOneof("number_or_name")
    if kind == "number":
        if not 0 <= pb.number <= 255:
            raise InvalidObject(f"{field}: protocol number {pb.number} out of range")
        return pb.number
    name = pb.name.lower()
    if name.isdigit():
        return parse_protocol(fb.Protocol(number=int(name)), field)
    if name not in PROTOCOLS:
        raise InvalidObject(f"{field}: unknown protocol {pb.name!r}")
    return PROTOCOLS[name]


def _ports(ranges: list[fb.PortRange], field: str) -> tuple[PortRange, ...]:
    out = []
    for r in ranges:
        first, last = r.first, r.last or r.first
        if not (0 <= first <= last <= 65535):
            raise InvalidObject(f"{field}: invalid port range {r.first}-{r.last}")
        out.append(PortRange(first, last))
    return tuple(out)


def _icmp(pb: fb.Rule, type_field: str, code_field: str) -> IcmpMatch | None:
    if pb.HasField(code_field):
        tc = getattr(pb, code_field)
        if not (0 <= tc.type <= 255 and 0 <= tc.code <= 255):
            raise InvalidObject(f"{code_field}: type/code out of range")
        return IcmpMatch(tc.type, tc.code)
    if pb.HasField(type_field):
        value = getattr(pb, type_field)
        if not 0 <= value <= 255:
            raise InvalidObject(f"{type_field}: {value} out of range")
        return IcmpMatch(value)
    return None


def rule_from_proto(pb: fb.Rule) -> Rule:
    action = ACTIONS.get(pb.action.lower())
    if action is None:
        raise InvalidObject(f"unknown rule action {pb.action!r}")
    protocol = parse_protocol(pb.protocol, "protocol") if pb.HasField("protocol") else None
    not_protocol = (
        parse_protocol(pb.not_protocol, "not_protocol") if pb.HasField("not_protocol") else None
    )
    ip_version = {0: None, 4: 4, 6: 6}.get(pb.ip_version)
    if pb.ip_version not in (0, 4, 6):
        raise InvalidObject(f"unknown ip_version {pb.ip_version}")
    if (
        ip_version is None
        and pb.HasField("protocol")
        and pb.protocol.WhichOneof("number_or_name") == "name"
    ):
        # Felix's calc graph derives the version from the protocol name.
        ip_version = {"icmp": 4, "icmpv6": 6}.get(pb.protocol.name.lower())

    def nets(values: list[str], field: str) -> tuple[IPNetwork, ...]:
        return tuple(parse_net(v, field) for v in values)

    return Rule(
        action=action,
        ip_version=ip_version,
        protocol=protocol,
        not_protocol=not_protocol,
        src_nets=nets(list(pb.src_net), "src_net"),
        not_src_nets=nets(list(pb.not_src_net), "not_src_net"),
        dst_nets=nets(list(pb.dst_net), "dst_net"),
        not_dst_nets=nets(list(pb.not_dst_net), "not_dst_net"),
        src_ports=_ports(list(pb.src_ports), "src_ports"),
        not_src_ports=_ports(list(pb.not_src_ports), "not_src_ports"),
        dst_ports=_ports(list(pb.dst_ports), "dst_ports"),
        not_dst_ports=_ports(list(pb.not_dst_ports), "not_dst_ports"),
        src_ip_sets=tuple(pb.src_ip_set_ids),
        not_src_ip_sets=tuple(pb.not_src_ip_set_ids),
        dst_ip_sets=tuple(pb.dst_ip_set_ids),
        not_dst_ip_sets=tuple(pb.not_dst_ip_set_ids),
        src_named_port_sets=tuple(pb.src_named_port_ip_set_ids),
        not_src_named_port_sets=tuple(pb.not_src_named_port_ip_set_ids),
        dst_named_port_sets=tuple(pb.dst_named_port_ip_set_ids),
        not_dst_named_port_sets=tuple(pb.not_dst_named_port_ip_set_ids),
        dst_ip_port_sets=tuple(pb.dst_ip_port_set_ids),
        icmp=_icmp(pb, "icmp_type", "icmp_type_code"),
        not_icmp=_icmp(pb, "not_icmp_type", "not_icmp_type_code"),
        rule_id=pb.rule_id,
    )


def _rules(rules: list[fb.Rule], where: str) -> tuple[Rule, ...]:
    out = []
    for i, rule in enumerate(rules):
        try:
            out.append(rule_from_proto(rule))
        except InvalidObject as exc:
            raise InvalidObject(f"{where} rule {i}: {exc}") from None
    return tuple(out)


def policy_from_proto(pb: fb.ActivePolicyUpdate) -> Policy:
    key = policy_key(pb.id)
    return Policy(
        key,
        pb.policy.tier,
        _rules(list(pb.policy.inbound_rules), "inbound"),
        _rules(list(pb.policy.outbound_rules), "outbound"),
    )


def profile_from_proto(pb: fb.ActiveProfileUpdate) -> Profile:
    return Profile(
        pb.id.name,
        _rules(list(pb.profile.inbound_rules), "inbound"),
        _rules(list(pb.profile.outbound_rules), "outbound"),
    )


_SET_TYPES = {
    fb.IPSetUpdate.IP: "IP",
    fb.IPSetUpdate.IP_AND_PORT: "IP_AND_PORT",
    fb.IPSetUpdate.NET: "NET",
}


def set_type_name(value: int) -> str:
    try:
        return _SET_TYPES[value]  # type: ignore[index]
    except KeyError:
        raise InvalidObject(f"unknown IP set type {value}") from None


def service_from_felix(pb: fb.ServiceUpdate) -> Service:
    """Felix's ServiceUpdate: front ends only (no traffic policies, no affinity)."""
    return Service(
        key=ServiceKey(pb.namespace or "default", pb.name),
        type=pb.type or "ClusterIP",
        cluster_ips=parse_addresses(
            [ip for ip in pb.cluster_ips if ip and ip != "None"], "clusterIP"
        ),
        external_ips=parse_addresses(pb.external_ips, "externalIP"),
        load_balancer_ips=parse_addresses(
            [pb.loadbalancer_ip] if pb.loadbalancer_ip else [], "LB IP"
        ),
        ports=tuple(
            ServicePort(
                "",
                service_protocol(p.Protocol),
                parse_port(p.Port, "port"),
                parse_port(p.NodePort, "nodePort"),
            )
            for p in pb.ports
        ),
    )


def _address(text: str, version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = parse_address(text, "host address")
    if addr.version != version:
        raise InvalidObject(f"{text!r} is not an IPv{version} address")
    return addr


# --- applying payloads to the state ----------------------------------------------------------
# Each takes the state and the payload message; a return value is the endpoint it concerned.


def apply_config(state: DataplaneState, pb: fb.ConfigUpdate) -> None:
    state.set_config(FelixConfig.from_map(dict(pb.config)))


def apply_endpoint_update(state: DataplaneState, pb: fb.WorkloadEndpointUpdate) -> None:
    key = endpoint_key(pb.id)
    try:
        endpoint = workload_endpoint(key, pb.endpoint)
    except InvalidObject as exc:
        raise InvalidEndpoint(key, str(exc)) from exc
    state.upsert_endpoint(endpoint)


def apply_endpoint_remove(state: DataplaneState, pb: fb.WorkloadEndpointRemove) -> None:
    state.remove_endpoint(endpoint_key(pb.id))


def apply_host_metadata(state: DataplaneState, pb: fb.HostMetadataUpdate) -> None:
    state.set_host(
        HostAddresses(
            pb.hostname,
            _address(pb.ipv4_addr, 4) if pb.ipv4_addr else None,  # type: ignore[arg-type]
            None,
        )
    )


def apply_host_metadata_v4v6(state: DataplaneState, pb: fb.HostMetadataV4V6Update) -> None:
    # Felix sends these in CIDR form ("192.168.1.10/24", the node's subnet with it); bare
    # addresses are taken too.
    state.set_host(
        HostAddresses(
            pb.hostname,
            _interface_address(pb.ipv4_addr, 4) if pb.ipv4_addr else None,  # type: ignore[arg-type]
            _interface_address(pb.ipv6_addr, 6) if pb.ipv6_addr else None,  # type: ignore[arg-type]
        )
    )


def _interface_address(text: str, version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address, _, prefix = text.partition("/")
    if prefix:
        parse_net(text, "host address")
    return _address(address, version)


def apply_host_metadata_v6(state: DataplaneState, pb: fb.HostMetadataV6Update) -> None:
    old = state.hosts.get(pb.hostname)
    state.set_host(
        HostAddresses(
            pb.hostname,
            old.ipv4 if old else None,
            _address(pb.ipv6_addr, 6) if pb.ipv6_addr else None,  # type: ignore[arg-type]
        )
    )


def apply_host_remove(
    state: DataplaneState,
    pb: fb.HostMetadataRemove | fb.HostMetadataV6Remove | fb.HostMetadataV4V6Remove,
) -> None:
    state.remove_host(pb.hostname)


def apply_route_update(state: DataplaneState, pb: fb.RouteUpdate) -> None:
    dst = parse_net(pb.dst, "dst")
    if pb.dst_node_ip:
        parse_address(pb.dst_node_ip, "dst_node_ip")
    state.upsert_route(
        Route(
            dst,
            int(pb.types),
            pb.dst_node_name,
            pb.dst_node_ip,
            pb.local_workload,
            pool_type=int(pb.ip_pool_type),
            same_subnet=pb.same_subnet,
            nat_outgoing=pb.nat_outgoing,
            borrowed=pb.borrowed,
        )
    )


def apply_route_remove(state: DataplaneState, pb: fb.RouteRemove) -> None:
    state.remove_route(parse_net(pb.dst, "dst"))


def apply_pool_update(state: DataplaneState, pb: fb.IPAMPoolUpdate) -> None:
    state.upsert_pool(
        pb.id,
        IpamPool(
            parse_net(pb.pool.cidr, "cidr"),
            pb.pool.masquerade,
            pb.pool.ipip_mode,
            pb.pool.vxlan_mode,
            tuple(pb.pool.allowed_uses),
        ),
    )


def apply_pool_remove(state: DataplaneState, pb: fb.IPAMPoolRemove) -> None:
    state.remove_pool(pb.id)


def apply_vtep_update(state: DataplaneState, pb: fb.VXLANTunnelEndpointUpdate) -> None:
    """A node's VTEPs (a family is usable with its tunnel address, parent and MAC)."""
    if not pb.node:
        raise InvalidObject("VTEP update without a node name")
    v4 = [_address(t, 4) if t else None for t in (pb.ipv4_addr, pb.parent_device_ip)]
    v6 = [_address(t, 6) if t else None for t in (pb.ipv6_addr, pb.parent_device_ipv6)]
    state.upsert_vtep(
        Vtep(
            pb.node,
            mac=parse_mac(pb.mac) if pb.mac else None,
            ipv4=v4[0],  # type: ignore[arg-type]
            parent=v4[1],  # type: ignore[arg-type]
            mac_v6=parse_mac(pb.mac_v6) if pb.mac_v6 else None,
            ipv6=v6[0],  # type: ignore[arg-type]
            parent_v6=v6[1],  # type: ignore[arg-type]
        )
    )


def apply_vtep_remove(state: DataplaneState, pb: fb.VXLANTunnelEndpointRemove) -> None:
    state.remove_vtep(pb.node)


def apply_ipset_update(state: DataplaneState, pb: fb.IPSetUpdate) -> None:
    try:
        set_type = set_type_name(pb.type)
        ipset = IpSet(pb.id, set_type, members(list(pb.members), set_type))
    except InvalidObject as exc:
        raise InvalidObject(f"IP set {pb.id!r}: {exc}") from None
    state.upsert_ipset(ipset)


def apply_ipset_delta(state: DataplaneState, pb: fb.IPSetDeltaUpdate) -> None:
    old = state.ipsets.get(pb.id)
    if old is None:
        raise InvalidObject(f"IP set delta for unknown set {pb.id!r}")
    try:
        added = members(list(pb.added_members), old.type)
        removed = members(list(pb.removed_members), old.type)
    except InvalidObject as exc:
        raise InvalidObject(f"IP set {pb.id!r}: {exc}") from None
    state.ipset_delta(pb.id, added, removed)


def apply_ipset_remove(state: DataplaneState, pb: fb.IPSetRemove) -> None:
    state.remove_ipset(pb.id)


def apply_policy_update(state: DataplaneState, pb: fb.ActivePolicyUpdate) -> None:
    state.upsert_policy(policy_from_proto(pb))


def apply_policy_remove(state: DataplaneState, pb: fb.ActivePolicyRemove) -> None:
    state.remove_policy(policy_key(pb.id))


def apply_profile_update(state: DataplaneState, pb: fb.ActiveProfileUpdate) -> None:
    state.upsert_profile(profile_from_proto(pb))


def apply_profile_remove(state: DataplaneState, pb: fb.ActiveProfileRemove) -> None:
    state.remove_profile(pb.id.name)


def apply_service_update(state: DataplaneState, pb: fb.ServiceUpdate) -> None:
    state.upsert_felix_service(service_from_felix(pb))


def apply_service_remove(state: DataplaneState, pb: fb.ServiceRemove) -> None:
    state.remove_felix_service(ServiceKey(pb.namespace or "default", pb.name))
