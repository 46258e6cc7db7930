"""The checked-in P4Info, the P4 source and the behavioural model name the same things.

The P4Info is p4c-dpdk's output for pipeline/felix_pna.p4 (`make p4info`); without p4c at
hand, this checks that every @id/@name the source declares is in it with that id.
"""

import re

from felix_p4.p4.artefacts import DEFAULT_P4INFO, P4SRC, load_p4info
from felix_p4.pipeline import PIPELINE

P4INFO = load_p4info(DEFAULT_P4INFO)
SOURCE = "\n".join(
    p.read_text() for p in sorted(P4SRC.iterdir(), key=lambda p: p.name) if p.name.endswith(".p4")
)
DECLARED = re.compile(r'@id\((0x[0-9a-fA-F]+)\)\s*@name\("\.(\w+)"\)\s*(table|action)\s+\w+')
MACRO_TABLES = re.compile(r'RULE_TABLE\(\w+, "\.(\w+)", (0x[0-9a-fA-F]+)\)')


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


def test_p4info_is_for_pna_and_has_the_service_selector():
    assert P4INFO.pkg_info.arch == "pna"
    (profile,) = P4INFO.action_profiles
    assert profile.preamble.alias == "service_selector" and profile.with_selector
