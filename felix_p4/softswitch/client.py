"""Client of the embedded target's felix_p4.Target service: packet traces and port numbers.

felix_p4.Target is a small gRPC service whose requests and replies are JSON documents (so no
extra bindings are needed).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc

log = logging.getLogger(__name__)

SERVICE = "felix_p4.Target"


def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def decode(raw: bytes) -> Any:
    return json.loads(raw.decode())


class TargetClient:
    """Client for felix_p4.Target over a grpc.aio channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._trace = channel.unary_unary(f"/{SERVICE}/Trace")
        self._port_of = channel.unary_unary(f"/{SERVICE}/PortOf")

    async def trace(self, request: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = decode(await self._trace(encode(request)))
        return result

    async def port_of(
        self, name: str, reserved: frozenset[int] = frozenset(), port: int | None = None
    ) -> int:
        """The target's port for `name`; a new one is never one of `reserved`. `port`: the
        number the asker already uses for `name`, which the target takes if it is free."""
        request: dict[str, Any] = {"name": name, "reserved": sorted(reserved)}
        if port is not None:
            request["port"] = port
        reply = decode(await self._port_of(encode(request)))
        return int(reply["port"])


class TargetPorts:
    """Ports handed out by the embedded target's felix_p4.Target/PortOf, where it exists: a
    port source for the resolver (`resolve`) and the re-announcement of held ports after the
    target restarted (`announce`)."""

    def __init__(self, address: str) -> None:
        self.client = TargetClient(grpc.aio.insecure_channel(address))
        self.unsupported = False

    async def resolve(self, name: str, reserved: frozenset[int]) -> int | None:
        return await self._ask(name, reserved, None)

    async def announce(self, name: str, port: int, reserved: frozenset[int]) -> None:
        got = await self._ask(name, reserved, port)
        if got is not None and got != port:
            log.error("target port for %s: the target has %d, the driver uses %d", name, got, port)

    async def _ask(self, name: str, reserved: frozenset[int], port: int | None) -> int | None:
        if self.unsupported:
            return None
        try:
            return await self.client.port_of(name, reserved, port)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                # A hardware target: it has no port service; netlink or the map must do.
                self.unsupported = True
            else:
                log.error("target port for %s: %s", name, exc.details())
            return None
