"""Interface name to P4 port: a static map, the kernel's ifindex via netlink, or the target's."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from felix_p4.settings import PortsSettings

log = logging.getLogger(__name__)

PortSource = Callable[[str], Awaitable[int | None]]


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


def make_resolver(ports: PortsSettings, target_source: PortSource | None) -> PortResolver:
    """ports.mode: static (map only), netlink, target, or auto (netlink, then target)."""
    sources: list[PortSource] = []
    if ports.mode in ("netlink", "auto"):
        sources.append(netlink_ifindex)
    if ports.mode in ("target", "auto") and target_source is not None:
        sources.append(target_source)
    return PortResolver(ports.map, sources)
