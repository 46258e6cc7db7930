"""felix-p4-shim run the way Felix runs it (pipes on fds 3 and 4, no arguments) against a Unix
socket server standing in for the felix-p4 driver."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import signal
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

WAIT = 10.0  # seconds for any one expected event; far above what each takes


class FelixSide:
    """Felix's ends of one shim process: fd 3 to write, fd 4 and stderr to read."""

    def __init__(self, pid: int, to_shim: int, replies_fd: int, stderr_fd: int) -> None:
        self.pid = pid
        self._to_shim = to_shim
        self._replies_fd = replies_fd
        self._stderr_fd = stderr_fd
        self.replies = asyncio.StreamReader(limit=1 << 24)
        self.stderr = asyncio.StreamReader()
        self._transports: list[asyncio.BaseTransport] = []
        self.returncode: int | None = None

    @classmethod
    async def spawn(cls, binary: Path, env: dict[str, str]) -> FelixSide:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        err_r, err_w = os.pipe()
        # Lifted above fd 10 so no dup2 target (2, 3, 4) clobbers another action's source;
        # Go's cmd.ExtraFiles gives the child the same layout.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_r, from_w, err_w)]
        try:
            pid = os.posix_spawn(
                str(binary),
                [str(binary)],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, high[0], 3),
                    (os.POSIX_SPAWN_DUP2, high[1], 4),
                    (os.POSIX_SPAWN_DUP2, high[2], 2),
                ],
            )
        finally:
            for fd in (to_r, from_w, err_w, *high):
                os.close(fd)
        side = cls(pid, to_w, from_r, err_r)
        loop = asyncio.get_running_loop()
        for fd, reader in ((from_r, side.replies), (err_r, side.stderr)):
            transport, _ = await loop.connect_read_pipe(
                lambda reader=reader: asyncio.StreamReaderProtocol(reader),
                os.fdopen(fd, "rb", buffering=0),
            )
            side._transports.append(transport)
        return side

    async def send(self, data: bytes) -> None:
        """Blocking writes in a thread, as Felix writes: the shim's pace sets ours."""
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            written = await loop.run_in_executor(None, os.write, self._to_shim, view)
            view = view[written:]

    def close_fd3(self) -> None:
        if self._to_shim >= 0:
            os.close(self._to_shim)
            self._to_shim = -1

    def close_fd4(self) -> None:
        self._transports[0].close()

    async def stderr_line(self) -> str:
        line = await asyncio.wait_for(self.stderr.readline(), WAIT)
        return line.decode()

    async def wait(self) -> int:
        if self.returncode is None:
            loop = asyncio.get_running_loop()
            _, status = await asyncio.wait_for(
                loop.run_in_executor(None, os.waitpid, self.pid, 0), WAIT
            )
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    async def close(self) -> None:
        self.close_fd3()
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await self.wait()
        for transport in self._transports:
            transport.close()


class Driver:
    """A Unix socket server in place of `felix-p4 driver --felix-socket`; queues connections."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.connections.put((reader, writer))

        self._server = await asyncio.start_unix_server(accept, self.path, limit=1 << 24)

    async def accepted(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.connections.get(), WAIT)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def felix_running_shim(
    binary: Path, socket_path: Path, timeout: str = "10"
) -> AsyncIterator[FelixSide]:
    env = {"P4_SHIM_SOCKET": str(socket_path), "P4_SHIM_CONNECT_TIMEOUT": timeout}
    felix = await FelixSide.spawn(binary, env)
    try:
        yield felix
    finally:
        await felix.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def _program_header_types(binary: Path) -> set[int]:
    data = binary.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit LE ELF file"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return {struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)}


def test_shim_is_static_so_it_runs_in_calico_node_without_a_libc(shim_binary: Path) -> None:
    pt_dynamic, pt_interp = 2, 3
    types = _program_header_types(shim_binary)
    assert pt_interp not in types, "the shim asks for a dynamic loader"
    assert pt_dynamic not in types, "the shim has a dynamic section"


def test_bytes_relay_both_ways_unchanged_including_frames_over_a_mebibyte(
    shim_binary: Path, socket_dir: Path
) -> None:
    rng = random.Random(7)
    to_driver = [rng.randbytes(n) for n in (1, 8, 3 << 20, 17, 65536, 65537)]
    to_felix = [rng.randbytes(n) for n in (2 << 20, 5, 70000, 1)]

    async def scenario() -> None:
        driver = Driver(socket_dir / "felix-p4.sock")
        await driver.start()
        async with felix_running_shim(shim_binary, driver.path) as felix:
            reader, writer = await driver.accepted()

            async def felix_sends() -> None:
                for chunk in to_driver:
                    await felix.send(chunk)

            async def driver_sends() -> None:
                for chunk in to_felix:
                    writer.write(chunk)
                    await writer.drain()

            # Both directions at once: a relay that blocks one side on the other deadlocks here.
            received = await asyncio.wait_for(
                asyncio.gather(
                    felix_sends(),
                    driver_sends(),
                    reader.readexactly(sum(map(len, to_driver))),
                    felix.replies.readexactly(sum(map(len, to_felix))),
                ),
                WAIT * 3,
            )
            assert received[2] == b"".join(to_driver)
            assert received[3] == b"".join(to_felix)
            assert (await felix.stderr_line()).startswith("felix-p4-shim: connected to ")
            writer.close()
        await driver.stop()

    run(scenario)


def test_shim_exits_when_the_driver_closes_the_connection(
    shim_binary: Path, socket_dir: Path
) -> None:
    async def scenario() -> None:
        driver = Driver(socket_dir / "felix-p4.sock")
        await driver.start()
        async with felix_running_shim(shim_binary, driver.path) as felix:
            _, writer = await driver.accepted()
            writer.write(b"last words")
            await writer.drain()
            writer.close()
            assert await asyncio.wait_for(felix.replies.read(), WAIT) == b"last words"
            assert await felix.wait() == 1
            stderr = (await asyncio.wait_for(felix.stderr.read(), WAIT)).decode()
            assert "felix-p4-shim: the driver closed the connection" in stderr
        await driver.stop()

    run(scenario)


def test_closing_fd3_reaches_the_driver_as_eof_and_its_replies_still_reach_felix(
    shim_binary: Path, socket_dir: Path
) -> None:
    async def scenario() -> None:
        driver = Driver(socket_dir / "felix-p4.sock")
        await driver.start()
        async with felix_running_shim(shim_binary, driver.path) as felix:
            reader, writer = await driver.accepted()
            await felix.send(b"frame")
            felix.close_fd3()
            assert await asyncio.wait_for(reader.read(), WAIT) == b"frame"  # read() ends at EOF
            writer.write(b"goodbye")
            writer.close()
            assert await asyncio.wait_for(felix.replies.read(), WAIT) == b"goodbye"
            assert await felix.wait() == 0
        await driver.stop()

    run(scenario)


def test_shim_exits_when_felix_stops_reading_fd4(shim_binary: Path, socket_dir: Path) -> None:
    async def scenario() -> None:
        driver = Driver(socket_dir / "felix-p4.sock")
        await driver.start()
        async with felix_running_shim(shim_binary, driver.path) as felix:
            reader, _ = await driver.accepted()
            felix.close_fd4()
            assert await felix.wait() == 4
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # the driver sees the end
        await driver.stop()

    run(scenario)


@pytest.mark.parametrize("before", ["missing", "stale"])
def test_shim_waits_for_a_driver_socket_that_appears_later(
    shim_binary: Path, socket_dir: Path, before: str
) -> None:
    path = socket_dir / "felix-p4.sock"

    async def scenario() -> None:
        stale = None
        if before == "stale":
            # What a driver that died leaves behind: the file exists, connect() is refused.
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(str(path))
        async with felix_running_shim(shim_binary, path) as felix:
            waiting = await felix.stderr_line()
            assert f"waiting for the felix-p4 driver at {path}" in waiting
            if stale is not None:
                stale.close()
            driver = Driver(path)
            await driver.start()  # replaces a stale socket file
            reader, _ = await driver.accepted()
            assert "connected to" in await felix.stderr_line()
            await felix.send(b"hello")
            assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"hello"
            await driver.stop()

    run(scenario)


def test_shim_gives_up_after_the_connect_timeout_with_one_clear_line(
    shim_binary: Path, socket_dir: Path
) -> None:
    path = socket_dir / "felix-p4.sock"

    async def scenario() -> None:
        async with felix_running_shim(shim_binary, path, timeout="0.3") as felix:
            assert await felix.wait() == 3
            lines = (await asyncio.wait_for(felix.stderr.read(), WAIT)).decode().splitlines()
            assert len(lines) == 2, lines  # first failure, then giving up: no line per retry
            assert lines[0].startswith(f"felix-p4-shim: waiting for the felix-p4 driver at {path}")
            assert lines[1].startswith(f"felix-p4-shim: gave up: no felix-p4 driver at {path}")

    run(scenario)


def test_shim_stops_waiting_when_felix_goes_away(shim_binary: Path, socket_dir: Path) -> None:
    async def scenario() -> None:
        async with felix_running_shim(shim_binary, socket_dir / "none.sock", "60") as felix:
            assert "waiting for" in await felix.stderr_line()
            felix.close_fd3()
            felix.close_fd4()
            assert await felix.wait() == 4

    run(scenario)


def _run_outside_felix(
    binary: Path, argv: list[str], env: dict[str, str], fds: bool
) -> tuple[int, str]:
    """Run the shim to completion with /dev/null on fds 3 and 4 (or nothing there); stderr."""
    err_r, err_w = os.pipe()
    actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_DUP2, err_w, 2)]
    with open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
        if fds:
            actions += [
                (os.POSIX_SPAWN_DUP2, fcntl.fcntl(null_in.fileno(), fcntl.F_DUPFD_CLOEXEC, 10), 3),
                (os.POSIX_SPAWN_DUP2, fcntl.fcntl(null_out.fileno(), fcntl.F_DUPFD_CLOEXEC, 10), 4),
            ]
        try:
            pid = os.posix_spawn(str(binary), [str(binary), *argv], env, file_actions=actions)
        finally:
            os.close(err_w)
            for action in actions[1:]:
                os.close(action[1])
    with os.fdopen(err_r, "rb") as err:
        stderr = err.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stderr


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--help"], {}, "takes no arguments"),
        ([], {"P4_SHIM_CONNECT_TIMEOUT": "soon"}, "is not a number of seconds"),
        ([], {"P4_SHIM_CONNECT_TIMEOUT": "nan"}, "is not a number of seconds"),
        ([], {"P4_SHIM_CONNECT_TIMEOUT": "-1"}, "is not a number of seconds"),
        ([], {"P4_SHIM_SOCKET": "/" + "s" * 120}, "too long"),
    ],
)
def test_bad_invocations_exit_2_with_the_reason(
    shim_binary: Path, argv: list[str], env: dict[str, str], message: str
) -> None:
    returncode, stderr = _run_outside_felix(shim_binary, argv, env, fds=True)
    assert returncode == 2
    assert message in stderr


def test_without_felix_pipes_on_fds_3_and_4_the_shim_exits_2(shim_binary: Path) -> None:
    returncode, stderr = _run_outside_felix(shim_binary, [], {}, fds=False)
    assert returncode == 2
    assert "fd 3 and fd 4 must be open" in stderr
