"""`make demo-netns`: real pods in network namespaces talk through felix-p4 (the driver spawned
as Felix spawns it) and the embedded target bound to their interfaces, on each engine."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Literal

from felix_p4.lab import felix as lab_felix
from felix_p4.lab.checks import Outcome, http_get, ping, udp_exchange
from felix_p4.lab.node import (
    LabProcessError,
    NodeProcesses,
    running_node,
    start_http_server,
    start_udp_echo,
)
from felix_p4.lab.topology import HOST_PORT, NODE_LINK, Lab, LabError, unavailable

Say = Callable[[str], None]
Engine = Literal["model", "dpdk"]


def describe(lab: Lab, engine: str) -> list[str]:
    ports = lab.ports
    lines = [f"felix-p4 demo-netns on the {engine} engine: namespaces {lab.prefix}-*"]
    for pod in lab.pods:
        lines.append(
            f"  pod {pod.workload_id:<17} eth0 {pod.ipv4:<10} {pod.ipv6:<11} "
            f"<-> {pod.veth} (P4 port {ports[pod.veth]})"
        )
    node = lab.node
    lines.append(
        f"  node {node.name:<16} {NODE_LINK} {node.ipv4} {node.ipv6} "
        f"<-> {HOST_PORT} (P4 port {ports[HOST_PORT]}, the host port)"
    )
    return lines


async def serve(lab: Lab, node: NodeProcesses) -> None:
    """The servers the scenario talks to: HTTP in the web pod and on the node (TCP 8080, IPv4
    and IPv6), UDP echo on the node (5353); stopped with the node."""
    web = lab.pod("web")
    node.servers.append(
        await start_http_server(lab, lab.pod_ns(web), "hello from pod default/web", node.workdir)
    )
    node.servers.append(
        await start_http_server(lab, lab.node_ns, f"hello from {lab.node.name}", node.workdir)
    )
    node.servers.append(await start_udp_echo(lab.node_ns, node.workdir))


async def scenario(lab: Lab, node: NodeProcesses, say: Say) -> list[Outcome]:
    """Every check of the demo, in order, each said as it completes (`serve` first). It ends
    as it began: the NetworkPolicy it applies is removed again."""
    web, client = lab.pod("web"), lab.pod("client")
    host = lab.node
    port = lab_felix.HTTP_PORT
    outcomes: list[Outcome] = []

    async def check(step: Awaitable[Outcome]) -> None:
        outcome = await step
        outcomes.append(outcome)
        say(outcome.line())

    say("pod to pod, IPv4 and IPv6 (ARP and neighbour discovery for the gateway answered by P4):")
    await check(ping(lab, "client", web.ipv4))
    await check(ping(lab, "client", web.ipv6))
    await check(http_get(lab, "client", f"http://{web.ipv4}:{port}/", body="default/web"))
    await check(http_get(lab, "client", f"http://[{web.ipv6}]:{port}/", body="default/web"))

    say(
        "ClusterIP services (felix-p4's file source): TCP to the node and to a pod, UDP to the node"
    )
    _, v4, v6 = lab_felix.NODE_SERVICE
    await check(http_get(lab, "client", f"http://{v4}/", body=host.name))
    await check(http_get(lab, "client", f"http://[{v6}]/", body=host.name))
    _, web_v4, web_v6 = lab_felix.POD_SERVICE
    await check(http_get(lab, "client", f"http://{web_v4}/", body="default/web"))
    await check(http_get(lab, "client", f"http://[{web_v6}]/", body="default/web"))
    _, v4, v6 = lab_felix.DNS_SERVICE
    await check(udp_exchange(lab, "client", v4, lab_felix.DNS_PORT, 64))
    await check(udp_exchange(lab, "client", v6, lab_felix.DNS_PORT, 64))

    say("a pod reaches the host (the node's addresses, through the host port):")
    await check(ping(lab, "client", host.ipv4))
    await check(ping(lab, "client", host.ipv6))
    await check(http_get(lab, "client", f"http://{host.ipv4}:{port}/", body=host.name))

    say("a Kubernetes NetworkPolicy: web accepts TCP 8080 from client only")
    await node.apply(lab_felix.allow_only_from(lab, web, [client]))
    await check(http_get(lab, "intruder", f"http://{web.ipv4}:{port}/", expect="timeout"))
    await check(http_get(lab, "intruder", f"http://{web_v4}/", expect="timeout"))
    await check(http_get(lab, "client", f"http://{web.ipv4}:{port}/", body="default/web"))
    await check(http_get(lab, "client", f"http://[{web.ipv6}]:{port}/", body="default/web"))
    say("the NetworkPolicy deleted: intruder connects again")
    await node.apply(lab_felix.remove_policy(lab, web, [client]))
    await check(http_get(lab, "intruder", f"http://{web.ipv4}:{port}/", body="default/web"))
    return outcomes


async def run_demo(lab: Lab, engine: Engine, say: Say) -> bool:
    for line in describe(lab, engine):
        say(line)
    async with running_node(lab, engine) as node:
        say("target and driver up: Felix's snapshot programmed, every pod reported up")
        await serve(lab, node)
        outcomes = await scenario(lab, node, say)
    failed = [o for o in outcomes if not o.ok]
    say(f"{len(outcomes) - len(failed)} of {len(outcomes)} checks passed on the {engine} engine")
    return not failed


def _one(engine: Engine) -> int:
    lab = Lab()
    try:
        lab.build()
    except (LabError, OSError) as exc:
        print(f"demo-netns cannot build its namespaces: {exc}", file=sys.stderr)
        lab.destroy()
        return 2
    try:
        passed = asyncio.run(run_demo(lab, engine, lambda line: print(line, flush=True)))
    except LabProcessError as exc:
        print(f"demo-netns failed on the {engine} engine: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.destroy()
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m felix_p4.lab", description=__doc__)
    parser.add_argument(
        "--engine",
        choices=["model", "dpdk", "both"],
        default="both",
        help="both: the model, then P4-DPDK where it can run",
    )
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason is not None:
        print(f"demo-netns cannot run here: {reason}", file=sys.stderr)
        return 2
    engines: list[Engine] = ["model", "dpdk"] if args.engine == "both" else [args.engine]
    status = 0
    for engine in engines:
        if engine == "dpdk":
            from felix_p4.swx import availability

            why = availability()
            if why is not None:
                print(f"demo-netns: not on P4-DPDK: {why}", file=sys.stderr)
                status = status or (2 if args.engine == "dpdk" else 0)
                continue
        status = _one(engine) or status
        print()
    return status
