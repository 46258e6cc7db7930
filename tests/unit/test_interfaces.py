"""Binding ports to interfaces, without an interface: `--port NAME=N` parsing, and the kernel
socket filter that is the bound ports' input check dropping exactly the frames the DPDK
engine's port check refuses."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felix_p4.softswitch.dpdk import ingress_drop_reason
from felix_p4.softswitch.interfaces import (
    InterfaceError,
    PortBinding,
    check_bindings,
    length_filter,
)

MAX_FRAME = 2048


def run_filter(program: list[tuple[int, int, int, int]], frame: bytes) -> int:
    """Classic BPF as the kernel runs a socket filter, for the instructions the filter uses:
    the bytes of the frame to keep, 0 to drop it (a load past the end drops it too)."""
    a = x = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x80:  # ld len
            a = len(frame)
        elif code == 0x28:  # ldh [k]
            if k + 2 > len(frame):
                return 0
            (a,) = struct.unpack_from("!H", frame, k)
        elif code == 0x00:  # ld #k
            a = k
        elif code == 0x04:  # add #k
            a = (a + k) & 0xFFFFFFFF
        elif code == 0x07:  # tax
            x = a
        elif code in (0x25, 0x35, 0x15, 0x3D):  # jgt #k, jge #k, jeq #k, jge x
            operand = x if code == 0x3D else k
            taken = {0x25: a > operand, 0x35: a >= operand, 0x15: a == operand}.get(
                code, a >= operand
            )
            pc += jt if taken else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"instruction {code:#x} is not interpreted here")


def test_a_binding_is_an_interface_name_and_a_port():
    assert PortBinding.parse("cali0123456789a=3") == PortBinding("cali0123456789a", 3)
    for text in ("cali1", "=3", "cali1=x", "cali1=-1", "a-name-longer-than-15=1", "a/b=1"):
        with pytest.raises(InterfaceError):
            PortBinding.parse(text)


def test_an_interface_or_a_port_bound_twice_is_refused_naming_both():
    with pytest.raises(InterfaceError, match="port 1 is bound to both cali-a and cali-b"):
        check_bindings([PortBinding("cali-a", 1), PortBinding("cali-b", 1)])
    with pytest.raises(InterfaceError, match="interface cali-a is bound twice"):
        check_bindings([PortBinding("cali-a", 1), PortBinding("cali-a", 2)])


def _frame(ether_type: int, claimed: int, length: int) -> bytes:
    """A frame of `length` bytes whose IPv4 total length / IPv6 payload length is `claimed`."""
    frame = bytearray(max(length, 0))
    if length >= 14:
        struct.pack_into("!H", frame, 12, ether_type)
    if ether_type == 0x0800 and length >= 18:
        frame[14] = 0x45
        struct.pack_into("!H", frame, 16, claimed)
    if ether_type == 0x86DD and length >= 20:
        frame[14] = 0x60
        struct.pack_into("!H", frame, 18, claimed)
    return bytes(frame)


@given(
    ether_type=st.sampled_from([0x0800, 0x86DD, 0x0806, 0x88CC]),
    claimed=st.integers(0, 0xFFFF),
    length=st.one_of(st.integers(0, 120), st.integers(120, MAX_FRAME + 40)),
)
def test_the_socket_filter_drops_exactly_what_the_port_check_refuses(ether_type, claimed, length):
    frame = _frame(ether_type, claimed, length)
    kept = run_filter(length_filter(MAX_FRAME), frame) != 0
    assert kept == (ingress_drop_reason(frame, MAX_FRAME) is None), frame.hex()


def test_the_filter_keeps_real_frames_whole_and_drops_a_truncated_one():
    ipv4 = _frame(0x0800, 40, 54)  # 20-byte IP header and 20 bytes of TCP
    assert run_filter(length_filter(MAX_FRAME), ipv4) >= len(ipv4)
    assert run_filter(length_filter(MAX_FRAME), ipv4[:-1]) == 0
    arp = _frame(0x0806, 0, 42)
    assert run_filter(length_filter(MAX_FRAME), arp) >= 42
    assert run_filter(length_filter(MAX_FRAME), arp[:41]) == 0
