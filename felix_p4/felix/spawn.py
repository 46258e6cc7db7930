"""Start a driver as Felix does: ToDataplane on its fd 3, FromDataplane from its fd 4."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.wire import HEADER, encode_frame


class DriverProcess:
    """A driver child process plus our ends of its two pipes."""

    def __init__(self, pid: int, to_driver: int, from_driver: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._to = to_driver
        self._from = from_driver
        self._sequence = 0
        self._reader: asyncio.StreamReader | None = None

    async def send(self, message: fb.ToDataplane) -> None:
        self._sequence += 1
        if not message.sequence_number:
            message.sequence_number = self._sequence
        await self.send_raw(encode_frame(message))

    async def send_raw(self, data: bytes) -> None:
        # Felix writes blocking; a pipe write of a frame is quick unless the driver stalls.
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            written = await loop.run_in_executor(None, os.write, self._to, view)
            view = view[written:]

    async def receive(self) -> fb.FromDataplane | None:
        """The next FromDataplane frame, or None once the driver closed fd 4."""
        if self._reader is None:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader),
                os.fdopen(self._from, "rb", buffering=0),
            )
            self._reader = reader
        try:
            header = await self._reader.readexactly(HEADER.size)
            (length,) = HEADER.unpack(header)
            body = await self._reader.readexactly(length)
        except asyncio.IncompleteReadError:
            return None
        return fb.FromDataplane.FromString(body)

    def close_input(self) -> None:
        """What Felix does on exit: the driver sees EOF on fd 3."""
        if self._to >= 0:
            os.close(self._to)
            self._to = -1

    async def wait(self) -> int:
        if self.returncode is None:
            loop = asyncio.get_running_loop()
            _, status = await loop.run_in_executor(None, os.waitpid, self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    async def stop(self, timeout: float = 10.0) -> int:
        self.close_input()
        try:
            return await asyncio.wait_for(asyncio.shield(self.wait()), timeout)
        except TimeoutError:
            self.kill()
            return await self.wait()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def spawn_driver(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    stderr: int | None = None,
) -> DriverProcess:
    """Exec `felix-p4` (by default this interpreter's) with fds 3 and 4 wired to pipes.

    posix_spawn's dup2 actions do what Go's cmd.ExtraFiles does for Felix, with no Python
    running in the child between fork and exec.
    """
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    # Lift the child's ends above fd 10 so neither dup2 can clobber the other's source;
    # the copies are close-on-exec, dup2 gives the child inheritable fds 3 and 4.
    high_in = fcntl.fcntl(to_r, fcntl.F_DUPFD_CLOEXEC, 10)
    high_out = fcntl.fcntl(from_w, fcntl.F_DUPFD_CLOEXEC, 10)
    actions = [(os.POSIX_SPAWN_DUP2, high_in, 3), (os.POSIX_SPAWN_DUP2, high_out, 4)]
    high_err = -1
    if stderr is not None:  # where the driver's log goes (Felix copies it into its own)
        high_err = fcntl.fcntl(stderr, fcntl.F_DUPFD_CLOEXEC, 10)
        actions.append((os.POSIX_SPAWN_DUP2, high_err, 2))
    command = list(argv) if argv else [sys.executable, "-m", "felix_p4"]
    try:
        pid = os.posix_spawnp(
            command[0],
            command,
            dict(env) if env is not None else dict(os.environ),
            file_actions=actions,
        )
    finally:
        for fd in (to_r, from_w, high_in, high_out, high_err):
            if fd >= 0:
                os.close(fd)
    os.set_blocking(to_w, True)
    return DriverProcess(pid, to_w, from_r)
