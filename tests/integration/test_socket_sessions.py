"""The driver's socket mode behind felix-p4-shim, as on a cluster: Felix execs the shim (fds 3
and 4), the shim relays to `felix-p4 driver --felix-socket`, each connection one Felix session.
Felix restarts (the shim killed and exec'd again) and driver restarts (the shim sees the socket
close and exits, as Felix then sees) end with nothing rewritten on the device, and so does a
second connection arriving while a session is open (one session at a time)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from felix_harness import PORTS, SNAPSHOT, Felix, embedded_target, msg, wait_until
from target_process import free_port

from felix_p4.felix.spawn import spawn_driver

REPO = Path(__file__).resolve().parents[2]
IN_SYNC = msg(in_sync={})


@pytest.fixture(scope="module")
def shim() -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc to build the static shim (apt-get install gcc libc6-dev)")
    done = subprocess.run(
        ["make", "--no-print-directory", "shim"], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"make shim failed:\n{done.stdout}{done.stderr}")
    return REPO / "build" / "felix-p4-shim"


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="fp4-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class SocketDriver:
    """`felix-p4 driver --felix-socket PATH` as its own process."""

    def __init__(self, address: str, directory: Path) -> None:
        self.socket = directory / "felix-p4.sock"
        self.metrics = f"127.0.0.1:{free_port()}"
        config = {
            "p4runtime": {"address": address, "plaintext": True},
            "ports": {"mode": "static", "map": PORTS},
            "metrics": {"address": self.metrics},
            "log_level": "DEBUG",
        }
        self.config = directory / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "felix_p4",
            "driver",
            "--felix-socket",
            str(self.socket),
            env=dict(os.environ, FELIX_P4_CONFIG=str(self.config)),
        )
        await wait_until(self.socket.exists, what="the driver's socket")

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await asyncio.wait_for(self.process.wait(), 20)

    async def until(self, path: str, status: int, timeout: float = 20.0) -> None:
        """Poll a probe (Kubernetes does the same) until it answers `status`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.probe(path) != status:
            if loop.time() > deadline:
                raise AssertionError(f"{path} never answered {status}")
            await asyncio.sleep(0.05)

    async def probe(self, path: str) -> int:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{self.metrics}{path}") as reply:
                return reply.status


@contextlib.asynccontextmanager
async def felix_with_shim(shim: Path, driver: SocketDriver) -> AsyncIterator[Felix]:
    """Felix exec'ing the shim with its environment (the socket's path set for the shim)."""
    env = dict(os.environ, P4_SHIM_SOCKET=str(driver.socket), P4_SHIM_CONNECT_TIMEOUT="20")
    felix = Felix(spawn_driver([str(shim)], env=env))
    try:
        yield felix
    finally:
        felix.driver.kill()
        await felix.driver.wait()
        felix._task.cancel()


def test_snapshot_statuses_and_readiness_through_the_shim(shim, socket_dir):
    async def main():
        async with embedded_target() as (address, target):
            driver = SocketDriver(address, socket_dir)
            await driver.start()
            try:
                assert await driver.probe("/livez") == 200
                assert await driver.probe("/readyz") == 503
                async with felix_with_shim(shim, driver) as felix:
                    await felix.send(*SNAPSHOT, IN_SYNC)
                    await felix.wait_for(lambda r: felix.in_sync())
                    assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
                    assert "process_status_update" in felix.payloads()
                    assert await driver.probe("/readyz") == 200
                    assert target.tables.entry_count("routes_v4") == 3
            finally:
                assert await driver.stop() == 0
            assert not driver.socket.exists()

    asyncio.run(main())


def test_felix_restart_rewrites_nothing(shim, socket_dir):
    async def main():
        async with embedded_target() as (address, target):
            driver = SocketDriver(address, socket_dir)
            await driver.start()
            try:
                async with felix_with_shim(shim, driver) as felix:
                    await felix.send(*SNAPSHOT, IN_SYNC)
                    await felix.wait_for(lambda r: felix.in_sync())
                    written = target.write_count
                    felix.driver.kill()  # Felix restarts: its shim dies with it
                # The driver notices the session ended: no longer ready.
                await driver.until("/readyz", 503)
                async with felix_with_shim(shim, driver) as felix:
                    await felix.send(*SNAPSHOT, IN_SYNC)
                    await felix.wait_for(lambda r: felix.in_sync())
                    assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
                assert target.write_count == written
            finally:
                assert await driver.stop() == 0

    asyncio.run(main())


def test_driver_restart_ends_the_shim_and_the_next_session_rewrites_nothing(shim, socket_dir):
    async def main():
        async with embedded_target() as (address, target):
            driver = SocketDriver(address, socket_dir)
            await driver.start()
            async with felix_with_shim(shim, driver) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                written = target.write_count
                # The driver's container restarts while Felix keeps running.
                await driver.stop(signal.SIGKILL)
                # Felix sees its driver (the shim) exit, as it would see a driver die.
                assert await asyncio.wait_for(felix.driver.wait(), 20) != 0
            driver = SocketDriver(address, socket_dir)
            await driver.start()
            try:
                # Felix restarts and execs the shim again; it sends its snapshot again.
                async with felix_with_shim(shim, driver) as felix:
                    await felix.send(*SNAPSHOT, IN_SYNC)
                    await felix.wait_for(lambda r: felix.in_sync())
                    assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
                assert target.write_count == written
            finally:
                assert await driver.stop() == 0

    asyncio.run(main())


def test_a_second_connection_ends_the_open_session_and_takes_over_rewriting_nothing(
    shim, socket_dir
):
    """Only one session at a time: a Felix whose old shim is still connected (its end not
    noticed yet) execs a new one; the driver ends the old session, whose shim exits as a
    driver would, and the new session reads the device back and writes nothing."""

    async def main():
        async with embedded_target() as (address, target):
            driver = SocketDriver(address, socket_dir)
            await driver.start()
            try:
                async with felix_with_shim(shim, driver) as first:
                    await first.send(*SNAPSHOT, IN_SYNC)
                    await first.wait_for(lambda r: first.in_sync())
                    written = target.write_count
                    async with felix_with_shim(shim, driver) as second:
                        # The driver closes the first connection: its shim exits 1, "the
                        # driver closed the connection", while the second stays open.
                        assert await asyncio.wait_for(first.driver.wait(), 20) == 1
                        assert second.driver.returncode is None
                        await second.send(*SNAPSHOT, IN_SYNC)
                        await second.wait_for(lambda r: second.in_sync())
                        assert second.statuses() == {
                            "default/cali-a": "up",
                            "default/cali-b": "up",
                        }
                        assert await driver.probe("/readyz") == 200
                        assert target.write_count == written
            finally:
                assert await driver.stop() == 0

    asyncio.run(main())
