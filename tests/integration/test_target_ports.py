"""`felix-p4 target --port NAME=N` refusing what it cannot bind: exit 2 with one line naming
the binding (binding real interfaces is tested in tests/netns)."""

import subprocess
import sys

import pytest

from felix_p4.swx import availability

CLI = [sys.executable, "-m", "felix_p4", "target", "--listen", "127.0.0.1:0"]


def _refusal(*args: str) -> str:
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_a_port_that_is_not_name_equals_number_is_refused():
    assert _refusal("--port", "cali1") == (
        "felix-p4 target: --port: 'cali1' is not NAME=N (an interface and a port number)"
    )


def test_one_port_for_two_interfaces_is_refused_naming_both():
    line = _refusal("--port", "cali1=3", "--port", "cali2=3")
    assert line == "felix-p4 target: --port: port 3 is bound to both cali1 and cali2"


def test_an_interface_that_cannot_be_bound_is_refused_naming_it():
    # As root the interface does not exist; otherwise raw sockets are not permitted.
    line = _refusal("--port", "nosuch-if0=1")
    assert line.startswith("felix-p4 target: cannot bind interface nosuch-if0: ")


def test_a_port_beyond_the_dpdk_targets_ports_is_refused():
    reason = availability()
    if reason is not None:
        pytest.skip(reason)
    line = _refusal("--engine", "dpdk", "--dpdk-ports", "8", "--port", "cali1=8")
    assert line == (
        "felix-p4 target: --port cali1=8: the DPDK target has ports 0..7 (--dpdk-ports)"
    )
