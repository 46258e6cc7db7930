"""Soak: thousands of endpoint, policy, IP-set, profile and service changes with target
restarts injected end with exactly the entries a fresh driver programs for the final state,
and the driver's memory stays flat after warm-up."""

import asyncio
import random

import yaml
from canonical import canonical, device_entries
from felix_harness import ALLOW_ALL_PROFILE, Felix, felix_driver, msg, wait_until

from calico_proto import felixbackend_pb2 as fb
from felix_p4.softswitch.service import start_target

ENDPOINTS = 40
POLICIES = 8
SETS = 6
SERVICES = 5


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class World:
    """The latest version of every object, so the final state can be sent as a snapshot."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.objects: dict[tuple[str, object], fb.ToDataplane] = {}
        self.services: dict[int, list[str]] = {}

    def policy(self, i: int) -> fb.ToDataplane:
        rng = self.rng
        rules = []
        for _ in range(rng.randint(0, 4)):
            rule = {"action": rng.choice(["allow", "deny", "next-tier", "log"])}
            if rng.random() < 0.5:
                rule["protocol"] = {"name": rng.choice(["tcp", "udp"])}
                rule["dst_ports"] = [{"first": 80, "last": rng.choice([80, 90, 8080])}]
            if rng.random() < 0.5:
                rule["src_ip_set_ids"] = [f"s:{rng.randrange(SETS)}"]
            if rng.random() < 0.2:
                rule["not_dst_net"] = ["10.66.0.0/16"]
            rules.append(rule)
        return msg(
            active_policy_update={
                "id": {"name": f"pol-{i}", "namespace": "default", "kind": "NetworkPolicy"},
                "policy": {"tier": "default", "inbound_rules": rules, "outbound_rules": rules[:1]},
            }
        )

    def ipset(self, i: int) -> fb.ToDataplane:
        members = {
            f"10.65.{self.rng.randrange(4)}.{self.rng.randrange(1, 250)}/32" for _ in range(8)
        }
        return msg(ipset_update={"id": f"s:{i}", "type": "NET", "members": sorted(members)})

    def endpoint(self, i: int) -> fb.ToDataplane:
        rng = self.rng
        pols = [
            {"name": f"pol-{p}", "namespace": "default", "kind": "NetworkPolicy"}
            for p in rng.sample(range(POLICIES), rng.randint(0, 2))
        ]
        tiers = (
            [{"name": "default", "ingress_policies": pols, "default_action": "Deny"}]
            if pols
            else []
        )
        return msg(
            workload_endpoint_update={
                "id": {
                    "orchestrator_id": "k8s",
                    "workload_id": f"default/pod-{i}",
                    "endpoint_id": "eth0",
                },
                "endpoint": {
                    "state": "active",
                    "name": f"cali-{i}",
                    "mac": f"0a:58:0a:41:00:{i:02x}",
                    "ipv4_nets": [f"10.65.0.{i + 1}/32"],
                    "profile_ids": ["kns.default"],
                    "tiers": tiers,
                },
            }
        )

    def remove_endpoint(self, i: int) -> fb.ToDataplane:
        return msg(
            workload_endpoint_remove={
                "id": {
                    "orchestrator_id": "k8s",
                    "workload_id": f"default/pod-{i}",
                    "endpoint_id": "eth0",
                }
            }
        )

    def change(self) -> fb.ToDataplane | None:
        rng = self.rng
        kind = rng.choice(
            ["endpoint", "endpoint", "endpoint", "remove", "policy", "ipset", "service"]
        )
        if kind == "endpoint":
            i = rng.randrange(ENDPOINTS)
            self.objects[("endpoint", i)] = message = self.endpoint(i)
            return message
        if kind == "remove":
            i = rng.randrange(ENDPOINTS)
            if self.objects.pop(("endpoint", i), None) is None:
                return None
            return self.remove_endpoint(i)
        if kind == "policy":
            i = rng.randrange(POLICIES)
            self.objects[("policy", i)] = message = self.policy(i)
            return message
        if kind == "ipset":
            i = rng.randrange(SETS)
            self.objects[("ipset", i)] = message = self.ipset(i)
            return message
        i = rng.randrange(SERVICES)
        self.services[i] = [
            f"10.65.0.{rng.randint(1, ENDPOINTS)}" for _ in range(rng.randint(0, 4))
        ]
        return None

    def snapshot(self) -> list[fb.ToDataplane]:
        order = {"ipset": 0, "policy": 1, "endpoint": 2}
        ordered = sorted(self.objects.items(), key=lambda kv: (order[kv[0][0]], str(kv[0][1])))
        return [ALLOW_ALL_PROFILE, *(m for _, m in ordered), msg(in_sync={})]

    def kube(self) -> dict:
        items = []
        for i, backends in sorted(self.services.items()):
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": f"svc-{i}", "namespace": "default"},
                    "spec": {"clusterIP": f"10.96.0.{i + 1}", "ports": [{"name": "p", "port": 80}]},
                }
            )
            items.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "addressType": "IPv4",
                    "metadata": {
                        "name": f"svc-{i}-1",
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": f"svc-{i}"},
                    },
                    "endpoints": [{"addresses": [b], "nodeName": "node-1"} for b in backends],
                    "ports": [{"name": "p", "port": 8080}],
                }
            )
        return {"apiVersion": "v1", "kind": "List", "items": items}


def test_soak_converges_to_a_fresh_compile_with_flat_memory(tmp_path):
    rng = random.Random(1234)
    world = World(rng)
    ports = {f"cali-{i}": i + 1 for i in range(ENDPOINTS)} | {"host": 100}
    kube = tmp_path / "kube.yaml"

    def settings(kube_file):
        kube_file.write_text(yaml.safe_dump(world.kube()))
        return {
            "ports": {"map": ports},
            "services": {"source": "file", "files": [str(kube_file)], "poll_seconds": 0.05},
        }

    async def main():
        server, port, target = await start_target("127.0.0.1:0")
        address = f"127.0.0.1:{port}"
        try:
            async with felix_driver(address, tmp_path, settings(kube)) as felix:
                await felix.send(*world.snapshot())
                await felix.wait_for(lambda r: felix.in_sync())
                pid = felix.driver.pid
                warm = None
                sent = 0
                for round_ in range(12):
                    for _ in range(250):
                        change = world.change()
                        if change is not None:
                            await felix.send(change)
                            sent += 1
                    kube.write_text(yaml.safe_dump(world.kube()))
                    if round_ % 4 == 3:
                        await server.stop(None)  # the target dies and comes back empty
                        server, _, target = await start_target(address)
                    if round_ == 3:
                        warm = _rss_kib(pid)
                assert sent > 2000
                async with felix_driver_fresh(tmp_path, world, settings) as fresh_target:
                    expected = canonical(device_entries(fresh_target))
                    try:
                        await wait_until(
                            lambda: (
                                target.tables is not None
                                and canonical(device_entries(target)) == expected
                            ),
                            timeout=60,
                            what="the soaked target to equal a fresh compile",
                        )
                    except AssertionError:
                        got = canonical(device_entries(target)) if target.tables else set()
                        extra = sorted(map(repr, got - expected))[:4]
                        missing = sorted(map(repr, expected - got))[:4]
                        raise AssertionError(f"extra: {extra}\nmissing: {missing}") from None
                end = _rss_kib(pid)
                assert warm is not None and end < warm * 1.25, (warm, end)
        finally:
            await server.stop(None)

    asyncio.run(main())


class felix_driver_fresh:
    """A fresh target and driver fed the final state as one snapshot."""

    def __init__(self, tmp_path, world: World, settings) -> None:
        self.tmp_path, self.world, self.settings = tmp_path, world, settings

    async def __aenter__(self):
        self.server, port, target = await start_target("127.0.0.1:0")
        self.driver_cm = felix_driver(
            f"127.0.0.1:{port}", self.tmp_path, self.settings(self.tmp_path / "fresh.yaml")
        )
        felix: Felix = await self.driver_cm.__aenter__()
        await felix.send(*self.world.snapshot())
        await felix.wait_for(lambda r: felix.in_sync(), timeout=60)
        return target

    async def __aexit__(self, *exc):
        await self.driver_cm.__aexit__(*exc)
        await self.server.stop(None)
