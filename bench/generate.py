"""Seeded generator of realistic Felix snapshots, endpoint changes and Kubernetes services."""

from __future__ import annotations

import hashlib
import ipaddress
import random
from typing import Any

import attrs

from calico_proto import felixbackend_pb2 as fb

HOSTNAME = "node-1"
HOST_PORT = 1
UPLINK_PORT = 0  # the node's network port (pods take 2 and up)
TIER = "default"

_LOCAL = int(ipaddress.IPv4Address("10.65.0.0"))  # this node's pods (snapshot)
_PROBES = int(ipaddress.IPv4Address("10.66.0.0"))  # pods added one at a time (latency)
_CHURN = int(ipaddress.IPv4Address("10.67.0.0"))  # pods added and removed (churn)
_REMOTE = int(ipaddress.IPv4Address("10.128.0.0"))  # other nodes' pods
_CLUSTER_IPS = int(ipaddress.IPv4Address("10.96.0.0"))
_NODES = int(ipaddress.IPv4Address("10.0.0.0"))
_NAMED_PORT = 8080  # the "http" named port of the pods in named-port sets


@attrs.frozen
class Scale:
    """How big a node's state is; `S` is DESIGN.md §6's scale."""

    name: str
    endpoints: int
    policies: int
    rules_per_policy: int
    ipsets: int
    members: int  # over all IP sets, named-port sets included
    named_port_sets: int
    services: int
    backends: int  # per service
    endpoints_per_namespace: int
    nodes: int  # in the cluster (host metadata, routes, remote backends)
    probes: int  # single-endpoint adds timed one at a time
    churn_pool: int  # endpoints the churn adds and removes
    churn_ops: int  # endpoint updates and removes sent by the churn

    @property
    def namespaces(self) -> int:
        return max(1, self.endpoints // self.endpoints_per_namespace)


PRESETS: dict[str, Scale] = {
    "tiny": Scale("tiny", 50, 10, 10, 8, 400, 2, 10, 3, 10, 3, 20, 50, 200),
    "small": Scale("small", 1_000, 100, 10, 20, 10_000, 2, 100, 10, 50, 10, 200, 400, 4_000),
    # S: 101 nodes, so 100 remote ones with their VTEPs and block routes (issue 14's share).
    "S": Scale("S", 10_000, 1_000, 10, 200, 100_000, 10, 1_000, 10, 50, 101, 200, 2_000, 20_000),
}


@attrs.define
class EndpointChange:
    """One pod coming and going, as Felix streams it: its IP-set delta and endpoint update,
    then its endpoint removal and IP-set delta."""

    workload_id: str
    add: list[fb.ToDataplane]
    remove: list[fb.ToDataplane]


@attrs.define
class Workload:
    scale: Scale
    snapshot: list[fb.ToDataplane]  # config ... InSync, in Felix's order
    kubernetes: list[dict[str, Any]]  # Services and EndpointSlices as the API server has them
    ports: dict[str, int]  # interface name -> P4 port, `host` included
    probes: list[EndpointChange]
    churn: list[EndpointChange]
    counts: dict[str, int]
    # Next-hop MACs of the other nodes, as the host's neighbour table would give them.
    next_hops: dict[str, str] = attrs.Factory(dict)


def _ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def _node_mac(prefix: str, value: int) -> str:
    return prefix + "".join(f":{b:02x}" for b in value.to_bytes(4, "big"))


def _hash(text: str, length: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def _interface(workload_id: str) -> str:
    # Calico names the host side of a pod's veth "cali" + 11 hex digits of a hash.
    return "cali" + _hash(workload_id, 11)


def _mac(ip: int) -> str:
    raw = (0x0A58 << 32 | ip).to_bytes(6, "big")
    return ":".join(f"{b:02x}" for b in raw)


def _ports(*ranges: tuple[int, int]) -> list[fb.PortRange]:
    return [fb.PortRange(first=lo, last=hi) for lo, hi in ranges]


def _tcp() -> fb.Protocol:
    return fb.Protocol(name="tcp")


def _udp() -> fb.Protocol:
    return fb.Protocol(name="udp")


class _SetChooser:
    """Round-robin choice of IP sets per role, so every set sent is referenced by some rule
    (Felix only sends sets that active policies reference)."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self._next = 0

    def __call__(self) -> str:
        chosen = self.ids[self._next % len(self.ids)]
        self._next += 1
        return chosen


def _inbound_rule(kind: int, src: _SetChooser, named: _SetChooser, rule_id: str) -> fb.Rule:
    """Ingress rules of the shapes Kubernetes and Calico network policies produce."""
    r = fb.Rule(action="allow", rule_id=rule_id)
    if kind == 0:
        r.protocol.CopyFrom(_tcp())
        r.dst_ports.extend(_ports((8080, 8080)))
        r.src_ip_set_ids.append(src())
    elif kind == 1:
        r.protocol.CopyFrom(_tcp())
        r.dst_ports.extend(_ports((8000, 8100), (9090, 9090)))
        r.src_ip_set_ids.append(src())
    elif kind == 2:
        r.protocol.CopyFrom(_udp())
        r.dst_ports.extend(_ports((53, 53)))
        r.src_ip_set_ids.append(src())
    elif kind == 3:
        r.protocol.CopyFrom(_tcp())
        r.dst_named_port_ip_set_ids.append(named())
        r.src_ip_set_ids.append(src())
    elif kind == 4:
        r.action = "deny"
        r.protocol.CopyFrom(_tcp())
        r.dst_ports.extend(_ports((22, 22)))
    elif kind == 5:
        r.protocol.CopyFrom(fb.Protocol(name="icmp"))
        r.icmp_type = 8
        r.src_ip_set_ids.append(src())
    elif kind == 6:
        r.protocol.CopyFrom(_tcp())
        r.src_ip_set_ids.append(src())
        r.not_src_ip_set_ids.append(src())
    elif kind == 7:
        r.protocol.CopyFrom(_tcp())
        r.dst_ports.extend(_ports((443, 443)))
        r.src_net.append("10.0.0.0/8")
    elif kind == 8:
        r.protocol.CopyFrom(_tcp())
        r.not_dst_ports.extend(_ports((1, 1023)))
        r.src_ip_set_ids.append(src())
    else:
        r.src_ip_set_ids.append(src())
    return r


def _outbound_rule(kind: int, dst: _SetChooser, dns: str, rule_id: str) -> fb.Rule:
    """Egress rules: DNS, databases, external HTTPS, the metadata service denied."""
    r = fb.Rule(action="allow", rule_id=rule_id)
    if kind == 0:
        r.protocol.CopyFrom(_udp())
        r.dst_ports.extend(_ports((53, 53)))
        r.dst_ip_set_ids.append(dns)
    elif kind == 1:
        r.protocol.CopyFrom(_tcp())
        r.dst_ports.extend(_ports((53, 53)))
        r.dst_ip_set_ids.append(dns)
    elif kind == 2:
        r.protocol.CopyFrom(_tcp())
        r.dst_ports.extend(_ports((5432, 5432)))
        r.dst_ip_set_ids.append(dst())
    elif kind == 3:
        r.protocol.CopyFrom(_tcp())
        r.dst_ports.extend(_ports((443, 443)))
        r.dst_net.extend(["203.0.113.0/24", "198.51.100.0/24"])
    elif kind == 4:
        r.action = "deny"
        r.dst_net.append("169.254.169.254/32")
    elif kind == 5:
        r.protocol.CopyFrom(_tcp())
        r.dst_ports.extend(_ports((8080, 8080)))
        r.dst_ip_set_ids.append(dst())
    else:
        r.protocol.CopyFrom(_tcp())
        r.dst_ports.extend(_ports((8000, 8999)))
        r.dst_ip_set_ids.append(dst())
    return r


def _set_sizes(total: int, count: int, limit: int) -> list[int]:
    """Set sizes with a long tail (a few large selector sets, many small), summing to total."""
    weights = [1.0 / (k + 1) ** 0.7 for k in range(count)]
    scale = total / sum(weights)
    sizes = [max(1, min(limit, int(w * scale))) for w in weights]
    k = 0
    while sum(sizes) < total:  # bounded: each pass adds one member below the limit
        if sizes[k % count] < limit:
            sizes[k % count] += 1
        k += 1
    return sizes


def generate(scale: Scale, seed: int = 1) -> Workload:
    """The node's snapshot, its Services, and the endpoints later added one by one."""
    rng = random.Random(seed)
    namespaces = [f"ns-{i:04d}" for i in range(scale.namespaces)]

    # --- IP sets: selector sets used as sources (ingress) or destinations (egress), plus
    # named-port sets; members are pods across the cluster, this node's included.
    n_named = scale.named_port_sets
    set_ids = [f"s:{_hash(f'set-{i}', 27)}" for i in range(scale.ipsets - n_named)]
    named_ids = [f"n:{_hash(f'named-{i}', 27)}" for i in range(n_named)]
    # Interleaved, so both roles get large and small sets alike.
    src_sets, dst_sets = set_ids[0::2], set_ids[1::2]
    dns_set = dst_sets[0]
    local_ips = [_LOCAL + 2 + i for i in range(scale.endpoints)]
    remote_count = max(scale.members * 7 // 10 - scale.endpoints, scale.backends * 4)
    pool = local_ips + [_REMOTE + 2 + i for i in range(remote_count)]
    named_total = max(n_named, scale.members // 50) if n_named else 0
    net_sizes = _set_sizes(scale.members - named_total, len(set_ids), len(pool))
    named_sizes = _set_sizes(named_total, n_named, len(pool)) if n_named else []
    members: dict[str, list[int]] = {
        sid: sorted(rng.sample(pool, size)) for sid, size in zip(set_ids, net_sizes, strict=True)
    }
    named_members = {
        sid: sorted(rng.sample(pool, size))
        for sid, size in zip(named_ids, named_sizes, strict=True)
    }

    # --- policies: each namespace has the same number; rules reference sets round-robin.
    per_ns = max(1, scale.policies // len(namespaces))
    src_choice, dst_choice = _SetChooser(src_sets), _SetChooser(dst_sets[1:] or dst_sets)
    named_choice = _SetChooser(named_ids or src_sets)
    policies: list[fb.ToDataplane] = []
    ingress_of: dict[str, list[fb.PolicyID]] = {ns: [] for ns in namespaces}
    egress_of: dict[str, list[fb.PolicyID]] = {ns: [] for ns in namespaces}
    # The selector set a new pod of a namespace joins (its namespace's pods are in it).
    home_set = {ns: src_sets[i % len(src_sets)] for i, ns in enumerate(namespaces)}
    rules_total = 0
    for k in range(per_ns * len(namespaces)):
        ns = namespaces[k % len(namespaces)]
        kind = "KubernetesNetworkPolicy" if k % 10 < 7 else "NetworkPolicy"
        pid = fb.PolicyID(name=f"allow-app-{k // len(namespaces)}", namespace=ns, kind=kind)
        ingress_only = k % 3 == 0
        n_in = scale.rules_per_policy if ingress_only else (scale.rules_per_policy * 6 + 9) // 10
        n_out = scale.rules_per_policy - n_in
        policy = fb.Policy(
            namespace=ns,
            tier=TIER,
            original_selector=f"projectcalico.org/namespace == '{ns}' && app == 'app-{k}'",
        )
        policy.inbound_rules.extend(
            _inbound_rule((k + j) % 10, src_choice, named_choice, _hash(f"{k}-in-{j}", 16))
            for j in range(n_in)
        )
        policy.outbound_rules.extend(
            _outbound_rule((k + j) % 7, dst_choice, dns_set, _hash(f"{k}-out-{j}", 16))
            for j in range(n_out)
        )
        rules_total += n_in + n_out
        policies.append(fb.ToDataplane(active_policy_update=fb.ActivePolicyUpdate(id=pid)))
        policies[-1].active_policy_update.policy.CopyFrom(policy)
        ingress_of[ns].append(pid)
        if n_out:
            egress_of[ns].append(pid)

    def tier(ns: str) -> fb.TierInfo:
        return fb.TierInfo(
            name=TIER,
            ingress_policies=ingress_of[ns],
            egress_policies=egress_of[ns],
            default_action="Deny",
        )

    def endpoint_update(ns: str, pod: str, ip: int) -> fb.ToDataplane:
        workload_id = f"{ns}/{pod}"
        endpoint = fb.WorkloadEndpoint(
            state="active",
            name=_interface(workload_id),
            mac=_mac(ip),
            ipv4_nets=[f"{_ip(ip)}/32"],
            profile_ids=[f"kns.{ns}", f"ksa.{ns}.default"],
            tiers=[tier(ns)] if ingress_of[ns] else [],
        )
        return fb.ToDataplane(
            workload_endpoint_update=fb.WorkloadEndpointUpdate(
                id=_endpoint_id(workload_id), endpoint=endpoint
            )
        )

    ports: dict[str, int] = {"host": HOST_PORT, "uplink": UPLINK_PORT}
    endpoints: list[fb.ToDataplane] = []
    for i, ip in enumerate(local_ips):
        ns = namespaces[i % len(namespaces)]
        message = endpoint_update(ns, f"app-{i % 7}-{_hash(str(i), 10)}-{_hash(str(ip), 5)}", ip)
        ports[message.workload_endpoint_update.endpoint.name] = len(ports)
        endpoints.append(message)

    def change(prefix: str, base: int, i: int) -> EndpointChange:
        ns = namespaces[i % len(namespaces)]
        ip = base + 2 + i
        add = endpoint_update(ns, f"{prefix}-{i}-{_hash(prefix + str(i), 5)}", ip)
        workload_id = add.workload_endpoint_update.id.workload_id
        ports[add.workload_endpoint_update.endpoint.name] = len(ports)
        member = f"{_ip(ip)}/32"
        joined = fb.ToDataplane(
            ipset_delta_update=fb.IPSetDeltaUpdate(id=home_set[ns], added_members=[member])
        )
        left = fb.ToDataplane(
            ipset_delta_update=fb.IPSetDeltaUpdate(id=home_set[ns], removed_members=[member])
        )
        removed = fb.ToDataplane(
            workload_endpoint_remove=fb.WorkloadEndpointRemove(id=_endpoint_id(workload_id))
        )
        return EndpointChange(workload_id, [joined, add], [removed, left])

    probes = [change("probe", _PROBES, i) for i in range(scale.probes)]
    churn = [change("churn", _CHURN, i) for i in range(scale.churn_pool)]

    snapshot = _node_messages(scale, rng)
    snapshot += [
        fb.ToDataplane(namespace_update=fb.NamespaceUpdate(id=fb.NamespaceID(name=ns)))
        for ns in namespaces
    ]
    for sid in set_ids:
        snapshot.append(
            fb.ToDataplane(
                ipset_update=fb.IPSetUpdate(
                    id=sid, type=fb.IPSetUpdate.NET, members=[f"{_ip(a)}/32" for a in members[sid]]
                )
            )
        )
    for sid in named_ids:
        snapshot.append(
            fb.ToDataplane(
                ipset_update=fb.IPSetUpdate(
                    id=sid,
                    type=fb.IPSetUpdate.IP_AND_PORT,
                    members=[f"{_ip(a)},tcp:{_NAMED_PORT}" for a in named_members[sid]],
                )
            )
        )
    allow_all = [fb.Rule(action="allow")]
    for ns in namespaces:
        snapshot.append(
            fb.ToDataplane(
                active_profile_update=fb.ActiveProfileUpdate(
                    id=fb.ProfileID(name=f"kns.{ns}"),
                    profile=fb.Profile(inbound_rules=allow_all, outbound_rules=allow_all),
                )
            )
        )
        snapshot.append(
            fb.ToDataplane(
                active_profile_update=fb.ActiveProfileUpdate(
                    id=fb.ProfileID(name=f"ksa.{ns}.default"), profile=fb.Profile()
                )
            )
        )
    snapshot += policies + endpoints
    snapshot.append(fb.ToDataplane(in_sync=fb.InSync()))

    kubernetes, backend_count, distinct_backends, service_ports = _services(
        scale, rng, namespaces, local_ips, pool
    )
    src_members = set().union(*(members[s] for s in src_sets))
    dst_members = set().union(*(members[s] for s in dst_sets))
    named_distinct = set().union(*named_members.values()) if named_members else set()
    counts = {
        "endpoints": scale.endpoints,
        "namespaces": len(namespaces),
        "policies": len(policies),
        "rules": rules_total,
        "ipsets": len(set_ids) + len(named_ids),
        "ipset_members": sum(len(m) for m in members.values())
        + sum(len(m) for m in named_members.values()),
        "distinct_members_src": len(src_members),
        "distinct_members_dst": len(dst_members),
        "distinct_named_port_members": len(named_distinct),
        "services": scale.services,
        "service_ports": service_ports,
        "backends": backend_count,
        "distinct_backends": distinct_backends,
        "nodes": scale.nodes,
        "snapshot_messages": len(snapshot),
    }
    next_hops = {_ip(_NODES + 1 + n): _node_mac("02:00", n + 1) for n in range(1, scale.nodes)}
    return Workload(scale, snapshot, kubernetes, ports, probes, churn, counts, next_hops)


def _endpoint_id(workload_id: str) -> fb.WorkloadEndpointID:
    return fb.WorkloadEndpointID(orchestrator_id="k8s", workload_id=workload_id, endpoint_id="eth0")


def _node_messages(scale: Scale, rng: random.Random) -> list[fb.ToDataplane]:
    """Felix's config, the cluster's hosts, IP pool and per-node block routes."""
    config = {
        "FelixHostname": HOSTNAME,
        "ReportingIntervalSecs": "30",
        "LogSeverityScreen": "Info",
        "DefaultEndpointToHostAction": "Drop",
        "FailsafeInboundHostPorts": "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:6443",
        "IptablesRefreshInterval": "90",
    }
    out = [fb.ToDataplane(config_update=fb.ConfigUpdate(config=config))]
    out.append(
        fb.ToDataplane(
            ipam_pool_update=fb.IPAMPoolUpdate(
                id="10.64.0.0-10",
                pool=fb.IPAMPool(cidr="10.64.0.0/10", masquerade=True, vxlan_mode="always"),
            )
        )
    )
    for n in range(scale.nodes):
        name = HOSTNAME if n == 0 else f"node-{n + 1}"
        out.append(
            fb.ToDataplane(
                host_metadata_v4v6_update=fb.HostMetadataV4V6Update(
                    hostname=name,
                    ipv4_addr=_ip(_NODES + 1 + n),
                    labels={"kubernetes.io/hostname": name, "zone": f"z{rng.randrange(3)}"},
                )
            )
        )
        out.append(
            fb.ToDataplane(
                vtep_update=fb.VXLANTunnelEndpointUpdate(
                    node=name,
                    mac=_node_mac("66:00", n + 1),
                    ipv4_addr=_ip(_REMOTE + n * 4 * 64),
                    parent_device_ip=_ip(_NODES + 1 + n),
                )
            )
        )
        if n == 0:
            continue
        for block in range(4):
            out.append(
                fb.ToDataplane(
                    route_update=fb.RouteUpdate(
                        types=fb.REMOTE_WORKLOAD,
                        ip_pool_type=fb.VXLAN,
                        dst=f"{_ip(_REMOTE + (n * 4 + block) * 64)}/26",
                        dst_node_name=name,
                        dst_node_ip=_ip(_NODES + 1 + n),
                    )
                )
            )
    return out


def _services(
    scale: Scale, rng: random.Random, namespaces: list[str], local_ips: list[int], pool: list[int]
) -> tuple[list[dict[str, Any]], int, int, int]:
    """Services with EndpointSlices (some backends on this node), a tenth NodePort, a few with
    a second port and ClientIP affinity. Returns the objects, backend count, distinct
    (address, port) backends and service ports."""
    objects: list[dict[str, Any]] = []
    backends = 0
    service_ports = 0
    distinct: set[tuple[int, int]] = set()
    for k in range(scale.services):
        ns = namespaces[k % len(namespaces)]
        name = f"svc-{k}"
        ports: list[dict[str, Any]] = [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
        ]
        if k % 5 == 0:
            ports.append({"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"})
        spec: dict[str, Any] = {
            "type": "ClusterIP",
            "clusterIP": _ip(_CLUSTER_IPS + 10 + k),
            "clusterIPs": [_ip(_CLUSTER_IPS + 10 + k)],
            "ports": ports,
            "selector": {"app": name},
        }
        if k % 10 == 3:
            spec["type"] = "NodePort"
            for i, port in enumerate(ports):
                port["nodePort"] = 30000 + (2 * k + i) % 2768
        if k % 20 == 7:
            spec["sessionAffinity"] = "ClientIP"
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "uid": _hash(name, 32)},
                "spec": spec,
            }
        )
        service_ports += len(ports)
        endpoints = []
        for b in range(scale.backends):
            local = b % 3 == 0
            addr = rng.choice(local_ips) if local else rng.choice(pool[len(local_ips) :])
            endpoints.append(
                {
                    "addresses": [_ip(addr)],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                    "nodeName": HOSTNAME if local else f"node-{2 + b % max(1, scale.nodes - 1)}",
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": f"{name}-{b}"},
                }
            )
            for port in ports:
                distinct.add((addr, int(port["targetPort"])))
        backends += len(endpoints)
        objects.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "addressType": "IPv4",
                "metadata": {
                    "name": f"{name}-{_hash(name, 5)}",
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "endpoints": endpoints,
                "ports": [
                    {"name": p["name"], "port": p["targetPort"], "protocol": "TCP"} for p in ports
                ],
            }
        )
    return objects, backends, len(distinct), service_ports
