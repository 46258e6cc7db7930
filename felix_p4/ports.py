"""Interface name to P4 port: a static map, the kernel's ifindex via netlink, or the target's."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from felix_p4.settings import ConfigError, PortsSettings

log = logging.getLogger(__name__)

# Resolves a name to a port; given the numbers it must not hand out (the static map's and
# those other names hold).
PortSource = Callable[[str, frozenset[int]], Awaitable[int | None]]
# Tells a source which port a name already has (a restarted embedded target forgot it).
PortAnnounce = Callable[[str, int, frozenset[int]], Awaitable[None]]


class PortConflict(Exception):
    """Two interface names resolve to one port; the message names both."""


class PortResolver:
    """Resolves interface names: the static map always wins, then each source in turn.

    Unresolved names return None: the endpoint is reported "down" (its interface is not
    there yet, as Felix's own dataplane reports it) and is retried at the next apply.
    """

    def __init__(
        self,
        static: Mapping[str, int],
        sources: Sequence[PortSource] = (),
        announce: PortAnnounce | None = None,
    ) -> None:
        self.static = check_static(static)
        self.reserved = frozenset(self.static.values())
        self.sources = list(sources)
        self.announce = announce
        self._cache: dict[str, int] = {}
        self._owner = {port: name for name, port in self.static.items()}

    async def resolve(self, name: str) -> int | None:
        """The port of `name`, or None if it has none yet; PortConflict when its port is
        already another name's."""
        if name in self.static:
            return self.static[name]
        port = self._cache.get(name)
        if port is None:
            # Numbers the static map pins and those other names hold are not to be handed
            # out again (a restarted target has forgotten the ones it gave).
            taken = frozenset(self._owner)
            for source in self.sources:
                port = await source(name, taken)
                if port is not None:
                    break
            if port is None:
                return None
        owner = self._owner.get(port)
        if owner is not None and owner != name:
            raise PortConflict(f"{name} resolves to port {port}, which is already {owner}'s")
        self._cache[name] = port
        self._owner[port] = name
        return port

    async def reannounce(self) -> None:
        """Tell the port source the ports names already hold: after the embedded target
        restarts, it hands them the same numbers again (traces by name work) and never
        gives them to new names."""
        if self.announce is None:
            return
        for name, port in list(self._cache.items()):
            if name not in self.static:
                await self.announce(name, port, frozenset(self._owner) - {port})

    def forget(self, name: str) -> None:
        """`name` no longer uses its port (its endpoint went away); the next resolve asks again."""
        port = self._cache.pop(name, None)
        if port is not None and self._owner.get(port) == name:
            del self._owner[port]


def check_static(static: Mapping[str, int]) -> dict[str, int]:
    """The static map, refusing two names with one port (ConfigError naming both)."""
    ports: dict[str, int] = {}
    seen: dict[int, str] = {}
    for name, value in static.items():
        port = int(value)
        if port in seen:
            raise ConfigError(f"ports.map gives port {port} to both {seen[port]} and {name}")
        seen[port] = str(name)
        ports[str(name)] = port
    return ports


async def netlink_ifindex(name: str, reserved: frozenset[int] = frozenset()) -> int | None:
    from pyroute2 import AsyncIPRoute

    async with AsyncIPRoute() as ipr:
        found = await ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def make_resolver(
    ports: PortsSettings,
    target_source: PortSource | None,
    target_announce: PortAnnounce | None = None,
) -> PortResolver:
    """ports.mode: static (map only), netlink, target, or auto (netlink, then target)."""
    sources: list[PortSource] = []
    if ports.mode in ("netlink", "auto"):
        sources.append(netlink_ifindex)
    announce = None
    if ports.mode in ("target", "auto") and target_source is not None:
        sources.append(target_source)
        announce = target_announce
    return PortResolver(ports.map, sources, announce)
