"""One Felix session: frames read from Felix, dispatched into the model; status written back."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from calico_proto import felixbackend_pb2 as fb
from felix_p4 import metrics
from felix_p4.felix import convert, wire
from felix_p4.felix.dispatch import PAYLOADS
from felix_p4.felix.status import FrameSink, StatusReporter
from felix_p4.model.endpoints import WorkloadEndpointKey
from felix_p4.model.state import DataplaneState
from felix_p4.model.values import InvalidObject

log = logging.getLogger(__name__)


class FelixSession:
    """Reads Felix's stream into `state` and reports back on `out`.

    `on_change` is called when an update leaves work for the next apply (after InSync);
    `on_config` when Felix's configuration changed.
    """

    def __init__(
        self,
        state: DataplaneState,
        out: FrameSink,
        *,
        max_frame: int = wire.DEFAULT_MAX_FRAME,
        record: str = "",
        on_change: Callable[[], None] = lambda: None,
        on_config: Callable[[], None] = lambda: None,
    ) -> None:
        self.state = state
        self.status = StatusReporter(out)
        self.max_frame = max_frame
        self.on_change = on_change
        self.on_config = on_config
        # Endpoints whose last update was invalid: Felix hears "error" for them.
        self.invalid: dict[WorkloadEndpointKey, str] = {}
        # The endpoint as Felix sent it, echoed in its status (the CNI plugin waits for it).
        self.endpoint_protos: dict[WorkloadEndpointKey, fb.WorkloadEndpoint] = {}
        # Per endpoint, the fields Felix set that are not programmed (logged once per change).
        self.unsupported: dict[WorkloadEndpointKey, tuple[str, ...]] = {}
        self._record = FrameRecorder(record) if record else None

    async def read(self, reader: asyncio.StreamReader) -> None:
        """Until Felix closes the stream; SystemExit(1) if framing is lost."""
        while True:
            try:
                body = await wire.read_frame(reader, self.max_frame)
            except (wire.FrameTooLarge, wire.TruncatedFrame) as exc:
                # The stream has lost framing; nothing after this can be trusted.
                metrics.BAD_INPUT.labels("frame").inc()
                log.error("Felix stream unusable: %s; exiting so Felix restarts us", exc)
                raise SystemExit(1) from exc
            if body is None:
                log.info("Felix closed its stream; the session ends")
                return
            if self._record is not None:
                self._record.write(body)
            self.handle_frame(body)

    def handle_frame(self, body: bytes) -> None:
        try:
            message = wire.decode_to_dataplane(body)
        except DecodeError as exc:
            metrics.BAD_INPUT.labels("undecodable").inc()
            log.error("dropping undecodable ToDataplane frame of %d bytes: %s", len(body), exc)
            return
        payload = message.WhichOneof("payload")
        if payload is None:
            metrics.BAD_INPUT.labels("unknown_payload").inc()
            log.warning(
                "ignoring ToDataplane #%d with no payload we know (newer Felix?)",
                message.sequence_number,
            )
            return
        self.handle_payload(payload, getattr(message, payload))

    def handle_payload(self, name: str, pb: Any) -> None:
        payload = PAYLOADS.get(name)
        if payload is None:
            metrics.BAD_INPUT.labels("unhandled_payload").inc()
            log.warning("ignoring %s: felix-p4 has no handler for it", name)
            return
        if payload.apply is None and not payload.managers:
            metrics.IGNORED_PAYLOADS.labels(name).inc()
            log.debug("ignoring %s: %s", name, payload.does)
            return
        state = self.state
        try:
            if payload.apply is not None:
                payload.apply(state, pb)
        except convert.InvalidEndpoint as exc:
            metrics.BAD_INPUT.labels(name).inc()
            log.error("rejected %s: %s", name, exc)
            self.invalid[exc.key] = str(exc)
            self.endpoint_protos.pop(exc.key, None)
            state.changes.endpoints.add(exc.key)
            state.changes.touched.update(payload.managers)
        except InvalidObject as exc:
            metrics.BAD_INPUT.labels(name).inc()
            log.error("rejected %s: %s", name, exc)
            return
        else:
            state.changes.touched.update(payload.managers)
            if name == "workload_endpoint_update":
                key = convert.endpoint_key(pb.id)
                self.invalid.pop(key, None)
                self.endpoint_protos[key] = pb.endpoint
                self._note_unsupported(key, pb.endpoint)
            elif name == "workload_endpoint_remove":
                key = convert.endpoint_key(pb.id)
                self.invalid.pop(key, None)
                self.endpoint_protos.pop(key, None)
                self.unsupported.pop(key, None)
            elif name == "config_update":
                self.on_config()
            elif name == "in_sync":
                log.info("Felix is in sync")
        if state.in_sync and state.changes:
            self.on_change()

    def _note_unsupported(self, key: WorkloadEndpointKey, pb: fb.WorkloadEndpoint) -> None:
        """Floating IPs (`ipv4_nat`, `ipv6_nat`) and QoS (`qos_controls`, `qos_policies`) are
        not programmed: the endpoint still works without them. Say so once per change."""
        fields = tuple(
            f for f in UNSUPPORTED_ENDPOINT_FIELDS if f in {d.name for d, _ in pb.ListFields()}
        )
        if fields == self.unsupported.get(key, ()):
            return
        self.unsupported[key] = fields
        for field in fields:
            metrics.UNSUPPORTED_FIELDS.labels(field).inc()
        if fields:
            log.warning(
                "workload endpoint %s: %s not programmed by felix-p4 (ignored)",
                key,
                ", ".join(f"{f} ({UNSUPPORTED_ENDPOINT_FIELDS[f]})" for f in fields),
            )

    def endpoint_status(self, key: WorkloadEndpointKey, status: str) -> None:
        self.status.endpoint_status(key, status, self.endpoint_protos.get(key))

    def endpoint_removed(self, key: WorkloadEndpointKey) -> None:
        self.status.endpoint_removed(key)


# WorkloadEndpoint fields Felix may set that felix-p4 does not program, with what they are.
UNSUPPORTED_ENDPOINT_FIELDS = {
    "ipv4_nat": "floating IPs",
    "ipv6_nat": "floating IPs",
    "qos_controls": "bandwidth, packet-rate and connection limits",
    "qos_policies": "DSCP marking",
}


class FrameRecorder:
    """Appends Felix's frames, as framed on the wire, to a file only its owner can read: the
    stream holds the whole cluster's policy and endpoint inventory."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(self.fd, 0o600)  # also when the file existed with wider permissions
        log.info("recording Felix's stream to %s", path)

    def write(self, body: bytes) -> None:
        os.write(self.fd, wire.HEADER.pack(len(body)) + body)


class SessionRunner(Protocol):
    """What serves one Felix session (the driver)."""

    async def run(self, reader: FelixReader, out: FrameSink) -> int: ...

    def stop(self) -> None: ...


class FelixPipesMissing(Exception):
    """fds 3 and 4 are not open: the driver was not started by Felix."""


# Feeds Felix's stream into a session (the driver runs it as one of its tasks).
FelixReader = Callable[["FelixSession"], Coroutine[Any, Any, None]]


def check_felix_fds(in_fd: int = 3, out_fd: int = 4) -> None:
    """Felix's pipes are there; call before the process opens anything else (an event loop
    would otherwise take fds 3 and 4)."""
    for fd in (in_fd, out_fd):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            mode = 0
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            raise FelixPipesMissing(
                f"fd {fd} is not open as a pipe: felix-p4 is started by Felix "
                "(FELIX_DATAPLANEDRIVER), which passes its stream on fds 3 and 4"
            )


async def serve_fds(
    serve: Callable[[FelixReader, FrameSink], Awaitable[int]],
    in_fd: int = 3,
    out_fd: int = 4,
) -> int:
    """Run `serve` on Felix's pipes: its stream on fd 3, our reports on fd 4 (checked with
    check_felix_fds before anything else could take those numbers)."""

    async def read(session: FelixSession) -> None:
        await session.read(await pipe_reader(in_fd))

    return await serve(read, os.fdopen(out_fd, "wb", buffering=0))


async def pipe_reader(fd: int) -> asyncio.StreamReader:
    """An asyncio reader over Felix's pipe on `fd` (fd 3 when Felix execs us)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader


class _SocketSink:
    """Reports to Felix over the shim's connection (buffered by the transport)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def write(self, data: bytes, /) -> int:
        if not self._writer.is_closing():
            self._writer.write(data)
        return len(data)

    def flush(self) -> None:
        pass


async def serve_socket(
    path: str, new_session: Callable[[], SessionRunner], stopped: asyncio.Event
) -> int:
    """Serve Felix sessions arriving through felix-p4-shim on the Unix socket `path`, one at
    a time, each exactly as if Felix had exec'd the driver. A new connection means Felix
    restarted: the session in progress (if its end has not been noticed yet) is ended first.
    Runs until `stopped` is set."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # left by a driver that did not exit cleanly
        else:
            raise FelixPipesMissing(f"{path} exists and is not a socket; refusing to replace it")
    except FileNotFoundError:
        pass
    current: tuple[SessionRunner, asyncio.Task[int]] | None = None
    turn = asyncio.Lock()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal current
        if current is not None and not current[1].done():
            log.warning("a new Felix session arrived; ending the previous one")
            current[0].stop()
        async with turn:
            runner = new_session()

            async def read(session: FelixSession) -> None:
                await session.read(reader)

            task = asyncio.create_task(runner.run(read, _SocketSink(writer)))
            current = (runner, task)
            log.info("Felix session started (socket %s)", path)
            try:
                code = await task
            finally:
                writer.close()
            log.info("Felix session ended with status %d", code)

    server = await asyncio.start_unix_server(on_connection, path)
    os.chmod(path, 0o660)
    log.info("waiting for Felix sessions on %s", path)
    try:
        await stopped.wait()
    finally:
        server.close()
        if current is not None and not current[1].done():
            current[0].stop()
            await asyncio.gather(current[1], return_exceptions=True)
        await server.wait_closed()
        os.unlink(path)
    return 0
