"""Behavioural model of pipeline/felix_pna.p4: the same parser, tables and actions in Python.

It reads table entries through the TableStore by the P4Info names the P4 program declares,
so what the driver programs is what decides a packet here. Each stage mirrors a block of
pipeline/*.p4; keep them in step (tests/unit/test_pipeline_model.py checks the names).
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from typing import Any

import attrs

from felix_p4.target.packet import ETH_ARP, ETH_IPV4, ETH_IPV6
from felix_p4.target.tables import Lookup, TableStore

IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP, IP_PROTO_ICMPV6 = 1, 6, 17, 58
PORT_PROTOS = (6, 17, 132, 136)  # TCP, UDP, SCTP, UDP-Lite
POLICY_STAGES = 7
CT_PROFILE = {IP_PROTO_TCP: 1, IP_PROTO_UDP: 2}
CT_PROFILE_OTHER = 3
# Expiry of learned flows per profile, seconds (the kernel's conntrack defaults).
CT_TIMEOUT = {1: 432000.0, 2: 120.0, 3: 30.0}

STAGES = {
    direction: [f"{direction}_stage_{i}" for i in range(POLICY_STAGES)]
    for direction in ("egress", "ingress")
}
# Every table and action name the model reads; held to the P4Info by a test.
TABLES = (
    "port_classify",
    "source_check_v4",
    "source_check_v6",
    "routes_v4",
    "routes_v6",
    "ipset_src_v4",
    "ipset_dst_v4",
    "ipset_src_v6",
    "ipset_dst_v6",
    "portset_src",
    "portset_dst",
    *STAGES["egress"],
    *STAGES["ingress"],
    "conntrack",
)
ACTIONS = (
    "drop",
    "workload_port",
    "host_port",
    "allow_source",
    "to_workload",
    "to_host",
    "set_src_sets",
    "set_dst_sets",
    "add_src_sets",
    "add_dst_sets",
    "rule_allow",
    "rule_deny",
    "rule_pass",
    "ct_established",
)


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
    l4_ports: bytearray | None = None
    icmp: bytearray | None = None
    payload: bytes = b""

    def emit(self) -> bytes:
        parts = (self.eth, self.arp, self.ipv4, self.ipv6, self.l4_ports, self.icmp)
        return b"".join(bytes(p) for p in parts if p is not None) + self.payload


class ParserError(Exception):
    pass


def parse(raw: bytes) -> _Headers:
    """pipeline/parser.p4: Ethernet; ARP, IPv4 (fixed header) or IPv6; then ports or ICMP."""
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
    if l4_proto in PORT_PROTOS:
        hdr.l4_ports = take(4, "L4 ports")
    elif (l4_proto == IP_PROTO_ICMP and hdr.ipv4 is not None) or (
        l4_proto == IP_PROTO_ICMPV6 and hdr.ipv6 is not None
    ):
        hdr.icmp = take(4, "ICMP")
    hdr.payload = raw[at:]
    return hdr


@attrs.define
class _Meta:
    """metadata_t fields the policy stages use."""

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


class FelixPipeline:
    """Processes one packet at a time against the entries in `tables`.

    Learned flows (conntrack) live in the store like any entry; their expiry deadlines live
    here, so one pipeline object must serve every packet of a target.
    """

    def __init__(self, tables: TableStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.tables = tables
        self.clock = clock
        self._ct_deadline: dict[tuple[int, ...], tuple[float, int]] = {}

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

    def process(self, in_port: int, raw: bytes, commit: bool = True) -> Result:
        trace: list[dict[str, Any]] = []
        try:
            hdr = parse(raw)
        except ParserError as exc:
            return Result("drop", None, f"parser: {exc}", raw, trace)
        meta = _Meta()

        classify = self._apply(trace, "port_classify", {"port": in_port})
        if classify.action not in ("workload_port", "host_port"):
            return Result("drop", None, f"port {in_port} is not a known port", raw, trace)
        workload = classify.action == "workload_port"
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

        if hdr.ipv4 is not None:
            version, src, dst, ip = 4, hdr.ipv4[12:16], hdr.ipv4[16:20], hdr.ipv4
        elif hdr.ipv6 is not None:
            version, src, dst, ip = 6, hdr.ipv6[8:24], hdr.ipv6[24:40], hdr.ipv6
        else:
            return Result("drop", None, "neither ARP nor IP", raw, trace)

        if workload:
            check = self._apply(
                trace,
                f"source_check_v{version}",
                {"port": in_port, "src": int.from_bytes(src, "big")},
            )
            if check.action != "allow_source":
                return Result(
                    "drop", None, "source address not allowed on this port (spoofed)", raw, trace
                )

        route = self._apply(trace, f"routes_v{version}", {"dst": int.from_bytes(dst, "big")})
        if route.action == "to_workload":
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
        elif route.action == "to_host":
            verdict, egress_port, reason = "host", route.params["port"], "handed to the host"
        else:
            return Result("drop", None, f"no route in routes_v{version}", raw, trace)

        denial = self._policy(hdr, meta, version, trace, commit)
        if denial:
            return Result("drop", None, denial, raw, trace)
        return Result(verdict, egress_port, reason, hdr.emit(), trace)

    def _policy(
        self, hdr: _Headers, meta: _Meta, version: int, trace: list[dict[str, Any]], commit: bool
    ) -> str:
        """pipeline/policy.p4 and the PNA wrapper's conntrack; returns why a packet is denied."""
        ip = hdr.ipv4 if version == 4 else hdr.ipv6
        assert ip is not None
        meta.ip_version = version
        if version == 4:
            meta.l4_proto = ip[9]
            meta.src_addr = int.from_bytes(ip[12:16], "big")
            meta.dst_addr = int.from_bytes(ip[16:20], "big")
        else:
            meta.l4_proto = ip[6]
            meta.src_addr = int.from_bytes(ip[8:24], "big")
            meta.dst_addr = int.from_bytes(ip[24:40], "big")
        if hdr.l4_ports is not None:
            meta.src_port, meta.dst_port = struct.unpack("!HH", hdr.l4_ports)
        if hdr.icmp is not None:
            meta.icmp_type, meta.icmp_code = hdr.icmp[0], hdr.icmp[1]

        family = "v4" if version == 4 else "v6"
        src = self._apply(trace, f"ipset_src_{family}", {"addr": meta.src_addr})
        meta.src_sets = src.params.get("sets", 0)
        dst = self._apply(trace, f"ipset_dst_{family}", {"addr": meta.dst_addr})
        meta.dst_sets = dst.params.get("sets", 0)
        port_key = {"ip_version": version, "proto": meta.l4_proto}
        named = self._apply(
            trace, "portset_src", {**port_key, "addr": meta.src_addr, "port": meta.src_port}
        )
        meta.src_sets |= named.params.get("sets", 0)
        named = self._apply(
            trace, "portset_dst", {**port_key, "addr": meta.dst_addr, "port": meta.dst_port}
        )
        meta.dst_sets |= named.params.get("sets", 0)

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
        allowed = not denied

        lo, hi = sorted(((meta.src_addr, meta.src_port), (meta.dst_addr, meta.dst_port)))
        ct_key = {
            "ip_version": version,
            "proto": meta.l4_proto,
            "addr_lo": lo[0],
            "port_lo": lo[1],
            "addr_hi": hi[0],
            "port_hi": hi[1],
        }
        ct_id = tuple(ct_key.values())
        deadline = self._ct_deadline.get(ct_id)
        if deadline is not None and self.clock() >= deadline[0]:
            # Idle timeout with auto-delete: the flow's entry ages out.
            self.tables.dataplane_delete("conntrack", ct_key)
            del self._ct_deadline[ct_id]
        ct = self._apply(trace, "conntrack", ct_key)
        if ct.hit:
            profile = self._ct_deadline[ct_id][1] if ct_id in self._ct_deadline else 0
            if profile:
                self._ct_deadline[ct_id] = (self.clock() + CT_TIMEOUT[profile], profile)
            return ""
        if not allowed:
            return denied
        if commit:
            profile = CT_PROFILE.get(meta.l4_proto, CT_PROFILE_OTHER)
            self.tables.dataplane_insert("conntrack", ct_key, "ct_established", {})
            self._ct_deadline[ct_id] = (self.clock() + CT_TIMEOUT[profile], profile)
            trace[-1]["learned"] = True
        return ""

    def _run_program(
        self, direction: str, program: int, meta: _Meta, trace: list[dict[str, Any]]
    ) -> str:
        """The program's stages in order, first match in each; no verdict at the end denies."""
        key = {
            "program": program,
            "ip_version": meta.ip_version,
            "proto": meta.l4_proto,
            "src_sets": meta.src_sets,
            "dst_sets": meta.dst_sets,
            "src_port": meta.src_port,
            "dst_port": meta.dst_port,
            "icmp_type": meta.icmp_type,
            "icmp_code": meta.icmp_code,
        }
        for table in STAGES[direction]:
            result = self._apply(trace, table, key)
            if result.action == "rule_allow":
                return "allow"
            if result.action == "rule_deny":
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


def _rule_origin(metadata: bytes) -> str:
    """The Calico origin (tier, policy, rule) felix-p4 stores in an entry's metadata."""
    text = metadata.decode(errors="replace")
    try:
        info = json.loads(text)
    except ValueError:
        return text
    return str(info.get("where", text)) if isinstance(info, dict) else text


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
