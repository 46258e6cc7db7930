"""Interface name to P4 port: a static map, the kernel's ifindex via netlink, or the target's."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger(__name__)


class PortResolver:
    """Resolves interface names; the static map always wins, then the mode's source.

    Unresolved names return None: the endpoint is reported "down" (its interface is not
    there yet, as Felix's own dataplane reports it) and is retried at the next apply.
    """

    def __init__(
        self,
        static: Mapping[str, int],
        fallback: Callable[[str], Awaitable[int | None]] | None = None,
    ) -> None:
        self.static = {str(k): int(v) for k, v in static.items()}
        self.fallback = fallback
        self._cache: dict[str, int] = {}

    async def resolve(self, name: str) -> int | None:
        if name in self.static:
            return self.static[name]
        if name in self._cache:
            return self._cache[name]
        if self.fallback is None:
            return None
        port = await self.fallback(name)
        if port is not None:
            self._cache[name] = port
        return port

    def forget(self, name: str) -> None:
        """Drop a cached mapping (the interface went away; its ifindex may be reused)."""
        self._cache.pop(name, None)


async def netlink_ifindex(name: str) -> int | None:
    from pyroute2 import AsyncIPRoute

    async with AsyncIPRoute() as ipr:
        found = await ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None
