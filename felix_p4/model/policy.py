"""Calico policy as Felix sends it: rules, policies, profiles, tiers and IP sets, validated.

Field semantics follow Felix's own Linux dataplane (docs/policy-semantics.md lists the
special cases and where each is handled).
"""

from __future__ import annotations

import ipaddress
from typing import TypeAlias

import attrs

from felix_p4.model.values import InvalidObject, IPNetwork, Prefix, check_plain, parse_prefix

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


def parse_member(text: str, set_type: str) -> IpSetMember:
    """ "10.0.0.1/32", "10.0.0.0/24", "fd00::1" or, for IP_AND_PORT, "10.0.0.1,tcp:8080"."""
    if set_type != "IP_AND_PORT":
        return parse_prefix(text, "IP set member")
    addr_text, sep, proto_port = text.partition(",")
    proto_text, sep2, port_text = proto_port.partition(":")
    if not sep or not sep2:
        raise InvalidObject(f"IP set member {text!r} is not address,protocol:port")
    check_plain(addr_text, "IP set member")
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
