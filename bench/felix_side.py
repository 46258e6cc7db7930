"""Felix's side of one spawned driver: frames out on its fd 3, timestamped status frames in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.spawn import DriverProcess, spawn_driver
from felix_p4.felix.wire import encode_frame

UP = "up"
REMOVED = "removed"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point our fd 2 at `path` while the driver is spawned, so it inherits that instead
    (Felix would forward it into its own log; we keep it out of the results table)."""
    saved = os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stderr.flush()
    os.dup2(log, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(log)


def driver_env(config_path: Path) -> dict[str, str]:
    """Our environment without felix-p4 settings of its own, pointing at the bench's file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FELIX_P4_")}
    env["FELIX_P4_CONFIG"] = str(config_path)
    # So that `python -m bench.profiled_driver` finds this package from any directory.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    return env


class FelixSide:
    """One driver process and what it has told us, each frame stamped on arrival."""

    def __init__(self, driver: DriverProcess) -> None:
        self.driver = driver
        self.started = asyncio.Event()  # the first ProcessStatusUpdate: the driver is running
        self.in_sync = asyncio.Event()
        self.in_sync_at = 0.0
        self.closed = asyncio.Event()
        self.frames = 0
        self.up = 0
        self.removed = 0
        self.not_up: dict[str, str] = {}  # workload id -> last status other than up
        self._waiters: dict[tuple[str, str], asyncio.Future[float]] = {}
        self._sequence = 0
        self._task = asyncio.create_task(self._collect())

    @classmethod
    def spawn(cls, config_path: Path, log_path: Path, argv: list[str] | None = None) -> FelixSide:
        with _stderr_to(log_path):
            driver = spawn_driver(argv, env=driver_env(config_path))
        return cls(driver)

    async def _collect(self) -> None:
        while True:
            message = await self.driver.receive()
            now = time.monotonic()
            if message is None:
                self.closed.set()
                for future in self._waiters.values():
                    if not future.done():
                        future.set_exception(ConnectionError("driver closed fd 4"))
                return
            self.frames += 1
            which = message.WhichOneof("payload")
            if which == "process_status_update":
                self.started.set()
            elif which == "dataplane_in_sync":
                self.in_sync_at = now
                self.in_sync.set()
            elif which == "workload_endpoint_status_update":
                update = message.workload_endpoint_status_update
                workload_id, status = update.id.workload_id, update.status.status
                if status == UP:
                    self.up += 1
                    self.not_up.pop(workload_id, None)
                    self._resolve(workload_id, UP, now)
                else:
                    # "down" or "error": whoever waits for "up" hears why instead.
                    self.not_up[workload_id] = status
                    waiter = self._waiters.pop((workload_id, UP), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_exception(RuntimeError(f"endpoint {workload_id} is {status}"))
            elif which == "workload_endpoint_status_remove":
                self.removed += 1
                self._resolve(message.workload_endpoint_status_remove.id.workload_id, REMOVED, now)

    def _resolve(self, workload_id: str, what: str, now: float) -> None:
        future = self._waiters.pop((workload_id, what), None)
        if future is not None and not future.done():
            future.set_result(now)

    def expect(self, workload_id: str, what: str) -> asyncio.Future[float]:
        """A future for the arrival time of `what` (UP or REMOVED) for this endpoint."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters[(workload_id, what)] = future
        return future

    def encode(self, messages: Iterable[fb.ToDataplane]) -> bytes:
        frames = []
        for message in messages:
            self._sequence += 1
            message.sequence_number = self._sequence
            frames.append(encode_frame(message))
        return b"".join(frames)

    async def send(self, data: bytes) -> float:
        """Write pre-encoded frames (blocking as Felix's writes do); returns the start time."""
        started = time.monotonic()
        await self.driver.send_raw(data)
        return started

    async def wait_started(self, timeout: float) -> None:
        """Until the driver's first ProcessStatusUpdate; ConnectionError if it exits first."""
        started = asyncio.create_task(self.started.wait())
        closed = asyncio.create_task(self.closed.wait())
        try:
            await asyncio.wait({started, closed}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            started.cancel()
            closed.cancel()
        if not self.started.is_set():
            code = await self.driver.stop(5)
            raise ConnectionError(f"driver did not start (exit status {code}); see its log")

    def memory_kb(self) -> Mapping[str, int]:
        """VmHWM (peak RSS) and VmRSS of the driver process, in KiB."""
        out = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.driver.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0])
        return out

    def signal(self, signum: int) -> None:
        os.kill(self.driver.pid, signum)

    def cpu_seconds(self) -> float:
        """User plus system CPU the driver has used so far."""
        try:
            fields = Path(f"/proc/{self.driver.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # After the command name: state is field 3, utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    async def stop(self, timeout: float = 60.0) -> int:
        """Close fd 3 as Felix does on exit and wait for the driver to leave."""
        code = await self.driver.stop(timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), 5)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return code
