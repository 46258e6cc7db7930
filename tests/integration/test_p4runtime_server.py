"""The embedded target's P4Runtime server, driven by real gRPC clients over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from finsy.proto import U128, p4i, p4r, p4r_grpc, rpc_code, rpc_status
from google.protobuf import text_format

from felix_p4.softswitch.server import GRPC_SERVER_OPTIONS, EmbeddedTarget, add_p4runtime

DEVICE = 1
TIMEOUT = 10.0  # seconds any single wait may take before the test fails

EXACT, LPM, TERNARY = p4i.MatchField.EXACT, p4i.MatchField.LPM, p4i.MatchField.TERNARY
NO_ACTION, DROP, SET_PORT, SET_NHOP, PERMIT, DENY = range(0x01000001, 0x01000007)
FWD, ACL, ROUTES = range(0x02000001, 0x02000004)


def build_p4info() -> p4i.P4Info:
    """fwd: exact, size 3; acl: ternary with a const default; routes: LPM, unbounded."""

    def action(action_id: int, name: str, *params: tuple[str, int]) -> p4i.Action:
        return p4i.Action(
            preamble=p4i.Preamble(id=action_id, name=name, alias=name),
            params=[
                p4i.Action.Param(id=i, name=n, bitwidth=w) for i, (n, w) in enumerate(params, 1)
            ],
        )

    def field(name: str, bitwidth: int, kind: Any) -> p4i.MatchField:
        return p4i.MatchField(id=1, name=name, bitwidth=bitwidth, match_type=kind)

    def refs(*pairs: tuple[int, Any]) -> list[p4i.ActionRef]:
        return [p4i.ActionRef(id=a, scope=scope) for a, scope in pairs]

    both, default_only = p4i.ActionRef.TABLE_AND_DEFAULT, p4i.ActionRef.DEFAULT_ONLY
    return p4i.P4Info(
        pkg_info=p4i.PkgInfo(name="server-test", arch="pna"),
        actions=[
            action(NO_ACTION, "NoAction"),
            action(DROP, "drop"),
            action(SET_PORT, "set_port", ("port", 9)),
            action(SET_NHOP, "set_nhop", ("nhop", 16)),
            action(PERMIT, "permit"),
            action(DENY, "deny"),
        ],
        tables=[
            p4i.Table(
                preamble=p4i.Preamble(id=FWD, name="fwd", alias="fwd"),
                match_fields=[field("port", 9, EXACT)],
                action_refs=refs((SET_PORT, both), (DROP, both), (NO_ACTION, default_only)),
                size=3,
            ),
            p4i.Table(
                preamble=p4i.Preamble(id=ACL, name="acl", alias="acl"),
                match_fields=[field("src", 32, TERNARY)],
                action_refs=refs((PERMIT, both), (DENY, both)),
                const_default_action_id=DENY,
                size=100,
            ),
            p4i.Table(
                preamble=p4i.Preamble(id=ROUTES, name="routes", alias="routes"),
                match_fields=[field("dst", 32, LPM)],
                action_refs=refs((SET_NHOP, both), (DROP, both)),
            ),
        ],
    )


def enc(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def fwd_entry(port: int, out: int | None = None, **fields: Any) -> p4r.TableEntry:
    te = p4r.TableEntry(
        table_id=FWD,
        match=[p4r.FieldMatch(field_id=1, exact=p4r.FieldMatch.Exact(value=enc(port)))],
        **fields,
    )
    if out is not None:
        te.action.action.CopyFrom(set_port(out))
    return te


def set_port(port: int | bytes) -> p4r.Action:
    value = port if isinstance(port, bytes) else enc(port)
    return p4r.Action(action_id=SET_PORT, params=[p4r.Action.Param(param_id=1, value=value)])


def acl_entry(value: int, mask: int, action_id: int, priority: int) -> p4r.TableEntry:
    return p4r.TableEntry(
        table_id=ACL,
        match=[
            p4r.FieldMatch(
                field_id=1, ternary=p4r.FieldMatch.Ternary(value=enc(value), mask=enc(mask))
            )
        ],
        action=p4r.TableAction(action=p4r.Action(action_id=action_id)),
        priority=priority,
    )


def route(dst: int, plen: int, nhop: int) -> p4r.TableEntry:
    return p4r.TableEntry(
        table_id=ROUTES,
        match=[p4r.FieldMatch(field_id=1, lpm=p4r.FieldMatch.LPM(value=enc(dst), prefix_len=plen))],
        action=p4r.TableAction(
            action=p4r.Action(
                action_id=SET_NHOP, params=[p4r.Action.Param(param_id=1, value=enc(nhop))]
            )
        ),
    )


def insert(te: p4r.TableEntry) -> p4r.Update:
    return p4r.Update(type=p4r.Update.INSERT, entity=p4r.Entity(table_entry=te))


def modify(te: p4r.TableEntry) -> p4r.Update:
    return p4r.Update(type=p4r.Update.MODIFY, entity=p4r.Entity(table_entry=te))


def delete(te: p4r.TableEntry) -> p4r.Update:
    return p4r.Update(type=p4r.Update.DELETE, entity=p4r.Entity(table_entry=te))


def config(
    p4info: p4i.P4Info, cookie: int = 7, blob: bytes = b"blob"
) -> p4r.ForwardingPipelineConfig:
    return p4r.ForwardingPipelineConfig(
        p4info=p4info,
        p4_device_config=blob,
        cookie=p4r.ForwardingPipelineConfig.Cookie(cookie=cookie),
    )


def async_test(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (pytest-asyncio is not a dependency)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 60))

    return run


@contextlib.asynccontextmanager
async def serving(
    target: EmbeddedTarget | None = None,
) -> AsyncIterator[tuple[EmbeddedTarget, str]]:
    target = target or EmbeddedTarget(DEVICE)
    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
    add_p4runtime(server, target)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield target, f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


class Controller:
    """One P4Runtime client: its own channel, the generated stub and a StreamChannel."""

    def __init__(self, address: str) -> None:
        # Per-update error details travel in trailing metadata; allow more than 8 KiB.
        self.channel = grpc.aio.insecure_channel(
            address, options=[("grpc.max_metadata_size", 1 << 20)]
        )
        self.stub = p4r_grpc.P4RuntimeStub(self.channel)
        self.stream: Any = None
        self.election_id = 0

    async def send_arbitration(
        self, election_id: int | None, device_id: int = DEVICE, role: str = ""
    ) -> None:
        if self.stream is None:
            self.stream = self.stub.StreamChannel()
        update = p4r.MasterArbitrationUpdate(device_id=device_id)
        if election_id is not None:
            self.election_id = election_id
            update.election_id.CopyFrom(U128.encode(election_id))
        if role:
            update.role.name = role
        await self.stream.write(p4r.StreamMessageRequest(arbitration=update))

    async def arbitrate(self, election_id: int | None) -> p4r.MasterArbitrationUpdate:
        await self.send_arbitration(election_id)
        return await self.next_arbitration()

    async def next_message(self) -> p4r.StreamMessageResponse:
        message = await asyncio.wait_for(self.stream.read(), TIMEOUT)
        assert message is not grpc.aio.EOF
        return message

    async def next_arbitration(self) -> p4r.MasterArbitrationUpdate:
        message = await self.next_message()
        assert message.WhichOneof("update") == "arbitration", message
        return message.arbitration

    async def write(self, *updates: p4r.Update, atomicity: int = 0) -> None:
        await self.stub.Write(
            p4r.WriteRequest(
                device_id=DEVICE,
                election_id=U128.encode(self.election_id),
                updates=updates,
                atomicity=atomicity,  # type: ignore[arg-type]
            ),
            timeout=TIMEOUT,
        )

    async def read(self, *entities: p4r.Entity, device_id: int = DEVICE) -> list[p4r.Entity]:
        found: list[p4r.Entity] = []
        request = p4r.ReadRequest(device_id=device_id, entities=entities)
        async for response in self.stub.Read(request, timeout=TIMEOUT):
            found.extend(response.entities)
        return found

    async def read_entries(self, te: p4r.TableEntry) -> list[p4r.TableEntry]:
        return [e.table_entry for e in await self.read(p4r.Entity(table_entry=te))]

    async def set_pipeline(
        self, pipeline: p4r.ForwardingPipelineConfig, action: int = 3
    ) -> None:  # 3: VERIFY_AND_COMMIT
        await self.stub.SetForwardingPipelineConfig(
            p4r.SetForwardingPipelineConfigRequest(
                device_id=DEVICE,
                election_id=U128.encode(self.election_id),
                action=action,  # type: ignore[arg-type]
                config=pipeline,
            ),
            timeout=TIMEOUT,
        )

    async def close(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
        await self.channel.close()


@contextlib.asynccontextmanager
async def primary(address: str, pipeline: bool = True) -> AsyncIterator[Controller]:
    controller = Controller(address)
    try:
        assert (await controller.arbitrate(10)).status.code == rpc_code.OK
        if pipeline:
            await controller.set_pipeline(config(build_p4info()))
        yield controller
    finally:
        await controller.close()


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def update_errors(err: grpc.aio.AioRpcError) -> list[int]:
    """Decode the per-update canonical codes from grpc-status-details-bin (spec §12.3)."""
    assert err.code() == grpc.StatusCode.UNKNOWN, err
    [details] = [v for k, v in err.trailing_metadata() if k == "grpc-status-details-bin"]
    status = rpc_status.Status.FromString(details)
    assert status.code == rpc_code.UNKNOWN and status.message == err.details()
    codes = []
    for packed in status.details:
        error = p4r.Error()
        assert packed.Unpack(error)
        assert error.message or error.canonical_code == rpc_code.OK
        codes.append(error.canonical_code)
    return codes


# ------------------------------------------------------------------- arbitration


@async_test
async def test_capabilities_report_p4runtime_1_4() -> None:
    async with serving() as (_, address):
        controller = Controller(address)
        reply = await controller.stub.Capabilities(p4r.CapabilitiesRequest())
        assert reply.p4runtime_api_version == "1.4.0"
        await controller.close()


@async_test
async def test_highest_election_id_is_primary_and_lower_ones_are_backups() -> None:
    async with serving() as (target, address):
        first, second = Controller(address), Controller(address)
        granted = await first.arbitrate(10)
        assert granted.status.code == rpc_code.OK
        assert U128.decode(granted.election_id) == 10 and granted.device_id == DEVICE
        backup = await second.arbitrate(5)
        assert backup.status.code == rpc_code.ALREADY_EXISTS
        assert U128.decode(backup.election_id) == 10
        assert target.arbitration.primary_election_id == 10
        await first.close()
        await second.close()


@async_test
async def test_backup_writes_and_pipeline_pushes_are_permission_denied() -> None:
    async with serving() as (target, address), primary(address) as main:
        backup = Controller(address)
        await backup.arbitrate(5)
        err = await rpc_error(backup.write(insert(fwd_entry(1, 2))))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = await rpc_error(backup.set_pipeline(config(build_p4info())))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        await main.write(insert(fwd_entry(1, 2)))
        assert target.write_count == 1
        await backup.close()


@async_test
async def test_a_higher_election_id_takes_over_and_the_old_primary_is_told() -> None:
    async with serving() as (_, address), primary(address) as old:
        new = Controller(address)
        assert (await new.arbitrate(20)).status.code == rpc_code.OK
        demoted = await old.next_arbitration()
        assert demoted.status.code == rpc_code.ALREADY_EXISTS
        assert U128.decode(demoted.election_id) == 20
        err = await rpc_error(old.write(insert(fwd_entry(1, 2))))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        await new.write(insert(fwd_entry(1, 2)))
        await new.close()


@async_test
async def test_when_the_primary_leaves_there_is_none_until_a_backup_claims_its_id() -> None:
    async with serving() as (target, address):
        first, second = Controller(address), Controller(address)
        await first.arbitrate(10)
        await second.arbitrate(5)
        await first.close()
        orphaned = await second.next_arbitration()
        assert orphaned.status.code == rpc_code.NOT_FOUND
        assert U128.decode(orphaned.election_id) == 10
        assert target.arbitration.primary_election_id is None
        # What finsy does on NOT_FOUND: claim the highest id the device has seen.
        assert (await second.arbitrate(10)).status.code == rpc_code.OK
        await second.close()


@async_test
async def test_a_primary_that_lowers_its_id_steps_down() -> None:
    async with serving() as (target, address), primary(address) as main:
        backup = Controller(address)
        await backup.arbitrate(5)
        assert (await main.arbitrate(3)).status.code == rpc_code.NOT_FOUND
        assert (await backup.next_arbitration()).status.code == rpc_code.NOT_FOUND
        assert target.arbitration.primary_election_id is None
        await backup.close()


@async_test
async def test_an_unset_election_id_is_never_primary() -> None:
    async with serving() as (target, address):
        observer = Controller(address)
        reply = await observer.arbitrate(None)
        assert reply.status.code == rpc_code.NOT_FOUND
        assert not reply.HasField("election_id")
        assert target.arbitration.primary_election_id is None
        await observer.close()


@pytest.mark.parametrize(
    ("election_id", "device_id", "role", "code"),
    [
        (10, DEVICE, "", grpc.StatusCode.INVALID_ARGUMENT),  # id in use by the primary
        (11, 99, "", grpc.StatusCode.NOT_FOUND),
        (11, DEVICE, "sdn", grpc.StatusCode.UNIMPLEMENTED),
    ],
)
@async_test
async def test_bad_arbitration_ends_the_stream_with_the_spec_code(
    election_id: int, device_id: int, role: str, code: grpc.StatusCode
) -> None:
    async with serving() as (_, address), primary(address, pipeline=False):
        other = Controller(address)
        await other.send_arbitration(election_id, device_id=device_id, role=role)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(other.stream.read(), TIMEOUT)
        assert info.value.code() == code
        await other.close()


@async_test
async def test_packet_out_is_answered_with_a_stream_error() -> None:
    async with serving() as (_, address), primary(address, pipeline=False) as main:
        await main.stream.write(p4r.StreamMessageRequest(packet=p4r.PacketOut(payload=b"x")))
        reply = await main.next_message()
        assert reply.error.canonical_code == rpc_code.UNIMPLEMENTED
        assert reply.error.packet_out.packet_out.payload == b"x"


# ------------------------------------------------------------------------ writes


@async_test
async def test_write_and_read_before_a_pipeline_are_failed_precondition() -> None:
    async with serving() as (_, address), primary(address, pipeline=False) as main:
        err = await rpc_error(main.write(insert(fwd_entry(1, 2))))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        err = await rpc_error(main.read_entries(p4r.TableEntry()))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


@async_test
async def test_requests_for_another_device_are_not_found() -> None:
    async with serving() as (_, address), primary(address) as main:
        request = p4r.WriteRequest(
            device_id=2, election_id=U128.encode(10), updates=[insert(fwd_entry(1, 2))]
        )
        err = await rpc_error(main.stub.Write(request))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        err = await rpc_error(main.read(p4r.Entity(table_entry=p4r.TableEntry()), device_id=2))
        assert err.code() == grpc.StatusCode.NOT_FOUND


@async_test
async def test_insert_modify_delete_round_trip() -> None:
    async with serving() as (target, address), primary(address) as main:
        # A non-canonical param (leading zero byte) reads back canonical.
        written = fwd_entry(1)
        written.action.action.CopyFrom(set_port(b"\x00\x02"))
        await main.write(insert(written))
        assert await main.read_entries(p4r.TableEntry(table_id=FWD)) == [fwd_entry(1, 2)]
        await main.write(modify(fwd_entry(1, 3)))
        assert target.tables is not None
        assert target.tables.lookup("fwd", {"port": 1}).params == {"port": 3}
        await main.write(delete(fwd_entry(1)))
        assert await main.read_entries(p4r.TableEntry(table_id=FWD)) == []
        assert target.write_count == 3


@async_test
async def test_failed_updates_are_reported_one_by_one_in_order() -> None:
    async with serving() as (target, address), primary(address) as main:
        await main.write(insert(fwd_entry(1, 2)))
        err = await rpc_error(
            main.write(
                insert(fwd_entry(2, 2)),
                insert(fwd_entry(1, 5)),
                modify(fwd_entry(9, 2)),
                delete(fwd_entry(8)),
                insert(fwd_entry(600, 2)),
                p4r.Update(
                    type=p4r.Update.INSERT, entity=p4r.Entity(counter_entry=p4r.CounterEntry())
                ),
            )
        )
        assert update_errors(err) == [
            rpc_code.OK,
            rpc_code.ALREADY_EXISTS,
            rpc_code.NOT_FOUND,
            rpc_code.NOT_FOUND,
            rpc_code.INVALID_ARGUMENT,
            rpc_code.UNIMPLEMENTED,
        ]
        ports = [
            e.match[0].exact.value for e in await main.read_entries(p4r.TableEntry(table_id=FWD))
        ]
        assert ports == [b"\x01", b"\x02"]
        assert target.write_count == 2


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (fwd_entry(1, 512), rpc_code.INVALID_ARGUMENT),  # param wider than 9 bits
        (fwd_entry(1, 2, priority=3), rpc_code.INVALID_ARGUMENT),  # exact table: priority 0
        (acl_entry(0x0A000000, 0xFF000000, PERMIT, 0), rpc_code.INVALID_ARGUMENT),
        (acl_entry(0x0A000001, 0xFF000000, PERMIT, 1), rpc_code.INVALID_ARGUMENT),
        (acl_entry(0x0A000000, 0xFF000000, SET_PORT, 1), rpc_code.INVALID_ARGUMENT),
        (route(0x0A000000, 8, 1 << 16), rpc_code.INVALID_ARGUMENT),
        (
            p4r.TableEntry(
                table_id=FWD,
                match=fwd_entry(1).match,
                action=p4r.TableAction(action=p4r.Action(action_id=NO_ACTION)),
            ),
            rpc_code.PERMISSION_DENIED,  # @defaultonly action in an entry
        ),
    ],
)
@async_test
async def test_invalid_entries_are_refused_with_the_spec_code(
    bad: p4r.TableEntry, code: int
) -> None:
    async with serving() as (target, address), primary(address) as main:
        err = await rpc_error(main.write(insert(bad)))
        assert update_errors(err) == [code]
        assert await main.read_entries(p4r.TableEntry()) == []
        assert target.write_count == 0


@async_test
async def test_inserting_beyond_the_table_size_is_resource_exhausted() -> None:
    async with serving() as (_, address), primary(address) as main:
        await main.write(*(insert(fwd_entry(port, 1)) for port in range(3)))
        err = await rpc_error(main.write(insert(fwd_entry(3, 1))))
        assert update_errors(err) == [rpc_code.RESOURCE_EXHAUSTED]


@async_test
async def test_rollback_on_error_applies_nothing_when_one_update_fails() -> None:
    async with serving() as (target, address), primary(address) as main:
        await main.write(insert(fwd_entry(1, 2)))
        batch = (insert(fwd_entry(2, 2)), modify(fwd_entry(1, 7)), insert(fwd_entry(1, 1)))
        err = await rpc_error(main.write(*batch, atomicity=p4r.WriteRequest.ROLLBACK_ON_ERROR))
        assert update_errors(err) == [rpc_code.ABORTED, rpc_code.ABORTED, rpc_code.ALREADY_EXISTS]
        assert await main.read_entries(p4r.TableEntry(table_id=FWD)) == [fwd_entry(1, 2)]
        await main.write(*batch[:2], atomicity=p4r.WriteRequest.DATAPLANE_ATOMIC)
        assert len(await main.read_entries(p4r.TableEntry(table_id=FWD))) == 2
        assert target.write_count == 3


@async_test
async def test_default_action_is_modified_reset_and_const_defaults_refused() -> None:
    async with serving() as (target, address), primary(address) as main:
        default = p4r.TableEntry(table_id=FWD, is_default_action=True)
        [initial] = await main.read_entries(default)
        assert initial.action.action.action_id == NO_ACTION
        changed = p4r.TableEntry(table_id=FWD, is_default_action=True)
        changed.action.action.CopyFrom(set_port(4))
        await main.write(modify(changed))
        assert await main.read_entries(default) == [changed]
        assert target.tables is not None
        assert target.tables.lookup("fwd", {"port": 9}).params == {"port": 4}
        await main.write(modify(default))
        assert await main.read_entries(default) == [initial]
        const = p4r.TableEntry(table_id=ACL, is_default_action=True)
        const.action.action.action_id = PERMIT
        err = await rpc_error(main.write(modify(const), insert(changed)))
        assert update_errors(err) == [rpc_code.PERMISSION_DENIED, rpc_code.INVALID_ARGUMENT]


# ------------------------------------------------------------------------- reads


@async_test
async def test_read_wildcards_select_all_tables_one_table_one_key_or_the_default() -> None:
    async with serving() as (_, address), primary(address) as main:
        await main.write(
            insert(fwd_entry(1, 2)),
            insert(fwd_entry(2, 3)),
            insert(acl_entry(0x0A000000, 0xFF000000, PERMIT, 10)),
            insert(route(0x0A000000, 8, 1)),
        )
        assert len(await main.read_entries(p4r.TableEntry())) == 4
        assert len(await main.read_entries(p4r.TableEntry(table_id=FWD))) == 2
        assert await main.read_entries(fwd_entry(2)) == [fwd_entry(2, 3)]
        [default] = await main.read_entries(p4r.TableEntry(table_id=ACL, is_default_action=True))
        assert default.action.action.action_id == DENY and default.is_const


@async_test
async def test_read_batch_reports_each_failed_request_after_the_good_ones() -> None:
    async with serving() as (_, address), primary(address) as main:
        await main.write(insert(fwd_entry(1, 2)))
        stream = main.stub.Read(
            p4r.ReadRequest(
                device_id=DEVICE,
                entities=[
                    p4r.Entity(table_entry=p4r.TableEntry(table_id=FWD)),
                    p4r.Entity(counter_entry=p4r.CounterEntry()),
                    p4r.Entity(table_entry=p4r.TableEntry(table_id=0x02000099)),
                ],
            )
        )
        found: list[p4r.Entity] = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for response in stream:
                found.extend(response.entities)
        assert [e.table_entry for e in found] == [fwd_entry(1, 2)]
        assert update_errors(info.value) == [
            rpc_code.OK,
            rpc_code.UNIMPLEMENTED,
            rpc_code.INVALID_ARGUMENT,
        ]


@async_test
async def test_large_reads_arrive_in_several_responses() -> None:
    async with serving() as (_, address), primary(address) as main:
        await main.write(*(insert(route(n << 8, 24, 1)) for n in range(2500)))
        request = p4r.ReadRequest(
            device_id=DEVICE, entities=[p4r.Entity(table_entry=p4r.TableEntry(table_id=ROUTES))]
        )
        sizes = [len(r.entities) async for r in main.stub.Read(request)]
        assert sum(sizes) == 2500 and len(sizes) > 1


# ---------------------------------------------------------------------- pipeline


@async_test
async def test_pipeline_verify_commit_and_reconcile() -> None:
    committed: list[int] = []
    target = EmbeddedTarget(DEVICE)
    target.on_pipeline.append(lambda: committed.append(len(target.p4info.tables)))  # type: ignore[union-attr]
    async with serving(target) as (_, address), primary(address) as main:
        assert committed == [3]
        await main.write(insert(fwd_entry(1, 2)), insert(route(0x0A000000, 8, 1)))
        changed = build_p4info()
        changed.tables[2].match_fields[0].bitwidth = 24  # routes changes shape
        await main.set_pipeline(
            config(changed, cookie=8), p4r.SetForwardingPipelineConfigRequest.VERIFY
        )
        assert committed == [3] and len(await main.read_entries(p4r.TableEntry())) == 2
        await main.set_pipeline(
            config(changed, cookie=8), p4r.SetForwardingPipelineConfigRequest.RECONCILE_AND_COMMIT
        )
        assert await main.read_entries(p4r.TableEntry()) == [fwd_entry(1, 2)]
        await main.set_pipeline(config(build_p4info()))
        assert await main.read_entries(p4r.TableEntry()) == []
        assert committed == [3, 3, 3]
        save = p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_SAVE
        err = await rpc_error(main.set_pipeline(config(build_p4info()), save))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED


@async_test
async def test_an_invalid_p4info_is_refused_and_the_old_pipeline_stays() -> None:
    async with serving() as (_, address), primary(address) as main:
        await main.write(insert(fwd_entry(1, 2)))
        broken = build_p4info()
        broken.tables[1].preamble.id = FWD
        err = await rpc_error(main.set_pipeline(config(broken)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "used by both" in (err.details() or "")
        assert await main.read_entries(p4r.TableEntry()) == [fwd_entry(1, 2)]
        empty = p4r.SetForwardingPipelineConfigRequest(
            device_id=DEVICE,
            election_id=U128.encode(10),
            action=p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT,
        )
        err = await rpc_error(main.stub.SetForwardingPipelineConfig(empty))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


@async_test
async def test_get_pipeline_config_honours_the_response_type() -> None:
    async with serving() as (_, address), primary(address, pipeline=False) as main:
        get = p4r.GetForwardingPipelineConfigRequest
        reply = await main.stub.GetForwardingPipelineConfig(get(device_id=DEVICE))
        assert not reply.HasField("config")
        await main.set_pipeline(config(build_p4info(), cookie=42, blob=b"dev"))
        replies = {
            kind: (
                await main.stub.GetForwardingPipelineConfig(
                    get(device_id=DEVICE, response_type=kind)
                )
            ).config
            for kind in (
                get.ALL,
                get.COOKIE_ONLY,
                get.P4INFO_AND_COOKIE,
                get.DEVICE_CONFIG_AND_COOKIE,
            )
        }
        assert replies[get.ALL] == config(build_p4info(), cookie=42, blob=b"dev")
        assert replies[get.COOKIE_ONLY] == p4r.ForwardingPipelineConfig(
            cookie=p4r.ForwardingPipelineConfig.Cookie(cookie=42)
        )
        assert replies[get.P4INFO_AND_COOKIE] == config(build_p4info(), cookie=42, blob=b"")
        assert replies[get.DEVICE_CONFIG_AND_COOKIE].p4_device_config == b"dev"
        assert not replies[get.DEVICE_CONFIG_AND_COOKIE].HasField("p4info")


# ------------------------------------------------------------------------- finsy


@async_test
async def test_a_finsy_switch_pushes_the_pipeline_then_writes_and_reads(tmp_path: Path) -> None:
    import finsy

    p4info_path = tmp_path / "p4info.txtpb"
    p4info_path.write_text(text_format.MessageToString(build_p4info()))
    blob_path = tmp_path / "device_config.bin"
    blob_path.write_bytes(b"blob")
    async with serving() as (target, address):
        options = finsy.SwitchOptions(p4info=p4info_path, p4blob=blob_path, device_id=DEVICE)
        async with finsy.Switch("sw1", address, options) as switch:
            assert switch.is_primary
            await switch.insert(
                [
                    finsy.P4TableEntry(
                        "fwd",
                        match=finsy.P4TableMatch(port=1),
                        action=finsy.P4TableAction("set_port", port=2),
                    ),
                    finsy.P4TableEntry(
                        "routes",
                        match=finsy.P4TableMatch(dst="10.0.0.0/8"),
                        action=finsy.P4TableAction("set_nhop", nhop=7),
                    ),
                ]
            )
            # finsy declares read()'s overloads as coroutines; at run time it is an iterator.
            reading: Any = switch.read(finsy.P4TableEntry())
            entries = [e async for e in reading]
        assert sorted((e.table_id, dict(e.match or {})) for e in entries) == [
            ("fwd", {"port": 1}),
            ("routes", {"dst": (0x0A000000, 8)}),
        ]
        assert target.tables is not None
        assert target.tables.lookup("routes", {"dst": 0x0A010203}).params == {"nhop": 7}
        assert target.config is not None and target.config.p4_device_config == b"blob"


# --------------------------------------------------------------- action profiles

ECMP, SELECTOR = 0x02000004, 0x11000001


def build_selector_p4info() -> p4i.P4Info:
    """build_p4info() plus ecmp: LPM on dst, implemented by an action selector with room for
    8 (sum of weights) and groups of up to 4."""
    p4info = build_p4info()
    p4info.tables.add(
        preamble=p4i.Preamble(id=ECMP, name="ecmp", alias="ecmp"),
        match_fields=[p4i.MatchField(id=1, name="dst", bitwidth=32, match_type=LPM)],
        action_refs=[
            p4i.ActionRef(id=SET_NHOP),
            p4i.ActionRef(id=NO_ACTION, scope=p4i.ActionRef.DEFAULT_ONLY),
        ],
        implementation_id=SELECTOR,
        size=16,
    )
    p4info.action_profiles.add(
        preamble=p4i.Preamble(id=SELECTOR, name="selector", alias="selector"),
        table_ids=[ECMP],
        with_selector=True,
        size=8,
        max_group_size=4,
    )
    return p4info


def nhop_member(member_id: int, nhop: int | bytes | None = None) -> p4r.Entity:
    m = p4r.ActionProfileMember(action_profile_id=SELECTOR, member_id=member_id)
    if nhop is not None:
        value = nhop if isinstance(nhop, bytes) else enc(nhop)
        m.action.CopyFrom(
            p4r.Action(action_id=SET_NHOP, params=[p4r.Action.Param(param_id=1, value=value)])
        )
    return p4r.Entity(action_profile_member=m)


def nhop_group(group_id: int, *members: tuple[int, int], max_size: int = 4) -> p4r.Entity:
    return p4r.Entity(
        action_profile_group=p4r.ActionProfileGroup(
            action_profile_id=SELECTOR,
            group_id=group_id,
            members=[p4r.ActionProfileGroup.Member(member_id=m, weight=w) for m, w in members],
            max_size=max_size,
        )
    )


def ecmp_entry(dst: int, plen: int, *, member: int = 0, group: int = 0) -> p4r.TableEntry:
    te = p4r.TableEntry(
        table_id=ECMP,
        match=[p4r.FieldMatch(field_id=1, lpm=p4r.FieldMatch.LPM(value=enc(dst), prefix_len=plen))],
    )
    if member:
        te.action.action_profile_member_id = member
    if group:
        te.action.action_profile_group_id = group
    return te


def written(kind: int, entity: p4r.Entity) -> p4r.Update:
    return p4r.Update(type=kind, entity=entity)  # type: ignore[arg-type]


ALL_MEMBERS = p4r.Entity(action_profile_member=p4r.ActionProfileMember())
ALL_GROUPS = p4r.Entity(action_profile_group=p4r.ActionProfileGroup())


@async_test
async def test_members_groups_and_indirect_entries_are_written_read_and_looked_up() -> None:
    async with serving() as (target, address), primary(address) as main:
        await main.set_pipeline(config(build_selector_p4info()))
        await main.write(
            written(p4r.Update.INSERT, nhop_member(1, b"\x00\x0a")),  # reads back canonical
            written(p4r.Update.INSERT, nhop_member(2, 20)),
        )
        await main.write(written(p4r.Update.INSERT, nhop_group(5, (2, 3), (1, 1))))
        await main.write(
            insert(ecmp_entry(0x0A000000, 8, group=5)),
            insert(ecmp_entry(0x0B000000, 8, member=2)),
        )
        assert await main.read(ALL_MEMBERS) == [nhop_member(1, 10), nhop_member(2, 20)]
        one = p4r.ActionProfileMember(action_profile_id=SELECTOR, member_id=2)
        assert await main.read(p4r.Entity(action_profile_member=one)) == [nhop_member(2, 20)]
        assert await main.read(ALL_GROUPS) == [nhop_group(5, (1, 1), (2, 3))]
        assert await main.read_entries(p4r.TableEntry(table_id=ECMP)) == [
            ecmp_entry(0x0A000000, 8, group=5),
            ecmp_entry(0x0B000000, 8, member=2),
        ]
        [default] = await main.read_entries(p4r.TableEntry(table_id=ECMP, is_default_action=True))
        assert default.is_const and default.action.action.action_id == NO_ACTION
        assert target.tables is not None
        picks = [target.tables.lookup("ecmp", {"dst": 0x0A000001}, h).params for h in range(4)]
        assert picks == [{"nhop": 10}, {"nhop": 20}, {"nhop": 20}, {"nhop": 20}]
        assert target.tables.lookup("ecmp", {"dst": 0x0B000001}).params == {"nhop": 20}
        await main.write(written(p4r.Update.MODIFY, nhop_member(2, 21)))
        assert target.tables.lookup("ecmp", {"dst": 0x0B000001}).params == {"nhop": 21}
        assert target.write_count == 6


@async_test
async def test_action_profile_errors_are_reported_one_by_one_in_order() -> None:
    async with serving() as (target, address), primary(address) as main:
        await main.set_pipeline(config(build_selector_p4info()))
        await main.write(written(p4r.Update.INSERT, nhop_member(1, 10)))
        direct = ecmp_entry(0x0A000000, 8)
        direct.action.action.CopyFrom(
            p4r.Action(action_id=SET_NHOP, params=[p4r.Action.Param(param_id=1, value=b"\x01")])
        )
        fwd_to_member = fwd_entry(1)
        fwd_to_member.action.action_profile_member_id = 1  # fwd is a direct table
        err = await rpc_error(
            main.write(
                written(p4r.Update.INSERT, nhop_member(2, 20)),
                written(p4r.Update.INSERT, nhop_member(1, 11)),
                written(p4r.Update.INSERT, nhop_member(3)),  # no action
                written(p4r.Update.INSERT, nhop_group(5, (1, 1), (9, 1))),
                written(p4r.Update.INSERT, nhop_group(5, (1, 0))),
                written(p4r.Update.INSERT, nhop_group(6, (1, 5))),  # beyond max_size 4
                written(p4r.Update.INSERT, nhop_group(6, (1, 1), max_size=5)),
                insert(ecmp_entry(0x0A000000, 8, group=9)),
                insert(direct),
                insert(fwd_to_member),
                written(p4r.Update.DELETE, nhop_member(7)),
            )
        )
        assert update_errors(err) == [
            rpc_code.OK,
            rpc_code.ALREADY_EXISTS,
            rpc_code.INVALID_ARGUMENT,
            rpc_code.NOT_FOUND,
            rpc_code.INVALID_ARGUMENT,
            rpc_code.RESOURCE_EXHAUSTED,
            rpc_code.INVALID_ARGUMENT,
            rpc_code.NOT_FOUND,
            rpc_code.INVALID_ARGUMENT,
            rpc_code.INVALID_ARGUMENT,
            rpc_code.NOT_FOUND,
        ]
        assert await main.read(ALL_MEMBERS) == [nhop_member(1, 10), nhop_member(2, 20)]
        assert await main.read(ALL_GROUPS) == []
        assert target.write_count == 2


@async_test
async def test_deleting_a_member_or_group_in_use_is_failed_precondition() -> None:
    async with serving() as (_, address), primary(address) as main:
        await main.set_pipeline(config(build_selector_p4info()))
        await main.write(
            written(p4r.Update.INSERT, nhop_member(1, 10)),
            written(p4r.Update.INSERT, nhop_member(2, 20)),
        )
        await main.write(written(p4r.Update.INSERT, nhop_group(5, (1, 2))))
        await main.write(
            insert(ecmp_entry(0x0A000000, 8, group=5)),
            insert(ecmp_entry(0x0B000000, 8, member=2)),
        )
        deletes = (
            written(p4r.Update.DELETE, nhop_member(1)),  # in group 5
            written(p4r.Update.DELETE, nhop_member(2)),  # used by an entry
            written(p4r.Update.DELETE, nhop_group(5)),  # used by an entry
        )
        err = await rpc_error(main.write(*deletes))
        assert update_errors(err) == [rpc_code.FAILED_PRECONDITION] * 3
        assert len(await main.read(ALL_MEMBERS)) == 2 and len(await main.read(ALL_GROUPS)) == 1
        await main.write(delete(ecmp_entry(0x0A000000, 8)), delete(ecmp_entry(0x0B000000, 8)))
        await main.write(deletes[2], deletes[0], deletes[1])  # groups before their members
        assert await main.read(ALL_MEMBERS) == [] and await main.read(ALL_GROUPS) == []


@async_test
async def test_a_rolled_back_batch_leaves_no_member_group_or_reference_behind() -> None:
    async with serving() as (_, address), primary(address) as main:
        await main.set_pipeline(config(build_selector_p4info()))
        await main.write(written(p4r.Update.INSERT, nhop_member(1, 10)))
        batch = (
            written(p4r.Update.INSERT, nhop_member(2, 20)),
            written(p4r.Update.INSERT, nhop_group(5, (1, 1), (2, 1))),
            insert(ecmp_entry(0x0A000000, 8, member=1)),
            written(p4r.Update.DELETE, nhop_member(9)),
        )
        err = await rpc_error(main.write(*batch, atomicity=p4r.WriteRequest.ROLLBACK_ON_ERROR))
        assert update_errors(err) == [rpc_code.ABORTED] * 3 + [rpc_code.NOT_FOUND]
        assert await main.read(ALL_MEMBERS) == [nhop_member(1, 10)]
        assert await main.read(ALL_GROUPS) == []
        assert await main.read_entries(p4r.TableEntry(table_id=ECMP)) == []
        # Member 1 lost the references the batch gave it, so it can go.
        await main.write(written(p4r.Update.DELETE, nhop_member(1)))


@async_test
async def test_reconcile_keeps_members_and_groups_of_an_unchanged_selector() -> None:
    async with serving() as (target, address), primary(address) as main:
        await main.set_pipeline(config(build_selector_p4info()))
        await main.write(written(p4r.Update.INSERT, nhop_member(1, 10)))
        await main.write(written(p4r.Update.INSERT, nhop_group(5, (1, 1))))
        await main.write(insert(ecmp_entry(0x0A000000, 8, group=5)))
        reconcile = p4r.SetForwardingPipelineConfigRequest.RECONCILE_AND_COMMIT
        await main.set_pipeline(config(build_selector_p4info(), cookie=8), reconcile)
        assert await main.read(ALL_MEMBERS) == [nhop_member(1, 10)]
        assert await main.read(ALL_GROUPS) == [nhop_group(5, (1, 1))]
        assert target.tables is not None
        assert target.tables.lookup("ecmp", {"dst": 0x0A000001}, 3).params == {"nhop": 10}
        resized = build_selector_p4info()
        resized.action_profiles[0].size = 16
        await main.set_pipeline(config(resized, cookie=9), reconcile)
        assert await main.read(ALL_MEMBERS) == [] and await main.read(ALL_GROUPS) == []
        assert await main.read_entries(p4r.TableEntry(table_id=ECMP)) == []
