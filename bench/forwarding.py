"""Forwarding on one core: the same frames through the P4-DPDK engine (DPDK's SWX pipeline
running the packaged spec) and the behavioural model, both holding the entries a driver wrote
for the generated snapshot; packets per second of each and their ratio, from one run.

The parent (`python -m bench --forwarding`) builds candidate frames from the workload; this
module's `main` is the child that measures, in a process of its own pinned to one CPU (DPDK's
EAL lives as long as its process). Only the engines' work is timed: the model's `process`
calls, and the SWX pipeline's runs, which include reading each frame from its port's socket
and writing it out (the engine's ports are AF_UNIX socketpairs). Queueing frames and
collecting what left are the wire's part and are not timed.

Frames run between the host port and the two pods on P4 ports 2 and 3 (SWX polls its input
ports round-robin, one read() each, so the engine gets only the ports the frames use: 0-3),
over every other endpoint's, set's, program's and service's entries as the snapshot has them.
The policy stages are written as a DPDK target receives them from a driver, and what SWX
refuses is left out of both engines (at scale S nothing; with DPDK's own wildcard table type,
one stage took only about 5,000 to 11,000 entries, depending on the rules: docs/dpdk-target.md).
Of the flows, ALLOWED are allowed by policy and the rest denied; each is sent once untimed
(conntrack as in steady traffic), then the timed passes follow.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from finsy.proto import p4r

from bench.generate import Workload
from felix_p4 import pipeline as P
from felix_p4.p4.schema import PipelineSchema
from felix_p4.pipeline import STAGES
from felix_p4.pipeline.entries import Exact
from felix_p4.softswitch.packet import build

N_PORTS = 4  # host port 1 and pods on 2 and 3 (bench/generate.py numbers them so)
HOST_PORT = 1
POD_PORTS = (2, 3)
FLOWS = 1024
ALLOWED = 768  # of FLOWS: flows policy allows (the rest it denies), chosen from 8 x FLOWS
HOST_MAC = "02:42:c0:a8:00:01"
OUTSIDE_SETS = ipaddress.IPv4Network("10.130.0.0/16")  # other nodes' pods in no IP set
BURST = 256  # frames per SWX run; a port's socket holds about a thousand
WRITE_BATCH = 1000  # updates per Write, the driver's default batch size
MEMORY_MB = 2048  # the EAL pool: the S snapshot's wildcard tables and the learners
# (protocol, destination port) of the generated policies' rules, allowed and not
SERVICES_OF_RULES = [
    ("tcp", 8080),
    ("tcp", 8050),
    ("tcp", 9090),
    ("tcp", 443),
    ("tcp", 5432),
    ("tcp", 22),
    ("tcp", 80),
    ("udp", 53),
]


def flow_frames(workload: Workload, seed: int = 1) -> list[tuple[int, bytes]]:
    """(in port, frame) of one packet per candidate flow (8 x FLOWS; the child picks FLOWS of
    them): pod to pod, pods to other nodes' pods and back, between the host port and the pods
    on POD_PORTS."""
    pods: dict[int, tuple[str, str]] = {}
    local: set[int] = set()
    members: set[int] = set()
    for message in workload.snapshot:
        kind = message.WhichOneof("payload")
        if kind == "workload_endpoint_update":
            endpoint = message.workload_endpoint_update.endpoint
            address = endpoint.ipv4_nets[0].split("/")[0]
            local.add(_address(address))
            if workload.ports[endpoint.name] in POD_PORTS:
                pods[workload.ports[endpoint.name]] = (address, endpoint.mac)
        elif kind == "ipset_update":
            members.update(_address(m) for m in message.ipset_update.members)
    missing = set(POD_PORTS) - set(pods)
    if missing:
        raise ValueError(f"the workload has no pods on ports {sorted(missing)}")
    # Other nodes' pods: members of the policies' IP sets, never this node's (whose routes
    # name ports the engine does not have here).
    remote = sorted(members - local - {-1})
    rng = random.Random(seed)
    frames = []
    for i in range(8 * FLOWS):
        proto, dport = rng.choice(SERVICES_OF_RULES)
        a, b = POD_PORTS if i % 2 else POD_PORTS[::-1]
        if remote and rng.random() < 0.8:
            far = str(ipaddress.IPv4Address(rng.choice(remote)))
        else:
            far = str(OUTSIDE_SETS[rng.randrange(OUTSIDE_SETS.num_addresses)])
        kind = rng.choice(["pod to pod", "pod to far", "far to pod", "far to pod"])
        if kind == "pod to pod":
            in_port, src, dst, mac = a, pods[a][0], pods[b][0], pods[a][1]
        elif kind == "pod to far":
            in_port, src, dst, mac = a, pods[a][0], far, pods[a][1]
        else:
            in_port, src, dst, mac = HOST_PORT, far, pods[b][0], HOST_MAC
        spec: dict[str, Any] = {"src": src, "dst": dst, "src_mac": mac, "proto": proto}
        spec.update(sport=rng.randint(10_000, 60_000), dport=dport)
        frames.append((in_port, build(spec)))
    return frames


def _address(member: str) -> int:
    """A NET member's address (-1 for IP-and-port members and IPv6)."""
    text = member.split(",")[0].split("/")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return -1
    return int(addr) if addr.version == 4 else -1


def write_frames(path: Path, frames: list[tuple[int, bytes]]) -> None:
    path.write_text(json.dumps([[port, frame.hex()] for port, frame in frames]))


def read_frames(path: Path) -> list[tuple[int, bytes]]:
    return [(int(port), bytes.fromhex(text)) for port, text in json.loads(path.read_text())]


# ------------------------------------------------------------------------- the child


def measure(writes: Path, frames_path: Path, seconds: float) -> dict[str, Any]:
    from felix_p4.softswitch.behavioural import FelixPipeline
    from felix_p4.softswitch.dpdk import DpdkEngine, DpdkSettings

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    frames = read_frames(frames_path)
    started = time.perf_counter()
    engine = DpdkEngine(DpdkSettings(n_ports=N_PORTS, memory_mb=MEMORY_MB))
    tables, stages = _store(engine, writes)
    stored = time.perf_counter()
    # Every other entry goes to SWX, those naming ports beyond N_PORTS included (no frame here
    # is routed to them; the target's own check would refuse them).
    engine.reset(tables)
    programmed = time.perf_counter()
    refused = _write_stages(engine, tables, stages)
    staged = time.perf_counter()
    entries = len(tables.read(p4r.Entity(table_entry=p4r.TableEntry())))
    pipeline = engine.pipeline
    assert pipeline is not None
    model = FelixPipeline(tables)
    frames = _mix(model, frames)

    # One untimed pass: learn what steady traffic would have learned; the outputs must agree.
    model_out = []
    for in_port, frame in frames:
        result = model.process(in_port, frame)
        if result.verdict != "drop":
            model_out.append((result.egress_port, result.packet))
    dpdk_out = []
    for first in range(0, len(frames), BURST):
        burst = frames[first : first + BURST]
        for in_port, frame in burst:
            pipeline.send(in_port, [frame])
        pipeline.run_burst(len(burst))
        dpdk_out += pipeline.received()

    model_figures = _time_model(model, frames, seconds)
    dpdk_figures = _time_dpdk(pipeline, frames, seconds)
    engine.close()
    return {
        "cpu": cpu,
        "entries": entries,
        "setup_seconds": {
            "store": stored - started,
            "swx_program": programmed - stored,
            "swx_policy_stages": staged - programmed,
        },
        "refused": refused,
        "frames": len(frames),
        "n_ports": N_PORTS,
        "forwarded_per_pass": len(model_out),
        "outputs_agree": sorted(model_out) == sorted(dpdk_out),
        "model": model_figures,
        "dpdk": dpdk_figures,
        "ratio": dpdk_figures["pps"] / model_figures["pps"],
    }


def _mix(model: Any, candidates: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """FLOWS of the candidate flows, ALLOWED of them allowed by policy, in their order (asked
    of the model without learning anything)."""
    allowed = denied = 0
    chosen = []
    for in_port, frame in candidates:
        if model.process(in_port, frame, commit=False).verdict == "drop":
            if denied < FLOWS - ALLOWED:
                chosen.append((in_port, frame))
                denied += 1
        elif allowed < ALLOWED:
            chosen.append((in_port, frame))
            allowed += 1
        if len(chosen) == FLOWS:
            break
    return chosen


def _store(engine: Any, writes: Path) -> tuple[Any, list[p4r.Update]]:
    """The snapshot's entries in a table store, all but the policy stages' (returned apart)."""
    from bench.servers import read_recorded
    from felix_p4.softswitch.store import TableStore

    tables = TableStore(engine.p4info, initial_defaults=engine.initial_defaults(engine.p4info))
    stage_ids = {engine.map.by_name[t.name].p4_id for ts in STAGES.values() for t in ts}
    stages = []
    for body in read_recorded(writes):
        for update in p4r.WriteRequest.FromString(body).updates:
            if update.entity.table_entry.table_id in stage_ids:
                stages.append(update)
            else:
                tables.write(update)
    return tables, stages


def _write_stages(engine: Any, tables: Any, stages: list[p4r.Update]) -> dict[str, int]:
    """The policy stages' entries written as a DPDK target receives a driver's batches (the
    store takes them, the engine commits each table once per Write and undoes what SWX
    refuses), whole programs per Write, those of the pods the frames come from first. A stage
    table SWX refuses more of takes no more (an ACL needing more than 8 tries: with DPDK's own
    wildcard table type, ingress_stage_0 stopped at 5,372 of its 13,805 entries at scale S,
    written so; the engine's felix_wildcard takes them all). Returns the entries refused, by
    table."""
    schema = PipelineSchema(engine.p4info)
    used = _programs_of_ports(schema, tables, POD_PORTS)
    programs: dict[tuple[int, int], list[p4r.Update]] = {}
    for update in stages:
        entry = schema.decode(update.entity.table_entry)
        program = dict(entry.match)["program"]
        assert isinstance(program, Exact)
        direction = "egress" if entry.table.startswith("egress") else "ingress"
        key = (0 if program.value in used[direction] else 1, program.value)
        programs.setdefault(key, []).append(update)
    full: set[int] = set()
    refused: dict[str, int] = {}
    batch: list[tuple[int, p4r.Update]] = []

    def flush() -> None:
        for index in engine.apply(tables, batch, False):
            full.add(batch[index][1].entity.table_entry.table_id)
        for _, update in batch:
            table_id = update.entity.table_entry.table_id
            if table_id in full:
                name = engine.map.tables[table_id].name
                refused[name] = refused.get(name, 0) + 1
        batch.clear()

    for key in sorted(programs):
        for update in programs[key]:
            if update.entity.table_entry.table_id in full:
                name = engine.map.tables[update.entity.table_entry.table_id].name
                refused[name] = refused.get(name, 0) + 1
                continue
            engine.check(update)
            tables.write(update)
            batch.append((len(batch), update))
        if len(batch) >= WRITE_BATCH:
            flush()
    flush()
    return refused


def _programs_of_ports(schema: Any, tables: Any, ports: tuple[int, ...]) -> dict[str, set[int]]:
    """The egress and ingress program ids of the workloads on `ports`."""
    used: dict[str, set[int]] = {"egress": set(), "ingress": set()}
    for name, direction, param in (
        (P.PORT_CLASSIFY.name, "egress", "egress_program"),
        (P.ROUTES[4].name, "ingress", "ingress_program"),
    ):
        query = p4r.Entity(table_entry=p4r.TableEntry(table_id=schema.table_id(name)))
        for entity in tables.read(query):
            params = dict(schema.decode(entity.table_entry).params)
            if params.get("port") in ports and param in params:
                used[direction].add(params[param])
    return used


def _time_model(model: Any, frames: list[tuple[int, bytes]], seconds: float) -> dict[str, Any]:
    busy = 0.0
    packets = 0
    while busy < seconds:
        for in_port, frame in frames:
            started = time.perf_counter()
            model.process(in_port, frame)
            busy += time.perf_counter() - started
            packets += 1
            if busy >= seconds:
                break
    return {"packets": packets, "seconds": busy, "pps": packets / busy}


def _time_dpdk(pipeline: Any, frames: list[tuple[int, bytes]], seconds: float) -> dict[str, Any]:
    bursts = [frames[i : i + BURST] for i in range(0, len(frames), BURST)]
    busy = 0.0
    packets = 0
    while busy < seconds:
        for burst in bursts:
            for in_port, frame in burst:
                pipeline.send(in_port, [frame])
            started = time.perf_counter()
            pipeline.run_burst(len(burst))
            busy += time.perf_counter() - started
            packets += len(burst)
            pipeline.received()
    return {"packets": packets, "seconds": busy, "pps": packets / busy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forwarding", description=__doc__)
    parser.add_argument("writes", type=Path, help="the snapshot's WriteRequests (bench/servers)")
    parser.add_argument("frames", type=Path, help="frames as written by write_frames")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per engine")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    figures = measure(args.writes, args.frames, args.seconds)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
