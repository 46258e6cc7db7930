"""Calico's policy semantics, evaluated directly and readably over the model (no P4).

This is the oracle the property tests hold the compiled pipeline to: for a packet between
two endpoints it gives the verdict Felix's own dataplane would, and which rule decided it.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from felix_p4.model.endpoints import WorkloadEndpoint
from felix_p4.model.policy import (
    IcmpMatch,
    IPAddress,
    IpSet,
    Policy,
    PolicyKey,
    PortMember,
    PortRange,
    Profile,
    Rule,
)
from felix_p4.model.values import prefix_mask

ICMP_PROTO = {4: 1, 6: 58}
PORT_PROTOS = frozenset({6, 17, 132, 136})


@attrs.frozen(slots=True)
class Packet:
    src: IPAddress
    dst: IPAddress
    proto: int
    sport: int | None = None  # None: the protocol carries no ports
    dport: int | None = None
    icmp_type: int | None = None  # None: not ICMP / ICMPv6
    icmp_code: int | None = None

    @property
    def version(self) -> int:
        return self.src.version


@attrs.frozen(slots=True)
class Decision:
    allowed: bool
    reason: str  # which tier/policy/rule (or end of tier, or profiles) decided


@attrs.define
class PolicyView:
    """The parts of the model policy evaluation reads."""

    policies: Mapping[PolicyKey, Policy]
    profiles: Mapping[str, Profile]
    ipsets: Mapping[str, IpSet]

    def in_set(self, set_id: str, addr: IPAddress) -> bool:
        ipset = self.ipsets.get(set_id)  # an unknown set is empty
        if ipset is None:
            return False
        value = int(addr)
        return any(
            not isinstance(m, PortMember)
            and m[0] == addr.version
            and value & prefix_mask(m[0], m[2]) == m[1]
            for m in ipset.members
        )

    def in_port_set(self, set_id: str, addr: IPAddress, proto: int, port: int | None) -> bool:
        ipset = self.ipsets.get(set_id)
        if ipset is None or port is None:
            return False
        return PortMember(addr, proto, port) in ipset.members


def _in_ranges(port: int | None, ranges: tuple[PortRange, ...]) -> bool:
    return port is not None and any(r.first <= port <= r.last for r in ranges)


def _icmp_is(pkt: Packet, match: IcmpMatch) -> bool:
    return pkt.icmp_type == match.type and (match.code is None or pkt.icmp_code == match.code)


def rule_matches(rule: Rule, pkt: Packet, view: PolicyView) -> bool:
    family = pkt.version
    if rule.ip_version is not None and rule.ip_version != family:
        return False
    nets = {}
    for name in ("src_nets", "not_src_nets", "dst_nets", "not_dst_nets"):
        listed = getattr(rule, name)
        kept = tuple(n for n in listed if n.version == family)
        if listed and not kept:
            return False  # a net list only of the other family: rule skipped for this one
        nets[name] = kept
    if rule.protocol is not None and pkt.proto != rule.protocol:
        return False
    if rule.not_protocol is not None and pkt.proto == rule.not_protocol:
        return False
    if nets["src_nets"] and not any(pkt.src in n for n in nets["src_nets"]):
        return False
    if any(pkt.src in n for n in nets["not_src_nets"]):
        return False
    if nets["dst_nets"] and not any(pkt.dst in n for n in nets["dst_nets"]):
        return False
    if any(pkt.dst in n for n in nets["not_dst_nets"]):
        return False
    if not all(view.in_set(s, pkt.src) for s in rule.src_ip_sets):
        return False
    if any(view.in_set(s, pkt.src) for s in rule.not_src_ip_sets):
        return False
    if not all(view.in_set(s, pkt.dst) for s in rule.dst_ip_sets):
        return False
    if any(view.in_set(s, pkt.dst) for s in rule.not_dst_ip_sets):
        return False
    for end, ports, not_ports, named, not_named in (
        (
            "src",
            rule.src_ports,
            rule.not_src_ports,
            rule.src_named_port_sets,
            rule.not_src_named_port_sets,
        ),
        (
            "dst",
            rule.dst_ports,
            rule.not_dst_ports,
            rule.dst_named_port_sets,
            rule.not_dst_named_port_sets,
        ),
    ):
        addr = pkt.src if end == "src" else pkt.dst
        port = pkt.sport if end == "src" else pkt.dport
        has_ports = pkt.proto in PORT_PROTOS and port is not None
        if ports or named:
            numeric = has_ports and _in_ranges(port, ports)
            by_name = any(view.in_port_set(s, addr, pkt.proto, port) for s in named)
            if not (numeric or by_name):
                return False
        # A packet without ports is seen as port 0 by a negated numeric range, as in Felix's
        # BPF dataplane (Calico's validation keeps numeric ports to TCP, UDP and SCTP rules).
        if _in_ranges(port if has_ports else 0, not_ports):
            return False
        if any(view.in_port_set(s, addr, pkt.proto, port) for s in not_named):
            return False
    if not all(view.in_port_set(s, pkt.dst, pkt.proto, pkt.dport) for s in rule.dst_ip_port_sets):
        return False
    is_icmp = pkt.proto == ICMP_PROTO[family] and pkt.icmp_type is not None
    if rule.icmp is not None and not (is_icmp and _icmp_is(pkt, rule.icmp)):
        return False
    return rule.not_icmp is None or (is_icmp and not _icmp_is(pkt, rule.not_icmp))


def _first_match(
    rules: tuple[Rule, ...], pkt: Packet, view: PolicyView, where: str
) -> Decision | str | None:
    """The first matching allow/deny as a Decision, "pass" for a Pass, None for no match."""
    for index, rule in enumerate(rules):
        if rule.action == "log" or not rule_matches(rule, pkt, view):
            continue
        if rule.action == "pass":
            return "pass"
        return Decision(rule.action == "allow", f"{where} rule {index}")
    return None


def evaluate_direction(
    endpoint: WorkloadEndpoint, direction: str, pkt: Packet, view: PolicyView
) -> Decision:
    """direction "ingress" (to the endpoint) or "egress" (from it), Felix's order."""
    if endpoint.state != "active":
        return Decision(False, "endpoint is not active")
    inbound = direction == "ingress"
    for tier in endpoint.tiers:
        keys = tier.ingress_policies if direction == "ingress" else tier.egress_policies
        keys = tuple(k for k in keys if not k.staged)
        if not keys:
            continue  # no policies for this direction: the tier does not apply
        passed = False
        for key in keys:
            policy = view.policies.get(key)
            rules = () if policy is None else policy.inbound if inbound else policy.outbound
            outcome = _first_match(rules, pkt, view, f"tier {tier.name} {key} {direction}")
            if isinstance(outcome, Decision):
                return outcome
            if outcome == "pass":
                passed = True
                break
        if not passed and tier.default_action != "Pass":
            return Decision(False, f"tier {tier.name}: end of tier (deny)")
    for profile_id in endpoint.profile_ids:
        profile = view.profiles.get(profile_id)
        rules = () if profile is None else profile.inbound if inbound else profile.outbound
        outcome = _first_match(rules, pkt, view, f"profile {profile_id} {direction}")
        if isinstance(outcome, Decision):
            return outcome  # a pass (or no match) moves on to the next profile
    return Decision(False, "no profile allowed (deny)")


def evaluate(
    src: WorkloadEndpoint | None,
    dst: WorkloadEndpoint | None,
    pkt: Packet,
    view: PolicyView,
) -> Decision:
    """A new flow between (optional) local endpoints: egress of src, then ingress of dst."""
    if src is not None:
        out = evaluate_direction(src, "egress", pkt, view)
        if not out.allowed:
            return out
    if dst is not None:
        return evaluate_direction(dst, "ingress", pkt, view)
    return Decision(True, "no local endpoint policy")
