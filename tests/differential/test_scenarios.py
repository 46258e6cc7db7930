"""Every example and scenario file on both engines: a driver (spawned as Felix spawns it)
programs each target from the scenario's Felix messages and Kubernetes objects, the entries
both hold are the same, and every packet of the scenario does the same on both."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "examples").glob("*.yaml")) + sorted(
    (ROOT / "tests" / "scenarios").glob("*.yaml")
)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_scenario_packet_does_the_same_on_both_engines(pair, path):
    frames, book = pair.drive(yaml.safe_load(path.read_text()))
    for frame in frames:
        service = book.flow(frame.raw)
        backends, flow = service if service else (None, None)
        pair.send(frame.in_port, frame.raw, backends=backends, flow=flow, what=frame.name)
