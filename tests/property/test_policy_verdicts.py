"""For random Calico policies, IP sets and packets, the compiled pipeline's verdict equals the
reference evaluator's (Felix's semantics, evaluated directly)."""

from __future__ import annotations

from finsy.proto import p4r
from hypothesis import given
from hypothesis import strategies as st
from policy_universe import (
    HOST_PORT,
    POD_A,
    POD_B,
    packet_spec,
    packets,
    world_entries,
    worlds,
)

from felix_p4.model.reference import PolicyView, evaluate
from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema
from felix_p4.softswitch.behavioural import FelixPipeline
from felix_p4.softswitch.packet import build
from felix_p4.softswitch.service import initial_defaults
from felix_p4.softswitch.store import TableStore

P4INFO = load_p4info(DEFAULT_P4INFO)
SCHEMA = PipelineSchema(P4INFO)


def compile_world(world: dict) -> tuple[FelixPipeline, dict]:
    """Install what the driver would for pods A and B into a fresh table store."""
    store = TableStore(P4INFO, initial_defaults=initial_defaults(P4INFO))
    entries, endpoints = world_entries(world)
    for entry in entries:
        store.write(
            p4r.Update(type=p4r.Update.INSERT, entity=p4r.Entity(table_entry=SCHEMA.encode(entry)))
        )
    return FelixPipeline(store), endpoints


@given(world=worlds(), flows=st.lists(packets(), min_size=1, max_size=6))
def test_pipeline_verdict_equals_reference(world, flows):
    pipeline, endpoints = compile_world(world)
    view = PolicyView(world["policies"], world["profiles"], world["ipsets"])
    for how, pkt in flows:
        if how == "from-a":
            in_port, src_ep = POD_A[3], endpoints["cali-a"]
            dst_ep = endpoints["cali-b"] if str(pkt.dst) in (POD_B[1], POD_B[2]) else None
            if str(pkt.dst) in (POD_A[1], POD_A[2]):
                dst_ep = endpoints["cali-a"]
        else:
            in_port, src_ep, dst_ep = HOST_PORT, None, endpoints["cali-b"]
        expected = evaluate(src_ep, dst_ep, pkt, view)
        spec = packet_spec(pkt)
        if how == "from-a":
            spec["src_mac"] = "0a:00:00:00:00:01"
        result = pipeline.process(in_port, build(spec), commit=False)
        got = result.verdict != "drop"
        steps = [(s["table"], s["action"], s.get("rule")) for s in result.trace]
        assert got == expected.allowed, (
            f"{how} {pkt}: pipeline {result.verdict} ({result.reason}), "
            f"reference {expected}\ntrace: {steps}"
        )
