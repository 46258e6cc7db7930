"""The machine, DESIGN.md §6's targets judged against the figures, and the printed table."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

from felix_p4.pipeline import PIPELINE, Owner

# Entries the pipeline needs per object beyond members and rules (pipeline/README.md,
# "Entries per object"): an endpoint with one address has port, source check and route; a
# backend has its member, and at most one group, one binding and one front end per port.
PER_ENDPOINT = 3
PER_BACKEND = 3
NODE = 3

# Entries are reported by the manager that owns their table (the pipeline's declaration).
KINDS = {
    Owner.FORWARDING: "endpoints",
    Owner.SERVICES: "services",
    Owner.POLICY: "policy",
    Owner.IPSETS: "ipsets",
}
_KIND_OF_TABLE = {name: KINDS[owner] for owner in KINDS for name in PIPELINE.owned_by(owner)} | {
    "node": "node"
}


def kind_of(table: str) -> str:
    return _KIND_OF_TABLE.get(table, "other")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "grpcio": version("grpcio"),
        "protobuf": version("protobuf"),
    }
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
            break
    return info


def entries_by_kind(by_table: dict[str, dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for table, types in by_table.items():
        kind = kind_of(table)
        out[kind] = out.get(kind, 0) + sum(types.values())
    return out


def _ok(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run's figures, or None when it did not run or stopped with an error."""
    return run if run is not None and "error" not in run else None


def entries_bound(results: dict[str, Any]) -> dict[str, Any] | None:
    """DESIGN §6: entries <= members + expanded rules per distinct program + a constant per
    endpoint and backend."""
    null = _ok(results.get("null"))
    if null is None:
        return None
    scale, compiled = results["scale"], results["compile"]
    by_kind = null["entries_by_kind"]
    bound_by_kind = {
        "ipsets": scale["ipset_members"],
        "policy": compiled["program_entries"],
        "endpoints": PER_ENDPOINT * scale["endpoints"],
        "services": PER_BACKEND * scale["distinct_backends"],
        "node": NODE,
    }
    return {
        "entries": sum(by_kind.values()),
        "bound": sum(bound_by_kind.values()),
        "by_kind": by_kind,
        "bound_by_kind": bound_by_kind,
    }


# The flat figures `summary` reports (and the smoke test requires).
HEADLINE = (
    "snapshot_seconds_null",
    "snapshot_seconds_embedded",
    "entries_written",
    "entries_by_kind",
    "write_rate",
    "raw_rate",
    "ratio_to_raw",
    "add_p50_ms",
    "add_p99_ms",
    "churn_per_second",
    "restart_seconds",
    "restart_entries_rewritten",
    "peak_rss_mb",
)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, flat (None where a run did not produce them)."""
    null, raw, embedded = _ok(results.get("null")), results.get("raw"), _ok(results.get("embedded"))
    out: dict[str, Any] = dict.fromkeys(HEADLINE)
    out["compile_seconds"] = results["compile"]["seconds"]
    if null is not None:
        out["snapshot_seconds_null"] = null["snapshot"]["seconds"]
        out["entries_written"] = null["snapshot"]["entries"]
        out["entries_by_kind"] = null["entries_by_kind"]
        out["write_rate"] = null["snapshot"]["rate"]
        out["add_p50_ms"] = null["latency"]["add_ms"]["p50"]
        out["add_p99_ms"] = null["latency"]["add_ms"]["p99"]
        out["churn_per_second"] = null["churn"]["rate"]
        out["peak_rss_mb"] = max(null["peak_rss_mb"].values())
        if raw is not None:
            out["raw_rate"] = raw["rate"]
            out["ratio_to_raw"] = null["snapshot"]["rate"] / raw["rate"] if raw["rate"] else 0.0
    if embedded is not None:
        out["snapshot_seconds_embedded"] = embedded["snapshot"]["seconds"]
        out["restart_seconds"] = embedded["restart"]["seconds"]
        out["restart_entries_rewritten"] = embedded["restart"]["entries_rewritten"]
        if out["entries_written"] is None:
            out["entries_written"] = embedded["snapshot"]["entries"]
            out["peak_rss_mb"] = embedded["peak_rss_mb"]["end"]
    return out


def _upper(name: str, value: float, limit: float, unit: str, scope: str) -> dict[str, Any]:
    met = value <= limit
    if met:
        margin = f"{(1 - value / limit) * 100:.0f}% under" if limit else "exact"
    else:
        margin = f"{value / limit:.2f}x the limit" if limit else f"{value:g} over"
    return {
        "target": name,
        "value": value,
        "limit": f"<= {limit:g} {unit}".strip(),
        "met": met,
        "margin": margin,
        "scope": scope,
    }


def _lower(name: str, value: float, floor: float, unit: str, scope: str) -> dict[str, Any]:
    met = value >= floor
    margin = f"{value / floor:.2f}x the floor" if met else f"{(1 - value / floor) * 100:.0f}% short"
    return {
        "target": name,
        "value": value,
        "limit": f">= {floor:g} {unit}".strip(),
        "met": met,
        "margin": margin,
        "scope": scope,
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each DESIGN §6 number the run measured. Scale-dependent targets are stated for scale S;
    at smaller scales they are reported against the same numbers, marked by `scope`."""
    scale = results["scale"]["name"]
    scope = "scale S" if scale == "S" else f"scale {scale} (target is stated for S)"
    figures = results["summary"]
    out = []
    if figures["snapshot_seconds_null"] is not None:
        out.append(
            _upper(
                "snapshot to DataplaneInSync (null)",
                figures["snapshot_seconds_null"],
                10,
                "s",
                scope,
            )
        )
    if figures["ratio_to_raw"] is not None:
        out.append(
            _lower("snapshot rate / raw limit", figures["ratio_to_raw"], 0.5, "", "any scale")
        )
    if figures["add_p99_ms"] is not None:
        out.append(_upper("endpoint add p99 (null)", figures["add_p99_ms"], 5, "ms", "any scale"))
    if figures["churn_per_second"] is not None:
        out.append(
            _lower(
                "churn, endpoint updates/s", figures["churn_per_second"], 2000, "/s", "any scale"
            )
        )
    bound = entries_bound(results)
    if bound is not None:
        out.append(
            _upper(
                "entries vs members + program rules + const",
                bound["entries"],
                bound["bound"],
                "",
                "any scale",
            )
        )
    if figures["restart_entries_rewritten"] is not None:
        out.append(
            _upper(
                "restart: entries rewritten",
                figures["restart_entries_rewritten"],
                0,
                "",
                "any scale",
            )
        )
        out.append(_upper("restart: resync", figures["restart_seconds"], 5, "s", scope))
    if figures["peak_rss_mb"] is not None:
        out.append(_upper("driver peak RSS", figures["peak_rss_mb"], 300, "MB", scope))
    return out


def forwarding_lines(figures: dict[str, Any]) -> list[str]:
    """The forwarding measurement (bench/forwarding.py), or why there is none."""
    if "skipped" in figures or "error" in figures:
        why = figures.get("skipped") or f"{figures['error']} (in {figures.get('stalled_in')})"
        return [f"forwarding on one core: not measured: {why}"]
    dpdk, model = figures["dpdk"], figures["model"]
    return [
        f"forwarding on one core (CPU {figures['cpu']}), {figures['frames']:,} flows over "
        f"{figures['entries']:,} entries, {figures['forwarded_per_pass']:,} forwarded per pass, "
        f"outputs of both engines {'agree' if figures['outputs_agree'] else 'DIFFER'}:",
        f"  P4-DPDK engine {dpdk['pps']:,.0f} packets/s ({dpdk['packets']:,} in "
        f"{dpdk['seconds']:.2f} s), behavioural model {model['pps']:,.0f} packets/s "
        f"({model['packets']:,} in {model['seconds']:.2f} s): ratio {figures['ratio']:,.0f}",
        f"  setup: entries into the store {figures['setup_seconds']['store']:.1f} s, "
        f"into SWX {figures['setup_seconds']['swx_program']:.1f} s, policy stages through the "
        f"target's Write path {figures['setup_seconds']['swx_policy_stages']:.1f} s; refused by "
        f"SWX (left out of both): "
        + (", ".join(f"{t} {n:,}" for t, n in figures["refused"].items()) or "nothing"),
    ]


def encoding_lines(figures: dict[str, Any]) -> list[str]:
    """P4Runtime encoding per entry, ours vs finsy's (bench/encoding.py)."""
    us = figures["us_per_entry"]
    return [
        f"P4Runtime encoding per table entry ({figures['sampled']:,} of the snapshot's "
        f"{figures['entries']:,}, fastest of {figures['repeats']}; "
        f"{figures['differing_encodings']} encoded differently):",
        f"  ours {us['ours']:.2f} us, finsy {us['finsy']:.2f} us building its entry and encoding "
        f"(ratio {figures['ratio']:.2f}), {us['finsy_encode_only']:.2f} us encoding alone "
        f"(ratio {figures['ratio_encode_only']:.2f})",
    ]


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(results: dict[str, Any]) -> str:
    s = results["scale"]
    m = results["machine"]
    lines = [
        f"felix-p4 bench, scale {s['name']}: {s['endpoints']:,} endpoints, {s['policies']:,} "
        f"policies ({s['rules']:,} rules), {s['ipsets']} IP sets ({s['ipset_members']:,} "
        f"members), {s['services']:,} services ({s['backends']:,} backends)",
        f"machine: {m['nproc']} x {m.get('cpu', '?')}, {m.get('memory_gb', '?')} GB, "
        f"Python {m['python']}; command: {results['command']}",
        "",
    ]
    rows: list[tuple[str, str, str]] = []
    for name in ("null", "embedded", "profile"):
        run = results.get(name)
        if run is not None and "error" in run:
            lines.append(f"{name} run stopped in {run['stalled_in']}: {run['error']}")
    null, raw, emb = _ok(results.get("null")), results.get("raw"), _ok(results.get("embedded"))

    def both(label: str, pick: Any, digits: int = 2) -> None:
        values = []
        for run in (null, emb):
            try:
                values.append(_f(pick(run), digits) if run is not None else "-")
            except (KeyError, TypeError):
                values.append("-")
        rows.append((label, values[0], values[1]))

    both("snapshot: first frame -> DataplaneInSync (s)", lambda r: r["snapshot"]["seconds"])
    both("  streaming the snapshot into fd 3 (s)", lambda r: r["snapshot"]["stream_seconds"])
    both(
        "  first Write after first frame (s)", lambda r: r["snapshot"]["first_write_after_seconds"]
    )
    both("  write phase, first to last Write (s)", lambda r: r["snapshot"]["write_phase_seconds"])
    both("  driver CPU during snapshot (s)", lambda r: r["snapshot"]["driver_cpu_seconds"])
    both("  server CPU during snapshot (s)", lambda r: r["snapshot"]["server_cpu_seconds"])
    both("entries written", lambda r: r["snapshot"]["entries"])
    both("write requests", lambda r: r["snapshot"]["write_requests"])
    both("write rate, entries / snapshot time (/s)", lambda r: r["snapshot"]["rate"], 0)
    both("write rate in the write phase (/s)", lambda r: r["snapshot"]["write_phase_rate"], 0)
    if raw is not None and null is not None:
        rows.append(("raw limit: same requests, bare client (/s)", _f(raw["rate"], 0), "-"))
        rows.append(("  raw limit time (s)", _f(raw["seconds"]), "-"))
        ratio = null["snapshot"]["rate"] / raw["rate"] if raw["rate"] else 0.0
        rows.append(("felix-p4 rate / raw limit", _f(ratio, 3), "-"))
        phase = null["snapshot"].get("write_phase_rate", 0.0) / raw["rate"] if raw["rate"] else 0
        rows.append(("  write phase rate / raw limit", _f(phase, 3), "-"))
    both("endpoints reported up", lambda r: r["snapshot"]["endpoints_up"])
    both("endpoint add p50 (ms)", lambda r: r["latency"]["add_ms"]["p50"])
    both("endpoint add p99 (ms)", lambda r: r["latency"]["add_ms"]["p99"])
    both(
        "endpoint remove p50 / p99 (ms)",
        lambda r: (
            f"{r['latency']['remove_ms']['p50']:.2f} / {r['latency']['remove_ms']['p99']:.2f}"
        ),
    )
    both("  latency samples", lambda r: r["latency"]["samples"])
    both("churn: endpoint updates/s sustained", lambda r: r["churn"]["rate"], 0)
    both(
        "  churn ops completed / window",
        lambda r: f"{r['churn']['completed']:,} / {r['churn']['window']}",
    )
    both("restart: resync to DataplaneInSync (s)", lambda r: r["restart"]["seconds"])
    both("restart: entries rewritten", lambda r: r["restart"]["entries_rewritten"])
    both("entries on the target after snapshot", lambda r: r["installed_entries"])
    both("  reading them all back, bare client (s)", lambda r: r["read_back_seconds"])
    both("driver peak RSS (MB)", lambda r: max(r["peak_rss_mb"].values()), 0)
    width = max(len(r[0]) for r in rows) + 2
    lines.append(f"{'':{width}}{'null server':>16}{'embedded':>16}")
    lines += [f"{label:{width}}{a:>16}{b:>16}" for label, a, b in rows]
    if null is not None:
        lines += [
            "",
            "entries by kind (null server): "
            + ", ".join(f"{k} {v:,}" for k, v in entries_by_kind(null["entries_by_table"]).items()),
        ]
        lines.append(
            "entries by table: "
            + ", ".join(f"{t} {sum(v.values()):,}" for t, v in null["entries_by_table"].items())
        )
    compiled = results.get("compile")
    if compiled:
        lines += [
            "",
            "compile per concern, in-process (s): "
            + ", ".join(f"{k} {v:.3f}" for k, v in compiled["seconds"].items())
            + f"; {compiled['programs']} distinct programs, "
            f"{compiled['program_entries']:,} program entries",
        ]
    encoding = results.get("encoding")
    if encoding:
        lines += ["", *encoding_lines(encoding)]
    forwarding = results.get("forwarding")
    if forwarding is not None:
        lines += ["", *forwarding_lines(forwarding)]
    profile = _ok(results.get("profile"))
    for phase, figures in (profile or {}).get("phases", {}).items():
        lines += [
            "",
            f"profile of the {phase} ({figures['path']}), own time: share of all, "
            "share of busy (not waiting in epoll):",
        ]
        for p in figures["top"][:12]:
            busy = "  idle" if p["busy_share"] is None else f"{p['busy_share'] * 100:5.1f}%"
            lines.append(f"  {p['own_share'] * 100:5.1f}% {busy}  {p['function']}")
    lines += ["", "DESIGN.md section 6 targets:"]
    for t in results["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        lines.append(
            f"  {verdict:7}{t['target']}: {_f(t['value'], 3)} ({t['limit']}; "
            f"{t['margin']}; {t['scope']})"
        )
    return "\n".join(lines)
