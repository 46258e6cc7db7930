"""Service manager: Kubernetes Services and their EndpointSlices into front ends and backends."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from felix_p4 import metrics
from felix_p4.compile.services import NodeContext, ServiceCompiler, TooManyBackends
from felix_p4.model.policy import IPAddress
from felix_p4.model.services import ServiceKey
from felix_p4.model.state import Changes, DataplaneState
from felix_p4.p4.sync import Refused, SyncEngine
from felix_p4.pipeline import DEFAULT_AFFINITY_SECONDS, Owner
from felix_p4.pipeline.entries import Entity

log = logging.getLogger(__name__)


class ServiceManager:
    """Compiles the services whose object, slices or node context changed.

    Nothing is compiled until the Kubernetes source has listed everything once, so the first
    apply never removes a service just because its object had not arrived yet.
    """

    name = Owner.SERVICES

    def __init__(
        self,
        sync: SyncEngine,
        hairpin: dict[int, IPAddress],
        enabled: bool,
        affinity_seconds: int = DEFAULT_AFFINITY_SECONDS,
    ) -> None:
        self.sync = sync
        self.hairpin = hairpin
        self.enabled = enabled
        self.affinity_seconds = affinity_seconds
        # Services whose ClientIP timeout the target cannot honour, as last warned about.
        self._timeout_warned: dict[ServiceKey, int] = {}
        self.compiler = ServiceCompiler()
        self._started = False
        # Services that did not fit, with why (logged once), retried at every apply.
        self.refused: dict[ServiceKey, str] = {}
        # Services whose entities are claimed (counted as admitted once, not per update).
        self._admitted: set[ServiceKey] = set()

    def recover(self, installed: Sequence[Entity]) -> None:
        self.compiler.recover(installed)

    def update(self, state: DataplaneState, changes: Changes) -> None:
        if not self.enabled or not state.services_synced:
            return
        keys = set(changes.services) | set(self.refused)
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
                self._timeout_warned.pop(key, None)
                self._admitted.discard(key)
                self.refused.pop(key, None)
                continue
            self._check_timeout(key, service.affinity_seconds)
            try:
                entities = self.compiler.compile(service, state.service_slices(key), node)
                self.sync.admit(owner, entities)
            except Refused as exc:
                self.refuse(key, str(exc), exc.reason)
                continue
            except TooManyBackends as exc:
                self.refuse(key, str(exc), metrics.UNSUPPORTED)
                continue
            self.sync.set_owner(owner, entities)
            if self.refused.pop(key, None) is not None:
                log.info("service %s: admitted", key)
            if key not in self._admitted:
                self._admitted.add(key)
                metrics.ADMISSIONS.labels("service", "admitted", metrics.ADMITTED).inc()

    def _check_timeout(self, key: ServiceKey, seconds: int | None) -> None:
        if not seconds or seconds == self.affinity_seconds:
            self._timeout_warned.pop(key, None)
            return
        if self._timeout_warned.get(key) != seconds:
            log.warning(
                "service %s: ClientIP affinity lasts %d s on this target, not the %d s the "
                "Service asks for (one timeout for all services: services.affinity_seconds, "
                "with the target's affinity profile set to match)",
                key,
                self.affinity_seconds,
                seconds,
            )
        self._timeout_warned[key] = seconds

    def refuse(self, key: ServiceKey, reason: str, cause: str) -> None:
        """Nothing of the service stays on the device; it is tried again at the next apply."""
        self.sync.remove_owner(("service", key))
        self.compiler.forget(key)
        self._admitted.discard(key)
        if self.refused.get(key) != reason:
            log.error("service %s: not programmed, %s", key, reason)
            metrics.ADMISSIONS.labels("service", "refused", cause).inc()
        else:
            metrics.REPEATS.labels("service").inc()
        self.refused[key] = reason

    def applied(self) -> None:
        """Free ids no service uses any more (after the apply that removed their entities)."""
        self.compiler.release_unused()
