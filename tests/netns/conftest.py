"""A lab node per engine for tests/netns: namespaces, the target bound to the pods' interfaces,
the driver as Felix spawns it, the demo's servers; removed whatever the tests did."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import attrs
import pytest

from felix_p4.lab.demo import serve
from felix_p4.lab.node import NodeProcesses, running_node
from felix_p4.lab.topology import Lab, unavailable
from felix_p4.swx import availability

T = TypeVar("T")


@attrs.define
class Running:
    """A started lab node and the event loop its processes' pipes belong to."""

    engine: str
    lab: Lab
    node: NodeProcesses
    loop: asyncio.AbstractEventLoop

    def run(self, step: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(step, timeout))


def lab_unavailable(engine: str) -> str | None:
    reason = unavailable()
    if reason is None and shutil.which("ping") is None:
        reason = "ping (iputils-ping) is not installed"
    if reason is None and engine == "dpdk":
        reason = availability()
    return reason


@pytest.fixture(scope="module", params=["model", "dpdk"])
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    engine = request.param
    reason = lab_unavailable(engine)
    if reason is not None:
        pytest.skip(f"the {engine} lab cannot run here: {reason}")
    lab = Lab()
    loop = asyncio.new_event_loop()
    try:
        lab.build()
        context = running_node(lab, engine)
        node = loop.run_until_complete(asyncio.wait_for(context.__aenter__(), 90))
        try:
            loop.run_until_complete(asyncio.wait_for(serve(lab, node), 30))
            yield Running(engine, lab, node, loop)
        finally:
            loop.run_until_complete(context.__aexit__(None, None, None))
    finally:
        loop.close()
        lab.destroy()
