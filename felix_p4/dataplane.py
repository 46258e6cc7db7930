"""One apply: what changed in the model, compiled per concern, written to the device in
dependency order, and the resulting status of every touched endpoint.

Phases keep the device safe at every step: (A) IP-set classification and new policy
programs, (B) endpoints' forwarding entries pointing at programs that were fully installed,
(C) removal of what nothing references any more. An endpoint never points at a partly
installed program, and nothing is deleted before its replacement is in place.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import attrs

from felix_p4.compile.forwarding import (
    PORT_CLASSIFY,
    ROUTES,
    SOURCE_CHECK,
    CannotForward,
    ForwardingSettings,
    blackhole_entries,
    endpoint_entries,
    node_entries,
)
from felix_p4.compile.policy import (
    DIRECTIONS,
    CannotCompile,
    PolicyCompiler,
    Program,
    ProgramSpec,
    program_spec,
)
from felix_p4.compile.services import NodeContext, ServiceCompiler
from felix_p4.felix.status import DOWN, ERROR, UP
from felix_p4.model.endpoints import WorkloadEndpoint, WorkloadEndpointKey
from felix_p4.model.policy import IPAddress
from felix_p4.model.state import DataplaneState
from felix_p4.p4.entries import TableEntry
from felix_p4.p4.sync import ApplyReport, SyncEngine
from felix_p4.ports import PortResolver

log = logging.getLogger(__name__)

NODE_OWNER = "node"
FORWARDING_TABLES = frozenset({PORT_CLASSIFY, *SOURCE_CHECK.values(), *ROUTES.values()})


@attrs.define
class ApplyOutcome:
    statuses: dict[WorkloadEndpointKey, str] = attrs.Factory(dict)
    removed: list[WorkloadEndpointKey] = attrs.Factory(list)
    retry: bool = False
    written: int = 0
    failed: int = 0


class Dataplane:
    """Owns the compilers' state and the sync engine; `apply` is called once per batch."""

    def __init__(
        self,
        sync: SyncEngine,
        ports: PortResolver,
        gateway_mac: int,
        host_port_name: str | int,
        hairpin: dict[int, IPAddress] | None = None,
        services_enabled: bool = False,
    ) -> None:
        self.sync = sync
        self.ports = ports
        self.gateway_mac = gateway_mac
        self.host_port_name = host_port_name
        self.hairpin = hairpin or {}
        self.services_enabled = services_enabled
        self.policy = PolicyCompiler(sync.schema)
        self.services = ServiceCompiler()
        # Phase A writes everything the forwarding entries may point at.
        self.policy_tables = frozenset(sync.schema.entity_order()) - FORWARDING_TABLES
        # The programs each endpoint's installed forwarding entries point at.
        self._installed: dict[tuple[WorkloadEndpointKey, str], Program] = {}
        # Endpoints (and directions) whose installed entries point at each program, and the
        # programs that may have become unused during the current apply.
        self._users: dict[Hashable, set[tuple[WorkloadEndpointKey, str]]] = {}
        self._candidates: set[Program] = set()
        self._specs: dict[tuple[object, ...], ProgramSpec] = {}
        self._recovered = False
        self._services_started = False

    def recover(self) -> None:
        """Adopt allocations from what the device holds (call after sync.load_installed)."""
        installed = list(self.sync.installed.values())
        self.policy.recover(e for e in installed if isinstance(e, TableEntry))
        self.services.recover(installed)

    async def _host_port(self) -> int | None:
        if isinstance(self.host_port_name, int):
            return self.host_port_name
        return await self.ports.resolve(str(self.host_port_name)) if self.host_port_name else None

    def _affected(self, state: DataplaneState) -> set[WorkloadEndpointKey]:
        changes = state.changes
        keys = set(changes.endpoints)
        if changes.policies or changes.profiles:
            for key, endpoint in state.endpoints.items():
                if changes.profiles.intersection(endpoint.profile_ids) or any(
                    changes.policies.intersection(t.ingress_policies + t.egress_policies)
                    for t in endpoint.tiers
                ):
                    keys.add(key)
        return keys

    def _set_classification(self) -> None:
        classifier = self.policy.classifier
        for owner in classifier.changed:
            self.sync.set_owner(owner, classifier.entries_for(owner))
        classifier.changed.clear()

    async def apply(
        self,
        state: DataplaneState,
        revisit: set[WorkloadEndpointKey],
        invalid: set[WorkloadEndpointKey],
    ) -> ApplyOutcome:
        out = ApplyOutcome()
        sync = self.sync
        keys = self._affected(state) | revisit
        if state.changes.policies or state.changes.profiles:
            self._specs.clear()
        if state.changes.ipsets:
            self.policy.sets_changed(
                state.changes.ipsets, state.ipsets.get, state.changes.ipset_deltas
            )
        if state.changes.node:
            settings = ForwardingSettings(self.gateway_mac, await self._host_port())
            sync.set_owner(NODE_OWNER, node_entries(settings))
        self._compile_services(state)
        state.changes.clear()

        # Phase A: programs the endpoints now need, and their classification entries.
        wanted: dict[WorkloadEndpointKey, tuple[WorkloadEndpoint, int, dict[str, Program]]] = {}
        for key in sorted(keys):  # sorted: ports handed out on first sight number reproducibly
            endpoint = state.endpoints.get(key)
            if endpoint is None:
                sync.remove_owner(key)
                self._drop_installed(key)
                if key in invalid:
                    out.statuses[key] = ERROR  # never had a valid version to program
                else:
                    out.removed.append(key)
                continue
            port = await self.ports.resolve(endpoint.name)
            if port is None:
                sync.remove_owner(key)
                self._drop_installed(key)
                out.statuses[key] = DOWN
                continue
            try:
                programs = {
                    d: self.policy.ensure(self._spec(endpoint, d, state), state.ipsets.get)
                    for d in DIRECTIONS
                }
            except CannotCompile as exc:
                log.error("workload endpoint %s: %s", key, exc)
                out.statuses[key] = ERROR
                if not any((key, d) in self._installed for d in DIRECTIONS):
                    sync.set_owner(key, blackhole_entries(endpoint))
                continue
            for program in programs.values():
                if not program.registered:
                    program.registered = True
                    sync.set_owner(program.owner, program.entries)
            wanted[key] = (endpoint, port, programs)
        self._set_classification()
        report = await sync.apply(self.policy_tables, deletes=False)
        self._count(report, out)
        failed_programs = {o for o in report.errors if isinstance(o, tuple) and o[0] == "program"}

        # Phase B: endpoints move to their new programs if those are complete.
        forwarding = ForwardingSettings(self.gateway_mac)
        for key, (endpoint, port, programs) in wanted.items():
            chosen: dict[str, Program] = {}
            for d, program in programs.items():
                if program.owner in failed_programs:
                    log.error("workload endpoint %s: %s policy not installed", key, d)
                    out.statuses[key] = ERROR
                    previous = self._installed.get((key, d))
                    if previous is None:
                        sync.set_owner(key, blackhole_entries(endpoint))
                        break
                    program = previous
                chosen[d] = program
            if len(chosen) < len(DIRECTIONS):
                continue  # nothing safe to point at yet: leave the endpoint as it is
            try:
                entries = endpoint_entries(
                    endpoint, port, forwarding, chosen["egress"].id, chosen["ingress"].id
                )
            except CannotForward as exc:
                log.error("workload endpoint %s: %s", key, exc)
                sync.remove_owner(key)
                self._drop_installed(key)
                out.statuses[key] = ERROR
                continue
            sync.set_owner(key, entries)
            for d, program in chosen.items():
                self._install(key, d, program)
            out.statuses.setdefault(key, ERROR if key in invalid else UP)
        report = await sync.apply(FORWARDING_TABLES, deletes=False)
        self._count(report, out)
        for owner, reason in report.errors.items():
            if isinstance(owner, WorkloadEndpointKey) and owner in state.endpoints:
                log.error("workload endpoint %s not fully programmed: %s", owner, reason)
                out.statuses[owner] = ERROR

        # Phase C: release programs nothing points at, then write every remaining change.
        self._release_unused(wanted)
        self._set_classification()
        report = await sync.apply()
        self._count(report, out)
        self.services.release_unused()
        for owner in report.errors:
            if isinstance(owner, WorkloadEndpointKey) and owner in state.endpoints:
                out.statuses[owner] = ERROR
        if not self._recovered:
            self._recovered = True
            self.policy.drop_recovered()
            self._set_classification()
            self._count(await sync.apply(), out)
        out.retry = out.failed > 0 or any(s != UP for s in out.statuses.values())
        return out

    def _spec(
        self, endpoint: WorkloadEndpoint, direction: str, state: DataplaneState
    ) -> ProgramSpec:
        """The endpoint's program spec; endpoints with the same tiers and profiles share one,
        so it is built once per batch (the cache is emptied when policy changes)."""
        key = (endpoint.tiers, endpoint.profile_ids, endpoint.state == "active", direction)
        spec = self._specs.get(key)
        if spec is None:
            spec = program_spec(endpoint, direction, state.policies, state.profiles)
            self._specs[key] = spec
        return spec

    def _compile_services(self, state: DataplaneState) -> None:
        """Services whose object, slices or node context changed (all of them when the node's
        addresses did). Nothing until the Kubernetes source has listed everything once."""
        if not self.services_enabled or not state.services_synced:
            return
        keys = set(state.changes.services)
        if state.changes.node or not self._services_started:
            self._services_started = True
            keys |= set(state.kube_services) | set(state.felix_services) | set(state.slices_of)
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
                self.services.forget(key)
                continue
            self.sync.set_owner(
                owner, self.services.compile(service, state.service_slices(key), node)
            )

    def _count(self, report: ApplyReport, out: ApplyOutcome) -> None:
        out.written += report.written
        out.failed += report.failed

    def _install(self, key: WorkloadEndpointKey, direction: str, program: Program) -> None:
        previous = self._installed.get((key, direction))
        if previous is program:
            return
        if previous is not None:
            self._unuse(key, direction, previous)
        self._installed[(key, direction)] = program
        self._users.setdefault(program.owner, set()).add((key, direction))

    def _unuse(self, key: WorkloadEndpointKey, direction: str, program: Program) -> None:
        users = self._users.get(program.owner)
        if users is not None:
            users.discard((key, direction))
            if not users:
                del self._users[program.owner]
                self._candidates.add(program)

    def _drop_installed(self, key: WorkloadEndpointKey) -> None:
        for d in DIRECTIONS:
            program = self._installed.pop((key, d), None)
            if program is not None:
                self._unuse(key, d, program)

    def _release_unused(
        self, wanted: dict[WorkloadEndpointKey, tuple[WorkloadEndpoint, int, dict[str, Program]]]
    ) -> None:
        """Release programs that lost their last user in this apply (work follows the change:
        only programs touched by it are looked at)."""
        # A program just compiled for an endpoint that could not move to it yet stays, so the
        # retry does not recompile it.
        keep = {p.owner for _, _, programs in wanted.values() for p in programs.values()}
        for program in list(self._candidates):
            if program.owner in keep or self._users.get(program.owner):
                continue
            if self.policy.programs.get(program.spec) is program:
                self.sync.remove_owner(program.owner)
                self.policy.release(program)
        self._candidates = {
            p
            for _, _, programs in wanted.values()
            for p in programs.values()
            if not self._users.get(p.owner)
        }
