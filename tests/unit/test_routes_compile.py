"""Felix's routes into pipeline routes: VXLAN to the node's VTEP, IP-in-IP to its host address,
no-encap and CrossSubnet-in-subnet to the node, blackholes for this node's blocks, this node's
tunnel address to the host; next hops only where their MAC is known; tunnel sources."""

import ipaddress

from felix_p4.compile.routes import NodeNetwork, compile_routes
from felix_p4.compile.tunnels import ipv4_header_seed
from felix_p4.model.felix_config import FelixConfig
from felix_p4.model.state import (
    LOCAL_TUNNEL,
    LOCAL_WORKLOAD,
    POOL_IPIP,
    POOL_NO_ENCAP,
    POOL_VXLAN,
    REMOTE_HOST,
    REMOTE_TUNNEL,
    REMOTE_WORKLOAD,
    DataplaneState,
    HostAddresses,
    Route,
    Vtep,
)

ME, OTHER = "node-1", "node-2"
NODE = NodeNetwork(host_port=100, uplink_port=101, node_mac=0x02000000000A)
IP = ipaddress.ip_address


def _state(*routes: Route, external: str = "") -> DataplaneState:
    state = DataplaneState()
    config = {"FelixHostname": ME}
    if external:
        config["ExternalNodesCIDRList"] = external
    state.set_config(FelixConfig.from_map(config))
    state.set_host(HostAddresses(ME, IP("192.168.1.10"), IP("fd00::10")))
    state.set_host(HostAddresses(OTHER, IP("192.168.1.11"), None))
    state.upsert_vtep(Vtep(ME, 0x66000000000A, IP("10.65.0.0"), IP("192.168.1.10")))
    state.upsert_vtep(Vtep(OTHER, 0x66000000000B, IP("10.65.1.0"), IP("192.168.1.11")))
    for route in routes:
        state.upsert_route(route)
    return state


def _route(dst: str, types: int, pool: int = POOL_VXLAN, **kw: object) -> Route:
    defaults = {"dst_node_name": OTHER, "dst_node_ip": "192.168.1.11", "local_workload": False}
    defaults.update(kw)
    return Route(ipaddress.ip_network(dst), types, pool_type=pool, **defaults)  # type: ignore[arg-type]


def _action(compiled, dst):
    entry = compiled.routes[ipaddress.ip_network(dst)]
    return entry.action, dict(entry.params)


def test_a_vxlan_block_goes_to_the_nodes_vtep_with_the_outer_header_seed():
    compiled = compile_routes(_state(_route("10.65.1.0/26", REMOTE_WORKLOAD)), NODE, {})
    action, params = _action(compiled, "10.65.1.0/26")
    assert action == "to_vxlan"
    assert params == {
        "node": int(IP("192.168.1.11")),
        "vtep_mac": 0x66000000000B,
        "csum_seed": ipv4_header_seed(int(IP("192.168.1.10")), int(IP("192.168.1.11")), 17),
    }
    assert compiled.wanted == {(4, IP("192.168.1.11"))}
    assert not compiled.next_hops  # no MAC known yet
    node = dict(compiled.node.params)
    assert node["vtep_mac"] == 0x66000000000A and node["ip4"] == int(IP("192.168.1.10"))
    assert node["vni"] == 4096 and node["node_mac"] == NODE.node_mac


def test_the_next_hop_is_written_once_its_mac_is_known():
    state = _state(_route("10.65.1.0/26", REMOTE_WORKLOAD))
    compiled = compile_routes(state, NODE, {(4, IP("192.168.1.11")): 0x020000000B0B})
    (entry,) = compiled.next_hops.values()
    assert dict(entry.params) == {"dmac": 0x020000000B0B, "port": 101}


def test_ipip_goes_to_the_host_address_and_no_encap_to_the_node():
    state = _state(
        _route("10.65.2.0/26", REMOTE_WORKLOAD, POOL_IPIP),
        _route("10.65.3.0/26", REMOTE_WORKLOAD, POOL_NO_ENCAP),
        _route("10.65.4.0/26", REMOTE_WORKLOAD, POOL_VXLAN, same_subnet=True),
    )
    compiled = compile_routes(state, NODE, {})
    assert _action(compiled, "10.65.2.0/26")[0] == "to_ipip"
    assert _action(compiled, "10.65.3.0/26") == ("to_node", {"node": int(IP("192.168.1.11"))})
    # CrossSubnet within our subnet: unencapsulated, as Felix routes it.
    assert _action(compiled, "10.65.4.0/26")[0] == "to_node"


def test_this_nodes_block_is_a_blackhole_and_its_tunnel_address_the_hosts():
    state = _state(
        _route("10.65.0.0/26", LOCAL_WORKLOAD, dst_node_name=ME),
        _route("10.65.0.5/32", LOCAL_WORKLOAD, dst_node_name=ME, local_workload=True),
        _route("10.65.0.0/32", LOCAL_TUNNEL, dst_node_name=ME),
    )
    compiled = compile_routes(state, NODE, {})
    assert _action(compiled, "10.65.0.0/26")[0] == "blackhole"
    assert ipaddress.ip_network("10.65.0.5/32") not in compiled.routes  # the pod's own entry
    assert _action(compiled, "10.65.0.0/32") == ("to_host", {"port": 100})


def test_what_cannot_be_routed_is_said_and_follows_the_default():
    state = _state(
        _route("10.65.9.0/26", REMOTE_WORKLOAD, dst_node_name="node-9"),  # no VTEP
        _route("192.168.1.11/32", REMOTE_HOST, pool=0),
        _route("10.65.1.0/32", REMOTE_TUNNEL),  # inside the node's block: the block covers it
    )
    compiled = compile_routes(state, NODE, {})
    assert not compiled.routes
    assert compiled.unresolved == {
        ipaddress.ip_network("10.65.9.0/26"): "no IPv4 VTEP for node node-9"
    }


def test_tunnel_sources_are_the_other_nodes_and_the_external_list():
    compiled = compile_routes(_state(external="10.99.0.0/16"), NODE, {})
    rows = set()
    for entry in compiled.sources:
        m = dict(entry.match)
        rows.add((m["kind"].value, m["src_lo"].value, m["src_lo"].mask, entry.priority))
    full = (1 << 64) - 1
    assert rows == {
        (1, int(IP("192.168.1.11")), full, 33),  # VXLAN from node-2's VTEP parent
        (2, int(IP("192.168.1.11")), full, 33),  # IP-in-IP from node-2's address
        (1, int(IP("10.99.0.0")), full ^ 0xFFFF, 17),
        (2, int(IP("10.99.0.0")), full ^ 0xFFFF, 17),
    }


def test_a_vxlan_port_the_parser_does_not_know_is_refused_by_name():
    state = _state(_route("10.65.1.0/26", REMOTE_WORKLOAD))
    state.set_config(FelixConfig.from_map({"FelixHostname": ME, "VXLANPort": "8472"}))
    compiled = compile_routes(state, NODE, {})
    assert not compiled.routes
    assert "VXLANPort 8472" in compiled.unresolved[ipaddress.ip_network("10.65.1.0/26")]
