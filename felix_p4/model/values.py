"""Value types and parsers shared by the model: addresses, networks, MACs, validation errors."""

from __future__ import annotations

import ipaddress
import re
from typing import TypeAlias

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


class InvalidObject(ValueError):
    """A Felix object with a field we cannot use; the message names the field and value."""


def parse_mac(text: str) -> int:
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise InvalidObject(f"invalid MAC address {text!r}")
    try:
        return int("".join(parts), 16)
    except ValueError:
        raise InvalidObject(f"invalid MAC address {text!r}") from None


def format_mac(value: int) -> str:
    raw = value.to_bytes(6, "big")
    return ":".join(f"{b:02x}" for b in raw)


# A plain address or CIDR: hex digits, dots and colons, then an optional prefix length. Scoped
# IPv6 ("fe80::1%eth0"), netmask suffixes and whitespace are refused: Felix never sends them.
_PLAIN = re.compile(r"[0-9A-Fa-f.:]+(/[0-9]{1,3})?")


def check_plain(text: str, field: str) -> None:
    if not _PLAIN.fullmatch(text):
        raise InvalidObject(f"{field}: {text!r} is not a plain IP address or CIDR")


def parse_address(text: str, field: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    check_plain(text, field)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidObject(f"invalid IP address {text!r} in {field}") from None


def parse_net(text: str, field: str) -> IPNetwork:
    check_plain(text, field)
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidObject(f"invalid CIDR {text!r} in {field}") from None


# An address prefix as plain integers, (IP version, network, prefix length): IP set members
# are kept this way, much smaller and cheaper to compare than ipaddress objects.
Prefix = tuple[int, int, int]
PREFIX_BITS = {4: 32, 6: 128}


def prefix_mask(version: int, length: int) -> int:
    width = PREFIX_BITS[version]
    return ((1 << width) - 1) ^ ((1 << (width - length)) - 1)


def prefix_of(net: IPNetwork) -> Prefix:
    return (net.version, int(net.network_address), net.prefixlen)


def parse_prefix(text: str, field: str) -> Prefix:
    """A CIDR or bare address as a Prefix; IPv4 "a.b.c.d[/n]" without ipaddress objects."""
    addr, slash, length_text = text.partition("/")
    parts = addr.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts):
        octets = [int(p) for p in parts]
        length = int(length_text) if slash and length_text.isdigit() else (-1 if slash else 32)
        if all(o <= 255 for o in octets) and 0 <= length <= 32:
            value = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
            return (4, value & prefix_mask(4, length), length)
    return prefix_of(parse_net(text, field))
