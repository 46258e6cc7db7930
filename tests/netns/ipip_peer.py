"""A node's IP-in-IP tunnel end in user space, for the netns tests.

These machines' kernels have no `ipip` module, so the regular Calico node on the other end of
an IP-in-IP tunnel cannot be Linux's `tunl0`. This stands in for it with what Calico's facts
say tunl0 does (felix/dataplane/linux/ipip_mgr.go, docs/networking.md): IPv4 protocol 4 from
node address to node address; what arrives is the inner IPv4 packet, handed to the node's
stack; what the node routes into the tunnel goes out wrapped, to the node the route names.

Run inside the node's namespace:

    python3 ipip_peer.py TUN_NAME BLOCK=NODE_IP [BLOCK=NODE_IP ...]

It creates the TUN device TUN_NAME (the caller gives it the tunnel address and the routes
`BLOCK dev TUN_NAME`), prints "ready", and relays until killed: from the raw IP-in-IP socket to
the TUN device, and from the TUN device to the raw socket (the kernel writes the outer header,
protocol 4, to the node whose BLOCK holds the inner destination).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import select
import socket
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
IPPROTO_IPIP = 4


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main(argv: list[str]) -> int:
    name, *pairs = argv
    routes = []
    for pair in pairs:
        block, _, node = pair.partition("=")
        routes.append((ipaddress.ip_network(block), node))
    tun = open_tun(name)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([tun, raw], [], [])
        if raw in ready:
            packet = raw.recv(65535)
            header = (packet[0] & 0x0F) * 4
            os.write(tun, packet[header:])  # the inner IPv4 packet, to the node's stack
        if tun in ready:
            inner = os.read(tun, 65535)
            if len(inner) < 20 or inner[0] >> 4 != 4:
                continue
            dst = ipaddress.IPv4Address(inner[16:20])
            node = next((n for block, n in routes if dst in block), None)
            if node is not None:
                raw.sendto(inner, (node, 0))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
