"""Other nodes, on both engines: VXLAN (IPv4 and IPv6) and IP-in-IP encapsulation with the
outer headers and checksums Linux expects, decapsulation only from known nodes, no-encap
routes, blackholes, and the bridge that carries the host's own traffic between the host port
and the uplink. Entries are written over P4Runtime to `felix-p4 target` (a subprocess per
engine); every frame that leaves is parsed and its checksums recomputed with scapy.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from finsy.proto import rpc_code
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN
from target_process import target_process

from felix_p4.compile.tunnels import ipv4_header_seed, vxlan6_udp_seed
from felix_p4.pipeline.entries import Exact, Lpm, TableEntry, Ternary
from felix_p4.swx import availability
from tests.swx.test_dpdk_target import GATEWAY, device, insert, ip, mac, modify

ENGINES = [
    "model",
    pytest.param(
        "dpdk",
        marks=pytest.mark.skipif(availability() is not None, reason=str(availability())),
    ),
]
POD, HOST, UPLINK = 1, 3, 4
POD_MAC, POD_IP, POD_IP6 = "0a:58:0a:41:00:02", "10.65.0.2", "fd00:65::2"
HOST_MAC = "02:00:00:00:0a:0a"  # the host's interface: the node's MAC on the network
NODE_IP, NODE_IP6 = "192.168.1.10", "fd00:192::10"
VTEP, VTEP6 = "66:00:00:00:00:0a", "66:00:00:00:60:0a"
VNI = 4096
# Node B: VXLAN; node C: IP-in-IP; node D: no encapsulation. Their next hop MACs.
B_IP, B_IP6, B_VTEP, B_VTEP6, B_MAC = (
    "192.168.1.11",
    "fd00:192::11",
    "66:00:00:00:00:0b",
    "66:00:00:00:60:0b",
    "02:00:00:00:0b:0b",
)
C_IP, C_MAC = "192.168.1.12", "02:00:00:00:0c:0c"
D_IP, D_MAC = "192.168.1.13", "02:00:00:00:0d:0d"


CLI = [sys.executable, "-m", "felix_p4", "target"]


@pytest.fixture(scope="module", params=ENGINES)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    args = ["--engine", request.param] + (["--dpdk-ports", "8"] if request.param == "dpdk" else [])
    with target_process(tmp_path_factory.mktemp(request.param), *args) as address:
        yield address


def _halves(value: int) -> tuple[int, int]:
    return value >> 64, value & ((1 << 64) - 1)


def _route(dst: str, plen: int, action: str, **params: int) -> TableEntry:
    match = (("dst", Lpm(ip(dst), plen)),) if plen else ()  # /0: the field is omitted
    return TableEntry("routes_v4", match, action, tuple(params.items()))


def _route6(dst: str, plen: int, action: str, **params: int) -> TableEntry:
    hi, lo = _halves(ip(dst))
    mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
    mhi, mlo = _halves(mask)
    # P4Runtime omits a don't-care field.
    match = tuple(
        (name, Ternary(value, m))
        for name, value, m in (("dst_hi", hi, mhi), ("dst_lo", lo, mlo))
        if m
    )
    return TableEntry(
        "routes_v6",
        match,
        action,
        tuple(params.items()),
        priority=plen + 1,
    )


def _source(kind: int, addr: str, version: int = 4) -> TableEntry:
    hi, lo = _halves(ip(addr))
    full = (1 << 64) - 1
    return TableEntry(
        "tunnel_sources",
        (
            ("kind", Exact(kind)),
            ("ip_version", Exact(version)),
            ("src_hi", Ternary(hi, full)),
            ("src_lo", Ternary(lo, full)),
        ),
        "allow_tunnel",
        priority=129,
    )


def _next_hop(addr: str, dmac: str, version: int = 4) -> TableEntry:
    hi, lo = _halves(ip(addr))
    return TableEntry(
        "next_hops",
        (("ip_version", Exact(version)), ("addr_hi", Exact(hi)), ("addr_lo", Exact(lo))),
        "set_next_hop",
        (("dmac", mac(dmac)), ("port", UPLINK)),
    )


def _entries() -> list[TableEntry]:
    node_hi, node_lo = _halves(ip(NODE_IP6))
    b6_hi, b6_lo = _halves(ip(B_IP6))
    return [
        TableEntry(
            "node",
            (),
            "node_config",
            (
                ("node_mac", mac(HOST_MAC)),
                ("vtep_mac", mac(VTEP)),
                ("vtep_mac6", mac(VTEP6)),
                ("ip4", ip(NODE_IP)),
                ("ip6_hi", node_hi),
                ("ip6_lo", node_lo),
                ("vni", VNI),
            ),
            is_default=True,
        ),
        TableEntry(
            "port_classify",
            (("port", Exact(POD)),),
            "workload_port",
            (("gateway_mac", GATEWAY), ("egress_program", 0), ("port", POD)),
        ),
        TableEntry("port_classify", (("port", Exact(HOST)),), "host_port"),
        TableEntry("port_classify", (("port", Exact(UPLINK)),), "uplink_port"),
        TableEntry("peer_ports", (("port", Exact(HOST)),), "bridge_to", (("port", UPLINK),)),
        TableEntry("peer_ports", (("port", Exact(UPLINK)),), "bridge_to", (("port", HOST),)),
        TableEntry(
            "source_check_v4",
            (("port", Exact(POD)), ("src", Lpm(ip(POD_IP), 32))),
            "allow_source",
        ),
        TableEntry(
            "source_check_v6",
            (
                ("port", Exact(POD)),
                ("src_hi", Ternary(_halves(ip(POD_IP6))[0], (1 << 64) - 1)),
                ("src_lo", Ternary(_halves(ip(POD_IP6))[1], (1 << 64) - 1)),
            ),
            "allow_source",
            priority=129,
        ),
        _route(
            POD_IP, 32, "to_workload", port=POD, dmac=mac(POD_MAC), smac=GATEWAY, ingress_program=0
        ),
        _route6(
            POD_IP6,
            128,
            "to_workload",
            port=POD,
            dmac=mac(POD_MAC),
            smac=GATEWAY,
            ingress_program=0,
        ),
        _route("10.65.0.0", 26, "blackhole"),
        _route(
            "10.65.1.0",
            26,
            "to_vxlan",
            node=ip(B_IP),
            vtep_mac=mac(B_VTEP),
            csum_seed=ipv4_header_seed(ip(NODE_IP), ip(B_IP), 17),
        ),
        _route6(
            "fd00:65:1::",
            64,
            "to_vxlan6",
            node_hi=b6_hi,
            node_lo=b6_lo,
            vtep_mac=mac(B_VTEP6),
            csum_seed=vxlan6_udp_seed(ip(NODE_IP6), ip(B_IP6), VNI, mac(B_VTEP6), mac(VTEP6)),
        ),
        _route(
            "10.65.2.0",
            26,
            "to_ipip",
            node=ip(C_IP),
            csum_seed=ipv4_header_seed(ip(NODE_IP), ip(C_IP), 4),
        ),
        _route("10.65.3.0", 26, "to_node", node=ip(D_IP)),
        _route("0.0.0.0", 0, "to_host", port=HOST),
        _route6("::", 0, "to_host", port=HOST),
        _next_hop(B_IP, B_MAC),
        _next_hop(B_IP6, B_MAC, 6),
        _next_hop(C_IP, C_MAC),
        _next_hop(D_IP, D_MAC),
        _source(1, B_IP),
        _source(1, B_IP6, 6),
        _source(2, C_IP),
    ]


async def _program(dev: Any) -> None:
    updates = [modify(e) if e.is_default else insert(e) for e in _entries()]
    assert await dev.write(*updates) == [rpc_code.OK] * len(updates)


def run(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


def _checksums_valid(frame: Ether) -> bool:
    """Every checksum scapy knows, recomputed from the frame's own bytes, equals the one sent
    (an IPv4 UDP checksum of zero means none)."""
    again = frame.copy()
    for layer in (IP, UDP, TCP, ICMP, IPv6):
        for found in again.iterpayloads():
            if isinstance(found, layer) and hasattr(found, "chksum"):
                if isinstance(found, UDP) and found.chksum == 0:
                    continue
                del found.chksum
    return bytes(Ether(bytes(again))) == bytes(frame)


def _pod_tcp(dst: str) -> Ether:
    return (
        Ether(src=POD_MAC, dst="ee:ee:ee:ee:ee:ee")
        / IP(src=POD_IP, dst=dst, ttl=64)
        / TCP(sport=40001, dport=80, flags="S")
        / b"hello"
    )


def test_a_pod_reaches_a_vxlan_node_with_linux_wire_values(target):
    async def main() -> None:
        async with device(target) as dev:
            await _program(dev)
            result = await dev.send(POD, _pod_tcp("10.65.1.5"))
            assert (result["verdict"], result["egress_port"]) == ("forward", UPLINK)
            out = Ether(bytes.fromhex(result["out_hex"]))
            assert (out.dst, out.src) == (B_MAC, HOST_MAC)
            assert (out[IP].src, out[IP].dst, out[IP].proto, out[IP].ttl) == (
                NODE_IP,
                B_IP,
                17,
                64,
            )
            assert out[UDP].dport == 4789 and out[UDP].chksum == 0
            assert out[UDP].sport == (40001 ^ 80) | 0xC000
            assert out[VXLAN].vni == VNI and out[VXLAN].flags == 0x08
            inner = out[VXLAN].payload
            assert (inner.dst, inner.src) == (B_VTEP, VTEP)
            assert (inner[IP].src, inner[IP].dst, inner[IP].ttl) == (POD_IP, "10.65.1.5", 63)
            assert bytes(inner[TCP].payload) == b"hello"
            assert _checksums_valid(out)

    run(main())


def test_a_pod_reaches_an_ipv6_vxlan_node_with_a_valid_outer_udp_checksum(target):
    async def main() -> None:
        async with device(target) as dev:
            await _program(dev)
            sent = (
                Ether(src=POD_MAC, dst="ee:ee:ee:ee:ee:ee")
                / IPv6(src=POD_IP6, dst="fd00:65:1::7", hlim=64)
                / UDP(sport=5353, dport=53)
                / b"question"
            )
            result = await dev.send(POD, sent)
            assert (result["verdict"], result["egress_port"]) == ("forward", UPLINK)
            out = Ether(bytes.fromhex(result["out_hex"]))
            assert (out[IPv6].src, out[IPv6].dst, out[IPv6].nh) == (NODE_IP6, B_IP6, 17)
            assert out[UDP].dport == 4789 and out[UDP].chksum != 0
            inner = out[VXLAN].payload
            assert (inner.dst, inner.src) == (B_VTEP6, VTEP6)
            assert inner[IPv6].hlim == 63
            assert _checksums_valid(out)

    run(main())


def test_ip_in_ip_and_no_encap_routes(target):
    async def main() -> None:
        async with device(target) as dev:
            await _program(dev)
            ipip = Ether(bytes.fromhex((await dev.send(POD, _pod_tcp("10.65.2.5")))["out_hex"]))
            assert (ipip.dst, ipip[IP].proto, ipip[IP].src, ipip[IP].dst) == (
                C_MAC,
                4,
                NODE_IP,
                C_IP,
            )
            assert ipip[IP].payload[IP].dst == "10.65.2.5" and _checksums_valid(ipip)
            plain = Ether(bytes.fromhex((await dev.send(POD, _pod_tcp("10.65.3.5")))["out_hex"]))
            assert (plain.dst, plain.src, plain[IP].dst, plain[IP].ttl) == (
                D_MAC,
                HOST_MAC,
                "10.65.3.5",
                63,
            )
            assert _checksums_valid(plain)
            hole = await dev.send(POD, _pod_tcp("10.65.0.9"))
            assert hole["verdict"] == "drop"

    run(main())


def _vxlan_from(src: str, dst: str = NODE_IP, inner_dst_mac: str = VTEP, vni: int = VNI) -> Ether:
    return (
        Ether(src=B_MAC, dst=HOST_MAC)
        / IP(src=src, dst=dst, ttl=64)
        / UDP(sport=50000, dport=4789, chksum=0)
        / VXLAN(vni=vni, flags=0x08)
        / Ether(src=B_VTEP, dst=inner_dst_mac)
        / IP(src="10.65.1.5", dst=POD_IP, ttl=63)
        / TCP(sport=80, dport=40001, flags="SA")
    )


def test_vxlan_from_a_known_node_reaches_the_pod_and_the_rest_does_not(target):
    async def main() -> None:
        async with device(target) as dev:
            await _program(dev)
            result = await dev.send(UPLINK, _vxlan_from(B_IP))
            assert (result["verdict"], result["egress_port"]) == ("forward", POD)
            got = Ether(bytes.fromhex(result["out_hex"]))
            assert (got.dst, got.src, got.type) == (POD_MAC, "ee:ee:ee:ee:ee:ee", 0x0800)
            assert (got[IP].src, got[IP].ttl) == ("10.65.1.5", 62)
            assert _checksums_valid(got)
            for bad in (
                _vxlan_from("192.168.1.99"),  # not a node's VTEP
                _vxlan_from(B_IP, vni=77),
                _vxlan_from(B_IP, inner_dst_mac="66:00:00:00:00:99"),
            ):
                assert (await dev.send(UPLINK, bad))["verdict"] == "drop"
            # VXLAN for another host on the network is the host's business: passed through.
            other = _vxlan_from(B_IP, dst="192.168.1.50")
            bridged = await dev.send(UPLINK, other)
            assert (bridged["verdict"], bridged["egress_port"]) == ("host", HOST)
            assert bytes.fromhex(bridged["out_hex"]) == bytes(other)
            ipip = (
                Ether(src=C_MAC, dst=HOST_MAC)
                / IP(src=C_IP, dst=NODE_IP, proto=4)
                / IP(src="10.65.2.5", dst=POD_IP, ttl=63)
                / ICMP()
            )
            assert (await dev.send(UPLINK, ipip))["egress_port"] == POD
            spoofed = ipip.copy()
            spoofed[IP].src = "192.168.1.98"
            assert (await dev.send(UPLINK, spoofed))["verdict"] == "drop"

    run(main())


def test_the_hosts_own_traffic_passes_between_host_port_and_uplink_unchanged(target):
    async def main() -> None:
        async with device(target) as dev:
            await _program(dev)
            out = Ether(src=HOST_MAC, dst=B_MAC) / IP(src=NODE_IP, dst="8.8.8.8") / ICMP()
            got = await dev.send(HOST, out)
            assert (got["verdict"], got["egress_port"]) == ("forward", UPLINK)
            assert bytes.fromhex(got["out_hex"]) == bytes(out)
            back = Ether(src=B_MAC, dst=HOST_MAC) / IP(src="8.8.8.8", dst=NODE_IP) / ICMP(type=0)
            got = await dev.send(UPLINK, back)
            assert (got["verdict"], got["egress_port"]) == ("host", HOST)
            assert bytes.fromhex(got["out_hex"]) == bytes(back)
            for port, peer in ((HOST, UPLINK), (UPLINK, HOST)):
                arp = Ether(src=HOST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=B_IP, psrc=NODE_IP)
                got = await dev.send(port, arp)
                assert got["egress_port"] == peer and bytes.fromhex(got["out_hex"]) == bytes(arp)
            # The host reaches another node's pods through the tunnel like a pod does.
            to_pod = (
                Ether(src=HOST_MAC, dst="ee:ee:ee:ee:ee:ee")
                / IP(src=NODE_IP, dst="10.65.1.5")
                / ICMP()
            )
            got = Ether(bytes.fromhex((await dev.send(HOST, to_pod))["out_hex"]))
            assert got[VXLAN].vni == VNI and got[VXLAN].payload[IP].src == NODE_IP

    run(main())
