"""Calico policy as Felix sends it: rules, policies, profiles, tiers and IP sets, validated.

Field semantics follow Felix's own Linux dataplane (docs/policy-semantics.md lists the
special cases and where each is handled).
"""

from __future__ import annotations

import ipaddress
from typing import TypeAlias

import attrs

from calico_proto import felixbackend_pb2 as fb
from felix_p4.model.values import InvalidObject, IPNetwork, Prefix, parse_net, parse_prefix

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136}
# Rule.action strings; Felix sends Pass as "next-tier", and iptables takes "" as allow.
ACTIONS = {
    "": "allow",
    "allow": "allow",
    "deny": "deny",
    "log": "log",
    "next-tier": "pass",
    "pass": "pass",
}
STAGED_KINDS = frozenset(
    {"StagedNetworkPolicy", "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy"}
)


@attrs.frozen(slots=True, order=True)
class PortRange:
    first: int
    last: int


@attrs.frozen(slots=True)
class IcmpMatch:
    type: int
    code: int | None = None


@attrs.frozen(slots=True, cache_hash=True)
class Rule:
    """One rule; every criterion present must hold (see Felix's semantics per field)."""

    action: str  # allow | deny | pass | log
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    src_nets: tuple[IPNetwork, ...] = ()
    not_src_nets: tuple[IPNetwork, ...] = ()
    dst_nets: tuple[IPNetwork, ...] = ()
    not_dst_nets: tuple[IPNetwork, ...] = ()
    src_ports: tuple[PortRange, ...] = ()
    not_src_ports: tuple[PortRange, ...] = ()
    dst_ports: tuple[PortRange, ...] = ()
    not_dst_ports: tuple[PortRange, ...] = ()
    src_ip_sets: tuple[str, ...] = ()
    not_src_ip_sets: tuple[str, ...] = ()
    dst_ip_sets: tuple[str, ...] = ()
    not_dst_ip_sets: tuple[str, ...] = ()
    src_named_port_sets: tuple[str, ...] = ()
    not_src_named_port_sets: tuple[str, ...] = ()
    dst_named_port_sets: tuple[str, ...] = ()
    not_dst_named_port_sets: tuple[str, ...] = ()
    dst_ip_port_sets: tuple[str, ...] = ()
    icmp: IcmpMatch | None = None
    not_icmp: IcmpMatch | None = None
    rule_id: str = attrs.field(default="", eq=False)


@attrs.frozen(slots=True, order=True, cache_hash=True)
class PolicyKey:
    name: str
    namespace: str = ""
    kind: str = ""

    @classmethod
    def from_proto(cls, pb: fb.PolicyID) -> PolicyKey:
        return cls(pb.name, pb.namespace, pb.kind)

    @property
    def staged(self) -> bool:
        return self.kind in STAGED_KINDS

    def __str__(self) -> str:
        scope = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind or 'Policy'} {scope}{self.name}"


@attrs.frozen(slots=True, cache_hash=True)
class Policy:
    key: PolicyKey
    tier: str
    inbound: tuple[Rule, ...]
    outbound: tuple[Rule, ...]


@attrs.frozen(slots=True, cache_hash=True)
class Profile:
    id: str
    inbound: tuple[Rule, ...]
    outbound: tuple[Rule, ...]


@attrs.frozen(slots=True, cache_hash=True)
class TierInfo:
    name: str
    ingress_policies: tuple[PolicyKey, ...]
    egress_policies: tuple[PolicyKey, ...]
    default_action: str  # "Deny" or "Pass"; Felix's "" (tier resource missing) means Deny

    @classmethod
    def from_proto(cls, pb: fb.TierInfo) -> TierInfo:
        return cls(
            pb.name,
            tuple(PolicyKey.from_proto(p) for p in pb.ingress_policies),
            tuple(PolicyKey.from_proto(p) for p in pb.egress_policies),
            "Pass" if pb.default_action == "Pass" else "Deny",
        )


@attrs.frozen(slots=True)
class PortMember:
    """A member of an IP_AND_PORT set: address, IP protocol number, port."""

    addr: IPAddress
    proto: int
    port: int


IpSetMember: TypeAlias = Prefix | PortMember


@attrs.frozen(slots=True)
class IpSet:
    id: str
    type: str  # IP | NET | IP_AND_PORT
    members: frozenset[IpSetMember]


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
    key = PolicyKey.from_proto(pb.id)
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


def parse_member(text: str, set_type: str) -> IpSetMember:
    """ "10.0.0.1/32", "10.0.0.0/24", "fd00::1" or, for IP_AND_PORT, "10.0.0.1,tcp:8080"."""
    if set_type != "IP_AND_PORT":
        return parse_prefix(text, "IP set member")
    addr_text, sep, proto_port = text.partition(",")
    proto_text, sep2, port_text = proto_port.partition(":")
    if not sep or not sep2:
        raise InvalidObject(f"IP set member {text!r} is not address,protocol:port")
    try:
        addr = ipaddress.ip_address(addr_text.split("/")[0])
        port = int(port_text)
    except ValueError:
        raise InvalidObject(f"invalid IP set member {text!r}") from None
    proto = PROTOCOLS.get(proto_text.lower())
    if proto is None and proto_text.isdigit():
        proto = int(proto_text)
    if (
        proto is None
        or not 0 <= port <= 65535
        or ("/" in addr_text and not (addr_text.endswith("/32") or addr_text.endswith("/128")))
    ):
        raise InvalidObject(f"invalid IP set member {text!r}")
    return PortMember(addr, proto, port)


def members(texts: list[str], set_type: str) -> frozenset[IpSetMember]:
    return frozenset(parse_member(t, set_type) for t in texts)
