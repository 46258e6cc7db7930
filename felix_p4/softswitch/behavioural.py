"""Behavioural model of pipeline/felix_pna.p4: the same parser, tables and actions in Python.

It reads table entries through the TableStore by the P4Info names the P4 program declares,
so what the driver programs is what decides a packet here. Each method mirrors a control of
pipeline/*.p4 (FelixPort, FelixSummary, FelixServices, FelixRewrite, FelixRouting,
FelixPolicy, and the PNA wrapper's conntrack); keep them in step.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from felix_p4 import pipeline as P
from felix_p4.softswitch.packet import ETH_ARP, ETH_IPV4, ETH_IPV6
from felix_p4.softswitch.store import Lookup, TableStore

IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP, IP_PROTO_ICMPV6 = 1, 6, 17, 58
IP_PROTO_SCTP, IP_PROTO_UDPLITE = 132, 136
CT_PROFILE = {IP_PROTO_TCP: 1, IP_PROTO_UDP: 2}
CT_PROFILE_OTHER = 3
# Expiry of learned flows per profile, seconds (the kernel's conntrack defaults).
CT_TIMEOUT = {1: 432000.0, 2: 120.0, 3: 30.0}

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
        return {
            "verdict": self.verdict,
            "egress_port": self.egress_port,
            "reason": self.reason,
            "packet": describe(self.packet) if self.verdict != "drop" else None,
            "trace": self.trace,
        }


@attrs.define
class _Headers:
    eth: bytearray
    arp: bytearray | None = None
    ipv4: bytearray | None = None
    ipv6: bytearray | None = None
    tcp: bytearray | None = None
    udp: bytearray | None = None
    sctp: bytearray | None = None
    icmp: bytearray | None = None
    payload: bytes = b""

    def emit(self) -> bytes:
        parts = (self.eth, self.arp, self.ipv4, self.ipv6, self.tcp, self.udp, self.sctp, self.icmp)
        return b"".join(bytes(p) for p in parts if p is not None) + self.payload

    @property
    def l4(self) -> bytearray | None:
        return self.tcp or self.udp or self.sctp


class ParserError(Exception):
    pass


def parse(raw: bytes) -> _Headers:
    """pipeline/parser.p4: Ethernet; ARP, IPv4 (fixed header) or IPv6; then TCP, UDP
    (and UDP-Lite), SCTP or ICMP/ICMPv6 for unfragmented packets without IPv4 options."""
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

    l4_proto = None
    if ether_type == ETH_ARP:
        hdr.arp = take(28, "ARP")
    elif ether_type == ETH_IPV4:
        hdr.ipv4 = take(20, "IPv4")
        ihl = hdr.ipv4[0] & 0x0F
        frag_offset = struct.unpack_from("!H", hdr.ipv4, 6)[0] & 0x1FFF
        if ihl == 5 and frag_offset == 0:
            l4_proto = hdr.ipv4[9]
    elif ether_type == ETH_IPV6:
        hdr.ipv6 = take(40, "IPv6")
        l4_proto = hdr.ipv6[6]
    if l4_proto == IP_PROTO_TCP:
        hdr.tcp = take(20, "TCP")
    elif l4_proto in (IP_PROTO_UDP, IP_PROTO_UDPLITE):
        hdr.udp = take(8, "UDP")
    elif l4_proto == IP_PROTO_SCTP:
        hdr.sctp = take(12, "SCTP")
    elif (l4_proto == IP_PROTO_ICMP and hdr.ipv4 is not None) or (
        l4_proto == IP_PROTO_ICMPV6 and hdr.ipv6 is not None
    ):
        hdr.icmp = take(4, "ICMP")
    hdr.payload = raw[at:]
    return hdr


@attrs.define
class _Meta:
    """metadata_t fields of the stages after the port stage."""

    ip_version: int = 0
    l4_proto: int = 0
    src_addr: int = 0
    dst_addr: int = 0
    src_port: int = 0
    dst_port: int = 0
    icmp_type: int = 0
    icmp_code: int = 0
    src_sets: int = 0
    dst_sets: int = 0
    egress_program: int = 0
    ingress_program: int = 0


# --- FelixRewrite (nat.p4): incremental checksum updates -----------------------------------


def _words(value: int, nbytes: int) -> list[int]:
    raw = value.to_bytes(nbytes, "big")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, nbytes, 2)]


def _apply_delta(checksum: int, old: list[int], new: list[int]) -> int:
    total = (~checksum & 0xFFFF) + sum(~w & 0xFFFF for w in old) + sum(new)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rewrite(hdr: _Headers, source: bool, addr: int, port: int) -> None:
    """Set the source or destination address and port, updating every checksum over them."""
    if hdr.ipv4 is not None:
        at = 12 if source else 16
        old_addr = _words(int.from_bytes(hdr.ipv4[at : at + 4], "big"), 4)
        new_addr = _words(addr & 0xFFFFFFFF, 4)
        (check,) = struct.unpack_from("!H", hdr.ipv4, 10)
        struct.pack_into("!H", hdr.ipv4, 10, _apply_delta(check, old_addr, new_addr))
        hdr.ipv4[at : at + 4] = (addr & 0xFFFFFFFF).to_bytes(4, "big")
    else:
        assert hdr.ipv6 is not None
        at = 8 if source else 24
        old_addr = _words(int.from_bytes(hdr.ipv6[at : at + 16], "big"), 16)
        new_addr = _words(addr, 16)
        hdr.ipv6[at : at + 16] = addr.to_bytes(16, "big")
    l4 = hdr.l4
    if l4 is None:
        return
    port_at = 0 if source else 2
    (old_port,) = struct.unpack_from("!H", l4, port_at)
    struct.pack_into("!H", l4, port_at, port)
    if hdr.tcp is not None:
        (check,) = struct.unpack_from("!H", hdr.tcp, 16)
        struct.pack_into(
            "!H", hdr.tcp, 16, _apply_delta(check, [*old_addr, old_port], [*new_addr, port])
        )
    elif hdr.udp is not None:
        (check,) = struct.unpack_from("!H", hdr.udp, 6)
        if check != 0 or hdr.ipv6 is not None:
            updated = _apply_delta(check, [*old_addr, old_port], [*new_addr, port])
            struct.pack_into("!H", hdr.udp, 6, updated or 0xFFFF)


def selector_hash(meta: _Meta) -> int:
    """The action selector's hash over the flow (src, dst, protocol, ports), 16 bits."""
    data = struct.pack(
        "!16s16sBHH",
        meta.src_addr.to_bytes(16, "big"),
        meta.dst_addr.to_bytes(16, "big"),
        meta.l4_proto,
        meta.src_port,
        meta.dst_port,
    )
    return zlib.crc32(data) & 0xFFFF


class FelixPipeline:
    """Processes one packet at a time against the entries in `tables`.

    Learned entries (conntrack, service pins, affinity, reverse NAT) live in the store like
    any entry; their expiry deadlines live here, so one pipeline object must serve every
    packet of a target.
    """

    def __init__(self, tables: TableStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.tables = tables
        self.clock = clock
        self._deadline: dict[tuple[str, tuple[int, ...]], tuple[float, float]] = {}

    def _apply(
        self, trace: list[dict[str, Any]], table: str, key: dict[str, int], selector: int = 0
    ) -> Lookup:
        result = (
            self.tables.lookup(table, key, selector) if selector else self.tables.lookup(table, key)
        )
        step: dict[str, Any] = {
            "table": table,
            "hit": result.hit,
            "action": result.action,
            "params": dict(result.params),
            "match": {k: str(v) for k, v in result.match.items()},
        }
        if result.metadata:
            step["rule"] = _rule_origin(result.metadata)
        if getattr(result, "member_id", 0):
            step["member"] = result.member_id
        trace.append(step)
        return result

    def _learned(self, trace: list[dict[str, Any]], table: str, key: dict[str, int]) -> Lookup:
        """Lookup in a learned table, ageing out an entry idle past its timeout first."""
        ident = (table, tuple(key.values()))
        deadline = self._deadline.get(ident)
        if deadline is not None and self.clock() >= deadline[0]:
            self.tables.dataplane_delete(table, key)
            del self._deadline[ident]
        result = self._apply(trace, table, key)
        if result.hit and ident in self._deadline:
            self._deadline[ident] = (
                self.clock() + self._deadline[ident][1],
                self._deadline[ident][1],
            )
        return result

    def _learn(
        self,
        trace: list[dict[str, Any]],
        table: str,
        key: dict[str, int],
        action: str,
        params: dict[str, int],
        seconds: float,
    ) -> None:
        self.tables.dataplane_insert(table, key, action, params)
        self._deadline[(table, tuple(key.values()))] = (self.clock() + seconds, seconds)
        trace[-1]["learned"] = True

    def process(self, in_port: int, raw: bytes, commit: bool = True) -> Result:
        trace: list[dict[str, Any]] = []
        try:
            hdr = parse(raw)
        except ParserError as exc:
            return Result("drop", None, f"parser: {exc}", raw, trace)
        meta = _Meta()

        # FelixPort
        classify = self._apply(trace, P.PORT_CLASSIFY.name, {"port": in_port})
        if classify.action not in (P.WORKLOAD_PORT.name, P.HOST_PORT.name):
            return Result("drop", None, f"port {in_port} is not a known port", raw, trace)
        workload = classify.action == P.WORKLOAD_PORT.name
        gateway_mac = classify.params.get("gateway_mac", 0)
        meta.egress_program = classify.params.get("egress_program", 0)
        if hdr.arp is not None:
            htype, ptype, _, _, oper = struct.unpack_from("!HHBBH", hdr.arp)
            if workload and htype == 1 and ptype == ETH_IPV4 and oper == 1:
                self._arp_reply(hdr, gateway_mac)
                trace.append(
                    {
                        "table": "arp_responder",
                        "hit": True,
                        "action": "arp_reply",
                        "params": {"gateway_mac": gateway_mac},
                        "match": {},
                    }
                )
                return Result(
                    "forward", in_port, "ARP request answered for the gateway", hdr.emit(), trace
                )
            return Result("drop", None, "ARP that is not a workload's request", raw, trace)
        if hdr.ipv4 is None and hdr.ipv6 is None:
            return Result("drop", None, "neither ARP nor IP", raw, trace)
        version = 4 if hdr.ipv4 is not None else 6
        if workload:
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

        # FelixSummary, FelixServices and the rewrites
        _summarize(hdr, meta)
        service = self._services(hdr, meta, trace, commit)
        if service.reject:
            return Result("drop", None, f"service has no endpoints ({service.reject})", raw, trace)
        received_src = (meta.src_addr, meta.src_port)
        client_port = meta.src_port
        if service.is_service:
            rewrite(hdr, False, service.nat_addr, service.nat_port)
        elif service.reply:
            rewrite(hdr, True, service.nat_addr, service.nat_port)
            rewrite(hdr, False, service.client_addr, service.client_port)
        _summarize(hdr, meta)
        ct_view = ((meta.src_addr, meta.src_port), (meta.dst_addr, meta.dst_port))
        if service.reply:
            ct_view = (received_src, ct_view[1])

        # FelixRouting
        ip = hdr.ipv4 if hdr.ipv4 is not None else hdr.ipv6
        assert ip is not None
        route = self._apply(trace, P.ROUTES[version].name, _addr_key("dst", meta.dst_addr, version))
        if route.action == P.TO_WORKLOAD.name:
            ttl_at = 8 if version == 4 else 7
            if ip[ttl_at] <= 1:
                return Result("drop", None, "TTL / hop limit expired", raw, trace)
            hdr.eth[0:6] = route.params["dmac"].to_bytes(6, "big")
            hdr.eth[6:12] = route.params["smac"].to_bytes(6, "big")
            meta.ingress_program = route.params.get("ingress_program", 0)
            if version == 4:
                _decrement_ttl_v4(ip)
            else:
                ip[7] -= 1
            verdict, egress_port, reason = (
                "forward",
                route.params["port"],
                "routed to local workload",
            )
        elif route.action == P.TO_HOST.name:
            verdict, egress_port, reason = "host", route.params["port"], "handed to the host"
        else:
            return Result("drop", None, f"no route in routes_v{version}", raw, trace)
        if service.is_service:
            reason += (
                f" (service backend {_addr_text(service.nat_addr, version)}:{service.nat_port})"
            )

        # FelixPolicy and conntrack
        denial = self._policy(hdr, meta, version, ct_view, trace, commit)
        if denial:
            return Result("drop", None, denial, raw, trace)
        if service.is_service and service.hairpin:
            rewrite(hdr, True, service.hairpin_addr, client_port)
        return Result(verdict, egress_port, reason, hdr.emit(), trace)

    def _services(
        self, hdr: _Headers, meta: _Meta, trace: list[dict[str, Any]], commit: bool
    ) -> _ServiceState:
        """pipeline/services.p4: front end, backend choice, affinity, pinning, reverse NAT."""
        state = _ServiceState()
        front = self._apply(
            trace,
            P.SERVICES.name,
            {
                "ip_version": meta.ip_version,
                **_halves("addr", meta.dst_addr),
                "proto": meta.l4_proto,
                "port": meta.dst_port,
            },
        )
        if front.action == P.SERVICE_REJECT.name:
            state.reject = trace[-1].get("rule", "no ready endpoints")
            return state
        timeout = CT_TIMEOUT[CT_PROFILE.get(meta.l4_proto, CT_PROFILE_OTHER)]
        if front.action == P.TO_SERVICE.name:
            state.is_service = True
            params = front.params
            chosen = self._apply(
                trace, P.SERVICE_BACKENDS.name, {"group": params["group"]}, selector_hash(meta)
            )
            state.nat_addr = _joined(chosen.params, "addr")
            state.nat_port = chosen.params.get("port", 0)
            if params["affinity_seconds"]:
                key = {
                    "ip_version": meta.ip_version,
                    **_halves("client", meta.src_addr),
                    "service": params["service_id"],
                }
                affinity = self._learned(trace, P.SERVICE_AFFINITY.name, key)
                if affinity.hit:
                    state.nat_addr = _joined(affinity.params, "addr")
                    state.nat_port = affinity.params["port"]
                elif commit:
                    backend = {**_halves("addr", state.nat_addr), "port": state.nat_port}
                    self._learn(
                        trace,
                        P.SERVICE_AFFINITY.name,
                        key,
                        P.AFFINE.name,
                        backend,
                        float(params["affinity_seconds"]),
                    )
            flow_key = _flow_key(
                meta, (meta.src_addr, meta.src_port), (meta.dst_addr, meta.dst_port)
            )
            pin = self._learned(trace, P.SERVICE_FLOWS.name, flow_key)
            if pin.hit:
                state.nat_addr = _joined(pin.params, "addr")
                state.nat_port = pin.params["port"]
            elif commit:
                backend = {**_halves("addr", state.nat_addr), "port": state.nat_port}
                self._learn(trace, P.SERVICE_FLOWS.name, flow_key, P.PINNED.name, backend, timeout)
            reply_dst = meta.src_addr
            if state.nat_addr == meta.src_addr:
                state.hairpin = True
                state.hairpin_addr = _joined(params, "hairpin")
                reply_dst = state.hairpin_addr
            reverse_key = _flow_key(
                meta, (state.nat_addr, state.nat_port), (reply_dst, meta.src_port)
            )
            reverse = self._learned(trace, P.SERVICE_REPLIES.name, reverse_key)
            if not reverse.hit and commit:
                translation = {
                    **_halves("service", meta.dst_addr),
                    "service_port": meta.dst_port,
                    **_halves("client", meta.src_addr),
                    "client_port": meta.src_port,
                }
                self._learn(
                    trace, P.SERVICE_REPLIES.name, reverse_key, P.UN_NAT.name, translation, timeout
                )
            return state
        reverse = self._learned(
            trace,
            P.SERVICE_REPLIES.name,
            _flow_key(meta, (meta.src_addr, meta.src_port), (meta.dst_addr, meta.dst_port)),
        )
        if reverse.hit:
            state.reply = True
            state.nat_addr = _joined(reverse.params, "service")
            state.nat_port = reverse.params["service_port"]
            state.client_addr = _joined(reverse.params, "client")
            state.client_port = reverse.params["client_port"]
        return state

    def _policy(
        self,
        hdr: _Headers,
        meta: _Meta,
        version: int,
        ct_view: tuple[tuple[int, int], tuple[int, int]],
        trace: list[dict[str, Any]],
        commit: bool,
    ) -> str:
        """pipeline/policy.p4 and the PNA wrapper's conntrack; returns why a packet is denied."""
        src = self._apply(
            trace, P.IPSET[("src", version)].name, _addr_key("addr", meta.src_addr, version)
        )
        meta.src_sets = _joined(src.params, "sets")
        dst = self._apply(
            trace, P.IPSET[("dst", version)].name, _addr_key("addr", meta.dst_addr, version)
        )
        meta.dst_sets = _joined(dst.params, "sets")
        port_key = {"ip_version": version, "proto": meta.l4_proto}
        named = self._apply(
            trace,
            P.PORTSET["src"].name,
            {**port_key, **_halves("addr", meta.src_addr), "port": meta.src_port},
        )
        meta.src_sets |= _joined(named.params, "sets")
        named = self._apply(
            trace,
            P.PORTSET["dst"].name,
            {**port_key, **_halves("addr", meta.dst_addr), "port": meta.dst_port},
        )
        meta.dst_sets |= _joined(named.params, "sets")

        denied = ""
        for direction, program in (
            ("egress", meta.egress_program),
            ("ingress", meta.ingress_program),
        ):
            if program == 0:
                continue
            verdict = self._run_program(direction, program, meta, trace)
            if verdict != "allow" and not denied:
                denied = f"{direction} policy: {verdict}"

        a, b = sorted(ct_view)
        ct_key = {
            "ip_version": version,
            "proto": meta.l4_proto,
            **_halves("a", a[0]),
            "a_port": a[1],
            **_halves("b", b[0]),
            "b_port": b[1],
        }
        ct = self._learned(trace, P.CONNTRACK.name, ct_key)
        if ct.hit:
            return ""
        if denied:
            return denied
        if commit:
            profile = CT_PROFILE.get(meta.l4_proto, CT_PROFILE_OTHER)
            self._learn(
                trace, P.CONNTRACK.name, ct_key, P.CT_ESTABLISHED.name, {}, CT_TIMEOUT[profile]
            )
        return ""

    def _run_program(
        self, direction: str, program: int, meta: _Meta, trace: list[dict[str, Any]]
    ) -> str:
        """The program's stages in order, first match in each; no verdict at the end denies."""
        key = {
            "program": program,
            "ip_version": meta.ip_version,
            "proto": meta.l4_proto,
            **_halves("src_sets", meta.src_sets),
            **_halves("dst_sets", meta.dst_sets),
            "src_port": meta.src_port,
            "dst_port": meta.dst_port,
            "icmp_type": meta.icmp_type,
            "icmp_code": meta.icmp_code,
        }
        for table in STAGES[direction]:
            result = self._apply(trace, table, key)
            if result.action == P.RULE_ALLOW.name:
                return "allow"
            if result.action == P.RULE_DENY.name:
                return "deny"
        return "no verdict (deny)"

    @staticmethod
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


@attrs.define
class _ServiceState:
    is_service: bool = False
    reject: str = ""
    reply: bool = False
    hairpin: bool = False
    hairpin_addr: int = 0
    nat_addr: int = 0
    nat_port: int = 0
    client_addr: int = 0
    client_port: int = 0


def _summarize(hdr: _Headers, meta: _Meta) -> None:
    """FelixSummary: the L3/L4 fields later stages match on (IPv4 zero-extended)."""
    if hdr.ipv4 is not None:
        meta.ip_version = 4
        meta.l4_proto = hdr.ipv4[9]
        meta.src_addr = int.from_bytes(hdr.ipv4[12:16], "big")
        meta.dst_addr = int.from_bytes(hdr.ipv4[16:20], "big")
    else:
        assert hdr.ipv6 is not None
        meta.ip_version = 6
        meta.l4_proto = hdr.ipv6[6]
        meta.src_addr = int.from_bytes(hdr.ipv6[8:24], "big")
        meta.dst_addr = int.from_bytes(hdr.ipv6[24:40], "big")
    l4 = hdr.l4
    meta.src_port, meta.dst_port = struct.unpack_from("!HH", l4) if l4 is not None else (0, 0)
    meta.icmp_type, meta.icmp_code = (hdr.icmp[0], hdr.icmp[1]) if hdr.icmp is not None else (0, 0)


MASK64 = (1 << 64) - 1


def _halves(name: str, value: int) -> dict[str, int]:
    """A 128-bit value as the pipeline's two 64-bit fields (P4-DPDK has no wider ones)."""
    return {f"{name}_hi": value >> 64, f"{name}_lo": value & MASK64}


def _joined(params: Mapping[str, int], name: str) -> int:
    return (params.get(f"{name}_hi", 0) << 64) | params.get(f"{name}_lo", 0)


def _addr_key(name: str, addr: int, version: int) -> dict[str, int]:
    """IPv4 tables match one 32-bit field; IPv6 tables the address in halves."""
    return {name: addr} if version == 4 else _halves(name, addr)


def _flow_key(meta: _Meta, src: tuple[int, int], dst: tuple[int, int]) -> dict[str, int]:
    return {
        "ip_version": meta.ip_version,
        "proto": meta.l4_proto,
        **_halves("src", src[0]),
        "src_port": src[1],
        **_halves("dst", dst[0]),
        "dst_port": dst[1],
    }


def _addr_text(addr: int, version: int) -> str:
    import ipaddress

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


def _decrement_ttl_v4(ip: bytearray) -> None:
    """RFC 1624 incremental update, exactly as forwarding.p4's decrement_ttl_v4."""
    (old_word,) = struct.unpack_from("!H", ip, 8)
    ip[8] -= 1
    (new_word,) = struct.unpack_from("!H", ip, 8)
    (old_sum,) = struct.unpack_from("!H", ip, 10)
    total = (~old_sum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", ip, 10, ~total & 0xFFFF)
