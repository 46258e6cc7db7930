"""Policy through the real driver and target: restarts, IP-set deltas, edits, capacity."""

import asyncio

import grpc
from felix_harness import (
    SNAPSHOT,
    embedded_target,
    endpoint_update,
    felix_driver,
    msg,
    policy_update,
    tier,
    wait_until,
)

from felix_p4.softswitch.client import TargetClient

IN_SYNC = msg(in_sync={})
WEB_SET = msg(ipset_update={"id": "s:web", "type": "NET", "members": ["10.65.0.2/32"]})
ALLOW_WEB = policy_update(
    "allow-web",
    "default",
    inbound=[
        {
            "action": "allow",
            "protocol": {"name": "tcp"},
            "dst_ports": [{"first": 80, "last": 80}],
            "src_ip_set_ids": ["s:web"],
        }
    ],
)
# cali-b is protected: only TCP 80 from the s:web set.
POLICY_SNAPSHOT = [
    *SNAPSHOT[:3],
    WEB_SET,
    ALLOW_WEB,
    endpoint_update(
        "cali-b", "10.65.0.3/32", "0a:58:0a:41:00:03", tiers=[tier("default", ["allow-web"])]
    ),
]


async def _trace(address: str, port: int, packet: dict) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        return await TargetClient(channel).trace({"in_port": port, "packet": packet})


def test_policy_is_enforced_and_a_restart_rewrites_nothing(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*POLICY_SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
            allowed = await _trace(
                address, 1, {"src": "10.65.0.2", "dst": "10.65.0.3", "dport": 80}
            )
            denied = await _trace(address, 1, {"src": "10.65.0.2", "dst": "10.65.0.3", "dport": 22})
            assert allowed["verdict"] == "forward" and denied["verdict"] == "drop"
            assert any("allow-web" in s.get("rule", "") for s in allowed["trace"])
            written = target.write_count
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*POLICY_SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses() == {"default/cali-a": "up", "default/cali-b": "up"}
            assert target.write_count == written  # program ids and set bits were recovered

    asyncio.run(main())


def test_ip_set_delta_writes_only_the_changed_member(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*POLICY_SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                before = target.write_count
                await felix.send(
                    msg(ipset_delta_update={"id": "s:web", "added_members": ["10.65.9.9/32"]})
                )
                await wait_until(lambda: target.write_count > before, what="the delta's write")
                # A later endpoint's status proves the delta's apply is complete.
                await felix.send(endpoint_update("cali-c", "10.65.0.4/32", "0a:58:0a:41:00:04"))
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-c") == "up")
                assert target.write_count - before == 1 + 3  # one member; cali-c's 3 entries
                assert target.tables.entry_count("ipset_src_v4") == 2

    asyncio.run(main())


def test_policy_edit_moves_endpoints_to_a_new_program_and_removes_the_old(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(*POLICY_SNAPSHOT, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                stage_entries = target.tables.entry_count("ingress_stage_0")
                opened = policy_update("allow-web", "default", inbound=[{"action": "allow"}])
                await felix.send(opened)
                # The last step of the apply: the set bit nothing references is released
                # and its classification entry deleted, after the old program's entries.
                await wait_until(
                    lambda: target.tables.entry_count("ipset_src_v4") == 0,
                    what="the old program's removal",
                )
                ssh = await _trace(
                    address, 1, {"src": "10.65.0.2", "dst": "10.65.0.3", "dport": 22}
                )
                assert ssh["verdict"] == "forward"
                # Same shape of program (one rule, end of tier), so no entries left behind.
                assert target.tables.entry_count("ingress_stage_0") == stage_entries

    asyncio.run(main())


def test_more_tiers_than_stages_is_an_error_and_fails_closed(tmp_path):
    async def main():
        async with embedded_target() as (address, _):
            async with felix_driver(address, tmp_path) as felix:
                tiers = [tier(f"t{i}", ["allow-web"]) for i in range(8)]
                await felix.send(
                    *POLICY_SNAPSHOT[:5],
                    endpoint_update("cali-b", "10.65.0.3/32", tiers=tiers),
                    IN_SYNC,
                )
                await felix.wait_for(lambda r: felix.in_sync())
                assert felix.statuses()["default/cali-b"] == "error"
                assert felix.statuses()["default/cali-a"] == "up"
            to_b = await _trace(address, 1, {"src": "10.65.0.2", "dst": "10.65.0.3", "dport": 80})
            assert to_b["verdict"] == "drop"  # no route to an endpoint we could not protect

    asyncio.run(main())


def test_out_of_set_bits_is_an_error_for_that_endpoint_only(tmp_path):
    async def main():
        async with embedded_target() as (address, target):
            many = [
                msg(ipset_update={"id": f"s:{i}", "type": "NET", "members": [f"10.9.{i}.0/24"]})
                for i in range(200)
            ]
            greedy = policy_update(
                "greedy",
                "default",
                inbound=[{"action": "allow", "src_ip_set_ids": [f"s:{i}"]} for i in range(200)],
            )
            async with felix_driver(address, tmp_path) as felix:
                await felix.send(
                    *SNAPSHOT,
                    *many,
                    greedy,
                    endpoint_update("cali-c", "10.65.0.4/32", tiers=[tier("default", ["greedy"])]),
                    IN_SYNC,
                )
                await felix.wait_for(lambda r: felix.in_sync())
                statuses = felix.statuses()
                assert statuses["default/cali-c"] == "error"
                assert statuses["default/cali-a"] == statuses["default/cali-b"] == "up"
                assert target.tables.entry_count("ipset_src_v4") == 0  # nothing half-installed

    asyncio.run(main())


def test_table_full_is_an_error_without_a_partial_program_then_recovers(tmp_path):
    from google.protobuf import text_format

    from felix_p4.p4.artefacts import DEFAULT_P4INFO, load_p4info

    info = load_p4info(DEFAULT_P4INFO)
    for table in info.tables:
        if table.preamble.name == "ingress_stage_0":
            table.size = 4
    small = tmp_path / "small.p4info.txtpb"
    small.write_text(text_format.MessageToString(info))
    five_rules = policy_update(
        "allow-web",
        "default",
        inbound=[
            {"action": "allow", "protocol": {"name": "tcp"}, "dst_ports": [{"first": p, "last": p}]}
            for p in (80, 81, 82, 83, 84)
        ],
    )

    async def main():
        async with embedded_target() as (address, target):
            settings = {"pipeline": {"p4info": str(small)}}
            async with felix_driver(address, tmp_path, settings) as felix:
                protected = endpoint_update(
                    "cali-b", "10.65.0.3/32", tiers=[tier("default", ["allow-web"])]
                )
                # First the namespace profile's program (2 of the 4 slots), then a policy
                # whose program needs 6: it cannot fit.
                await felix.send(*SNAPSHOT[:3], WEB_SET, IN_SYNC)
                await felix.wait_for(lambda r: felix.in_sync())
                await felix.send(five_rules, protected)
                await felix.wait_for(lambda r: felix.statuses().get("default/cali-b") == "error")
                assert felix.statuses()["default/cali-a"] == "up"
                to_b = await _trace(
                    address, 1, {"src": "10.65.0.2", "dst": "10.65.0.3", "dport": 80}
                )
                assert to_b["verdict"] == "drop"  # never reachable through a partial program
                await felix.send(ALLOW_WEB)  # one rule: the program fits now
                await felix.wait_for(lambda r: felix.statuses()["default/cali-b"] == "up")
                to_b = await _trace(
                    address, 1, {"src": "10.65.0.2", "dst": "10.65.0.3", "dport": 80}
                )
                assert to_b["verdict"] == "forward"
                assert target.tables.entry_count("ingress_stage_0") == 4

    asyncio.run(main())
