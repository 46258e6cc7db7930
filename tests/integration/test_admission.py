"""One endpoint must never starve the rest: objects are admitted whole or not at all, room
freed admits the waiting ones in Felix's order, a device smaller than declared is rolled back
to, a silent target is a lost session, and none of it floods the log."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from felix_harness import (
    ALLOW_ALL_PROFILE,
    SNAPSHOT,
    embedded_target,
    endpoint_remove,
    endpoint_update,
    felix_driver,
    msg,
    wait_until,
)
from finsy.proto import p4r

from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info
from felix_p4.p4.schema import PipelineSchema

IN_SYNC = msg(in_sync={})
SCHEMA = PipelineSchema(load_p4info(DEFAULT_P4INFO))
PODS = {
    name: (f"10.65.0.{n}/32", f"0a:58:0a:41:00:{n:02x}")
    for n, name in enumerate(("cali-a", "cali-b", "cali-c", "cali-d", "cali-e"), start=2)
}
PORTS = {name: i for i, name in enumerate(PODS, start=1)} | {"cali-huge": 9, "host": 100}


def _pod(name: str, **extra):
    ip, mac = PODS[name]
    return endpoint_update(name, ip, mac, **extra)


def _entries(target) -> set:
    read = target.tables.read(p4r.Entity(table_entry=p4r.TableEntry()))
    return {SCHEMA.decode(e.table_entry) for e in read if e.table_entry.table_id}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _applies(metrics: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{metrics}/metrics") as reply:
            for line in (await reply.text()).splitlines():
                if line.startswith("felix_p4_applies_total "):
                    return float(line.split()[1])
    return 0.0


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
    metrics = f"127.0.0.1:{_free_port()}"
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
    settings["metrics"]["address"] = f"127.0.0.1:{_free_port()}"
    without = asyncio.run(run(False))
    assert with_huge == without  # nothing of the huge endpoint reached the device
    lines = log.read_text().splitlines()
    about_huge = [line for line in lines if "cali-huge" in line]
    assert len(about_huge) == 1, about_huge
    assert "more than one endpoint may take (655)" in about_huge[0]
    assert len(lines) < 60, lines


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
    async def main():
        # The P4Info says 65,536; the device holds three (the default route and two pods).
        async with embedded_target({"routes_v4": 3}) as (address, target):
            async with felix_driver(address, tmp_path, {"ports": {"map": PORTS}}) as felix:
                await felix.send(ALLOW_ALL_PROFILE, _pod("cali-a"), _pod("cali-b"), IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                before = _entries(target)
                await felix.send(_pod("cali-c"))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-c") == "error")
                # The part of cali-c that got in (its port, its source check) was removed again.
                await wait_until(lambda: _entries(target) == before, what="the roll-back")
                await felix.send(endpoint_remove("cali-a"))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-c") == "up")
                assert target.tables.entry_count("routes_v4") == 3

    asyncio.run(main())


def test_an_endpoint_naming_a_profile_felix_never_sent_is_error_until_it_arrives(tmp_path):
    async def main():
        async with embedded_target() as (address, _):
            async with felix_driver(address, tmp_path, {"ports": {"map": PORTS}}) as felix:
                lonely = _pod("cali-a", profile_ids=["kns.later"])
                await felix.send(ALLOW_ALL_PROFILE, lonely, _pod("cali-b"), IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "error", "default/cali-b": "up"}
                later = msg(
                    active_profile_update={
                        "id": {"name": "kns.later"},
                        "profile": {"inbound_rules": [{"action": "allow"}]},
                    }
                )
                await felix.send(later)
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-a") == "up")

    asyncio.run(main())


def test_a_silent_target_is_logged_once_and_converges_when_it_answers(tmp_path):
    """The target is a process stopped with SIGSTOP: connections hang, nothing answers."""
    log = tmp_path / "driver.log"

    async def main():
        port = _free_port()
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
