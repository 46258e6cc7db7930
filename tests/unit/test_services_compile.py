"""Service compilation: front ends per type, backends spread evenly over buckets, changes move
only the buckets that must change hands."""

import ipaddress
from collections import Counter

import pytest

from felix_p4.compile.services import (
    NodeContext,
    ServiceCompiler,
    TooManyBackends,
    bucket_count,
    spread,
)
from felix_p4.k8s.convert import endpoint_slice_from_k8s, service_from_k8s
from felix_p4.pipeline import MAX_BUCKETS
from felix_p4.pipeline.entries import TableEntry

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


def _buckets(entities):
    return {
        dict(e.match)["bucket"].value: (dict(e.params)["addr_lo"], dict(e.params)["port"])
        for e in entities
        if isinstance(e, TableEntry) and e.table == "service_backends"
    }


def test_cluster_ip_front_end_points_at_buckets_spread_over_the_backends():
    entities = ServiceCompiler().compile(_service(), [_slice("10.0.0.1", "10.0.0.2")], NODE)
    assert _fronts(entities) == [("10.96.0.10", 80, "to_service")]
    buckets = _buckets(entities)
    assert sorted(buckets) == [0, 1]  # a power of two of backends: one bucket each
    assert Counter(buckets.values()) == {(0x0A000001, 8080): 1, (0x0A000002, 8080): 1}
    (front,) = [e for e in entities if e.table == "services"]
    assert dict(front.params)["bucket_mask"] == 1
    # Three backends: 16 buckets (4 each at least), 6/5/5.
    three = ServiceCompiler().compile(
        _service(), [_slice("10.0.0.1", "10.0.0.2", "10.0.0.3")], NODE
    )
    assert sorted(Counter(_buckets(three).values()).values()) == [5, 5, 6]


def test_node_port_listens_on_node_addresses_and_no_endpoints_rejects():
    entities = ServiceCompiler().compile(_service("NodePort"), [], NODE)
    assert _fronts(entities) == [
        ("10.96.0.10", 80, "service_reject"),
        ("192.168.0.11", 30080, "service_reject"),
    ]
    assert not _buckets(entities)


def test_external_traffic_policy_local_uses_only_this_nodes_endpoints():
    svc = _service("NodePort", externalTrafficPolicy="Local")
    slices = [_slice("10.0.0.1", node="node-2")]
    entities = ServiceCompiler().compile(svc, slices, NODE)
    # Cluster traffic still reaches the remote endpoint; external traffic has none local.
    assert _fronts(entities) == [
        ("10.96.0.10", 80, "to_service"),
        ("192.168.0.11", 30080, "service_reject"),
    ]


def test_scaling_moves_only_the_buckets_that_change_hands():
    compiler = ServiceCompiler()
    three = [_slice("10.0.0.1", "10.0.0.2", "10.0.0.3")]
    before = _buckets(compiler.compile(_service(), three, NODE))
    # 3 backends: 16 buckets, 6/5/5; a fourth keeps 16 buckets, 4 each: only 4 move to it.
    after = _buckets(
        compiler.compile(_service(), [_slice("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")], NODE)
    )
    moved = {b for b in after if after[b] != before[b]}
    assert len(moved) == 4 and {after[b][0] for b in moved} == {0x0A000004}
    # Removing one: only its buckets move.
    shrunk = _buckets(compiler.compile(_service(), three, NODE))
    assert {b for b in shrunk if shrunk[b] != after[b]} == {
        b for b in after if after[b][0] == 0x0A000004
    }


@pytest.mark.parametrize("count", [1, 2, 3, 5, 17, 100, 1024])
def test_every_backend_gets_its_even_share_of_buckets(count):
    chosen = [(i, 80) for i in range(count)]
    slots = spread([], chosen)
    size = len(slots)
    assert size == bucket_count(count) and size & (size - 1) == 0
    assert size % count == 0 or size >= 4 * count
    held = Counter(slots)
    assert set(held) == set(chosen) and max(held.values()) - min(held.values()) <= 1


def test_a_changed_bucket_count_keeps_the_flows_whose_backend_stays():
    # Bucket = hash & (count - 1): after growing, bucket i holds the flows old bucket i % 2
    # held. 2 -> 3 backends (2 -> 16 buckets, 6/5/5): 11 of 16 keep their backend.
    a, b, c = (1, 80), (2, 80), (3, 80)
    old = spread([], [a, b])
    grown = spread(old, [a, b, c])
    kept = [i for i in range(16) if grown[i] == old[i % len(old)]]
    assert len(kept) == 11 and Counter(grown) == {a: 6, b: 5, c: 5}
    # And back to 2 buckets: each keeps its backend where a or b owned it.
    shrunk = spread(grown, [a, b])
    assert shrunk == [a, b]
    # 3 -> 4 keeps 16 buckets (an even 4 each) and moves only 4 to the newcomer.
    d = (4, 80)
    four = spread(grown, [a, b, c, d])
    assert len(four) == 16 and sum(four[i] != grown[i] for i in range(16)) == 4


def test_a_port_with_more_backends_than_buckets_is_refused():
    with pytest.raises(TooManyBackends, match=f"{MAX_BUCKETS + 1} backends"):
        spread([], [(i, 80) for i in range(MAX_BUCKETS + 1)])


def test_ids_survive_a_restart_through_the_device():
    first = ServiceCompiler()
    entities = first.compile(_service(), [_slice("10.0.0.1", "10.0.0.2")], NODE)
    second = ServiceCompiler()
    second.recover(entities)
    assert set(second.compile(_service(), [_slice("10.0.0.1", "10.0.0.2")], NODE)) == set(entities)


def test_client_ip_affinity_is_kept_per_service_port_and_traffic_scope():
    """An affinity entry is keyed by the front end's service_id: one per group (service port,
    family, scope), so a client's backend for port 80 (target 8080) is never reused for port
    443, nor a cluster-wide backend for an externalTrafficPolicy: Local node port."""
    svc = _service(
        "NodePort",
        sessionAffinity="ClientIP",
        externalTrafficPolicy="Local",
        ports=[
            {"name": "http", "port": 80, "nodePort": 30080},
            {"name": "https", "port": 443, "nodePort": 30443},
        ],
    )
    slice_ = endpoint_slice_from_k8s(
        {
            "addressType": "IPv4",
            "metadata": {
                "name": "web-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "node-1"}],
            "ports": [{"name": "http", "port": 8080}, {"name": "https", "port": 8443}],
        }
    )
    entities = ServiceCompiler().compile(svc, [slice_], NODE)
    scopes = {
        dict(e.match)["port"].value: dict(e.params)["service_id"]
        for e in entities
        if e.table == "services"
    }
    assert sorted(scopes) == [80, 443, 30080, 30443]
    assert len(set(scopes.values())) == 4


def _affinity(entities):
    (scope,) = {dict(e.params)["service_id"] for e in entities if e.action == "to_service"}
    return scope


def test_a_backend_leaving_starts_a_new_affinity_scope():
    """The control plane cannot delete learned affinity entries, so when a backend leaves,
    the port's front ends get a fresh affinity id: no client is sent to a removed endpoint.
    A backend joining keeps the clients where they are."""
    compiler = ServiceCompiler()
    svc = _service(sessionAffinity="ClientIP")
    two = _affinity(compiler.compile(svc, [_slice("10.0.0.1", "10.0.0.2")], NODE))
    three = _affinity(compiler.compile(svc, [_slice("10.0.0.1", "10.0.0.2", "10.0.0.3")], NODE))
    assert three == two
    after_leave = compiler.compile(svc, [_slice("10.0.0.1", "10.0.0.3")], NODE)
    assert _affinity(after_leave) not in (two, three)
    # A restarted driver reads the scope back and keeps it.
    again = ServiceCompiler()
    again.recover(after_leave)
    assert set(again.compile(svc, [_slice("10.0.0.1", "10.0.0.3")], NODE)) == set(after_leave)


def test_a_released_group_id_is_not_handed_to_another_service():
    """Learned affinity entries keyed by a released id outlive it in the device; a new group
    must not inherit them, so fresh ids come first."""
    compiler = ServiceCompiler()
    first = compiler.compile(_service(), [_slice("10.0.0.1")], NODE)
    (old,) = {dict(e.params)["group"] for e in first if e.table == "services"}
    compiler.forget(_service().key)
    compiler.release_unused()
    renamed = service_from_k8s(
        {
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]},
        }
    )
    second = compiler.compile(
        renamed,
        [
            endpoint_slice_from_k8s(
                {
                    "addressType": "IPv4",
                    "metadata": {
                        "name": "api-1",
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "api"},
                    },
                    "endpoints": [{"addresses": ["10.0.0.9"], "nodeName": "node-1"}],
                    "ports": [{"name": "http", "port": 8080}],
                }
            )
        ],
        NODE,
    )
    groups = {dict(e.params)["group"] for e in second if e.action == "to_service"}
    assert groups and old not in groups
