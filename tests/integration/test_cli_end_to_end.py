"""As an operator sees it: `felix-p4 target` and the driver (default settings) as processes,
then `felix-p4 trace` and `felix-p4 tables`."""

import asyncio
import json
import os
import subprocess
import sys

import grpc
from felix_harness import SNAPSHOT, Felix, msg
from target_process import free_port

from felix_p4.felix.spawn import spawn_driver

CLI = [sys.executable, "-m", "felix_p4"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_target_driver_trace_and_tables_as_processes(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    target = subprocess.Popen([*CLI, "target", "--listen", address], stderr=subprocess.PIPE)
    try:

        async def main() -> None:
            async with grpc.aio.insecure_channel(address) as channel:
                await asyncio.wait_for(channel.channel_ready(), 30)
            env = dict(
                os.environ,
                FELIX_P4_CONFIG=str(tmp_path / "absent.yaml"),
                FELIX_P4_P4RUNTIME_ADDRESS=address,
                FELIX_P4_P4RUNTIME_PLAINTEXT="true",
            )
            driver = spawn_driver(env=env)
            felix = Felix(driver)
            try:
                await felix.send(*SNAPSHOT, msg(in_sync={}))
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
            finally:
                assert await driver.stop() == 0
                felix._task.cancel()

        asyncio.run(main())

        packet = "{src: 10.65.0.2, dst: 10.65.0.3, proto: tcp, dport: 443}"
        traced = _cli(
            "trace", "--target", address, "--in-port", "cali-a", "--packet", packet, "--json"
        )
        assert traced.returncode == 0, traced.stderr
        result = json.loads(traced.stdout)["packets"][0]
        assert result["verdict"] == "forward"
        assert result["packet"]["dst_mac"] == "0a:58:0a:41:00:03"
        tables_hit = [s["table"] for s in result["trace"]]
        forwarding = {"port_classify", "source_check_v4", "routes_v4"}
        assert [t for t in tables_hit if t in forwarding] == [
            "port_classify",
            "source_check_v4",
            "routes_v4",
        ]
        decided = [s for s in result["trace"] if s["table"].endswith("_stage_0")]
        assert [s["rule"] for s in decided] == [
            "profile kns.default | egress rule 0",
            "profile kns.default | ingress rule 0",
        ]

        human = _cli("trace", "--target", address, "--in-port", "cali-a", "--packet", packet)
        assert "forward" in human.stdout and "routes_v4" in human.stdout

        tables = _cli("tables", "--target", address, "--json")
        assert tables.returncode == 0, tables.stdout
        listed = json.loads(tables.stdout)
        routes = [e for e in listed if e["table"] == "routes_v4"]
        assert {e["action"] for e in routes} == {"to_workload", "to_host"}
    finally:
        target.terminate()
        target.wait(10)
