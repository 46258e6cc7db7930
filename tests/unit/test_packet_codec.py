"""Our packet builder agrees with scapy, an independent implementation."""

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from felix_p4.softswitch.packet import build, describe


def test_tcp_ipv4_fields_and_checksums_match_scapy():
    raw = build(
        {
            "src": "10.65.0.2",
            "dst": "10.65.0.3",
            "proto": "tcp",
            "sport": 40000,
            "dport": 80,
            "tcp_flags": "SA",
            "src_mac": "02:00:00:00:00:01",
        }
    )
    pkt = Ether(raw)
    assert pkt[Ether].dst == "ee:ee:ee:ee:ee:ee"
    assert pkt[IP].src == "10.65.0.2" and pkt[IP].ttl == 64
    assert pkt[TCP].sport == 40000 and pkt[TCP].dport == 80 and str(pkt[TCP].flags) == "SA"
    rebuilt = Ether(raw)
    del rebuilt[IP].chksum
    del rebuilt[TCP].chksum
    rebuilt = Ether(bytes(rebuilt))
    assert rebuilt[IP].chksum == pkt[IP].chksum
    assert rebuilt[TCP].chksum == pkt[TCP].chksum


@pytest.mark.parametrize("proto,layer", [("udp", UDP), ("icmp", ICMP)])
def test_udp_and_icmp_checksums_match_scapy(proto, layer):
    raw = build({"src": "10.0.0.1", "dst": "10.0.0.2", "proto": proto})
    pkt = Ether(raw)
    fresh = Ether(raw)
    del fresh[layer].chksum
    assert Ether(bytes(fresh))[layer].chksum == pkt[layer].chksum


def test_ipv6_udp_checksum_matches_scapy():
    raw = build({"src": "fd00::2", "dst": "fd00::3", "proto": "udp", "sport": 1, "dport": 2})
    pkt = Ether(raw)
    assert pkt[IPv6].hlim == 64
    fresh = Ether(raw)
    del fresh[UDP].chksum
    assert Ether(bytes(fresh))[UDP].chksum == pkt[UDP].chksum


def test_arp_request_and_describe():
    raw = build(
        {"proto": "arp", "src": "10.65.0.3", "dst": "169.254.1.1", "src_mac": "0a:58:0a:41:00:03"}
    )
    pkt = Ether(raw)
    assert pkt[ARP].op == 1 and pkt[ARP].pdst == "169.254.1.1"
    assert pkt[Ether].dst == "ff:ff:ff:ff:ff:ff"
    assert describe(raw)["arp_op"] == "request"


def test_describe_reads_back_what_build_wrote():
    spec = {
        "src": "10.1.2.3",
        "dst": "10.3.2.1",
        "proto": "tcp",
        "sport": 5,
        "dport": 6,
        "tcp_flags": "A",
        "ttl": 9,
        "src_mac": "02:00:00:00:00:09",
        "dst_mac": "02:00:00:00:00:0a",
    }
    assert describe(build(spec)) == spec
