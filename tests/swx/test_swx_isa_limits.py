"""Operand offset limits of DPDK 22.11's SWX instructions, which pipeline/ must stay within: a
field past byte 255 of its struct aliases an earlier one, and a hash result lands in the right
place only if its metadata field starts before byte 32. Nothing warns at build time."""

from pathlib import Path

import pytest

from felix_p4.swx import SwxPipeline, availability

UNAVAILABLE = availability()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

ETHERNET = """
struct ethernet_h {
	bit<48> dst_addr
	bit<48> src_addr
	bit<16> ethertype
}
header ethernet instanceof ethernet_h
"""


def spec(tmp_path: Path, name: str, n_pad_words: int, apply: str, far: str) -> Path:
    """Metadata: port_in (byte 0), port_out (byte 4), n_pad_words x 8 bytes, then `far`."""
    pads = "\n".join(f"\tbit<64> pad{i}" for i in range(n_pad_words))
    path = tmp_path / f"{name}.spec"
    path.write_text(
        f"{ETHERNET}\nstruct metadata_t {{\n\tbit<32> port_in\n\tbit<32> port_out\n{pads}\n"
        f"{far}\n}}\nmetadata instanceof metadata_t\napply {{\n{apply}\n}}\n"
    )
    return path


def out_ports(path: Path) -> list[int]:
    with SwxPipeline.load(path, 2, 256) as p:  # the EAL size every SWX test file asks for
        return [port for port, _ in p.process(0, bytes(range(14)))]


def test_a_metadata_field_at_byte_260_aliases_the_one_at_byte_4(tmp_path):
    # 8 + 31 * 8 = 256: far0 starts at byte 256, far at 260 (= 4 + 256, where port_out is).
    apply = """
	rx m.port_in
	extract h.ethernet
	mov m.port_out 0
	mov m.far 1
	emit h.ethernet
	tx m.port_out"""
    path = spec(tmp_path, "alias", 31, apply, "\tbit<32> far0\n\tbit<32> far")

    assert out_ports(path) == [1]  # writing m.far wrote m.port_out


@pytest.mark.parametrize(("n_pad_words", "hash_lands"), [(2, True), (3, False)])
def test_a_hash_result_lands_only_in_a_field_before_byte_32(tmp_path, n_pad_words, hash_lands):
    # m.h starts at byte 8 + 8 * n_pad_words: 24 (fine) or 32 (the result goes elsewhere).
    apply = """
	rx m.port_in
	extract h.ethernet
	mov m.h 0
	mov m.port_out 0
	hash jhash m.h h.ethernet.dst_addr h.ethernet.ethertype
	jmpeq ZERO m.h 0
	mov m.port_out 1
	ZERO : emit h.ethernet
	tx m.port_out"""
    path = spec(tmp_path, f"hash{n_pad_words}", n_pad_words, apply, "\tbit<32> h")

    assert out_ports(path) == ([1] if hash_lands else [0])
