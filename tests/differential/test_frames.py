"""Random frames, well formed or not, on both engines: the node of node.yaml (programmed by
the driver once, then written to both targets again for every case), and frames built with
scapy from its addresses, ports and protocols with their fields varied where parsers and
rewrites go wrong: TTLs, IPv4 options and fragments, lengths that claim more or less than the
frame holds, trailing bytes, checksums of 0 and 0xffff, neighbour solicitations and ARP with
odd fields, other ethertypes, frames cut short or longer than the port's MTU."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import yaml
from engines import EnginePair, cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Packet, Raw

from felix_p4.pipeline.entries import TableEntry

NODE = Path(__file__).with_name("node.yaml")
GATEWAY_MAC = "ee:ee:ee:ee:ee:ee"
# P4 port -> the MAC of what sends into it (port 7 is no port of the node).
SENDERS = {
    1: "0a:58:0a:41:00:02",
    2: "0a:58:0a:41:00:03",
    3: "0a:58:0a:41:00:04",
    100: "02:42:c0:a8:00:01",
    7: "02:00:00:00:00:07",
}
ADDRS = {
    4: [
        "10.65.0.2",
        "10.65.0.3",
        "10.65.0.4",
        "10.65.1.5",
        "10.96.0.10",
        "10.96.0.50",
        "192.168.0.11",
        "203.0.113.5",
        "169.254.1.1",
        "0.0.0.0",
        "255.255.255.255",
    ],
    6: [
        "fd00:65::2",
        "fd00:65::4",
        "fd00:96::10",
        "fd00:192::11",
        "2001:db8::5",
        "fd00:a9fe:101::1",
        "fe80::ecee:eeff:feee:eeee",
        "::",
        "ff02::1",
    ],
}
PORTS = [0, 9, 53, 80, 5353, 8080, 9009, 30009, 30053, 30080, 40000, 65535]
CHECKSUMS = st.sampled_from([None, None, None, 0, 0xFFFF, 0x1234])
TTLS = st.sampled_from([64, 64, 0, 1, 2, 255])


@st.composite
def l4(draw: st.DrawFn, version: int) -> tuple[int, Packet | None]:
    """(protocol number, its header or None for protocols the parser does not look into)."""
    port = st.sampled_from(PORTS)
    icmp = 1 if version == 4 else 58
    proto = draw(st.sampled_from([6, 6, 17, 17, 132, icmp, 136, 0, 47]))
    checksum = draw(CHECKSUMS)
    header: Packet | None
    if proto == 6:
        header = TCP(sport=draw(port), dport=draw(port), flags=draw(st.sampled_from(["S", "SA"])))
    elif proto in (17, 136):
        header = UDP(sport=draw(port), dport=draw(port))
    elif proto == 132:
        header = SCTP(sport=draw(port), dport=draw(port))
    elif proto == 1:
        header = ICMP(type=draw(st.sampled_from([0, 3, 8, 11])), code=draw(st.sampled_from([0, 1])))
    elif proto == 58:
        raw = bytes([draw(st.sampled_from([1, 128, 129, 135, 136])), draw(st.sampled_from([0, 1]))])
        return proto, Raw(raw + b"\x00\x00")
    else:
        return proto, None
    if checksum is not None and proto != 132:
        header.chksum = checksum
    return proto, header


@st.composite
def ip_frame(draw: st.DrawFn) -> Packet:
    version = draw(st.sampled_from([4, 4, 6]))
    addr = st.sampled_from(ADDRS[version])
    proto, header = draw(l4(version))
    if version == 4:
        ip: Packet = IP(
            src=draw(addr),
            dst=draw(addr),
            ttl=draw(TTLS),
            proto=proto,
            flags=draw(st.sampled_from(["DF", "DF", "MF", 0])),
            frag=draw(st.sampled_from([0, 0, 0, 1, 185])),
        )
        words = draw(st.sampled_from([0, 0, 0, 1, 10]))
        if words:
            ip.options = [IPOption_NOP()] * (4 * words)
        checksum = draw(CHECKSUMS)
        if checksum is not None:
            ip.chksum = checksum
    else:
        ip = IPv6(src=draw(addr), dst=draw(addr), hlim=draw(TTLS), nh=proto)
    payload = Raw(bytes(draw(st.sampled_from([0, 0, 1, 6, 64, 1400, 2100]))))
    packet = ip / header / payload if header is not None else ip / payload
    change = draw(st.sampled_from([0, 0, 0, 0, -30, -4, -1, 1, 4]))
    if change:
        # The IP length field claims more or less than the frame holds.
        built = packet.__class__(bytes(packet))
        if version == 4:
            packet.len = max(0, built.len + change)
        else:
            packet.plen = max(0, built.plen + change)
    return packet


@st.composite
def solicitation(draw: st.DrawFn) -> Packet:
    """An IPv6 neighbour solicitation, maybe from ::, maybe with an option of another kind."""
    src = draw(st.sampled_from(["fd00:65::2", "fd00:65::4", "fe80::1", "::", "fd00:65::9"]))
    target = draw(st.sampled_from(["fe80::ecee:eeff:feee:eeee", "fd00:65::4", "fd00:96::10"]))
    ns = ICMPv6ND_NS(tgt=target, code=draw(st.sampled_from([0, 0, 0, 1])))
    option = draw(st.sampled_from(["source", "source", "none", "target"]))
    if option == "source":
        ns = ns / ICMPv6NDOptSrcLLAddr(lladdr=draw(st.sampled_from(list(SENDERS.values()))))
    elif option == "target":
        ns = ns / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:99")
    checksum = draw(CHECKSUMS)
    if checksum is not None:
        ns.cksum = checksum
    return IPv6(src=src, dst="ff02::1:ff00:4", hlim=draw(TTLS)) / ns


@st.composite
def arp(draw: st.DrawFn) -> Packet:
    return ARP(
        hwtype=draw(st.sampled_from([1, 1, 1, 6])),
        ptype=draw(st.sampled_from([0x0800, 0x0800, 0x86DD])),
        op=draw(st.sampled_from([1, 1, 2, 3])),
        psrc=draw(st.sampled_from(ADDRS[4])),
        pdst=draw(st.sampled_from(["169.254.1.1", "10.65.0.3", "0.0.0.0"])),
        hwsrc=draw(st.sampled_from(list(SENDERS.values()))),
    )


@st.composite
def frames(draw: st.DrawFn) -> tuple[int, bytes]:
    """(in port, frame)."""
    in_port = draw(st.sampled_from(sorted(SENDERS)))
    kind = draw(st.sampled_from(["ip", "ip", "ip", "ip", "nd", "arp", "vlan", "other"]))
    ether = Ether(
        src=SENDERS[in_port],
        dst=draw(st.sampled_from([GATEWAY_MAC, GATEWAY_MAC, "ff:ff:ff:ff:ff:ff", SENDERS[2]])),
    )
    if kind == "ip":
        frame = bytes(ether / draw(ip_frame()))
    elif kind == "nd":
        frame = bytes(ether / draw(solicitation()))
    elif kind == "arp":
        frame = bytes(ether / draw(arp()))
    elif kind == "vlan":
        frame = bytes(ether / Dot1Q(vlan=10) / draw(ip_frame()))
    else:
        ether.type = draw(st.sampled_from([0x88CC, 0x0000, 0x0800, 0x86DD, 0x0806]))
        frame = bytes(ether / Raw(bytes(draw(st.integers(0, 60)))))
    trailer = draw(st.sampled_from([0, 0, 0, 0, 2, 17]))
    frame += bytes(range(trailer))
    if draw(st.integers(0, 9)) == 0:
        frame = frame[: draw(st.integers(0, len(frame)))]
    return in_port, frame


@attrs.frozen
class Node:
    """node.yaml's entries, as the driver programmed them (not shown in failure reports)."""

    entries: list[TableEntry] = attrs.field(repr=False)


@pytest.fixture(scope="module")
def node(pair: EnginePair) -> Node:
    pair.drive(yaml.safe_load(NODE.read_text()))
    return Node(pair.recorded)


@settings(
    max_examples=cases(sample=25, thorough=3000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(sequence=st.lists(frames(), min_size=1, max_size=8))
def test_random_frames_do_the_same_on_both_engines(pair, node, sequence):
    pair.reset()
    pair.write(node.entries)
    for in_port, frame in sequence:
        pair.send(in_port, frame, what=f"frame {frame.hex()}")
