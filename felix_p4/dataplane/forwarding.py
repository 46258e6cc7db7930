"""Forwarding manager: ports, source checks and routes of local workloads and the host port."""

from __future__ import annotations

import attrs

from felix_p4.compile.forwarding import (
    ForwardingSettings,
    blackhole_entries,
    endpoint_entries,
    node_entries,
)
from felix_p4.model.endpoints import WorkloadEndpoint, WorkloadEndpointKey
from felix_p4.model.state import Changes, DataplaneState
from felix_p4.p4.sync import SyncEngine
from felix_p4.pipeline import Owner
from felix_p4.ports import PortResolver

NODE_OWNER = "node"


@attrs.frozen(slots=True)
class NodeSettings:
    gateway_mac: int
    host_port: str | int  # an interface name to resolve, or a port number
    endpoint_share: float = 0.01  # of any table, the most one endpoint may take
    uplink_port: str | int | None = None  # the node's network port, if any


class ForwardingManager:
    """Declares each endpoint's forwarding entries, pointing at the policy programs it is given."""

    name = Owner.FORWARDING

    def __init__(self, sync: SyncEngine, ports: PortResolver, node: NodeSettings) -> None:
        self.sync = sync
        self.ports = ports
        self.node = node
        # The interface name each endpoint's port was resolved for.
        self._names: dict[WorkloadEndpointKey, str] = {}

    async def update(self, state: DataplaneState, changes: Changes) -> None:
        """Node-wide entries: the host port and the catch-all routes that hand traffic to it."""
        if not changes.node:
            return
        host, uplink = await self.host_port(), await self.uplink_port()
        self.sync.set_owner(
            NODE_OWNER, node_entries(ForwardingSettings(self.node.gateway_mac, host, uplink))
        )

    async def host_port(self) -> int | None:
        return await self._resolve(self.node.host_port)

    async def uplink_port(self) -> int | None:
        return await self._resolve(self.node.uplink_port)

    async def _resolve(self, port: str | int | None) -> int | None:
        if isinstance(port, int):
            return port
        return await self.ports.resolve(port) if port else None

    def affected(self, changes: Changes) -> set[WorkloadEndpointKey]:
        return set(changes.endpoints)

    async def port_of(self, endpoint: WorkloadEndpoint) -> int | None:
        """Its port (None while its interface has none); PortConflict when another
        interface already has that port."""
        previous = self._names.get(endpoint.key)
        if previous is not None and previous != endpoint.name:
            self.ports.forget(previous)
        self._names[endpoint.key] = endpoint.name
        return await self.ports.resolve(endpoint.name)

    def program(
        self, endpoint: WorkloadEndpoint, port: int, egress_program: int, ingress_program: int
    ) -> None:
        """Declare the endpoint's entries. Raises CannotForward for an endpoint the pipeline
        cannot deliver to, Refused when its entries do not fit or take more than its share
        (its previous entries, if any, stay)."""
        entries = endpoint_entries(
            endpoint,
            port,
            ForwardingSettings(self.node.gateway_mac),
            egress_program,
            ingress_program,
        )
        self.sync.admit(endpoint.key, entries, share=self.node.endpoint_share)
        self.sync.set_owner(endpoint.key, entries)

    def blackhole(self, endpoint: WorkloadEndpoint) -> None:
        """Its addresses route to drop and its port stays unknown: it neither sends nor
        receives (for an endpoint that cannot be protected as Felix asks)."""
        self.sync.set_owner(endpoint.key, blackhole_entries(endpoint))

    def remove(self, key: WorkloadEndpointKey) -> None:
        self.sync.remove_owner(key)

    def forget(self, key: WorkloadEndpointKey) -> None:
        """The endpoint is gone: its interface's port may be someone else's next."""
        self.remove(key)
        name = self._names.pop(key, None)
        if name is not None:
            self.ports.forget(name)
