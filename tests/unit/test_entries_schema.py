"""P4Info names resolve, entries encode canonically and decode back to the same value."""

from hypothesis import given
from hypothesis import strategies as st

from felix_p4.compile.forwarding import check_schema
from felix_p4.p4.entries import Exact, Lpm, TableEntry
from felix_p4.p4.pipeline import DEFAULT_P4INFO
from felix_p4.p4.schema import PipelineSchema, load_p4info, to_bytes

SCHEMA = PipelineSchema(load_p4info(DEFAULT_P4INFO))


def test_checked_in_p4info_has_what_the_forwarding_compiler_emits():
    check_schema(SCHEMA)


def test_canonical_bytes_strip_leading_zeros():
    assert to_bytes(0) == b"\x00"
    assert to_bytes(1) == b"\x01"
    assert to_bytes(0x0100) == b"\x01\x00"


@given(
    port=st.integers(0, 2**32 - 1),
    addr=st.integers(0, 2**32 - 1),
    plen=st.integers(0, 32),
    mac=st.integers(0, 2**48 - 1),
)
def test_encode_decode_round_trip(port, addr, plen, mac):
    value = addr & ~((1 << (32 - plen)) - 1) & 0xFFFFFFFF
    entry = TableEntry.make(
        "routes_v4",
        {"dst": Lpm(value, plen)},
        "to_workload",
        {"port": port, "dmac": mac, "smac": 0xEEEEEEEEEEEE},
    )
    pb = SCHEMA.encode(entry)
    assert pb.table_id == SCHEMA.table_id("routes_v4")
    assert SCHEMA.decode(pb) == entry


def test_exact_key_identity_ignores_action():
    a = TableEntry.make("port_classify", {"port": Exact(1)}, "host_port")
    b = TableEntry.make("port_classify", {"port": Exact(1)}, "workload_port", {"gateway_mac": 1})
    assert a.key == b.key and a != b
