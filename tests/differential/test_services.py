"""Random Kubernetes services on both engines, programmed by the driver: connections from pods
and from outside to cluster IPs and node ports, each one's later packets (pinned to its
backend), its reply (translated back to the service), ClientIP affinity across connections,
hairpin (a pod reaching itself through its service), remote and not-ready endpoints.

The engines may choose different backends (the hash is the target's): each choice must be one
of the service port's backends and kept for the connection, and each backend's reply (the
reply to what that engine sent) must leave both engines as the same bytes.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from engines import Backend, EnginePair, Outcome, cases
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from felix_p4.softswitch.packet import build

HOST_PORT = 100
HOST_MAC = "02:42:c0:a8:00:01"
NODE = {4: "192.168.0.11", 6: "fd00:192::11"}
REMOTE_NODE = {4: "192.168.0.12", 6: "fd00:192::12"}
OUTSIDE = {4: ["203.0.113.5", "203.0.113.6"], 6: ["2001:db8::5", "2001:db8::6"]}
PROTOCOLS = {"TCP": ("tcp", 6), "UDP": ("udp", 17), "SCTP": ("sctp", 132)}
SEEDS = range(cases(sample=2, thorough=150))


class World:
    """Pods on node-1 (some dual-stack), services with local, remote and not-ready
    endpoints, as a scenario a driver runs."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pods = []
        for i in range(rng.randint(2, 5)):
            self.pods.append(
                {
                    "name": f"cali-p{i}",
                    "port": i + 1,
                    "mac": f"0a:58:0a:41:00:{0x10 + i:02x}",
                    4: f"10.65.0.{0x10 + i}",
                    6: f"fd00:65::{0x10 + i:x}" if rng.random() < 0.6 else None,
                }
            )
        self.services = [self._service(k) for k in range(rng.randint(1, 3))]

    def _service(self, k: int) -> dict[str, Any]:
        rng = self.rng
        families = [4, 6] if rng.random() < 0.5 else [4]
        ports = []
        for j, proto in enumerate(rng.sample(sorted(PROTOCOLS), rng.randint(1, 2))):
            ports.append(
                {
                    "name": f"p{j}",
                    "port": rng.choice([80, 53, 443]),
                    "targetPort": rng.choice([8080, 5353, 9000]),
                    "nodePort": 30000 + 10 * k + j,
                    "protocol": proto,
                }
            )
        # Distinct (port, protocol) per service, as Kubernetes requires.
        ports = list({(p["port"], p["protocol"]): p for p in ports}.values())
        endpoints = {}
        for family in families:
            chosen = []
            for pod in self.pods:
                if pod[family] and rng.random() < 0.5:
                    ready = rng.random() < 0.9
                    chosen.append((pod[family], "node-1", ready))
            for r in range(rng.choice([0, 0, 1, 2])):
                remote = f"10.65.9.{r + 1}" if family == 4 else f"fd00:65:9::{r + 1}"
                chosen.append((remote, "node-2", True))
            endpoints[family] = chosen
        # ClientIP affinity is kept per service port and traffic scope, so an affinity service
        # may have several ports and a Local external policy.
        affinity = rng.random() < 0.3
        return {
            "name": f"svc-{k}",
            "type": rng.choice(["ClusterIP", "NodePort"]),
            "ips": {4: f"10.96.0.{0x10 + k}", 6: f"fd00:96::{0x10 + k:x}"},
            "families": families,
            "ports": ports,
            "affinity": affinity,
            "external_local": rng.random() < 0.3,
            "endpoints": endpoints,
        }

    def scenario(self) -> dict[str, Any]:
        felix: list[dict[str, Any]] = [
            {"config_update": {"config": {"FelixHostname": "node-1"}}},
            {
                "host_metadata_v4v6_update": {
                    "hostname": "node-1",
                    "ipv4_addr": NODE[4],
                    "ipv6_addr": NODE[6],
                }
            },
            {
                "active_profile_update": {
                    "id": {"name": "kns.default"},
                    "profile": {
                        "inbound_rules": [{"action": "allow"}],
                        "outbound_rules": [{"action": "allow"}],
                    },
                }
            },
        ]
        for pod in self.pods:
            endpoint: dict[str, Any] = {
                "state": "active",
                "name": pod["name"],
                "mac": pod["mac"],
                "ipv4_nets": [f"{pod[4]}/32"],
                "profile_ids": ["kns.default"],
            }
            if pod[6]:
                endpoint["ipv6_nets"] = [f"{pod[6]}/128"]
            felix.append(
                {
                    "workload_endpoint_update": {
                        "id": {
                            "orchestrator_id": "k8s",
                            "workload_id": f"default/{pod['name']}",
                            "endpoint_id": "eth0",
                        },
                        "endpoint": endpoint,
                    }
                }
            )
        felix.append({"in_sync": {}})
        ports = {p["name"]: p["port"] for p in self.pods}
        return {
            "config": {"ports": {"map": {**ports, "host": HOST_PORT}}},
            "felix": felix,
            "kubernetes": [doc for s in self.services for doc in self._documents(s)],
        }

    def _documents(self, svc: dict[str, Any]) -> list[dict[str, Any]]:
        spec: dict[str, Any] = {
            "type": svc["type"],
            "clusterIP": svc["ips"][4],
            "clusterIPs": [svc["ips"][f] for f in svc["families"]],
            "ports": [{k: v for k, v in p.items() if k != "nodePort"} for p in svc["ports"]],
        }
        if svc["type"] == "NodePort":
            spec["ports"] = svc["ports"]
            spec["externalTrafficPolicy"] = "Local" if svc["external_local"] else "Cluster"
        if svc["affinity"]:
            spec["sessionAffinity"] = "ClientIP"
        meta = {"name": svc["name"], "namespace": "default"}
        docs: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
        ]
        for family, endpoints in svc["endpoints"].items():
            docs.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "addressType": f"IPv{family}",
                    "metadata": {
                        "name": f"{svc['name']}-v{family}",
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": svc["name"]},
                    },
                    "endpoints": [
                        {"addresses": [a], "nodeName": node, "conditions": {"ready": ready}}
                        for a, node, ready in endpoints
                    ],
                    "ports": [
                        {"name": p["name"], "port": p["targetPort"], "protocol": p["protocol"]}
                        for p in svc["ports"]
                    ],
                }
            )
        return docs

    def connection(self) -> dict[str, Any]:
        """A random connection to a front end: who opens it, from where, to which address."""
        rng = self.rng
        svc = rng.choice(self.services)
        family = rng.choice(svc["families"])
        port = rng.choice(svc["ports"])
        clients = [p for p in self.pods if p[family]]
        if clients and rng.random() < 0.7:
            pod = rng.choice(clients)
            src, in_port, mac = pod[family], pod["port"], pod["mac"]
        else:
            src, in_port, mac = rng.choice(OUTSIDE[family]), HOST_PORT, HOST_MAC
        dst, dport = svc["ips"][family], port["port"]
        if svc["type"] == "NodePort" and rng.random() < 0.5:
            dst, dport = NODE[family], port["nodePort"]
        return {
            "in_port": in_port,
            "src_mac": mac,
            "src": src,
            "dst": dst,
            "proto": PROTOCOLS[port["protocol"]][0],
            "sport": rng.randint(1024, 65535),
            "dport": dport,
        }

    def reach(self, backend: Backend) -> tuple[str, int]:
        """Where a frame to `backend` goes: its pod's port, else the host."""
        for pod in self.pods:
            if backend[0] in (pod[4], pod[6]):
                return "forward", pod["port"]
        return "host", HOST_PORT

    def mac_at(self, port: int) -> str:
        return next((p["mac"] for p in self.pods if p["port"] == port), HOST_MAC)


def packet(conn: dict[str, Any], **changes: Any) -> bytes:
    spec = {k: v for k, v in conn.items() if k != "in_port"}
    return build({**spec, **changes})


def reply_to(world: World, sent: Outcome) -> tuple[int, bytes]:
    """The backend's answer to what `sent` delivered: into the port it left by."""
    assert sent.out is not None and sent.egress_port is not None
    out = Ether(sent.out)
    ip = out[IP] if IP in out else out[IPv6]
    l4 = ip.payload
    spec: dict[str, Any] = {
        "src": ip.dst,
        "dst": ip.src,
        "proto": ip.proto if IP in out else ip.nh,
        "sport": l4.dport,
        "dport": l4.sport,
        "src_mac": world.mac_at(sent.egress_port),
    }
    if spec["proto"] == 6:
        spec["tcp_flags"] = "SA"
    return sent.egress_port, build(spec)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed-{s}")
def test_random_services_do_the_same_on_both_engines(pair: EnginePair, seed: int) -> None:
    rng = random.Random(seed)
    world = World(rng)
    _, book = pair.drive(world.scenario())
    for i in range(cases(sample=12, thorough=40)):
        conn = world.connection()
        first = packet(conn)
        service = book.flow(first)
        backends, flow = service if service else (None, None)
        what = f"connection {i} {conn}"
        sent = pair.send(
            conn["in_port"], first, backends=backends, flow=flow, reach=world.reach, what=what
        )
        again = packet(conn, tcp_flags="A") if conn["proto"] == "tcp" else first
        pair.send(
            conn["in_port"],
            again,
            backends=backends,
            flow=flow,
            reach=world.reach,
            what=f"{what}, again",
        )
        if sent["model"].out is None:
            continue
        replies = {engine: reply_to(world, o) for engine, o in sent.items()}
        pair.send_each(replies, what=f"the reply to {what}")
        if rng.random() < 0.3:
            # The client's next packet after the reply: still the same backend.
            pair.send(
                conn["in_port"],
                again,
                backends=backends,
                flow=flow,
                reach=world.reach,
                what=f"{what}, after the reply",
            )
