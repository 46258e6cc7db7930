"""The driver as Felix runs it: snapshot, InSync, statuses on fd 4, entries on the target."""

import asyncio

from felix_harness import (
    SNAPSHOT,
    embedded_target,
    endpoint_remove,
    endpoint_update,
    felix_driver,
    msg,
    wait_until,
)

from felix_p4.cli.replay import read_recording

IN_SYNC = msg(in_sync={})


def _entries(target, table):
    return target.tables.entry_count(table)


def test_snapshot_is_programmed_once_in_sync_and_reported_up(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            record = tmp_path / "felix.rec"
            async with felix_driver(address, tmp_path, {"record": str(record)}) as felix:
                # Liveness every 50 ms: each report is the driver's event loop coming round.
                fast = msg(
                    config_update={
                        "config": {"FelixHostname": "node-1", "ReportingIntervalSecs": "0.05"}
                    }
                )
                await felix.send(fast, *SNAPSHOT[1:])
                # The driver has read the whole half snapshot (it records before handling) ...
                await wait_until(
                    lambda: len(_recorded(record)) == len(SNAPSHOT), what="the snapshot read"
                )
                # ... and its loop has come round twice since: any apply it would make from
                # half a snapshot would have reached the target.
                reports = len(felix.payloads("process_status_update"))
                await felix.wait_for(
                    lambda r: len(felix.payloads("process_status_update")) >= reports + 2
                )
                assert target.write_count == 0
                await felix.send(IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
                ups = felix.payloads("workload_endpoint_status_update")
                assert {u.endpoint.name for u in ups} == {"cali-a", "cali-b"}

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


def _recorded(record) -> list[bytes]:
    return read_recording(record) if record.exists() else []
