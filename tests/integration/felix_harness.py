"""Test harness: an embedded target in this process, a driver spawned as Felix spawns it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.spawn import DriverProcess, spawn_driver
from felix_p4.softswitch.server import EmbeddedTarget
from felix_p4.softswitch.service import start_target

PORTS = {"cali-a": 1, "cali-b": 2, "cali-c": 3, "host": 100}


def msg(**payload: Any) -> fb.ToDataplane:
    return json_format.ParseDict(payload, fb.ToDataplane())


def endpoint_update(
    name: str, ip: str, mac: str = "0a:58:00:00:00:01", **extra: Any
) -> fb.ToDataplane:
    endpoint = {
        "state": "active",
        "name": name,
        "mac": mac,
        "ipv4_nets": [ip],
        "profile_ids": ["kns.default"],
        **extra,
    }
    return msg(
        workload_endpoint_update={
            "id": {
                "orchestrator_id": "k8s",
                "workload_id": f"default/{name}",
                "endpoint_id": "eth0",
            },
            "endpoint": endpoint,
        }
    )


def endpoint_remove(name: str) -> fb.ToDataplane:
    return msg(
        workload_endpoint_remove={
            "id": {
                "orchestrator_id": "k8s",
                "workload_id": f"default/{name}",
                "endpoint_id": "eth0",
            }
        }
    )


# What Felix sends for a Kubernetes namespace: a profile allowing everything.
ALLOW_ALL_PROFILE = msg(
    active_profile_update={
        "id": {"name": "kns.default"},
        "profile": {
            "inbound_rules": [{"action": "allow"}],
            "outbound_rules": [{"action": "allow"}],
        },
    }
)

SNAPSHOT = [
    msg(config_update={"config": {"FelixHostname": "node-1", "ReportingIntervalSecs": "30"}}),
    ALLOW_ALL_PROFILE,
    endpoint_update("cali-a", "10.65.0.2/32", "0a:58:0a:41:00:02"),
    endpoint_update("cali-b", "10.65.0.3/32", "0a:58:0a:41:00:03"),
]


class Felix:
    """What Felix sees of one driver: the frames it sends back on fd 4, collected."""

    def __init__(self, driver: DriverProcess) -> None:
        self.driver = driver
        self.received: list[fb.FromDataplane] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        while True:
            message = await self.driver.receive()
            async with self._changed:
                if message is None:
                    self.closed = True
                    self._changed.notify_all()
                    return
                self.received.append(message)
                self._changed.notify_all()

    closed = False

    async def send(self, *messages: fb.ToDataplane) -> None:
        for message in messages:
            await self.driver.send(message)

    async def wait_for(self, predicate: Any, timeout: float = 20.0) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.received) or self.closed)
            if not predicate(self.received):
                raise AssertionError(f"driver closed fd 4 first; got {self.payloads()}")

        await asyncio.wait_for(check(), timeout)

    def payloads(self, kind: str | None = None) -> list[Any]:
        out = []
        for m in self.received:
            which = m.WhichOneof("payload")
            if kind is None:
                out.append(which)
            elif which == kind:
                out.append(getattr(m, which))
        return out

    def statuses(self) -> dict[str, str]:
        """Latest status per workload id; removed endpoints map to "removed"."""
        latest: dict[str, str] = {}
        for m in self.received:
            which = m.WhichOneof("payload")
            if which == "workload_endpoint_status_update":
                latest[m.workload_endpoint_status_update.id.workload_id] = (
                    m.workload_endpoint_status_update.status.status
                )
            elif which == "workload_endpoint_status_remove":
                latest[m.workload_endpoint_status_remove.id.workload_id] = "removed"
        return latest

    def in_sync(self) -> bool:
        return "dataplane_in_sync" in self.payloads()


@asynccontextmanager
async def embedded_target(
    table_limits: dict[str, int] | None = None,
) -> AsyncIterator[tuple[str, EmbeddedTarget]]:
    server, port, target = await start_target("127.0.0.1:0", table_limits=table_limits)
    try:
        yield f"127.0.0.1:{port}", target
    finally:
        await server.stop(None)


@asynccontextmanager
async def felix_driver(
    address: str,
    tmp_path: Path,
    settings: dict[str, Any] | None = None,
    log: Path | None = None,
) -> AsyncIterator[Felix]:
    config = {
        "p4runtime": {"address": address, "plaintext": True},
        "ports": {"mode": "static", "map": PORTS},
        "log_level": "DEBUG",
        # Nothing of the test machine's own networking: no neighbour entries, no NAT tables.
        "network": {"netlink": False, "nat_outgoing": False},
    }
    for key, value in (settings or {}).items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path = tmp_path / f"felix-p4-{os.urandom(4).hex()}.yaml"
    path.write_text(yaml.safe_dump(config))
    # Felix's own environment passes through; FELIX_P4_CONFIG points at our settings.
    env = dict(os.environ, FELIX_P4_CONFIG=str(path), FELIX_FELIXHOSTNAME="node-1")
    if log is None:
        driver = spawn_driver(env=env)
    else:
        with log.open("ab") as stderr:
            driver = spawn_driver(env=env, stderr=stderr.fileno())
    felix = Felix(driver)
    try:
        yield felix
    finally:
        await driver.stop()
        felix._task.cancel()


async def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll a condition the test cannot be notified of (a device counter), with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def policy_update(
    name: str, namespace: str, inbound: list[dict] | None = None, outbound: list[dict] | None = None
) -> fb.ToDataplane:
    return msg(
        active_policy_update={
            "id": {"name": name, "namespace": namespace, "kind": "NetworkPolicy"},
            "policy": {
                "tier": "default",
                "namespace": namespace,
                "inbound_rules": inbound or [],
                "outbound_rules": outbound or [],
            },
        }
    )


def tier(
    name: str, ingress: list[str], egress: tuple[str, ...] = (), default_action: str = "Deny"
) -> dict:
    def ids(names: list[str]) -> list[dict]:
        return [{"name": n, "namespace": "default", "kind": "NetworkPolicy"} for n in names]

    return {
        "name": name,
        "ingress_policies": ids(ingress),
        "egress_policies": ids(list(egress)),
        "default_action": default_action,
    }


def issue_certificate(tmp: Path, name: str, ca: str | None, san: str | None = None) -> None:
    """`tmp/<name>.key` and `.crt` (EC P-256, one day) from openssl: self-signed when `ca` is
    None, else signed by `tmp/<ca>.crt` for the DNS name `san` (a server) or for client auth."""
    key, crt = tmp / f"{name}.key", tmp / f"{name}.crt"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if ca is None:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                *newkey,
                "-keyout",
                key,
                "-out",
                crt,
                "-days",
                "1",
                "-subj",
                f"/CN={name}",
            ],
            check=True,
            capture_output=True,
        )
        return
    csr = tmp / f"{name}.csr"
    subprocess.run(
        ["openssl", "req", *newkey, "-keyout", key, "-out", csr, "-subj", f"/CN={name}"],
        check=True,
        capture_output=True,
    )
    ext = tmp / f"{name}.ext"
    ext.write_text(f"subjectAltName=DNS:{san}\n" if san else "extendedKeyUsage=clientAuth\n")
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            tmp / f"{ca}.crt",
            "-CAkey",
            tmp / f"{ca}.key",
            "-CAcreateserial",
            "-out",
            crt,
            "-days",
            "1",
            "-extfile",
            ext,
        ],
        check=True,
        capture_output=True,
    )
