"""Interface name to P4 port: a static map, the kernel's ifindex via netlink, or the target's."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc

log = logging.getLogger(__name__)

PortSource = Callable[[str], Awaitable[int | None]]
MODES = ("static", "netlink", "target", "auto")


class PortResolver:
    """Resolves interface names: the static map always wins, then each source in turn.

    Unresolved names return None: the endpoint is reported "down" (its interface is not
    there yet, as Felix's own dataplane reports it) and is retried at the next apply.
    """

    def __init__(self, static: Mapping[str, int], sources: Sequence[PortSource] = ()) -> None:
        self.static = {str(k): int(v) for k, v in static.items()}
        self.sources = list(sources)
        self._cache: dict[str, int] = {}

    async def resolve(self, name: str) -> int | None:
        if name in self.static:
            return self.static[name]
        if name in self._cache:
            return self._cache[name]
        for source in self.sources:
            port = await source(name)
            if port is not None:
                self._cache[name] = port
                return port
        return None


async def netlink_ifindex(name: str) -> int | None:
    from pyroute2 import AsyncIPRoute

    async with AsyncIPRoute() as ipr:
        found = await ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def target_port_source(address: str) -> PortSource:
    """Ports handed out by the embedded target's felix_p4.Target/PortOf, where it exists."""
    from felix_p4.target.service import TargetClient

    client = TargetClient(grpc.aio.insecure_channel(address))
    unsupported = False

    async def resolve(name: str) -> int | None:
        nonlocal unsupported
        if unsupported:
            return None
        try:
            return await client.port_of(name)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                # A hardware target: it has no port service; netlink or the map must do.
                unsupported = True
            else:
                log.error("target port for %s: %s", name, exc.details())
            return None

    return resolve


def make_resolver(ports: Mapping[str, Any], p4runtime_address: str) -> PortResolver:
    """ports.mode: static (map only), netlink, target, or auto (netlink, then target)."""
    mode = ports["mode"]
    if mode not in MODES:
        raise ValueError(f"ports.mode {mode!r} is not one of {', '.join(MODES)}")
    sources: list[PortSource] = []
    if mode in ("netlink", "auto"):
        sources.append(netlink_ifindex)
    if mode in ("target", "auto"):
        sources.append(target_port_source(p4runtime_address))
    return PortResolver(ports["map"], sources)
