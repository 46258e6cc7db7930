"""P4Runtime servers in their own processes (null or embedded target), with write statistics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from finsy.proto import p4r, p4r_grpc

from bench.null_server import NullP4Runtime
from felix_p4.softswitch.server import GRPC_SERVER_OPTIONS, EmbeddedTarget, add_p4runtime
from felix_p4.softswitch.service import TargetService, add_target_service, initial_defaults

STATS_SERVICE = "bench.Stats"
WRITE = "/p4.v1.P4Runtime/Write"
READ = "/p4.v1.P4Runtime/Read"
FRAME = 8  # bytes of the little-endian length before each recorded WriteRequest


class WriteStats(grpc.aio.ServerInterceptor):
    """Counts what the server received (every kind of server gets the same accounting) and,
    when asked, keeps the parsed WriteRequests for the raw writer to replay."""

    def __init__(self, record: bool) -> None:
        self.record = record
        self.writes = 0
        self.updates = 0
        self.reads = 0
        self.first_write_at = 0.0
        self.last_write_at = 0.0
        self.recorded: list[p4r.WriteRequest] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        if details.method == WRITE:
            return grpc.unary_unary_rpc_method_handler(
                self._write(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if details.method == READ:
            return grpc.unary_stream_rpc_method_handler(
                self._read(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _write(self, behaviour: Any) -> Any:
        async def write(request: p4r.WriteRequest, context: grpc.aio.ServicerContext) -> Any:
            now = time.monotonic()
            if not self.writes:
                self.first_write_at = now
            self.writes += 1
            self.updates += len(request.updates)
            if self.record:
                self.recorded.append(request)
            try:
                return await behaviour(request, context)
            finally:
                self.last_write_at = time.monotonic()

        return write

    def _read(self, behaviour: Any) -> Any:
        async def read(request: p4r.ReadRequest, context: grpc.aio.ServicerContext) -> Any:
            async for response in behaviour(request, context):
                yield response
            self.reads += 1

        return read

    def snapshot(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "writes": self.writes,
            "updates": self.updates,
            "reads": self.reads,
            "first_write_at": self.first_write_at,
            "last_write_at": self.last_write_at,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_kb": usage.ru_maxrss,
        }

    def dump(self, path: str, first: int, count: int) -> int:
        """Write recorded requests [first, first+count) as length-prefixed frames."""
        chosen = self.recorded[first : first + count]
        with open(path, "wb") as out:
            for request in chosen:
                body = request.SerializeToString()
                out.write(len(body).to_bytes(FRAME, "little") + body)
        return len(chosen)


def _stats_service(stats: WriteStats) -> grpc.GenericRpcHandler:
    async def get(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return json.dumps(stats.snapshot()).encode()

    async def dump(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        args = json.loads(raw)
        written = stats.dump(args["path"], int(args["first"]), int(args["count"]))
        return json.dumps({"requests": written}).encode()

    return grpc.method_handlers_generic_handler(
        STATS_SERVICE,
        {
            "Get": grpc.unary_unary_rpc_method_handler(get),
            "Dump": grpc.unary_unary_rpc_method_handler(dump),
        },
    )


async def serve(kind: str, listen: str, record: bool) -> None:
    """Serve until our stdin closes (the benchmark that started us is done or gone)."""
    stats = WriteStats(record)
    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS, interceptors=[stats])
    if kind == "null":
        p4r_grpc.add_P4RuntimeServicer_to_server(NullP4Runtime(), server)
    else:
        target = EmbeddedTarget(1, initial_defaults_for=initial_defaults)
        add_p4runtime(server, target)
        add_target_service(server, TargetService(target))
    server.add_generic_rpc_handlers([_stats_service(stats)])
    port = server.add_insecure_port(listen)
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    await server.stop(None)


class ServerProcess:
    """A server started with `python -m bench.servers`, its address and statistics."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.address = f"127.0.0.1:{port}"
        self._channel = grpc.aio.insecure_channel(self.address)

    @classmethod
    async def start(cls, kind: str, log_path: Path, record: bool = False) -> ServerProcess:
        args = [sys.executable, "-m", "bench.servers", "--kind", kind, "--listen", "127.0.0.1:0"]
        if record:
            args.append("--record")
        with open(log_path, "ab") as log:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=Path(__file__).resolve().parents[1],
            )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"{kind} server exited before listening; see {log_path}")
        return cls(process, int(json.loads(line)["port"]))

    async def _call(self, method: str, request: dict[str, Any]) -> dict[str, Any]:
        call = self._channel.unary_unary(f"/{STATS_SERVICE}/{method}")
        reply: dict[str, Any] = json.loads(await call(json.dumps(request).encode(), timeout=120))
        return reply

    async def stats(self) -> dict[str, Any]:
        return await self._call("Get", {})

    async def dump(self, path: Path, first: int, count: int) -> int:
        reply = await self._call("Dump", {"path": str(path), "first": first, "count": count})
        return int(reply["requests"])

    async def stop(self) -> None:
        await self._channel.close()
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


def read_recorded(path: Path) -> list[bytes]:
    """The WriteRequests `dump` wrote, still encoded."""
    data = path.read_bytes()
    out = []
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + FRAME], "little")
        offset += FRAME
        out.append(data[offset : offset + length])
        offset += length
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__)
    parser.add_argument("--kind", choices=["null", "embedded"], required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--record", action="store_true", help="keep WriteRequests for Dump")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("BENCH_SERVER_LOG", "WARNING"))
    asyncio.run(serve(args.kind, args.listen, args.record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
