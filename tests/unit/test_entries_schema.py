"""P4Info names resolve, entries encode canonically and decode back to the same value."""

import pytest
from finsy.proto import p4i
from hypothesis import given
from hypothesis import strategies as st

from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema, SchemaError, ValueTooWide, to_bytes
from felix_p4.pipeline import PIPELINE
from felix_p4.pipeline.entries import Exact, Lpm, Range, TableEntry, Ternary

SCHEMA = PipelineSchema(load_p4info(DEFAULT_P4INFO))


def test_checked_in_p4info_is_the_declared_pipeline():
    SCHEMA.check(PIPELINE)


def _altered(change) -> PipelineSchema:
    info = p4i.P4Info()
    info.CopyFrom(load_p4info(DEFAULT_P4INFO))
    change(info)
    return PipelineSchema(info)


def _table(info, name):
    return next(t for t in info.tables if t.preamble.name == name)


def _action(info, name):
    return next(a for a in info.actions if a.preamble.name == name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: i.tables.remove(_table(i, "routes_v6")), "no table 'routes_v6'"),
        (
            lambda i: setattr(_table(i, "port_classify").match_fields[0], "bitwidth", 16),
            "table port_classify: match field port is 16 bits",
        ),
        (
            lambda i: setattr(_table(i, "routes_v4").match_fields[0], "match_type", 2),
            "table routes_v4: match field dst",
        ),
        (
            lambda i: setattr(_action(i, "to_workload").params[0], "bitwidth", 9),
            "action to_workload: P4Info parameters",
        ),
        (
            lambda i: _table(i, "services").action_refs.pop(1),
            "table services: P4Info lacks action service_reject",
        ),
    ],
)
def test_a_different_pipeline_is_refused_with_one_line_naming_it(change, message):
    with pytest.raises(SchemaError, match=message):
        _altered(change).check(PIPELINE)


@pytest.mark.parametrize(
    "entry",
    [
        TableEntry.make("port_classify", {"port": Exact(1 << 32)}, "host_port"),
        TableEntry.make("routes_v4", {"dst": Lpm(1, 33)}, "no_route"),
        TableEntry.make(
            "port_classify",
            {"port": Exact(1)},
            "workload_port",
            {"gateway_mac": 1 << 48, "egress_program": 1, "port": 1},
        ),
        TableEntry.make(
            "egress_stage_0", {"program": Exact(1), "dst_port": Range(0, 1 << 16)}, "rule_allow"
        ),
        TableEntry.make("routes_v6", {"dst_hi": Ternary(1 << 64, 1)}, "no_route"),
    ],
)
def test_values_wider_than_their_field_are_refused_not_truncated(entry):
    with pytest.raises(ValueTooWide):
        SCHEMA.encode(entry)


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
