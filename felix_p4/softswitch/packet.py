"""Packets for the behavioural model: build from scenario keys, parse headers, describe output.

The codec is our own so the model does not depend on the parser under test; tests check it
against scapy.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD

PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132}
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
TCP_FLAGS = "FSRPAUEC"  # bit 0 = FIN ... bit 7 = CWR

DEFAULT_GATEWAY_MAC = "ee:ee:ee:ee:ee:ee"
DEFAULT_POD_MAC = "02:00:00:00:00:01"


class PacketError(ValueError):
    """A packet spec or byte string that cannot be built or parsed."""


def mac_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise PacketError(f"invalid MAC {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise PacketError(f"invalid MAC {text!r}") from None


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def proto_number(proto: Any) -> int:
    if isinstance(proto, int):
        return proto
    text = str(proto).lower()
    if text.isdigit():
        return int(text)
    if text not in PROTO_NUMBERS:
        raise PacketError(f"unknown protocol {proto!r}")
    return PROTO_NUMBERS[text]


def tcp_flag_bits(flags: str) -> int:
    bits = 0
    for ch in flags.upper():
        if ch not in TCP_FLAGS:
            raise PacketError(f"unknown TCP flag {ch!r}")
        bits |= 1 << TCP_FLAGS.index(ch)
    return bits


def _l4(spec: dict[str, Any], proto: int, version: int) -> bytes:
    sport = int(spec.get("sport", 40000))
    dport = int(spec.get("dport", 80))
    if proto == 6:
        flags = tcp_flag_bits(str(spec.get("tcp_flags", "S")))
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 64240, 0, 0)
    if proto in (17, 132):
        if proto == 17:
            return struct.pack("!HHHH", sport, dport, 8, 0)
        return struct.pack("!HHII", sport, dport, 0, 0)
    if proto in (1, 58):
        default_type = 8 if proto == 1 else 128
        icmp_type = int(spec.get("icmp_type", default_type))
        icmp_code = int(spec.get("icmp_code", 0))
        return struct.pack("!BBHHH", icmp_type, icmp_code, 0, 1, 1)
    return b""


def _with_l4_checksum(l4: bytes, proto: int, pseudo: bytes) -> bytes:
    offsets = {6: 16, 17: 6, 58: 2}
    if proto == 1:
        value = checksum(l4)
        return l4[:2] + struct.pack("!H", value) + l4[4:]
    if proto not in offsets:
        return l4
    value = checksum(pseudo + l4)
    if proto == 17 and value == 0:
        value = 0xFFFF
    at = offsets[proto]
    return l4[:at] + struct.pack("!H", value) + l4[at + 2 :]


def build(spec: dict[str, Any]) -> bytes:
    """Bytes of a packet described in scenario keys; unset keys get what a pod would send.
    `vxlan: {src, dst, vni, ...}` or `ipip: {src, dst}` wrap it as another node sends it."""
    if "vxlan" in spec or "ipip" in spec:
        inner = {k: v for k, v in spec.items() if k not in ("vxlan", "ipip")}
        return _encapsulated(spec, build(inner))
    return _plain(spec)


def _encapsulated(spec: dict[str, Any], inner: bytes) -> bytes:
    """The inner frame in VXLAN (UDP 4789, outer IPv4 or IPv6, UDP checksum zero over IPv4)
    or IP-in-IP (its IP packet after an outer IPv4 header)."""
    outer = dict(spec.get("vxlan") or spec.get("ipip") or {})
    try:
        src = ipaddress.ip_address(str(outer["src"]))
        dst = ipaddress.ip_address(str(outer["dst"]))
    except (KeyError, ValueError) as exc:
        raise PacketError(f"the outer header needs valid src and dst addresses: {exc}") from None
    src_mac = mac_bytes(str(outer.get("src_mac", "02:00:00:00:00:02")))
    dst_mac = mac_bytes(str(outer.get("dst_mac", "02:00:00:00:00:01")))
    if "ipip" in spec:
        if src.version != 4 or dst.version != 4 or inner[12:14] != struct.pack("!H", ETH_IPV4):
            raise PacketError("IP-in-IP carries IPv4 in IPv4")
        payload, proto = inner[14:], 4
    else:
        inner_dst = outer.get("inner_dst_mac")
        inner_src = outer.get("inner_src_mac")
        frame = (mac_bytes(str(inner_dst)) if inner_dst else inner[:6]) + (
            mac_bytes(str(inner_src)) if inner_src else inner[6:12]
        )
        vni = int(outer.get("vni", 4096))
        vxlan = struct.pack("!BBHI", 0x08, 0, 0, vni << 8)
        body = vxlan + frame + inner[12:]
        udp = struct.pack("!HHHH", int(outer.get("sport", 49152)), 4789, 8 + len(body), 0)
        payload, proto = udp + body, 17
        if src.version == 6:
            pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(payload), proto)
            value = checksum(pseudo + payload) or 0xFFFF
            payload = payload[:6] + struct.pack("!H", value) + payload[8:]
    if src.version == 4:
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, src.packed, dst.packed
        )
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return dst_mac + src_mac + struct.pack("!H", ETH_IPV4) + header + payload
    header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, 64, src.packed, dst.packed)
    return dst_mac + src_mac + struct.pack("!H", ETH_IPV6) + header + payload


def _plain(spec: dict[str, Any]) -> bytes:
    src_mac = mac_bytes(str(spec.get("src_mac", DEFAULT_POD_MAC)))
    dst_mac = mac_bytes(str(spec.get("dst_mac", DEFAULT_GATEWAY_MAC)))
    proto_text = str(spec.get("proto", "tcp")).lower()
    try:
        src = ipaddress.ip_address(str(spec["src"]))
        dst = ipaddress.ip_address(str(spec["dst"]))
    except (KeyError, ValueError) as exc:
        raise PacketError(f"packet needs valid src and dst addresses: {exc}") from None
    if proto_text == "arp":
        if src.version != 4 or dst.version != 4:
            raise PacketError("ARP needs IPv4 src and dst")
        dst_mac = mac_bytes(str(spec.get("dst_mac", "ff:ff:ff:ff:ff:ff")))
        arp = struct.pack(
            "!HHBBH6s4s6s4s", 1, ETH_IPV4, 6, 4, 1, src_mac, src.packed, b"\0" * 6, dst.packed
        )
        return dst_mac + src_mac + struct.pack("!H", ETH_ARP) + arp
    proto = proto_number(proto_text)
    ttl = int(spec.get("ttl", 64))
    l4 = _l4(spec, proto, src.version)
    if src.version != dst.version:
        raise PacketError("src and dst must be the same IP version")
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, proto, len(l4))
        l4 = _with_l4_checksum(l4, proto, pseudo)
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, ttl, proto, 0, src.packed, dst.packed
        )
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return dst_mac + src_mac + struct.pack("!H", ETH_IPV4) + header + l4
    pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(l4), proto)
    l4 = _with_l4_checksum(l4, proto, pseudo)
    header = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, ttl, src.packed, dst.packed)
    return dst_mac + src_mac + struct.pack("!H", ETH_IPV6) + header + l4


def describe(raw: bytes) -> dict[str, Any]:
    """The packet in scenario keys (MACs included), for results and traces."""
    if len(raw) < 14:
        return {"hex": raw.hex()}
    out: dict[str, Any] = {"dst_mac": mac_text(raw[0:6]), "src_mac": mac_text(raw[6:12])}
    (ether_type,) = struct.unpack("!H", raw[12:14])
    body = raw[14:]
    if ether_type == ETH_ARP and len(body) >= 28:
        oper, sha, spa, tha, tpa = struct.unpack("!6xH6s4s6s4s", body[:28])
        out.update(
            proto="arp",
            arp_op="request" if oper == 1 else "reply" if oper == 2 else oper,
            src=str(ipaddress.IPv4Address(spa)),
            dst=str(ipaddress.IPv4Address(tpa)),
            arp_sha=mac_text(sha),
            arp_tha=mac_text(tha),
        )
        return out
    encap = _outer(ether_type, body)
    if encap is not None:
        what, inner = encap
        described = describe(inner)
        return {
            **described,
            **what,
            "outer_dst_mac": out["dst_mac"],
            "outer_src_mac": out["src_mac"],
        }
    if ether_type == ETH_IPV4 and len(body) >= 20:
        ihl = (body[0] & 0x0F) * 4
        proto = body[9]
        out.update(
            src=str(ipaddress.IPv4Address(body[12:16])),
            dst=str(ipaddress.IPv4Address(body[16:20])),
            ttl=body[8],
        )
        l4 = body[ihl:]
    elif ether_type == ETH_IPV6 and len(body) >= 40:
        proto = body[6]
        out.update(
            src=str(ipaddress.IPv6Address(body[8:24])),
            dst=str(ipaddress.IPv6Address(body[24:40])),
            ttl=body[7],
        )
        l4 = body[40:]
    else:
        out["ether_type"] = ether_type
        return out
    out["proto"] = PROTO_NAMES.get(proto, proto)
    if proto in (6, 17, 132) and len(l4) >= 4:
        out["sport"], out["dport"] = struct.unpack("!HH", l4[:4])
        if proto == 6 and len(l4) >= 14:
            flags = l4[13]
            out["tcp_flags"] = "".join(c for i, c in enumerate(TCP_FLAGS) if flags & (1 << i))
    elif proto in (1, 58) and len(l4) >= 2:
        out["icmp_type"], out["icmp_code"] = l4[0], l4[1]
    return out


def _outer(ether_type: int, body: bytes) -> tuple[dict[str, Any], bytes] | None:
    """An encapsulation's outer fields and the inner frame (IP-in-IP: with the outer Ethernet
    header), or None for a plain packet."""
    if ether_type == ETH_IPV4 and len(body) >= 20 and body[0] == 0x45:
        src, dst = str(ipaddress.IPv4Address(body[12:16])), str(ipaddress.IPv4Address(body[16:20]))
        proto, rest = body[9], body[20:]
    elif ether_type == ETH_IPV6 and len(body) >= 40:
        src, dst = str(ipaddress.IPv6Address(body[8:24])), str(ipaddress.IPv6Address(body[24:40]))
        proto, rest = body[6], body[40:]
    else:
        return None
    if proto == 4 and len(rest) >= 20:
        frame = b"\0" * 12 + struct.pack("!H", ETH_IPV4) + rest
        return {"encap": "ipip", "outer_src": src, "outer_dst": dst}, frame
    if proto == 17 and len(rest) >= 30 and struct.unpack("!H", rest[2:4])[0] == 4789:
        vni = int.from_bytes(rest[12:15], "big")
        return {"encap": "vxlan", "outer_src": src, "outer_dst": dst, "vni": vni}, rest[16:]
    return None
