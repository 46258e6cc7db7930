"""Bad frames and bad objects from Felix: logged, counted, reported, never a crash."""

import asyncio
import struct

from felix_harness import SNAPSHOT, embedded_target, endpoint_update, felix_driver, msg

from felix_p4.felix.wire import encode_frame

IN_SYNC = msg(in_sync={})


def _frame(body: bytes) -> bytes:
    return struct.pack("<Q", len(body)) + body


def test_undecodable_and_unknown_frames_are_skipped(tmp_path):
    async def main():
        async with embedded_target() as (address, _):
            async with felix_driver(address, tmp_path) as felix:
                await felix.driver.send_raw(_frame(b"\xff\xff\xff\xff"))  # not a protobuf
                # A payload field from a newer Felix (number 999, length-delimited).
                await felix.driver.send_raw(_frame(b"\xba\x3e\x02\x08\x01"))
                await felix.driver.send_raw(_frame(b""))  # empty ToDataplane
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}

    asyncio.run(main())


def test_invalid_endpoint_is_error_and_the_good_version_is_kept(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(
                    *SNAPSHOT,
                    endpoint_update("cali-c", "not-a-cidr"),
                    IN_SYNC,
                )
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses()["default/cali-c"] == "error"
                routes = target.tables.entry_count("routes_v4")
                # A bad update to a programmed endpoint keeps what is programmed.
                await felix.send(endpoint_update("cali-a", "10.65.0.2/32", mac="zz:zz"))
                await felix.wait_for(lambda r: felix.statuses()["default/cali-a"] == "error")
                assert target.tables.entry_count("routes_v4") == routes
                # The fix brings it back up.
                await felix.send(endpoint_update("cali-a", "10.65.0.2/32", "0a:58:0a:41:00:02"))
                await felix.wait_for(lambda r: felix.statuses()["default/cali-a"] == "up")

    asyncio.run(main())


def test_absurd_frame_length_is_a_clean_error_exit(tmp_path):
    async def main():
        async with embedded_target() as (address, _):
            async with felix_driver(
                address, tmp_path, {"felix": {"max_frame_bytes": 1024}}
            ) as felix:
                await felix.send(*SNAPSHOT)
                await felix.driver.send_raw(struct.pack("<Q", 1 << 40))
                code = await asyncio.wait_for(felix.driver.wait(), 20)
                assert code == 1

    asyncio.run(main())


def test_truncated_frame_at_eof_is_an_error_exit(tmp_path):
    async def main():
        async with embedded_target() as (address, _):
            async with felix_driver(address, tmp_path) as felix:
                await felix.driver.send_raw(encode_frame(SNAPSHOT[2])[:-3])
                felix.driver.close_input()
                assert await asyncio.wait_for(felix.driver.wait(), 20) == 1

    asyncio.run(main())
