"""One apply: the managers compile what changed, the sync engine writes it in dependency order,
and every touched endpoint gets its resulting status.

Phases keep the device safe at every step: (A) IP-set classification, services and new policy
programs, (B) endpoints' forwarding entries pointing at programs that were fully installed,
(C) removal of what nothing references any more. An endpoint never points at a partly
installed program, and nothing is deleted before its replacement is in place.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs

from felix_p4 import metrics
from felix_p4.compile.forwarding import CannotForward
from felix_p4.compile.policy import POLICY_DIRECTIONS, CannotCompile, Program
from felix_p4.compile.routes import NodeNetwork
from felix_p4.dataplane.forwarding import ForwardingManager, NodeSettings
from felix_p4.dataplane.ipsets import IpSetManager
from felix_p4.dataplane.policy import PolicyManager, ProgramRefused
from felix_p4.dataplane.routes import RoutesManager
from felix_p4.dataplane.services import ServiceManager
from felix_p4.model.endpoints import WorkloadEndpoint, WorkloadEndpointKey
from felix_p4.model.policy import IPAddress
from felix_p4.model.state import DataplaneState
from felix_p4.model.status import DOWN, ERROR, UP
from felix_p4.neighbours import NextHops
from felix_p4.p4.sync import ApplyReport, Refused, SyncEngine
from felix_p4.pipeline import DEFAULT_AFFINITY_SECONDS, PIPELINE, Owner
from felix_p4.pipeline.entries import TableEntry
from felix_p4.ports import PortConflict, PortResolver

log = logging.getLogger(__name__)

FORWARDING_TABLES = frozenset(PIPELINE.owned_by(Owner.FORWARDING))
# Phase A writes everything the forwarding entries may point at.
EARLY_TABLES = frozenset(PIPELINE.write_order()) - FORWARDING_TABLES


@attrs.define
class ApplyOutcome:
    statuses: dict[WorkloadEndpointKey, str] = attrs.Factory(dict)
    removed: list[WorkloadEndpointKey] = attrs.Factory(list)
    # Why each endpoint in error is: (metric reason, text). The first found in an apply is
    # its reason (the root cause; later phases only see its consequences).
    reasons: dict[WorkloadEndpointKey, tuple[str, str]] = attrs.Factory(dict)
    retry: bool = False
    written: int = 0
    failed: int = 0


class Dataplane:
    """The managers over one sync engine; `apply` is called once per batch of changes."""

    def __init__(
        self,
        sync: SyncEngine,
        ports: PortResolver,
        node: NodeSettings,
        hairpin: dict[int, IPAddress] | None = None,
        services_enabled: bool = False,
        affinity_seconds: int = DEFAULT_AFFINITY_SECONDS,
        next_hops: NextHops | None = None,
        node_mac: Callable[[DataplaneState], Awaitable[int]] | None = None,
    ) -> None:
        self.sync = sync
        self.ipsets = IpSetManager(sync)
        self.policy = PolicyManager(sync, self.ipsets.classifier)
        self.forwarding = ForwardingManager(sync, ports, node)
        self.services = ServiceManager(sync, hairpin or {}, services_enabled, affinity_seconds)
        self._node_mac = node_mac
        self.routes = RoutesManager(
            sync, self._node_network, next_hops or NextHops({}, False, lambda: None)
        )
        # Endpoints not "up" are revisited at every apply until they are.
        self.not_up: set[WorkloadEndpointKey] = set()
        # Why each endpoint is not up, as last logged: a reason is logged once, not per retry;
        # the retries ending the same way are counted and the count logged with the next line.
        self._explained: dict[WorkloadEndpointKey, str] = {}
        self._repeats: dict[WorkloadEndpointKey, int] = {}
        # The outcome last counted per endpoint, (result, reason text): counted once per
        # change, like the log line (a retry refused up front for the room a roll-back
        # found missing is the same outcome, not a second refusal).
        self._counted: dict[WorkloadEndpointKey, tuple[str, str]] = {}
        self._recovered = False

    async def _node_network(self, state: DataplaneState) -> NodeNetwork:
        mac = await self._node_mac(state) if self._node_mac is not None else 0
        return NodeNetwork(
            await self.forwarding.host_port(), await self.forwarding.uplink_port(), mac
        )

    def recover(self) -> None:
        """Adopt allocations from what the device holds (after sync.load_installed)."""
        installed = list(self.sync.installed.values())
        self.policy.recover(e for e in installed if isinstance(e, TableEntry))
        self.services.recover(installed)

    async def apply(self, state: DataplaneState, invalid: set[WorkloadEndpointKey]) -> ApplyOutcome:
        out = ApplyOutcome()
        sync = self.sync
        changes = state.changes
        touched = changes.touched
        keys = set(self.not_up)
        if Owner.IPSETS in touched:
            self.ipsets.update(state, changes)
        if Owner.POLICY in touched:
            self.policy.update(state, changes)
            keys |= self.policy.affected(state, changes)
        if Owner.FORWARDING in touched:
            await self.forwarding.update(state, changes)
            keys |= self.forwarding.affected(changes)
        if Owner.SERVICES in touched or self.services.refused:
            self.services.update(state, changes)
        if Owner.ROUTES in touched:
            await self.routes.update(state, changes)
        changes.clear()
        # Felix's order: endpoints waiting for room are admitted first come, first served.
        order = state.endpoint_order
        ordered = sorted(keys, key=lambda k: (order.get(k, len(order)), k))

        # Phase A: programs the endpoints now need, and their classification entries.
        wanted: dict[WorkloadEndpointKey, tuple[WorkloadEndpoint, int, dict[str, Program]]] = {}
        for key in ordered:
            endpoint = state.endpoints.get(key)
            if endpoint is None:
                self.forwarding.forget(key)
                self.policy.forget(key)
                if key in invalid:
                    out.statuses[key] = ERROR  # never had a valid version to program
                else:
                    out.removed.append(key)
                continue
            try:
                port = await self.forwarding.port_of(endpoint)
            except PortConflict as exc:
                self._error(out, key, str(exc), metrics.CONFLICT)
                self.forwarding.remove(key)
                self.policy.forget(key)
                continue
            if port is None:
                self.forwarding.remove(key)
                self.policy.forget(key)
                out.statuses[key] = DOWN
                continue
            try:
                programs = self.policy.programs_for(endpoint, state)
            except CannotCompile as exc:
                cause = exc.reason if isinstance(exc, ProgramRefused) else metrics.UNSUPPORTED
                self._error(out, key, str(exc), cause)
                if not self.policy.has_installed(key):
                    self.forwarding.blackhole(endpoint)
                continue
            wanted[key] = (endpoint, port, programs)
        self.ipsets.flush()
        report = await sync.apply(EARLY_TABLES, deletes=False)
        self._count(report, out)
        self._roll_back(report, state, out)
        failed_programs = {
            o: reason
            for o, reason in report.errors.items()
            if isinstance(o, tuple) and o[0] == "program"
        }
        failed_causes = {o: report.causes.get(o, metrics.WRITE_FAILED) for o in failed_programs}

        # Phase B: endpoints move to their new programs if those are complete.
        for key, (endpoint, port, programs) in wanted.items():
            chosen: dict[str, Program] = {}
            for d, program in programs.items():
                if program.owner in failed_programs:
                    cause = failed_causes.get(program.owner, metrics.WRITE_FAILED)
                    self._error(out, key, f"{d} policy: {failed_programs[program.owner]}", cause)
                    previous = self.policy.previous(key, d)
                    if previous is None:
                        self.forwarding.blackhole(endpoint)
                        break
                    program = previous
                chosen[d] = program
            if len(chosen) < len(POLICY_DIRECTIONS):
                continue  # nothing safe to point at yet: leave the endpoint as it is
            try:
                self.forwarding.program(endpoint, port, chosen["egress"].id, chosen["ingress"].id)
            except CannotForward as exc:
                self._error(out, key, str(exc), metrics.INVALID)
                self.forwarding.remove(key)
                self.policy.forget(key)
                continue
            except Refused as exc:
                # Not written at all (an earlier version, if admitted, stays as it was).
                self._error(out, key, str(exc), exc.reason)
                continue
            for d, program in chosen.items():
                self.policy.install(key, d, program)
            missing = self.policy.missing(endpoint, state)
            if missing:
                # It denies what they would decide (safe), but is not what Felix asked for.
                self._error(
                    out,
                    key,
                    f"refers to {', '.join(missing)}, not sent by Felix",
                    metrics.MISSING_OBJECT,
                )
            elif key in invalid:
                out.statuses.setdefault(key, ERROR)
            else:
                out.statuses.setdefault(key, UP)
        report = await sync.apply(FORWARDING_TABLES, deletes=False)
        self._count(report, out)
        self._roll_back(report, state, out)
        self._errors(report, state, out)

        # Phase C: release programs nothing points at, then write every remaining change
        # (including the removal of whatever was rolled back), until nothing more is refused.
        self.policy.release_unused(p for _, _, ps in wanted.values() for p in ps.values())
        self.ipsets.flush()
        for _ in range(3):
            report = await sync.apply()
            self._count(report, out)
            if not self._roll_back(report, state, out):
                break
        self.services.applied()
        self._errors(report, state, out)
        if not self._recovered:
            self._recovered = True
            self.policy.drop_recovered()
            self.ipsets.flush()
            self._count(await sync.apply(), out)
        for key, status in out.statuses.items():
            if status == UP:
                self.not_up.discard(key)
                self._count_outcome(key, "admitted", metrics.ADMITTED, "")
                if self._explained.pop(key, None) is not None:
                    log.info("workload endpoint %s: up%s", key, self._suppressed(key))
            else:
                self.not_up.add(key)
                if status == ERROR:
                    # Invalid input has no reason here: it was logged where it was rejected.
                    cause, reason = out.reasons.get(key, (metrics.INVALID, ""))
                    self._count_outcome(key, "refused", cause, reason)
                    if reason:
                        self._explain(key, reason)
        self.not_up.difference_update(out.removed)
        for key in out.removed:
            self._explained.pop(key, None)
            self._repeats.pop(key, None)
            self._counted.pop(key, None)
        self._gauges()
        out.retry = out.failed > 0 or bool(self.not_up) or bool(self.services.refused)
        return out

    def _roll_back(self, report: ApplyReport, state: DataplaneState, out: ApplyOutcome) -> bool:
        """Objects the device refused room for (it is smaller than declared): nothing of them
        may stay, so their claims go and the next write removes what did get in."""
        for owner in report.exhausted:
            reason = report.errors.get(owner, "device full")
            if isinstance(owner, WorkloadEndpointKey):
                self.forwarding.remove(owner)
                self.policy.forget(owner)
                if owner in state.endpoints:
                    self._error(out, owner, reason, metrics.DEVICE_SMALLER)
            elif isinstance(owner, tuple) and owner[0] == "program":
                self.policy.drop(owner, reason)
            elif isinstance(owner, tuple) and owner[0] == "service":
                self.services.refuse(owner[1], reason, metrics.DEVICE_SMALLER)
        return bool(report.exhausted)

    def _error(self, out: ApplyOutcome, key: WorkloadEndpointKey, reason: str, cause: str) -> None:
        """The endpoint is in error this apply; the first reason found is the one reported."""
        out.statuses[key] = ERROR
        out.reasons.setdefault(key, (cause, reason))

    def _errors(self, report: ApplyReport, state: DataplaneState, out: ApplyOutcome) -> None:
        """Endpoints with entries the device did not take as desired."""
        for owner, reason in report.errors.items():
            if isinstance(owner, WorkloadEndpointKey) and owner in state.endpoints:
                cause = report.causes.get(owner, metrics.WRITE_FAILED)
                self._error(out, owner, f"not fully programmed: {reason}", cause)

    def _count_outcome(self, key: WorkloadEndpointKey, result: str, cause: str, text: str) -> None:
        if self._counted.get(key) != (result, text):
            self._counted[key] = (result, text)
            metrics.ADMISSIONS.labels("endpoint", result, cause).inc()

    def _gauges(self) -> None:
        for table, capacity in self.sync.capacity.items():
            metrics.CAPACITY.labels(table).set(capacity)
            metrics.OCCUPANCY.labels(table).set(self.sync.occupied[table])

    def _explain(self, key: WorkloadEndpointKey, reason: str) -> None:
        """Log why an endpoint is in error, once per reason (it is retried every second);
        a retry ending the same way is counted, and the count logged with the next change."""
        if self._explained.get(key) == reason:
            self._repeats[key] = self._repeats.get(key, 0) + 1
            metrics.REPEATS.labels("endpoint").inc()
            return
        suppressed = self._suppressed(key)
        self._explained[key] = reason
        log.error("workload endpoint %s: error, %s%s", key, reason, suppressed)

    def _suppressed(self, key: WorkloadEndpointKey) -> str:
        """ " (N repeats suppressed)" for the reason last logged, if it repeated; resets it."""
        repeats = self._repeats.pop(key, 0)
        if not repeats:
            return ""
        return f" ({repeats} repeat{'' if repeats == 1 else 's'} suppressed)"

    def _count(self, report: ApplyReport, out: ApplyOutcome) -> None:
        out.written += report.written
        out.failed += report.failed
