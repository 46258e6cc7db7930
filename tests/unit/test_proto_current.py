"""The checked-in Felix bindings are what `make proto` generates from felixbackend.proto."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_bindings_are_current(tmp_path):
    (tmp_path / "calico_proto").mkdir()
    shutil.copy(ROOT / "calico_proto" / "felixbackend.proto", tmp_path / "calico_proto")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--pyi_out=.",
            "calico_proto/felixbackend.proto",
        ],
        cwd=tmp_path,
        check=True,
    )
    for name in ("felixbackend_pb2.py", "felixbackend_pb2.pyi"):
        fresh = (tmp_path / "calico_proto" / name).read_text()
        assert fresh == (ROOT / "calico_proto" / name).read_text(), (
            f"{name} is stale: run make proto"
        )


def test_wire_is_the_v3_32_generation():
    from calico_proto import felixbackend_pb2 as fb

    # v3.32 moved TierInfo's policy lists from names to PolicyID messages.
    field = fb.TierInfo.DESCRIPTOR.fields_by_name["ingress_policies"]
    assert field.message_type is fb.PolicyID.DESCRIPTOR
    assert "tier" not in fb.PolicyID.DESCRIPTOR.fields_by_name
    assert fb.ToDataplane.DESCRIPTOR.fields_by_name["workload_endpoint_update"].number == 11
    assert fb.FromDataplane.DESCRIPTOR.fields_by_name["dataplane_in_sync"].number == 10
