"""`python -m bench`: generated Felix streams through the real driver (spawned as Felix spawns
it) to P4Runtime servers over loopback gRPC; figures printed as a table and written as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import pstats
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import grpc
import yaml
from finsy.proto import p4r

from bench import report
from bench.compile_time import compile_times
from bench.encoding import encoding_costs
from bench.felix_side import REMOVED, UP, FelixSide
from bench.forwarding import flow_frames, write_frames
from bench.generate import PRESETS, EndpointChange, Workload, generate
from bench.raw import write_raw
from bench.servers import ServerProcess, read_recorded
from felix_p4.p4.artefacts import load_pipeline
from felix_p4.p4.client import P4RuntimeClient
from felix_p4.p4.schema import PipelineSchema
from felix_p4.pipeline.entries import Entity
from felix_p4.settings import PipelineSettings
from felix_p4.swx import availability

OUT = Path(__file__).resolve().parent / "out"
START_TIMEOUT = 60.0
LATENCY_TIMEOUT = 30.0
EMBEDDED_PROBES = 50  # the embedded target's latency is secondary; keep its run short


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scale", choices=list(PRESETS), default="small")
    parser.add_argument("--target", choices=["null", "embedded", "both"], default="both")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run the snapshot once with the driver under cProfile (bench/out/profile-*)",
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help="working directory: logs, configs, profiles"
    )
    parser.add_argument("--json", type=Path, help="results file (default OUT/results.json)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--coalesce-ms", type=float, help="driver felix.coalesce_ms (default: the driver's)"
    )
    parser.add_argument(
        "--batch-size", type=int, help="driver p4runtime.batch_size (default: the driver's)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds any one phase may take"
    )
    parser.add_argument(
        "--forwarding",
        choices=["auto", "on", "off"],
        default="auto",
        help="packets per second on one core, P4-DPDK engine vs behavioural model "
        "(bench/forwarding.py); auto: where DPDK can run",
    )
    parser.add_argument(
        "--forwarding-seconds", type=float, default=3.0, help="timed seconds per engine"
    )
    return parser.parse_args(argv)


class Bench:
    """One benchmark run: the workload, its files, and the phases against each server."""

    def __init__(self, args: argparse.Namespace, workload: Workload, out: Path) -> None:
        self.args = args
        self.workload = workload
        self.out = out
        self.phase = "start"  # what is running, for the report when a run fails
        self.services_path = out / f"services-{workload.scale.name}.json"
        self.recorded: Path | None = None  # the snapshot's WriteRequests, once recorded
        # JSON is YAML; the file source parses it with the JSON parser (far faster at scale S).
        self.services_path.write_text(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": workload.kubernetes})
        )

    def config(self, address: str, name: str) -> Path:
        settings: dict[str, Any] = {
            # Loopback to our own servers: plaintext, by explicit choice (the driver warns).
            "p4runtime": {"address": address, "plaintext": True},
            "ports": {
                "mode": "static",
                "map": self.workload.ports,
                "host": "host",
                "uplink": "uplink",
            },
            "services": {"source": "file", "files": [str(self.services_path)]},
            # The bench host's own networking stays as it is (no NAT tables, no neighbours).
            "network": {
                "netlink": False,
                "nat_outgoing": False,
                "node_mac": "02:00:00:00:00:01",
                "next_hops": self.workload.next_hops,
            },
        }
        if self.args.batch_size:
            settings["p4runtime"]["batch_size"] = self.args.batch_size
        if self.args.coalesce_ms is not None:
            settings["felix"] = {"coalesce_ms": self.args.coalesce_ms}
        path = self.out / f"config-{name}.yaml"
        path.write_text(yaml.safe_dump(settings))
        return path

    def spawn(self, address: str, name: str, argv: list[str] | None = None) -> FelixSide:
        return FelixSide.spawn(self.config(address, name), self.out / f"driver-{name}.log", argv)

    async def snapshot(self, felix: FelixSide, server: ServerProcess) -> dict[str, Any]:
        """First frame of the snapshot to DataplaneInSync, with what the server saw."""
        await felix.wait_started(START_TIMEOUT)
        before = await server.stats()
        cpu_before = felix.cpu_seconds()
        data = felix.encode(self.workload.snapshot)
        started = await felix.send(data)
        streamed = time.monotonic()
        await asyncio.wait_for(felix.in_sync.wait(), self.args.timeout)
        after = await server.stats()
        seconds = felix.in_sync_at - started
        entries = after["updates"] - before["updates"]
        figures = {
            "seconds": seconds,
            "stream_seconds": streamed - started,
            "entries": entries,
            "write_requests": after["writes"] - before["writes"],
            "rate": entries / seconds if seconds > 0 else 0.0,
            "endpoints_up": felix.up,
            "endpoints_not_up": len(felix.not_up),
            "driver_cpu_seconds": felix.cpu_seconds() - cpu_before,
            "server_cpu_seconds": after["cpu_s"] - before["cpu_s"],
            "snapshot_bytes": len(data),
        }
        if before["writes"] == 0 and after["writes"] > 0:
            write_phase = after["last_write_at"] - after["first_write_at"]
            figures["first_write_after_seconds"] = after["first_write_at"] - started
            figures["write_phase_seconds"] = write_phase
            figures["write_phase_rate"] = entries / write_phase if write_phase > 0 else 0.0
        return figures

    async def latency(self, felix: FelixSide, probes: list[EndpointChange]) -> dict[str, Any]:
        """One endpoint at a time: its add until "up", then its removal until removed."""
        adds: list[float] = []
        removes: list[float] = []
        for change in probes:
            up = felix.expect(change.workload_id, UP)
            sent = await felix.send(felix.encode(change.add))
            adds.append(await asyncio.wait_for(up, LATENCY_TIMEOUT) - sent)
            gone = felix.expect(change.workload_id, REMOVED)
            sent = await felix.send(felix.encode(change.remove))
            removes.append(await asyncio.wait_for(gone, LATENCY_TIMEOUT) - sent)
        return {
            "samples": len(adds),
            "add_ms": _percentiles(adds),
            "remove_ms": _percentiles(removes),
            "add_samples_ms": [round(a * 1000, 3) for a in adds],
        }

    async def churn(self, felix: FelixSide) -> dict[str, Any]:
        """Endpoint adds and removes as fast as the driver takes them: at most `window` not yet
        answered, each pool endpoint added on even passes and removed on odd ones, so one
        endpoint is never in flight twice and the pool ends as it started (all absent)."""
        pool = self.workload.churn
        ops = self.workload.scale.churn_ops
        window = max(1, len(pool) // 2)
        pending: set[asyncio.Future[float]] = set()
        finished: list[float] = []
        sent_ops = 0
        started = time.monotonic()
        deadline = started + self.args.timeout
        while sent_ops < ops or pending:
            batch = []
            while sent_ops < ops and len(pending) < window:
                change = pool[sent_ops % len(pool)]
                adding = (sent_ops // len(pool)) % 2 == 0
                pending.add(felix.expect(change.workload_id, UP if adding else REMOVED))
                batch.extend(change.add if adding else change.remove)
                sent_ops += 1
            if batch:
                await felix.send(felix.encode(batch))
            remaining = deadline - time.monotonic()
            done, pending = await asyncio.wait(
                pending, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED
            )
            finished.extend(f.result() for f in done if not f.exception())
            if not done:
                break  # out of time: report what completed
        for future in pending:
            future.cancel()
        seconds = (max(finished) if finished else time.monotonic()) - started
        return {
            "ops": sent_ops,
            "completed": len(finished),
            "window": window,
            "seconds": seconds,
            "rate": len(finished) / seconds if seconds > 0 else 0.0,
        }

    async def run_null(self) -> dict[str, Any]:
        """Snapshot, latency and churn against the null server, then the raw writer replays
        the snapshot's WriteRequests to a fresh null server."""
        server = await ServerProcess.start("null", self.out / "server-null.log", record=True)
        recorded_path = self.out / f"writes-{self.workload.scale.name}.bin"
        try:
            felix = self.spawn(server.address, "null")
            try:
                self.phase = "null: snapshot"
                snapshot = await self.snapshot(felix, server)
                rss_snapshot = felix.memory_kb()
                self.phase = "null: endpoint add latency"
                latency = await self.latency(felix, self.workload.probes)
                self.phase = "null: churn"
                churn = await self.churn(felix)
                rss = felix.memory_kb()
            finally:
                await felix.stop()
            await server.dump(recorded_path, 0, snapshot["write_requests"])
            self.recorded = recorded_path
        finally:
            await server.stop()
        requests = read_recorded(recorded_path)
        self.phase = "raw writer"
        raw_server = await ServerProcess.start("null", self.out / "server-raw.log")
        try:
            raw = await write_raw(raw_server.address, requests)
            raw["server_cpu_seconds"] = (await raw_server.stats())["cpu_s"]
        finally:
            await raw_server.stop()
        by_table = entries_by_table(requests)
        return {
            "snapshot": snapshot,
            "entries_by_table": by_table,
            "entries_by_kind": report.entries_by_kind(by_table),
            "latency": latency,
            "churn": churn,
            "peak_rss_mb": {
                "after_snapshot": rss_snapshot.get("VmHWM", 0) / 1024,
                "end": rss.get("VmHWM", 0) / 1024,
            },
            "raw": raw,
        }

    async def run_embedded(self) -> dict[str, Any]:
        """Snapshot and latency on the embedded target, then a restarted driver replays the
        same snapshot: its resync time and every update it wrote (zero if nothing changed)."""
        server = await ServerProcess.start("embedded", self.out / "server-embedded.log")
        try:
            felix = self.spawn(server.address, "embedded")
            try:
                self.phase = "embedded: snapshot"
                snapshot = await self.snapshot(felix, server)
                self.phase = "embedded: endpoint add latency"
                latency = await self.latency(felix, self.workload.probes[:EMBEDDED_PROBES])
                rss = felix.memory_kb()
            finally:
                await felix.stop()
            self.phase = "embedded: reading the target back"
            read_started = time.monotonic()
            installed = await count_installed(server.address)
            read_back = time.monotonic() - read_started
            restarted = self.spawn(server.address, "embedded-restart")
            try:
                self.phase = "embedded: restart"
                restart = await self.snapshot(restarted, server)
                restart_rss = restarted.memory_kb()
            finally:
                await restarted.stop()
        finally:
            await server.stop()
        return {
            "snapshot": snapshot,
            "latency": latency,
            "installed_entries": installed,
            # A bare client reading every entry back: the floor under a restart's read-back.
            "read_back_seconds": read_back,
            "restart": {
                "seconds": restart["seconds"],
                "entries_rewritten": restart["entries"],
                "write_requests": restart["write_requests"],
                "endpoints_up": restart["endpoints_up"],
                "driver_cpu_seconds": restart["driver_cpu_seconds"],
                "peak_rss_mb": restart_rss.get("VmHWM", 0) / 1024,
            },
            "peak_rss_mb": {"end": rss.get("VmHWM", 0) / 1024},
        }

    async def record_snapshot(self) -> Path:
        """The snapshot's WriteRequests as the driver writes them, recorded at a null server."""
        path = self.out / f"writes-{self.workload.scale.name}.bin"
        server = await ServerProcess.start("null", self.out / "server-record.log", record=True)
        try:
            felix = self.spawn(server.address, "record")
            try:
                snapshot = await self.snapshot(felix, server)
            finally:
                await felix.stop()
            await server.dump(path, 0, snapshot["write_requests"])
        finally:
            await server.stop()
        return path

    async def run_forwarding(self) -> dict[str, Any]:
        """Packets per second on one core through the P4-DPDK engine and the behavioural
        model, both holding the snapshot's entries, measured in one child process
        (bench/forwarding.py)."""
        name = self.workload.scale.name
        if self.recorded is None:
            self.phase = "forwarding: recording the snapshot's writes"
            self.recorded = await self.record_snapshot()
        frames = self.out / f"frames-{name}.json"
        write_frames(frames, flow_frames(self.workload, self.args.seed))
        figures = self.out / f"forwarding-{name}.json"
        log = self.out / f"forwarding-{name}.log"
        self.phase = "forwarding: programming both engines and measuring"
        with log.open("w") as stderr:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.forwarding",
                str(self.recorded),
                str(frames),
                "--seconds",
                str(self.args.forwarding_seconds),
                "--json",
                str(figures),
                stderr=stderr,
            )
            try:
                code = await asyncio.wait_for(child.wait(), self.args.timeout)
            except TimeoutError:
                child.kill()
                await child.wait()
                raise
        if code != 0:
            raise RuntimeError(f"bench.forwarding exited {code}: {log.read_text()[-1000:]}")
        result: dict[str, Any] = json.loads(figures.read_text())
        return result

    async def run_profile(self) -> dict[str, Any]:
        """The driver under cProfile, one profile per phase: snapshot, latency and churn
        against a null server, then a restart against an embedded target that an unprofiled
        driver programmed first. cProfile slows the driver several times over: read the
        shares, not the seconds."""
        name = self.workload.scale.name
        prefix = self.out / f"profile-{name}"
        restart_prefix = self.out / f"profile-{name}-restart"
        for stale in self.out.glob(f"profile-{name}-*"):
            stale.unlink()
        argv = [sys.executable, "-m", "bench.profiled_driver"]
        server = await ServerProcess.start("null", self.out / "server-profile.log")
        try:
            felix = self.spawn(server.address, "profile", [*argv, str(prefix)])
            try:
                # Phase 0 is interpreter start-up and imports, left out of the figures.
                self.phase = "profile: snapshot"
                await felix.wait_started(START_TIMEOUT)
                await end_phase(felix, prefix, 0)
                await self.snapshot(felix, server)
                await end_phase(felix, prefix, 1)
                self.phase = "profile: endpoint add latency"
                await self.latency(felix, self.workload.probes)
                await end_phase(felix, prefix, 2)
                self.phase = "profile: churn"
                await self.churn(felix)
                await end_phase(felix, prefix, 3)
            finally:
                await felix.stop()
        finally:
            await server.stop()
        target = await ServerProcess.start("embedded", self.out / "server-profile-restart.log")
        try:
            self.phase = "profile: programming the embedded target"
            first = self.spawn(target.address, "profile-program")
            try:
                await self.snapshot(first, target)
            finally:
                await first.stop()
            self.phase = "profile: restart"
            again = self.spawn(target.address, "profile-restart", [*argv, str(restart_prefix)])
            try:
                await again.wait_started(START_TIMEOUT)
                await end_phase(again, restart_prefix, 0)
                await self.snapshot(again, target)
            finally:
                await again.stop()
        finally:
            await target.stop()
        files = {
            "snapshot": Path(f"{prefix}-1.prof"),
            "latency": Path(f"{prefix}-2.prof"),
            "churn": Path(f"{prefix}-3.prof"),
            "restart": Path(f"{restart_prefix}-1.prof"),
        }
        return {
            "phases": {
                phase: {
                    "path": str(path),
                    "top": profile_top(path, self.out / f"profile-{name}-{phase}.txt"),
                }
                for phase, path in files.items()
            }
        }


async def end_phase(felix: FelixSide, prefix: Path, index: int, timeout: float = 60.0) -> None:
    """Tell the profiled driver a phase ended and wait until its profile is on disk."""
    felix.signal(signal.SIGUSR1)
    path = Path(f"{prefix}-{index}.prof")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # The driver writes the file from its signal handler; there is no event to wait on.
    while not path.exists() or path.stat().st_size == 0:
        if loop.time() > deadline:
            raise TimeoutError(f"profiled driver did not write {path}")
        await asyncio.sleep(0.05)


def _percentiles(samples: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles, in milliseconds."""
    ordered = sorted(samples)
    if not ordered:
        return {}

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1] * 1000}


async def count_installed(address: str) -> int:
    """Entries on the target, and default entries the driver set (the node table's): what
    the snapshot wrote."""
    client = P4RuntimeClient(address, 1, 1)
    client.open()
    try:
        count = len(await client.read_entities())
        p4info, _ = load_pipeline(PipelineSettings())
        for table in p4info.tables:
            if table.const_default_action_id:
                continue
            request = p4r.ReadRequest(
                device_id=1,
                entities=[
                    p4r.Entity(
                        table_entry=p4r.TableEntry(
                            table_id=table.preamble.id, is_default_action=True
                        )
                    )
                ],
            )
            async for reply in client.stub.Read(request):
                for entity in reply.entities:
                    if any(p.value.strip(b"\0") for p in entity.table_entry.action.action.params):
                        count += 1
        return count
    finally:
        await client.close()


def entries_by_table(requests: list[bytes]) -> dict[str, dict[str, int]]:
    """Updates per table (profiles as `<profile>#members` / `#groups`) and type; host port and
    default routes are counted under `node`."""
    p4info, _ = load_pipeline(PipelineSettings())
    tables = {t.preamble.id: t.preamble.name for t in p4info.tables}
    actions = {a.preamble.id: a.preamble.name for a in p4info.actions}
    profiles = {p.preamble.id: p.preamble.alias or p.preamble.name for p in p4info.action_profiles}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for body in requests:
        for update in p4r.WriteRequest.FromString(body).updates:
            entity = update.entity
            kind = entity.WhichOneof("entity")
            if kind == "table_entry":
                entry = entity.table_entry
                name = tables.get(entry.table_id, str(entry.table_id))
                if actions.get(entry.action.action.action_id) in ("host_port", "to_host"):
                    name = "node"
            elif kind == "action_profile_member":
                name = f"{profiles[entity.action_profile_member.action_profile_id]}#members"
            else:
                name = f"{profiles[entity.action_profile_group.action_profile_id]}#groups"
            counts[name][p4r.Update.Type.Name(update.type)] += 1
    return {name: dict(types) for name, types in sorted(counts.items())}


def _idle(function: str) -> bool:
    """The event loop waiting for something to do."""
    return "select.epoll" in function and "poll" in function


def profile_top(profile_path: Path, text_path: Path, limit: int = 30) -> list[dict[str, Any]]:
    """The functions with the most own time, and a text report with cumulative times too.
    `busy_share` leaves out time the event loop spent waiting in epoll (idle)."""
    stats = pstats.Stats(str(profile_path))
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    idle = sum(v[2] for k, v in entries.items() if _idle(k[2]))
    busy = (total - idle) or 1.0
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:limit]
    with text_path.open("w") as out:
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(limit)
        stats.sort_stats("cumulative").print_stats(limit)
    return [
        {
            "function": f"{Path(file).name}:{line}({func})",
            "calls": calls,
            "own_seconds": own,
            "cumulative_seconds": cumulative,
            "own_share": own / total,
            "busy_share": None if _idle(func) else own / busy,
        }
        for (file, line, func), (_, calls, own, cumulative, _) in ranked
    ]


async def _guarded(runner: Bench, run: Any) -> dict[str, Any]:
    """A run's figures, or where it stopped and why (a stall at scale is a result too)."""
    try:
        figures: dict[str, Any] = await run()
        return figures
    except (TimeoutError, ConnectionError, OSError, RuntimeError, grpc.RpcError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "stalled_in": runner.phase}


async def bench(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    scale = PRESETS[args.scale]
    workload = generate(scale, args.seed)
    runner = Bench(args, workload, out)
    results: dict[str, Any] = {
        "scale": {"name": scale.name, **workload.counts},
        "command": " ".join(["python -m bench", *argv]),
        "machine": report.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "coalesce_ms": args.coalesce_ms,
            "batch_size": args.batch_size,
            "seed": args.seed,
        },
    }
    if args.target in ("null", "both"):
        null = await _guarded(runner, runner.run_null)
        if "raw" in null:
            results["raw"] = null.pop("raw")
        results["null"] = null
    if args.target in ("embedded", "both"):
        results["embedded"] = await _guarded(runner, runner.run_embedded)
    runner.phase = "compile per concern"
    entities: list[Entity] = []
    results["compile"] = compile_times(
        workload, runner.config("127.0.0.1:1", "compile"), entities_out=entities
    )
    runner.phase = "encoding: ours vs finsy's"
    results["encoding"] = encoding_costs(
        PipelineSchema(load_pipeline(PipelineSettings())[0]), entities
    )
    if args.forwarding != "off":
        unavailable = availability()
        if unavailable is None:
            results["forwarding"] = await _guarded(runner, runner.run_forwarding)
        else:
            key = "skipped" if args.forwarding == "auto" else "error"
            results["forwarding"] = {key: f"the P4-DPDK engine cannot run: {unavailable}"}
    if args.profile:
        results["profile"] = await _guarded(runner, runner.run_profile)
    results["summary"] = report.summary(results)
    results["targets"] = report.targets(results)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # The in-process compile measurement builds a Driver; its plaintext warning is expected.
    logging.getLogger("felix_p4").setLevel(logging.ERROR)
    results = asyncio.run(bench(args, argv))
    path = args.json or args.out / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(report.table(results))
    print(f"\nresults: {path}")
    return 0
