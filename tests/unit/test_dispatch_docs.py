"""Every Felix payload is routed by one table, and the docs table says what each drives."""

from pathlib import Path

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.dispatch import PAYLOADS, handled

DOC = (Path(__file__).resolve().parents[2] / "docs" / "felix-payloads.md").read_text()
FIELDS = fb.ToDataplane.DESCRIPTOR.oneofs_by_name["payload"].fields


def test_every_payload_is_routed_or_ignored():
    assert set(PAYLOADS) == {f.name for f in FIELDS}
    for name, payload in PAYLOADS.items():
        # A payload either enters the model and drives managers, or is ignored outright.
        assert (payload.apply is None) == (not payload.managers), name


def test_docs_table_matches_the_code():
    for field in FIELDS:
        payload = PAYLOADS[field.name]
        status = "handled" if handled(field.name) else "ignored"
        managers = ", ".join(str(m) for m in payload.managers) or "-"
        row = f"| `{field.name}` | {field.number} | {status} | {managers} | {payload.does} |"
        assert row in DOC, row
