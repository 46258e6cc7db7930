"""A recorded Felix stream is owner-only and replays into a fresh target with the same result."""

import asyncio
import os
import stat
import struct
import subprocess
import sys

import yaml
from felix_harness import PORTS, SNAPSHOT, embedded_target, felix_driver, msg
from finsy.proto import p4r

from felix_p4.felix.wire import encode_frame

IN_SYNC = msg(in_sync={})


def _entries(target):
    read = target.tables.read(p4r.Entity(table_entry=p4r.TableEntry()))
    return sorted(e.table_entry.SerializeToString(deterministic=True) for e in read)


def test_record_is_owner_only_and_replays_to_the_same_entries(tmp_path):
    record = tmp_path / "felix.rec"
    record.write_bytes(b"")
    record.chmod(0o644)  # an existing file with wider permissions is narrowed

    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path, {"record": str(record)}) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
            original = _entries(target)
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        frames = b"".join(encode_frame(m) for m in (*SNAPSHOT, IN_SYNC))
        assert record.read_bytes() == frames

        async with embedded_target() as (address, target):
            # The replaying driver is configured like the recording one (ports); the target
            # and plaintext come from the command line.
            config = tmp_path / "replay.yaml"
            config.write_text(yaml.safe_dump({"ports": {"mode": "static", "map": PORTS}}))
            env = dict(os.environ, FELIX_P4_CONFIG=str(config))
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "felix_p4",
                    "replay",
                    str(record),
                    "--target",
                    address,
                    "--plaintext",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            assert "replayed 5 frames; in sync: True; endpoints: 2 up" in done.stdout
            assert _entries(target) == original

    asyncio.run(main())


def _replay(tmp_path, record, settings):
    config = tmp_path / "replay.yaml"
    config.write_text(yaml.safe_dump(settings))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "felix_p4",
            "replay",
            str(record),
            "--target",
            "127.0.0.1:1",
            "--plaintext",
        ],
        env=dict(os.environ, FELIX_P4_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_replay_refuses_a_frame_above_the_drivers_cap_naming_file_and_frame(tmp_path):
    record = tmp_path / "felix.rec"
    small = encode_frame(IN_SYNC)
    big = encode_frame(msg(config_update={"config": {"x": "y" * 2000}}))
    record.write_bytes(small + big)

    done = _replay(tmp_path, record, {"felix": {"max_frame_bytes": 1024}})

    assert done.returncode == 1, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"felix-p4 replay: {record}: frame 2: frame length {len(big) - 8}")
    assert "exceeds the cap of 1024 bytes (felix.max_frame_bytes)" in line


def test_replay_refuses_an_absurd_length_before_reading_it(tmp_path):
    record = tmp_path / "felix.rec"
    record.write_bytes(struct.pack("<Q", 2**62))

    done = _replay(tmp_path, record, {})

    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{record}: frame 1: frame length {2**62} exceeds the cap" in done.stderr
