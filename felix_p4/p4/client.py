"""P4Runtime client over grpc.aio: arbitration, pipeline config, batched writes, reads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import attrs
import grpc
from finsy.proto import p4i, p4r, p4r_grpc, rpc_code, rpc_status

log = logging.getLogger(__name__)


MAX_BATCH = 10_000  # updates per WriteRequest the channel is sized for


class P4RuntimeClientError(Exception):
    """The device refused or failed a whole RPC."""


class TargetSilent(P4RuntimeClientError):
    """The target did not answer within the deadline (stopped, hung, or overloaded)."""


class NotPrimary(P4RuntimeClientError):
    """Another controller holds a higher election id; writes would be refused."""


@attrs.frozen(slots=True)
class TlsSettings:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str = ""


@attrs.frozen(slots=True)
class UpdateResult:
    code: int  # google.rpc.Code
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == rpc_code.OK


OK = UpdateResult(rpc_code.OK)


def _channel(address: str, tls: TlsSettings | None) -> grpc.aio.Channel:
    # Per-update errors come back in trailing metadata; the spec suggests room for about
    # 100 bytes per update on top of gRPC's 8 KiB default.
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", 256 * 1024 * 1024),
        ("grpc.max_send_message_length", 256 * 1024 * 1024),
        ("grpc.max_metadata_size", 8192 + 100 * MAX_BATCH),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    creds = grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes() if tls.ca else None,
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(address, creds, options=options)


def per_update_results(error: grpc.aio.AioRpcError, count: int) -> list[UpdateResult]:
    """Decode the per-update p4.v1.Error list the spec puts in grpc-status-details-bin."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = rpc_status.Status.FromString(value)
            results = []
            for detail in status.details:
                err = p4r.Error()
                if detail.Unpack(err):
                    results.append(UpdateResult(err.canonical_code, err.message))
            if len(results) == count:
                return results
    # Without details every update shares the RPC's fate.
    code = error.code().value[0] if error.code() else rpc_code.UNKNOWN
    return [UpdateResult(code, error.details() or "")] * count


class P4RuntimeClient:
    def __init__(
        self,
        address: str,
        device_id: int,
        election_id: int,
        tls: TlsSettings | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.address = address
        # Every RPC gets this deadline: a target that stops answering is a lost session.
        self.timeout = timeout
        self.device_id = device_id
        self.election_id = election_id
        self.tls = tls
        self._channel: grpc.aio.Channel | None = None
        self._stub: p4r_grpc.P4RuntimeStub | None = None
        self._stream: grpc.aio.StreamStreamCall | None = None
        self._requests: asyncio.Queue[p4r.StreamMessageRequest | None] = asyncio.Queue()
        self._arbitration: asyncio.Queue[p4r.MasterArbitrationUpdate | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.is_primary = False
        # Called when the stream ends or mastership is lost: the owner must reconnect.
        self.on_lost: Callable[[], None] | None = None

    @property
    def stub(self) -> p4r_grpc.P4RuntimeStub:
        if self._stub is None:
            raise P4RuntimeClientError("not connected")
        return self._stub

    def _election(self) -> p4r.Uint128:
        return p4r.Uint128(high=self.election_id >> 64, low=self.election_id & (2**64 - 1))

    def open(self) -> None:
        """Open the channel only: enough for Read and GetForwardingPipelineConfig."""
        self._channel = _channel(self.address, self.tls)
        self._stub = p4r_grpc.P4RuntimeStub(self._channel)
        self._requests = asyncio.Queue()
        self._arbitration = asyncio.Queue()

    async def connect(self, timeout: float | None = None) -> None:
        """Open the channel and stream, arbitrate, and return once we are primary."""
        self.open()
        assert self._stub is not None
        self._stream = self._stub.StreamChannel(self._request_iter())
        self._reader = asyncio.create_task(self._read_stream())
        arbitration = p4r.MasterArbitrationUpdate(
            device_id=self.device_id, election_id=self._election()
        )
        await self._requests.put(p4r.StreamMessageRequest(arbitration=arbitration))
        timeout = self.timeout if timeout is None else timeout
        try:
            reply = await asyncio.wait_for(self._arbitration.get(), timeout)
        except TimeoutError:
            raise TargetSilent(
                f"arbitration: no answer from {self.address} within {timeout:g}s"
            ) from None
        if reply is None:
            raise P4RuntimeClientError(f"stream to {self.address} ended before arbitration")
        highest = (reply.election_id.high << 64) | reply.election_id.low
        if reply.status.code == rpc_code.NOT_FOUND and highest > self.election_id:
            # No controller is primary (the one with the highest election id left): the
            # spec lets a backup take over by claiming that id.
            log.info("no primary on device %d; claiming election id %d", self.device_id, highest)
            self.election_id = highest
            arbitration.election_id.CopyFrom(self._election())
            await self._requests.put(p4r.StreamMessageRequest(arbitration=arbitration))
            reply = await asyncio.wait_for(self._arbitration.get(), timeout)
            if reply is None:
                raise P4RuntimeClientError(f"stream to {self.address} ended during arbitration")
        self.is_primary = reply.status.code == rpc_code.OK
        if not self.is_primary:
            raise NotPrimary(
                f"device {self.device_id} at {self.address}: election id {self.election_id} "
                f"is not primary (code {reply.status.code}: {reply.status.message})"
            )
        log.info("primary for device %d at %s", self.device_id, self.address)

    async def _request_iter(self) -> AsyncIterator[p4r.StreamMessageRequest]:
        while True:
            request = await self._requests.get()
            if request is None:
                return
            yield request

    async def _read_stream(self) -> None:
        assert self._stream is not None
        try:
            async for response in self._stream:
                if response.HasField("arbitration"):
                    was = self.is_primary
                    self.is_primary = response.arbitration.status.code == rpc_code.OK
                    if was and not self.is_primary:
                        log.error("lost primary mastership of device %d", self.device_id)
                        self._lost()
                    await self._arbitration.put(response.arbitration)
                elif response.HasField("error"):
                    log.error("stream error from device: %s", response.error)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                log.error("P4Runtime stream ended: %s", exc.details())
        except asyncio.CancelledError:
            return
        await self._arbitration.put(None)
        self._lost()

    def _lost(self) -> None:
        was_primary, self.is_primary = self.is_primary, False
        if was_primary and self.on_lost is not None:
            self.on_lost()

    async def close(self) -> None:
        await self._requests.put(None)
        if self._reader is not None:
            self._reader.cancel()
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._stub = None

    async def get_pipeline(self) -> tuple[p4i.P4Info | None, int]:
        """The device's current P4Info and cookie, or (None, 0) when it has none."""
        request = p4r.GetForwardingPipelineConfigRequest(
            device_id=self.device_id,
            response_type=p4r.GetForwardingPipelineConfigRequest.P4INFO_AND_COOKIE,
        )
        try:
            response = await self.stub.GetForwardingPipelineConfig(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return None, 0
            raise self._failed("GetForwardingPipelineConfig", exc) from exc
        config = response.config
        if not config.HasField("p4info") or not config.p4info.tables:
            return None, 0
        return config.p4info, config.cookie.cookie

    async def set_pipeline(self, p4info: p4i.P4Info, device_config: bytes, cookie: int) -> None:
        request = p4r.SetForwardingPipelineConfigRequest(
            device_id=self.device_id,
            election_id=self._election(),
            action=p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT,
            config=p4r.ForwardingPipelineConfig(
                p4info=p4info,
                p4_device_config=device_config,
                cookie=p4r.ForwardingPipelineConfig.Cookie(cookie=cookie),
            ),
        )
        try:
            await self.stub.SetForwardingPipelineConfig(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._failed("SetForwardingPipelineConfig", exc) from exc

    async def write(self, updates: Sequence[p4r.Update]) -> list[UpdateResult]:
        """One WriteRequest; returns a result per update (all OK on success)."""
        if not updates:
            return []
        request = p4r.WriteRequest(
            device_id=self.device_id, election_id=self._election(), updates=updates
        )
        try:
            await self.stub.Write(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED,
            ):
                raise self._failed("Write", exc) from exc
            return per_update_results(exc, len(updates))
        return [OK] * len(updates)

    async def read_table_entries(self, table_ids: Sequence[int] = ()) -> list[p4r.TableEntry]:
        """Entries of these tables, or of every table (table_id 0 is the all-tables wildcard)."""
        return [
            e.table_entry
            for e in await self.read_entities(with_profiles=False, table_ids=table_ids)
            if e.HasField("table_entry")
        ]

    async def read_entities(
        self, with_profiles: bool = True, table_ids: Sequence[int] = ()
    ) -> list[p4r.Entity]:
        """Table entries (of `table_ids`, or all) and, optionally, action profile entities."""
        wildcards = [
            p4r.Entity(table_entry=p4r.TableEntry(table_id=table_id))
            for table_id in (table_ids or [0])
        ]
        if with_profiles:
            wildcards += [
                p4r.Entity(action_profile_member=p4r.ActionProfileMember()),
                p4r.Entity(action_profile_group=p4r.ActionProfileGroup()),
            ]
        request = p4r.ReadRequest(device_id=self.device_id, entities=wildcards)
        entities: list[p4r.Entity] = []
        try:
            async for response in self.stub.Read(request, timeout=self.timeout):
                entities.extend(response.entities)
        except grpc.aio.AioRpcError as exc:
            raise self._failed("Read", exc) from exc
        return entities

    async def read_default_entries(self, table_ids: Sequence[int]) -> list[p4r.TableEntry]:
        """The default entries of these tables (one Read, one entity per table)."""
        if not table_ids:
            return []
        request = p4r.ReadRequest(
            device_id=self.device_id,
            entities=[
                p4r.Entity(table_entry=p4r.TableEntry(table_id=t, is_default_action=True))
                for t in table_ids
            ],
        )
        found: list[p4r.TableEntry] = []
        try:
            async for response in self.stub.Read(request, timeout=self.timeout):
                found.extend(e.table_entry for e in response.entities if e.HasField("table_entry"))
        except grpc.aio.AioRpcError as exc:
            raise self._failed("Read", exc) from exc
        return found

    def _failed(self, what: str, exc: grpc.aio.AioRpcError) -> P4RuntimeClientError:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return TargetSilent(f"{what}: no answer from {self.address} within {self.timeout:g}s")
        return P4RuntimeClientError(f"{what}: {exc.code().name}: {exc.details()}")
