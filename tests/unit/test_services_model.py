"""Kubernetes Services and EndpointSlices: which backends serve a port, as kube-proxy decides."""

import ipaddress

import pytest

from felix_p4.k8s.convert import endpoint_slice_from_k8s, service_from_k8s
from felix_p4.model.services import (
    DEFAULT_AFFINITY_SECONDS,
    backends,
)
from felix_p4.model.values import InvalidObject

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "type": "LoadBalancer",
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10", "fd00:96::10"],
        "externalIPs": ["203.0.113.7"],
        "ports": [
            {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ],
        "sessionAffinity": "ClientIP",
        "internalTrafficPolicy": "Local",
        "externalTrafficPolicy": "Local",
    },
    "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}, {"hostname": "lb.example"}]}},
}


def _slice(name, family, endpoints, ports):
    return endpoint_slice_from_k8s(
        {
            "kind": "EndpointSlice",
            "addressType": family,
            "metadata": {
                "name": name,
                "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "endpoints": endpoints,
            "ports": ports,
        }
    )


def _ep(addr, node="node-1", **conditions):
    return {"addresses": [addr], "nodeName": node, "conditions": conditions}


def test_service_fields_are_read_from_the_api_object():
    svc = service_from_k8s(SERVICE)
    assert str(svc.key) == "shop/web" and svc.type == "LoadBalancer"
    assert [str(a) for a in svc.cluster_ips] == ["10.96.0.10", "fd00:96::10"]
    assert [str(a) for a in svc.load_balancer_ips] == ["198.51.100.9"]
    assert [(p.name, p.protocol, p.port, p.node_port) for p in svc.ports] == [
        ("http", 6, 80, 30080),
        ("dns", 17, 53, 0),
    ]
    assert svc.affinity_seconds == DEFAULT_AFFINITY_SECONDS
    assert svc.internal_local and svc.external_local


def test_headless_service_has_no_front_end():
    headless = {**SERVICE, "spec": {**SERVICE["spec"], "clusterIP": "None", "clusterIPs": ["None"]}}
    assert service_from_k8s(headless).cluster_ips == ()


def test_invalid_objects_are_rejected_with_the_field():
    bad = {**SERVICE, "spec": {**SERVICE["spec"], "clusterIPs": ["10.96.0.300"]}}
    with pytest.raises(InvalidObject, match="clusterIP"):
        service_from_k8s(bad)
    with pytest.raises(InvalidObject, match="protocol"):
        service_from_k8s({**SERVICE, "spec": {"ports": [{"port": 1, "protocol": "ICMP"}]}})


def test_named_target_ports_resolve_per_slice_and_conditions_filter():
    svc = service_from_k8s(SERVICE)
    http = svc.ports[0]
    slices = [
        _slice(
            "a",
            "IPv4",
            [_ep("10.0.0.1", ready=True), _ep("10.0.0.2", ready=False)],
            [{"name": "http", "port": 8080}],
        ),
        _slice("b", "IPv4", [_ep("10.0.0.3", node="node-2")], [{"name": "http", "port": 9090}]),
        _slice("c", "IPv6", [_ep("fd00::3")], [{"name": "http", "port": 8080}]),
    ]
    got = backends(svc, http, slices, 4, None)
    assert got == [
        (ipaddress.ip_address("10.0.0.1"), 8080),
        (ipaddress.ip_address("10.0.0.3"), 9090),
    ]
    assert backends(svc, http, slices, 4, "node-1") == [(ipaddress.ip_address("10.0.0.1"), 8080)]
    assert backends(svc, http, slices, 6, None) == [(ipaddress.ip_address("fd00::3"), 8080)]
    assert backends(svc, svc.ports[1], slices, 4, None) == []  # no slice port named dns


def test_terminating_serving_endpoints_are_used_only_when_none_is_ready():
    svc = service_from_k8s(SERVICE)
    ports = [{"name": "http", "port": 8080}]
    draining = _ep("10.0.0.9", ready=False, serving=True, terminating=True)
    gone = _ep("10.0.0.8", ready=False, serving=False, terminating=True)
    only_draining = [_slice("a", "IPv4", [draining, gone], ports)]
    assert backends(svc, svc.ports[0], only_draining, 4, None) == [
        (ipaddress.ip_address("10.0.0.9"), 8080)
    ]
    with_ready = [_slice("a", "IPv4", [draining, _ep("10.0.0.1")], ports)]
    assert backends(svc, svc.ports[0], with_ready, 4, None) == [
        (ipaddress.ip_address("10.0.0.1"), 8080)
    ]


def test_fqdn_and_unowned_slices_are_ignored():
    assert _slice("x", "FQDN", [], []) is None
    assert endpoint_slice_from_k8s({"addressType": "IPv4", "metadata": {"name": "x"}}) is None
