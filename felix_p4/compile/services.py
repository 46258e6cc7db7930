"""Services: front-end entries and bucket entries (a service port's backends spread over a
power-of-two number of buckets, which the flow's hash picks from) for each Service, as
kube-proxy would program it.

Buckets are spread evenly (counts differ by at most one, the extra ones to the first backends
in address order) and with the fewest moves when backends change: a scale-up or scale-down
rewrites only the buckets that must change hands.
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Iterable, Sequence

import attrs

from felix_p4.model.policy import IPAddress
from felix_p4.model.services import EndpointSlice, Service, ServiceKey, ServicePort, backends
from felix_p4.pipeline import (
    MAX_BUCKETS,
    SERVICE_BACKENDS,
    SERVICE_REJECT,
    SET_BACKEND,
    TO_SERVICE,
)
from felix_p4.pipeline import SERVICES as SERVICES_TABLE
from felix_p4.pipeline.entries import Entity, Exact, TableEntry
from felix_p4.pipeline.fields import exact128, params128

SERVICES = SERVICES_TABLE.name
BACKENDS = SERVICE_BACKENDS.name
NO_HAIRPIN = {4: ipaddress.ip_address("169.254.1.1"), 6: ipaddress.ip_address("fe80::1")}
# Buckets per backend aimed for: more spreads load more evenly, fewer takes fewer entries.
BUCKETS_PER_BACKEND = 4

Backend = tuple[int, int]  # (address as an integer, target port)


class TooManyBackends(ValueError):
    """A service port with more backends than it can have buckets."""


def bucket_count(backend_count: int) -> int:
    """The smallest power of two that splits evenly among the backends (a power of two of
    them: one bucket each) or gives each at least BUCKETS_PER_BACKEND (shares then differ by
    at most a quarter); at most MAX_BUCKETS."""
    n = max(1, backend_count)
    size = 1 << (n - 1).bit_length()
    if size != n:
        size = 1 << (BUCKETS_PER_BACKEND * n - 1).bit_length()
    return min(MAX_BUCKETS, size)


def _even_enough(size: int, backends: int) -> bool:
    return size % backends == 0 or size >= BUCKETS_PER_BACKEND * backends


def spread(previous: Sequence[Backend | None], chosen: Sequence[Backend]) -> list[Backend]:
    """Each bucket's backend: every backend gets len // n or one more bucket (the first ones
    in order get the extra), keeping as many flows as possible where `previous` sent them
    (also when the bucket count changes). The count is bucket_count's, or the previous one
    while that still spreads evenly enough and is at most 4 times as large."""
    size = bucket_count(len(chosen))
    # Keep the current count while it still spreads well and is not much larger than needed:
    # fewer flows change buckets and fewer entries are written.
    kept = len(previous)
    if size < kept <= min(MAX_BUCKETS, 4 * size) and _even_enough(kept, len(chosen)):
        size = kept
    if len(chosen) > size:
        raise TooManyBackends(f"{len(chosen)} backends, more than the {size} buckets")
    base, extra = divmod(size, len(chosen))
    quota = {b: base + (1 if i < extra else 0) for i, b in enumerate(chosen)}
    # A bucket is the flow hash's low bits, so when the count doubles or halves, bucket i
    # keeps the flows that old bucket i (mod the old count) had: start from those backends.
    slots: list[Backend | None] = (
        [previous[i % len(previous)] for i in range(size)] if previous else [None] * size
    )
    held: Counter[Backend] = Counter()
    for i, b in enumerate(slots):
        if b is None or b not in quota or held[b] >= quota[b]:
            slots[i] = None
        else:
            held[b] += 1
    wanting = [b for b in chosen for _ in range(quota[b] - held[b])]
    it = iter(wanting)
    return [b if b is not None else next(it) for b in slots]


@attrs.frozen(slots=True)
class NodeContext:
    """What service compilation needs about this node."""

    name: str
    addresses: tuple[IPAddress, ...]  # where NodePorts listen
    hairpin: dict[int, IPAddress]  # per family: the source a pod sees when it reached itself


_ID_LIMIT = 1 << 32  # the P4 program's group ids are 32-bit


class _Ids:
    """Integer ids for hashable identities, recoverable. A released id is reused only once
    every fresh one up to 2^32 is taken: the device may still hold learned state keyed by it
    (a ClientIP affinity entry lives until its timeout, three hours by default), which a new
    owner of the id would otherwise inherit."""

    def __init__(self) -> None:
        self.by_key: dict[object, int] = {}
        self._values: set[int] = set()
        self._next = 1
        self._free: list[int] = []

    def get(self, key: object) -> int:
        found = self.by_key.get(key)
        if found is not None:
            return found
        if self._next < _ID_LIMIT:
            value = self._next
            self._next += 1
        elif self._free:
            value = self._free.pop(0)
        else:
            raise ValueError(f"all {_ID_LIMIT - 1} ids are in use")
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


# A service port's backends: (group key, group id, bucket mask, affinity key, affinity id).
_Group = tuple[str, int, int, str, int]


def _scope_key(service: ServiceKey, port: ServicePort, family: int, scope: str) -> str:
    return f"{service}|{port.name}|{port.protocol}|{port.port}|{family}|{scope}"


class ServiceCompiler:
    def __init__(self) -> None:
        self.groups = _Ids()
        # ClientIP affinity scopes: one per group, replaced by a fresh one whenever a backend
        # leaves the group, so no learned affinity entry (which the control plane cannot
        # delete) sends a client to a removed endpoint. Keyed "<group key>#<generation>".
        self.affinity = _Ids()
        self.generation: dict[str, int] = {}
        # Each group's buckets as last compiled (or read back), so changes move few of them.
        self.buckets: dict[str, list[Backend | None]] = {}
        self._used: dict[ServiceKey, set[tuple[str, object]]] = {}
        # How many services use each id key; keys that dropped to zero wait in _unused
        # until the apply that removes their entities is done.
        self._refs: dict[tuple[str, object], int] = {}
        self._unused: set[tuple[str, object]] = set()

    def recover(self, installed: Iterable[Entity]) -> None:
        """Adopt group and service ids, and bucket contents, from what the device holds."""
        entries = [e for e in installed if isinstance(e, TableEntry)]
        group_keys: dict[int, str] = {}
        for entry in entries:
            if entry.table != SERVICES or not entry.metadata:
                continue
            try:
                info = json.loads(entry.metadata)
            except ValueError:
                continue
            if "group_key" in info:
                self.groups.adopt(info["group_key"], int(info["group"]))
                group_keys[int(info["group"])] = info["group_key"]
            if "affinity_key" in info:
                scope = str(info["affinity_key"])
                group_key, _, generation = scope.rpartition("#")
                if generation.isdigit():
                    self.affinity.adopt(scope, int(info["affinity"]))
                    self.generation[group_key] = int(generation)
        found: dict[str, dict[int, Backend]] = {}
        for entry in entries:
            if entry.table != BACKENDS:
                continue
            match = dict(entry.match)
            group, bucket = match.get("group"), match.get("bucket")
            key = group_keys.get(group.value) if isinstance(group, Exact) else None
            if key is None or not isinstance(bucket, Exact):
                continue
            params = dict(entry.params)
            addr = (params.get("addr_hi", 0) << 64) | params.get("addr_lo", 0)
            found.setdefault(key, {})[bucket.value] = (addr, params.get("port", 0))
        for key, slots in found.items():
            size = max(slots) + 1
            self.buckets[key] = [slots.get(i) for i in range(size)]

    def compile(
        self, service: Service, slices: Sequence[EndpointSlice], node: NodeContext
    ) -> list[Entity]:
        """Every entity one Service needs; releases ids it no longer uses. Raises
        TooManyBackends for a port with more backends than it can have buckets."""
        used: set[tuple[str, object]] = set()
        entities: dict[object, Entity] = {}
        if service.type == "ExternalName":
            self._set_used(service.key, used)
            return []
        try:
            for port in service.ports:
                for family in (4, 6):
                    internal = self._group(
                        service, port, slices, family, node, service.internal_local, used, entities
                    )
                    external = self._group(
                        service, port, slices, family, node, service.external_local, used, entities
                    )
                    fronts: list[tuple[IPAddress, int, _Group | None]] = [
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
                        entry = self._front(service, port, addr, front_port, group, node)
                        entities[entry.key] = entry
        finally:
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
    ) -> _Group | None:
        """(group key, group id, bucket mask, affinity key, affinity id) of the backends for
        this port, or None."""
        chosen = backends(service, port, slices, family, node.name if local else None)
        if not chosen:
            return None
        scope = "local" if local else "cluster"
        group_key = _scope_key(service.key, port, family, scope)
        group_id = self.groups.get(group_key)
        used.add(("group", group_key))
        try:
            slots = spread(self.buckets.get(group_key, ()), [(int(a), p) for a, p in chosen])
        except TooManyBackends as exc:
            raise TooManyBackends(
                f"service {service.key} port {port.name or port.port} (IPv{family}): {exc}"
            ) from None
        before = {b for b in self.buckets.get(group_key, ()) if b is not None}
        if before - set(slots):
            self.generation[group_key] = self.generation.get(group_key, 0) + 1
        self.buckets[group_key] = list(slots)
        affinity_key = f"{group_key}#{self.generation.get(group_key, 0)}"
        affinity_id = self.affinity.get(affinity_key)
        used.add(("affinity", affinity_key))
        for index, (addr, target) in enumerate(slots):
            entry = TableEntry.make(
                BACKENDS,
                {"group": Exact(group_id), "bucket": Exact(index)},
                SET_BACKEND.name,
                {**params128("addr", addr), "port": target},
            )
            entities[entry.key] = entry
        return group_key, group_id, len(slots) - 1, affinity_key, affinity_id

    def _front(
        self,
        service: Service,
        port: ServicePort,
        addr: IPAddress,
        front_port: int,
        group: _Group | None,
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
        group_key, group_id, mask, affinity_key, affinity_id = group
        info.update(
            group=group_id, group_key=group_key, affinity=affinity_id, affinity_key=affinity_key
        )
        hairpin = node.hairpin.get(addr.version, NO_HAIRPIN[addr.version])
        return TableEntry.make(
            SERVICES,
            match,
            TO_SERVICE.name,
            {
                "group": group_id,
                # ClientIP affinity is kept per service port, IP family and traffic scope (the
                # group), as kube-proxy keeps it per service port: a client's backend for one
                # port is never used for another port, nor a cluster-scope backend for an
                # externalTrafficPolicy: Local front end.
                "service_id": affinity_id,
                "affinity_seconds": service.affinity_seconds,
                **params128("hairpin", int(hairpin)),
                "bucket_mask": mask,
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
        for kind, key in self._unused:
            if kind == "group":
                self.groups.release(key)
                self.buckets.pop(str(key), None)
                self.generation.pop(str(key), None)
            else:
                self.affinity.release(key)
        self._unused.clear()
