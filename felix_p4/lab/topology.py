"""The lab's namespaces and links: pods plumbed as Calico's CNI plumbs them, the P4 device whose
ports are the pods' host ends, and the node's stack behind the device's host port.

```
 pod namespaces                 device namespace                    node namespace
 eth0 (10.65.0.x, fd00:65::x)   cali<11 hex> ee:ee:ee:ee:ee:ee      felix-host ee:ee:ee:ee:ee:ee
   default via 169.254.1.1  <-veth-> (P4 port)     host (P4 port) <-veth-> 192.0.2.11, 2001:db8::11
```

The device namespace stands for the P4 device: the embedded target runs there and owns its
interfaces. Its kernel must not answer on them (a Calico host side has the MAC
ee:ee:ee:ee:ee:ee, so its IPv6 link-local address is the pods' gateway
fe80::ecee:eeff:feee:eeee, which the kernel would answer itself): IPv6 is disabled there, IPv4
has no address or forwarding. The node's stack is reached through the host port, whose node end
carries the gateway MAC (the pipeline hands frames to the host unchanged, addressed to the
pods' gateway), and routes the pods' block to the device through a static next hop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs

GATEWAY_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY_V4 = "169.254.1.1"  # Calico pods' IPv4 next hop (nobody has it; the host side answers ARP)
GATEWAY_V6 = "fe80::ecee:eeff:feee:eeee"  # the link-local address of MAC ee:ee:ee:ee:ee:ee
HOST_PORT = "host"  # the host port's interface in the device namespace (ports.host's default)
NODE_LINK = "felix-host"  # its peer: the node's interface to the device
# The node's next hop towards the pods on NODE_LINK: never answered (no ARP/ND on the host port),
# so a permanent neighbour entry names the device; any MAC does, the gateway's reads best.
NODE_NEXT_HOP_V4 = "169.254.1.1"
NODE_NEXT_HOP_V6 = "fe80::1"
POD_MTU = 1500
SCOPE_LINK = 253
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80


def calico_veth_name(namespace: str, pod: str) -> str:
    """The host-side interface Calico's CNI creates for a Kubernetes pod: "cali" and the first
    11 hex digits of the SHA-1 of "<namespace>.<pod>"."""
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


@attrs.frozen(slots=True)
class Pod:
    name: str
    namespace: str
    ipv4: str
    ipv6: str
    labels: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def veth(self) -> str:
        return calico_veth_name(self.namespace, self.name)

    @property
    def workload_id(self) -> str:
        return f"{self.namespace}/{self.name}"


@attrs.frozen(slots=True)
class Node:
    name: str = "node-1"
    ipv4: str = "192.0.2.11"  # documentation addresses: they exist only in the lab
    ipv6: str = "2001:db8::11"
    pod_block_v4: str = "10.65.0.0/26"
    pod_block_v6: str = "fd00:65::/122"


DEFAULT_PODS = (
    Pod("client", "default", "10.65.0.2", "fd00:65::2", {"app": "client"}),
    Pod("web", "default", "10.65.0.3", "fd00:65::3", {"app": "web"}),
    Pod("intruder", "default", "10.65.0.4", "fd00:65::4", {"app": "intruder"}),
)


class LabError(Exception):
    """The lab cannot be built here; the message says why."""


def unavailable() -> str | None:
    """Why the lab cannot run here (one line), or None."""
    if os.geteuid() != 0:
        return "it needs root (it creates network namespaces, veth pairs and raw sockets)"
    if shutil.which("nsenter") is None:
        return "nsenter (util-linux) is not installed"
    return None


@attrs.define
class Lab:
    """One node's namespaces, named with a unique prefix so runs never collide."""

    pods: tuple[Pod, ...] = DEFAULT_PODS
    node: Node = attrs.Factory(Node)
    # False: the pods keep a veth's default transmit offload (checksums and segmentation left
    # to "hardware"), which no bound port can carry (docs/interfaces.md).
    wire_frames: bool = True
    prefix: str = attrs.Factory(lambda: f"fp4-{uuid.uuid4().hex[:8]}")
    macs: dict[str, str] = attrs.Factory(dict)  # pod name -> its eth0 MAC
    created: list[str] = attrs.Factory(list)  # namespaces made so far, removed by destroy
    # Added to the driver's settings, and to Felix's snapshot before InSync (other nodes).
    settings: dict[str, Any] = attrs.Factory(dict)
    felix_extra: list[Any] = attrs.Factory(list)
    # Device interfaces bound as P4 ports beyond the pods' and the host port (the uplink).
    extra_ports: dict[str, int] = attrs.Factory(dict)

    @property
    def device_ns(self) -> str:
        return f"{self.prefix}-dev"

    @property
    def node_ns(self) -> str:
        return f"{self.prefix}-node"

    def pod_ns(self, pod: Pod) -> str:
        return f"{self.prefix}-{pod.name}"

    def pod(self, name: str) -> Pod:
        return next(p for p in self.pods if p.name == name)

    @property
    def ports(self) -> dict[str, int]:
        """Device interface -> P4 port: the pods' host ends from 1, then the host port."""
        ports = {pod.veth: i for i, pod in enumerate(self.pods, start=1)}
        ports[HOST_PORT] = len(self.pods) + 1
        ports.update(self.extra_ports)
        return ports

    def build(self) -> None:
        """Create every namespace and link; on failure what was made is removed again."""
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise

    def destroy(self) -> None:
        """Remove the namespaces (their interfaces, and the veth peers, go with them)."""
        from pyroute2 import netns

        while self.created:
            name = self.created.pop()
            with contextlib.suppress(OSError):
                netns.remove(name)

    # ----------------------------------------------------------------------------------------

    def _namespace(self, name: str) -> None:
        from pyroute2 import netns

        netns.create(name)
        self.created.append(name)

    def _build(self) -> None:
        from pyroute2 import IPRoute

        for name in (self.device_ns, self.node_ns):
            self._namespace(name)
        set_sysctls(
            self.device_ns,
            {
                "net/ipv6/conf/all/disable_ipv6": "1",
                "net/ipv6/conf/default/disable_ipv6": "1",
                "net/ipv4/ip_forward": "0",
            },
        )
        with IPRoute(netns=self.device_ns) as dev:
            _up(dev, "lo")
        for pod in self.pods:
            self._pod(pod)
        self._host_port()

    def _pod(self, pod: Pod) -> None:
        """As Calico's CNI plumbs a pod: the veth pair made in the pod's namespace, the host
        end with MAC ee:ee:ee:ee:ee:ee, DAD off on both ends, /32 and /128 addresses, a route
        to 169.254.1.1 on the link and default routes via it and via the host end's IPv6
        link-local address; then the host end moved out (here: to the device) and up."""
        from pyroute2 import IPRoute

        ns = self.pod_ns(pod)
        self._namespace(ns)
        set_sysctls(
            ns,
            {
                "net/ipv6/conf/all/disable_ipv6": "0",
                "net/ipv6/conf/default/disable_ipv6": "0",
                "net/ipv6/conf/lo/disable_ipv6": "0",
                "net/ipv4/ip_forward": "0",
                "net/ipv6/conf/all/forwarding": "0",
            },
        )
        with IPRoute(netns=ns) as ipr:
            _up(ipr, "lo")
            ipr.link("add", ifname="eth0", kind="veth", peer=pod.veth, mtu=POD_MTU)
            (host,) = ipr.link_lookup(ifname=pod.veth)
            (eth0,) = ipr.link_lookup(ifname="eth0")
            ipr.link("set", index=host, address=GATEWAY_MAC, mtu=POD_MTU)
            set_sysctls(
                ns,
                {
                    "net/ipv6/conf/eth0/accept_dad": "0",
                    f"net/ipv6/conf/{pod.veth}/accept_dad": "0",
                },
            )
            ipr.link("set", index=host, state="up")
            ipr.link("set", index=eth0, state="up")
            self.macs[pod.name] = _mac(ipr, eth0)
            ipr.route("add", dst=f"{GATEWAY_V4}/32", oif=eth0, scope=SCOPE_LINK)
            ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY_V4, oif=eth0)
            ipr.route("add", dst="::/0", gateway=GATEWAY_V6, oif=eth0, family=10)
            ipr.addr("add", index=eth0, address=pod.ipv4, prefixlen=32)
            ipr.addr("add", index=eth0, address=pod.ipv6, prefixlen=128)
            ipr.link("set", index=host, net_ns_fd=self.device_ns)
        if self.wire_frames:
            in_namespace(ns, lambda: _wire_frames("eth0"))
        with IPRoute(netns=self.device_ns) as dev:
            _up(dev, pod.veth)

    def _host_port(self) -> None:
        """The host port: `host` in the device, `felix-host` in the node with the node's
        addresses and the routes to the pods' blocks."""
        from pyroute2 import IPRoute

        node = self.node
        set_sysctls(
            self.node_ns,
            {
                "net/ipv6/conf/all/disable_ipv6": "0",
                "net/ipv6/conf/default/disable_ipv6": "0",
                "net/ipv6/conf/default/accept_dad": "0",
                "net/ipv6/conf/lo/disable_ipv6": "0",
            },
        )
        with IPRoute(netns=self.node_ns) as ipr:
            _up(ipr, "lo")
            ipr.link("add", ifname=NODE_LINK, kind="veth", peer=HOST_PORT)
            (link,) = ipr.link_lookup(ifname=NODE_LINK)
            (host,) = ipr.link_lookup(ifname=HOST_PORT)
            ipr.link("set", index=link, address=GATEWAY_MAC)
            ipr.link("set", index=host, net_ns_fd=self.device_ns)
            ipr.link("set", index=link, state="up")
            ipr.addr("add", index=link, address=node.ipv4, prefixlen=32)
            ipr.addr("add", index=link, address=node.ipv6, prefixlen=128)
            ipr.neigh(
                "add", dst=NODE_NEXT_HOP_V4, lladdr=GATEWAY_MAC, ifindex=link, state=NUD_PERMANENT
            )
            ipr.neigh(
                "add",
                dst=NODE_NEXT_HOP_V6,
                lladdr=GATEWAY_MAC,
                ifindex=link,
                state=NUD_PERMANENT,
                family=10,
            )
            ipr.route(
                "add",
                dst=node.pod_block_v4,
                gateway=NODE_NEXT_HOP_V4,
                oif=link,
                flags=RTNH_F_ONLINK,
            )
            ipr.route(
                "add",
                dst=node.pod_block_v6,
                gateway=NODE_NEXT_HOP_V6,
                oif=link,
                family=10,
            )
        in_namespace(self.node_ns, lambda: _wire_frames(NODE_LINK))
        with IPRoute(netns=self.device_ns) as dev:
            _up(dev, HOST_PORT)


def _up(ipr: Any, name: str) -> None:
    (index,) = ipr.link_lookup(ifname=name)
    ipr.link("set", index=index, state="up")


def _mac(ipr: Any, index: int) -> str:
    (link,) = ipr.link("get", index=index)
    return str(link.get_attr("IFLA_ADDRESS"))


def in_namespace(name: str, work: Callable[[], None]) -> None:
    """Run `work` on a thread of its own inside network namespace `name` (setns changes only
    the calling thread; this one ends with the work)."""
    from pyroute2 import netns

    failure: list[BaseException] = []

    def run() -> None:
        try:
            netns.setns(name, flags=0)
            work()
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _sysctls(values: Mapping[str, str]) -> None:
    """Write /proc/sys/<key> (in the calling thread's network namespace)."""
    for key, value in values.items():
        with open(f"/proc/sys/{key}", "w") as sysctl:
            sysctl.write(value)


def set_sysctls(namespace: str, values: Mapping[str, str]) -> None:
    """Write /proc/sys/<key> = value inside network namespace `namespace`."""
    in_namespace(namespace, lambda: _sysctls(values))


def wire_frames(namespace: str, interface: str) -> None:
    """`interface` in `namespace` sends frames as a wire carries them (below)."""
    in_namespace(namespace, lambda: _wire_frames(interface))


def _wire_frames(interface: str) -> None:
    """Frames as a wire carries them: complete checksums, nothing longer than the MTU.

    A veth hands its peer what the sending stack left to the "hardware": TCP and UDP checksums
    only started (CHECKSUM_PARTIAL) and TSO segments up to 64 KiB. An interface the target binds
    is read as a wire, so the sender's transmit checksum offload is turned off (`ethtool -K
    eth0 tx off`, which also turns TSO off: the kernel then segments and checksums in software).
    """
    from pyroute2.ethtool import Ethtool

    with Ethtool() as ethtool:
        ethtool.set_offload_flag(interface, "tx-checksumming", 0)
