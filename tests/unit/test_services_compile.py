"""Service compilation: front ends per type, shared members, changes touch only what changed."""

import ipaddress

from felix_p4.compile.services import NodeContext, ServiceCompiler
from felix_p4.k8s.convert import endpoint_slice_from_k8s, service_from_k8s
from felix_p4.pipeline.entries import ActionProfileGroup, ActionProfileMember, TableEntry

NODE = NodeContext(
    "node-1",
    (ipaddress.ip_address("192.168.0.11"),),
    {4: ipaddress.ip_address("169.254.1.1")},
)


def _service(type_="ClusterIP", **spec):
    return service_from_k8s(
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": type_,
                "clusterIP": "10.96.0.10",
                "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
                **spec,
            },
        }
    )


def _slice(*addrs, node="node-1"):
    return endpoint_slice_from_k8s(
        {
            "addressType": "IPv4",
            "metadata": {
                "name": "web-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "endpoints": [{"addresses": [a], "nodeName": node} for a in addrs],
            "ports": [{"name": "http", "port": 8080}],
        }
    )


def _fronts(entities):
    out = []
    for e in entities:
        if isinstance(e, TableEntry) and e.table == "services":
            m = dict(e.match)
            addr = (m["addr_hi"].value << 64) | m["addr_lo"].value
            version = m["ip_version"].value
            text = str(ipaddress.IPv4Address(addr) if version == 4 else ipaddress.IPv6Address(addr))
            out.append((text, m["port"].value, e.action))
    return sorted(out)


def test_cluster_ip_front_end_points_at_a_group_of_members():
    entities = ServiceCompiler().compile(_service(), [_slice("10.0.0.1", "10.0.0.2")], NODE)
    assert _fronts(entities) == [("10.96.0.10", 80, "to_service")]
    members = [e for e in entities if isinstance(e, ActionProfileMember)]
    groups = [e for e in entities if isinstance(e, ActionProfileGroup)]
    assert sorted(dict(m.params)["port"] for m in members) == [8080, 8080]
    assert sorted(dict(m.params)["addr_lo"] for m in members) == [0x0A000001, 0x0A000002]
    assert len(groups) == 1 and len(groups[0].members) == 2


def test_node_port_listens_on_node_addresses_and_no_endpoints_rejects():
    entities = ServiceCompiler().compile(_service("NodePort"), [], NODE)
    assert _fronts(entities) == [
        ("10.96.0.10", 80, "service_reject"),
        ("192.168.0.11", 30080, "service_reject"),
    ]
    assert not [e for e in entities if isinstance(e, ActionProfileGroup)]


def test_external_traffic_policy_local_uses_only_this_nodes_endpoints():
    svc = _service("NodePort", externalTrafficPolicy="Local")
    slices = [_slice("10.0.0.1", node="node-2")]
    entities = ServiceCompiler().compile(svc, slices, NODE)
    # Cluster traffic still reaches the remote endpoint; external traffic has none local.
    assert _fronts(entities) == [
        ("10.96.0.10", 80, "to_service"),
        ("192.168.0.11", 30080, "service_reject"),
    ]


def test_scaling_changes_only_the_group_and_the_new_member():
    compiler = ServiceCompiler()
    before = set(compiler.compile(_service(), [_slice("10.0.0.1", "10.0.0.2")], NODE))
    after = set(compiler.compile(_service(), [_slice("10.0.0.1", "10.0.0.2", "10.0.0.3")], NODE))
    changed = after - before
    assert sorted(type(e).__name__ for e in changed) == [
        "ActionProfileGroup",
        "ActionProfileMember",
    ]
    assert {e.key for e in before - after} == {
        e.key for e in changed if isinstance(e, ActionProfileGroup)
    }


def test_ids_survive_a_restart_through_the_device():
    first = ServiceCompiler()
    entities = first.compile(_service(), [_slice("10.0.0.1", "10.0.0.2")], NODE)
    second = ServiceCompiler()
    second.recover(entities)
    assert set(second.compile(_service(), [_slice("10.0.0.1", "10.0.0.2")], NODE)) == set(entities)
