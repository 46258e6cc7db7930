"""Behavioural model of pipeline/felix_pna.p4: the same parser, tables and actions in Python.

It reads table entries through the TableStore by the P4Info names the P4 program declares,
so what the driver programs is what decides a packet here. Each stage mirrors a block of
pipeline/forwarding.p4; keep them in step (tests/unit/test_pipeline_contract.py checks names).
"""

from __future__ import annotations

import struct
from typing import Any

import attrs

from felix_p4.target.packet import ETH_ARP, ETH_IPV4, ETH_IPV6
from felix_p4.target.tables import Lookup, TableStore

PORT_KIND_WORKLOAD = 1
PORT_KIND_HOST = 2

# Every table and action name the model reads; held to the P4Info by a test.
TABLES = ("port_classify", "source_check_v4", "source_check_v6", "routes_v4", "routes_v6")
ACTIONS = ("drop", "workload_port", "host_port", "allow_source", "to_workload", "to_host")


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
    payload: bytes = b""

    def emit(self) -> bytes:
        parts = [self.eth, self.arp or b"", self.ipv4 or b"", self.ipv6 or b"", self.payload]
        return b"".join(bytes(p) for p in parts)


class ParserError(Exception):
    pass


def parse(raw: bytes) -> _Headers:
    """pipeline/parser.p4: Ethernet, then one of ARP, IPv4 (fixed 20 bytes), IPv6."""
    if len(raw) < 14:
        raise ParserError("packet shorter than an Ethernet header")
    hdr = _Headers(bytearray(raw[:14]))
    (ether_type,) = struct.unpack_from("!H", raw, 12)
    rest = raw[14:]
    size = {ETH_ARP: 28, ETH_IPV4: 20, ETH_IPV6: 40}.get(ether_type)
    if size is None:
        hdr.payload = rest
        return hdr
    if len(rest) < size:
        raise ParserError(f"truncated header after ether_type {ether_type:#06x}")
    field = {ETH_ARP: "arp", ETH_IPV4: "ipv4", ETH_IPV6: "ipv6"}[ether_type]
    setattr(hdr, field, bytearray(rest[:size]))
    hdr.payload = rest[size:]
    return hdr


class FelixPipeline:
    """Processes one packet at a time against the entries in `tables`."""

    def __init__(self, tables: TableStore) -> None:
        self.tables = tables

    def _apply(self, trace: list[dict[str, Any]], table: str, key: dict[str, int]) -> Lookup:
        result = self.tables.lookup(table, key)
        trace.append(
            {
                "table": table,
                "hit": result.hit,
                "action": result.action,
                "params": dict(result.params),
                "match": {k: str(v) for k, v in result.match.items()},
            }
        )
        return result

    def process(self, in_port: int, raw: bytes) -> Result:
        trace: list[dict[str, Any]] = []
        try:
            hdr = parse(raw)
        except ParserError as exc:
            return Result("drop", None, f"parser: {exc}", raw, trace)

        classify = self._apply(trace, "port_classify", {"port": in_port})
        if classify.action != "workload_port" and classify.action != "host_port":
            return Result("drop", None, f"port {in_port} is not a known port", raw, trace)
        workload = classify.action == "workload_port"
        gateway_mac = classify.params.get("gateway_mac", 0)

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
            if version == 4:
                _decrement_ttl_v4(ip)
            else:
                ip[7] -= 1
            return Result(
                "forward", route.params["port"], "routed to local workload", hdr.emit(), trace
            )
        if route.action == "to_host":
            return Result("host", route.params["port"], "handed to the host", hdr.emit(), trace)
        return Result("drop", None, f"no route in routes_v{version}", raw, trace)

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
