"""The reproductions in docs/upstream-defects.md behave on DPDK as the write-up says. If one
stops reproducing (a fixed DPDK, or a p4c whose output was regenerated), the write-up is out of
date: update it with the test."""

import struct
from pathlib import Path

import pytest

from felix_p4.swx import SwxPipeline, availability

UNAVAILABLE = availability()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

UPSTREAM = Path(__file__).resolve().parents[2] / "docs" / "upstream"


def _run(spec: str, frame: bytes) -> bytes:
    with SwxPipeline.load(UPSTREAM / spec, n_ports=1, memory_mb=64) as p:
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
