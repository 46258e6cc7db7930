"""Address and port rewriting keeps every checksum valid (checked by scapy, independently)."""

import ipaddress

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from felix_p4.softswitch.behavioural import parse, rewrite
from felix_p4.softswitch.packet import build


def _valid(raw: bytes) -> bool:
    pkt = Ether(raw)
    fresh = Ether(raw)
    for layer in (IP, TCP, UDP):
        if layer in fresh:
            del fresh[layer].chksum
    fresh = Ether(bytes(fresh))
    return all(pkt[layer].chksum == fresh[layer].chksum for layer in (IP, TCP, UDP) if layer in pkt)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize(
    "src,dst,new",
    [("10.0.0.1", "10.96.0.10", "10.65.3.4"), ("fd00::1", "fd00:96::10", "fd00:65::99")],
)
@pytest.mark.parametrize("source", [False, True])
def test_rewrite_keeps_checksums_valid(proto, src, dst, new, source):
    raw = build({"src": src, "dst": dst, "proto": proto, "sport": 40000, "dport": 80})
    assert _valid(raw)
    hdr = parse(raw)
    change = (int(ipaddress.ip_address(new)), 8080)
    rewrite(hdr, change if source else None, None if source else change)
    out = hdr.emit()
    assert _valid(out)
    pkt = Ether(out)
    l3 = pkt[IP] if IP in pkt else pkt[IPv6]
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    assert (l3.src if source else l3.dst) == new
    assert (l4.sport if source else l4.dport) == 8080


def test_zero_udp_checksum_stays_zero_on_ipv4():
    raw = bytearray(build({"src": "10.0.0.1", "dst": "10.0.0.2", "proto": "udp"}))
    raw[14 + 20 + 6 : 14 + 20 + 8] = b"\x00\x00"  # IPv4 UDP may omit its checksum
    hdr = parse(bytes(raw))
    rewrite(hdr, None, (int(ipaddress.ip_address("10.0.0.9")), 99))
    assert Ether(hdr.emit())[UDP].chksum == 0


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_rewriting_source_and_destination_together_keeps_checksums_valid(proto):
    raw = build({"src": "10.0.0.1", "dst": "10.96.0.10", "proto": proto, "dport": 80})
    hdr = parse(raw)
    rewrite(hdr, (int(ipaddress.ip_address("169.254.1.1")), 40000), (0x0A410309, 8080))
    assert _valid(hdr.emit())
