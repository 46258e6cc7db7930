"""The lab's pieces that need no namespace: Calico's interface names, what Felix would send for
the pods, and the demo refusing to start where it cannot run."""

from __future__ import annotations

import hashlib

import pytest

from felix_p4.lab import demo
from felix_p4.lab import felix as lab_felix
from felix_p4.lab.topology import HOST_PORT, Lab, calico_veth_name


def test_a_pods_host_interface_is_named_as_calicos_cni_names_it():
    name = calico_veth_name("default", "web")
    assert name == "cali" + hashlib.sha1(b"default.web").hexdigest()[:11]
    assert len(name) == 15  # the longest Linux interface name


def _lab() -> Lab:
    lab = Lab()
    lab.macs.update({pod.name: f"0a:58:0a:41:00:0{i}" for i, pod in enumerate(lab.pods, 2)})
    return lab


def test_felixs_snapshot_names_every_pod_by_its_interface_and_ends_in_sync():
    lab = _lab()
    messages = lab_felix.snapshot(lab)
    endpoints = [
        m.workload_endpoint_update
        for m in messages
        if m.WhichOneof("payload") == "workload_endpoint_update"
    ]
    assert [e.endpoint.name for e in endpoints] == [pod.veth for pod in lab.pods]
    assert all(
        list(e.endpoint.profile_ids) == ["kns.default", "ksa.default.default"] for e in endpoints
    )
    assert messages[-1].WhichOneof("payload") == "in_sync"
    assert set(lab.ports) == {pod.veth for pod in lab.pods} | {HOST_PORT}


def test_a_network_policy_is_an_ip_set_a_policy_in_tier_default_and_the_selected_endpoint():
    lab = _lab()
    web, client = lab.pod("web"), lab.pod("client")
    ipset, policy, endpoint = lab_felix.allow_only_from(lab, web, [client])

    members = set(ipset.ipset_update.members)
    assert members == {f"{client.ipv4}/32", f"{client.ipv6}/128"}
    rule = policy.active_policy_update.policy.inbound_rules[0]
    assert list(rule.src_ip_set_ids) == [ipset.ipset_update.id]
    assert policy.active_policy_update.policy.tier == "default"
    (tier,) = endpoint.workload_endpoint_update.endpoint.tiers
    assert (tier.name, tier.default_action) == ("default", "Deny")
    assert tier.ingress_policies[0] == policy.active_policy_update.id
    removal = lab_felix.remove_policy(lab, web, [client])
    assert [m.WhichOneof("payload") for m in removal] == [
        "workload_endpoint_update",
        "active_policy_remove",
        "ipset_remove",
    ]


def test_the_demo_where_it_cannot_run_says_why_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)

    assert demo.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "demo-netns cannot run here: it needs root (it creates network namespaces, veth pairs "
        "and raw sockets)"
    ]


@pytest.mark.parametrize("name", ["node-web", "web", "dns"])
def test_every_service_has_a_dual_stack_front_end_and_a_slice_per_family(name):
    items = lab_felix.services(_lab())["items"]
    (service,) = [i for i in items if i["kind"] == "Service" and i["metadata"]["name"] == name]
    slices = [
        i
        for i in items
        if i["kind"] == "EndpointSlice"
        and i["metadata"]["labels"]["kubernetes.io/service-name"] == name
    ]
    assert service["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
    assert sorted(s["addressType"] for s in slices) == ["IPv4", "IPv6"]
