"""`felix-p4 sim`: an embedded target, a driver spawned as Felix spawns it, a scenario's
Felix messages over fds 3/4, then its packets traced over gRPC and checked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import json_format

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.convert import endpoint_key
from felix_p4.felix.spawn import spawn_driver
from felix_p4.k8s.source import objects_from_documents
from felix_p4.model.endpoints import WorkloadEndpointKey
from felix_p4.model.values import format_mac
from felix_p4.softswitch.client import TargetClient
from felix_p4.softswitch.service import start_target

log = logging.getLogger(__name__)

SETTLE_TIMEOUT = 60.0


class ScenarioError(Exception):
    """A scenario file that cannot be run; the message says which part."""


def load_scenario(path: str) -> dict[str, Any]:
    try:
        scenario = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    if not isinstance(scenario, dict):
        raise ScenarioError(f"{path}: top level must be a mapping")
    unknown = set(scenario) - {"config", "felix", "kubernetes", "packets", "description"}
    if unknown:
        raise ScenarioError(f"{path}: unknown sections {sorted(unknown)}")
    return scenario


def to_dataplane(item: Any, index: int) -> fb.ToDataplane:
    if not isinstance(item, dict) or len(item) != 1:
        raise ScenarioError(f"felix[{index}] must be a mapping with exactly one payload key")
    try:
        return json_format.ParseDict(item, fb.ToDataplane())
    except json_format.ParseError as exc:
        raise ScenarioError(f"felix[{index}]: {exc}") from exc


def _endpoint_macs(messages: list[fb.ToDataplane]) -> dict[str, str]:
    """Interface name -> MAC, so a packet sent from a pod's port carries the pod's MAC."""
    macs: dict[str, str] = {}
    for m in messages:
        if (
            m.WhichOneof("payload") == "workload_endpoint_update"
            and m.workload_endpoint_update.endpoint.mac
        ):
            macs[m.workload_endpoint_update.endpoint.name] = m.workload_endpoint_update.endpoint.mac
    return macs


def _matches(
    expected: Any, actual: Any, path: tuple[str, ...], results: dict[str, dict[str, Any]]
) -> bool:
    """`expected` against `actual` (at `path` in a result): `{one_of: [...]}` takes any of
    those values, `{same_as: NAME}` what the earlier packet NAME got at the same path."""
    if isinstance(expected, dict) and set(expected) == {"one_of"}:
        return any(_matches(option, actual, path, results) for option in expected["one_of"])
    if isinstance(expected, dict) and set(expected) == {"same_as"}:
        earlier: Any = results.get(str(expected["same_as"]))
        for key in path:
            earlier = earlier.get(key) if isinstance(earlier, dict) else None
        return earlier is not None and bool(actual == earlier)
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            _matches(v, actual.get(k), (*path, k), results) for k, v in expected.items()
        )
    if isinstance(expected, str) and isinstance(actual, str):
        return expected.lower() == actual.lower()
    return bool(expected == actual)


def check_expect(
    expect: dict[str, Any],
    result: dict[str, Any],
    results: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """Why `result` does not meet `expect` (empty when it does); `results` holds the earlier
    packets' results by name, for `same_as`."""
    failures = []
    for key, want in expect.items():
        got = result.get(key)
        if key == "reason":
            if str(want).lower() not in str(got).lower():
                failures.append(f"reason {got!r} does not contain {want!r}")
        elif not _matches(want, got, (key,), results or {}):
            failures.append(f"{key}: expected {want!r}, got {got!r}")
    return failures


def _fmt_params(params: dict[str, Any]) -> str:
    out = []
    for name, value in params.items():
        if isinstance(value, int) and "mac" in name:
            out.append(f"{name}={format_mac(value)}")
        elif name == "sets":
            out.append(f"{name}={value:#x}")
        else:
            out.append(f"{name}={value}")
    return ", ".join(out)


def _fmt_packet(p: dict[str, Any] | None) -> str:
    if not p:
        return "-"
    if p.get("proto") == "arp":
        return (
            f"{p['src_mac']} > {p['dst_mac']} arp {p['arp_op']} {p['src']} is-at {p['arp_sha']}"
            if p.get("arp_op") == "reply"
            else f"{p['src_mac']} > {p['dst_mac']} arp {p.get('arp_op')} who-has {p['dst']}"
        )
    ports = f" {p['sport']} > {p['dport']}" if "sport" in p else ""
    return (
        f"{p['src_mac']} > {p['dst_mac']} {p.get('src')} > {p.get('dst')} "
        f"{p.get('proto')}{ports} ttl {p.get('ttl')}"
    )


def format_result(name: str, result: dict[str, Any], failures: list[str] | None = None) -> str:
    port = f" port {result['egress_port']}" if result.get("egress_port") is not None else ""
    mark = "" if failures is None else ("  ok" if not failures else "  FAIL")
    lines = [f"{name}: {result['verdict']}{port} ({result['reason']}){mark}"]
    lines.append(f"    in:  {_fmt_packet(result.get('in_packet'))}")
    if result.get("packet"):
        lines.append(f"    out: {_fmt_packet(result['packet'])}")
    for step in result["trace"]:
        hit = "hit " if step["hit"] else "miss"
        line = f"    {step['table']:<16} {hit} -> {step['action']}({_fmt_params(step['params'])})"
        if "rule" in step:
            line += f"  [{step['rule']}]"
        if step.get("learned"):
            line += "  [flow learned]"
        lines.append(line)
    for failure in failures or []:
        lines.append(f"    expected: {failure}")
    return "\n".join(lines)


async def run_scenario(scenario: dict[str, Any], as_json: bool, out: Any = sys.stdout) -> int:
    server, port, _ = await start_target("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    try:
        async with scenario_driver(scenario, address) as (messages, settings):
            async with grpc.aio.insecure_channel(address) as channel:
                target = TargetClient(channel)
                return await _send_packets(scenario, messages, settings, target, as_json, out)
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def scenario_driver(
    scenario: dict[str, Any], address: str
) -> AsyncIterator[tuple[list[fb.ToDataplane], dict[str, Any]]]:
    """A driver spawned as Felix spawns it, programming the target at `address` (plaintext),
    fed the scenario's Felix messages and its Kubernetes objects; yields once the dataplane is
    in sync, with the messages and the settings the driver runs with. The driver stops after."""
    messages = [to_dataplane(item, i) for i, item in enumerate(scenario.get("felix") or [])]
    settings: dict[str, Any] = {
        # The sim's own target on loopback: plaintext, by explicit choice.
        "p4runtime": {"address": address, "plaintext": True},
        "ports": {"mode": "target"},
        "log_level": logging.getLevelName(logging.getLogger().level),
        # A simulation leaves the host's own networking alone: next hops come from the
        # scenario's network.next_hops, and no NAT table is written.
        "network": {"netlink": False, "nat_outgoing": False},
    }
    for section, values in (scenario.get("config") or {}).items():
        if isinstance(values, dict):
            settings.setdefault(section, {}).update(values)
        else:
            settings[section] = values
    temporary = []
    if scenario.get("kubernetes"):
        # The scenario's Services and EndpointSlices reach the driver as its file source.
        objects = objects_from_documents(scenario["kubernetes"])
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as kube:
            yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objects}, kube)
        temporary.append(kube.name)
        settings.setdefault("services", {}).update(source="file", files=[kube.name])
    else:
        settings.setdefault("services", {}).setdefault("source", "none")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as cfg:
        yaml.safe_dump(settings, cfg)
    temporary.append(cfg.name)
    env = dict(os.environ, FELIX_P4_CONFIG=cfg.name)
    driver = spawn_driver(env=env)
    try:
        await _feed_and_settle(driver, messages)
        yield messages, settings
    finally:
        await driver.stop()
        for path in temporary:
            os.unlink(path)


async def _feed_and_settle(driver: Any, messages: list[fb.ToDataplane]) -> None:
    """Send every message, then wait for DataplaneInSync and a status per touched endpoint."""
    pending: set[WorkloadEndpointKey] = set()
    expect_in_sync = False
    for message in messages:
        payload = message.WhichOneof("payload")
        if payload == "in_sync":
            expect_in_sync = True
        elif payload in ("workload_endpoint_update", "workload_endpoint_remove"):
            pending.add(endpoint_key(getattr(message, payload).id))
        await driver.send(message)
    if not expect_in_sync:
        return
    in_sync = False

    async def settle() -> None:
        nonlocal in_sync
        while not in_sync or pending:
            reply = await driver.receive()
            if reply is None:
                raise ScenarioError("driver exited before the dataplane was in sync")
            kind = reply.WhichOneof("payload")
            if kind == "dataplane_in_sync":
                in_sync = True
            elif kind in ("workload_endpoint_status_update", "workload_endpoint_status_remove"):
                pending.discard(endpoint_key(getattr(reply, kind).id))

    try:
        await asyncio.wait_for(settle(), SETTLE_TIMEOUT)
    except TimeoutError:
        raise ScenarioError(
            f"no DataplaneInSync / endpoint status within {SETTLE_TIMEOUT}s "
            f"(in sync: {in_sync}, waiting for {sorted(map(str, pending))})"
        ) from None


async def packet_requests(
    scenario: dict[str, Any],
    messages: list[fb.ToDataplane],
    settings: dict[str, Any],
    target: TargetClient,
) -> list[tuple[str, dict[str, Any]]]:
    """(name, Trace request) of each of the scenario's packets, in order: ports by number, a
    pod's packets with the pod's MAC."""
    macs = _endpoint_macs(messages)
    static = settings.get("ports", {}).get("map", {})
    port_names: dict[int, str] = {}
    for name in macs:
        number = static.get(name) if name in static else await target.port_of(name)
        port_names[int(number)] = name
    requests = []
    for i, item in enumerate(scenario.get("packets") or []):
        name = item.get("name", f"packet-{i}")
        in_port = item.get("in_port")
        if isinstance(in_port, str) and not in_port.isdigit():
            in_port = static.get(in_port) or await target.port_of(in_port)
        request: dict[str, Any] = {"in_port": int(in_port), "commit": item.get("stateful", True)}
        if "hex" in item:
            request["hex"] = item["hex"]
        else:
            spec = dict(item.get("packet") or {})
            pod = port_names.get(int(in_port))
            if pod and "src_mac" not in spec:
                spec["src_mac"] = macs[pod]
            request["packet"] = spec
        requests.append((name, request))
    return requests


async def _send_packets(
    scenario: dict[str, Any],
    messages: list[fb.ToDataplane],
    settings: dict[str, Any],
    target: TargetClient,
    as_json: bool,
    out: Any,
) -> int:
    items = scenario.get("packets") or []
    requests = await packet_requests(scenario, messages, settings, target)
    results = []
    by_name: dict[str, dict[str, Any]] = {}
    failed = 0
    for item, (name, request) in zip(items, requests, strict=True):
        try:
            result = await target.trace(request)
        except grpc.aio.AioRpcError as exc:
            raise ScenarioError(f"packet {name}: {exc.details()}") from exc
        result["name"] = name
        failures = check_expect(item["expect"], result, by_name) if "expect" in item else None
        by_name[name] = result
        if failures:
            failed += 1
        results.append(result)
        if not as_json:
            print(format_result(name, result, failures), file=out)
    if as_json:
        print(json.dumps({"packets": results}, indent=2), file=out)
    elif results:
        print(f"{len(results) - failed} passed, {failed} failed", file=out)
    return 1 if failed else 0


async def run_scenario_file(path: str, as_json: bool) -> int:
    try:
        return await run_scenario(load_scenario(path), as_json)
    except ScenarioError as exc:
        print(f"felix-p4 sim: {exc}", file=sys.stderr)
        return 2
