"""natOutgoing in the host's NAT, against the kernel: the ruleset follows Felix's exclusions,
NATOutgoingAddress and NATPortRange, and applied by `nft` in a namespace of our own it gives a
pod address leaving through it the node's address (a UDP datagram between three namespaces:
pod side, node, outside)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import subprocess
import uuid

import pytest

from felix_p4.hostnat import HostNat, nat_ruleset
from felix_p4.model.felix_config import FelixConfig
from felix_p4.model.state import DataplaneState, HostAddresses, IpamPool

pytestmark = pytest.mark.netns


def _state(**config: str) -> DataplaneState:
    state = DataplaneState()
    state.set_config(FelixConfig.from_map({"FelixHostname": "node-1", **config}))
    state.upsert_pool("a", IpamPool(ipaddress.ip_network("10.65.0.0/16"), True, "", "always"))
    state.upsert_pool("b", IpamPool(ipaddress.ip_network("10.66.0.0/16"), False, "", ""))
    state.set_host(HostAddresses("node-1", ipaddress.ip_address("192.0.2.1"), None))
    return state


def test_the_ruleset_follows_felix_exclusions_address_and_port_range():
    plain = nat_ruleset(_state())
    assert "ip saddr @masq-pools ip daddr != @all-pools masquerade fully-random" in plain
    assert "all-hosts" not in plain
    strict = nat_ruleset(
        _state(
            NATOutgoingExclusions="IPPoolsAndHostIPs",
            NATOutgoingAddress="192.0.2.9",
            NATPortRange="40000:40100",
        )
    )
    assert "ip daddr != @all-hosts" in strict
    assert "meta l4proto { tcp, udp } snat to 192.0.2.9:40000-40100 fully-random" in strict
    assert "elements = { 10.65.0.0/16, 10.66.0.0/16 }" in strict  # every pool is the cluster's
    # IPv6 never gets NATOutgoingAddress (an IPv4 address).
    assert "snat to 192.0.2.9" not in strict.split("table ip6")[1]


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


@pytest.fixture
def three_namespaces():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("nft") is None:
        pytest.skip("no nft command (Debian: apt-get install nftables)")
    tag = uuid.uuid4().hex[:6]
    pod, node, outside = f"p4pod-{tag}", f"p4node-{tag}", f"p4out-{tag}"
    for ns in (pod, node, outside):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for name, here, peer, there in (
            ("veth-pod", pod, "veth-node", node),
            ("veth-up", node, "veth-out", outside),
        ):
            link = ["ip", "link", "add", name, "netns", here, "type", "veth"]
            subprocess.run([*link, "peer", "name", peer, "netns", there], check=True)
        _ip(pod, "addr", "add", "10.65.0.2/24", "dev", "veth-pod")
        _ip(node, "addr", "add", "10.65.0.1/24", "dev", "veth-node")
        _ip(node, "addr", "add", "192.0.2.1/24", "dev", "veth-up")
        _ip(outside, "addr", "add", "192.0.2.2/24", "dev", "veth-out")
        for ns, dev in (
            (pod, "veth-pod"),
            (node, "veth-node"),
            (node, "veth-up"),
            (outside, "veth-out"),
        ):
            _ip(ns, "link", "set", dev, "up")
        _ip(pod, "route", "add", "default", "via", "10.65.0.1")
        subprocess.run(
            ["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True
        )
        yield pod, node, outside
    finally:
        for ns in (pod, node, outside):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_a_pod_leaving_the_cluster_gets_the_node_address(three_namespaces):
    pod, node, outside = three_namespaces
    from pyroute2 import netns as ns

    ns.pushns(node)
    try:
        assert asyncio.run(HostNat(True).apply(_state()))
    finally:
        ns.popns()
    listen = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.bind(('0.0.0.0', 9999)); s.settimeout(10); data, peer = s.recvfrom(100); "
        "print(peer[0])"
    )
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", outside, "python3", "-c", listen],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        send = (
            "import socket, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for _ in range(50):\n"
            "    s.sendto(b'hi', ('192.0.2.2', 9999)); time.sleep(0.1)\n"
        )
        sender = subprocess.Popen(["ip", "netns", "exec", pod, "python3", "-c", send])
        seen, _ = receiver.communicate(timeout=15)
        sender.kill()
        sender.wait()
    finally:
        receiver.kill()
    assert seen.strip() == "192.0.2.1"
