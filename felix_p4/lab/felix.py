"""What Felix sends a dataplane driver for the lab's pods, and the Services it would watch.

Kubernetes objects become Felix payloads as Calico renders them: a namespace is the profile
`kns.<namespace>` (allow in, allow out), a service account `ksa.<namespace>.<account>` (labels,
no rules), a pod a WorkloadEndpointUpdate naming its host-side interface, and a Kubernetes
NetworkPolicy an ActivePolicyUpdate in tier `default` whose rule selectors Felix has resolved
into IP sets (`s:` plus a hash of the selector), listed on the endpoints it selects with the
tier's default action Deny.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from google.protobuf import json_format

from calico_proto import felixbackend_pb2 as fb
from felix_p4.lab.topology import Lab, Pod

SERVICE_ACCOUNT = "default"
NODE_SERVICE = ("node-web", "10.96.0.10", "fd00:96::10")  # backend: the node, TCP 8080
POD_SERVICE = ("web", "10.96.0.11", "fd00:96::11")  # backend: the web pod, TCP 8080
DNS_SERVICE = ("dns", "10.96.0.12", "fd00:96::12")  # backend: the node, UDP 5353
HTTP_PORT = 8080
SERVICE_PORT = 80
UDP_PORT = 5353
DNS_PORT = 53


def message(**payload: Any) -> fb.ToDataplane:
    return json_format.ParseDict(payload, fb.ToDataplane())


def selector_ipset_id(selector: str) -> str:
    """Felix names a selector's IP set "s:" plus a hash of the selector (28 characters)."""
    digest = hashlib.sha224(selector.encode()).digest()
    return "s:" + base64.urlsafe_b64encode(digest).decode()[:26]


def _namespace_profile(namespace: str) -> fb.ToDataplane:
    return message(
        active_profile_update={
            "id": {"name": f"kns.{namespace}"},
            "profile": {
                "inbound_rules": [{"action": "allow", "rule_id": "kns-in"}],
                "outbound_rules": [{"action": "allow", "rule_id": "kns-out"}],
            },
        }
    )


def _service_account_profile(namespace: str) -> fb.ToDataplane:
    return message(
        active_profile_update={"id": {"name": f"ksa.{namespace}.{SERVICE_ACCOUNT}"}, "profile": {}}
    )


def endpoint_update(
    lab: Lab, pod: Pod, tiers: list[dict[str, Any]] | None = None
) -> fb.ToDataplane:
    return message(
        workload_endpoint_update={
            "id": {
                "orchestrator_id": "k8s",
                "workload_id": pod.workload_id,
                "endpoint_id": "eth0",
            },
            "endpoint": {
                "state": "active",
                "name": pod.veth,
                "mac": lab.macs[pod.name],
                "ipv4_nets": [f"{pod.ipv4}/32"],
                "ipv6_nets": [f"{pod.ipv6}/128"],
                "profile_ids": [f"kns.{pod.namespace}", f"ksa.{pod.namespace}.{SERVICE_ACCOUNT}"],
                "tiers": tiers or [],
            },
        }
    )


def snapshot(lab: Lab) -> list[fb.ToDataplane]:
    """Felix's start of a session: config, this node's addresses, pools, the namespaces'
    profiles, every local pod, then InSync."""
    node = lab.node
    messages = [
        message(
            config_update={
                "config": {
                    "FelixHostname": node.name,
                    "ReportingIntervalSecs": "30",
                    "LogSeverityScreen": "Info",
                }
            }
        ),
        message(
            host_metadata_v4v6_update={
                "hostname": node.name,
                "ipv4_addr": node.ipv4,
                "ipv6_addr": node.ipv6,
            }
        ),
        message(
            ipam_pool_update={
                "id": "10.65.0.0-16",
                "pool": {"cidr": "10.65.0.0/16", "masquerade": True},
            }
        ),
        message(
            ipam_pool_update={"id": "fd00-65---48", "pool": {"cidr": "fd00:65::/48"}},
        ),
    ]
    for namespace in sorted({pod.namespace for pod in lab.pods}):
        messages += [_namespace_profile(namespace), _service_account_profile(namespace)]
    for pod in lab.pods:
        messages.append(endpoint_update(lab, pod))
        for address in (f"{pod.ipv4}/32", f"{pod.ipv6}/128"):
            messages.append(
                message(
                    route_update={
                        "types": "LOCAL_WORKLOAD",
                        "ip_pool_type": "NO_ENCAP",
                        "dst": address,
                        "dst_node_name": node.name,
                        "dst_node_ip": node.ipv4,
                        "local_workload": True,
                    }
                )
            )
    messages += lab.felix_extra
    messages.append(message(in_sync={}))
    return messages


def allow_only_from(
    lab: Lab, target: Pod, allowed: list[Pod], port: int = HTTP_PORT
) -> list[fb.ToDataplane]:
    """A Kubernetes NetworkPolicy selecting `target`, allowing TCP `port` in from `allowed`
    only, as Felix sends it: the source selector's IP set, the policy, and the selected
    endpoint with the policy in tier default (anything else in is denied)."""
    name = f"allow-{target.name}-from-" + "-".join(p.name for p in allowed)
    labels = " || ".join(f"app == '{p.labels['app']}'" for p in allowed)
    selector = (
        f"(projectcalico.org/orchestrator == 'k8s' && ({labels})) && "
        f"projectcalico.org/namespace == '{target.namespace}'"
    )
    ipset = selector_ipset_id(selector)
    policy_id = {"name": name, "namespace": target.namespace, "kind": "KubernetesNetworkPolicy"}
    members = [f"{p.ipv4}/32" for p in allowed] + [f"{p.ipv6}/128" for p in allowed]
    return [
        message(ipset_update={"id": ipset, "type": "NET", "members": members}),
        message(
            active_policy_update={
                "id": policy_id,
                "policy": {
                    "tier": "default",
                    "namespace": target.namespace,
                    "inbound_rules": [
                        {
                            "action": "allow",
                            "protocol": {"name": "tcp"},
                            "dst_ports": [{"first": port, "last": port}],
                            "src_ip_set_ids": [ipset],
                            "rule_id": f"{name}-0",
                        }
                    ],
                    "original_selector": f"app == '{target.labels['app']}'",
                },
            }
        ),
        endpoint_update(
            lab,
            target,
            [{"name": "default", "ingress_policies": [policy_id], "default_action": "Deny"}],
        ),
    ]


def remove_policy(lab: Lab, target: Pod, allowed: list[Pod]) -> list[fb.ToDataplane]:
    """The NetworkPolicy of `allow_only_from` deleted, as Felix sends it: the endpoint without
    the policy, then the policy and its IP set removed."""
    updates = allow_only_from(lab, target, allowed)
    ipset = updates[0].ipset_update.id
    policy_id = json_format.MessageToDict(
        updates[1].active_policy_update.id, preserving_proto_field_name=True
    )
    return [
        endpoint_update(lab, target),
        message(active_policy_remove={"id": policy_id}),
        message(ipset_remove={"id": ipset}),
    ]


def services(lab: Lab) -> dict[str, Any]:
    """The Services and EndpointSlices the driver's file source reads (a v1 List), all
    dual-stack: node-web (TCP 80 to 8080) backed by the node itself, as a hostNetwork pod would
    be; web (TCP 80 to 8080) backed by the web pod; dns (UDP 53 to 5353) backed by the node."""
    node = lab.node
    web = lab.pod("web")
    items: list[dict[str, Any]] = []
    for (name, cluster_v4, cluster_v6), (v4, v6), (protocol, port, target) in (
        (NODE_SERVICE, (node.ipv4, node.ipv6), ("TCP", SERVICE_PORT, HTTP_PORT)),
        (POD_SERVICE, (web.ipv4, web.ipv6), ("TCP", SERVICE_PORT, HTTP_PORT)),
        (DNS_SERVICE, (node.ipv4, node.ipv6), ("UDP", DNS_PORT, UDP_PORT)),
    ):
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": cluster_v4,
                    "clusterIPs": [cluster_v4, cluster_v6],
                    "ipFamilies": ["IPv4", "IPv6"],
                    "ipFamilyPolicy": "RequireDualStack",
                    "ports": [
                        {"name": "main", "port": port, "targetPort": target, "protocol": protocol}
                    ],
                },
            }
        )
        for family, address in (("IPv4", v4), ("IPv6", v6)):
            items.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "addressType": family,
                    "metadata": {
                        "name": f"{name}-{family.lower()}",
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": name},
                    },
                    "endpoints": [
                        {
                            "addresses": [address],
                            "conditions": {"ready": True},
                            "nodeName": node.name,
                        }
                    ],
                    "ports": [{"name": "main", "port": target, "protocol": protocol}],
                }
            )
    return {"apiVersion": "v1", "kind": "List", "items": items}
