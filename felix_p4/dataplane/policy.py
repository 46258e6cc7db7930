"""Policy manager: endpoints' tiers and profiles into shared policy programs, and who uses each."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable

from felix_p4 import metrics
from felix_p4.compile.ipsets import Classifier
from felix_p4.compile.policy import (
    POLICY_DIRECTIONS,
    CannotCompile,
    PolicyCompiler,
    Program,
    ProgramSpec,
    program_spec,
)
from felix_p4.model.endpoints import WorkloadEndpoint, WorkloadEndpointKey
from felix_p4.model.state import Changes, DataplaneState
from felix_p4.p4.sync import Refused, SyncEngine
from felix_p4.pipeline import Owner
from felix_p4.pipeline.entries import TableEntry

log = logging.getLogger(__name__)

Use = tuple[WorkloadEndpointKey, str]  # an endpoint and a direction


class ProgramRefused(CannotCompile):
    """A program whose entries do not fit; `reason` in the metrics' vocabulary."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PolicyManager:
    """Programs are shared by content; an endpoint moves to a new program only once it is
    fully installed, and a program is removed once no installed endpoint points at it."""

    name = Owner.POLICY

    def __init__(self, sync: SyncEngine, classifier: Classifier) -> None:
        self.sync = sync
        self.compiler = PolicyCompiler(classifier)
        # The program each endpoint's installed forwarding entries point at, per direction.
        self._installed: dict[Use, Program] = {}
        self._users: dict[Hashable, set[Use]] = {}
        # Programs that may have lost their last user during the current apply.
        self._candidates: set[Program] = set()
        self._specs: dict[tuple[object, ...], ProgramSpec] = {}
        # Programs refused room, with why as last counted; kept while an endpoint still asks
        # for them, so a retry every second is not counted again.
        self._refused: dict[ProgramSpec, str] = {}
        self._asked: set[ProgramSpec] = set()

    def recover(self, installed: Iterable[TableEntry]) -> None:
        self.compiler.recover(installed)

    def update(self, state: DataplaneState, changes: Changes) -> None:
        if changes.policies or changes.profiles:
            self._specs.clear()

    def affected(self, state: DataplaneState, changes: Changes) -> set[WorkloadEndpointKey]:
        """Endpoints whose programs a policy or profile change may alter."""
        keys: set[WorkloadEndpointKey] = set()
        if not (changes.policies or changes.profiles):
            return keys
        for key, endpoint in state.endpoints.items():
            if changes.profiles.intersection(endpoint.profile_ids) or any(
                changes.policies.intersection(t.ingress_policies + t.egress_policies)
                for t in endpoint.tiers
            ):
                keys.add(key)
        return keys

    def programs_for(self, endpoint: WorkloadEndpoint, state: DataplaneState) -> dict[str, Program]:
        """The endpoint's program per direction, compiled and handed to the sync engine if new.
        Raises CannotCompile when the pipeline cannot hold one (nothing of it is kept)."""
        programs = {
            d: self.compiler.ensure(self._spec(endpoint, d, state), state.ipsets.get)
            for d in POLICY_DIRECTIONS
        }
        for program in programs.values():
            if program.registered:
                continue
            try:
                self.sync.admit(program.owner, program.entries)
            except Refused as exc:
                for p in programs.values():
                    if not p.registered and self.compiler.programs.get(p.spec) is p:
                        self.compiler.release(p)
                self._refuse(program.spec, str(exc), exc.reason)
                raise ProgramRefused(
                    f"{program.spec.direction} policy: {exc}", exc.reason
                ) from None
        for program in programs.values():
            if not program.registered:
                program.registered = True
                self.sync.set_owner(program.owner, program.entries)
                self._refused.pop(program.spec, None)
                metrics.ADMISSIONS.labels("program", "admitted", metrics.ADMITTED).inc()
        return programs

    def _refuse(self, spec: ProgramSpec, reason: str, cause: str) -> None:
        """Count a program refused room, once per reason while it is asked for again."""
        self._asked.add(spec)
        if self._refused.get(spec) != reason:
            self._refused[spec] = reason
            metrics.ADMISSIONS.labels("program", "refused", cause).inc()
            log.debug("%s policy program refused: %s", spec.direction, reason)

    def drop(self, owner: Hashable, reason: str) -> None:
        """A program the device refused part of: remove it (its endpoints keep their previous
        programs); it is compiled again, and admitted or refused, at the next attempt."""
        for program in list(self.compiler.programs.values()):
            if program.owner == owner and not self._users.get(owner):
                self.sync.remove_owner(owner)
                self.compiler.release(program)
                self._refuse(program.spec, reason, metrics.DEVICE_SMALLER)

    @staticmethod
    def missing(endpoint: WorkloadEndpoint, state: DataplaneState) -> list[str]:
        """Policies and profiles the endpoint names that Felix has not sent (they add no
        rules, so the endpoint denies what they would have decided)."""
        out = [
            f"policy {key}"
            for tier in endpoint.tiers
            for key in dict.fromkeys((*tier.ingress_policies, *tier.egress_policies))
            if not key.staged and key not in state.policies
        ]
        out += [f"profile {p}" for p in endpoint.profile_ids if p not in state.profiles]
        return out

    def _spec(
        self, endpoint: WorkloadEndpoint, direction: str, state: DataplaneState
    ) -> ProgramSpec:
        """Endpoints with the same tiers and profiles share one spec, built once per batch
        (the cache is emptied when policy changes)."""
        key = (endpoint.tiers, endpoint.profile_ids, endpoint.state == "active", direction)
        spec = self._specs.get(key)
        if spec is None:
            spec = program_spec(endpoint, direction, state.policies, state.profiles)
            self._specs[key] = spec
        return spec

    def previous(self, key: WorkloadEndpointKey, direction: str) -> Program | None:
        return self._installed.get((key, direction))

    def has_installed(self, key: WorkloadEndpointKey) -> bool:
        return any((key, d) in self._installed for d in POLICY_DIRECTIONS)

    def install(self, key: WorkloadEndpointKey, direction: str, program: Program) -> None:
        """The endpoint's forwarding entries now point at `program`."""
        previous = self._installed.get((key, direction))
        if previous is program:
            return
        if previous is not None:
            self._unuse(key, direction, previous)
        self._installed[(key, direction)] = program
        self._users.setdefault(program.owner, set()).add((key, direction))

    def forget(self, key: WorkloadEndpointKey) -> None:
        """The endpoint no longer points at any program."""
        for d in POLICY_DIRECTIONS:
            program = self._installed.pop((key, d), None)
            if program is not None:
                self._unuse(key, d, program)

    def _unuse(self, key: WorkloadEndpointKey, direction: str, program: Program) -> None:
        users = self._users.get(program.owner)
        if users is not None:
            users.discard((key, direction))
            if not users:
                del self._users[program.owner]
                self._candidates.add(program)

    def release_unused(self, wanted: Iterable[Program]) -> None:
        """Release programs that lost their last user in this apply (work follows the change:
        only programs touched by it are looked at). A program just compiled for an endpoint
        that could not move to it yet stays, so the retry does not recompile it."""
        wanted = list(wanted)
        keep = {p.owner for p in wanted}
        for program in list(self._candidates):
            if program.owner in keep or self._users.get(program.owner):
                continue
            if self.compiler.programs.get(program.spec) is program:
                self.sync.remove_owner(program.owner)
                self.compiler.release(program)
        self._candidates = {p for p in wanted if not self._users.get(p.owner)}
        # Refusals of programs no endpoint asked for in this apply are forgotten.
        self._refused = {s: r for s, r in self._refused.items() if s in self._asked}
        self._asked = set()

    def drop_recovered(self) -> None:
        self.compiler.drop_recovered()
