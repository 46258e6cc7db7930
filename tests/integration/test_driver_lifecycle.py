"""The driver as Felix runs it: snapshot, InSync, statuses on fd 4, entries on the target."""

import asyncio

from felix_harness import (
    SNAPSHOT,
    embedded_target,
    endpoint_remove,
    endpoint_update,
    felix_driver,
    msg,
)

IN_SYNC = msg(in_sync={})


def _entries(target, table):
    return target.tables.entry_count(table)


def test_snapshot_is_programmed_once_in_sync_and_reported_up(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*SNAPSHOT)
                await felix.wait_for(
                    lambda r: "process_status_update" in [m.WhichOneof("payload") for m in r]
                )
                # Half a snapshot: nothing may be written while Felix is not in sync.
                pipeline_ready = asyncio.Event()
                target.on_pipeline.append(pipeline_ready.set)
                if target.tables is None:
                    await asyncio.wait_for(pipeline_ready.wait(), 20)
                await asyncio.sleep(0.5)
                assert target.write_count == 0
                await felix.send(IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
                ups = felix.payloads("workload_endpoint_status_update")
                assert {u.endpoint.name for u in ups} == {"cali-a", "cali-b"}
                # DataplaneInSync comes after the statuses of the first apply.
                order = felix.payloads()
                assert order.index("dataplane_in_sync") > order.index(
                    "workload_endpoint_status_update"
                )
                seqs = [m.sequence_number for m in felix.received]
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
                assert _entries(target, "port_classify") == 3  # two pods and the host port
                assert _entries(target, "routes_v4") == 3  # two pods and 0.0.0.0/0 to the host
                assert _entries(target, "source_check_v4") == 2

    asyncio.run(main())


def test_updates_after_in_sync_are_applied_incrementally(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                before = target.write_count
                await felix.send(endpoint_update("cali-c", "10.65.0.4/32", "0a:58:0a:41:00:04"))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-c") == "up")
                assert target.write_count - before == 3  # port, source check, route
                await felix.send(endpoint_remove("cali-a"))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-a") == "removed")
                assert _entries(target, "source_check_v4") == 2
                assert _entries(target, "routes_v4") == 3

    asyncio.run(main())


def test_restarted_driver_writes_nothing_for_unchanged_state(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
            assert felix.driver.returncode == 0  # EOF on fd 3 is a clean exit
            written = target.write_count
            assert written > 0
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
            assert target.write_count == written
            # ...but a change made while it was down is converged on restart.
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*SNAPSHOT[:3], IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
            assert target.write_count == written + 3  # cali-b's three entries deleted
            assert _entries(target, "routes_v4") == 2

    asyncio.run(main())


def test_liveness_is_reported_at_the_felix_interval(tmp_path):
    async def main():
        async with embedded_target() as (address, _):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(msg(config_update={"config": {"ReportingIntervalSecs": "1"}}))
                await felix.wait_for(
                    lambda r: len(felix.payloads("process_status_update")) >= 3, 10
                )
                uptimes = [p.uptime for p in felix.payloads("process_status_update")]
                assert uptimes == sorted(uptimes)

    asyncio.run(main())


def test_unprogrammable_endpoint_is_error_and_unknown_port_is_down(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(
                    *SNAPSHOT,
                    endpoint_update("cali-c", "10.65.0.9/32", mac=""),
                    endpoint_update("cali-unplugged", "10.65.0.10/32"),
                    IN_SYNC,
                )
                await felix.wait_for(lambda r: felix.in_sync())
                statuses = felix.statuses()
                assert statuses["default/cali-c"] == "error"
                assert statuses["default/cali-unplugged"] == "down"
                assert statuses["default/cali-a"] == "up"
                assert _entries(target, "routes_v4") == 3

    asyncio.run(main())
