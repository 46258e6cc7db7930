"""Felix's network payloads into the model: host addresses in CIDR form (as Felix sends
HostMetadataV4V6Update), VTEPs per family, routes with their pool type and flags."""

import ipaddress

import pytest
from google.protobuf import json_format

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.convert import (
    apply_host_metadata_v4v6,
    apply_route_update,
    apply_vtep_update,
)
from felix_p4.model.state import POOL_VXLAN, REMOTE_WORKLOAD, DataplaneState
from felix_p4.model.values import InvalidObject


def _pb(kind, **fields):
    return json_format.ParseDict(fields, kind())


def test_host_addresses_come_in_cidr_form():
    state = DataplaneState()
    apply_host_metadata_v4v6(
        state,
        _pb(
            fb.HostMetadataV4V6Update,
            hostname="n2",
            ipv4_addr="192.168.1.11/24",
            ipv6_addr="fd00::11/64",
        ),
    )
    host = state.hosts["n2"]
    assert (host.ipv4, host.ipv6) == (
        ipaddress.ip_address("192.168.1.11"),
        ipaddress.ip_address("fd00::11"),
    )
    with pytest.raises(InvalidObject):
        apply_host_metadata_v4v6(
            state, _pb(fb.HostMetadataV4V6Update, hostname="n3", ipv4_addr="192.168.1.11/99")
        )


def test_a_vtep_and_a_route_keep_what_tunnels_need():
    state = DataplaneState()
    apply_vtep_update(
        state,
        _pb(
            fb.VXLANTunnelEndpointUpdate,
            node="n2",
            mac="66:00:00:00:00:0b",
            ipv4_addr="10.65.1.0",
            parent_device_ip="192.168.1.11",
        ),
    )
    vtep = state.vteps["n2"]
    assert vtep.mac == 0x66000000000B and str(vtep.parent) == "192.168.1.11"
    assert vtep.parent_v6 is None
    apply_route_update(
        state,
        _pb(
            fb.RouteUpdate,
            types="REMOTE_WORKLOAD",
            ip_pool_type="VXLAN",
            dst="10.65.1.0/26",
            dst_node_name="n2",
            dst_node_ip="192.168.1.11",
            same_subnet=True,
            borrowed=True,
        ),
    )
    route = state.routes[ipaddress.ip_network("10.65.1.0/26")]
    assert route.has(REMOTE_WORKLOAD) and route.pool_type == POOL_VXLAN
    assert route.same_subnet and route.borrowed
    with pytest.raises(InvalidObject):
        apply_vtep_update(state, _pb(fb.VXLANTunnelEndpointUpdate, node="n3", mac="nope"))
