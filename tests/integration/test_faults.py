"""Faults end in convergence: target restarts, out-of-band changes, rival drivers, SIGTERM."""

import asyncio
import signal

import grpc
from felix_harness import SNAPSHOT, embedded_target, endpoint_update, felix_driver, msg, wait_until
from finsy.proto import U128, p4r

from felix_p4.cli.replay import read_recording
from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema
from felix_p4.softswitch.client import TargetClient
from felix_p4.softswitch.service import start_target

IN_SYNC = msg(in_sync={})
SCHEMA = PipelineSchema(load_p4info(DEFAULT_P4INFO))


def _entries(target) -> set:
    read = target.tables.read(p4r.Entity(table_entry=p4r.TableEntry()))
    return {SCHEMA.decode(e.table_entry) for e in read if e.table_entry.table_id}


async def _trace(address: str, src: str, dst: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        result = await TargetClient(channel).trace(
            {"in_port": 1, "packet": {"src": src, "dst": dst, "dport": 80}, "commit": False}
        )
    return result["verdict"]


def test_target_restart_is_detected_and_converged_without_losing_updates(tmp_path):
    async def main():
        server, port, target = await start_target("127.0.0.1:0")
        address = f"127.0.0.1:{port}"
        try:
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                before = _entries(target)
                await server.stop(None)
                # Felix keeps talking while the target is down; nothing may be lost.
                await felix.send(endpoint_update("cali-c", "10.65.0.4/32", "0a:58:0a:41:00:04"))
                server, _, target = await start_target(address)
                await wait_until(
                    lambda: target.tables is not None and len(_entries(target)) == len(before) + 3,
                    timeout=30,
                    what="the restarted target to be programmed again",
                )
                assert before <= _entries(target)
                assert await _trace(address, "10.65.0.2", "10.65.0.4") == "forward"
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_entries_changed_behind_our_back_are_reread_and_reconciled(tmp_path):
    from felix_p4.pipeline.entries import Lpm, TableEntry

    def write(target, kind, entry):
        target.tables.write(
            p4r.Update(type=kind, entity=p4r.Entity(table_entry=SCHEMA.encode(entry)))
        )

    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                route_a = next(
                    e
                    for e in _entries(target)
                    if e.table == "routes_v4" and dict(e.match).get("dst") == Lpm(0x0A410002, 32)
                )
                # Behind the driver's back: cali-a's route disappears (its next MODIFY gets
                # NOT_FOUND) and a route for cali-c appears (its INSERT gets ALREADY_EXISTS).
                write(target, p4r.Update.DELETE, route_a)
                write(
                    target,
                    p4r.Update.INSERT,
                    TableEntry.make("routes_v4", {"dst": Lpm(0x0A410004, 32)}, "no_route"),
                )
                await felix.send(
                    endpoint_update("cali-a", "10.65.0.2/32", "0a:58:0a:41:00:99"),
                    endpoint_update("cali-c", "10.65.0.4/32", "0a:58:0a:41:00:04"),
                )
                await felix.wait_for(
                    lambda r: (
                        felix.statuses().get("default/cali-c") == "up"
                        and len(felix.payloads("workload_endpoint_status_update")) >= 4
                    )
                )
                routes = {
                    dict(e.match).get("dst"): e for e in _entries(target) if e.table == "routes_v4"
                }
                assert dict(routes[Lpm(0x0A410002, 32)].params)["dmac"] == 0x0A580A410099
                assert routes[Lpm(0x0A410004, 32)].action == "to_workload"
                assert set(felix.statuses().values()) == {"up"}

    asyncio.run(main())


def test_a_second_driver_waits_for_mastership_and_takes_over_without_rewrites(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as first:
                await first.send(*SNAPSHOT, IN_SYNC)
                await first.wait_for(lambda r: first.in_sync())
                written = target.write_count
                async with felix_driver(address, tmp_path) as second:
                    await second.send(*SNAPSHOT, IN_SYNC)
                    # Same election id while the first is connected: the second is refused.
                    await wait_until(lambda: "process_status_update" in second.payloads())
                    assert not second.in_sync()
                    first.driver.close_input()
                    assert await asyncio.wait_for(first.driver.wait(), 20) == 0
                    await second.wait_for(lambda r: second.in_sync(), timeout=30)
                    assert second.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
                assert target.write_count == written

    asyncio.run(main())


def test_sigterm_exits_cleanly_and_leaves_the_pipeline_programmed(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                entries = _entries(target)
                felix.driver.kill(signal.SIGTERM)
                assert await asyncio.wait_for(felix.driver.wait(), 10) == 0
                assert _entries(target) == entries

    asyncio.run(main())


def test_losing_mastership_stops_writes_and_regaining_it_resumes(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            record = tmp_path / "low.rec"
            backup_writes: list[int] = []
            high_primary = False

            def on_write(request):
                if high_primary and U128.decode(request.election_id) == 10:
                    backup_writes.append(len(request.updates))

            target.on_write.append(on_write)
            async with felix_driver(address, tmp_path, {"record": str(record)}) as low:
                await low.send(*SNAPSHOT, IN_SYNC)
                await low.wait_for(lambda r: low.in_sync())
                higher = {"p4runtime": {"election_id": 20}}
                async with felix_driver(address, tmp_path, higher) as high:
                    await high.send(*SNAPSHOT, IN_SYNC)
                    await high.wait_for(lambda r: high.in_sync())
                    high_primary = True
                    # The old primary now has work: cali-c. It has read it (it records frames
                    # before handling them) and tried to become primary again since.
                    await low.send(endpoint_update("cali-c", "10.65.0.4/32", "0a:58:0a:41:00:04"))
                    await wait_until(
                        lambda: len(read_recording(record)) == len(SNAPSHOT) + 2,
                        what="the low driver to read cali-c",
                    )
                    attempts = target.arbitration.updates
                    await wait_until(
                        lambda: target.arbitration.updates > attempts,
                        timeout=30,
                        what="the low driver to try for mastership again",
                    )
                    assert target.tables.entry_count("routes_v4") == 3
                    assert backup_writes == []
                    high_primary = False
                # The higher one is gone: the first regains mastership, re-reads, converges.
                await wait_until(
                    lambda: target.tables.entry_count("routes_v4") == 4,
                    timeout=30,
                    what="the first driver to resume writing",
                )
                await low.wait_for(lambda r: low.statuses().get("default/cali-c") == "up")

    asyncio.run(main())
