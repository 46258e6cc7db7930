"""Services: front-end entries, action-selector members (backends) and groups (a service
port's backends) for each Service, as kube-proxy would program it.

Scale-up and scale-down change a group's member list and add or remove only the changed
members; a member (address, port) is shared by every group that uses it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence

import attrs

from felix_p4.model.policy import IPAddress
from felix_p4.model.services import EndpointSlice, Service, ServiceKey, ServicePort, backends
from felix_p4.pipeline import (
    SERVICE_BACKENDS,
    SERVICE_REJECT,
    SERVICE_SELECTOR,
    SET_BACKEND,
    TO_SERVICE,
)
from felix_p4.pipeline import SERVICES as SERVICES_TABLE
from felix_p4.pipeline.entries import (
    ActionProfileGroup,
    ActionProfileMember,
    Entity,
    Exact,
    TableEntry,
)
from felix_p4.pipeline.fields import exact128, params128

SERVICES = SERVICES_TABLE.name
BACKENDS = SERVICE_BACKENDS.name
SELECTOR = SERVICE_SELECTOR.name
NO_HAIRPIN = {4: ipaddress.ip_address("169.254.1.1"), 6: ipaddress.ip_address("fe80::1")}


@attrs.frozen(slots=True)
class NodeContext:
    """What service compilation needs about this node."""

    name: str
    addresses: tuple[IPAddress, ...]  # where NodePorts listen
    hairpin: dict[int, IPAddress]  # per family: the source a pod sees when it reached itself


class _Ids:
    """Small integer ids for hashable identities, reusable after release, recoverable."""

    def __init__(self) -> None:
        self.by_key: dict[object, int] = {}
        self._values: set[int] = set()
        self._next = 1
        self._free: list[int] = []

    def get(self, key: object) -> int:
        found = self.by_key.get(key)
        if found is not None:
            return found
        value = self._free.pop() if self._free else self._next
        if value == self._next:
            self._next += 1
        self.by_key[key] = value
        self._values.add(value)
        return value

    def adopt(self, key: object, value: int) -> None:
        if key in self.by_key or value in self._values:
            return
        self.by_key[key] = value
        self._values.add(value)
        self._next = max(self._next, value + 1)

    def release(self, key: object) -> None:
        value = self.by_key.pop(key, None)
        if value is not None:
            self._values.discard(value)
            self._free.append(value)


def _scope_key(service: ServiceKey, port: ServicePort, family: int, scope: str) -> str:
    return f"{service}|{port.name}|{port.protocol}|{port.port}|{family}|{scope}"


class ServiceCompiler:
    def __init__(self) -> None:
        self.groups = _Ids()
        self.members = _Ids()
        self.services = _Ids()
        self._used: dict[ServiceKey, set[tuple[str, object]]] = {}
        # How many services use each id key; keys that dropped to zero wait in _unused
        # until the apply that removes their entities is done.
        self._refs: dict[tuple[str, object], int] = {}
        self._unused: set[tuple[str, object]] = set()

    def recover(self, installed: Iterable[Entity]) -> None:
        """Adopt member, group and service ids from what the device holds."""
        for entity in installed:
            if isinstance(entity, ActionProfileMember) and entity.profile == SELECTOR:
                params = dict(entity.params)
                addr = (params.get("addr_hi", 0) << 64) | params.get("addr_lo", 0)
                self.members.adopt((addr, params.get("port")), entity.member_id)
            elif isinstance(entity, TableEntry) and entity.table == SERVICES and entity.metadata:
                try:
                    info = json.loads(entity.metadata)
                except ValueError:
                    continue
                if "group_key" in info:
                    self.groups.adopt(info["group_key"], int(info["group"]))
                if "service" in info:
                    self.services.adopt(info["service"], int(info["service_id"]))

    def compile(
        self, service: Service, slices: Sequence[EndpointSlice], node: NodeContext
    ) -> list[Entity]:
        """Every entity one Service needs; releases ids it no longer uses."""
        used: set[tuple[str, object]] = set()
        entities: dict[object, Entity] = {}
        service_id = self.services.get(str(service.key))
        used.add(("service", str(service.key)))
        if service.type == "ExternalName":
            return []
        for port in service.ports:
            for family in (4, 6):
                internal = self._group(
                    service, port, slices, family, node, service.internal_local, used, entities
                )
                external = self._group(
                    service, port, slices, family, node, service.external_local, used, entities
                )
                fronts: list[tuple[IPAddress, int, tuple[str, int] | None]] = [
                    (ip, port.port, internal) for ip in service.cluster_ips
                ]
                fronts += [
                    (ip, port.port, external)
                    for ip in (*service.external_ips, *service.load_balancer_ips)
                ]
                if service.type in ("NodePort", "LoadBalancer") and port.node_port:
                    fronts += [(ip, port.node_port, external) for ip in node.addresses]
                for addr, front_port, group in fronts:
                    if addr.version != family:
                        continue
                    entry = self._front(service, port, addr, front_port, group, service_id, node)
                    entities[entry.key] = entry
        self._set_used(service.key, used)
        return list(entities.values())

    def _group(
        self,
        service: Service,
        port: ServicePort,
        slices: Sequence[EndpointSlice],
        family: int,
        node: NodeContext,
        local: bool,
        used: set[tuple[str, object]],
        entities: dict[object, Entity],
    ) -> tuple[str, int] | None:
        """(group key, group id) of the backends for this port, or None when there are none."""
        chosen = backends(service, port, slices, family, node.name if local else None)
        if not chosen:
            return None
        scope = "local" if local else "cluster"
        group_key = _scope_key(service.key, port, family, scope)
        group_id = self.groups.get(group_key)
        used.add(("group", group_key))
        members = []
        for addr, target in chosen:
            member_key = (int(addr), target)
            member_id = self.members.get(member_key)
            used.add(("member", member_key))
            params = {**params128("addr", int(addr)), "port": target}
            member = ActionProfileMember(
                SELECTOR, member_id, SET_BACKEND.name, tuple(sorted(params.items()))
            )
            entities[member.key] = member
            members.append((member_id, 1))
        group = ActionProfileGroup(SELECTOR, group_id, tuple(sorted(members)))
        entities[group.key] = group
        binding = TableEntry.to_group(BACKENDS, {"group": Exact(group_id)}, group_id)
        entities[binding.key] = binding
        return group_key, group_id

    def _front(
        self,
        service: Service,
        port: ServicePort,
        addr: IPAddress,
        front_port: int,
        group: tuple[str, int] | None,
        service_id: int,
        node: NodeContext,
    ) -> TableEntry:
        match = {
            "ip_version": Exact(addr.version),
            **exact128("addr", int(addr)),
            "proto": Exact(port.protocol),
            "port": Exact(front_port),
        }
        info: dict[str, object] = {
            "service": str(service.key),
            "service_id": service_id,
            "port": port.name or str(port.port),
        }
        if group is None:
            info["reject"] = "no ready endpoints"
            return TableEntry.make(
                SERVICES,
                match,
                SERVICE_REJECT.name,
                metadata=json.dumps(info, sort_keys=True).encode(),
            )
        group_key, group_id = group
        info.update(group=group_id, group_key=group_key)
        hairpin = node.hairpin.get(addr.version, NO_HAIRPIN[addr.version])
        return TableEntry.make(
            SERVICES,
            match,
            TO_SERVICE.name,
            {
                "group": group_id,
                "service_id": service_id,
                "affinity_seconds": service.affinity_seconds,
                **params128("hairpin", int(hairpin)),
            },
            metadata=json.dumps(info, sort_keys=True).encode(),
        )

    def _set_used(self, key: ServiceKey, used: set[tuple[str, object]]) -> None:
        old = self._used.pop(key, set())
        for item in used - old:
            self._refs[item] = self._refs.get(item, 0) + 1
            self._unused.discard(item)
        for item in old - used:
            self._refs[item] -= 1
            if not self._refs[item]:
                del self._refs[item]
                self._unused.add(item)
        if used:
            self._used[key] = used

    def forget(self, key: ServiceKey) -> None:
        self._set_used(key, set())

    def release_unused(self) -> None:
        """Free ids no service uses any more (call after their entities were removed)."""
        pools = {"group": self.groups, "member": self.members, "service": self.services}
        for kind, key in self._unused:
            pools[kind].release(key)
        self._unused.clear()
