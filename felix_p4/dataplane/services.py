"""Service manager: Kubernetes Services and their EndpointSlices into front ends and backends."""

from __future__ import annotations

from collections.abc import Sequence

from felix_p4.compile.services import NodeContext, ServiceCompiler
from felix_p4.model.policy import IPAddress
from felix_p4.model.state import Changes, DataplaneState
from felix_p4.p4.sync import SyncEngine
from felix_p4.pipeline import Owner
from felix_p4.pipeline.entries import Entity


class ServiceManager:
    """Compiles the services whose object, slices or node context changed.

    Nothing is compiled until the Kubernetes source has listed everything once, so the first
    apply never removes a service just because its object had not arrived yet.
    """

    name = Owner.SERVICES

    def __init__(self, sync: SyncEngine, hairpin: dict[int, IPAddress], enabled: bool) -> None:
        self.sync = sync
        self.hairpin = hairpin
        self.enabled = enabled
        self.compiler = ServiceCompiler()
        self._started = False

    def recover(self, installed: Sequence[Entity]) -> None:
        self.compiler.recover(installed)

    def update(self, state: DataplaneState, changes: Changes) -> None:
        if not self.enabled or not state.services_synced:
            return
        keys = set(changes.services)
        if changes.node_addresses or not self._started:
            self._started = True
            keys |= state.all_services()
        host = state.hosts.get(state.config.hostname)
        node = NodeContext(
            state.config.hostname,
            tuple(a for a in (host.ipv4, host.ipv6) if a is not None) if host else (),
            self.hairpin,
        )
        for key in keys:
            service = state.service(key)
            owner = ("service", key)
            if service is None:
                self.sync.remove_owner(owner)
                self.compiler.forget(key)
                continue
            self.sync.set_owner(
                owner, self.compiler.compile(service, state.service_slices(key), node)
            )

    def applied(self) -> None:
        """Free ids no service uses any more (after the apply that removed their entities)."""
        self.compiler.release_unused()
