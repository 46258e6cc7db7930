"""Client of the embedded target's felix_p4.Target service: packet traces and port numbers.

felix_p4.Target is a small gRPC service whose requests and replies are JSON documents (so no
extra bindings are needed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
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

    async def port_of(self, name: str, reserved: frozenset[int] = frozenset()) -> int:
        """The target's port for `name`; a new one is never one of `reserved`."""
        reply = decode(await self._port_of(encode({"name": name, "reserved": sorted(reserved)})))
        return int(reply["port"])


def target_port_source(address: str) -> Callable[[str, frozenset[int]], Awaitable[int | None]]:
    """Ports handed out by the embedded target's felix_p4.Target/PortOf, where it exists."""
    client = TargetClient(grpc.aio.insecure_channel(address))
    unsupported = False

    async def resolve(name: str, reserved: frozenset[int]) -> int | None:
        nonlocal unsupported
        if unsupported:
            return None
        try:
            return await client.port_of(name, reserved)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                # A hardware target: it has no port service; netlink or the map must do.
                unsupported = True
            else:
                log.error("target port for %s: %s", name, exc.details())
            return None

    return resolve
