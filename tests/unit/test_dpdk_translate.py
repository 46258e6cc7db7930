"""P4Runtime entries become the SWX entry text of the packaged spec, by name through p4c-dpdk's
context JSON; frames a NIC would drop never reach the pipeline. No DPDK needed."""

from __future__ import annotations

import ipaddress
import json
import struct

import pytest
from finsy.proto import p4r
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from felix_p4.p4.artefacts import P4SRC, load_p4info
from felix_p4.p4.schema import PipelineSchema
from felix_p4.pipeline.entries import Exact, Lpm, TableEntry, Ternary
from felix_p4.softswitch.dpdk import _with_sizes
from felix_p4.softswitch.dpdk_translate import SWX_PRIORITY_MAX, PipelineMap, TranslationError
from felix_p4.softswitch.ingress import ingress_drop_reason
from felix_p4.swx import spec as swx_spec

P4INFO = load_p4info(P4SRC / "felix_pna.p4info.txtpb")
CONTEXT = json.loads((P4SRC / "felix_pna.context.json").read_text())
SPEC_TEXT = (P4SRC / "felix_pna.spec").read_text()
SPEC = swx_spec.parse(SPEC_TEXT)
MAP = PipelineMap.build(P4INFO, CONTEXT, SPEC)
SCHEMA = PipelineSchema(P4INFO)


def text(entry: TableEntry) -> str:
    return MAP.entry(MAP.by_name[entry.table], SCHEMA.encode(entry)).text


def test_every_p4info_table_and_action_resolves_to_the_spec_by_the_context():
    assert {t.preamble.name for t in P4INFO.tables} == set(MAP.by_name)
    assert MAP.by_name["egress_stage_0"].spec_name == "_egress_stage"
    assert MAP.by_name["egress_stage_1"].spec_name == "_egress_stage_0"
    assert MAP.by_name["ingress_stage_6"].spec_name == "_ingress_stage_5"
    conntrack = MAP.by_name["conntrack"]
    assert conntrack.learner and conntrack.spec_name == "conntrack"
    assert {a.spec_name for a in conntrack.actions.values()} == {"ct_established", "ct_learn"}
    for table in MAP.tables.values():
        assert {a.spec_name for a in table.actions.values()} == set(
            SPEC.tables[table.spec_name].actions
        )


def test_the_tables_keep_the_order_the_pipeline_applies_them():
    assert MAP.order[:7] == (
        "port_classify",
        "source_check_v4",
        "source_check_v6",
        "node",
        "tunnel_sources",
        "services",
        "service_backends",
    )
    assert MAP.order[-3:] == ("conntrack", "peer_ports", "next_hops")
    assert MAP.order.index("egress_stage_6") < MAP.order.index("ingress_stage_0")


def test_an_exact_entry_names_spec_action_and_arguments_in_spec_order():
    entry = TableEntry(
        "port_classify",
        (("port", Exact(3)),),
        "workload_port",
        (("port", 3), ("egress_program", 7), ("gateway_mac", 0xEEEEEEEEEEEE)),
    )

    assert text(entry) == (
        "match 0x3 action _workload_port_0 gateway_mac 0xeeeeeeeeeeee egress_program 0x7 port 0x3"
    )


def test_lpm_becomes_a_prefix_mask_and_takes_no_priority():
    entry = TableEntry(
        "source_check_v4",
        (("port", Exact(1)), ("src", Lpm(int(ipaddress.ip_address("10.65.0.0")), 16))),
        "allow_source",
    )

    assert text(entry) == "match 0x1 0xa410000/0xffff0000 action _allow_source_0"


def test_ternary_fields_become_value_mask_omitted_ones_0_0_and_priority_is_inverted():
    entry = TableEntry(
        "egress_stage_2",
        (("program", Exact(9)), ("proto", Ternary(6, 0xFF)), ("dst_port", Ternary(80, 0xFFFF))),
        "rule_deny",
        priority=100,
    )

    dont_care = "0x0/0x0"
    assert text(entry) == (
        f"match 0x9 {dont_care} 0x6/0xff {dont_care} {dont_care} {dont_care} {dont_care} "
        f"{dont_care} 0x50/0xffff {dont_care} {dont_care} "
        f"priority {SWX_PRIORITY_MAX - 100} action _rule_deny_2"
    )


@given(st.integers(1, SWX_PRIORITY_MAX), st.integers(1, SWX_PRIORITY_MAX))
def test_the_higher_p4runtime_priority_is_the_lower_swx_priority(a, b):
    def swx(priority: int) -> int:
        entry = TableEntry(
            "egress_stage_0", (("program", Exact(1)),), "rule_allow", priority=priority
        )
        return int(text(entry).split(" priority ")[1].split()[0])

    assert 0 <= swx(a) <= SWX_PRIORITY_MAX - 1
    assert (a > b) == (swx(a) < swx(b))


def test_a_priority_swx_cannot_hold_is_refused():
    entry = TableEntry(
        "egress_stage_0", (("program", Exact(1)),), "rule_allow", priority=SWX_PRIORITY_MAX + 1
    )
    with pytest.raises(TranslationError, match="priority"):
        text(entry)


def test_the_same_value_and_mask_is_one_swx_identity_however_p4runtime_encodes_it():
    table = MAP.by_name["routes_v4"]
    short = p4r.FieldMatch(
        field_id=1, lpm=p4r.FieldMatch.LPM(value=b"\x0a\x41\x00\x00", prefix_len=16)
    )
    padded = p4r.FieldMatch(
        field_id=1, lpm=p4r.FieldMatch.LPM(value=b"\x00\x0a\x41\x00\x00", prefix_len=16)
    )

    assert MAP.match(table, [short]) == MAP.match(table, [padded]) == "match 0xa410000/0xffff0000"
    assert MAP.match(table, []) == "match 0x0/0x0"


def test_the_parameters_that_become_the_output_port_are_found_in_the_spec():
    ports = {
        (t.name, a.name): sorted(a.output_port_params)
        for t in MAP.tables.values()
        for a in t.actions.values()
        if a.output_port_params
    }

    assert ports == {
        ("port_classify", "workload_port"): ["port"],
        ("routes_v4", "to_workload"): ["port"],
        ("routes_v4", "to_host"): ["port"],
        ("routes_v6", "to_workload"): ["port"],
        ("routes_v6", "to_host"): ["port"],
        ("peer_ports", "bridge_to"): ["port"],
        ("next_hops", "set_next_hop"): ["port"],
    }  # not set_backend's port: that is an L4 port


def test_only_all_exact_contiguous_keys_are_swx_hash_tables():
    hashed = {t.name for t in MAP.tables.values() if t.hashed}
    assert hashed == {
        "port_classify",
        "peer_ports",
        "next_hops",
        "services",
        "service_backends",
        "portset_src",
        "portset_dst",
    }
    assert MAP.by_name["egress_stage_0"].prioritised
    assert not MAP.by_name["routes_v4"].prioritised


def test_the_initial_defaults_are_the_specs():
    defaults = MAP.initial_defaults()
    assert defaults["routes_v4"] == ("no_route", {})
    assert defaults["conntrack"] == ("ct_learn", {})


def test_table_limits_rewrite_only_that_tables_size():
    small = swx_spec.parse(_with_sizes(SPEC_TEXT, MAP, {"egress_stage_1": 5}))

    assert small.tables["_egress_stage_0"].size == 5
    assert small.tables["_egress_stage"].size == SPEC.tables["_egress_stage"].size
    with pytest.raises(TranslationError, match="not a"):
        _with_sizes(SPEC_TEXT, MAP, {"conntrack": 5})


def test_a_spec_that_does_not_match_the_p4info_is_refused_naming_the_table():
    renamed = swx_spec.parse(SPEC_TEXT.replace("table _routes_v4 {", "table _routes_four {"))
    with pytest.raises(TranslationError, match="routes_v4"):
        PipelineMap.build(P4INFO, CONTEXT, renamed)


# ----------------------------------------------------------------------- the port check

MTU = 2048


def test_complete_frames_pass_the_port():
    v4 = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP()
    v6 = Ether() / IPv6(src="fd00::1", dst="fd00::2") / TCP()
    arp = Ether() / ARP(pdst="10.0.0.1")
    for frame in (v4, v6, arp, v4 / (b"x" * 100)):
        assert ingress_drop_reason(bytes(frame), MTU) is None


def test_a_frame_shorter_than_its_ip_length_claims_is_dropped():
    v4 = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP())
    v6 = bytes(Ether() / IPv6(src="fd00::1", dst="fd00::2") / TCP())

    assert "IPv4 total length 40" in str(ingress_drop_reason(v4[:-1], MTU))
    assert "IPv6 payload length 20" in str(ingress_drop_reason(v6[:-1], MTU))
    assert "shorter than" in str(ingress_drop_reason(v4[:20], MTU))
    assert "Ethernet" in str(ingress_drop_reason(v4[:10], MTU))
    assert "ARP" in str(ingress_drop_reason(bytes(Ether() / ARP())[:30], MTU))


def test_a_frame_longer_than_the_mtu_is_dropped_and_padding_is_not_a_reason():
    long = bytes(Ether() / IP() / (b"x" * 3000))
    padded = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP()) + b"\0" * 6

    assert "MTU" in str(ingress_drop_reason(long, MTU))
    assert ingress_drop_reason(padded, MTU) is None
    assert struct.unpack_from("!H", padded, 16)[0] == 40
