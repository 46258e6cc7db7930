"""The reproductions in docs/upstream-defects.md behave on DPDK as the write-up says. If one
stops reproducing (a fixed DPDK, or a p4c whose output was regenerated), the write-up is out of
date: update it with the test."""

import runpy
import struct
from pathlib import Path

import pytest

from felix_p4.swx import SwxError, SwxPipeline, availability

UNAVAILABLE = availability()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

UPSTREAM = Path(__file__).resolve().parents[2] / "docs" / "upstream"
# The wildcard-tries ACL built with DPDK's largest tries takes 63 MB; one EAL serves the process.
MEMORY_MB = 256


def _run(spec: str, frame: bytes) -> bytes:
    with SwxPipeline.load(UPSTREAM / spec, n_ports=1, memory_mb=MEMORY_MB) as p:
        p.commit()
        [(port, out)] = p.process(0, frame)
        assert port == 0
        return out


def test_a_field_past_byte_255_aliases_one_256_bytes_earlier():
    a = 0x1122334455667788
    out = _run("offset.spec", struct.pack("!QQ", a, 0xFFFFFFFFFFFFFFFF))
    assert struct.unpack("!QQ", out) == (a, a)  # b should be 0: m.late wrote m.f0


def test_a_hash_destination_past_byte_31_lands_elsewhere():
    out = _run("hash.spec", struct.pack("!III", 0x0A000001, 0, 0))
    key, early, result = struct.unpack("!III", out)
    assert key == 0x0A000001 and early != 0 and result == 0  # the hash went to m.early


def test_p4c_dpdk_folds_a_ones_complement_sum_wrongly_unless_copy_propagation_is_off():
    frame = struct.pack("!HHH", 0xFFFF, 0x0002, 0)
    assert struct.unpack("!HHH", _run("checksum-fold.spec", frame))[2] == 0x0001  # wrong
    assert struct.unpack("!HHH", _run("checksum-fold-nocopyprop.spec", frame))[2] == 0x0002


def test_a_field_read_right_after_a_checksum_instruction_sees_its_result():
    # Built with the engine's flags (-fno-strict-aliasing); without them it reads 0.
    out = _run("checksum-alias.spec", struct.pack("!HHH", 0x1234, 95, 0))
    assert struct.unpack("!HHH", out) == (0x1234, 95, 0x11D5)


@pytest.mark.parametrize("wildcard_type", [None, "felix_wildcard"], ids=["dpdk", "felix"])
def test_a_policy_like_wildcard_table_runs_out_of_acl_tries_unless_max_size_is_set(wildcard_type):
    entries = runpy.run_path(str(UPSTREAM / "wildcard-tries.py"))["entries"]()
    spec = UPSTREAM / "wildcard-tries.spec"
    with SwxPipeline.load(spec, n_ports=1, memory_mb=MEMORY_MB, wildcard_type=wildcard_type) as p:
        for line in entries:
            p.table_add("policy", line)
        if wildcard_type is None:  # DPDK's own type: "ACL: Exceeded max number of tries: 8"
            with pytest.raises(SwxError, match="ENODEV"):
                p.commit()
        else:  # felix-p4's, which builds with a non-zero max_size when it must
            p.commit()
