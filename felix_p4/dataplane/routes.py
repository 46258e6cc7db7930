"""Routes manager: other nodes (VXLAN, IP-in-IP, no-encap), this node's blackholes, tunnel
sources and next hops, recompiled from Felix's routes, VTEPs and host addresses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from felix_p4 import metrics
from felix_p4.compile.routes import NodeNetwork, compile_routes
from felix_p4.model.state import Changes, DataplaneState
from felix_p4.model.values import IPNetwork
from felix_p4.neighbours import NextHops
from felix_p4.p4.sync import Refused, SyncEngine
from felix_p4.pipeline import Owner
from felix_p4.pipeline.entries import Entity

log = logging.getLogger(__name__)

NODE_CONFIG_OWNER = "node-config"
SOURCES_OWNER = "tunnel-sources"


class RoutesManager:
    """Owners: one per route destination and per next hop (so one that does not fit is
    refused alone), the node table's entry and the tunnel sources."""

    name = Owner.ROUTES

    def __init__(
        self,
        sync: SyncEngine,
        node: Callable[[DataplaneState], Awaitable[NodeNetwork]],
        next_hops: NextHops,
    ) -> None:
        self.sync = sync
        self.node = node
        self.next_hops = next_hops
        self._owners: set[object] = set()
        # Why a route has no entry, and why an owner was refused, as last logged.
        self._unresolved: dict[IPNetwork, str] = {}
        self._refused: dict[object, str] = {}
        # Owners whose entries are claimed (counted as admitted once, not per recompile).
        self._admitted: set[object] = set()

    async def update(self, state: DataplaneState, changes: Changes) -> None:
        if not state.in_sync:
            return
        node = await self.node(state)
        compiled = compile_routes(state, node, self.next_hops.macs)
        self.next_hops.want(compiled.wanted)
        owners: set[object] = set()
        for dst, entry in compiled.routes.items():
            owners.add(("route", dst))
            self._set(("route", dst), [entry])
        for hop, entry in compiled.next_hops.items():
            owners.add(("next-hop", hop))
            self._set(("next-hop", hop), [entry])
        self._set(NODE_CONFIG_OWNER, [compiled.node])
        self._set(SOURCES_OWNER, compiled.sources)
        for owner in self._owners - owners:
            self.sync.remove_owner(owner)
            self._admitted.discard(owner)
            self._refused.pop(owner, None)
        self._owners = owners
        # One line per reason for the routes newly without an entry (a node without a VTEP
        # has all its blocks here).
        fresh: dict[str, list[IPNetwork]] = {}
        for dst, why in compiled.unresolved.items():
            if self._unresolved.get(dst) != why:
                fresh.setdefault(why, []).append(dst)
        for why, dsts in fresh.items():
            shown = ", ".join(str(d) for d in dsts[:3]) + (" ..." if len(dsts) > 3 else "")
            log.warning(
                "%d route(s) not programmed (%s), they follow the default route: %s",
                len(dsts),
                why,
                shown,
            )
        self._unresolved = dict(compiled.unresolved)
        missing = compiled.wanted - set(compiled.next_hops)
        if missing and node.uplink_port is not None:
            log.debug("next hops not resolved yet: %s", ", ".join(str(h[1]) for h in missing))

    def _set(self, owner: object, entries: Sequence[Entity]) -> None:
        try:
            self.sync.admit(owner, entries)
        except Refused as exc:
            if self._refused.get(owner) != str(exc):
                log.error("%s: not programmed, %s", owner, exc)
                metrics.ADMISSIONS.labels("route", "refused", exc.reason).inc()
                self._refused[owner] = str(exc)
            self.sync.remove_owner(owner)
            self._admitted.discard(owner)
            return
        if self._refused.pop(owner, None) is not None:
            log.info("%s: admitted", owner)
        if owner not in self._admitted:
            self._admitted.add(owner)
            metrics.ADMISSIONS.labels("route", "admitted", metrics.ADMITTED).inc()
        self.sync.set_owner(owner, entries)
