"""`felix-p4 target --engine dpdk` as a process: P4Runtime writes land in DPDK's SWX pipeline
running the packaged spec, refusals keep the store and SWX equal, and packets (checked with
scapy) and traces show what SWX did. Skips, with the reason, without DPDK.

The target runs as a subprocess: DPDK allows one EAL per process, and other SWX tests in this
process start theirs with less memory than the packaged pipeline needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from finsy.proto import p4r, rpc_code
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether
from target_process import target_process

from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.client import P4RuntimeClient, P4RuntimeClientError, per_update_results
from felix_p4.p4.schema import PipelineSchema
from felix_p4.pipeline.entries import Exact, Lpm, TableEntry, Ternary
from felix_p4.softswitch.client import TargetClient
from felix_p4.softswitch.dpdk_translate import SWX_PRIORITY_MAX
from felix_p4.swx import availability

UNAVAILABLE = availability()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

CLI = [sys.executable, "-m", "felix_p4"]
N_PORTS = 8
P4INFO = load_p4info(DEFAULT_P4INFO)
SCHEMA = PipelineSchema(P4INFO)
ACTION_IDS = {a.preamble.name: a.preamble.id for a in P4INFO.actions}
GATEWAY = 0xEEEEEEEEEEEE
MAC_A, MAC_B = "0a:58:0a:41:00:02", "0a:58:0a:41:00:03"
IP_A, IP_B = "10.65.0.2", "10.65.0.3"
PORT_A, PORT_B, HOST = 1, 2, 3
FLOW_FIELDS = ("ip_version", "proto", "a_hi", "a_lo", "a_port", "b_hi", "b_lo", "b_port")


def _dpdk_target(tmp: Path, *args: str) -> contextlib.AbstractContextManager[str]:
    return target_process(tmp, "--engine", "dpdk", *args)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _dpdk_target(tmp_path_factory.mktemp("dpdk"), "--dpdk-ports", str(N_PORTS)) as a:
        yield a


@pytest.fixture(scope="module")
def tight_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DPDK memory for one pipeline and little more: a big ACL rebuild runs out of it."""
    with _dpdk_target(
        tmp_path_factory.mktemp("dpdk-tight"),
        "--dpdk-ports",
        str(N_PORTS),
        "--dpdk-memory-mb",
        "384",
    ) as a:
        yield a


@pytest.fixture(scope="module")
def small_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SWX holds 2 port_classify entries (its hash table enforces that) and 2 routes_v4 entries
    (an LPM table, bounded by the engine)."""
    with _dpdk_target(
        tmp_path_factory.mktemp("dpdk-small"),
        "--dpdk-ports",
        str(N_PORTS),
        "--table-limit",
        "port_classify=2",
        "--table-limit",
        "routes_v4=2",
    ) as a:
        yield a


class Device:
    """A primary controller that pushed the packaged pipeline (so SWX starts empty)."""

    def __init__(self, address: str) -> None:
        self.client = P4RuntimeClient(address, 1, 1, timeout=30)
        self.channel = grpc.aio.insecure_channel(address)
        self.packets = TargetClient(self.channel)

    async def write(self, *updates: p4r.Update) -> list[int]:
        return [r.code for r in await self.client.write(updates)]

    async def write_atomic(self, *updates: p4r.Update) -> list[int]:
        request = p4r.WriteRequest(
            device_id=1,
            election_id=self.client._election(),
            updates=updates,
            atomicity=p4r.WriteRequest.ROLLBACK_ON_ERROR,
        )
        try:
            await self.client.stub.Write(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            return [r.code for r in per_update_results(exc, len(updates))]
        return [rpc_code.OK] * len(updates)

    async def entries(self, table: str) -> list[p4r.TableEntry]:
        return await self.client.read_table_entries([SCHEMA.table_id(table)])

    async def default(self, table: str) -> p4r.TableEntry:
        request = p4r.ReadRequest(
            device_id=1,
            entities=[
                p4r.Entity(
                    table_entry=p4r.TableEntry(
                        table_id=SCHEMA.table_id(table), is_default_action=True
                    )
                )
            ],
        )
        found = [e async for r in self.client.stub.Read(request) for e in r.entities]
        return found[0].table_entry

    async def send(self, in_port: int, frame: bytes | Ether) -> dict[str, Any]:
        request = {"in_port": in_port, "hex": bytes(frame).hex(), "commit": True}
        return await self.packets.trace(request)


@contextlib.asynccontextmanager
async def device(address: str) -> AsyncIterator[Device]:
    dev = Device(address)
    await dev.client.connect()
    try:
        await dev.client.set_pipeline(P4INFO, b"", 1)
        yield dev
    finally:
        await dev.client.close()
        await dev.channel.close()


def run(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def mac(text: str) -> int:
    return int(text.replace(":", ""), 16)


def update(kind: int, entry: TableEntry) -> p4r.Update:
    return p4r.Update(type=kind, entity=p4r.Entity(table_entry=SCHEMA.encode(entry)))


def insert(entry: TableEntry) -> p4r.Update:
    return update(p4r.Update.INSERT, entry)


def modify(entry: TableEntry) -> p4r.Update:
    return update(p4r.Update.MODIFY, entry)


def delete(entry: TableEntry) -> p4r.Update:
    return update(p4r.Update.DELETE, entry)


def workload_port(port: int, egress_program: int = 0, out: int | None = None) -> TableEntry:
    return TableEntry(
        "port_classify",
        (("port", Exact(port)),),
        "workload_port",
        (("gateway_mac", GATEWAY), ("egress_program", egress_program), ("port", out or port)),
    )


def host_port(port: int) -> TableEntry:
    return TableEntry("port_classify", (("port", Exact(port)),), "host_port")


def allow_source(port: int, addr: str) -> TableEntry:
    return TableEntry(
        "source_check_v4",
        (("port", Exact(port)), ("src", Lpm(ip(addr), 32))),
        "allow_source",
    )


def route_to(addr: str, plen: int, port: int, dmac: str, ingress_program: int = 0) -> TableEntry:
    return TableEntry(
        "routes_v4",
        (("dst", Lpm(ip(addr), plen)),),
        "to_workload",
        (
            ("port", port),
            ("dmac", mac(dmac)),
            ("smac", GATEWAY),
            ("ingress_program", ingress_program),
        ),
    )


def rule(program: int, action: str, priority: int, stage: str = "egress_stage_0") -> TableEntry:
    """A rule of `program` matching TCP (ternary proto), the other fields don't-care."""
    match = (("program", Exact(program)), ("proto", Ternary(6, 0xFF)))
    return TableEntry(stage, match, action, priority=priority)


def two_workloads(egress_program: int = 0) -> list[p4r.Update]:
    return [
        insert(workload_port(PORT_A, egress_program)),
        insert(workload_port(PORT_B)),
        insert(host_port(HOST)),
        insert(allow_source(PORT_A, IP_A)),
        insert(route_to(IP_B, 32, PORT_B, MAC_B)),
    ]


def tcp(sport: int = 40000, dst: str = IP_B, ttl: int = 64) -> Ether:
    return (
        Ether(src=MAC_A, dst="ee:ee:ee:ee:ee:ee")
        / IP(src=IP_A, dst=dst, ttl=ttl)
        / TCP(sport=sport, dport=80, flags="S")
    )


def rows(result: dict[str, Any]) -> list[tuple[str, bool, str]]:
    return [(r["table"], r["hit"], r["action"]) for r in result["trace"]]


# ------------------------------------------------------------------------------ packets


def test_a_tcp_packet_between_workloads_is_routed_rewritten_and_checksummed(target):
    async def main() -> None:
        async with device(target) as dev:
            assert await dev.write(*two_workloads()) == [rpc_code.OK] * 5
            sent = tcp()

            result = await dev.send(PORT_A, sent)

            assert (result["verdict"], result["egress_port"]) == ("forward", PORT_B)
            got = Ether(bytes.fromhex(result["out_hex"]))
            assert (got.dst, got.src) == (MAC_B, "ee:ee:ee:ee:ee:ee")
            assert (got[IP].src, got[IP].dst, got[IP].ttl) == (IP_A, IP_B, 63)
            assert got[TCP].sport == 40000 and got[TCP].dport == 80
            recomputed = got.copy()
            del recomputed[IP].chksum, recomputed[TCP].chksum
            recomputed = Ether(bytes(recomputed))
            assert got[IP].chksum == recomputed[IP].chksum
            assert got[TCP].chksum == recomputed[TCP].chksum
            assert bytes(got[TCP].payload) == bytes(sent[TCP].payload)

    run(main())


def test_the_trace_lists_every_table_hit_or_missed_in_pipeline_order(target):
    async def main() -> None:
        async with device(target) as dev:
            await dev.write(*two_workloads())

            first = await dev.send(PORT_A, tcp(sport=41000))
            again = await dev.send(PORT_A, tcp(sport=41000))

            assert rows(first) == [
                ("port_classify", True, "workload_port"),
                ("source_check_v4", True, "allow_source"),
                ("node", False, "node_config"),  # keyless: its default entry
                ("services", False, "not_service"),
                ("service_replies", False, "reverse_learn"),
                ("routes_v4", True, "to_workload"),
                ("ipset_src_v4", False, "no_sets"),
                ("ipset_dst_v4", False, "no_sets"),
                ("portset_src", False, "no_sets"),
                ("portset_dst", False, "no_sets"),
                ("conntrack", False, "ct_learn"),
            ]
            assert first["trace"][-1].get("learned") is True
            assert first["reason"] == "routed to local workload"
            assert rows(again)[-1] == ("conntrack", True, "ct_established")

    run(main())


def test_policy_stage_entries_differing_only_in_priority_take_turns_in_swx(target):
    """SWX holds one entry per value/mask: the highest P4Runtime priority, then the next."""

    async def main() -> None:
        async with device(target) as dev:
            await dev.write(*two_workloads(egress_program=5))
            allow20, deny10 = rule(5, "rule_allow", 20), rule(5, "rule_deny", 10)
            assert await dev.write(insert(allow20), insert(deny10)) == [rpc_code.OK] * 2

            allowed = await dev.send(PORT_A, tcp(sport=42001))
            assert allowed["verdict"] == "forward"
            assert ("egress_stage_0", True, "rule_allow") in rows(allowed)

            assert await dev.write(delete(allow20)) == [rpc_code.OK]
            denied = await dev.send(PORT_A, tcp(sport=42002))
            assert denied["verdict"] == "drop"
            assert denied["reason"] == "egress policy: rule_deny"

            assert await dev.write(insert(rule(5, "rule_allow", 5))) == [rpc_code.OK]
            assert (await dev.send(PORT_A, tcp(sport=42003)))["verdict"] == "drop"
            assert await dev.write(modify(rule(5, "rule_allow", 10))) == [rpc_code.OK]
            assert (await dev.send(PORT_A, tcp(sport=42004)))["verdict"] == "forward"

            stored = await dev.entries("egress_stage_0")
            assert sorted(e.priority for e in stored) == [5, 10]

    run(main())


def test_exact_lpm_entries_are_modified_and_deleted_in_swx_as_in_p4runtime(target):
    async def main() -> None:
        async with device(target) as dev:
            await dev.write(*two_workloads())
            wider = route_to("10.65.0.0", 24, 4, "0a:00:00:00:00:04")
            assert await dev.write(insert(wider)) == [rpc_code.OK]
            assert await dev.write(insert(wider)) == [rpc_code.ALREADY_EXISTS]

            assert (await dev.send(PORT_A, tcp(dst="10.65.0.9")))["egress_port"] == 4
            assert (await dev.send(PORT_A, tcp()))["egress_port"] == PORT_B  # longest prefix

            moved = route_to("10.65.0.0", 24, 5, "0a:00:00:00:00:05")
            assert await dev.write(modify(moved)) == [rpc_code.OK]
            assert (await dev.send(PORT_A, tcp(dst="10.65.0.9")))["egress_port"] == 5

            assert await dev.write(delete(moved)) == [rpc_code.OK]
            assert await dev.write(delete(moved)) == [rpc_code.NOT_FOUND]
            gone = await dev.send(PORT_A, tcp(dst="10.65.0.9"))
            assert (gone["verdict"], gone["reason"]) == ("drop", "no route in routes_v4")

            assert await dev.write(delete(workload_port(PORT_A))) == [rpc_code.OK]
            unknown = await dev.send(PORT_A, tcp(sport=43000))
            assert unknown["reason"] == f"port {PORT_A} is not a known port"
            assert len(await dev.entries("port_classify")) == 2

    run(main())


def test_the_default_route_is_modified_to_the_host_and_reset(target):
    async def main() -> None:
        async with device(target) as dev:
            await dev.write(*two_workloads())
            to_host = TableEntry("routes_v4", (), "to_host", (("port", HOST),), is_default=True)
            assert await dev.write(modify(to_host)) == [rpc_code.OK]

            out = await dev.send(PORT_A, tcp(dst="8.8.8.8"))
            assert (out["verdict"], out["egress_port"]) == ("host", HOST)
            assert Ether(bytes.fromhex(out["out_hex"]))[IP].ttl == 64  # not routed: untouched
            stored = await dev.default("routes_v4")
            assert stored.action.action.action_id == ACTION_IDS["to_host"]

            reset = p4r.TableEntry(table_id=SCHEMA.table_id("routes_v4"), is_default_action=True)
            assert await dev.write(
                p4r.Update(type=p4r.Update.MODIFY, entity=p4r.Entity(table_entry=reset))
            ) == [rpc_code.OK]
            dropped = await dev.send(PORT_A, tcp(dst="8.8.8.8", sport=40100))
            assert dropped["reason"] == "no route in routes_v4"

    run(main())


def test_a_catch_all_route_written_after_others_is_programmed_as_itself(target):
    """The driver's 0.0.0.0/0 route has no match fields; the engine once read it back with a
    field-less (wildcard) read, took the first stored route for it and programmed that one
    twice, so traffic for the host found no route (found by ping in tests/netns)."""

    async def main() -> None:
        async with device(target) as dev:
            await dev.write(*two_workloads())
            catch_all = TableEntry("routes_v4", (), "to_host", (("port", HOST),))
            assert await dev.write(insert(catch_all)) == [rpc_code.OK]

            out = await dev.send(PORT_A, tcp(dst="192.0.2.11"))
            assert (out["verdict"], out["egress_port"]) == ("host", HOST)
            assert (await dev.send(PORT_A, tcp(sport=40001)))["egress_port"] == PORT_B

            assert await dev.write(delete(catch_all)) == [rpc_code.OK]
            gone = await dev.send(PORT_A, tcp(dst="192.0.2.11", sport=40002))
            assert gone["reason"] == "no route in routes_v4"
            assert (await dev.send(PORT_A, tcp(sport=40003)))["egress_port"] == PORT_B

    run(main())


def test_arp_is_answered_for_the_gateway_but_not_for_the_askers_own_address(target):
    """The spec's ARP responder: a probe (sender 0.0.0.0, `arping -D`) or an announcement
    (sender = target) for the pod's own address gets no answer, as from Linux proxy ARP."""

    def who_has(sender: str, target_ip: str) -> Ether:
        return Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=MAC_A, psrc=sender, pdst=target_ip
        )

    async def main() -> None:
        async with device(target) as dev:
            await dev.write(*two_workloads())

            answered = await dev.send(PORT_A, who_has(IP_A, "169.254.1.1"))
            assert (answered["verdict"], answered["egress_port"]) == ("forward", PORT_A)
            reply = Ether(bytes.fromhex(answered["out_hex"]))[ARP]
            assert (reply.op, reply.hwsrc, reply.psrc) == (2, "ee:ee:ee:ee:ee:ee", "169.254.1.1")

            for sender in ("0.0.0.0", IP_A):
                probe = await dev.send(PORT_A, who_has(sender, IP_A))
                assert probe["verdict"] == "drop", sender

    run(main())


def test_a_frame_shorter_than_its_ip_header_claims_is_dropped_at_the_port(target):
    async def main() -> None:
        async with device(target) as dev:
            await dev.write(*two_workloads())
            whole = bytes(tcp(sport=44000))
            assert (await dev.send(PORT_A, whole))["verdict"] == "forward"

            cut = await dev.send(PORT_A, whole[:-6])

            assert cut["verdict"] == "drop" and cut["trace"] == []
            assert "shorter than its IPv4 total length" in cut["reason"]

    run(main())


# ------------------------------------------------------------------------------ refusals


def test_another_p4info_is_refused_and_the_packaged_one_accepted(target):
    async def main() -> None:
        async with device(target) as dev:
            other = load_p4info(DEFAULT_P4INFO)
            other.tables[0].size = 7
            with pytest.raises(P4RuntimeClientError) as refused:
                await dev.client.set_pipeline(other, b"", 2)
            assert "INVALID_ARGUMENT" in str(refused.value)
            assert "the DPDK engine runs the packaged pipeline" in str(refused.value)
            assert "table port_classify differs" in str(refused.value)
            await dev.client.set_pipeline(P4INFO, b"", 3)

    run(main())


def test_entries_swx_cannot_run_are_refused_before_the_store_takes_them(target):
    async def main() -> None:
        async with device(target) as dev:
            beyond = route_to("10.65.1.0", 24, N_PORTS, "0a:00:00:00:00:09")
            host_beyond = TableEntry(
                "routes_v4", (), "to_host", (("port", N_PORTS + 1),), is_default=True
            )
            learned = TableEntry(
                "conntrack",
                tuple((f, Exact(1)) for f in FLOW_FIELDS),
                "ct_established",
            )
            codes = await dev.write(
                insert(beyond),
                insert(workload_port(PORT_A, out=200)),
                modify(host_beyond),
                insert(learned),
                insert(rule(5, "rule_allow", SWX_PRIORITY_MAX + 1)),
                insert(rule(5, "rule_allow", SWX_PRIORITY_MAX)),
            )

            assert codes == [
                rpc_code.INVALID_ARGUMENT,
                rpc_code.INVALID_ARGUMENT,
                rpc_code.INVALID_ARGUMENT,
                rpc_code.UNIMPLEMENTED,
                rpc_code.OUT_OF_RANGE,
                rpc_code.OK,
            ]
            assert await dev.entries("routes_v4") == []
            assert await dev.entries("port_classify") == []
            default = await dev.default("routes_v4")
            assert default.action.action.action_id == ACTION_IDS["no_route"]

    run(main())


def test_a_full_table_is_resource_exhausted_and_the_store_rolled_back(small_target):
    async def main() -> None:
        async with device(small_target) as dev:
            assert (
                await dev.write(insert(workload_port(PORT_A)), insert(workload_port(PORT_B)))
                == [rpc_code.OK] * 2
            )

            codes = await dev.write(insert(host_port(HOST)), insert(allow_source(PORT_A, IP_A)))

            assert codes == [rpc_code.RESOURCE_EXHAUSTED, rpc_code.OK]
            ports = await dev.entries("port_classify")
            assert sorted(e.match[0].exact.value for e in ports) == [b"\x01", b"\x02"]
            assert (await dev.send(HOST, tcp()))["reason"] == f"port {HOST} is not a known port"
            assert len(await dev.entries("source_check_v4")) == 1

            # SWX adds before it deletes: a swap in a full hash table still fits.
            assert (
                await dev.write(delete(workload_port(PORT_B)), insert(host_port(HOST)))
                == [rpc_code.OK] * 2
            )
            assert (await dev.send(HOST, tcp()))["reason"] == "no route in routes_v4"

            routes = [route_to(f"10.65.{i}.0", 24, PORT_B, MAC_B) for i in range(3)]
            codes = await dev.write(*(insert(r) for r in routes))
            assert codes == [rpc_code.OK, rpc_code.OK, rpc_code.RESOURCE_EXHAUSTED]
            assert len(await dev.entries("routes_v4")) == 2

    run(main())


def test_a_table_commit_swx_refuses_fails_its_updates_and_the_store_rolls_back(tight_target):
    """SWX rebuilds a wildcard table's ACL from all its entries at each commit; once that
    needs more DPDK memory than there is, it refuses the commit."""

    def flood(i: int) -> TableEntry:
        return TableEntry(
            "egress_stage_0",
            (
                ("program", Exact(1000 + i % 60000)),
                ("ip_version", Ternary(4, 0xFF)),
                ("proto", Ternary(6, 0xFF)),
                ("src_sets_hi", Ternary(i, 2**64 - 1)),
                ("dst_sets_hi", Ternary(i, 0xFFFF0000FFFFFFFF)),
                ("src_port", Ternary(i % 65536, 0xFFFF)),
            ),
            "rule_allow",
            priority=i + 1,
        )

    async def main() -> None:
        async with device(tight_target) as dev:
            await dev.write(*two_workloads(egress_program=5), insert(rule(5, "rule_allow", 1)))
            batch, written = 1000, 0
            while written < 30 * batch:
                codes = await dev.write(*(insert(flood(written + i)) for i in range(batch)))
                if codes != [rpc_code.OK] * batch:
                    break
                written += batch

            assert set(codes) == {rpc_code.INTERNAL}
            assert len(await dev.entries("egress_stage_0")) == written + 1
            still = await dev.send(PORT_A, tcp(sport=48000))
            assert ("egress_stage_0", True, "rule_allow") in rows(still)

    run(main())


def test_an_all_or_none_batch_swx_refuses_is_rolled_back_in_swx_and_the_store(small_target):
    async def main() -> None:
        async with device(small_target) as dev:
            await dev.write(insert(workload_port(PORT_A)), insert(workload_port(PORT_B)))
            await dev.write(insert(route_to(IP_A, 32, PORT_A, MAC_A)))

            codes = await dev.write_atomic(
                insert(allow_source(PORT_B, IP_B)), insert(host_port(HOST))
            )

            assert codes == [rpc_code.ABORTED, rpc_code.RESOURCE_EXHAUSTED]
            assert await dev.entries("source_check_v4") == []
            assert len(await dev.entries("port_classify")) == 2
            from_b = (
                Ether(src=MAC_B, dst="ee:ee:ee:ee:ee:ee")
                / IP(src=IP_B, dst=IP_A)
                / TCP(sport=45000, dport=80)
            )
            spoofed = await dev.send(PORT_B, from_b)
            assert spoofed["reason"] == "source address not allowed on this port (spoofed)"

    run(main())


def test_reconciling_the_pipeline_keeps_entries_in_swx(target):
    async def main() -> None:
        async with device(target) as dev:
            await dev.write(*two_workloads())
            request = p4r.SetForwardingPipelineConfigRequest(
                device_id=1,
                election_id=dev.client._election(),
                action=p4r.SetForwardingPipelineConfigRequest.RECONCILE_AND_COMMIT,
                config=p4r.ForwardingPipelineConfig(p4info=P4INFO),
            )
            await dev.client.stub.SetForwardingPipelineConfig(request, timeout=30)

            assert (await dev.send(PORT_A, tcp(sport=46000)))["egress_port"] == PORT_B

    run(main())


# ------------------------------------------------------------------------------ the CLI


def test_felix_p4_trace_needs_commit_on_the_dpdk_engine(target):
    async def main() -> None:
        async with device(target) as dev:
            await dev.write(*two_workloads())

    run(main())
    frame = bytes(tcp(sport=47000)).hex()
    base = [*CLI, "trace", "--target", target, "--in-port", str(PORT_A), "--hex", frame]

    without = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=60)
    traced = subprocess.run(
        [*base, "--json", "--commit"], capture_output=True, text=True, timeout=60
    )

    assert without.returncode == 1
    assert "cannot trace without committing" in without.stderr
    assert traced.returncode == 0, traced.stderr
    result = json.loads(traced.stdout)["packets"][0]
    assert (result["verdict"], result["egress_port"]) == ("forward", PORT_B)


def test_the_affinity_profile_gets_the_configured_timeout():
    """Learner timeouts as SWX reports them, from an engine in a process of its own."""
    script = """
from felix_p4.softswitch.dpdk import DpdkEngine, DpdkSettings
from felix_p4.softswitch.store import TableStore
engine = DpdkEngine(DpdkSettings(n_ports=1, affinity_seconds=777))
engine.reset(TableStore(engine.p4info, initial_defaults=engine.initial_defaults(engine.p4info)))
pipeline = engine.pipeline
print([pipeline.learner_timeout_seconds("_service_affinity", i) for i in range(8)])
print([pipeline.learner_timeout_seconds("conntrack", i) for i in range(8)])
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )

    assert out.returncode == 0, out.stderr
    affinity, conntrack = out.stdout.splitlines()
    assert affinity == str([10, 30, 60, 120, 300, 43200, 777, 120])
    assert conntrack == str([10, 30, 60, 120, 300, 43200, 120, 120])
