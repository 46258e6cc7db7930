"""A felix-p4 node among regular Calico nodes, on each engine, in network namespaces: Linux is
the peer, configured as Felix's own dataplane configures it, and the pipeline's frames cross
real interfaces.

```
 felix-p4 node (the lab: pods, device, node)         lan bridge        regular nodes
 pods --cali--[device: P4 ports]--uplink ------------- br0 ------------ node-2  VXLAN (kernel)
                         host port                      |    |  |------ node-3  IP-in-IP
                    node ns: felix-host 192.0.2.11      |    |             (user space: no ipip
                    (NAT, next-hop resolution)          |    |              module here)
                                                        |    +--------- node-4  no-encap,
                                                        +-- outside              CrossSubnet
```

node-2 is what Felix's VXLAN manager makes (vxlan_mgr.go): `vxlan.calico` with VNI 4096, port
4789, our VTEP's permanent neighbour and FDB entries and `<block> via <VTEP> onlink`, the same
for IPv6 on `vxlan-v6.calico`, and Felix's input filter (VXLAN only from known VTEPs). node-3's
IP-in-IP end is `ipip_peer.py` (protocol 4 node to node, tests/netns/ipip_peer.py). node-4
routes our block through our address. Pods on the regular nodes are plumbed as Calico's CNI
plumbs them. Checks: pings and TCP both ways, IPv4 and IPv6 over VXLAN, IP-in-IP, no-encap and
CrossSubnet; a pod reaching an outside host that sees the node's address (natOutgoing in the
node's NAT); a denied flow stays denied.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felix_p4.lab import felix as lab_felix
from felix_p4.lab.demo import serve
from felix_p4.lab.node import running_node, start_http_server, www_root
from felix_p4.lab.topology import (
    GATEWAY_MAC,
    NODE_NEXT_HOP_V4,
    NODE_NEXT_HOP_V6,
    Lab,
    wire_frames,
)
from tests.netns.conftest import Running, lab_unavailable

pytestmark = pytest.mark.netns

IPIP_PEER = Path(__file__).with_name("ipip_peer.py")
LAN_MTU = 1600  # room for 1500-byte pod packets in VXLAN (50 bytes, IPv6 70) or IP-in-IP (20)
NODE_MAC = "02:00:00:00:00:11"  # the node's MAC on the network (felix-host)
VTEP, VTEP6 = "66:00:00:00:00:0b", "66:00:00:00:60:0b"
N2_VTEP, N2_VTEP6 = "66:00:00:00:00:0c", "66:00:00:00:60:0c"
UPLINK = "uplink"
# Regular nodes' pods: (node, pod, IPv4, IPv6 or "")
REMOTE = ("node-2", "remote", "10.65.1.2", "fd00:65:0:1::2")
IPIP_POD = ("node-3", "tunnelled", "10.66.3.2", "")
PLAIN_POD = ("node-4", "plain", "10.67.4.2", "")
CROSS_POD = ("node-4", "crossed", "10.68.4.2", "")
OUTSIDE = "192.0.2.100"


def sh(*argv: str, ns: str | None = None) -> str:
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, timeout=20, check=False)
    if done.returncode:
        raise AssertionError(f"{' '.join(full)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def msg(**payload: Any) -> Any:
    return lab_felix.message(**payload)


def felix_network() -> list[Any]:
    """What Felix sends node-1 about the other nodes (routes, VTEPs, hosts, pools)."""

    def route(types: str, pool: str, dst: str, node: str, node_ip: str, **kw: Any) -> Any:
        fields = {"types": types, "ip_pool_type": pool, "dst": dst, "dst_node_name": node}
        return msg(route_update={**fields, "dst_node_ip": node_ip, **kw})

    return [
        msg(
            ipam_pool_update={
                "id": "10.66.0.0-16",
                "pool": {"cidr": "10.66.0.0/16", "ipip_mode": "always"},
            }
        ),
        msg(ipam_pool_update={"id": "10.67.0.0-16", "pool": {"cidr": "10.67.0.0/16"}}),
        msg(
            ipam_pool_update={
                "id": "10.68.0.0-16",
                "pool": {"cidr": "10.68.0.0/16", "vxlan_mode": "cross-subnet"},
            }
        ),
        *(
            msg(
                host_metadata_v4v6_update={
                    "hostname": f"node-{n}",
                    "ipv4_addr": f"192.0.2.1{n}/24",
                    "ipv6_addr": f"2001:db8::1{n}/64",
                }
            )
            for n in (2, 3, 4)
        ),
        msg(
            vtep_update={
                "node": "node-1",
                "mac": VTEP,
                "ipv4_addr": "10.65.0.0",
                "parent_device_ip": "192.0.2.11",
                "mac_v6": VTEP6,
                "ipv6_addr": "fd00:65::",
                "parent_device_ipv6": "2001:db8::11",
            }
        ),
        msg(
            vtep_update={
                "node": "node-2",
                "mac": N2_VTEP,
                "ipv4_addr": "10.65.1.0",
                "parent_device_ip": "192.0.2.12",
                "mac_v6": N2_VTEP6,
                "ipv6_addr": "fd00:65:0:1::",
                "parent_device_ipv6": "2001:db8::12",
            }
        ),
        route("LOCAL_WORKLOAD", "VXLAN", "10.65.0.0/26", "node-1", "192.0.2.11"),
        route("REMOTE_WORKLOAD", "VXLAN", "10.65.1.0/26", "node-2", "192.0.2.12"),
        route("REMOTE_WORKLOAD", "VXLAN", "fd00:65:0:1::/122", "node-2", "2001:db8::12"),
        route("REMOTE_WORKLOAD", "IPIP", "10.66.3.0/26", "node-3", "192.0.2.13"),
        route("REMOTE_WORKLOAD", "NO_ENCAP", "10.67.4.0/26", "node-4", "192.0.2.14"),
        route("REMOTE_WORKLOAD", "VXLAN", "10.68.4.0/26", "node-4", "192.0.2.14", same_subnet=True),
    ]


class Cluster:
    """The lab (node-1) plus the LAN, the regular nodes and the outside host."""

    def __init__(self) -> None:
        self.lab = Lab(
            settings={
                "ports": {"uplink": UPLINK},
                "network": {"netlink": True, "nat_outgoing": True},
            },
            felix_extra=felix_network(),
            extra_ports={UPLINK: 0},
        )
        self.names: dict[str, str] = {}

    def ns(self, name: str) -> str:
        return self.names[name]

    def _namespace(self, name: str) -> str:
        full = f"{self.lab.prefix}-{name}"
        sh("ip", "netns", "add", full)
        self.lab.created.append(full)  # the lab removes it with its own
        self.names[name] = full
        return full

    def build(self) -> None:
        self.lab.build()
        try:
            self._build()
        except BaseException:
            self.lab.destroy()
            raise

    def _build(self) -> None:
        lan = self._namespace("lan")
        sh("ip", "link", "add", "br0", "type", "bridge", ns=lan)
        sh("ip", "link", "set", "br0", "up", ns=lan)
        # node-1: the device's uplink on the LAN, the node's host interface an ordinary host.
        self._lan_link(self.lab.device_ns, UPLINK, "to-node-1")
        node = self.lab.node_ns
        sh("ip", "link", "set", "felix-host", "address", NODE_MAC, ns=node)
        # A new MAC flushes the link's neighbours, permanent ones too: the next hop towards the
        # pods' block (the lab's static entry) must be there again, or the host cannot route
        # anything to the pods (replies of natOutgoing among them).
        for family, hop in (("-4", NODE_NEXT_HOP_V4), ("-6", NODE_NEXT_HOP_V6)):
            sh(
                "ip",
                family,
                "neigh",
                "replace",
                hop,
                "lladdr",
                GATEWAY_MAC,
                "dev",
                "felix-host",
                "nud",
                "permanent",
                ns=node,
            )
        sh("ip", "route", "add", "192.0.2.0/24", "dev", "felix-host", ns=node)
        sh("ip", "-6", "route", "add", "2001:db8::/64", "dev", "felix-host", ns=node)
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0"):
            sh("sysctl", "-qw", key, ns=node)
        sh("sysctl", "-qw", "net.ipv4.conf.felix-host.send_redirects=0", ns=node)
        self._vxlan_node()
        self._ipip_node()
        self._plain_node()
        outside = self._namespace("outside")
        self._lan_link(outside, "eth0", "to-outside")
        sh("ip", "addr", "add", f"{OUTSIDE}/24", "dev", "eth0", ns=outside)

    def _lan_link(self, ns: str, name: str, lan_end: str) -> None:
        lan = self.ns("lan")
        sh(
            "ip",
            "link",
            "add",
            name,
            "netns",
            ns,
            "mtu",
            str(LAN_MTU),
            "type",
            "veth",
            "peer",
            "name",
            lan_end,
            "netns",
            lan,
            "mtu",
            str(LAN_MTU),
        )
        sh("ip", "link", "set", lan_end, "master", "br0", "up", ns=lan)
        sh("ip", "link", "set", name, "up", ns=ns)
        # What reaches the uplink must be a wire's frames: complete checksums, no TSO (a veth
        # would hand on checksums left to "hardware"; docs/interfaces.md).
        wire_frames(ns, name)

    def _regular_node(self, name: str, address: str) -> str:
        ns = self._namespace(name)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        self._lan_link(ns, "eth0", f"to-{name}")
        sh("ip", "addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
        # A node has a default route; proxy ARP answers the pods' 169.254.1.1 only with a
        # route to it (the router itself is never needed here).
        sh("ip", "route", "add", "default", "via", "192.0.2.1", "dev", "eth0", ns=ns)
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            sh("sysctl", "-qw", key, ns=ns)
        return ns

    def _pod(self, node_ns: str, pod: str, ipv4: str, ipv6: str) -> str:
        """A pod as Calico's CNI plumbs it, on a regular node."""
        ns = self._namespace(pod)
        host = f"cali{pod[:11]}"
        sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", host, ns=ns)
        sh("ip", "link", "set", host, "netns", node_ns, ns=ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        sh("ip", "addr", "add", f"{ipv4}/32", "dev", "eth0", ns=ns)
        sh("ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link", ns=ns)
        sh("ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", ns=ns)
        sh("ip", "link", "set", host, "address", "ee:ee:ee:ee:ee:ee", "up", ns=node_ns)
        sh("sysctl", "-qw", f"net.ipv4.conf.{host}.proxy_arp=1", ns=node_ns)
        sh("ip", "route", "add", f"{ipv4}/32", "dev", host, "scope", "link", ns=node_ns)
        if ipv6:
            sh("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0", ns=ns)
            sh("ip", "-6", "addr", "add", f"{ipv6}/128", "dev", "eth0", ns=ns)
            sh(
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fe80::ecee:eeff:feee:eeee",
                "dev",
                "eth0",
                ns=ns,
            )
            sh("ip", "-6", "route", "add", f"{ipv6}/128", "dev", host, ns=node_ns)
        return ns

    def _vxlan_node(self) -> None:
        """node-2 as Felix's VXLAN managers leave it (IPv4 and IPv6)."""
        ns = self._regular_node("node-2", "192.0.2.12")
        sh("ip", "addr", "add", "2001:db8::12/64", "dev", "eth0", "nodad", ns=ns)
        for dev, local, mac, tunnel, ours, our_vtep, parent, block, six in (
            (
                "vxlan.calico",
                "192.0.2.12",
                N2_VTEP,
                "10.65.1.0/32",
                "10.65.0.0",
                VTEP,
                "192.0.2.11",
                "10.65.0.0/26",
                False,
            ),
            (
                "vxlan-v6.calico",
                "2001:db8::12",
                N2_VTEP6,
                "fd00:65:0:1::/128",
                "fd00:65::",
                VTEP6,
                "2001:db8::11",
                "fd00:65::/122",
                True,
            ),
        ):
            sh(
                "ip",
                "link",
                "add",
                dev,
                "type",
                "vxlan",
                "id",
                "4096",
                "local",
                local,
                "dev",
                "eth0",
                "dstport",
                "4789",
                "nolearning",
                ns=ns,
            )
            sh("ip", "link", "set", dev, "address", mac, "up", ns=ns)
            family = ["-6"] if six else []
            sh("ip", *family, "addr", "add", tunnel, "dev", dev, *(["nodad"] if six else []), ns=ns)
            sh(
                "ip",
                *family,
                "neigh",
                "add",
                ours,
                "lladdr",
                our_vtep,
                "dev",
                dev,
                "nud",
                "permanent",
                ns=ns,
            )
            sh(
                "bridge",
                "fdb",
                "add",
                our_vtep,
                "dev",
                dev,
                "dst",
                parent,
                "self",
                "permanent",
                ns=ns,
            )
            sh("ip", *family, "route", "add", block, "via", ours, "dev", dev, "onlink", ns=ns)
        # Felix's input filter (rules/static.go): VXLAN only from known VTEPs (ours).
        rules = (
            "table inet calico {\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            "    udp dport 4789 ip saddr != 192.0.2.11 drop\n"
            "    udp dport 4789 ip6 saddr != 2001:db8::11 drop\n"
            "  }\n"
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"],
            input=rules,
            text=True,
            check=True,
            timeout=20,
        )
        self._pod(ns, REMOTE[1], REMOTE[2], REMOTE[3])

    def _ipip_node(self) -> None:
        ns = self._regular_node("node-3", "192.0.2.13")
        self.ipip = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                str(IPIP_PEER),
                "tunl",
                "10.65.0.0/26=192.0.2.11",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.ipip.stdout is not None and self.ipip.stdout.readline().strip() == "ready"
        sh("ip", "addr", "add", "10.66.3.0/32", "dev", "tunl", ns=ns)
        sh("ip", "link", "set", "tunl", "up", ns=ns)
        sh("ip", "route", "add", "10.65.0.0/26", "dev", "tunl", ns=ns)
        self._pod(ns, IPIP_POD[1], IPIP_POD[2], "")

    def _plain_node(self) -> None:
        ns = self._regular_node("node-4", "192.0.2.14")
        sh("ip", "route", "add", "10.65.0.0/26", "via", "192.0.2.11", "dev", "eth0", ns=ns)
        self._pod(ns, PLAIN_POD[1], PLAIN_POD[2], "")
        self._pod(ns, CROSS_POD[1], CROSS_POD[2], "")

    def destroy(self) -> None:
        if getattr(self, "ipip", None) is not None:
            self.ipip.kill()
            self.ipip.wait()
        self.lab.destroy()


@pytest.fixture(scope="module", params=["model", "dpdk"])
def cluster(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Running]]:
    engine = request.param
    reason = lab_unavailable(engine) or (None if shutil.which("nft") else "no nft command")
    if reason is not None:
        pytest.skip(f"the {engine} cluster cannot run here: {reason}")
    cluster = Cluster()
    loop = asyncio.new_event_loop()
    try:
        cluster.build()
        context = running_node(cluster.lab, engine)
        node = loop.run_until_complete(asyncio.wait_for(context.__aenter__(), 90))
        try:
            loop.run_until_complete(asyncio.wait_for(serve(cluster.lab, node), 30))
            yield cluster, Running(engine, cluster.lab, node, loop)
        finally:
            loop.run_until_complete(context.__aexit__(None, None, None))
    finally:
        loop.close()
        cluster.destroy()


def ping(ns: str, address: str, count: int = 3) -> bool:
    """Every echo back; the first try may wait for next hops to resolve, so a few rounds."""
    six = ["-6"] if ":" in address else []
    for _ in range(8):
        done = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "ping",
                *six,
                "-c",
                str(count),
                "-i",
                "0.2",
                "-W",
                "1",
                address,
            ],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        if done.returncode == 0:
            return True
    return False


def test_pods_reach_pods_on_regular_nodes_over_vxlan_ipip_and_plain_routing(cluster):
    c, running = cluster
    client = running.lab.pod_ns(running.lab.pod("client"))
    for node, pod, ipv4, ipv6 in (REMOTE, IPIP_POD, PLAIN_POD, CROSS_POD):
        assert ping(client, ipv4), f"client -> {pod} on {node} ({ipv4})"
        assert ping(c.ns(pod), running.lab.pod("client").ipv4), f"{pod} on {node} -> client"
        if ipv6:
            assert ping(client, ipv6), f"client -> {pod} ({ipv6})"
            assert ping(c.ns(pod), running.lab.pod("client").ipv6), f"{pod} -> client (IPv6)"


_GET = """
import hashlib, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as reply:
        body = reply.read()
    print(reply.status, len(body), hashlib.sha256(body).hexdigest())
except Exception as exc:
    print(type(exc).__name__, exc)
    sys.exit(1)
"""


def get(ns: str, url: str, timeout: float = 5.0) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _GET, url, str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 15,
        check=False,
    )
    return done.stdout.strip()


def _digest(body: bytes) -> str:
    import hashlib

    return f"200 {len(body)} {hashlib.sha256(body).hexdigest()}"


def test_tcp_crosses_both_ways_with_full_size_segments(cluster):
    c, running = cluster
    lab, node = running.lab, running.node
    remote = c.ns(REMOTE[1])
    big = bytes(range(256)) * 4096  # 1 MiB: many full-size segments inside the tunnel
    if not any(s.what.endswith(remote) for s in node.servers):
        server = running.run(start_http_server(lab, remote, "hello from node-2", node.workdir))
        node.servers.append(server)
        (www_root(node.workdir, remote) / "big").write_bytes(big)
    client = lab.pod_ns(lab.pod("client"))
    for url in ("http://10.65.1.2:8080/big", "http://[fd00:65:0:1::2]:8080/big"):
        assert get(client, url, 20) == _digest(big), f"client GET {url}"
    web = lab.pod("web")
    for name in (REMOTE[1], IPIP_POD[1], PLAIN_POD[1], CROSS_POD[1]):
        got = get(c.ns(name), f"http://{web.ipv4}:8080/")
        assert got.startswith("200"), f"{name} GET the web pod on node-1: {got}"
    got = get(remote, f"http://[{web.ipv6}]:8080/")
    assert got.startswith("200"), f"remote GET the web pod over IPv6 VXLAN: {got}"


_LISTEN = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
s.settimeout(float(sys.argv[1]))
print("listening", flush=True)
data, peer = s.recvfrom(100)
print(peer[0], flush=True)
s.sendto(b"back", peer)  # the reply, to the address and port it came from
"""


def test_a_pod_leaving_the_cluster_is_seen_with_the_node_address(cluster):
    c, running = cluster
    client = running.lab.pod_ns(running.lab.pod("client"))
    listener = subprocess.Popen(
        ["ip", "netns", "exec", c.ns("outside"), sys.executable, "-c", _LISTEN, "15"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
        send = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        send += "s.settimeout(0.2)\nfor _ in range(40):\n"
        send += f"    s.sendto(b'hi', ('{OUTSIDE}', 9999))\n"
        send += "    try:\n        print(s.recv(100).decode(), flush=True); break\n"
        send += "    except TimeoutError:\n        pass\n"
        sender = subprocess.Popen(
            ["ip", "netns", "exec", client, sys.executable, "-c", send],
            stdout=subprocess.PIPE,
            text=True,
        )
        seen = listener.stdout.readline().strip()
        # natOutgoing is stateful: the host's conntrack translates the reply back to the pod.
        reply, _ = sender.communicate(timeout=15)
    finally:
        listener.kill()
        listener.wait()
        sender.kill()
        sender.wait()
    assert seen == "192.0.2.11", f"the outside host saw {seen!r}"
    assert reply.strip() == "back", f"the pod got {reply!r} back"


def test_a_denied_flow_from_another_node_stays_denied(cluster):
    c, running = cluster
    lab, node = running.lab, running.node
    web, client = lab.pod("web"), lab.pod("client")
    running.run(node.apply(lab_felix.allow_only_from(lab, web, [client])))
    try:
        denied = get(c.ns(REMOTE[1]), f"http://{web.ipv4}:8080/", 3)
        assert "timed out" in denied.lower(), f"node-2's pod was not denied: {denied}"
        assert get(lab.pod_ns(client), f"http://{web.ipv4}:8080/").startswith("200")
        # The other direction is a new flow of our client's, not a reply: still allowed.
        assert ping(lab.pod_ns(client), REMOTE[2])
    finally:
        running.run(node.apply(lab_felix.remove_policy(lab, web, [client])))
