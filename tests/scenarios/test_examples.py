"""Every example scenario runs through `felix-p4 sim` and meets its expectations."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "examples").glob("*.yaml")) + sorted(
    (ROOT / "tests" / "scenarios").glob("*.yaml")
)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_scenario_expectations_hold(path):
    done = subprocess.run(
        [sys.executable, "-m", "felix_p4", "sim", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    packets = json.loads(done.stdout)["packets"]
    assert packets and all("verdict" in p for p in packets)


def test_failed_expectation_exits_1(tmp_path):
    scenario = tmp_path / "wrong.yaml"
    scenario.write_text(
        (ROOT / "examples" / "three-pods.yaml")
        .read_text()
        .replace("egress_port: 2", "egress_port: 9")
    )
    done = subprocess.run(
        [sys.executable, "-m", "felix_p4", "sim", str(scenario)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "FAIL" in done.stdout and "egress_port: expected 9, got 2" in done.stdout
