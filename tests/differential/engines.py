"""Two embedded targets, the behavioural model and P4-DPDK, held to each other.

Each target is `felix-p4 target` in a process of its own (DPDK allows one EAL per process),
reached over real gRPC on loopback. The same entries reach both (one WriteRequest written to
each, or a driver run against each with the entries read back and compared), then the same
frames are sent to both, in order, each committed (P4-DPDK learns as packets pass), and the
results compared packet by packet: verdict, egress port and the bytes that left.

A service backend is the target's hash's choice (the model uses a stand-in), so a packet that
opens a service flow is compared as: each engine chose one of the service port's backends, and
the same one for the flow's later packets; where the two chose differently the output bytes are
compared with the backend's own fields (its address and port, the MAC and port it is reached
by, and the checksums over them) set aside, and those checksums checked on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import grpc
from canonical import canonical
from finsy.proto import p4r, rpc_code
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Packet
from target_process import free_port

from felix_p4.cli.sim import packet_requests, scenario_driver
from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info, pipeline_cookie
from felix_p4.p4.client import P4RuntimeClient
from felix_p4.p4.schema import PipelineSchema
from felix_p4.pipeline.entries import Exact, TableEntry
from felix_p4.softswitch.client import TargetClient
from felix_p4.softswitch.packet import build
from felix_p4.swx import availability

UNAVAILABLE = availability()
# `make differential` sets this: thousands of cases instead of `make test`'s sample.
THOROUGH = os.environ.get("DIFFERENTIAL") == "thorough"
ENGINES = ("model", "dpdk")
N_PORTS = 128
P4INFO = load_p4info(DEFAULT_P4INFO)
SCHEMA = PipelineSchema(P4INFO)
COOKIE = pipeline_cookie(P4INFO, b"")
RPC_TIMEOUT = 60.0
HARNESS_ELECTION_ID = 1  # below the driver's, so a driver run takes over as primary


def cases(sample: int, thorough: int) -> int:
    """How many cases a test runs: a sample in `make test`, many in `make differential`."""
    return thorough if THOROUGH else sample


Backend = tuple[str, int]  # (address, port) as a packet's description gives them


# Where a backend is: (verdict, egress port) of a frame sent to it.
Reach = Callable[[Backend], tuple[str, int]]


@attrs.frozen(slots=True)
class Frame:
    name: str
    in_port: int
    raw: bytes


@attrs.frozen(slots=True)
class Outcome:
    """What one engine did with one frame."""

    verdict: str
    egress_port: int | None
    out: bytes | None  # the frame as it left; None when dropped
    reason: str
    trace: tuple[tuple[str, bool, str], ...]

    @classmethod
    def of(cls, result: dict[str, Any]) -> Outcome:
        out = result.get("out_hex")
        return cls(
            result["verdict"],
            result["egress_port"],
            bytes.fromhex(out) if out is not None else None,
            result["reason"],
            tuple((r["table"], bool(r["hit"]), r["action"]) for r in result["trace"]),
        )

    def backend(self) -> Backend | None:
        """Where a forwarded IP frame went: its destination address and port."""
        if self.out is None:
            return None
        ip = _ip(Ether(self.out))
        if ip is None:
            return None
        l4 = ip.payload
        return str(ipaddress.ip_address(ip.dst)), int(getattr(l4, "dport", 0))


class Disagreement(AssertionError):
    """The engines did different things with the same frame (or the same entries)."""


class EnginePair:
    """A model target and a DPDK target, and a controller for each; methods are synchronous
    (they run the pair's own event loop), so hypothesis tests can drive them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.loop = asyncio.new_event_loop()
        self.addresses: dict[str, str] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._controllers: dict[str, P4RuntimeClient] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._traces: dict[str, TargetClient] = {}
        # (engine, flow) -> the backend the engine chose when the flow started
        self._pins: dict[tuple[str, object], Backend] = {}
        self.history: list[str] = []  # what this case did so far, for the failure message
        self.recorded: list[TableEntry] = []  # the entries the last driver run programmed
        self._cookie = COOKIE

    # --------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        for engine in ENGINES:
            address = f"127.0.0.1:{free_port()}"
            args = [sys.executable, "-m", "felix_p4", "target", "--listen", address]
            args += ["--engine", engine, "--log-level", "WARNING"]
            if engine == "dpdk":
                args += ["--dpdk-ports", str(N_PORTS)]
            with (self.workdir / f"{engine}.log").open("w") as log:
                self._procs[engine] = subprocess.Popen(args, stderr=log)
            self.addresses[engine] = address
        self.run(self._ready())

    async def _ready(self) -> None:
        for engine, address in self.addresses.items():
            channel = grpc.aio.insecure_channel(address)
            try:
                await asyncio.wait_for(channel.channel_ready(), 60)
            except TimeoutError:
                log = (self.workdir / f"{engine}.log").read_text()
                raise RuntimeError(f"the {engine} target did not start: {log}") from None
            self._channels[engine] = channel
            self._traces[engine] = TargetClient(channel)

    def close(self) -> None:
        self.run(self._release())
        for channel in self._channels.values():
            self.run(channel.close())
        for proc in self._procs.values():
            proc.terminate()
            proc.wait(10)
        self.loop.close()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 300))

    # --------------------------------------------------------------------- entries

    def reset(self) -> None:
        """Both targets start over: a fresh pipeline, no entries, nothing learned."""
        self.history = []
        self._pins.clear()
        self.run(self._reset())

    async def _controller(self, engine: str) -> P4RuntimeClient:
        client = self._controllers.get(engine)
        if client is None or not client.is_primary:
            client = P4RuntimeClient(
                self.addresses[engine], 1, HARNESS_ELECTION_ID, timeout=RPC_TIMEOUT
            )
            await client.connect()
            self._controllers[engine] = client
        return client

    async def _release(self) -> None:
        """Leave the targets to another controller (a driver)."""
        for client in self._controllers.values():
            await client.close()
        self._controllers.clear()

    async def _reset(self) -> None:
        self._cookie += 1
        for engine in ENGINES:
            client = await self._controller(engine)
            await client.set_pipeline(P4INFO, b"", self._cookie)

    def write(self, entries: Sequence[TableEntry]) -> None:
        """One WriteRequest inserting `entries` into both; each must succeed on both."""
        self._write_both([(p4r.Update.INSERT, e) for e in entries])

    def change(self, before: Sequence[TableEntry], after: Sequence[TableEntry]) -> None:
        """One WriteRequest taking both targets from `before` to `after`: deletes, modifies
        and inserts by P4Runtime key, as a driver's incremental apply does."""
        old = {e.key: e for e in before}
        new = {e.key: e for e in after}
        updates = [(p4r.Update.DELETE, e) for k, e in old.items() if k not in new]
        updates += [(p4r.Update.MODIFY, e) for k, e in new.items() if k in old and old[k] != e]
        updates += [(p4r.Update.INSERT, e) for k, e in new.items() if k not in old]
        self._write_both(updates)

    def _write_both(self, changes: Sequence[tuple[int, TableEntry]]) -> None:
        updates = [
            p4r.Update(type=kind, entity=p4r.Entity(table_entry=SCHEMA.encode(e)))
            for kind, e in changes
        ]
        results = self.run(self._write(updates))
        for i, (kind, entry) in enumerate(changes):
            codes = {engine: results[engine][i].code for engine in ENGINES}
            if set(codes.values()) != {rpc_code.OK}:
                messages = {engine: results[engine][i].message for engine in ENGINES}
                what = p4r.Update.Type.Name(kind)
                raise Disagreement(f"{what} {entry}: {codes} {messages}")
        kinds = [p4r.Update.Type.Name(kind) for kind, _ in changes]
        self.history.append(
            "wrote " + ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds)))
        )

    async def _write(self, updates: list[p4r.Update]) -> dict[str, Any]:
        out = {}
        for engine in ENGINES:
            client = await self._controller(engine)
            out[engine] = await client.write(updates)
        return out

    def drive(self, scenario: dict[str, Any]) -> tuple[list[Frame], ServiceBook]:
        """Both targets start over and a driver (spawned as Felix spawns it) programs each from
        the scenario's Felix messages and Kubernetes objects until in sync. Returns the
        scenario's packets as frames and the service front ends programmed; raises
        Disagreement unless both targets hold the same entries."""

        async def main() -> list[Frame]:
            async with contextlib.AsyncExitStack() as stack:
                for engine in ENGINES:
                    messages, settings = await stack.enter_async_context(
                        scenario_driver(scenario, self.addresses[engine])
                    )
                requests = await packet_requests(
                    scenario, messages, settings, self._traces["model"]
                )
            out = []
            for name, request in requests:
                if "hex" in request:
                    raw = bytes.fromhex(request["hex"])
                else:
                    raw = build(request["packet"])
                out.append(Frame(name, request["in_port"], raw))
            return out

        self.reset()
        self.run(self._release())  # the drivers are the controllers now
        frames = self.run(main())
        installed = {
            engine: [SCHEMA.decode(e) for e in self.installed(engine)] for engine in ENGINES
        }
        # Ids (policy programs, set bits, service groups) are allocation order, which differs.
        if canonical(installed["model"]) != canonical(installed["dpdk"]):
            raise Disagreement("a driver programmed the two targets differently")
        self.history.append(f"a driver programmed {len(installed['model'])} entries into each")
        self.recorded = installed["model"]
        return frames, ServiceBook.of(installed["model"])

    def installed(self, engine: str) -> list[p4r.TableEntry]:
        """Every entry `engine`'s target holds in the tables the control plane writes."""

        async def read() -> list[p4r.TableEntry]:
            client = P4RuntimeClient(self.addresses[engine], 1, 0, timeout=RPC_TIMEOUT)
            client.open()
            try:
                return await client.read_table_entries()
            finally:
                await client.close()

        return self.run(read())

    # --------------------------------------------------------------------- packets

    def send(
        self,
        in_port: int,
        frame: bytes,
        *,
        backends: frozenset[Backend] | None = None,
        flow: object = None,
        reach: Reach | None = None,
        what: str = "",
    ) -> dict[str, Outcome]:
        """`frame` into `in_port` of both, committed; raises Disagreement unless they agree.
        `backends`: the frame opens or continues a service flow, whose backend must be one of
        these; `flow`: the identity whose packets must keep the backend first chosen (a
        connection, or a client under ClientIP affinity); `reach`: where each backend is
        (verdict, egress port), checked where the engines chose different backends."""
        outcomes = self.run(self._send({e: (in_port, frame) for e in ENGINES}))
        self.history.append(f"{what or 'frame'} into port {in_port}: {frame.hex()}")
        problems = self._compare(outcomes, backends, flow, reach)
        if problems:
            raise Disagreement(self._report(what, outcomes, problems))
        return outcomes

    def send_each(self, frames: dict[str, tuple[int, bytes]], *, what: str = "") -> None:
        """A frame per engine (each backend's reply where the engines chose different
        backends): the results must be the same, bytes included."""
        outcomes = self.run(self._send(frames))
        self.history.append(f"{what or 'frames'}: {frames}")
        # A frame handed to the host is not routed: it keeps its sender's (the backend's) MAC.
        compared = {
            engine: attrs.evolve(o, out=o.out[:6] + bytes(6) + o.out[12:])
            if o.out is not None and o.out[6:12] == frames[engine][1][6:12]
            else o
            for engine, o in outcomes.items()
        }
        problems = self._compare(compared, None, None, None)
        if problems:
            raise Disagreement(self._report(what, outcomes, problems))

    async def _send(self, frames: dict[str, tuple[int, bytes]]) -> dict[str, Outcome]:
        out = {}
        for engine, (in_port, frame) in frames.items():
            request = {"in_port": in_port, "hex": frame.hex(), "commit": True}
            out[engine] = Outcome.of(await self._traces[engine].trace(request))
        return out

    def _compare(
        self,
        outcomes: dict[str, Outcome],
        backends: frozenset[Backend] | None,
        flow: object,
        reach: Reach | None,
    ) -> list[str]:
        model, dpdk = outcomes["model"], outcomes["dpdk"]
        problems = []
        chosen = {engine: o.backend() for engine, o in outcomes.items()}
        service = backends is not None and model.verdict != "drop" and dpdk.verdict != "drop"
        if service:
            assert backends is not None
            for engine, backend in chosen.items():
                if backend not in backends:
                    problems.append(f"{engine} chose {backend}, not one of {sorted(backends)}")
                if flow is not None and backend is not None:
                    pinned = self._pins.setdefault((engine, flow), backend)
                    if backend != pinned:
                        problems.append(f"{engine} moved flow {flow} from {pinned} to {backend}")
        if service and chosen["model"] != chosen["dpdk"]:
            # Different backends: each went where its backend is, and the frames differ
            # only in what the backend decides.
            for engine, o in outcomes.items():
                backend = chosen[engine]
                if reach is not None and backend is not None:
                    want = reach(backend)
                    if (o.verdict, o.egress_port) != want:
                        problems.append(
                            f"{engine} sent backend {backend} to {o.verdict} port "
                            f"{o.egress_port}, not {want[0]} port {want[1]}"
                        )
            assert model.out is not None and dpdk.out is not None
            routed_alike = model.verdict == dpdk.verdict
            return problems + _compare_apart_from_backend(model.out, dpdk.out, routed_alike)
        if model.verdict != dpdk.verdict:
            problems.append(f"verdict {model.verdict} (model) vs {dpdk.verdict} (dpdk)")
        if model.egress_port != dpdk.egress_port:
            problems.append(f"egress port {model.egress_port} (model) vs {dpdk.egress_port} (dpdk)")
        if model.out != dpdk.out:
            problems.append(_byte_difference(model.out, dpdk.out))
        return problems

    def _report(self, what: str, outcomes: dict[str, Outcome], problems: list[str]) -> str:
        lines = [f"engines disagree on {what or 'a frame'}:", *(f"  {p}" for p in problems)]
        for engine, o in outcomes.items():
            lines.append(f"  {engine}: {o.verdict} port {o.egress_port} ({o.reason})")
            lines.append(f"    out {o.out.hex() if o.out is not None else '-'}")
            lines.append(
                f"    trace {[f'{t}:{a}' + ('' if h else '(miss)') for t, h, a in o.trace]}"
            )
        lines.append("  this case so far:")
        lines += [f"    {step}" for step in self.history]
        return "\n".join(lines)


@attrs.frozen(slots=True)
class ServiceFront:
    backends: frozenset[Backend]
    service_id: int
    affinity: bool


@attrs.frozen(slots=True)
class ServiceBook:
    """The service front ends in a set of entries and the backends each may send to: what
    a frame opening a service flow is checked against."""

    fronts: dict[tuple[int, int, int, int], ServiceFront]

    @classmethod
    def of(cls, entries: Iterable[TableEntry]) -> ServiceBook:
        entries = list(entries)
        groups: dict[int, set[tuple[int, int]]] = {}
        for e in entries:
            if e.table == "service_backends" and e.action == "set_backend":
                params = dict(e.params)
                group = dict(e.match)["group"]
                assert isinstance(group, Exact)
                backend = ((params["addr_hi"] << 64) | params["addr_lo"], params["port"])
                groups.setdefault(group.value, set()).add(backend)
        fronts = {}
        for e in entries:
            if e.table != "services" or e.action != "to_service":
                continue
            match = {name: m.value for name, m in e.match if isinstance(m, Exact)}
            params = dict(e.params)
            version = match["ip_version"]
            key = (
                version,
                (match.get("addr_hi", 0) << 64) | match.get("addr_lo", 0),
                match.get("proto", 0),
                match.get("port", 0),
            )
            backends = groups.get(params["group"], set())
            fronts[key] = ServiceFront(
                frozenset((_addr_text(addr, version), port) for addr, port in backends),
                params["service_id"],
                params["affinity_seconds"] != 0,
            )
        return cls(fronts)

    def flow(self, frame: bytes) -> tuple[frozenset[Backend], object] | None:
        """(the backends, the identity that keeps one) of a frame to a front end, or None."""
        ip = _ip(Ether(frame))
        if ip is None:
            return None
        l4 = ip.payload
        sport, dport = int(getattr(l4, "sport", 0)), int(getattr(l4, "dport", 0))
        proto = ip.proto if ip.version == 4 else ip.nh
        dst = int(ipaddress.ip_address(ip.dst))
        front = self.fronts.get((ip.version, dst, proto, dport))
        if front is None:
            return None
        if front.affinity:
            return front.backends, ("affinity", ip.src, front.service_id)
        return front.backends, ("flow", proto, ip.src, sport, ip.dst, dport)


def _addr_text(addr: int, version: int) -> str:
    return str(ipaddress.IPv4Address(addr) if version == 4 else ipaddress.IPv6Address(addr))


def _ip(packet: Packet) -> Packet | None:
    for layer in (IP, IPv6):
        if layer in packet:
            return packet[layer]
    return None


def _byte_difference(model: bytes | None, dpdk: bytes | None) -> str:
    if model is None or dpdk is None:
        return f"output {'none' if model is None else 'a frame'} (model) vs " + (
            "none (dpdk)" if dpdk is None else "a frame (dpdk)"
        )
    at = next(
        (i for i, (a, b) in enumerate(zip(model, dpdk, strict=False)) if a != b),
        min(len(model), len(dpdk)),
    )
    return (
        f"output bytes differ from byte {at} (model {len(model)} bytes, dpdk {len(dpdk)}): "
        f"model ...{model[at : at + 8].hex()} dpdk ...{dpdk[at : at + 8].hex()}"
    )


def _compare_apart_from_backend(model: bytes, dpdk: bytes, routed_alike: bool) -> list[str]:
    """Frames sent to different backends: equal once the backend's fields are set aside (and
    the routing, where one backend is local and the other is not), and each one's checksums
    right for what it carries."""
    problems = []
    blanked = {}
    for engine, frame in (("model", model), ("dpdk", dpdk)):
        packet = Ether(frame)
        for wrong in checksum_errors(packet):
            problems.append(f"{engine}: {wrong}")
        packet.dst = "00:00:00:00:00:00"
        ip = _ip(packet)
        if not routed_alike:
            packet.src = "00:00:00:00:00:00"
            if ip is not None:
                setattr(ip, "ttl" if ip.version == 4 else "hlim", 0)
        if ip is not None:
            ip.src = "0.0.0.0" if ip.version == 4 else "::"  # hairpin rewrites the source
            ip.dst = "0.0.0.0" if ip.version == 4 else "::"
            if ip.version == 4:
                ip.chksum = 0
            for layer in (TCP, UDP, SCTP):
                if layer in ip:
                    ip[layer].dport = 0
                    if layer is not SCTP:  # its CRC32c covers no address and is not updated
                        ip[layer].chksum = 0
        blanked[engine] = bytes(packet)
    if blanked["model"] != blanked["dpdk"]:
        problems.append(
            "apart from the backend: " + _byte_difference(blanked["model"], blanked["dpdk"])
        )
    return problems


def checksum_errors(packet: Packet) -> list[str]:
    """Checksums in `packet` that do not check (0 and 0xffff both stand for a zero sum)."""
    errors = []
    for layer in (IP, TCP, UDP, ICMP):
        if layer not in packet:
            continue
        got = packet[layer].chksum
        if layer is UDP and got == 0 and IP in packet:
            continue  # IPv4 UDP without a checksum
        clean = packet.copy()
        clean[layer].chksum = None
        want = Ether(bytes(clean))[layer].chksum
        if got != want and {got, want} != {0, 0xFFFF}:
            errors.append(f"{layer.__name__} checksum {got:#06x}, {want:#06x} is right")
    return errors
