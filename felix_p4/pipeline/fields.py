"""How 128-bit values appear in the pipeline's keys and parameters: as 64-bit halves
(P4-DPDK operates on at most 64 bits), with IPv6 prefixes as ternary halves whose priority
is the prefix length, so the longest prefix wins as with LPM."""

from __future__ import annotations

import ipaddress

from felix_p4.pipeline.entries import Exact, Match, Ternary

MASK64 = (1 << 64) - 1


def halves(value: int) -> tuple[int, int]:
    return value >> 64, value & MASK64


def exact128(name: str, value: int) -> dict[str, Match]:
    hi, lo = halves(value)
    return {f"{name}_hi": Exact(hi), f"{name}_lo": Exact(lo)}


def params128(name: str, value: int) -> dict[str, int]:
    hi, lo = halves(value)
    return {f"{name}_hi": hi, f"{name}_lo": lo}


def ternary128(name: str, value: int, mask: int) -> dict[str, Match]:
    (v_hi, v_lo), (m_hi, m_lo) = halves(value), halves(mask)
    return {f"{name}_hi": Ternary(v_hi, m_hi), f"{name}_lo": Ternary(v_lo, m_lo)}


def prefix6(name: str, net: ipaddress.IPv6Network) -> tuple[dict[str, Match], int]:
    """An IPv6 prefix as ternary halves and the priority that makes longer prefixes win."""
    mask = int(net.netmask)
    return ternary128(name, int(net.network_address) & mask, mask), net.prefixlen + 1
