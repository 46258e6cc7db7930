"""Compile time per concern, measured in this process on the generated model (the driver does
not report it): Felix input, policy programs, IP-set classification, forwarding, services,
P4Runtime encoding and the sync engine's plan."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from bench.generate import Workload
from felix_p4.compile.forwarding import ForwardingSettings, endpoint_entries, node_entries
from felix_p4.compile.ipsets import Classifier
from felix_p4.compile.policy import POLICY_DIRECTIONS, SET_BITS, PolicyCompiler, program_spec
from felix_p4.compile.services import NodeContext, ServiceCompiler
from felix_p4.driver import apply_kube_event
from felix_p4.felix.session import FelixSession
from felix_p4.felix.wire import encode_frame
from felix_p4.k8s.source import KubeEvent
from felix_p4.model.state import DataplaneState
from felix_p4.model.values import parse_mac
from felix_p4.p4.artefacts import load_pipeline
from felix_p4.p4.client import P4RuntimeClient
from felix_p4.p4.schema import PipelineSchema
from felix_p4.p4.sync import SyncEngine
from felix_p4.pipeline.entries import Entity
from felix_p4.settings import load_settings

T = TypeVar("T")


def _timed(figures: dict[str, float], name: str, work: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = work()
    figures[name] = time.perf_counter() - started
    return result


def compile_times(
    workload: Workload, config_path: Path, entities_out: list[Entity] | None = None
) -> dict[str, Any]:
    """Seconds per concern for the whole snapshot, and what each produced; `entities_out`
    receives the compiled entities (bench/encoding.py times their encoding)."""
    settings = load_settings(env={}, path=str(config_path))
    seconds: dict[str, float] = {}
    frames = [encode_frame(m)[8:] for m in workload.snapshot]
    state = DataplaneState()
    # Frames are handed over directly; status frames would go to /dev/null.
    with open(os.devnull, "wb") as devnull:
        session = FelixSession(state, devnull)

        def felix_input() -> None:
            for body in frames:
                session.handle_frame(body)

        _timed(seconds, "felix_input", felix_input)

    def kube_input() -> None:
        for obj in workload.kubernetes:
            apply_kube_event(state, KubeEvent("ADDED", str(obj["kind"]), obj))
        state.services_synced = True

    _timed(seconds, "services_input", kube_input)

    p4info, _ = load_pipeline(settings.pipeline)
    schema = PipelineSchema(p4info)
    policy = PolicyCompiler(Classifier(SET_BITS))
    endpoints = sorted(state.endpoints.items())

    def programs() -> dict[Hashable, dict[str, Any]]:
        return {
            key: {
                d: policy.ensure(
                    program_spec(endpoint, d, state.policies, state.profiles), state.ipsets.get
                )
                for d in POLICY_DIRECTIONS
            }
            for key, endpoint in endpoints
        }

    chosen = _timed(seconds, "policy", programs)
    classifier = policy.classifier

    def classification() -> dict[Hashable, list[Entity]]:
        return {owner: list(classifier.entries_for(owner)) for owner in classifier.changed}

    owners: dict[Hashable, list[Entity]] = _timed(seconds, "ipsets", classification)
    program_entries: dict[Hashable, list[Entity]] = {
        p.owner: list(p.entries) for p in policy.programs.values()
    }
    gateway = parse_mac(settings.forwarding.gateway_mac)

    def forwarding() -> dict[Hashable, list[Entity]]:
        forward = ForwardingSettings(gateway)
        out: dict[Hashable, list[Entity]] = {
            "node": list(node_entries(ForwardingSettings(gateway, 1)))
        }
        for key, endpoint in endpoints:
            port = workload.ports[endpoint.name]
            ids = chosen[key]
            out[key] = list(
                endpoint_entries(endpoint, port, forward, ids["egress"].id, ids["ingress"].id)
            )
        return out

    endpoint_owners = _timed(seconds, "forwarding", forwarding)
    host = state.hosts.get(state.config.hostname)
    node = NodeContext(
        state.config.hostname,
        tuple(a for a in (host.ipv4, host.ipv6) if a is not None) if host else (),
        {},
    )
    services = ServiceCompiler()

    def service_entries() -> dict[Hashable, list[Entity]]:
        return {
            ("service", key): services.compile(
                state.service(key),  # type: ignore[arg-type]
                state.service_slices(key),
                node,
            )
            for key in sorted(state.kube_services)
        }

    service_owners = _timed(seconds, "services", service_entries)
    everything: dict[Hashable, list[Entity]] = {
        **owners,
        **program_entries,
        **endpoint_owners,
        **service_owners,
    }
    entities = [e for entries in everything.values() for e in entries]
    if entities_out is not None:
        entities_out.extend(entities)
    _timed(seconds, "encode", lambda: [schema.encode_entity(e) for e in entities])
    sync = SyncEngine(schema, P4RuntimeClient("127.0.0.1:1", 1, 1), 1000)

    def plan() -> int:
        for owner, entries in everything.items():
            sync.set_owner(owner, entries)
        return len(sync.plan())

    operations = _timed(seconds, "sync_plan", plan)
    return {
        "seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "programs": len(policy.programs),
        "program_entries": sum(len(v) for v in program_entries.values()),
        "classification_entries": sum(len(v) for v in owners.values()),
        "forwarding_entries": sum(len(v) for v in endpoint_owners.values()),
        "service_entities": sum(len(v) for v in service_owners.values()),
        "operations": operations,
    }
