"""Checksum seeds for the headers the pipeline builds when it encapsulates (pipeline/tunnel.p4).

The pipeline cannot sum constants it does not hold in header fields, so each tunnel route
carries the checksum of its outer header's constant words (`csum_seed`): the pipeline adds
what varies per packet. A seed is a checksum (the one's complement of the sum), as a header's
checksum field would hold it.
"""

from __future__ import annotations

import ipaddress
import struct

from felix_p4.pipeline import VXLAN_PORT

ETH_IPV6 = 0x86DD
IP_PROTO_UDP = 17
OUTER_TTL = 64  # outer IPv4 TTL and IPv6 hop limit the pipeline writes


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _words(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _seed(*parts: bytes) -> int:
    return ~_fold(sum(_words(p) for p in parts)) & 0xFFFF


def ipv4_header_seed(src: int, dst: int, protocol: int) -> int:
    """The outer IPv4 header's checksum with a zero total length: version and header length
    (0x45), no DSCP, identification or flags, TTL 64, `protocol`, the addresses."""
    return _seed(struct.pack("!BBHHHBBHII", 0x45, 0, 0, 0, 0, OUTER_TTL, protocol, 0, src, dst))


def vxlan6_udp_seed(src: int, dst: int, vni: int, inner_dst_mac: int, inner_src_mac: int) -> int:
    """The outer UDP checksum's constant words for VXLAN over IPv6: the pseudo header's
    addresses and next header, the destination port, the VXLAN header and the inner Ethernet
    header (an IPv6 packet). The pipeline adds the lengths, the source port and what the inner
    packet contributes."""
    return _seed(
        src.to_bytes(16, "big"),
        dst.to_bytes(16, "big"),
        struct.pack("!I", IP_PROTO_UDP),
        struct.pack("!H", VXLAN_PORT),
        struct.pack("!BBHI", 0x08, 0, 0, vni << 8),
        inner_dst_mac.to_bytes(6, "big"),
        inner_src_mac.to_bytes(6, "big"),
        struct.pack("!H", ETH_IPV6),
    )


def address(text: str) -> int:
    return int(ipaddress.ip_address(text))
