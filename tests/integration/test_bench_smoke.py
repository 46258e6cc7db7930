"""`python -m bench --scale tiny` runs every phase through the real driver and reports every
figure (no timing thresholds: a benchmark's numbers are results, not pass/fail), the
forwarding comparison included where DPDK runs (both engines' outputs must agree)."""

import json
import subprocess
import sys
from pathlib import Path

from bench.report import HEADLINE
from felix_p4.swx import availability

REPO = Path(__file__).resolve().parents[2]

FIGURES = (*HEADLINE, "compile_seconds")


def test_tiny_bench_reports_every_figure(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--scale",
            "tiny",
            "--out",
            str(tmp_path),
            "--forwarding-seconds",
            "0.3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    for run in ("null", "embedded"):
        assert "error" not in results[run], results[run]
    summary = results["summary"]
    missing = [name for name in FIGURES if summary.get(name) is None]
    assert not missing, f"figures missing from the results: {missing}"
    assert set(summary["entries_by_kind"]) >= {"endpoints", "policy", "ipsets", "services"}
    assert set(summary["compile_seconds"]) >= {"policy", "ipsets", "forwarding", "services"}
    assert summary["entries_written"] == results["embedded"]["installed_entries"]
    assert results["embedded"]["snapshot"]["endpoints_up"] == results["scale"]["endpoints"]
    assert {t["target"] for t in results["targets"]} >= {
        "snapshot rate / raw limit",
        "restart: entries rewritten",
    }
    assert "DESIGN.md section 6 targets" in done.stdout
    # Ours and finsy's encoders timed over the same entries must produce the same protobuf.
    encoding = results["encoding"]
    assert 0 < encoding["sampled"] == encoding["entries"] <= summary["entries_written"]
    assert encoding["differing_encodings"] == 0
    assert all(us > 0 for us in encoding["us_per_entry"].values())
    assert "P4Runtime encoding per table entry" in done.stdout
    forwarding = results["forwarding"]
    if availability() is None:
        assert forwarding["outputs_agree"], forwarding
        assert forwarding["dpdk"]["packets"] > 0 and forwarding["model"]["packets"] > 0
        assert "forwarding on one core" in done.stdout
    else:
        assert "skipped" in forwarding
