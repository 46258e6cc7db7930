"""Random Calico policy worlds for property tests: a small address/port universe where
IP sets, nets, ports and ICMP values collide often, two local pods, and packets."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from calico_proto import felixbackend_pb2 as fb
from felix_p4.compile.forwarding import ForwardingSettings, endpoint_entries, node_entries
from felix_p4.compile.ipsets import Classifier
from felix_p4.compile.policy import SET_BITS, PolicyCompiler, program_spec
from felix_p4.felix.convert import workload_endpoint
from felix_p4.model.endpoints import WorkloadEndpointKey
from felix_p4.model.policy import (
    IcmpMatch,
    IpSet,
    Policy,
    PolicyKey,
    PortMember,
    PortRange,
    Profile,
    Rule,
    TierInfo,
)
from felix_p4.model.reference import Packet
from felix_p4.model.values import prefix_of
from felix_p4.pipeline.entries import TableEntry

POD_A = ("cali-a", "10.0.0.1", "fd00::1", 1)
POD_B = ("cali-b", "10.0.0.2", "fd00::2", 2)
HOST_PORT = 100
ADDRS = {
    4: ["10.0.0.1", "10.0.0.2", "10.0.1.5", "192.168.1.1"],
    6: ["fd00::1", "fd00::2", "fd00:1::5", "2001:db8::1"],
}
NETS = [
    "10.0.0.0/24",
    "10.0.0.1/32",
    "10.0.0.2/32",
    "10.0.1.0/24",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "fd00::/64",
    "fd00::1/128",
    "fd00:1::/64",
    "::/0",
]
PORTS = [0, 22, 53, 80, 443, 8080]
PROTOS = [6, 17, 1, 58, 132, 253]
ICMP_TYPES = [0, 3, 8, 128, 129]
ICMP_CODES = [0, 1, 3]
NET_SETS = ["s:one", "s:two", "s:three"]
PORT_SETS = ["n:one", "n:two"]

nets = st.lists(st.sampled_from(NETS).map(ipaddress.ip_network), max_size=2, unique=True).map(tuple)
port_ranges = st.lists(
    st.tuples(st.sampled_from(PORTS), st.sampled_from(PORTS)).map(
        lambda p: PortRange(min(p), max(p))
    ),
    max_size=2,
).map(tuple)
icmp = st.one_of(
    st.none(),
    st.builds(
        IcmpMatch, st.sampled_from(ICMP_TYPES), st.one_of(st.none(), st.sampled_from(ICMP_CODES))
    ),
)
set_ids = st.lists(st.sampled_from(NET_SETS), max_size=2, unique=True).map(tuple)
port_set_ids = st.lists(st.sampled_from(PORT_SETS), max_size=2, unique=True).map(tuple)


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    # Each criterion is present with probability 1/8, so rules often match something.
    def maybe(strategy, empty):  # type: ignore[no-untyped-def]
        return draw(strategy) if draw(st.integers(0, 7)) == 0 else empty

    return Rule(
        action=draw(st.sampled_from(["allow", "allow", "allow", "deny", "deny", "pass", "log"])),
        ip_version=maybe(st.sampled_from([4, 6]), None),
        protocol=maybe(st.sampled_from(PROTOS), None),
        not_protocol=maybe(st.sampled_from(PROTOS), None),
        src_nets=maybe(nets, ()),
        not_src_nets=maybe(nets, ()),
        dst_nets=maybe(nets, ()),
        not_dst_nets=maybe(nets, ()),
        src_ports=maybe(port_ranges, ()),
        not_src_ports=maybe(port_ranges, ()),
        dst_ports=maybe(port_ranges, ()),
        not_dst_ports=maybe(port_ranges, ()),
        src_ip_sets=maybe(set_ids, ()),
        not_src_ip_sets=maybe(set_ids, ()),
        dst_ip_sets=maybe(set_ids, ()),
        not_dst_ip_sets=maybe(set_ids, ()),
        src_named_port_sets=maybe(port_set_ids, ()),
        not_src_named_port_sets=maybe(port_set_ids, ()),
        dst_named_port_sets=maybe(port_set_ids, ()),
        not_dst_named_port_sets=maybe(port_set_ids, ()),
        dst_ip_port_sets=maybe(port_set_ids, ()),
        icmp=maybe(icmp, None),
        not_icmp=maybe(icmp, None),
    )


rule_lists = st.lists(rules(), max_size=3).map(tuple)


@st.composite
def ipsets(draw: st.DrawFn) -> dict[str, IpSet]:
    out = {}
    for set_id in NET_SETS:
        members = draw(st.lists(st.sampled_from(NETS), max_size=3, unique=True))
        out[set_id] = IpSet(
            set_id, "NET", frozenset(prefix_of(ipaddress.ip_network(m)) for m in members)
        )
    all_addrs = ADDRS[4] + ADDRS[6]
    for set_id in PORT_SETS:
        members = draw(
            st.lists(
                st.builds(
                    PortMember,
                    st.sampled_from(all_addrs).map(ipaddress.ip_address),
                    st.sampled_from([6, 17]),
                    st.sampled_from(PORTS),
                ),
                max_size=3,
                unique=True,
            )
        )
        out[set_id] = IpSet(set_id, "IP_AND_PORT", frozenset(members))
    return out


@st.composite
def worlds(draw: st.DrawFn) -> dict:
    """Policies in 0-3 tiers, profiles, IP sets, and the two pods' tier/profile lists."""
    policies: dict[PolicyKey, Policy] = {}
    tiers = []
    for t in range(draw(st.integers(0, 3))):
        keys = []
        for p in range(draw(st.integers(1, 2))):
            kind = draw(st.sampled_from(["NetworkPolicy", "NetworkPolicy", "StagedNetworkPolicy"]))
            key = PolicyKey(f"pol-{t}-{p}", "default", kind)
            policies[key] = Policy(key, f"tier-{t}", draw(rule_lists), draw(rule_lists))
            keys.append(key)
        ingress = tuple(k for k in keys if draw(st.booleans()))
        egress = tuple(k for k in keys if draw(st.booleans()))
        tiers.append(
            TierInfo(f"tier-{t}", ingress, egress, draw(st.sampled_from(["Deny", "Pass"])))
        )
    allow_all = (Rule(action="allow"),)
    profiles = {
        f"prof-{i}": Profile(
            f"prof-{i}",
            draw(rule_lists) + (allow_all if draw(st.booleans()) else ()),
            draw(rule_lists) + (allow_all if draw(st.booleans()) else ()),
        )
        for i in range(2)
    }
    profile_ids = tuple(draw(st.lists(st.sampled_from(list(profiles)), max_size=2, unique=True)))
    return {
        "policies": policies,
        "profiles": profiles,
        "ipsets": draw(ipsets()),
        "tiers": tuple(tiers),
        "profile_ids": profile_ids,
        "active": "down" if draw(st.integers(0, 15)) == 0 else "active",
    }


def endpoint(pod: tuple[str, str, str, int], world: dict):  # type: ignore[no-untyped-def]
    name, v4, v6, _ = pod
    pb = fb.WorkloadEndpoint(
        name=name,
        mac="0a:00:00:00:00:01",
        ipv4_nets=[f"{v4}/32"],
        ipv6_nets=[f"{v6}/128"],
        state=world["active"],
    )
    ep = workload_endpoint(WorkloadEndpointKey("k8s", f"default/{name}", "eth0"), pb)
    import attrs

    return attrs.evolve(ep, tiers=world["tiers"], profile_ids=world["profile_ids"])


@st.composite
def packets(draw: st.DrawFn) -> tuple[str, Packet]:
    """(how it enters, packet): "from-a" leaves pod A, "to-b" arrives from the host for B."""
    version = draw(st.sampled_from([4, 6]))
    how = draw(st.sampled_from(["from-a", "to-b"]))
    pick = st.sampled_from(ADDRS[version]).map(ipaddress.ip_address)
    if how == "from-a":
        src = ipaddress.ip_address(POD_A[1] if version == 4 else POD_A[2])
        dst = draw(pick)
    else:
        src = draw(pick.filter(lambda a: str(a) not in (POD_A[1], POD_A[2], POD_B[1], POD_B[2])))
        dst = ipaddress.ip_address(POD_B[1] if version == 4 else POD_B[2])
    proto_number = draw(st.sampled_from(PROTOS))
    if proto_number in (6, 17, 132):
        pkt = Packet(
            src, dst, proto_number, draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))
        )
    elif proto_number == (1 if version == 4 else 58):
        pkt = Packet(
            src,
            dst,
            proto_number,
            icmp_type=draw(st.sampled_from(ICMP_TYPES)),
            icmp_code=draw(st.sampled_from(ICMP_CODES)),
        )
    else:
        pkt = Packet(src, dst, proto_number)
    return how, pkt


def packet_spec(pkt: Packet) -> dict:
    spec: dict = {"src": str(pkt.src), "dst": str(pkt.dst), "proto": pkt.proto}
    if pkt.sport is not None:
        spec.update(sport=pkt.sport, dport=pkt.dport, tcp_flags="S")
    if pkt.icmp_type is not None:
        spec.update(icmp_type=pkt.icmp_type, icmp_code=pkt.icmp_code)
    return spec


def world_entries(world: dict) -> tuple[list[TableEntry], dict]:
    """What the driver installs for pods A and B in `world` (each entry once), and the two
    endpoints by name."""
    compiler = PolicyCompiler(Classifier(SET_BITS))
    settings = ForwardingSettings(host_port=HOST_PORT)
    entries = node_entries(settings)
    endpoints = {}
    for pod in (POD_A, POD_B):
        ep = endpoint(pod, world)
        endpoints[pod[0]] = ep
        ids = {}
        for direction in ("egress", "ingress"):
            spec = program_spec(ep, direction, world["policies"], world["profiles"])
            program = compiler.ensure(spec, world["ipsets"].get)
            entries += program.entries
            ids[direction] = program.id
        entries += endpoint_entries(ep, pod[3], settings, ids["egress"], ids["ingress"])
    for owner in compiler.classifier.changed:
        entries += compiler.classifier.entries_for(owner)
    unique: dict[object, TableEntry] = {}
    for entry in entries:
        unique.setdefault(entry.key, entry)  # programs shared by both pods
    return list(unique.values()), endpoints
