"""The policy property test's random Calico policies, IP sets and packets on both engines:
what the driver's compilers produce for two pods is written to both targets (and then changed
to another world's, as an incremental apply would), every packet and its reply are sent to
both, and both do the same (conntrack included: a reply passes only where its request was
allowed and learned, a denied request learns nothing, and learned flows outlive policy
changes)."""

from __future__ import annotations

from engines import cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_universe import HOST_PORT, POD_A, POD_B, packet_spec, packets, world_entries, worlds

from felix_p4.model.reference import Packet
from felix_p4.softswitch.packet import build

POD_MAC = "0a:00:00:00:00:01"  # policy_universe's pods
HOST_MAC = "02:42:c0:a8:00:01"
PODS = {POD_A[1]: POD_A, POD_A[2]: POD_A, POD_B[1]: POD_B, POD_B[2]: POD_B}


def port_and_mac(addr: str) -> tuple[int, str]:
    """Where a packet from `addr` enters: its pod's port, or the host port."""
    pod = PODS.get(addr)
    return (pod[3], POD_MAC) if pod else (HOST_PORT, HOST_MAC)


def frames(pkt: Packet) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """(in port, frame) of the packet and of its reply."""
    spec = packet_spec(pkt)
    reply = dict(spec, src=spec["dst"], dst=spec["src"])
    if "sport" in spec:
        reply.update(sport=spec["dport"], dport=spec["sport"], tcp_flags="SA")
    out = []
    for one in (spec, reply):
        in_port, mac = port_and_mac(str(one["src"]))
        out.append((in_port, build(dict(one, src_mac=mac))))
    return out[0], out[1]


@settings(
    max_examples=cases(sample=6, thorough=1500),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    world=worlds(),
    flows=st.lists(st.tuples(packets(), st.booleans()), min_size=1, max_size=8),
    then=st.one_of(st.none(), worlds()),
    later=st.lists(st.tuples(packets(), st.booleans()), max_size=6),
)
def test_random_policies_and_packets_do_the_same_on_both_engines(pair, world, flows, then, later):
    """`then`: the policies, sets and profiles change (entries deleted, modified and inserted
    as an incremental apply writes them) and `later` packets follow."""
    entries, _ = world_entries(world)
    pair.reset()
    pair.write(entries)
    send(pair, flows)
    if then is not None:
        pair.change(entries, world_entries(then)[0])
        send(pair, later)


def send(pair, flows) -> None:
    for (how, pkt), with_reply in flows:
        (in_port, frame), (reply_port, reply) = frames(pkt)
        pair.send(in_port, frame, what=f"{how} {pkt}")
        if with_reply:
            pair.send(reply_port, reply, what=f"reply to {pkt}")
