"""Every Felix payload is handled or deliberately ignored, and the docs table says which."""

from pathlib import Path

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.dispatch import HANDLED, IGNORED

DOC = (Path(__file__).resolve().parents[2] / "docs" / "felix-payloads.md").read_text()


def test_every_payload_is_classified_once():
    names = {f.name for f in fb.ToDataplane.DESCRIPTOR.oneofs_by_name["payload"].fields}
    assert set(HANDLED) | set(IGNORED) == names
    assert not set(HANDLED) & set(IGNORED)


def test_docs_table_matches_the_code():
    for name in HANDLED:
        assert f"| `{name}` |" in DOC and f"| handled | {HANDLED[name]} |" in DOC
    for name, reason in IGNORED.items():
        assert f"| `{name}` |" in DOC and f"| ignored | {reason} |" in DOC
