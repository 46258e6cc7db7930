"""`felix-p4 target` as a separate process on a free loopback port, for tests that need the
target as users run it (its own process, reached over gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc

CLI = [sys.executable, "-m", "felix_p4"]


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def target_process(tmp: Path, *args: str) -> Iterator[str]:
    """`felix-p4 target --listen <free port> ARGS` until the block ends; yields its address
    once its gRPC server answers. Its log is printed at the end (pytest shows it on failure)."""
    address = f"127.0.0.1:{free_port()}"
    log = tmp / "target.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([*CLI, "target", "--listen", address, *args], stderr=stderr)
    try:

        async def ready() -> None:
            async with grpc.aio.insecure_channel(address) as channel:
                await asyncio.wait_for(channel.channel_ready(), 30)

        asyncio.run(ready())
        yield address
    finally:
        proc.terminate()
        proc.wait(10)
        print(log.read_text())
