"""The MACs of the next hops towards other nodes, as the host's own tables resolve them.

The pipeline sends what goes to another node (encapsulated or not) out of the uplink to the
MAC of the next hop: the node itself when the host's routing table says it is on the link,
else the router the table names. The host keeps its neighbour table; this module asks it: for
each node address a route needs, `ip route get` gives the neighbour, and a *managed* neighbour
entry (Linux 5.16+, `ip neigh add ... managed`) makes the kernel resolve it and keep it
resolved without traffic. Entries it added are removed when no route needs them any more.
Static MACs from the settings win (labs, simulations, hosts without netlink).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NextHop = tuple[int, IPAddress]
NUD_NONE = 0x00
NTF_EXT_MANAGED = 0x01
# Neighbour states whose MAC is usable (NUD_REACHABLE, STALE, DELAY, PROBE, PERMANENT).
USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80


class NextHops:
    """`macs` holds what is known; `want()` says which hops routes need; `run()` keeps the
    netlink ones current and calls `on_change` when a MAC appears, changes or goes."""

    def __init__(
        self,
        static: Mapping[str, int],
        use_netlink: bool,
        on_change: Callable[[], None],
        poll_seconds: float = 2.0,
    ) -> None:
        self.static: dict[NextHop, int] = {}
        for text, mac in static.items():
            addr = ipaddress.ip_address(text)
            self.static[(addr.version, addr)] = mac
        self.use_netlink = use_netlink
        self.on_change = on_change
        self.poll_seconds = poll_seconds
        self.macs: dict[NextHop, int] = dict(self.static)
        self._wanted: set[NextHop] = set()
        self._added: set[tuple[int, str]] = set()  # (ifindex, address) we made managed
        self._kick = asyncio.Event()
        self._failures: dict[NextHop, str] = {}

    def want(self, hops: set[NextHop]) -> None:
        if hops != self._wanted:
            self._wanted = set(hops)
            self._kick.set()

    async def run(self) -> None:
        if not self.use_netlink:
            await asyncio.Event().wait()
            return
        from pyroute2 import AsyncIPRoute

        async with AsyncIPRoute() as ipr:
            try:
                while True:
                    await self._refresh(ipr)
                    self._kick.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._kick.wait(), self.poll_seconds)
            finally:
                await self._release(ipr, set())

    async def _refresh(self, ipr: Any) -> None:
        macs = dict(self.static)
        neighbours: set[tuple[int, str]] = set()
        for hop in sorted(self._wanted - set(self.static), key=lambda h: (h[0], int(h[1]))):
            try:
                found = await self._resolve(ipr, hop, neighbours)
            except Exception as exc:
                found = None
                if self._failures.get(hop) != str(exc):
                    log.warning("next hop towards %s: %s", hop[1], exc)
                self._failures[hop] = str(exc)
            else:
                self._failures.pop(hop, None)
            if found is not None:
                macs[hop] = found
        await self._release(ipr, neighbours)
        if macs != self.macs:
            self.macs = macs
            self.on_change()

    async def _resolve(self, ipr: Any, hop: NextHop, keep: set[tuple[int, str]]) -> int | None:
        route = (await _all(await ipr.route("get", dst=str(hop[1]))))[0]
        oif = route.get("RTA_OIF")
        neighbour = route.get("RTA_GATEWAY") or str(hop[1])
        family = 2 if hop[0] == 4 else 10
        keep.add((oif, neighbour))
        for entry in await _all(await ipr.neigh("dump", ifindex=oif, family=family)):
            if entry.get("NDA_DST") == neighbour:
                mac = entry.get("NDA_LLADDR")
                if mac and entry["state"] & USABLE:
                    return int(mac.replace(":", ""), 16)
                if entry.get("NDA_FLAGS_EXT", 0) & NTF_EXT_MANAGED:
                    return None  # the kernel is resolving it
        # Ask the kernel to resolve it and keep it resolved.
        await ipr.neigh(
            "add", dst=neighbour, ifindex=oif, state=NUD_NONE, NDA_FLAGS_EXT=NTF_EXT_MANAGED
        )
        self._added.add((oif, neighbour))
        return None

    async def _release(self, ipr: Any, keep: set[tuple[int, str]]) -> None:
        for oif, neighbour in sorted(self._added - keep):
            try:
                await ipr.neigh("del", dst=neighbour, ifindex=oif)
            except Exception as exc:
                log.debug("removing managed neighbour %s: %s", neighbour, exc)
            self._added.discard((oif, neighbour))


async def _all(result: Any) -> list[Any]:
    if hasattr(result, "__aiter__"):
        return [m async for m in result]
    return list(result)


async def interface_mac(address: str) -> int | None:
    """The MAC of the interface that holds `address` on this host (None if none does)."""
    from pyroute2 import AsyncIPRoute

    async with AsyncIPRoute() as ipr:
        for entry in await _all(await ipr.get_addr()):
            if entry.get("IFA_ADDRESS") == address:
                links = await _all(await ipr.get_links(entry["index"]))
                mac = links[0].get("IFLA_ADDRESS") if links else None
                return int(mac.replace(":", ""), 16) if mac else None
    return None
