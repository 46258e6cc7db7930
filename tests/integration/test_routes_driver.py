"""The driver turns Felix's routes, VTEPs and host addresses into tunnels (spawned as Felix
spawns it, against the embedded target): a pod's packet to another node's block leaves the
uplink in VXLAN to that node; VXLAN from it reaches the pod; a VTEP's removal and return is
followed; a restart rewrites nothing."""

from __future__ import annotations

import asyncio

import grpc
from felix_harness import SNAPSHOT, embedded_target, felix_driver, msg, wait_until
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from felix_p4.softswitch.client import TargetClient

IN_SYNC = msg(in_sync={})
UPLINK = 101
HOST_MAC, B_MAC = "02:00:00:00:0a:0a", "02:00:00:00:0b:0b"
OURS = {
    "hostname": "node-1",
    "mac": "66:00:00:00:00:0a",
    "ipv4_addr": "10.65.0.0",
    "parent_device_ip": "192.168.1.10",
}
THEIRS = {
    "hostname": "node-2",
    "mac": "66:00:00:00:00:0b",
    "ipv4_addr": "10.65.1.0",
    "parent_device_ip": "192.168.1.11",
}


def _vtep(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if k != "hostname"}


NETWORK = [
    msg(host_metadata_update={"hostname": "node-1", "ipv4_addr": "192.168.1.10"}),
    msg(host_metadata_update={"hostname": "node-2", "ipv4_addr": "192.168.1.11"}),
    msg(vtep_update={"node": "node-1", **_vtep(OURS)}),
    msg(vtep_update={"node": "node-2", **_vtep(THEIRS)}),
    msg(
        route_update={
            "types": "REMOTE_WORKLOAD",
            "ip_pool_type": "VXLAN",
            "dst": "10.65.1.0/26",
            "dst_node_name": "node-2",
            "dst_node_ip": "192.168.1.11",
        }
    ),
    msg(
        route_update={
            "types": "LOCAL_WORKLOAD",
            "ip_pool_type": "VXLAN",
            "dst": "10.65.0.0/26",
            "dst_node_name": "node-1",
            "dst_node_ip": "192.168.1.10",
        }
    ),
]
SETTINGS = {
    "ports": {"uplink": str(UPLINK)},
    "network": {
        "node_mac": HOST_MAC,
        "next_hops": {"192.168.1.11": B_MAC},
        "netlink": False,
    },
}


async def _trace(address: str, port: int, frame: Ether) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        return await TargetClient(channel).trace(
            {"in_port": port, "hex": bytes(frame).hex(), "commit": True}
        )


def _pod_to(dst: str) -> Ether:
    return (
        Ether(src="0a:58:0a:41:00:02", dst="ee:ee:ee:ee:ee:ee")
        / IP(src="10.65.0.2", dst=dst)
        / TCP(sport=40000, dport=80, flags="S")
    )


def test_felix_routes_and_vteps_become_vxlan_both_ways(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path, SETTINGS) as felix:
                await felix.send(*SNAPSHOT, *NETWORK, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                out = await _trace(address, 1, _pod_to("10.65.1.7"))
                assert (out["verdict"], out["egress_port"]) == ("forward", UPLINK)
                frame = Ether(bytes.fromhex(out["out_hex"]))
                assert (frame.dst, frame.src) == (B_MAC, HOST_MAC)
                assert (frame[IP].src, frame[IP].dst) == ("192.168.1.10", "192.168.1.11")
                assert frame[VXLAN].vni == 4096
                assert frame[VXLAN].payload.dst == THEIRS["mac"]
                # An unused address of our block: dropped, not sent to the host.
                assert (await _trace(address, 1, _pod_to("10.65.0.50")))["verdict"] == "drop"
                # VXLAN from node-2 to our pod.
                back = (
                    Ether(src=B_MAC, dst=HOST_MAC)
                    / IP(src="192.168.1.11", dst="192.168.1.10")
                    / UDP(sport=51000, dport=4789, chksum=0)
                    / VXLAN(vni=4096, flags=0x08)
                    / Ether(src=THEIRS["mac"], dst=OURS["mac"])
                    / IP(src="10.65.1.7", dst="10.65.0.2")
                    / TCP(sport=80, dport=40000, flags="SA")
                )
                got = await _trace(address, UPLINK, back)
                assert (got["verdict"], got["egress_port"]) == ("forward", 1)
                # node-2's VTEP goes: its routes stop, and come back with it.
                await felix.send(msg(vtep_remove={"node": "node-2"}))
                await wait_until(lambda: target.tables.entry_count("routes_v4") == 4)
                assert (await _trace(address, 1, _pod_to("10.65.1.8")))["egress_port"] == 100
                await felix.send(msg(vtep_update={"node": "node-2", **_vtep(THEIRS)}))
                await wait_until(lambda: target.tables.entry_count("routes_v4") == 5)
                written = target.write_count
            # A restarted driver finds everything in place.
            async with felix_driver(address, tmp_path, SETTINGS) as felix:
                await felix.send(*SNAPSHOT, *NETWORK, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert target.write_count == written

    asyncio.run(asyncio.wait_for(main(), 60))
