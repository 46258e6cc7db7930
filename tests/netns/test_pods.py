"""Real pods through felix-p4, on each engine: Linux kernels in network namespaces send and
judge the frames (ARP, neighbour discovery, checksums, TCP), the driver runs as Felix runs it
and the target's ports are the pods' interfaces. Root only; skipped with the reason elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import grpc
import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from felix_p4.lab import felix as lab_felix
from felix_p4.lab.checks import (
    Outcome,
    age_gateway_neighbours,
    gateway_neighbours,
    http_digest,
    http_get,
    ping,
)
from felix_p4.lab.demo import scenario
from felix_p4.lab.node import in_netns, www_root
from felix_p4.lab.topology import GATEWAY_MAC, GATEWAY_V4, GATEWAY_V6, in_namespace
from felix_p4.softswitch.client import TargetClient

pytestmark = pytest.mark.netns

PACKET_HOST = 0


def failures(outcomes: list[Outcome]) -> str:
    return "\n".join(o.line() for o in outcomes if not o.ok)


def test_the_demo_works_pod_to_pod_through_services_to_the_host_and_under_policy(running):
    lines: list[str] = []

    outcomes = running.run(scenario(running.lab, running.node, lines.append), timeout=100)

    assert outcomes and not failures(outcomes), "\n".join(lines)


def test_the_port_service_hands_the_driver_the_bound_port_numbers(running):
    async def ports() -> dict[str, int]:
        async with grpc.aio.insecure_channel(running.node.p4runtime) as channel:
            client = TargetClient(channel)
            return {name: await client.port_of(name) for name in running.lab.ports}

    assert running.run(ports()) == running.lab.ports


def test_the_pipeline_answers_arp_and_neighbour_discovery_as_the_pods_kernel_expects(running):
    lab = running.lab
    web = lab.pod("web")
    for address in (web.ipv4, web.ipv6):
        outcome = running.run(ping(lab, "client", address, count=1))
        assert outcome.ok, outcome.line()

    # Both gateways resolved to the gateway MAC, the IPv6 one from an advertisement the kernel
    # accepted (checksum, hop limit 255, target) and marked as a router's.
    neighbours = running.run(gateway_neighbours(lab, lab.pod("client")))
    assert {a: (n.mac, n.router) for a, n in neighbours.items()} == {
        GATEWAY_V4: (GATEWAY_MAC, False),
        GATEWAY_V6: (GATEWAY_MAC, True),
    }


def test_a_stale_gateway_entry_is_confirmed_by_the_pipeline_answering_unicast_probes(running):
    """A long-lived connection outlives the neighbour entry's reachable time: the kernel then
    probes the gateway with unicast ARP and neighbour solicitations, and an unanswered probe
    would fail the entry and cut the pod off."""
    lab = running.lab
    client, web = lab.pod("client"), lab.pod("web")
    for address in (web.ipv4, web.ipv6):
        assert running.run(ping(lab, "client", address, count=1)).ok
    running.run(age_gateway_neighbours(lab, client))

    async def confirmed() -> dict[str, str]:
        traffic = [
            asyncio.ensure_future(ping(lab, "client", address, count=50))
            for address in (web.ipv4, web.ipv6)
        ]
        try:
            while True:  # the kernel's neighbour states cannot be awaited: poll them
                states = {a: n.state for a, n in (await gateway_neighbours(lab, client)).items()}
                if states and all(s in ("REACHABLE", "FAILED") for s in states.values()):
                    return states
                await asyncio.sleep(0.1)
        finally:
            for task in traffic:
                task.cancel()
            await asyncio.gather(*traffic, return_exceptions=True)

    states = running.run(confirmed(), timeout=15)
    assert states == {GATEWAY_V4: "REACHABLE", GATEWAY_V6: "REACHABLE"}


def test_large_transfers_arrive_intact_through_services_and_from_the_node(running):
    lab, node = running.lab, running.node
    body = os.urandom(3_000_000)
    for namespace in (lab.pod_ns(lab.pod("web")), lab.node_ns):
        (www_root(node.workdir, namespace) / "big.bin").write_bytes(body)
    _, node_v4, node_v6 = lab_felix.NODE_SERVICE
    _, web_v4, web_v6 = lab_felix.POD_SERVICE
    urls = [
        f"http://{node_v4}/big.bin",
        f"http://[{node_v6}]/big.bin",
        f"http://{web_v4}/big.bin",
        f"http://[{web_v6}]/big.bin",
        f"http://{lab.node.ipv4}:{lab_felix.HTTP_PORT}/big.bin",
    ]

    outcomes = [running.run(http_digest(lab, "intruder", url, body)) for url in urls]

    assert not failures(outcomes)


def test_the_node_reaches_the_pods_through_the_host_port(running):
    lab = running.lab
    web = lab.pod("web")
    outcomes = [
        running.run(ping(lab, "node", web.ipv4)),
        running.run(ping(lab, "node", web.ipv6)),
        running.run(http_get(lab, "node", f"http://{web.ipv4}:{lab_felix.HTTP_PORT}/")),
    ]

    assert not failures(outcomes)


def test_a_pod_reaching_itself_through_its_service_is_answered(running):
    lab = running.lab
    _, web_v4, web_v6 = lab_felix.POD_SERVICE
    outcomes = [
        running.run(http_get(lab, "web", f"http://{web_v4}/", body="default/web")),
        running.run(http_get(lab, "web", f"http://[{web_v6}]/", body="default/web")),
    ]

    assert not failures(outcomes)


def raw_socket(pod_ns: str, ether_type: int) -> socket.socket:
    """A non-blocking AF_PACKET socket on a pod's eth0, for one EtherType."""
    made: list[socket.socket] = []

    def make() -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ether_type))
        sock.bind(("eth0", ether_type))
        sock.setblocking(False)
        made.append(sock)

    in_namespace(pod_ns, make)
    return made[0]


def test_arp_for_a_pods_own_address_goes_unanswered_as_from_linux_proxy_arp(running):
    """RFC 5227 probes (`arping -D`, from 0.0.0.0) and announcements (sender = target) ask
    whether anyone else holds the pod's address: the pipeline answered them with the gateway
    MAC, so `arping -D` in a pod reported its own address taken. A request for the gateway
    sent after them is answered, which bounds the wait for the others."""
    lab = running.lab
    client = lab.pod("client")
    mac = lab.macs["client"]

    def who_has(sender: str, target: str) -> bytes:
        request = ARP(op=1, hwsrc=mac, psrc=sender, pdst=target)
        return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / request)

    async def answered() -> list[str]:
        sock = raw_socket(lab.pod_ns(client), 0x0806)
        replies: list[str] = []
        with sock:
            sock.send(who_has("0.0.0.0", client.ipv4))
            sock.send(who_has(client.ipv4, client.ipv4))
            sock.send(who_has(client.ipv4, GATEWAY_V4))
            loop = asyncio.get_running_loop()
            while GATEWAY_V4 not in replies:
                frame = Ether(await loop.sock_recv(sock, 65536))
                if ARP in frame and frame[ARP].op == 2:
                    replies.append(frame[ARP].psrc)
        return replies

    assert running.run(answered(), timeout=10) == [GATEWAY_V4]


def test_a_frame_shorter_than_its_ip_header_claims_never_reaches_the_other_pod(running):
    lab = running.lab
    client, web = lab.pod("client"), lab.pod("web")

    def echo(ident: int, claim_extra: int = 0) -> bytes:
        packet = IP(src=client.ipv4, dst=web.ipv4, ttl=64) / ICMP(id=ident) / (b"x" * 32)
        packet = IP(bytes(packet))
        packet.len += claim_extra  # the header lies about the length; checksum kept right
        del packet.chksum
        frame = Ether(src=lab.macs["client"], dst=GATEWAY_MAC) / packet
        return bytes(frame)

    async def sent_and_seen() -> list[int]:
        sender = raw_socket(lab.pod_ns(client), 0x0800)
        sniffer = raw_socket(lab.pod_ns(web), 0x0800)
        seen: list[int] = []
        with sender, sniffer:
            sender.send(echo(0x4242, claim_extra=100))
            sender.send(echo(0x4343))  # behind it on the same path: when it is in, so is that
            loop = asyncio.get_running_loop()
            while 0x4343 not in seen:
                data, address = await loop.sock_recvfrom(sniffer, 65536)
                frame = Ether(data)
                if address[2] == PACKET_HOST and ICMP in frame and frame[ICMP].type == 8:
                    seen.append(frame[ICMP].id)
        return seen

    assert running.run(sent_and_seen(), timeout=10) == [0x4343]


FLOOD = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[2])
sent = 0
while time.monotonic() < end:
    try:
        sock.sendto(b"x" * 100, (sys.argv[1], 9))
    except OSError:
        pass
    sent += 1
    if sent == 10000:
        print("flooding", flush=True)
"""


def test_the_target_answers_p4runtime_while_a_pod_floods_it(running):
    """Frames are moved in bounded slices of the target's event loop: a flood delays the gRPC
    server's turns but never takes them (about 0.25 s under a flood; 2 s is the bound here;
    a loop draining the sockets until empty answered after 4.5 s)."""
    lab = running.lab

    async def slowest_answer() -> float:
        async with grpc.aio.insecure_channel(running.node.p4runtime) as channel:
            client = TargetClient(channel)
            await client.port_of("host")  # connected before the flood
            argv = [sys.executable, "-u", "-c", FLOOD, lab.node.ipv4, "30"]
            flood = await asyncio.create_subprocess_exec(
                *in_netns(lab.pod_ns(lab.pod("intruder")), argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                assert flood.stdout is not None
                assert await asyncio.wait_for(flood.stdout.readline(), 10) == b"flooding\n"
                loop = asyncio.get_running_loop()
                slowest = 0.0
                for _ in range(20):
                    started = loop.time()
                    await client.port_of("host")
                    slowest = max(slowest, loop.time() - started)
                    await asyncio.sleep(0.1)  # spread the calls over the flood, not a wait
            finally:
                flood.kill()
                await flood.wait()
        return slowest

    assert running.run(slowest_answer(), timeout=60) < 2.0
    after = running.run(ping(lab, "client", lab.pod("web").ipv4))
    assert after.ok, after.line()


def test_an_idle_target_spends_no_cpu(running):
    """No traffic, no polling: the bound ports cost nothing while nothing arrives (the DPDK
    engine runs SWX only when a socket is readable). Frames still queued from earlier tests
    (a flood fills the sockets' buffers) are worked off first: a busy loop never settles."""
    assert running.node.target is not None
    pid = running.node.target.proc.pid
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

    async def settled_window() -> float:
        windows = []
        for _ in range(10):
            before = cpu_seconds()
            await asyncio.sleep(2.0)  # a measurement window, not a wait for an event
            windows.append(cpu_seconds() - before)
            if windows[-1] < 0.2:
                break
        return windows[-1]

    lab = running.lab
    assert running.run(ping(lab, "client", lab.pod("web").ipv4)).ok  # the ports have run
    assert running.run(settled_window(), timeout=30) < 0.2
