"""ports.mode netlink: an interface name resolves to its kernel ifindex (in our own netns)."""

import asyncio
import os
import uuid

import pytest

from felix_p4.ports import PortResolver, netlink_ifindex

pytestmark = pytest.mark.netns


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    from pyroute2 import netns as ns

    name = f"felixp4-{uuid.uuid4().hex[:8]}"
    try:
        ns.create(name)
    except OSError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc}")
    ns.pushns(name)
    try:
        yield name
    finally:
        ns.popns()
        ns.remove(name)


def test_veth_name_resolves_to_its_ifindex(netns):
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="cali-test1", kind="veth", peer="eth-peer1")
        (index,) = ipr.link_lookup(ifname="cali-test1")
    resolver = PortResolver({"cali-pinned": 42}, [netlink_ifindex])

    async def main() -> None:
        assert await resolver.resolve("cali-test1") == index
        assert await resolver.resolve("cali-pinned") == 42  # the static map wins
        assert await resolver.resolve("cali-absent") is None

    asyncio.run(main())
