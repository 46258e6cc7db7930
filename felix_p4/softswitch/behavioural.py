"""Behavioural model of pipeline/felix_pna.p4: the same parser, tables, actions and arithmetic.

It reads table entries through the TableStore by the names the pipeline declaration gives, so
what the driver programs is what decides a packet here. Each step mirrors a control of
pipeline/*.p4 (FelixPort, FelixSummary, FelixServices, the wrapper's translation and
conntrack, FelixRouting, FelixPolicy, FelixRewrite), in the same order; checksum updates
follow P4-DPDK's InternetChecksum instructions bit for bit. The P4-DPDK engine runs the
program itself; differential tests hold the two to each other.
"""

from __future__ import annotations

import ipaddress
import json
import struct
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from finsy.proto import rpc_code

from felix_p4 import pipeline as P
from felix_p4.softswitch.ingress import PORT_MTU, ingress_drop_reason
from felix_p4.softswitch.packet import ETH_ARP, ETH_IPV4, ETH_IPV6
from felix_p4.softswitch.store import Lookup, P4RuntimeError, TableStore

IP_PROTO_ICMP, IP_PROTO_IPIP, IP_PROTO_TCP, IP_PROTO_UDP, IP_PROTO_ICMPV6 = 1, 4, 6, 17, 58
IP_PROTO_SCTP, IP_PROTO_UDPLITE = 132, 136
ND_SOLICIT, ND_ADVERT = 135, 136
ND_ADVERT_FLAGS = 0xE0000000
# L4 header sizes the parser extracts (when the IP length says they are there).
L4_SIZE = {
    IP_PROTO_TCP: 20,
    IP_PROTO_UDP: 8,
    IP_PROTO_UDPLITE: 8,
    IP_PROTO_SCTP: 12,
    IP_PROTO_ICMP: 4,
    IP_PROTO_ICMPV6: 4,
}

# Per direction, the names of the policy stages in order.
STAGES = {d: [t.name for t in tables] for d, tables in P.STAGES.items()}


@attrs.define
class Result:
    verdict: str  # "forward" | "drop" | "host"
    egress_port: int | None
    reason: str
    packet: bytes
    trace: list[dict[str, Any]]

    def to_json(self, describe: Any) -> dict[str, Any]:
        out = {
            "verdict": self.verdict,
            "egress_port": self.egress_port,
            "reason": self.reason,
            "packet": describe(self.packet) if self.verdict != "drop" else None,
            "trace": self.trace,
        }
        if self.verdict != "drop":
            out["out_hex"] = self.packet.hex()  # the frame's bytes, as the DPDK engine gives them
        return out


@attrs.define
class _Headers:
    eth: bytearray
    # Encapsulation (parsed on the way in, built on the way out): the inner packet is in the
    # headers below them, as the P4 parser puts it.
    outer_ipv4: bytearray | None = None
    outer_ipv6: bytearray | None = None
    outer_udp: bytearray | None = None
    vxlan: bytearray | None = None
    inner_eth: bytearray | None = None
    arp: bytearray | None = None
    ipv4: bytearray | None = None
    ipv6: bytearray | None = None
    tcp: bytearray | None = None
    udp: bytearray | None = None
    sctp: bytearray | None = None
    icmp: bytearray | None = None
    nd: bytearray | None = None
    nd_option: bytearray | None = None
    payload: bytes = b""

    def emit(self) -> bytes:
        parts = (
            self.eth,
            self.outer_ipv4,
            self.outer_ipv6,
            self.outer_udp,
            self.vxlan,
            self.inner_eth,
            self.arp,
            self.ipv4,
            self.ipv6,
            self.tcp,
            self.udp,
            self.sctp,
            self.icmp,
            self.nd,
            self.nd_option,
        )
        return b"".join(bytes(p) for p in parts if p is not None) + self.payload

    @property
    def l4(self) -> bytearray | None:
        return self.tcp or self.udp or self.sctp


class ParserError(Exception):
    pass


def _probe(raw: bytes, ether_type: int) -> str:
    """parser.p4's lookahead: "vxlan4", "ipip", "vxlan6" or "" (a plain packet)."""
    if ether_type == ETH_IPV4 and len(raw) >= 14 + 24:
        ihl = raw[14] & 0x0F
        frag_offset = struct.unpack_from("!H", raw, 20)[0] & 0x1FFF
        proto = raw[23]
        (dport,) = struct.unpack_from("!H", raw, 36)
        if ihl == 5 and frag_offset == 0:
            if proto == IP_PROTO_UDP and dport == P.VXLAN_PORT:
                return "vxlan4"
            if proto == IP_PROTO_IPIP:
                return "ipip"
    if ether_type == ETH_IPV6 and len(raw) >= 14 + 44:
        (dport,) = struct.unpack_from("!H", raw, 56)
        if raw[20] == IP_PROTO_UDP and dport == P.VXLAN_PORT:
            return "vxlan6"
    return ""


def parse(raw: bytes) -> _Headers:
    """pipeline/parser.p4: Ethernet; the outer headers of VXLAN or IP-in-IP and then the
    inner packet; ARP, IPv4 (fixed header) or IPv6; then the L4 header of unfragmented
    packets without IPv4 options whose IP length covers it; a neighbour solicitation's target
    and option."""
    if len(raw) < 14:
        raise ParserError("packet shorter than an Ethernet header")
    hdr = _Headers(bytearray(raw[:14]))
    (ether_type,) = struct.unpack_from("!H", raw, 12)
    at = 14

    def take(size: int, what: str) -> bytearray:
        nonlocal at
        if len(raw) < at + size:
            raise ParserError(f"truncated {what} header")
        chunk = bytearray(raw[at : at + size])
        at += size
        return chunk

    probe = _probe(raw, ether_type)
    if probe in ("vxlan4", "ipip"):
        hdr.outer_ipv4 = take(20, "outer IPv4")
        (total,) = struct.unpack_from("!H", hdr.outer_ipv4, 2)
        if probe == "ipip":
            ether_type = ETH_IPV4 if total >= 32 else 0
        elif total < 64:
            ether_type = 0
    elif probe == "vxlan6":
        hdr.outer_ipv6 = take(40, "outer IPv6")
        (payload,) = struct.unpack_from("!H", hdr.outer_ipv6, 4)
        if payload < 32:
            ether_type = 0
    if probe in ("vxlan4", "vxlan6") and ether_type:
        hdr.outer_udp = take(8, "outer UDP")
        hdr.vxlan = take(8, "VXLAN")
        hdr.inner_eth = take(14, "inner Ethernet")
        (ether_type,) = struct.unpack_from("!H", hdr.inner_eth, 12)
        if ether_type not in (ETH_IPV4, ETH_IPV6):
            ether_type = 0

    l4_proto = None
    if ether_type == ETH_ARP:
        hdr.arp = take(28, "ARP")
    elif ether_type == ETH_IPV4:
        hdr.ipv4 = take(20, "IPv4")
        ihl = hdr.ipv4[0] & 0x0F
        frag_offset = struct.unpack_from("!H", hdr.ipv4, 6)[0] & 0x1FFF
        (total,) = struct.unpack_from("!H", hdr.ipv4, 2)
        proto = hdr.ipv4[9]
        first_fragment = ihl == 5 and frag_offset == 0
        if first_fragment and proto in L4_SIZE and proto != IP_PROTO_ICMPV6:
            l4_proto = proto if total >= 20 + L4_SIZE[proto] else None
    elif ether_type == ETH_IPV6:
        hdr.ipv6 = take(40, "IPv6")
        proto = hdr.ipv6[6]
        (payload,) = struct.unpack_from("!H", hdr.ipv6, 4)
        if proto in L4_SIZE and proto != IP_PROTO_ICMP and payload >= L4_SIZE[proto]:
            l4_proto = proto
    if l4_proto == IP_PROTO_TCP:
        hdr.tcp = take(20, "TCP")
    elif l4_proto in (IP_PROTO_UDP, IP_PROTO_UDPLITE):
        hdr.udp = take(8, "UDP")
    elif l4_proto == IP_PROTO_SCTP:
        hdr.sctp = take(12, "SCTP")
    elif l4_proto in (IP_PROTO_ICMP, IP_PROTO_ICMPV6):
        hdr.icmp = take(4, "ICMP")
        if l4_proto == IP_PROTO_ICMPV6 and hdr.ipv6 is not None:
            (payload,) = struct.unpack_from("!H", hdr.ipv6, 4)
            if hdr.icmp[0] == ND_SOLICIT and hdr.icmp[1] == 0 and payload in (24, 32):
                hdr.nd = take(20, "neighbour solicitation")
                if payload == 32:
                    hdr.nd_option = take(8, "neighbour discovery option")
    hdr.payload = raw[at:]
    return hdr


# --- InternetChecksum as P4-DPDK computes it (ckadd/cksub) ----------------------------------


def _words(data: bytes | bytearray) -> int:
    """A field's contribution: its bytes as big-endian 16-bit words (an odd byte count is
    padded with a zero byte, as SWX reads a field starting at an even offset)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


class Checksum:
    """The extern's state is the checksum itself (0 after clear); every add or subtract
    leaves a checksum, never zero (P4-DPDK writes 0xffff for a zero result)."""

    def __init__(self) -> None:
        self.state = 0

    def _apply(self, data: bytes | bytearray, sign: int) -> None:
        total = ((~self.state & 0xFFFF) + sign * _words(data)) % 0xFFFF
        self.state = 0xFFFF if total == 0 else ~total & 0xFFFF

    def add(self, data: bytes | bytearray) -> None:
        self._apply(data, 1)

    def subtract(self, data: bytes | bytearray) -> None:
        self._apply(data, -1)

    def get(self) -> int:
        return self.state


def _get16(buf: bytearray, at: int) -> int:
    return int(struct.unpack_from("!H", buf, at)[0])


def _put16(buf: bytearray, at: int, value: int) -> None:
    struct.pack_into("!H", buf, at, value)


def _decrement_ttl_v4(ip: bytearray) -> None:
    """forwarding.p4's decrement_ttl_v4."""
    ck = Checksum()
    ck.subtract(ip[10:12])
    ck.subtract(ip[8:9])
    ip[8] -= 1
    ck.add(ip[8:9])
    _put16(ip, 10, ck.get())


def rewrite(
    hdr: _Headers,
    new_src: tuple[int, int] | None = None,
    new_dst: tuple[int, int] | None = None,
) -> None:
    """nat.p4's FelixRewrite: the source and/or destination (address, port), with the IPv4,
    TCP and UDP checksums updated incrementally."""
    l3 = Checksum()
    l4 = Checksum()
    if hdr.tcp is not None:
        l4.subtract(hdr.tcp[16:18])
    elif hdr.udp is not None:
        l4.subtract(hdr.udp[6:8])
    if hdr.ipv4 is not None:
        ip = hdr.ipv4
        l3.subtract(ip[10:12])
        for change, at in ((new_src, 12), (new_dst, 16)):
            if change is None:
                continue
            l3.subtract(ip[at : at + 4])
            l4.subtract(ip[at : at + 4])
            ip[at : at + 4] = (change[0] & 0xFFFFFFFF).to_bytes(4, "big")
            l3.add(ip[at : at + 4])
            l4.add(ip[at : at + 4])
        _put16(ip, 10, l3.get())
    else:
        assert hdr.ipv6 is not None
        ip = hdr.ipv6
        for change, at in ((new_src, 8), (new_dst, 24)):
            if change is None:
                continue
            l4.subtract(ip[at : at + 8])
            l4.subtract(ip[at + 8 : at + 16])
            ip[at : at + 16] = change[0].to_bytes(16, "big")
            l4.add(ip[at : at + 8])
            l4.add(ip[at + 8 : at + 16])
    l4_header = hdr.tcp if hdr.tcp is not None else hdr.udp
    if l4_header is not None:
        for change, at in ((new_src, 0), (new_dst, 2)):
            if change is None:
                continue
            l4.subtract(l4_header[at : at + 2])
            _put16(l4_header, at, change[1])
            l4.add(l4_header[at : at + 2])
        if hdr.tcp is not None:
            _put16(hdr.tcp, 16, l4.get())
        elif _get16(l4_header, 6) != 0 or hdr.ipv6 is not None:
            _put16(l4_header, 6, l4.get() or 0xFFFF)
    elif hdr.sctp is not None:
        for change, at in ((new_src, 0), (new_dst, 2)):
            if change is not None:
                _put16(hdr.sctp, at, change[1])


def _arp_reply(hdr: _Headers, gateway_mac: int) -> None:
    assert hdr.arp is not None
    gw = gateway_mac.to_bytes(6, "big")
    arp = hdr.arp
    sha, spa, tpa = bytes(arp[8:14]), bytes(arp[14:18]), bytes(arp[24:28])
    hdr.eth[0:6] = hdr.eth[6:12]
    hdr.eth[6:12] = gw
    arp[6:8] = b"\x00\x02"
    arp[18:24] = sha
    arp[8:14] = gw
    arp[24:28] = spa
    arp[14:18] = tpa


def _nd_advert(hdr: _Headers, gateway_mac: int) -> None:
    """forwarding.p4's nd_advert (and nd_option_target): the solicitation turned into the
    gateway's advertisement, from the target address, back to the asker."""
    assert hdr.ipv6 is not None and hdr.icmp is not None and hdr.nd is not None
    ip, icmp, nd = hdr.ipv6, hdr.icmp, hdr.nd
    ck = Checksum()
    ck.subtract(icmp[2:4])
    for at in (8, 16, 24, 32):
        ck.subtract(ip[at : at + 8])
    ck.subtract(icmp[0:1])
    ck.subtract(nd[0:4])
    ip[24:40] = ip[8:24]
    ip[8:24] = nd[4:20]
    ip[7] = 255
    icmp[0] = ND_ADVERT
    nd[0:4] = ND_ADVERT_FLAGS.to_bytes(4, "big")
    for at in (8, 16, 24, 32):
        ck.add(ip[at : at + 8])
    ck.add(icmp[0:1])
    ck.add(nd[0:4])
    hdr.eth[0:6] = hdr.eth[6:12]
    hdr.eth[6:12] = gateway_mac.to_bytes(6, "big")
    _put16(icmp, 2, ck.get())
    option = hdr.nd_option
    if option is not None:
        ck = Checksum()
        ck.subtract(icmp[2:4])
        ck.subtract(option[0:1])
        ck.subtract(option[2:8])
        option[0] = 2
        option[2:8] = gateway_mac.to_bytes(6, "big")
        ck.add(option[0:1])
        ck.add(option[2:8])
        _put16(icmp, 2, ck.get())


def bucket_hash(src: int, src_port: int) -> int:
    """The model's stand-in for the target's flow hash (the client's address and port):
    which bucket a flow gets is the target's choice; differential tests compare membership."""
    return zlib.crc32(src.to_bytes(16, "big") + src_port.to_bytes(2, "big")) & 0xFFFF


@attrs.define
class _Flow:
    """The flow scratch header: as received, then translated."""

    version: int = 0
    proto: int = 0
    src: int = 0
    src_port: int = 0
    dst: int = 0
    dst_port: int = 0
    icmp_type: int = 0
    icmp_code: int = 0


@attrs.define
class _Services:
    is_service: bool = False
    reply: bool = False
    hairpin: bool = False
    hairpin_addr: int = 0
    backend: tuple[int, int] = (0, 0)  # nat.dst as services left it
    service: tuple[int, int] = (0, 0)  # nat.src of a reply


class FelixPipeline:
    """Processes one packet at a time against the entries in `tables`.

    Learned entries (conntrack, service pins, affinity, reverse NAT) live in the store like
    any entry; their expiry deadlines live here, so one pipeline object must serve every
    packet of a target. A hit restarts an entry's expiry, as the program's rearm does.
    """

    def __init__(
        self,
        tables: TableStore,
        clock: Callable[[], float] = time.monotonic,
        profile_seconds: Mapping[int, float] | None = None,
        mtu: int = PORT_MTU,
    ) -> None:
        self.tables = tables
        self.clock = clock
        self.mtu = mtu  # the ports' (felix_p4.softswitch.ingress)
        self.profile_seconds = {
            **P.PROFILE_SECONDS,
            P.PROFILE_AFFINITY: P.DEFAULT_AFFINITY_SECONDS,
            **(profile_seconds or {}),
        }
        # (table, key values) -> (expiry time, timeout, key): the key to delete it by.
        self._deadline: dict[
            tuple[str, tuple[int, ...]], tuple[float, float, Mapping[str, int]]
        ] = {}
        self.learn_failures = 0  # learns refused by a full table

    def _apply(self, trace: list[dict[str, Any]], table: str, key: dict[str, int]) -> Lookup:
        result = self.tables.lookup(table, key)
        step: dict[str, Any] = {
            "table": table,
            "hit": result.hit,
            "action": result.action,
            "params": dict(result.params),
            "match": {k: str(v) for k, v in result.match.items()},
        }
        if result.metadata:
            step["rule"] = _rule_origin(result.metadata)
        trace.append(step)
        return result

    def _learned(
        self, trace: list[dict[str, Any]], table: str, key: dict[str, int], commit: bool
    ) -> Lookup:
        """Lookup in a learned table: an entry idle past its timeout is gone first; a hit
        restarts its timeout unless this is a trace that must leave no mark (commit False)."""
        ident = (table, tuple(key.values()))
        deadline = self._deadline.get(ident)
        if deadline is not None and self.clock() >= deadline[0]:
            self.tables.dataplane_delete(table, key)
            del self._deadline[ident]
        result = self._apply(trace, table, key)
        if commit and result.hit and ident in self._deadline:
            _, seconds, _ = self._deadline[ident]
            self._deadline[ident] = (self.clock() + seconds, seconds, key)
        return result

    def _learn(
        self,
        trace: list[dict[str, Any]],
        table: str,
        key: dict[str, int],
        action: str,
        params: dict[str, int],
        profile: int,
    ) -> None:
        try:
            self.tables.dataplane_insert(table, key, action, params)
        except P4RuntimeError as exc:
            if exc.code != rpc_code.RESOURCE_EXHAUSTED:
                raise
            # Full: expired entries make room (SWX reuses their slots); if none has expired,
            # the packet goes on without learning, as a full SWX learner does.
            if not self._sweep(table):
                trace[-1]["learned"] = False
                self.learn_failures += 1
                return
            self.tables.dataplane_insert(table, key, action, params)
        seconds = float(self.profile_seconds[profile])
        self._deadline[(table, tuple(key.values()))] = (self.clock() + seconds, seconds, key)
        trace[-1]["learned"] = True

    def _sweep(self, table: str) -> int:
        """Remove `table`'s expired entries; how many went."""
        now = self.clock()
        expired = [i for i, (at, _, _) in self._deadline.items() if i[0] == table and now >= at]
        for ident in expired:
            self.tables.dataplane_delete(table, self._deadline.pop(ident)[2])
        return len(expired)

    def process(self, in_port: int, raw: bytes, commit: bool = True) -> Result:
        trace: list[dict[str, Any]] = []
        refused = ingress_drop_reason(raw, self.mtu)
        if refused is not None:
            return Result("drop", None, refused, raw, trace)
        try:
            hdr = parse(raw)
        except ParserError as exc:
            return Result("drop", None, f"parser: {exc}", raw, trace)

        # FelixPort
        classify = self._apply(trace, P.PORT_CLASSIFY.name, {"port": in_port})
        kind = _PORT_KINDS.get(classify.action)
        if kind is None:
            return Result("drop", None, f"port {in_port} is not a known port", raw, trace)
        workload = kind == "workload"
        gateway_mac = classify.params.get("gateway_mac", 0)
        own_port = classify.params.get("port")
        egress_program = classify.params.get("egress_program", 0)
        if hdr.arp is not None:
            htype, ptype, _, _, oper = struct.unpack_from("!HHBBH", hdr.arp)
            if workload and htype == 1 and ptype == ETH_IPV4 and oper == 1:
                sender, target = hdr.arp[14:18], hdr.arp[24:28]
                if not any(sender) or sender == target:
                    return Result(
                        "drop",
                        None,
                        "ARP probe or announcement for the asker's own address is not answered",
                        raw,
                        trace,
                    )
                _arp_reply(hdr, gateway_mac)
                return Result(
                    "forward", own_port, "ARP request answered for the gateway", hdr.emit(), trace
                )
            if kind in ("host", "uplink"):
                self._node(trace)
                return self._bridge(in_port, kind, "ARP", raw, trace)
            return Result("drop", None, "ARP that is not a workload's request", raw, trace)
        if (
            hdr.ipv4 is None
            and hdr.ipv6 is None
            and hdr.outer_ipv4 is None
            and hdr.outer_ipv6 is None
        ):
            if kind in ("host", "uplink"):
                self._node(trace)
                return self._bridge(in_port, kind, "neither ARP nor IP", raw, trace)
            return Result("drop", None, "neither ARP nor IP", raw, trace)
        if workload and hdr.nd is not None:
            assert hdr.ipv6 is not None
            if not any(hdr.ipv6[8:24]):
                return Result(
                    "drop", None, "duplicate address detection is not answered", raw, trace
                )
            if hdr.nd_option is not None and hdr.nd_option[0] != 1:
                return Result(
                    "drop",
                    None,
                    "neighbour solicitation option is not a source link-layer address",
                    raw,
                    trace,
                )
            _nd_advert(hdr, gateway_mac)
            return Result("forward", own_port, "neighbour solicitation answered", hdr.emit(), trace)
        if workload and (hdr.ipv4 is not None or hdr.ipv6 is not None):
            version = 4 if hdr.ipv4 is not None else 6
            src = hdr.ipv4[12:16] if hdr.ipv4 is not None else hdr.ipv6[8:24]  # type: ignore[index]
            check = self._apply(
                trace,
                P.SOURCE_CHECK[version].name,
                {"port": in_port, **_addr_key("src", int.from_bytes(src, "big"), version)},
            )
            if check.action != P.ALLOW_SOURCE.name:
                return Result(
                    "drop", None, "source address not allowed on this port (spoofed)", raw, trace
                )

        # FelixTunnelIn
        node = self._node(trace)
        if hdr.outer_ipv4 is not None or hdr.outer_ipv6 is not None:
            outcome = self._tunnel_in(hdr, kind, node, trace)
            if outcome == "bridge":
                return self._bridge(in_port, kind, "encapsulated for another host", raw, trace)
            if outcome:
                return Result("drop", None, outcome, raw, trace)
            kind = "tunnel"
        version = 4 if hdr.ipv4 is not None else 6

        # FelixSummary and FelixServices
        flow = _summarize(hdr)
        profile = {IP_PROTO_TCP: P.PROFILE_TCP, IP_PROTO_UDP: P.PROFILE_UDP}.get(
            flow.proto, P.PROFILE_OTHER
        )
        service = self._services(flow, profile, trace, commit)
        if isinstance(service, str):
            return Result("drop", None, service, raw, trace)

        # The wrapper: translation, conntrack's view, what the stages see
        new_src: tuple[int, int] | None = None
        new_dst: tuple[int, int] | None = None
        if service.is_service:
            new_dst = service.backend
            if service.hairpin:
                new_src = (service.hairpin_addr, flow.src_port)
        elif service.reply:
            new_src = service.service
            if service.hairpin:
                new_dst = (flow.src, flow.dst_port)
        if new_dst is not None:
            flow.dst, flow.dst_port = new_dst
        a, b = sorted(((flow.src, flow.src_port), (flow.dst, flow.dst_port)))
        ct_key = {
            "ip_version": version,
            "proto": flow.proto,
            **_halves("a", a[0]),
            "a_port": a[1],
            **_halves("b", b[0]),
            "b_port": b[1],
        }
        if service.reply:
            flow.src, flow.src_port = service.service

        # FelixRouting
        ip = hdr.ipv4 if hdr.ipv4 is not None else hdr.ipv6
        assert ip is not None
        route = self._apply(trace, P.ROUTES[version].name, _addr_key("dst", flow.dst, version))
        route_kind = _ROUTE_KINDS.get(route.action, "none")
        translated = service.is_service or service.reply
        routed = route_kind == "workload" or (
            route_kind in ("vxlan", "ipip", "node") and (kind != "uplink" or translated)
        )
        expired = False
        if routed:
            ttl_at = 8 if version == 4 else 7
            if ip[ttl_at] <= 1:
                expired = True
            elif version == 4:
                _decrement_ttl_v4(ip)
            else:
                ip[7] -= 1
        # What a route means depends on where the packet came from (the wrapper).
        if kind == "uplink" and not translated and route_kind not in ("workload", "blackhole"):
            return self._bridge(in_port, kind, "not for this node's pods", raw, trace)
        if kind == "host" and not translated and route_kind in ("host", "none"):
            return self._bridge(in_port, kind, "the host's own traffic", raw, trace)
        if route_kind == "blackhole":
            return Result("drop", None, "an unused address of this node's blocks", raw, trace)
        if route_kind == "none":
            return Result("drop", None, f"no route in {P.ROUTES[version].name}", raw, trace)
        if expired:
            return Result("drop", None, "TTL / hop limit expired", raw, trace)
        if kind == "tunnel" and route_kind not in ("workload", "host"):
            return Result("drop", None, "tunnelled traffic is not routed on", raw, trace)
        ingress_program = 0
        egress_port: int | None
        if route_kind == "workload":
            hdr.eth[0:6] = route.params["dmac"].to_bytes(6, "big")
            hdr.eth[6:12] = route.params["smac"].to_bytes(6, "big")
            ingress_program = route.params.get("ingress_program", 0)
            verdict, egress_port, reason = (
                "forward",
                route.params["port"],
                "routed to local workload",
            )
        elif route_kind == "host":
            if node.node_mac:
                hdr.eth[0:6] = node.node_mac.to_bytes(6, "big")
            verdict, reason = "host", "handed to the host"
            egress_port = route.params["port"]
        else:
            verdict, egress_port = "forward", None
            reason = _TUNNEL_REASON[route_kind].format(_addr_text(_hop(route.params), version))
        if service.is_service:
            reason += (
                f" (service backend {_addr_text(service.backend[0], version)}:{service.backend[1]})"
            )

        # FelixPolicy and conntrack
        denial = self._policy(flow, egress_program, ingress_program, ct_key, profile, trace, commit)
        if denial:
            return Result("drop", None, denial, raw, trace)

        # FelixRewrite runs for every IP packet that is not dropped, translated or not: the
        # checksums pass through InternetChecksum either way, so 0x0000 leaves as 0xffff.
        rewrite(hdr, new_src, new_dst)

        # FelixTunnelOut
        if route_kind in ("vxlan", "ipip", "node"):
            hop = self._apply(
                trace,
                P.NEXT_HOPS.name,
                {"ip_version": version, **_halves("addr", _hop(route.params))},
            )
            if hop.action != P.SET_NEXT_HOP.name:
                return Result("drop", None, "no next hop towards that node", raw, trace)
            hdr.eth[0:6] = hop.params["dmac"].to_bytes(6, "big")
            hdr.eth[6:12] = node.node_mac.to_bytes(6, "big")
            egress_port = hop.params["port"]
            if route_kind == "ipip":
                _encapsulate_ipip(hdr, node, route.params)
            elif route_kind == "vxlan":
                _encapsulate_vxlan(hdr, node, route.params, flow, version)
        return Result(verdict, egress_port, reason, hdr.emit(), trace)

    def _node(self, trace: list[dict[str, Any]]) -> _Node:
        """The node table's one (default) entry."""
        params = self._apply(trace, P.NODE.name, {}).params
        return _Node(**{name: params.get(name, 0) for name in _NODE_FIELDS})

    def _bridge(
        self, in_port: int, kind: str, what: str, raw: bytes, trace: list[dict[str, Any]]
    ) -> Result:
        """FelixTunnelOut's bridge: the host's own traffic passes unchanged between the host
        port and the uplink."""
        peer = self._apply(trace, P.PEER_PORTS.name, {"port": in_port})
        if peer.action != P.BRIDGE_TO.name:
            return Result("drop", None, f"{what}: no port to bridge to", raw, trace)
        port = peer.params["port"]
        if kind == "uplink":
            return Result("host", port, f"{what}: bridged to the host", raw, trace)
        return Result("forward", port, f"{what}: bridged to the network", raw, trace)

    def _tunnel_in(self, hdr: _Headers, kind: str, node: _Node, trace: list[dict[str, Any]]) -> str:
        """FelixTunnelIn on a parsed encapsulation: "" (decapsulated), "bridge" (for another
        host), or why it is dropped."""
        drop = ""
        if kind != "uplink":
            drop = "UDP to the VXLAN port or IP-in-IP from a pod or the host"
        inner = _inner_len(hdr)
        if inner is not None:
            if hdr.vxlan is not None:
                if hdr.outer_ipv4 is not None:
                    good = _get16(hdr.outer_ipv4, 2) == (inner + 50) & 0xFFFF
                else:
                    assert hdr.outer_ipv6 is not None
                    good = _get16(hdr.outer_ipv6, 4) == (inner + 30) & 0xFFFF
            else:
                assert hdr.outer_ipv4 is not None
                good = _get16(hdr.outer_ipv4, 2) == (inner + 20) & 0xFFFF
            if not good:
                drop = drop or "encapsulated packet whose lengths do not add up"
        if hdr.outer_ipv4 is not None:
            source = int.from_bytes(hdr.outer_ipv4[12:16], "big")
            for_us = node.ip4 != 0 and int.from_bytes(hdr.outer_ipv4[16:20], "big") == node.ip4
            version = 4
        else:
            assert hdr.outer_ipv6 is not None
            source = int.from_bytes(hdr.outer_ipv6[8:24], "big")
            ours = (node.ip6_hi << 64) | node.ip6_lo
            for_us = ours != 0 and int.from_bytes(hdr.outer_ipv6[24:40], "big") == ours
            version = 6
        if drop:
            return drop
        if not for_us:
            return "bridge"
        if inner is None:
            return "encapsulated packet cut short before the inner IP header"
        tunnel = P.TUNNEL_VXLAN if hdr.vxlan is not None else P.TUNNEL_IPIP
        allowed = self._apply(
            trace,
            P.TUNNEL_SOURCES.name,
            {"kind": tunnel, "ip_version": version, **_halves("src", source)},
        )
        if allowed.action != P.ALLOW_TUNNEL.name:
            return f"tunnel from {_addr_text(source, version)}, not a known node"
        if hdr.vxlan is not None:
            assert hdr.inner_eth is not None
            vtep_mac = node.vtep_mac if hdr.outer_ipv4 is not None else node.vtep_mac6
            if hdr.vxlan[0] != 0x08:
                return "VXLAN header without the VNI flag"
            if int.from_bytes(hdr.vxlan[4:7], "big") != node.vni:
                return "VXLAN with another VNI"
            if int.from_bytes(hdr.inner_eth[0:6], "big") != vtep_mac:
                return "VXLAN frame for another MAC than this node's VTEP"
            hdr.eth[12:14] = hdr.inner_eth[12:14]
        hdr.outer_ipv4 = hdr.outer_ipv6 = hdr.outer_udp = hdr.vxlan = hdr.inner_eth = None
        return ""

    def _services(
        self, flow: _Flow, profile: int, trace: list[dict[str, Any]], commit: bool
    ) -> _Services | str:
        """services.p4; a string is why the packet is dropped."""
        state = _Services()
        front = self._apply(
            trace,
            P.SERVICES.name,
            {
                "ip_version": flow.version,
                **_halves("addr", flow.dst),
                "proto": flow.proto,
                "port": flow.dst_port,
            },
        )
        if front.action == P.SERVICE_REJECT.name:
            return f"service has no endpoints ({trace[-1].get('rule', 'no ready endpoints')})"
        received = _flow_key(flow, (flow.src, flow.src_port), (flow.dst, flow.dst_port))
        if front.action == P.TO_SERVICE.name:
            state.is_service = True
            params = front.params
            bucket = bucket_hash(flow.src, flow.src_port) & params["bucket_mask"]
            chosen = self._apply(
                trace,
                P.SERVICE_BACKENDS.name,
                {"group": params["group"], "bucket": bucket},
            )
            if chosen.action != P.SET_BACKEND.name:
                return "service bucket has no backend"
            state.backend = (_joined(chosen.params, "addr"), chosen.params["port"])
            if params["affinity_seconds"]:
                key = {
                    "ip_version": flow.version,
                    **_halves("client", flow.src),
                    "service": params["service_id"],
                }
                affinity = self._learned(trace, P.SERVICE_AFFINITY.name, key, commit)
                if affinity.hit:
                    state.backend = (_joined(affinity.params, "addr"), affinity.params["port"])
                elif commit:
                    self._learn(
                        trace,
                        P.SERVICE_AFFINITY.name,
                        key,
                        P.AFFINE.name,
                        _backend_params(state.backend),
                        P.PROFILE_AFFINITY,
                    )
            pin = self._learned(trace, P.SERVICE_FLOWS.name, received, commit)
            if pin.hit:
                state.backend = (_joined(pin.params, "addr"), pin.params["port"])
            elif commit:
                self._learn(
                    trace,
                    P.SERVICE_FLOWS.name,
                    received,
                    P.PINNED.name,
                    _backend_params(state.backend),
                    profile,
                )
            state.hairpin_addr = _joined(params, "hairpin")
            state.hairpin = state.backend[0] == flow.src
            reply_to = state.hairpin_addr if state.hairpin else flow.src
            reverse_key = _flow_key(flow, state.backend, (reply_to, flow.src_port))
            reverse = self._learned(trace, P.SERVICE_REPLIES.name, reverse_key, commit)
            if not reverse.hit and commit:
                self._learn(
                    trace,
                    P.SERVICE_REPLIES.name,
                    reverse_key,
                    P.UN_NAT.name,
                    {
                        **_halves("service", flow.dst),
                        "service_port": flow.dst_port,
                        "hairpin": int(state.hairpin),
                    },
                    profile,
                )
            return state
        reverse = self._learned(trace, P.SERVICE_REPLIES.name, received, commit)
        if reverse.hit:
            state.reply = True
            state.hairpin = bool(reverse.params.get("hairpin", 0))
            state.service = (_joined(reverse.params, "service"), reverse.params["service_port"])
        return state

    def _policy(
        self,
        flow: _Flow,
        egress_program: int,
        ingress_program: int,
        ct_key: dict[str, int],
        profile: int,
        trace: list[dict[str, Any]],
        commit: bool,
    ) -> str:
        """policy.p4 and the wrapper's conntrack; returns why a packet is denied."""
        version = flow.version
        src = self._apply(
            trace, P.IPSET[("src", version)].name, _addr_key("addr", flow.src, version)
        )
        src_sets = _joined(src.params, "sets")
        dst = self._apply(
            trace, P.IPSET[("dst", version)].name, _addr_key("addr", flow.dst, version)
        )
        dst_sets = _joined(dst.params, "sets")
        port_key = {"ip_version": version, "proto": flow.proto}
        named = self._apply(
            trace,
            P.PORTSET["src"].name,
            {**port_key, **_halves("addr", flow.src), "port": flow.src_port},
        )
        src_sets |= _joined(named.params, "sets")
        named = self._apply(
            trace,
            P.PORTSET["dst"].name,
            {**port_key, **_halves("addr", flow.dst), "port": flow.dst_port},
        )
        dst_sets |= _joined(named.params, "sets")
        key = {
            "ip_version": version,
            "proto": flow.proto,
            **_halves("src_sets", src_sets),
            **_halves("dst_sets", dst_sets),
            "src_port": flow.src_port,
            "dst_port": flow.dst_port,
            "icmp_type": flow.icmp_type,
            "icmp_code": flow.icmp_code,
        }
        denied = ""
        for direction, program in (("egress", egress_program), ("ingress", ingress_program)):
            if program == 0:
                continue
            verdict = self._run_program(direction, program, key, trace)
            if verdict != "allow" and not denied:
                denied = f"{direction} policy: {verdict}"
        ct = self._learned(trace, P.CONNTRACK.name, ct_key, commit)
        if ct.hit:
            return ""
        if denied:
            return denied
        if commit:
            self._learn(trace, P.CONNTRACK.name, ct_key, P.CT_ESTABLISHED.name, {}, profile)
        return ""

    def _run_program(
        self, direction: str, program: int, key: dict[str, int], trace: list[dict[str, Any]]
    ) -> str:
        """The program's stages in order, first match in each; no verdict at the end denies."""
        key = {"program": program, **key}
        for table in STAGES[direction]:
            result = self._apply(trace, table, key)
            if result.action == P.RULE_ALLOW.name:
                return "allow"
            if result.action == P.RULE_DENY.name:
                return "deny"
        return "no verdict (deny)"


def _summarize(hdr: _Headers) -> _Flow:
    """FelixSummary: the flow stages key on (IPv4 zero-extended)."""
    flow = _Flow()
    if hdr.ipv4 is not None:
        flow.version = 4
        flow.proto = hdr.ipv4[9]
        flow.src = int.from_bytes(hdr.ipv4[12:16], "big")
        flow.dst = int.from_bytes(hdr.ipv4[16:20], "big")
    else:
        assert hdr.ipv6 is not None
        flow.version = 6
        flow.proto = hdr.ipv6[6]
        flow.src = int.from_bytes(hdr.ipv6[8:24], "big")
        flow.dst = int.from_bytes(hdr.ipv6[24:40], "big")
    l4 = hdr.l4
    if l4 is not None:
        flow.src_port, flow.dst_port = struct.unpack_from("!HH", l4)
    if hdr.icmp is not None:
        flow.icmp_type, flow.icmp_code = hdr.icmp[0], hdr.icmp[1]
    return flow


_PORT_KINDS = {
    P.WORKLOAD_PORT.name: "workload",
    P.HOST_PORT.name: "host",
    P.UPLINK_PORT.name: "uplink",
}
_ROUTE_KINDS = {
    P.TO_WORKLOAD.name: "workload",
    P.TO_HOST.name: "host",
    P.TO_VXLAN.name: "vxlan",
    P.TO_VXLAN6.name: "vxlan",
    P.TO_IPIP.name: "ipip",
    P.TO_NODE.name: "node",
    P.TO_NODE6.name: "node",
    P.BLACKHOLE.name: "blackhole",
}
_TUNNEL_REASON = {
    "vxlan": "encapsulated (VXLAN) to node {}",
    "ipip": "encapsulated (IP-in-IP) to node {}",
    "node": "routed to node {}",
}
_NODE_FIELDS = tuple(p.name for p in P.NODE_CONFIG.params)


@attrs.frozen
class _Node:
    """The node table's parameters (tunnel.p4's node header)."""

    node_mac: int = 0
    vtep_mac: int = 0
    vtep_mac6: int = 0
    ip4: int = 0
    ip6_hi: int = 0
    ip6_lo: int = 0
    vni: int = 0


def _hop(params: Mapping[str, int]) -> int:
    """A tunnel route's node address (to_vxlan, to_ipip and to_node carry the IPv4 one as
    `node`, their IPv6 forms in halves)."""
    return params["node"] if "node" in params else _joined(params, "node")


def _inner_len(hdr: _Headers) -> int | None:
    if hdr.ipv4 is not None:
        return _get16(hdr.ipv4, 2)
    if hdr.ipv6 is not None:
        return _get16(hdr.ipv6, 4) + 40
    return None


def _outer_ipv4(protocol: int, total: int, node: _Node, params: Mapping[str, int]) -> bytearray:
    """tunnel.p4's outer IPv4 header: its checksum is the seed plus the length."""
    ip = bytearray(
        struct.pack(
            "!BBHHHBBHII",
            0x45,
            0,
            total,
            0,
            0,
            64,
            protocol,
            params["csum_seed"],
            node.ip4,
            params["node"],
        )
    )
    ck = Checksum()
    ck.subtract(ip[10:12])
    ck.add(ip[2:4])
    _put16(ip, 10, ck.get())
    return ip


def _encapsulate_ipip(hdr: _Headers, node: _Node, params: Mapping[str, int]) -> None:
    assert hdr.ipv4 is not None
    hdr.outer_ipv4 = _outer_ipv4(IP_PROTO_IPIP, _get16(hdr.ipv4, 2) + 20, node, params)


def _encapsulate_vxlan(
    hdr: _Headers, node: _Node, params: Mapping[str, int], flow: _Flow, version: int
) -> None:
    """tunnel.p4's VXLAN: the packet's Ethernet header becomes the outer one; UDP source port
    from the flow's ports; IPv4 outer UDP checksum zero, IPv6 computed from the seed."""
    inner_type = bytes(hdr.eth[12:14])
    vtep_mac = node.vtep_mac if version == 4 else node.vtep_mac6
    hdr.inner_eth = bytearray(params["vtep_mac"].to_bytes(6, "big") + vtep_mac.to_bytes(6, "big"))
    hdr.inner_eth += inner_type
    inner = _inner_len(hdr)
    assert inner is not None
    length = (inner + 30) & 0xFFFF  # P4's ipv4 total_len + 30 / payload_len + 70
    sport = ((flow.src_port ^ flow.dst_port) | 0xC000) & 0xFFFF
    hdr.vxlan = bytearray(struct.pack("!BBHI", 0x08, 0, 0, node.vni << 8))
    if version == 4:
        hdr.eth[12:14] = struct.pack("!H", ETH_IPV4)
        hdr.outer_udp = bytearray(struct.pack("!HHHH", sport, P.VXLAN_PORT, length, 0))
        hdr.outer_ipv4 = _outer_ipv4(IP_PROTO_UDP, length + 20, node, params)
        return
    assert hdr.ipv6 is not None
    hdr.eth[12:14] = struct.pack("!H", ETH_IPV6)
    udp = bytearray(struct.pack("!HHHH", sport, P.VXLAN_PORT, length, params["csum_seed"]))
    ck = Checksum()
    ck.subtract(udp[6:8])
    ck.add(udp[4:6])
    ck.add(udp[4:6])
    ck.add(udp[0:2])
    ck.add(hdr.ipv6[0:4])
    ck.add(hdr.ipv6[6:7])  # an 8-bit field: the first byte of a word
    ck.add(struct.pack("!H", hdr.ipv6[7]))
    ck.subtract(struct.pack("!H", hdr.ipv6[6]))
    _put16(udp, 6, ck.get())
    hdr.outer_udp = udp
    hdr.outer_ipv6 = bytearray(
        struct.pack("!IHBB", 0x60000000, length, IP_PROTO_UDP, 64)
        + ((node.ip6_hi << 64) | node.ip6_lo).to_bytes(16, "big")
        + _joined(params, "node").to_bytes(16, "big")
    )


MASK64 = (1 << 64) - 1


def _halves(name: str, value: int) -> dict[str, int]:
    """A 128-bit value as the pipeline's two 64-bit fields (P4-DPDK has no wider ones)."""
    return {f"{name}_hi": value >> 64, f"{name}_lo": value & MASK64}


def _joined(params: Mapping[str, int], name: str) -> int:
    return (params.get(f"{name}_hi", 0) << 64) | params.get(f"{name}_lo", 0)


def _backend_params(backend: tuple[int, int]) -> dict[str, int]:
    return {**_halves("addr", backend[0]), "port": backend[1]}


def _addr_key(name: str, addr: int, version: int) -> dict[str, int]:
    """IPv4 tables match one 32-bit field; IPv6 tables the address in halves."""
    return {name: addr & 0xFFFFFFFF} if version == 4 else _halves(name, addr)


def _flow_key(flow: _Flow, src: tuple[int, int], dst: tuple[int, int]) -> dict[str, int]:
    return {
        "ip_version": flow.version,
        "proto": flow.proto,
        **_halves("src", src[0]),
        "src_port": src[1],
        **_halves("dst", dst[0]),
        "dst_port": dst[1],
    }


def _addr_text(addr: int, version: int) -> str:
    return str(ipaddress.IPv4Address(addr) if version == 4 else ipaddress.IPv6Address(addr))


def _rule_origin(metadata: bytes) -> str:
    """The Calico origin (tier, policy, rule) felix-p4 stores in an entry's metadata."""
    text = metadata.decode(errors="replace")
    try:
        info = json.loads(text)
    except ValueError:
        return text
    if not isinstance(info, dict):
        return text
    if "where" in info:
        return str(info["where"])
    if "service" in info:
        return f"service {info['service']} port {info.get('port', '')}".strip()
    return text
