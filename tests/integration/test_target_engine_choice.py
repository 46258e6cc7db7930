"""`felix-p4 target --engine dpdk` refusing to start: exit 2 with one line saying why."""

import os
import subprocess
import sys

import pytest

from felix_p4.swx import availability

CLI = [sys.executable, "-m", "felix_p4"]


def test_the_dpdk_engine_where_it_cannot_run_exits_2_saying_why(tmp_path):
    absent = tmp_path / "libfelix_swx.so"
    env = dict(os.environ, FELIX_P4_SWX_LIB=str(absent))

    out = subprocess.run(
        [*CLI, "target", "--engine", "dpdk", "--listen", "127.0.0.1:0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"felix-p4 target: --engine dpdk: SWX engine library {absent}")
    assert "FELIX_P4_SWX_LIB" in lines[0] and "FELIX_P4_SWX_CACHE" in lines[0]


def test_a_table_limit_the_dpdk_engine_cannot_apply_exits_2():
    reason = availability()
    if reason is not None:
        pytest.skip(reason)
    out = subprocess.run(
        [*CLI, "target", "--engine", "dpdk", "--table-limit", "conntrack=5"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert out.returncode == 2
    assert "conntrack" in out.stderr.strip().splitlines()[-1]
