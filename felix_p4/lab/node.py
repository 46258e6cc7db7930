"""Processes of the lab's node: the embedded target in the device namespace, the driver spawned
as Felix spawns it in the node's namespace, and commands run inside pods; every wait bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.spawn import DriverProcess, spawn_driver
from felix_p4.lab import felix as lab_felix
from felix_p4.lab.topology import HOST_PORT, Lab

NETNS_DIR = "/var/run/netns"  # where pyroute2 (as iproute2) mounts named namespaces
START_TIMEOUT = 60.0  # target up, driver connected, snapshot programmed


class LabProcessError(Exception):
    """A lab process failed or did not answer in time; the message says which and why."""


def in_netns(namespace: str, argv: Sequence[str]) -> list[str]:
    """`argv` run inside network namespace `namespace` (nsenter execs it: same pid)."""
    return ["nsenter", f"--net={NETNS_DIR}/{namespace}", "--", *argv]


@attrs.frozen(slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int | None  # None: killed at its timeout
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def run(namespace: str, argv: Sequence[str], timeout: float) -> Completed:
    """Run a command inside a namespace; killed when it outlives `timeout` or the caller
    cancels."""
    proc = await asyncio.create_subprocess_exec(
        *in_netns(namespace, argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        code: int | None = proc.returncode
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        code = None
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    return Completed(tuple(argv), code, out.decode(errors="replace"), err.decode(errors="replace"))


class Background:
    """A long-running process inside a namespace, stopped by its pid."""

    def __init__(self, what: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.what = what
        self.proc = proc
        self.log = log

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def www_root(workdir: Path, namespace: str) -> Path:
    """The directory the HTTP server in `namespace` serves."""
    return workdir / f"www-{namespace}"


async def start_http_server(lab: Lab, namespace: str, body: str, workdir: Path) -> Background:
    """`python -m http.server 8080` (every address, IPv6 and IPv4) serving `body` as its
    index page; returns once it listens."""
    root = www_root(workdir, namespace)
    root.mkdir()
    (root / "index.html").write_text(body + "\n")
    log = workdir / f"http-{namespace}.log"
    argv = [sys.executable, "-u", "-m", "http.server", str(lab_felix.HTTP_PORT)]
    argv += ["--bind", "::", "--directory", str(root)]  # "::" serves IPv4 too
    return await _serve(f"http server in {namespace}", namespace, argv, log, b"Serving HTTP")


# A UDP echo server on every address (IPv6 and IPv4): each datagram comes back prefixed.
_UDP_ECHO = """
import socket
server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
server.bind(("::", PORT))
print("listening", flush=True)
while True:
    data, peer = server.recvfrom(65536)
    server.sendto(b"echo " + data, peer)
"""


async def start_udp_echo(namespace: str, workdir: Path) -> Background:
    """A UDP echo server on port 5353 in `namespace`; returns once it listens."""
    log = workdir / f"udp-{namespace}.log"
    code = _UDP_ECHO.replace("PORT", str(lab_felix.UDP_PORT))
    argv = [sys.executable, "-u", "-c", code]
    return await _serve(f"UDP echo in {namespace}", namespace, argv, log, b"listening")


async def _serve(
    what: str, namespace: str, argv: list[str], log: Path, banner: bytes
) -> Background:
    """`argv` in `namespace`, its stderr in `log`; returns once it printed `banner`."""
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *in_netns(namespace, argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    return await _started(Background(what, proc, log), banner)


async def _started(server: Background, banner: bytes) -> Background:
    """`server` once it printed its banner line (it listens then), or LabProcessError."""
    assert server.proc.stdout is not None
    try:
        line = await asyncio.wait_for(server.proc.stdout.readline(), 10.0)
    except TimeoutError:
        line = b""
    if not line.startswith(banner):
        await server.stop()
        raise LabProcessError(f"{server.what} did not start: {server.log_tail()}")
    return server


class Felix:
    """Felix's side of the driver's pipes: sends payloads, collects what comes back."""

    def __init__(self, driver: DriverProcess) -> None:
        self.driver = driver
        self.received: list[fb.FromDataplane] = []
        self._changed = asyncio.Condition()
        self._closed = False
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        while True:
            received = await self.driver.receive()
            async with self._changed:
                if received is None:
                    self._closed = True
                else:
                    self.received.append(received)
                self._changed.notify_all()
            if received is None:
                return

    async def send(self, messages: Sequence[fb.ToDataplane]) -> None:
        for item in messages:
            await self.driver.send(item)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate() or self._closed)

        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            raise LabProcessError(f"no {what} within {timeout:g}s") from None
        if not predicate():
            raise LabProcessError(f"the driver closed fd 4 before {what}")

    def in_sync(self) -> bool:
        return any(m.WhichOneof("payload") == "dataplane_in_sync" for m in self.received)

    def statuses(self) -> dict[str, str]:
        """Latest status per workload id (as Felix keeps them)."""
        latest: dict[str, str] = {}
        for m in self.received:
            if m.WhichOneof("payload") == "workload_endpoint_status_update":
                update = m.workload_endpoint_status_update
                latest[update.id.workload_id] = update.status.status
        return latest

    def status_count(self) -> int:
        return sum(
            m.WhichOneof("payload") == "workload_endpoint_status_update" for m in self.received
        )

    async def close(self) -> None:
        await self.driver.stop()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@attrs.define
class NodeProcesses:
    """The target and the driver of one lab, and where their logs go."""

    lab: Lab
    engine: Literal["model", "dpdk"]
    workdir: Path
    target: Background | None = None
    felix: Felix | None = None
    driver_log: Path | None = None
    servers: list[Background] = attrs.Factory(list)

    @property
    def p4runtime(self) -> str:
        return f"unix:{self.workdir / 'p4runtime.sock'}"

    async def start(self) -> Felix:
        """Start the target on the device's interfaces and the driver, feed Felix's snapshot,
        and return once DataplaneInSync came and every pod is "up"."""
        target = await self._start_target()
        felix = self._spawn_driver()
        await felix.send(lab_felix.snapshot(self.lab))
        pods = {pod.workload_id for pod in self.lab.pods}
        programmed = asyncio.ensure_future(
            felix.wait_for(
                lambda: felix.in_sync() and all(felix.statuses().get(p) == "up" for p in pods),
                START_TIMEOUT,
                "DataplaneInSync with every pod up",
            )
        )
        exited = asyncio.ensure_future(target.proc.wait())
        await asyncio.wait((programmed, exited), return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if not programmed.done():
            programmed.cancel()
            raise LabProcessError(
                f"the target exited with status {target.proc.returncode}\n{self.logs()}"
            )
        try:
            programmed.result()
        except LabProcessError as exc:
            raise LabProcessError(f"{exc}; statuses {felix.statuses()}\n{self.logs()}") from exc
        return felix

    async def _start_target(self) -> Background:
        ports = [f"--port={name}={port}" for name, port in self.lab.ports.items()]
        argv = [sys.executable, "-m", "felix_p4", "target", "--listen", self.p4runtime]
        argv += ["--engine", self.engine, *ports]
        if self.engine == "dpdk":
            # A few ports: SWX polls each input port in turn.
            argv += ["--dpdk-ports", "8", "--dpdk-memory-mb", "1024"]
        log = self.workdir / "target.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *in_netns(self.lab.device_ns, argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.target = Background(f"{self.engine} target", proc, log)
        return self.target

    def _spawn_driver(self) -> Felix:
        config: dict[str, dict[str, Any]] = {
            "p4runtime": {"address": self.p4runtime, "plaintext": True},
            "ports": {"mode": "auto", "host": HOST_PORT},
            "services": {
                "source": "file",
                "files": [str(self._services_file())],
                "poll_seconds": 0.5,
            },
        }
        for section, values in self.lab.settings.items():
            config.setdefault(section, {}).update(values)
        path = self.workdir / "felix-p4.yaml"
        path.write_text(yaml.safe_dump(config))
        self.driver_log = self.workdir / "driver.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "FELIX_P4_CONFIG": str(path),
        }
        argv = in_netns(self.lab.node_ns, [sys.executable, "-m", "felix_p4"])
        with self.driver_log.open("ab") as stderr:
            driver = spawn_driver(argv, env=env, stderr=stderr.fileno())
        self.felix = Felix(driver)
        return self.felix

    def _services_file(self) -> Path:
        path = self.workdir / "services.yaml"
        path.write_text(yaml.safe_dump(lab_felix.services(self.lab)))
        return path

    def logs(self) -> str:
        parts = []
        if self.target is not None:
            parts.append(f"--- target ---\n{self.target.log_tail()}")
        if self.driver_log is not None and self.driver_log.exists():
            tail = self.driver_log.read_text(errors="replace").splitlines()[-20:]
            parts.append("--- driver ---\n" + "\n".join(tail))
        return "\n".join(parts)

    async def apply(self, messages: Sequence[fb.ToDataplane], timeout: float = 20.0) -> None:
        """Send updates and wait until every endpoint they touch has a new status."""
        assert self.felix is not None
        felix = self.felix
        before = felix.status_count()
        touched = sum(m.WhichOneof("payload") == "workload_endpoint_update" for m in messages)
        await felix.send(messages)
        await felix.wait_for(
            lambda: felix.status_count() >= before + touched, timeout, "the endpoints' statuses"
        )

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()
        if self.felix is not None:
            await self.felix.close()
        if self.target is not None:
            await self.target.stop()


@contextlib.asynccontextmanager
async def running_node(lab: Lab, engine: Literal["model", "dpdk"]) -> AsyncIterator[NodeProcesses]:
    """A started node (target, driver, snapshot programmed), stopped whatever happens."""
    with tempfile.TemporaryDirectory(prefix=f"{lab.prefix}-") as tmp:
        node = NodeProcesses(lab, engine, Path(tmp))
        try:
            await node.start()
            yield node
        finally:
            await node.stop()
