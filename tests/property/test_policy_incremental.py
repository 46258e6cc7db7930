"""Any sequence of policy edits, IP-set changes and endpoint moves, applied incrementally by
the driver's dataplane over real P4Runtime, ends in the entries a from-scratch apply of the
final state gives (up to the choice of program ids and set bits, which are allocation order)."""

from __future__ import annotations

import asyncio

from canonical import canonical, device_entries
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_universe import HOST_PORT, POD_A, POD_B, endpoint, worlds

from felix_p4.dataplane import Dataplane
from felix_p4.dataplane.forwarding import NodeSettings
from felix_p4.felix.dispatch import PAYLOADS
from felix_p4.model.state import DataplaneState
from felix_p4.p4.artefacts import DEFAULT_P4INFO, ensure_pipeline, load_p4info
from felix_p4.p4.client import P4RuntimeClient
from felix_p4.p4.schema import PipelineSchema
from felix_p4.p4.sync import SyncEngine
from felix_p4.ports import PortResolver
from felix_p4.softswitch.service import start_target

P4INFO = load_p4info(DEFAULT_P4INFO)
SCHEMA = PipelineSchema(P4INFO)
PORTS = {POD_A[0]: POD_A[3], POD_B[0]: POD_B[3], "host": HOST_PORT}


def _touch(state: DataplaneState, payload: str) -> None:
    """Mark the managers the dispatch table says this payload drives."""
    state.changes.touched.update(PAYLOADS[payload].managers)


def load(state: DataplaneState, world: dict) -> None:
    """Bring the model to `world` through its own update methods, as Felix's messages do."""
    for key in set(state.policies) - set(world["policies"]):
        state.remove_policy(key)
        _touch(state, "active_policy_remove")
    for policy in world["policies"].values():
        state.upsert_policy(policy)
        _touch(state, "active_policy_update")
    for profile in world["profiles"].values():
        state.upsert_profile(profile)
        _touch(state, "active_profile_update")
    for ipset in world["ipsets"].values():
        state.upsert_ipset(ipset)
        _touch(state, "ipset_update")
    for pod in (POD_A, POD_B):
        ep = endpoint(pod, world)
        if world.get(f"drop-{pod[0]}"):
            if ep.key in state.endpoints:
                state.remove_endpoint(ep.key)
                _touch(state, "workload_endpoint_remove")
        else:
            state.upsert_endpoint(ep)
            _touch(state, "workload_endpoint_update")


def _in_sync() -> DataplaneState:
    state = DataplaneState()
    PAYLOADS["in_sync"].apply(state, None)  # type: ignore[misc]
    _touch(state, "in_sync")
    return state


async def _dataplane(address: str) -> tuple[Dataplane, P4RuntimeClient]:
    client = P4RuntimeClient(address, 1, 10)
    await client.connect()
    await ensure_pipeline(client, P4INFO, b"", push=True)
    sync = SyncEngine(SCHEMA, client)
    await sync.load_installed()
    dataplane = Dataplane(sync, PortResolver(PORTS), NodeSettings(0xEEEEEEEEEEEE, HOST_PORT))
    dataplane.recover()
    return dataplane, client


async def _run(history: list[dict]) -> tuple[set, set]:
    server, port, target = await start_target("127.0.0.1:0")
    fresh_server, fresh_port, fresh_target = await start_target("127.0.0.1:0")
    try:
        dataplane, client = await _dataplane(f"127.0.0.1:{port}")
        state = _in_sync()
        for world in history:
            load(state, world)
            await dataplane.apply(state, set())
        await client.close()

        dataplane, client = await _dataplane(f"127.0.0.1:{fresh_port}")
        scratch = _in_sync()
        load(scratch, history[-1])
        await dataplane.apply(scratch, set())
        await client.close()
        return canonical(device_entries(target)), canonical(device_entries(fresh_target))
    finally:
        await server.stop(None)
        await fresh_server.stop(None)


@settings(max_examples=60)
@given(
    st.lists(
        worlds().flatmap(
            lambda w: st.fixed_dictionaries(
                {"drop-cali-a": st.booleans(), "drop-cali-b": st.booleans()}
            ).map(lambda d: {**w, **d})
        ),
        min_size=2,
        max_size=4,
    )
)
def test_incremental_apply_equals_scratch(history):
    incremental, scratch = asyncio.run(_run(history))
    # Every program id and set bit on the device is accounted for by a program's anchor.
    assert "'?" not in repr(sorted(map(repr, incremental)))
    if not (history[-1]["drop-cali-a"] and history[-1]["drop-cali-b"]):
        assert any("_stage_" in entry[0] for entry in scratch)
    assert incremental == scratch
