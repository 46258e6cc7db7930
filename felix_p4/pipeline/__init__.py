"""The P4 pipeline as the control plane sees it, declared once: tables, keys, actions, owners.

Everything that names a table, key, action or parameter (the compilers, the sync engine, the
behavioural model, trace, the bench) reads it from here. `felix_p4.p4.schema` holds this
declaration to the device's P4Info at start, so a pipeline that differs is refused with one
line naming the difference instead of failing entry by entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import attrs

# P4Info match kinds (p4.config.v1.MatchField.MatchType); "selector" keys feed an action
# selector's hash and are not in the P4Info's match fields.
EXACT, LPM, TERNARY, RANGE, OPTIONAL, SELECTOR = (
    "exact",
    "lpm",
    "ternary",
    "range",
    "optional",
    "selector",
)
MATCH_TYPE_NUMBER = {EXACT: 2, LPM: 3, TERNARY: 4, RANGE: 5, OPTIONAL: 6}


class Owner(StrEnum):
    """Who fills a table: one of the driver's managers, or the data plane itself (learned
    tables, which the control plane never writes, diffs or deletes)."""

    FORWARDING = "forwarding"
    IPSETS = "ipsets"
    POLICY = "policy"
    SERVICES = "services"
    ROUTES = "routes"  # other nodes: routes, VTEPs, next hops, the node's tunnel addresses
    DATA_PLANE = "data plane"


FORWARDING, IPSETS, POLICY, SERVICE_MANAGER, ROUTE_MANAGER, DATA_PLANE = (
    Owner.FORWARDING,
    Owner.IPSETS,
    Owner.POLICY,
    Owner.SERVICES,
    Owner.ROUTES,
    Owner.DATA_PLANE,
)


@attrs.frozen(slots=True)
class Param:
    name: str
    bits: int


@attrs.frozen(slots=True)
class Action:
    name: str
    params: tuple[Param, ...] = ()

    def param(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(f"action {self.name} has no parameter {name!r}")


@attrs.frozen(slots=True)
class Key:
    name: str
    match: str
    bits: int


@attrs.frozen(slots=True)
class Table:
    name: str
    keys: tuple[Key, ...]
    actions: tuple[Action, ...]  # actions an entry may use
    default: Action  # the default action the pipeline starts with
    const_default: bool
    size: int
    owner: Owner
    profile: str = ""  # the action profile implementing an indirect table

    @property
    def learned(self) -> bool:
        return self.owner == DATA_PLANE

    def key(self, name: str) -> Key:
        for key in self.keys:
            if key.name == name:
                return key
        raise KeyError(f"table {self.name} has no key {name!r}")

    @property
    def match_keys(self) -> tuple[Key, ...]:
        """Keys an entry matches on (selector inputs are not part of an entry)."""
        return tuple(k for k in self.keys if k.match != SELECTOR)


@attrs.frozen(slots=True)
class ActionProfile:
    name: str  # as the driver addresses it (the P4Info alias)
    actions: tuple[Action, ...]
    size: int  # members
    selector: bool
    owner: Owner

    @property
    def members(self) -> str:
        """Pseudo-table name under which the sync engine orders and counts its members."""
        return f"{self.name}#members"

    @property
    def groups(self) -> str:
        return f"{self.name}#groups"


# --- actions -------------------------------------------------------------------------------

NO_ACTION = Action("NoAction")
DROP = Action("drop")
WORKLOAD_PORT = Action(
    "workload_port", (Param("gateway_mac", 48), Param("egress_program", 16), Param("port", 32))
)
HOST_PORT = Action("host_port")
UPLINK_PORT = Action("uplink_port")
ALLOW_SOURCE = Action("allow_source")
TO_WORKLOAD = Action(
    "to_workload",
    (Param("port", 32), Param("dmac", 48), Param("smac", 48), Param("ingress_program", 16)),
)
TO_HOST = Action("to_host", (Param("port", 32),))
NO_ROUTE = Action("no_route")
# Another node's pods: VXLAN (the VTEP's parent address, its MAC, the outer checksum seed),
# IP-in-IP (IPv4), or unencapsulated to the node; one action per family for the address.
CSUM_SEED = Param("csum_seed", 16)
TO_VXLAN = Action("to_vxlan", (Param("node", 32), Param("vtep_mac", 48), CSUM_SEED))
TO_VXLAN6 = Action(
    "to_vxlan6", (Param("node_hi", 64), Param("node_lo", 64), Param("vtep_mac", 48), CSUM_SEED)
)
TO_IPIP = Action("to_ipip", (Param("node", 32), CSUM_SEED))
TO_NODE = Action("to_node", (Param("node", 32),))
TO_NODE6 = Action("to_node6", (Param("node_hi", 64), Param("node_lo", 64)))
BLACKHOLE = Action("blackhole")
NODE_CONFIG = Action(
    "node_config",
    (
        Param("node_mac", 48),
        Param("vtep_mac", 48),
        Param("vtep_mac6", 48),
        Param("ip4", 32),
        Param("ip6_hi", 64),
        Param("ip6_lo", 64),
        Param("vni", 24),
    ),
)
ALLOW_TUNNEL = Action("allow_tunnel")
DENY_TUNNEL = Action("deny_tunnel")
BRIDGE_TO = Action("bridge_to", (Param("port", 32),))
NO_BRIDGE = Action("no_bridge")
SET_NEXT_HOP = Action("set_next_hop", (Param("dmac", 48), Param("port", 32)))
NO_NEXT_HOP = Action("no_next_hop")
SETS = (Param("sets_hi", 64), Param("sets_lo", 64))
SET_SETS = {"src": Action("set_src_sets", SETS), "dst": Action("set_dst_sets", SETS)}
ADD_SETS = {"src": Action("add_src_sets", SETS), "dst": Action("add_dst_sets", SETS)}
NO_SETS = Action("no_sets")
RULE_ALLOW = Action("rule_allow")
RULE_DENY = Action("rule_deny")
RULE_PASS = Action("rule_pass")
NO_VERDICT = Action("no_verdict")
RULE_ACTIONS = {"allow": RULE_ALLOW, "deny": RULE_DENY, "pass": RULE_PASS}
BACKEND = (Param("addr_hi", 64), Param("addr_lo", 64), Param("port", 16))
TO_SERVICE = Action(
    "to_service",
    (
        Param("group", 32),
        Param("service_id", 32),
        Param("affinity_seconds", 32),
        Param("hairpin_hi", 64),
        Param("hairpin_lo", 64),
        Param("bucket_mask", 16),
    ),
)
SERVICE_REJECT = Action("service_reject")
NOT_SERVICE = Action("not_service")
SET_BACKEND = Action("set_backend", BACKEND)
NO_BACKEND = Action("no_backend")
AFFINE = Action("affine", BACKEND)
AFFINITY_LEARN = Action("affinity_learn")
PINNED = Action("pinned", BACKEND)
PIN_LEARN = Action("pin_learn")
UN_NAT = Action(
    "un_nat",
    (
        Param("service_hi", 64),
        Param("service_lo", 64),
        Param("service_port", 16),
        Param("hairpin", 8),
    ),
)
REVERSE_LEARN = Action("reverse_learn")
CT_ESTABLISHED = Action("ct_established")
CT_LEARN = Action("ct_learn")
# Called directly by the program's controls, never by an entry; in the P4Info with ids too.
ARP_REPLY = Action("arp_reply")
DECREMENT_TTL_V4 = Action("decrement_ttl_v4")
ND_ADVERT = Action("nd_advert")
ND_OPTION_TARGET = Action("nd_option_target")
DECAPSULATE = Action("decapsulate")

# Expiry profiles of learned entries (PNA expire_time_profile_id): indexes into P4-DPDK's
# learner timeouts, p4c-dpdk's defaults (10, 30, 60, 120, 300, 43200, 120, 120 seconds); the
# target sets the affinity profile to the cluster's ClientIP timeout.
PROFILE_SECONDS = {0: 10, 1: 30, 2: 60, 3: 120, 4: 300, 5: 43200, 6: 120, 7: 120}
PROFILE_OTHER, PROFILE_UDP, PROFILE_TCP, PROFILE_AFFINITY = 1, 3, 5, 6
DEFAULT_AFFINITY_SECONDS = 10800  # Kubernetes' ClientIP default

# --- tables --------------------------------------------------------------------------------


def _ipv6(name: str, match: str) -> tuple[Key, Key]:
    """A 128-bit value as two 64-bit keys (P4-DPDK operates on at most 64 bits)."""
    return Key(f"{name}_hi", match, 64), Key(f"{name}_lo", match, 64)


PORT_CLASSIFY = Table(
    "port_classify",
    (Key("port", EXACT, 32),),
    (WORKLOAD_PORT, HOST_PORT, UPLINK_PORT),
    DROP,
    True,
    65536,
    FORWARDING,
)
SOURCE_CHECK = {
    4: Table(
        "source_check_v4",
        (Key("port", EXACT, 32), Key("src", LPM, 32)),
        (ALLOW_SOURCE,),
        DROP,
        True,
        65536,
        FORWARDING,
    ),
    6: Table(
        "source_check_v6",
        (Key("port", EXACT, 32), *_ipv6("src", TERNARY)),
        (ALLOW_SOURCE,),
        DROP,
        True,
        65536,
        FORWARDING,
    ),
}
# Routes are written by two managers: forwarding (this node's pods and the defaults to the
# host) and routes (other nodes' blocks, this node's unused addresses, host addresses).
ROUTES = {
    4: Table(
        "routes_v4",
        (Key("dst", LPM, 32),),
        (TO_WORKLOAD, TO_HOST, TO_VXLAN, TO_IPIP, TO_NODE, BLACKHOLE, NO_ROUTE),
        NO_ROUTE,
        False,
        65536,
        FORWARDING,
    ),
    6: Table(
        "routes_v6",
        _ipv6("dst", TERNARY),
        (TO_WORKLOAD, TO_HOST, TO_VXLAN6, TO_NODE6, BLACKHOLE, NO_ROUTE),
        NO_ROUTE,
        False,
        65536,
        FORWARDING,
    ),
}
# The node's own addresses (one default entry): outer source, VTEP MACs, VNI.
NODE = Table("node", (), (NODE_CONFIG,), NODE_CONFIG, False, 1, ROUTE_MANAGER)
TUNNEL_VXLAN, TUNNEL_IPIP = 1, 2  # the tunnel_sources key's kind
VXLAN_PORT = 4789  # the only VXLANPort the parser recognises
TUNNEL_SOURCES = Table(
    "tunnel_sources",
    (Key("kind", EXACT, 8), Key("ip_version", EXACT, 8), *_ipv6("src", TERNARY)),
    (ALLOW_TUNNEL,),
    DENY_TUNNEL,
    True,
    16384,
    ROUTE_MANAGER,
)
# The host port and the uplink pass the host's own traffic to each other.
PEER_PORTS = Table(
    "peer_ports", (Key("port", EXACT, 32),), (BRIDGE_TO,), NO_BRIDGE, True, 64, FORWARDING
)
NEXT_HOPS = Table(
    "next_hops",
    (Key("ip_version", EXACT, 8), *_ipv6("addr", EXACT)),
    (SET_NEXT_HOP,),
    NO_NEXT_HOP,
    True,
    16384,
    ROUTE_MANAGER,
)
IPSET = {
    (side, version): Table(
        f"ipset_{side}_v{version}",
        (Key("addr", LPM, 32),) if version == 4 else _ipv6("addr", TERNARY),
        (SET_SETS[side],),
        NO_SETS,
        True,
        262144,
        IPSETS,
    )
    for side in ("src", "dst")
    for version in (4, 6)
}
PORTSET = {
    side: Table(
        f"portset_{side}",
        (
            Key("ip_version", EXACT, 8),
            *_ipv6("addr", EXACT),
            Key("proto", EXACT, 8),
            Key("port", EXACT, 16),
        ),
        (ADD_SETS[side],),
        NO_SETS,
        True,
        262144,
        IPSETS,
    )
    for side in ("src", "dst")
}
# Per direction, the first-match stages a policy program's blocks occupy, in order.
POLICY_STAGES = 7
# Ranges (protocols, ports, ICMP type and code) are written as the ternary prefixes covering
# them: P4-DPDK has no range match.
_RULE_KEYS = (
    Key("program", EXACT, 16),
    Key("ip_version", TERNARY, 8),
    Key("proto", TERNARY, 8),
    *_ipv6("src_sets", TERNARY),
    *_ipv6("dst_sets", TERNARY),
    Key("src_port", TERNARY, 16),
    Key("dst_port", TERNARY, 16),
    Key("icmp_type", TERNARY, 8),
    Key("icmp_code", TERNARY, 8),
)
STAGES = {
    direction: tuple(
        Table(
            f"{direction}_stage_{i}",
            _RULE_KEYS,
            (RULE_ALLOW, RULE_DENY, RULE_PASS),
            NO_VERDICT,
            True,
            65536,
            POLICY,
        )
        for i in range(POLICY_STAGES)
    )
    for direction in ("egress", "ingress")
}
SERVICES = Table(
    "services",
    (
        Key("ip_version", EXACT, 8),
        *_ipv6("addr", EXACT),
        Key("proto", EXACT, 8),
        Key("port", EXACT, 16),
    ),
    (TO_SERVICE, SERVICE_REJECT),
    NOT_SERVICE,
    True,
    65536,
    SERVICE_MANAGER,
)
# A service port's backends fill a power-of-two number of buckets; the flow's hash picks one.
SERVICE_BACKENDS = Table(
    "service_backends",
    (Key("group", EXACT, 32), Key("bucket", EXACT, 16)),
    (SET_BACKEND,),
    NO_BACKEND,
    True,
    262144,
    SERVICE_MANAGER,
)
MAX_BUCKETS = 4096  # per service port: the most backends a service port can have
_FLOW_KEYS = (
    Key("ip_version", EXACT, 8),
    Key("proto", EXACT, 8),
    *_ipv6("src", EXACT),
    Key("src_port", EXACT, 16),
    *_ipv6("dst", EXACT),
    Key("dst_port", EXACT, 16),
)
SERVICE_AFFINITY = Table(
    "service_affinity",
    (Key("ip_version", EXACT, 8), *_ipv6("client", EXACT), Key("service", EXACT, 32)),
    (AFFINE,),
    AFFINITY_LEARN,
    True,
    65536,
    DATA_PLANE,
)
SERVICE_FLOWS = Table("service_flows", _FLOW_KEYS, (PINNED,), PIN_LEARN, True, 65536, DATA_PLANE)
SERVICE_REPLIES = Table(
    "service_replies", _FLOW_KEYS, (UN_NAT,), REVERSE_LEARN, True, 65536, DATA_PLANE
)
CONNTRACK = Table(
    "conntrack",
    (
        Key("ip_version", EXACT, 8),
        Key("proto", EXACT, 8),
        *_ipv6("a", EXACT),
        Key("a_port", EXACT, 16),
        *_ipv6("b", EXACT),
        Key("b_port", EXACT, 16),
    ),
    (CT_ESTABLISHED,),
    CT_LEARN,
    True,
    262144,
    DATA_PLANE,
)


@attrs.frozen(slots=True)
class Pipeline:
    """Every table, action and action profile, in the order entries are written: profile
    members, then groups, then tables (what an entry refers to exists before it)."""

    tables: tuple[Table, ...]
    profiles: tuple[ActionProfile, ...]
    direct_actions: tuple[Action, ...]  # called by controls, not entries

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"the pipeline has no table {name!r}")

    @property
    def actions(self) -> dict[str, Action]:
        found: dict[str, Action] = {}
        for table in self.tables:
            for action in (*table.actions, table.default):
                found[action.name] = action
        for profile in self.profiles:
            for action in profile.actions:
                found[action.name] = action
        for action in self.direct_actions:
            found[action.name] = action
        return found

    def owned_by(self, owner: Owner) -> list[str]:
        """Names of the tables and profile pseudo-tables `owner` writes."""
        names = [t.name for t in self.tables if t.owner == owner]
        for profile in self.profiles:
            if profile.owner == owner:
                names += [profile.members, profile.groups]
        return names

    @property
    def learned(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tables if t.learned)

    def write_order(self) -> list[str]:
        return (
            [p.members for p in self.profiles]
            + [p.groups for p in self.profiles]
            + [t.name for t in self.tables]
        )

    def capacity(self, name: str) -> int:
        """Declared size of a table or profile pseudo-table (groups: at most one per member)."""
        for profile in self.profiles:
            if name in (profile.members, profile.groups):
                return profile.size
        return self.table(name).size


def _tables(*groups: Iterable[Table]) -> tuple[Table, ...]:
    return tuple(t for group in groups for t in group)


PIPELINE = Pipeline(
    tables=_tables(
        [NODE, NEXT_HOPS, PORT_CLASSIFY, PEER_PORTS, TUNNEL_SOURCES],
        SOURCE_CHECK.values(),
        # Buckets before the front ends that use them: a widened mask never points at a
        # bucket not yet written (deletes go in reverse order, so a narrowed one neither).
        [SERVICE_BACKENDS, SERVICES, SERVICE_AFFINITY, SERVICE_FLOWS, SERVICE_REPLIES],
        ROUTES.values(),
        IPSET.values(),
        PORTSET.values(),
        STAGES["egress"],
        STAGES["ingress"],
        [CONNTRACK],
    ),
    profiles=(),
    direct_actions=(ARP_REPLY, DECREMENT_TTL_V4, ND_ADVERT, ND_OPTION_TARGET, DECAPSULATE),
)
