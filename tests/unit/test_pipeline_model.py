"""The behavioural model of pipeline/ forwards, answers ARP and drops spoofed sources."""

import ipaddress

import pytest
from finsy.proto import p4r
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from calico_proto import felixbackend_pb2 as fb
from felix_p4.compile.forwarding import ForwardingSettings, endpoint_entries, node_entries
from felix_p4.felix.convert import workload_endpoint
from felix_p4.model.endpoints import WorkloadEndpointKey
from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema
from felix_p4.softswitch.behavioural import FelixPipeline
from felix_p4.softswitch.packet import build
from felix_p4.softswitch.service import initial_defaults
from felix_p4.softswitch.store import TableStore

P4INFO = load_p4info(DEFAULT_P4INFO)
SCHEMA = PipelineSchema(P4INFO)
GW = "ee:ee:ee:ee:ee:ee"
HOST = 100


def _endpoint(name, mac, v4, v6=(), spoof=()):
    pb = fb.WorkloadEndpoint(
        name=name,
        mac=mac,
        ipv4_nets=list(v4),
        ipv6_nets=list(v6),
        allow_spoofed_source_prefixes=list(spoof),
    )
    return workload_endpoint(WorkloadEndpointKey("k8s", f"default/{name}", "eth0"), pb)


@pytest.fixture
def pipeline():
    store = TableStore(P4INFO, initial_defaults=initial_defaults(P4INFO))
    settings = ForwardingSettings(host_port=HOST)
    entries = node_entries(settings)
    entries += endpoint_entries(
        _endpoint(
            "a", "0a:00:00:00:00:02", ["10.65.0.2/32"], ["fd00::2/128"], spoof=["192.168.50.0/24"]
        ),
        1,
        settings,
        0,  # program 0: no policy, so these tests see forwarding alone
        0,
    )
    entries += endpoint_entries(
        _endpoint("b", "0a:00:00:00:00:03", ["10.65.0.3/32"], ["fd00::3/128"]), 2, settings, 0, 0
    )
    for entry in entries:
        store.write(
            p4r.Update(type=p4r.Update.INSERT, entity=p4r.Entity(table_entry=SCHEMA.encode(entry)))
        )
    return FelixPipeline(store)


def test_pod_to_pod_is_routed_with_rewritten_macs_and_valid_checksum(pipeline):
    raw = build(
        {
            "src": "10.65.0.2",
            "dst": "10.65.0.3",
            "proto": "tcp",
            "dport": 80,
            "src_mac": "0a:00:00:00:00:02",
        }
    )
    result = pipeline.process(1, raw)
    assert (result.verdict, result.egress_port) == ("forward", 2)
    out = Ether(result.packet)
    assert out.src == GW and out.dst == "0a:00:00:00:00:03"
    assert out[IP].ttl == 63
    recomputed = Ether(result.packet)
    del recomputed[IP].chksum
    assert Ether(bytes(recomputed))[IP].chksum == out[IP].chksum
    assert out[TCP].dport == 80
    forwarding = {"port_classify", "source_check_v4", "routes_v4"}
    hit = [s["table"] for s in result.trace if s["table"] in forwarding]
    assert hit == ["port_classify", "source_check_v4", "routes_v4"]


def test_ipv6_pod_to_pod_decrements_hop_limit(pipeline):
    result = pipeline.process(2, build({"src": "fd00::3", "dst": "fd00::2", "proto": "udp"}))
    assert (result.verdict, result.egress_port) == ("forward", 1)
    assert Ether(result.packet)[IPv6].hlim == 63


def test_arp_for_gateway_is_answered_on_the_asking_port(pipeline):
    raw = build(
        {"proto": "arp", "src": "10.65.0.2", "dst": "169.254.1.1", "src_mac": "0a:00:00:00:00:02"}
    )
    result = pipeline.process(1, raw)
    assert (result.verdict, result.egress_port) == ("forward", 1)
    reply = Ether(result.packet)
    assert reply.dst == "0a:00:00:00:00:02" and reply.src == GW
    assert reply[ARP].op == 2 and reply[ARP].hwsrc == GW and reply[ARP].psrc == "169.254.1.1"
    assert reply[ARP].pdst == "10.65.0.2" and reply[ARP].hwdst == "0a:00:00:00:00:02"


@pytest.mark.parametrize(
    ("sender", "target"),
    [("0.0.0.0", "10.65.0.2"), ("10.65.0.2", "10.65.0.2")],
    ids=["probe", "announcement"],
)
def test_arp_for_the_askers_own_address_is_not_answered(pipeline, sender, target):
    """RFC 5227: a probe (`arping -D`) or an announcement asks whether anyone else holds the
    sender's address; answering would tell the pod its own address is taken."""
    raw = build({"proto": "arp", "src": sender, "dst": target, "src_mac": "0a:00:00:00:00:02"})
    result = pipeline.process(1, raw)
    assert result.verdict == "drop" and "own address" in result.reason


@pytest.mark.parametrize("src", ["10.65.0.3", "10.65.0.200", "fd00::3"])
def test_spoofed_source_is_dropped(pipeline, src):
    dst = "10.65.0.3" if ipaddress.ip_address(src).version == 4 else "fd00::3"
    result = pipeline.process(1, build({"src": src, "dst": dst, "proto": "tcp"}))
    assert result.verdict == "drop" and "spoof" in result.reason


def test_allow_spoofed_source_prefix_is_honoured(pipeline):
    result = pipeline.process(1, build({"src": "192.168.50.7", "dst": "10.65.0.3", "proto": "udp"}))
    assert result.verdict == "forward"


def test_off_node_destination_goes_to_the_host_port_unchanged(pipeline):
    raw = build({"src": "10.65.0.2", "dst": "10.65.1.5", "proto": "icmp"})
    result = pipeline.process(1, raw)
    assert (result.verdict, result.egress_port) == ("host", HOST)
    assert result.packet == raw


def test_host_port_traffic_skips_source_check(pipeline):
    result = pipeline.process(
        HOST, build({"src": "192.168.0.12", "dst": "10.65.0.2", "proto": "tcp"})
    )
    assert (result.verdict, result.egress_port) == ("forward", 1)


def test_unknown_port_and_expiring_ttl_are_dropped(pipeline):
    raw = build({"src": "10.65.0.2", "dst": "10.65.0.3", "proto": "tcp"})
    assert pipeline.process(7, raw).verdict == "drop"
    assert (
        pipeline.process(1, build({"src": "10.65.0.2", "dst": "10.65.0.3", "ttl": 1})).verdict
        == "drop"
    )


def test_truncated_packet_is_dropped_at_the_port(pipeline):
    raw = build({"src": "10.65.0.2", "dst": "10.65.0.3", "proto": "tcp"})
    result = pipeline.process(1, raw[:20])
    assert result.verdict == "drop" and "shorter than its IPv4 total length" in result.reason


def test_a_frame_longer_than_the_port_mtu_is_dropped_at_the_port(pipeline):
    """As the DPDK engine's ports do (found by the differential tests: the model forwarded)."""
    fits = Ether(build({"src": "10.65.0.2", "dst": "10.65.1.5", "proto": "udp"}))
    fits[IP].add_payload(bytes(2048 - len(fits)))
    fits[IP].len, fits[UDP].len, fits[UDP].chksum = None, None, None
    longer = Ether(bytes(fits))
    longer[IP].add_payload(b"\0")
    longer[IP].len, longer[UDP].len, longer[UDP].chksum = None, None, None

    assert pipeline.process(1, bytes(fits)).verdict == "host"
    result = pipeline.process(1, bytes(longer))
    assert result.verdict == "drop" and "longer than the port MTU 2048" in result.reason


def test_checksums_pass_through_the_rewrite_even_untranslated(pipeline):
    """FelixRewrite runs for every forwarded IP packet, and P4-DPDK's InternetChecksum never
    writes zero: a zero IPv4 or TCP checksum leaves as 0xffff (found by the differential
    tests: the model left untranslated packets alone)."""
    sent = Ether(build({"src": "10.65.0.2", "dst": "10.65.1.5", "proto": "tcp"}))
    sent[IP].chksum, sent[TCP].chksum = 0, 0

    result = pipeline.process(1, bytes(sent))

    out = Ether(result.packet)
    assert result.verdict == "host"
    assert (out[IP].chksum, out[TCP].chksum) == (0xFFFF, 0xFFFF)
    assert bytes(out[TCP].payload) == bytes(sent[TCP].payload)
