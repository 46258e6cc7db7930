"""Work follows the change: a payload runs only the managers the dispatch table names for it.

Felix's payloads enter through the Felix session (the real dispatch path); the dataplane
applies over real P4Runtime to an embedded target and the target's write count is the measure.
"""

from __future__ import annotations

import asyncio
import io

import attrs
from felix_harness import SNAPSHOT, msg

from felix_p4.dataplane import Dataplane
from felix_p4.dataplane.forwarding import NodeSettings
from felix_p4.felix.session import FelixSession
from felix_p4.k8s.convert import endpoint_slice_from_k8s, service_from_k8s
from felix_p4.model.services import ServiceKey, ServicePort
from felix_p4.model.state import DataplaneState
from felix_p4.p4.artefacts import DEFAULT_P4INFO, ensure_pipeline, load_p4info
from felix_p4.p4.client import P4RuntimeClient
from felix_p4.p4.schema import PipelineSchema
from felix_p4.p4.sync import SyncEngine
from felix_p4.pipeline import Owner
from felix_p4.ports import PortResolver
from felix_p4.softswitch.service import start_target

P4INFO = load_p4info(DEFAULT_P4INFO)
PORTS = {"cali-a": 1, "cali-b": 2, "host": 100}
WEB = ServiceKey("default", "web")

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
}
SLICE = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "addressType": "IPv4",
    "metadata": {
        "name": "web-1",
        "namespace": "default",
        "labels": {"kubernetes.io/service-name": "web"},
    },
    "endpoints": [{"addresses": ["10.65.0.3"], "nodeName": "node-1"}],
    "ports": [{"name": "http", "port": 8080}],
}

SCHEMA = PipelineSchema(P4INFO)
LATER = {
    "route_update": msg(
        route_update={
            "types": "REMOTE_WORKLOAD",
            "dst": "10.65.1.0/26",
            "dst_node_name": "node-2",
            "dst_node_ip": "192.168.0.2",
        }
    ),
    "route_remove": msg(route_remove={"dst": "10.65.1.0/26"}),
    "ipam_pool_update": msg(
        ipam_pool_update={"id": "pool-1", "pool": {"cidr": "10.65.0.0/16", "masquerade": True}}
    ),
    "ipam_pool_remove": msg(ipam_pool_remove={"id": "pool-1"}),
    "host_metadata_update": msg(
        host_metadata_update={"hostname": "node-2", "ipv4_addr": "192.168.0.2"}
    ),
}


async def _dataplane(address: str) -> tuple[Dataplane, P4RuntimeClient]:
    client = P4RuntimeClient(address, 1, 10)
    await client.connect()
    await ensure_pipeline(client, P4INFO, b"", push=True)
    sync = SyncEngine(PipelineSchema(P4INFO), client)
    await sync.load_installed()
    dataplane = Dataplane(
        sync, PortResolver(PORTS), NodeSettings(0xEEEEEEEEEEEE, 100), services_enabled=True
    )
    dataplane.recover()
    return dataplane, client


def _feed(session: FelixSession, *messages) -> None:
    for message in messages:
        session.handle_frame(message.SerializeToString())


def _snapshot(state: DataplaneState, session: FelixSession) -> None:
    _feed(session, *SNAPSHOT, msg(in_sync={}))
    state.upsert_kube_service(service_from_k8s(SERVICE))
    state.upsert_slice(endpoint_slice_from_k8s(SLICE))  # type: ignore[arg-type]
    state.services_synced = True
    state.changes.touched.add(Owner.SERVICES)


def test_route_and_pool_updates_touch_no_service_entry():
    async def main():
        server, port, target = await start_target("127.0.0.1:0")
        try:
            dataplane, client = await _dataplane(f"127.0.0.1:{port}")
            state = DataplaneState()
            session = FelixSession(state, io.BytesIO())
            _snapshot(state, session)
            await dataplane.apply(state, set())
            assert target.tables.entry_count("services") == 1
            # The service changes in the model without the change being announced: only a
            # manager that recompiles services for no reason would write it now.
            service = state.kube_services[WEB]
            state.kube_services[WEB] = attrs.evolve(
                service, ports=(*service.ports, ServicePort("https", 6, 443))
            )
            services = SCHEMA.table_id("services")
            for name, message in LATER.items():
                before = await client.read_table_entries([services])
                _feed(session, message)
                assert state.changes.touched <= {Owner.ROUTES, Owner.SERVICES}, name
                await dataplane.apply(state, set())
                assert await client.read_table_entries([services]) == before, name
            # (Another node's address is a source IP-in-IP may come from: that one entry.)
            assert target.tables.entry_count("tunnel_sources") == 1
            # This node's own address is where NodePorts listen: that does recompile services
            # (and so writes the change above), as it must.
            _feed(
                session,
                msg(host_metadata_update={"hostname": "node-1", "ipv4_addr": "192.168.0.1"}),
            )
            await dataplane.apply(state, set())
            assert target.tables.entry_count("services") == 2
            await client.close()
        finally:
            await server.stop(None)

    asyncio.run(main())
