"""One endpoint must never starve the rest: objects are admitted whole or not at all, room
freed admits the waiting ones in Felix's order, a device smaller than declared is rolled back
to, a silent target is a lost session, and none of it floods the log."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import sys
from pathlib import Path

import aiohttp
import grpc
import yaml
from felix_harness import (
    ALLOW_ALL_PROFILE,
    SNAPSHOT,
    embedded_target,
    endpoint_remove,
    endpoint_update,
    felix_driver,
    msg,
    policy_update,
    tier,
    wait_until,
)
from finsy.proto import p4r, rpc_code
from prometheus_client.parser import text_string_to_metric_families
from target_process import free_port

from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema
from felix_p4.softswitch.client import TargetClient
from felix_p4.softswitch.server import ModelEngine
from felix_p4.softswitch.service import start_target
from felix_p4.softswitch.store import P4RuntimeError

IN_SYNC = msg(in_sync={})
ADMISSIONS = "felix_p4_admissions_total"
CAPACITY = "felix_p4_table_capacity"
OCCUPANCY = "felix_p4_table_entries"
REPEATS = "felix_p4_log_repeats_suppressed_total"
SCHEMA = PipelineSchema(load_p4info(DEFAULT_P4INFO))
PODS = {
    name: (f"10.65.0.{n}/32", f"0a:58:0a:41:00:{n:02x}")
    for n, name in enumerate(("cali-a", "cali-b", "cali-c", "cali-d", "cali-e"), start=2)
}
PORTS = {name: i for i, name in enumerate(PODS, start=1)} | {"cali-huge": 9, "host": 100}


def _pod(name: str, **extra):
    ip, mac = PODS[name]
    return endpoint_update(name, ip, mac, **extra)


async def _trace(address: str, in_port: int, src: str, dst: str) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        return await TargetClient(channel).trace(
            {"in_port": in_port, "packet": {"src": src, "dst": dst, "dport": 80}}
        )


def _entries(target) -> set:
    read = target.tables.read(p4r.Entity(table_entry=p4r.TableEntry()))
    return {SCHEMA.decode(e.table_entry) for e in read if e.table_entry.table_id}


async def _scrape(metrics: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The driver's /metrics, as (sample name, sorted labels) -> value."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{metrics}/metrics") as reply:
            text = await reply.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _sample(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


async def _applies(metrics: str) -> float:
    return _sample(await _scrape(metrics), "felix_p4_applies_total")


async def _retries(metrics: str, count: int) -> None:
    """Until the driver has applied `count` more times (it retries endpoints in error every
    second): the event that proves repeats were suppressed, not merely not yet logged."""
    start = await _applies(metrics)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while await _applies(metrics) < start + count:
        assert loop.time() < deadline, "the driver stopped retrying"
        await asyncio.sleep(0.1)


def test_an_endpoint_with_70000_addresses_takes_nothing_from_the_others(tmp_path):
    huge_nets = [
        f"{ipaddress.IPv4Address(0x0A800000 + i)}/32" for i in range(70_000)
    ]  # 10.128.0.0 onwards
    huge = endpoint_update("cali-huge", huge_nets[0], "0a:58:0a:80:00:01")
    huge.workload_endpoint_update.endpoint.ipv4_nets[:] = huge_nets
    log = tmp_path / "driver.log"
    metrics = f"127.0.0.1:{free_port()}"
    settings = {
        "ports": {"map": PORTS},
        "metrics": {"address": metrics},
        "log_level": "INFO",
    }

    async def run(with_huge: bool) -> set:
        async with embedded_target() as (address, target):
            async with felix_driver(
                address, tmp_path, settings, log if with_huge else None
            ) as felix:
                snapshot = [ALLOW_ALL_PROFILE, _pod("cali-a"), _pod("cali-b")]
                if with_huge:
                    snapshot.append(huge)
                await felix.send(*snapshot, _pod("cali-c"), IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                expected = {"default/cali-a": "up", "default/cali-b": "up", "default/cali-c": "up"}
                if with_huge:
                    expected["default/cali-huge"] = "error"
                    await _retries(metrics, 3)
                assert felix.statuses() == expected
                return _entries(target)

    with_huge = asyncio.run(run(True))
    settings["metrics"]["address"] = f"127.0.0.1:{free_port()}"
    without = asyncio.run(run(False))
    assert with_huge == without  # nothing of the huge endpoint reached the device
    lines = log.read_text().splitlines()
    about_huge = [line for line in lines if "cali-huge" in line]
    assert len(about_huge) == 1, about_huge
    assert "more than one endpoint may take (655)" in about_huge[0]
    assert len(lines) < 60, lines


def test_metrics_show_occupancy_capacity_and_admissions_by_reason(tmp_path):
    over = endpoint_update("cali-huge", "10.128.0.0/32", "0a:58:0a:80:00:01")
    over.workload_endpoint_update.endpoint.ipv4_nets[:] = [
        f"{ipaddress.IPv4Address(0x0A800000 + i)}/32" for i in range(700)
    ]  # more than 1% of routes_v4 (655)
    metrics = f"127.0.0.1:{free_port()}"
    settings = {"ports": {"map": PORTS}, "metrics": {"address": metrics}}

    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path, settings) as felix:
                pods = [_pod(n) for n in ("cali-a", "cali-b", "cali-c")]
                await felix.send(ALLOW_ALL_PROFILE, *pods, over, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses()["default/cali-huge"] == "error"
                await _retries(metrics, 3)
                scraped = await _scrape(metrics)
                for table in ("routes_v4", "source_check_v4", "port_classify"):
                    occupancy = _sample(scraped, OCCUPANCY, table=table)
                    assert occupancy == target.tables.entry_count(table), table
                assert _sample(scraped, OCCUPANCY, table="routes_v4") == 4  # host + 3 pods
                assert _sample(scraped, CAPACITY, table="routes_v4") == 65536
                endpoint = {"kind": "endpoint"}
                # Counted once per change of outcome, not once per retry.
                assert (
                    _sample(scraped, ADMISSIONS, **endpoint, result="admitted", reason="none") == 3
                )
                assert (
                    _sample(scraped, ADMISSIONS, **endpoint, result="refused", reason="share") == 1
                )
                program = {"kind": "program", "result": "admitted", "reason": "none"}
                assert _sample(scraped, ADMISSIONS, **program) >= 1
                assert (
                    _sample(scraped, ADMISSIONS, kind="route", result="admitted", reason="none")
                    >= 1
                )
                # A pod added later is counted too.
                await felix.send(_pod("cali-d"))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-d") == "up")
                scraped = await _scrape(metrics)
                assert (
                    _sample(scraped, ADMISSIONS, **endpoint, result="admitted", reason="none") == 4
                )
                assert _sample(scraped, OCCUPANCY, table="routes_v4") == 5

    asyncio.run(main())


def _small_p4info(tmp_path: Path, table: str, size: int) -> Path:
    from google.protobuf import text_format

    info = load_p4info(DEFAULT_P4INFO)
    next(t for t in info.tables if t.preamble.name == table).size = size
    path = tmp_path / "small.p4info.txtpb"
    path.write_text(text_format.MessageToString(info))
    return path


def test_room_freed_admits_the_waiting_endpoints_in_felixs_order(tmp_path):
    # routes_v4 holds the host's default route and three pods.
    p4info = _small_p4info(tmp_path, "routes_v4", 4)
    settings = {"ports": {"map": PORTS}, "pipeline": {"p4info": str(p4info)}}

    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path, settings) as felix:
                await felix.send(
                    ALLOW_ALL_PROFILE,
                    *(_pod(n) for n in ("cali-a", "cali-b", "cali-c", "cali-d", "cali-e")),
                    IN_SYNC,
                )
                await felix.wait_for(lambda r: felix.in_sync())
                statuses = felix.statuses()
                assert [statuses[f"default/{n}"] for n in PODS] == ["up"] * 3 + ["error"] * 2
                # Nothing of the refused endpoints is on the device.
                assert target.tables.entry_count("routes_v4") == 4
                assert target.tables.entry_count("port_classify") == 4  # 3 pods and the host
                await felix.send(endpoint_remove("cali-a"))
                # cali-d came before cali-e: it gets the room.
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-d") == "up")
                assert felix.statuses()["default/cali-e"] == "error"
                assert target.tables.entry_count("routes_v4") == 4

    asyncio.run(main())


def test_a_device_smaller_than_declared_is_rolled_back_and_remembered(tmp_path):
    log = tmp_path / "driver.log"
    metrics = f"127.0.0.1:{free_port()}"
    settings = {"ports": {"map": PORTS}, "metrics": {"address": metrics}, "log_level": "INFO"}

    async def main():
        # The P4Info says 65,536; the device holds three (the default route and two pods).
        async with embedded_target({"routes_v4": 3}) as (address, target):
            async with felix_driver(address, tmp_path, settings, log) as felix:
                await felix.send(ALLOW_ALL_PROFILE, _pod("cali-a"), _pod("cali-b"), IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                before = _entries(target)
                await felix.send(_pod("cali-c"))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-c") == "error")
                # The part of cali-c that got in (its port, its source check) was removed again.
                await wait_until(lambda: _entries(target) == before, what="the roll-back")
                await _retries(metrics, 3)
                # One transition to error, one line, with one reason (not one per phase of
                # the apply that found it, nor another when the retry is refused up front).
                errors = [
                    line for line in log.read_text().splitlines() if "cali-c/eth0: error" in line
                ]
                assert len(errors) == 1, errors
                assert errors[0].endswith(
                    "workload endpoint k8s/default/cali-c/eth0: error, routes_v4 full (3)"
                )
                scraped = await _scrape(metrics)
                refused = {"kind": "endpoint", "result": "refused"}
                assert _sample(scraped, ADMISSIONS, **refused, reason="device_smaller") == 1
                assert _sample(scraped, ADMISSIONS, **refused, reason="table_full") == 0
                assert _sample(scraped, CAPACITY, table="routes_v4") == 3
                await felix.send(endpoint_remove("cali-a"))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-c") == "up")
                assert target.tables.entry_count("routes_v4") == 3
        up = [line for line in log.read_text().splitlines() if "cali-c/eth0: up" in line]
        assert len(up) == 1 and "repeats suppressed)" in up[0], up

    asyncio.run(main())


def test_a_learned_capacity_survives_a_reconnect_and_is_forgotten_when_the_pipeline_is_pushed(
    tmp_path,
):
    log = tmp_path / "driver.log"
    metrics = f"127.0.0.1:{free_port()}"
    settings = {"ports": {"map": PORTS}, "metrics": {"address": metrics}, "log_level": "INFO"}

    def learned_lines() -> list[str]:
        return [line for line in log.read_text().splitlines() if "fewer than" in line]

    async def main():
        server, port, target = await start_target("127.0.0.1:0", table_limits={"routes_v4": 3})
        address = f"127.0.0.1:{port}"
        try:
            async with felix_driver(address, tmp_path, settings, log) as felix:
                await felix.send(ALLOW_ALL_PROFILE, _pod("cali-a"), _pod("cali-b"), IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                await felix.send(_pod("cali-c"))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-c") == "error")
                assert len(learned_lines()) == 1
                # The next write fails as a lost session does: the driver reconnects to the
                # same device, which still runs our pipeline (nothing is pushed).
                route_inserts: list[int] = []
                routes_v4 = SCHEMA.table_id("routes_v4")
                dropped = False

                def on_write(request: p4r.WriteRequest) -> None:
                    nonlocal dropped
                    if not dropped:
                        dropped = True
                        raise P4RuntimeError(rpc_code.UNAVAILABLE, "stream lost (test)")
                    route_inserts.extend(
                        1
                        for u in request.updates
                        if u.type == p4r.Update.INSERT
                        and u.entity.table_entry.table_id == routes_v4
                    )

                target.on_write.append(on_write)
                await felix.send(endpoint_update("cali-b", PODS["cali-b"][0], "0a:58:0a:41:00:99"))
                await wait_until(
                    lambda: log.read_text().count("installed entries back") == 2,
                    what="the device read back after reconnecting",
                )
                await _retries(metrics, 3)
                # cali-c was refused up front: the device was not asked again, nothing was
                # learned twice, and the capacity the operator sees is still the real one.
                assert route_inserts == []
                assert len(learned_lines()) == 1
                assert _sample(await _scrape(metrics), CAPACITY, table="routes_v4") == 3
                assert felix.statuses()["default/cali-c"] == "error"
                # A new device (restarted without the limit) gets the pipeline pushed: what
                # was learned about the old one no longer holds, and cali-c fits.
                await server.stop(None)
                server, _, target = await start_target(address)
                await felix.wait_for(
                    lambda r: felix.statuses().get("default/cali-c") == "up", timeout=30
                )
                assert target.tables.entry_count("routes_v4") == 4
            assert "forgetting the smaller sizes learned for routes_v4" in log.read_text()
        finally:
            await server.stop(None)

    asyncio.run(main())


class _FaultyEngine(ModelEngine):
    """A target that cannot run some entries: it refuses every update to `table` while
    `failing` is set, the way a hardware target refuses what its driver cannot program."""

    def __init__(self, table: str) -> None:
        self.table_id = SCHEMA.table_id(table)
        self.failing = False

    def check(self, update: p4r.Update) -> None:
        if self.failing and update.entity.table_entry.table_id == self.table_id:
            raise P4RuntimeError(rpc_code.UNIMPLEMENTED, "the engine cannot run this entry")


def test_a_device_rejecting_the_same_entry_on_every_retry_logs_it_once_and_counts_the_rest(
    tmp_path,
):
    log = tmp_path / "driver.log"
    metrics = f"127.0.0.1:{free_port()}"
    settings = {"ports": {"map": PORTS}, "metrics": {"address": metrics}, "log_level": "INFO"}

    def lines(text: str) -> list[str]:
        return [line for line in log.read_text().splitlines() if text in line]

    async def main():
        async with embedded_target() as (address, target):
            engine = _FaultyEngine("source_check_v4")
            target.engine = engine
            async with felix_driver(address, tmp_path, settings, log) as felix:
                await felix.send(ALLOW_ALL_PROFILE, _pod("cali-a"), _pod("cali-b"), IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                engine.failing = True
                await felix.send(_pod("cali-c"))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-c") == "error")
                await _retries(metrics, 3)
                rejected = lines("to source_check_v4 with UNIMPLEMENTED")
                assert len(rejected) == 1, rejected
                assert len(lines("cali-c/eth0: error")) == 1
                scraped = await _scrape(metrics)
                assert _sample(scraped, REPEATS, about="rejected_updates") >= 3
                assert _sample(scraped, REPEATS, about="endpoint") >= 3
                assert (
                    _sample(
                        scraped,
                        ADMISSIONS,
                        kind="endpoint",
                        result="refused",
                        reason="write_failed",
                    )
                    == 1
                )
                engine.failing = False
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-c") == "up")
                await wait_until(
                    lambda: lines("none outstanding now"), what="the rejections' end logged"
                )
        (recovered,) = lines("none outstanding now")
        assert "source_check_v4 rejected with UNIMPLEMENTED" in recovered
        repeats = int(recovered.rsplit("(", 1)[1].split()[0])
        assert repeats >= 3, recovered
        (up,) = lines("cali-c/eth0: up")
        assert "repeats suppressed)" in up

    asyncio.run(main())


def _service(name: str, ip: str, backends: list[str]) -> list[dict]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "addressType": "IPv4",
            "metadata": {
                "name": f"{name}-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": name},
            },
            "endpoints": [{"addresses": [b], "nodeName": "node-1"} for b in backends],
            "ports": [{"name": "http", "port": 8080}],
        },
    ]


def test_a_service_that_does_not_fit_is_not_written_and_the_others_keep_working(tmp_path):
    # service_backends holds 8 buckets: web's 2 backends take 2, big's 3 would take 16.
    p4info = _small_p4info(tmp_path, "service_backends", 8)
    kube = tmp_path / "kube.yaml"
    web = _service("web", "10.96.0.10", ["10.65.0.3", "10.65.9.1"])
    big = _service("big", "10.96.0.20", ["10.65.9.2", "10.65.9.3", "10.65.9.4"])
    kube.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": web + big}))
    log = tmp_path / "driver.log"
    metrics = f"127.0.0.1:{free_port()}"
    settings = {
        "ports": {"map": PORTS},
        "pipeline": {"p4info": str(p4info)},
        "services": {"source": "file", "files": [str(kube)]},
        "metrics": {"address": metrics},
        "log_level": "INFO",
    }

    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path, settings, log) as felix:
                await felix.send(ALLOW_ALL_PROFILE, _pod("cali-a"), _pod("cali-b"), IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                await _retries(metrics, 3)  # refused services are retried every second
                # Nothing of big is on the device: web's front end and buckets only.
                assert target.tables.entry_count("services") == 1
                assert target.tables.entry_count("service_backends") == 2
                to_web = await _trace(address, 1, "10.65.0.2", "10.96.0.10")
                assert to_web["packet"]["dst"] in ("10.65.0.3", "10.65.9.1")
                to_big = await _trace(address, 1, "10.65.0.2", "10.96.0.20")
                assert to_big["packet"]["dst"] == "10.96.0.20"  # not translated
                scraped = await _scrape(metrics)
                service = {"kind": "service"}
                assert (
                    _sample(scraped, ADMISSIONS, **service, result="admitted", reason="none") == 1
                )
                assert (
                    _sample(scraped, ADMISSIONS, **service, result="refused", reason="table_full")
                    == 1
                )
                assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
        refused = [line for line in log.read_text().splitlines() if "not programmed" in line]
        assert refused == [refused[0]] and refused[0].endswith(
            "service default/big: not programmed, service_backends full (8)"
        ), refused

    asyncio.run(main())


def test_an_endpoint_naming_a_profile_felix_never_sent_is_error_until_it_arrives(tmp_path):
    async def main():
        async with embedded_target() as (address, _):
            async with felix_driver(address, tmp_path, {"ports": {"map": PORTS}}) as felix:
                lonely = _pod("cali-a", profile_ids=["kns.later"])
                await felix.send(ALLOW_ALL_PROFILE, lonely, _pod("cali-b"), IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "error", "default/cali-b": "up"}
                # In error, and denying: cali-b cannot reach it.
                denied = await _trace(address, PORTS["cali-b"], "10.65.0.3", "10.65.0.2")
                assert denied["verdict"] == "drop"
                later = msg(
                    active_profile_update={
                        "id": {"name": "kns.later"},
                        "profile": {"inbound_rules": [{"action": "allow"}]},
                    }
                )
                await felix.send(later)
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-a") == "up")
                allowed = await _trace(address, PORTS["cali-b"], "10.65.0.3", "10.65.0.2")
                assert allowed["verdict"] == "forward"

    asyncio.run(main())


def test_an_endpoint_naming_a_policy_felix_never_sent_is_error_and_denies_until_it_arrives(
    tmp_path,
):
    log = tmp_path / "driver.log"

    async def main():
        async with embedded_target() as (address, _):
            settings = {"ports": {"map": PORTS}, "log_level": "INFO"}
            async with felix_driver(address, tmp_path, settings, log) as felix:
                guarded = _pod("cali-a", tiers=[tier("default", ["later"])])
                await felix.send(ALLOW_ALL_PROFILE, guarded, _pod("cali-b"), IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "error", "default/cali-b": "up"}
                denied = await _trace(address, PORTS["cali-b"], "10.65.0.3", "10.65.0.2")
                assert denied["verdict"] == "drop"
                await felix.send(policy_update("later", "default", inbound=[{"action": "allow"}]))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-a") == "up")
                allowed = await _trace(address, PORTS["cali-b"], "10.65.0.3", "10.65.0.2")
                assert allowed["verdict"] == "forward"
        (error,) = [line for line in log.read_text().splitlines() if "cali-a/eth0: error" in line]
        assert error.endswith("refers to policy NetworkPolicy default/later, not sent by Felix")

    asyncio.run(main())


def test_a_silent_target_is_logged_once_and_converges_when_it_answers(tmp_path):
    """The target is a process stopped with SIGSTOP: connections hang, nothing answers."""
    log = tmp_path / "driver.log"

    async def main():
        port = free_port()
        target = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "felix_p4",
            "target",
            "--listen",
            f"127.0.0.1:{port}",
            "--log-level",
            "WARNING",
        )
        try:
            address = f"127.0.0.1:{port}"
            settings = {
                "ports": {"map": PORTS},
                "p4runtime": {"timeout_seconds": 1.0},
                "log_level": "INFO",
            }
            async with felix_driver(address, tmp_path, settings, log) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync(), timeout=30)
                os.kill(target.pid, signal.SIGSTOP)
                # Felix keeps talking; the updates accumulate while nothing answers.
                await felix.send(_pod("cali-c"))
                await wait_until(
                    lambda: "within 1s" in log.read_text(), timeout=30, what="the deadline"
                )
                await felix.send(_pod("cali-d"))
                os.kill(target.pid, signal.SIGCONT)
                await felix.wait_for(
                    lambda r: (
                        felix.statuses().get("default/cali-c") == "up"
                        and felix.statuses().get("default/cali-d") == "up"
                    ),
                    timeout=60,
                )
            text = log.read_text()
            assert text.count("answers again") == 1
            silent = [line for line in text.splitlines() if "within 1s" in line]
            assert len(silent) <= 2, silent  # the write's deadline, then the reconnection's
        finally:
            if target.returncode is None:
                os.kill(target.pid, signal.SIGCONT)
                target.terminate()
                await target.wait()

    asyncio.run(main())
