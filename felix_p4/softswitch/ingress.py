"""What the embedded target's ports refuse before either engine sees a frame, as a NIC would."""

from __future__ import annotations

import struct

from felix_p4.softswitch.packet import ETH_ARP, ETH_IPV4, ETH_IPV6

# The longest frame a port takes (SWX's fd port cuts longer ones; the target drops them).
PORT_MTU = 2048


def ingress_drop_reason(frame: bytes, mtu: int = PORT_MTU) -> str | None:
    """Why a port drops `frame` before the pipeline sees it, or None.

    P4-DPDK's `extract` copies a header without checking that the frame holds it, and the
    parser takes the IP header's length at its word, so a frame shorter than its headers (an
    IPv4 frame shorter than 14 + total length, IPv6 shorter than 54 + payload length) would be
    parsed from bytes past its end. A frame longer than the port's MTU would be cut by the port.
    Both engines drop both, so they see the same frames.
    """
    if len(frame) > mtu:
        return f"frame of {len(frame)} bytes is longer than the port MTU {mtu}"
    if len(frame) < 14:
        return f"frame of {len(frame)} bytes is shorter than an Ethernet header"
    (ether_type,) = struct.unpack_from("!H", frame, 12)
    need = 0
    if ether_type == ETH_ARP:
        need, what = 14 + 28, "an ARP header"
    elif ether_type == ETH_IPV4:
        total = struct.unpack_from("!H", frame, 16)[0] if len(frame) >= 18 else 0
        need, what = 14 + max(20, total), f"its IPv4 total length {total} claims"
    elif ether_type == ETH_IPV6:
        payload = struct.unpack_from("!H", frame, 18)[0] if len(frame) >= 20 else 0
        need, what = 54 + payload, f"its IPv6 payload length {payload} claims"
    if len(frame) < need:
        return f"frame of {len(frame)} bytes is shorter than {what} ({need} bytes)"
    return None
