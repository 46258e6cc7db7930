"""The checked-in artefacts of pipeline/ agree with each other, with the P4 source and with the
pipeline declaration, and the P4-DPDK spec respects SWX's limits. No p4c needed.

The artefacts are p4c-dpdk's output for pipeline/felix_pna.p4 (`make pipeline`): the P4Info,
the spec P4-DPDK runs, the context JSON and the BF-RT JSON IPDK's pipeline builder reads.
"""

import json
import re

import pytest

from felix_p4.p4.artefacts import DEFAULT_P4INFO, P4SRC, load_p4info
from felix_p4.pipeline import PIPELINE
from felix_p4.swx import spec as swx_spec

P4INFO = load_p4info(DEFAULT_P4INFO)
SOURCE = "\n".join(
    p.read_text() for p in sorted(P4SRC.iterdir(), key=lambda p: p.name) if p.name.endswith(".p4")
)
SPEC_TEXT = (P4SRC / "felix_pna.spec").read_text()
SPEC = swx_spec.parse(SPEC_TEXT)
CONTEXT = json.loads((P4SRC / "felix_pna.context.json").read_text())
BFRT = json.loads((P4SRC / "felix_pna.bfrt.json").read_text())
DECLARED = re.compile(r'@id\((0x[0-9a-fA-F]+)\)\s*@name\("\.(\w+)"\)\s*(table|action)\s+\w+')
MACRO_TABLES = re.compile(r'RULE_TABLE\(\w+, "\.(\w+)", (0x[0-9a-fA-F]+)\)')
# What the learners may take of the target's memory (stated in pipeline/README.md).
LEARNER_BUDGET = 256 << 20


def _by_name(items):
    return {i.preamble.name: i.preamble.id for i in items}


def test_every_declared_table_and_action_is_in_the_p4info_with_its_id():
    tables, actions = _by_name(P4INFO.tables), _by_name(P4INFO.actions)
    declared = DECLARED.findall(SOURCE)
    assert len(declared) > 40
    for ident, name, kind in declared:
        known = tables if kind == "table" else actions
        assert known.get(name) == int(ident, 16), f"{kind} {name}"
    for name, ident in MACRO_TABLES.findall(SOURCE):
        assert tables.get(name) == int(ident, 16), name


def test_the_declaration_names_every_table_and_action_of_the_p4info():
    assert {t.name for t in PIPELINE.tables} == set(_by_name(P4INFO.tables))
    assert set(PIPELINE.actions) == set(_by_name(P4INFO.actions))
    sizes = {t.preamble.name: t.size for t in P4INFO.tables}
    for table in PIPELINE.tables:
        assert table.size == sizes[table.name], table.name


def test_p4info_is_for_pna_without_action_profiles():
    assert P4INFO.pkg_info.arch == "pna"
    assert not P4INFO.action_profiles  # backends are buckets, not a selector


def test_context_and_bfrt_name_the_p4info_tables_with_their_ids():
    tables = _by_name(P4INFO.tables)
    actions = _by_name(P4INFO.actions)
    context = {t["name"]: t for t in CONTEXT["tables"]}
    assert set(context) == set(tables)
    for name, table in context.items():
        assert table["handle"] == tables[name], name
        assert table["target_name"] in SPEC.tables, (name, table["target_name"])
        info = next(t for t in P4INFO.tables if t.preamble.name == name)
        keys = table.get("match_key_fields", [])  # none for a keyless table
        assert [k["name"] for k in keys] == [m.name for m in info.match_fields]
        for action in table["actions"]:
            assert actions[action["name"]] == action["handle"], (name, action["name"])
            assert action["target_name"].split(".")[-1] in SPEC.actions, action["target_name"]
    bfrt = {t["name"].removeprefix("pipe."): t for t in BFRT["tables"]}
    for name, ident in tables.items():
        assert bfrt[name]["id"] == ident, name


def test_the_spec_keys_match_the_p4info_kinds():
    """P4Runtime ternary and range are SWX wildcard, lpm is lpm, exact is exact; no range."""
    kinds = {2: "exact", 3: "lpm", 4: "wildcard"}
    context = {t["name"]: t for t in CONTEXT["tables"]}
    for info in P4INFO.tables:
        table = SPEC.tables[context[info.preamble.name]["target_name"]]
        if table.learner:
            continue
        for field, key in zip(info.match_fields, table.key, strict=True):
            assert field.match_type in kinds, (info.preamble.name, field.name)
            assert key.kind == kinds[field.match_type], (info.preamble.name, field.name)


def test_every_struct_fits_swx_operand_offsets():
    assert SPEC.violations() == []
    assert SPEC.metadata_struct.size <= swx_spec.MAX_OPERAND_OFFSET + 1


def test_each_table_keys_on_one_struct():
    for table in SPEC.tables.values():
        if not table.key:
            continue  # the node table: its default entry only
        owners = {k.operand.split(".")[1] if k.operand.startswith("h.") else "m" for k in table.key}
        assert len(owners) == 1, (table.name, owners)


def test_learner_memory_is_within_the_stated_budget():
    learners = [t for t in SPEC.tables.values() if t.learner]
    assert len(learners) == 4
    total = sum(SPEC.learner_bytes(t) for t in learners)
    assert total <= LEARNER_BUDGET, total >> 20


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "struct metadata_t {\n\tbit<8> a\n" + "\tbit<64> pad\n" * 32 + "\tbit<8> late\n}\n"
            "metadata instanceof metadata_t\n",
            "field late starts at byte 257",
        ),
        (
            "struct metadata_t {\n" + "\tbit<64> pad\n" * 5 + "\tbit<32> h\n}\n"
            "metadata instanceof metadata_t\napply {\n\thash jhash m.h m.pad m.pad\n}\n",
            "hash destination m.h at byte 40",
        ),
    ],
)
def test_the_checker_finds_what_swx_would_silently_get_wrong(text, problem):
    assert any(problem in v for v in swx_spec.parse(text).violations())
