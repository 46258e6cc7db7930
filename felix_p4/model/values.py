"""Value types and parsers shared by the model: addresses, networks, MACs, validation errors."""

from __future__ import annotations

import ipaddress
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


def parse_net(text: str, field: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidObject(f"invalid CIDR {text!r} in {field}") from None
