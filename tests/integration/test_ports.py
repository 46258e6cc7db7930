"""Ports never collide silently: the static map's numbers are reserved, and two names with one
port are an error naming both (at start for the map; as the endpoint's status otherwise),
logged once per change."""

from __future__ import annotations

import asyncio
import io
import logging

import grpc
import pytest
from felix_harness import SNAPSHOT, embedded_target, endpoint_update, felix_driver, msg, wait_until

from felix_p4.dataplane import Dataplane
from felix_p4.dataplane.forwarding import NodeSettings
from felix_p4.felix.session import FelixSession
from felix_p4.model.state import DataplaneState
from felix_p4.p4.artefacts import DEFAULT_P4INFO, ensure_pipeline, load_p4info
from felix_p4.p4.client import P4RuntimeClient
from felix_p4.p4.schema import PipelineSchema
from felix_p4.p4.sync import SyncEngine
from felix_p4.ports import PortConflict, PortResolver, netlink_ifindex
from felix_p4.settings import ConfigError
from felix_p4.softswitch.client import TargetClient
from felix_p4.softswitch.service import start_target

IN_SYNC = msg(in_sync={})


def test_a_static_map_giving_one_port_twice_is_refused_naming_both():
    with pytest.raises(ConfigError, match="port 3 to both cali-a and cali-b"):
        PortResolver({"cali-a": 3, "cali-b": 3})


def test_a_source_port_that_is_another_names_is_a_conflict_until_forgotten():
    async def source(name: str, reserved: frozenset[int]) -> int | None:
        return {"cali-x": 7, "cali-y": 7}.get(name)

    async def main():
        resolver = PortResolver({"cali-a": 1}, [source])
        assert await resolver.resolve("cali-x") == 7
        with pytest.raises(
            PortConflict, match="cali-y resolves to port 7, which is already cali-x"
        ):
            await resolver.resolve("cali-y")
        resolver.forget("cali-x")
        assert await resolver.resolve("cali-y") == 7

    asyncio.run(main())


def test_static_ports_are_reserved_from_the_targets_automatic_numbers(tmp_path):
    # The case an operator hit: pods pinned to 1-3 and the host port left to the target.
    static = {"cali-a": 1, "cali-b": 2, "cali-c": 3}

    async def main():
        async with embedded_target() as (address, target):
            settings = {"ports": {"mode": "target", "map": static}}
            async with felix_driver(address, tmp_path, settings) as felix:
                await felix.send(
                    *SNAPSHOT,
                    endpoint_update("cali-c", "10.65.0.4/32", "0a:58:0a:41:00:04"),
                    IN_SYNC,
                )
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {
                    "default/cali-a": "up",
                    "default/cali-b": "up",
                    "default/cali-c": "up",
                }
                assert target.tables.entry_count("port_classify") == 4  # 3 pods and the host
                host = await TargetClient(grpc.aio.insecure_channel(address)).port_of("host")
                assert host not in static.values()

    asyncio.run(main())


def test_a_conflicting_endpoint_is_error_and_logged_once_per_change(caplog):
    """`lo` exists in every network namespace with ifindex 1, which the map gives cali-a."""

    async def main():
        server, port, _ = await start_target("127.0.0.1:0")
        try:
            client = P4RuntimeClient(f"127.0.0.1:{port}", 1, 10)
            await client.connect()
            info = load_p4info(DEFAULT_P4INFO)
            await ensure_pipeline(client, info, b"", push=True)
            sync = SyncEngine(PipelineSchema(info), client)
            ports = PortResolver({"cali-a": 1, "host": 100}, [netlink_ifindex])
            dataplane = Dataplane(sync, ports, NodeSettings(0xEEEEEEEEEEEE, 100))
            state = DataplaneState()
            session = FelixSession(state, io.BytesIO())
            for message in (
                *SNAPSHOT[:3],
                endpoint_update("lo", "10.65.0.9/32", "0a:58:0a:41:00:09"),
                IN_SYNC,
            ):
                session.handle_frame(message.SerializeToString())
            outcomes = []
            with caplog.at_level(logging.ERROR, logger="felix_p4.dataplane"):
                for _ in range(3):  # the first apply and two retries
                    outcomes.append(await dataplane.apply(state, set()))
            first = {str(k): v for k, v in outcomes[0].statuses.items()}
            assert first == {"k8s/default/cali-a/eth0": "up", "k8s/default/lo/eth0": "error"}
            assert all(o.retry for o in outcomes)
            lines = [r.getMessage() for r in caplog.records if "default/lo" in r.getMessage()]
            assert lines == [
                "workload endpoint k8s/default/lo/eth0: error, lo resolves to port 1, "
                "which is already cali-a's"
            ]
            await client.close()
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_a_restarted_target_gets_its_ports_back_and_new_names_get_free_ones(tmp_path):
    """Found by running a real Felix against the driver: after the embedded target restarted,
    a new pod was handed port 1, the host port's, and stayed `error`. The driver now gives the
    restarted target the ports its names hold, and asks for new ones avoiding them."""

    async def port_of(address: str, name: str) -> int:
        async with grpc.aio.insecure_channel(address) as channel:
            return await TargetClient(channel).port_of(name)

    async def main():
        server, port, target = await start_target("127.0.0.1:0")
        address = f"127.0.0.1:{port}"
        try:
            settings = {"ports": {"mode": "target", "map": {}}}
            async with felix_driver(address, tmp_path, settings) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                names = ("host", "cali-a", "cali-b")
                held = {name: await port_of(address, name) for name in names}
                assert len(set(held.values())) == 3
                count = target.tables.entry_count("port_classify")

                await server.stop(None)
                server, _, target = await start_target(address)
                await wait_until(
                    lambda: (
                        target.tables is not None
                        and target.tables.entry_count("port_classify") == count
                    ),
                    timeout=30,
                    what="the restarted target to be programmed again",
                )
                # A new pod, before anything else asks the restarted target for a port.
                await felix.send(endpoint_update("cali-c", "10.65.0.4/32", "0a:58:0a:41:00:04"))
                await felix.wait_for(lambda r: "default/cali-c" in felix.statuses())
                assert felix.statuses()["default/cali-c"] == "up"
                assert await port_of(address, "cali-c") not in held.values()
                # The restarted target knows the names by the numbers they had.
                assert {name: await port_of(address, name) for name in names} == held
        finally:
            await server.stop(None)

    asyncio.run(main())
