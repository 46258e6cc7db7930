"""Services through the real driver and target, backends from a file source that changes."""

import asyncio

import grpc
import yaml
from felix_harness import SNAPSHOT, embedded_target, endpoint_update, felix_driver, msg, wait_until

from felix_p4.pipeline import MAX_BUCKETS
from felix_p4.softswitch.client import TargetClient

IN_SYNC = msg(in_sync={})


def _objects(backends: list[str], affinity: bool = False, timeout: int | None = None) -> dict:
    spec: dict = {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}
    if affinity:
        spec["sessionAffinity"] = "ClientIP"
    if timeout is not None:
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": timeout}}
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": spec,
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "addressType": "IPv4",
                "metadata": {
                    "name": "web-1",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "web"},
                },
                "endpoints": [{"addresses": [b], "nodeName": "node-1"} for b in backends],
                "ports": [{"name": "http", "port": 8080}],
            },
        ],
    }


async def _trace(address: str, sport: int, commit: bool = True) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        return await TargetClient(channel).trace(
            {
                "in_port": 1,
                "commit": commit,
                "packet": {"src": "10.65.0.2", "dst": "10.96.0.10", "dport": 80, "sport": sport},
            }
        )


def test_backend_churn_keeps_connections_and_moves_only_the_buckets_that_change_hands(tmp_path):
    kube = tmp_path / "kube.yaml"
    kube.write_text(yaml.safe_dump(_objects(["10.65.0.3", "10.65.9.1"])))
    settings = {"services": {"source": "file", "files": [str(kube)], "poll_seconds": 0.05}}

    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path, settings) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                tables = target.tables
                assert tables.entry_count("service_backends") == 2  # 2 backends, 1 bucket each
                first = await _trace(address, 40000)
                backend = first["packet"]["dst"]
                assert backend in ("10.65.0.3", "10.65.9.1")
                before = target.write_count
                # Scale up 2 -> 3: 2 buckets become 16, started from the old 2 repeated (the
                # bucket is the hash's low bits); the newcomer's 5 come from the new ones, so
                # the writes are 14 inserts and the front end's new mask: no old bucket moves.
                three = ["10.65.0.3", "10.65.9.1", "10.65.9.2"]
                kube.write_text(yaml.safe_dump(_objects(three)))
                await wait_until(lambda: tables.entry_count("service_backends") == 16)
                await wait_until(lambda: target.write_count - before >= 15)
                assert target.write_count - before == 15
                # 3 -> 4 keeps 16 buckets and moves only 4 to the newcomer.
                written = target.write_count
                kube.write_text(yaml.safe_dump(_objects([*three, "10.65.9.3"])))
                await wait_until(lambda: target.write_count - written >= 4)
                assert target.write_count - written == 4
                # Scale down to a set without the connection's backend: it stays pinned.
                others = [b for b in ("10.65.9.7", "10.65.9.8") if b != backend]
                kube.write_text(yaml.safe_dump(_objects(others)))
                await wait_until(lambda: tables.entry_count("service_backends") == 2)
                again = await _trace(address, 40000)
                assert again["packet"]["dst"] == backend
                fresh = await _trace(address, 40123)
                assert fresh["packet"]["dst"] in others

    asyncio.run(main())


def test_a_service_port_with_more_backends_than_buckets_is_refused_whole(tmp_path):
    kube = tmp_path / "kube.yaml"
    too_many = [f"10.70.{i // 250}.{i % 250 + 1}" for i in range(MAX_BUCKETS + 1)]
    kube.write_text(yaml.safe_dump(_objects(too_many)))
    settings = {"services": {"source": "file", "files": [str(kube)]}}

    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path, settings) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync(), timeout=60)
                assert target.tables.entry_count("service_backends") == 0
                assert target.tables.entry_count("services") == 0
                assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}

    asyncio.run(main())


def test_client_ip_affinity_keeps_a_client_on_one_backend(tmp_path):
    kube = tmp_path / "kube.yaml"
    backends = [f"10.65.9.{i}" for i in range(1, 9)]
    kube.write_text(yaml.safe_dump(_objects(backends, affinity=True)))
    settings = {"services": {"source": "file", "files": [str(kube)]}}

    async def main():
        async with embedded_target() as (address, _):
            async with felix_driver(address, tmp_path, settings) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                chosen = {
                    (await _trace(address, port))["packet"]["dst"] for port in range(40000, 40020)
                }
                assert len(chosen) == 1
                # A client with no affinity yet (and a trace that learns nothing) gets the
                # hash's choice, which differs between its connections.
                spread = set()
                async with grpc.aio.insecure_channel(address) as channel:
                    for port in range(41000, 41020):
                        result = await TargetClient(channel).trace(
                            {
                                "in_port": 100,
                                "commit": False,
                                "packet": {
                                    "src": "203.0.113.7",
                                    "dst": "10.96.0.10",
                                    "dport": 80,
                                    "sport": port,
                                },
                            }
                        )
                        affinity = [s for s in result["trace"] if s["table"] == "service_affinity"]
                        assert affinity and not affinity[0]["hit"]
                        spread.add(result["packet"]["dst"])
                assert len(spread) > 1

    asyncio.run(main())


def test_an_affinity_timeout_the_target_cannot_honour_is_warned_about_once(tmp_path):
    kube = tmp_path / "kube.yaml"
    kube.write_text(yaml.safe_dump(_objects(["10.65.9.1"], affinity=True, timeout=600)))
    settings = {"services": {"source": "file", "files": [str(kube)], "poll_seconds": 0.05}}
    log = tmp_path / "driver.log"

    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path, settings, log=log) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                # Still programmed (with the target's timeout), and a later change of the
                # service does not repeat the warning.
                assert target.tables.entry_count("services") == 1
                kube.write_text(
                    yaml.safe_dump(_objects(["10.65.9.1", "10.65.9.2"], True, timeout=600))
                )
                await wait_until(lambda: target.tables.entry_count("service_backends") == 2)

    asyncio.run(main())
    warnings = [line for line in log.read_text().splitlines() if "affinity lasts" in line]
    assert len(warnings) == 1 and "10800 s" in warnings[0] and "600 s" in warnings[0]


def test_policy_sees_the_backend_after_dnat(tmp_path):
    kube = tmp_path / "kube.yaml"
    kube.write_text(yaml.safe_dump(_objects(["10.65.0.3"])))
    settings = {"services": {"source": "file", "files": [str(kube)]}}
    # cali-b accepts only TCP 8080 (its backend port), never 80 (the service port).
    only_8080 = msg(
        active_policy_update={
            "id": {"name": "only-8080", "namespace": "default", "kind": "NetworkPolicy"},
            "policy": {
                "tier": "default",
                "inbound_rules": [
                    {
                        "action": "allow",
                        "protocol": {"name": "tcp"},
                        "dst_ports": [{"first": 8080, "last": 8080}],
                    }
                ],
            },
        }
    )
    protected = endpoint_update(
        "cali-b",
        "10.65.0.3/32",
        "0a:58:0a:41:00:03",
        tiers=[
            {
                "name": "default",
                "default_action": "Deny",
                "ingress_policies": [
                    {"name": "only-8080", "namespace": "default", "kind": "NetworkPolicy"}
                ],
            }
        ],
    )

    async def main():
        async with embedded_target() as (address, _):
            async with felix_driver(address, tmp_path, settings) as felix:
                await felix.send(*SNAPSHOT[:3], only_8080, protected, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                result = await _trace(address, 40000, commit=False)
                assert result["verdict"] == "forward", result["reason"]
                assert result["packet"]["dport"] == 8080

    asyncio.run(main())


def test_thousands_of_backends_in_one_service(tmp_path):
    kube = tmp_path / "kube.yaml"
    backends = [f"10.70.{i // 250}.{i % 250 + 1}" for i in range(3000)]
    kube.write_text(yaml.safe_dump(_objects(backends)))
    settings = {"services": {"source": "file", "files": [str(kube)]}}

    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path, settings) as felix:
                await felix.send(*SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync(), timeout=60)
                # 3,000 backends spread over 4,096 buckets (the most a service port has).
                assert target.tables.entry_count("service_backends") == 4096
                chosen = set()
                for port in range(40000, 40200):
                    result = await _trace(address, port, commit=False)
                    chosen.add(result["packet"]["dst"])
                assert len(chosen) > 150  # the hash spreads over the whole group

    asyncio.run(main())
