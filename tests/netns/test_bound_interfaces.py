"""What `felix-p4 target --port` refuses or reports about real interfaces: one it cannot carry
(its MTU allows longer frames than the ports take), one that is not there, and pods whose veths
leave checksums to offload. Root only; skipped with the reason elsewhere."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute, netns

from felix_p4.lab.checks import http_get
from felix_p4.lab.demo import serve
from felix_p4.lab.node import Completed, run, running_node
from felix_p4.lab.topology import Lab, unavailable

pytestmark = pytest.mark.netns


@pytest.fixture
def namespace() -> Iterator[str]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"the lab cannot run here: {reason}")
    name = f"fp4-{uuid.uuid4().hex[:8]}-bind"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def _target(namespace: str, *ports: str) -> Completed:
    argv = [sys.executable, "-m", "felix_p4", "target", "--listen", "127.0.0.1:0"]
    argv += [f"--port={p}" for p in ports]
    return asyncio.run(run(namespace, argv, 60))


def test_an_interface_whose_mtu_allows_longer_frames_than_the_ports_take_is_refused(namespace):
    with IPRoute(netns=namespace) as ipr:
        ipr.link("add", ifname="jumbo0", kind="veth", peer="jumbo1", mtu=9000)

    done = _target(namespace, "jumbo0=1")

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "felix-p4 target: interface jumbo0 has MTU 9000: its frames (up to 9014 bytes) are "
        "longer than this target's ports take (2048 bytes); lower its MTU"
    ]


def test_an_interface_that_is_not_there_is_refused_naming_it(namespace):
    done = _target(namespace, "cali0123456789a=1")

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "felix-p4 target: cannot bind interface cali0123456789a: No such device"
    ]


def test_pods_leaving_checksums_to_offload_are_reported_once_per_port():
    """With a veth's default transmit offload a pod's TCP segments carry checksums only
    started: forwarded, every receiver drops them (ping still works). The model engine says
    which port and what to do, once."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"the lab cannot run here: {reason}")
    lab = Lab(wire_frames=False)

    async def main() -> str:
        async with running_node(lab, "model") as node:
            await serve(lab, node)
            web = lab.pod("web")
            outcome = await http_get(lab, "client", f"http://{web.ipv4}:8080/", expect="timeout")
            assert outcome.ok, outcome.line()
            assert node.target is not None
            return node.target.log.read_text()

    try:
        lab.build()
        log = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        lab.destroy()
    client = lab.pod("client")
    warnings = [line for line in log.splitlines() if "offload" in line]
    assert len([w for w in warnings if client.veth in w]) == 1, log
    assert "ethtool -K PEER tx off" in warnings[0]
