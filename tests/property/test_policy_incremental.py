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
from felix_p4.model.state import DataplaneState
from felix_p4.p4.client import P4RuntimeClient
from felix_p4.p4.pipeline import DEFAULT_P4INFO, ensure_pipeline
from felix_p4.p4.schema import PipelineSchema, load_p4info
from felix_p4.p4.sync import SyncEngine
from felix_p4.ports import PortResolver
from felix_p4.target.service import start_target

P4INFO = load_p4info(DEFAULT_P4INFO)
SCHEMA = PipelineSchema(P4INFO)
PORTS = {POD_A[0]: POD_A[3], POD_B[0]: POD_B[3], "host": HOST_PORT}


def load(state: DataplaneState, world: dict) -> None:
    """Bring the model to `world` the way Felix's messages would."""
    for key in set(state.policies) - set(world["policies"]):
        del state.policies[key]
        state.changes.policies.add(key)
    for key, policy in world["policies"].items():
        if state.policies.get(key) != policy:
            state.policies[key] = policy
            state.changes.policies.add(key)
    for pid, profile in world["profiles"].items():
        if state.profiles.get(pid) != profile:
            state.profiles[pid] = profile
            state.changes.profiles.add(pid)
    for sid, ipset in world["ipsets"].items():
        if state.ipsets.get(sid) != ipset:
            state.ipsets[sid] = ipset
            state.changes.ipsets.add(sid)
    for pod in (POD_A, POD_B):
        ep = endpoint(pod, world)
        if world.get(f"drop-{pod[0]}"):
            if state.endpoints.pop(ep.key, None) is not None:
                state.changes.endpoints.add(ep.key)
        elif state.endpoints.get(ep.key) != ep:
            state.endpoints[ep.key] = ep
            state.changes.endpoints.add(ep.key)


async def _dataplane(address: str) -> tuple[Dataplane, P4RuntimeClient]:
    client = P4RuntimeClient(address, 1, 10)
    await client.connect()
    await ensure_pipeline(client, P4INFO, b"", push=True)
    sync = SyncEngine(SCHEMA, client, unmanaged=("conntrack",))
    await sync.load_installed()
    dataplane = Dataplane(sync, PortResolver(PORTS), 0xEEEEEEEEEEEE, HOST_PORT)
    dataplane.recover()
    return dataplane, client


async def _run(history: list[dict]) -> tuple[set, set]:
    server, port, target = await start_target("127.0.0.1:0")
    fresh_server, fresh_port, fresh_target = await start_target("127.0.0.1:0")
    try:
        dataplane, client = await _dataplane(f"127.0.0.1:{port}")
        state = DataplaneState(in_sync=True)
        state.changes.node = True
        for world in history:
            load(state, world)
            await dataplane.apply(state, set(), set())
        await client.close()

        dataplane, client = await _dataplane(f"127.0.0.1:{fresh_port}")
        scratch = DataplaneState(in_sync=True)
        scratch.changes.node = True
        load(scratch, history[-1])
        await dataplane.apply(scratch, set(), set())
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
