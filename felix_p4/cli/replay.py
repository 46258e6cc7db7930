"""`felix-p4 replay`: feed a stream recorded by the driver (`record:`) into a fresh driver."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import yaml

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.spawn import spawn_driver
from felix_p4.felix.wire import (
    DEFAULT_MAX_FRAME,
    HEADER,
    FrameTooLarge,
    TruncatedFrame,
    read_frames,
)


class RecordingError(Exception):
    """A recording the replaying driver would refuse; the message names file and frame."""


def read_recording(path: Path, max_frame: int = DEFAULT_MAX_FRAME) -> list[bytes]:
    """The frame bodies of a recording, read with the driver's framing and frame-size cap; a
    torn last frame (driver killed) is dropped."""
    frames: list[bytes] = []
    with path.open("rb") as stream:
        try:
            for body in read_frames(stream, max_frame):
                frames.append(body)
        except FrameTooLarge as exc:
            raise RecordingError(
                f"{path}: frame {len(frames) + 1}: {exc} (felix.max_frame_bytes)"
            ) from None
        except TruncatedFrame:
            pass
    return frames


async def replay(path: Path, settings: dict[str, Any], timeout: float = 120.0) -> int:
    frames = read_recording(path, settings["felix"]["max_frame_bytes"])
    in_sync = any(fb.ToDataplane.FromString(f).WhichOneof("payload") == "in_sync" for f in frames)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as cfg:
        yaml.safe_dump(settings, cfg)
    try:
        driver = spawn_driver(env=dict(os.environ, FELIX_P4_CONFIG=cfg.name))
        for body in frames:
            await driver.send_raw(HEADER.pack(len(body)) + body)
        statuses: dict[str, str] = {}
        if in_sync:

            async def until_in_sync() -> None:
                while True:
                    message = await driver.receive()
                    if message is None:
                        raise RuntimeError("driver exited before DataplaneInSync")
                    kind = message.WhichOneof("payload")
                    if kind == "workload_endpoint_status_update":
                        update = message.workload_endpoint_status_update
                        statuses[update.id.workload_id] = update.status.status
                    if kind == "dataplane_in_sync":
                        return

            await asyncio.wait_for(until_in_sync(), timeout)
        code = await driver.stop()
    finally:
        os.unlink(cfg.name)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no endpoints"
    print(f"replayed {len(frames)} frames; in sync: {in_sync}; endpoints: {summary}")
    return code


def main(path: str, target: str, plaintext: bool) -> int:
    from felix_p4.settings import ConfigError, load_settings

    overrides: dict[str, Any] = {"p4runtime": {"address": target}, "record": ""}
    if plaintext:
        overrides["p4runtime"]["plaintext"] = True
    try:
        # The usual settings (file, environment) with the target and no re-recording.
        settings = attrs.asdict(load_settings(overrides))
        return asyncio.run(replay(Path(path), settings))
    except (OSError, RuntimeError, TimeoutError, ConfigError, RecordingError) as exc:
        print(f"felix-p4 replay: {exc}", file=sys.stderr)
        return 1
