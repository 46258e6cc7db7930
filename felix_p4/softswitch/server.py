"""P4Runtime server of the embedded target: arbitration, pipeline config, Write, Read."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Protocol

import attrs
import grpc
from finsy.proto import U128, p4i, p4r, p4r_grpc, rpc_code, rpc_status

from felix_p4.softswitch.store import P4RuntimeError, TableStore

log = logging.getLogger(__name__)

API_VERSION = "1.4.0"

# The spec (§"gRPC Server Maximum Receive Message Size") asks servers to accept more than
# gRPC's 4 MiB default: device configs and snapshot-sized Write batches exceed it. Pass
# these to grpc.aio.server(options=...).
GRPC_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
)

# finsy (and the spec's own servers) recognise a missing pipeline by this wording.
NO_PIPELINE = "No forwarding pipeline config set for this device"

_READ_CHUNK = 1000  # entities per ReadResponse, so huge reads stay under message limits
_GRPC_STATUS = {status.value[0]: status for status in grpc.StatusCode}

InitialDefaults = Mapping[str, tuple[str, dict[str, int]]]


def _status(code: int) -> grpc.StatusCode:
    return _GRPC_STATUS.get(code, grpc.StatusCode.UNKNOWN)


class Engine(Protocol):
    """What executes the pipeline behind the table store. The store decides P4Runtime
    semantics; an engine mirrors what the store accepted into its data plane and may refuse
    part of it (felix_p4/softswitch/dpdk.py)."""

    def verify(self, config: p4r.ForwardingPipelineConfig) -> None:
        """Raise P4RuntimeError if this engine cannot run `config`."""

    def reset(self, tables: TableStore) -> None:
        """A pipeline is being committed with `tables`: start over from them. Raise
        P4RuntimeError to refuse it (the current pipeline then stays)."""

    def check(self, update: p4r.Update) -> None:
        """Raise P4RuntimeError for an update the engine cannot run, before the store sees it."""

    def apply(
        self, tables: TableStore, accepted: Sequence[tuple[int, p4r.Update]], atomic: bool
    ) -> dict[int, P4RuntimeError]:
        """Mirror the (index, update)s the store accepted in one Write. Updates the engine
        refuses are undone in the store (atomic: all of them) and returned by index."""


class ModelEngine:
    """The behavioural model looks packets up in the store itself: nothing to mirror."""

    def verify(self, config: p4r.ForwardingPipelineConfig) -> None:
        return None

    def reset(self, tables: TableStore) -> None:
        return None

    def check(self, update: p4r.Update) -> None:
        return None

    def apply(
        self, tables: TableStore, accepted: Sequence[tuple[int, p4r.Update]], atomic: bool
    ) -> dict[int, P4RuntimeError]:
        return {}


class EmbeddedTarget:
    """One device: its pipeline, table store and arbitration state."""

    def __init__(
        self,
        device_id: int = 1,
        *,
        initial_defaults_for: Callable[[p4i.P4Info], InitialDefaults] | None = None,
        table_limits: Mapping[str, int] | None = None,
        engine: Engine | None = None,
    ) -> None:
        if device_id <= 0:
            raise ValueError(f"device_id must be positive, not {device_id}")
        self.device_id = device_id
        self.p4info: p4i.P4Info | None = None
        self.tables: TableStore | None = None
        self.config: p4r.ForwardingPipelineConfig | None = None  # as committed, for Get
        self.on_pipeline: list[Callable[[], None]] = []
        # Called with every WriteRequest before it is checked: who wrote, and when.
        self.on_write: list[Callable[[p4r.WriteRequest], None]] = []
        self.write_count = 0
        self.arbitration = Arbitration(device_id)
        self._initial_defaults_for = initial_defaults_for
        self.table_limits = dict(table_limits or {})
        self.engine: Engine = engine if engine is not None else ModelEngine()

    def verify(self, config: p4r.ForwardingPipelineConfig) -> TableStore:
        """Build the table store `config` describes; raise P4RuntimeError if it cannot."""
        self.engine.verify(config)
        defaults = None
        if self._initial_defaults_for is not None:
            defaults = self._initial_defaults_for(config.p4info)
        return TableStore(config.p4info, initial_defaults=defaults, limits=self.table_limits)

    def commit(self, config: p4r.ForwardingPipelineConfig, *, reconcile: bool = False) -> None:
        """Install `config` with an empty store, or keep unchanged tables' entries (reconcile).

        The `on_pipeline` callbacks run after the switch; if one raises, the new pipeline
        stays installed and the exception propagates.
        """
        tables = self.verify(config)
        if reconcile and self.tables is not None:
            kept = tables.carry_over(self.tables)
            log.info("pipeline reconciled, kept entries of tables %s", kept)
        self.engine.reset(tables)
        stored = p4r.ForwardingPipelineConfig()
        stored.CopyFrom(config)
        self.config = stored
        self.p4info = stored.p4info
        self.tables = tables
        log.info(
            "pipeline committed: %d tables, cookie %s",
            len(stored.p4info.tables),
            stored.cookie.cookie if stored.HasField("cookie") else "unset",
        )
        for callback in list(self.on_pipeline):
            callback()


@attrs.frozen(slots=True)
class _Close:
    """Ends a stream: normally for OK, else with that error status."""

    code: int
    message: str = ""


@attrs.define(slots=True, eq=False)
class _Session:
    """One StreamChannel: what it told us and what it will be sent."""

    outbox: asyncio.Queue[p4r.StreamMessageResponse | _Close]
    live: bool = False  # accepted a MasterArbitrationUpdate
    election_id: int | None = None  # None: unset, lower than any id, never primary


class Arbitration:
    """Primary/backup election for the default role of one device (P4Runtime spec §5).

    The primary is the live stream whose election id is the highest the device has ever
    seen; when it leaves, there is no primary until some stream claims at least that id.
    """

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self._sessions: list[_Session] = []
        self._primary: _Session | None = None
        self._highest: int | None = None  # election_id_past in the spec
        self.updates = 0  # MasterArbitrationUpdates received, from any stream

    @property
    def primary_election_id(self) -> int | None:
        return None if self._primary is None else self._primary.election_id

    def is_primary(self, election_id: int | None) -> bool:
        return election_id is not None and self.primary_election_id == election_id

    def update(self, session: _Session, update: p4r.MasterArbitrationUpdate) -> None:
        """Apply one MasterArbitrationUpdate; P4RuntimeError means: end that stream."""
        self.updates += 1
        if update.device_id != self.device_id:
            if session.live:
                raise P4RuntimeError(
                    rpc_code.FAILED_PRECONDITION,
                    f"device_id {update.device_id} differs from this stream's {self.device_id}",
                )
            raise P4RuntimeError(
                rpc_code.NOT_FOUND,
                f"unknown device_id {update.device_id}; this target is device {self.device_id}",
            )
        role = update.role
        if update.HasField("role") and (role.name or role.id or role.HasField("config")):
            raise P4RuntimeError(rpc_code.UNIMPLEMENTED, "only the default role is supported")
        election_id = U128.decode(update.election_id) if update.HasField("election_id") else None
        if election_id is not None and any(
            s is not session and s.election_id == election_id for s in self._sessions
        ):
            # Wording matched by finsy's "election id in use" check.
            raise P4RuntimeError(
                rpc_code.INVALID_ARGUMENT,
                f"Election id {election_id} is already used by another live controller",
            )
        was_primary = self._primary is session
        session.election_id = election_id
        if not session.live:
            session.live = True
            self._sessions.append(session)
        if election_id is not None and (self._highest is None or election_id >= self._highest):
            self._primary = session
            self._highest = election_id
            self._notify(self._sessions)
        elif was_primary:
            self._primary = None  # it stepped down: everyone learns there is no primary
            self._notify(self._sessions)
        else:
            self._notify([session])

    def leave(self, session: _Session) -> None:
        if not session.live:
            return
        session.live = False
        self._sessions.remove(session)
        if self._primary is session:
            self._primary = None
            self._notify(self._sessions)

    def _notify(self, sessions: Sequence[_Session]) -> None:
        for session in sessions:
            if self._primary is None:
                status = rpc_status.Status(code=rpc_code.NOT_FOUND, message="no primary")
            elif session is self._primary:
                status = rpc_status.Status(code=rpc_code.OK, message="primary")
            else:
                status = rpc_status.Status(code=rpc_code.ALREADY_EXISTS, message="backup")
            update = p4r.MasterArbitrationUpdate(device_id=self.device_id, status=status)
            if self._highest is not None:
                update.election_id.CopyFrom(U128.encode(self._highest))
            session.outbox.put_nowait(p4r.StreamMessageResponse(arbitration=update))


def _details_trailer(
    results: Sequence[P4RuntimeError | None], summary: str
) -> tuple[tuple[str, bytes], ...]:
    """grpc-status-details-bin: google.rpc.Status with one p4.v1.Error per request, in order."""
    status = rpc_status.Status(code=rpc_code.UNKNOWN, message=summary)
    for err in results:
        error = (
            p4r.Error(canonical_code=rpc_code.OK)
            if err is None
            else p4r.Error(canonical_code=err.code, message=err.message)
        )
        status.details.add().Pack(error)
    return (("grpc-status-details-bin", status.SerializeToString()),)


def _summary(what: str, results: Sequence[P4RuntimeError | None]) -> str:
    failed = [err for err in results if err is not None]
    return f"{what}: {len(failed)} of {len(results)} failed, first: {failed[0]}"


class _P4RuntimeServicer(p4r_grpc.P4RuntimeServicer):
    """grpc.aio servicer. Handlers never await while touching the store, so each Write is
    applied without any other request or packet lookup in between."""

    def __init__(self, target: EmbeddedTarget) -> None:
        self._target = target

    async def Capabilities(
        self, request: p4r.CapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> p4r.CapabilitiesResponse:
        if request.device_id not in (0, self._target.device_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown device {request.device_id}")
        return p4r.CapabilitiesResponse(p4runtime_api_version=API_VERSION)

    async def StreamChannel(
        self,
        request_iterator: AsyncIterator[p4r.StreamMessageRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[p4r.StreamMessageResponse]:
        session = _Session(asyncio.Queue())
        reader = asyncio.create_task(self._read_stream(request_iterator, session))
        try:
            while True:
                item = await session.outbox.get()
                if isinstance(item, _Close):
                    if item.code != rpc_code.OK:
                        await context.abort(_status(item.code), item.message)
                    return
                yield item
        finally:
            reader.cancel()
            self._target.arbitration.leave(session)

    async def _read_stream(
        self, requests: AsyncIterator[p4r.StreamMessageRequest], session: _Session
    ) -> None:
        close = _Close(rpc_code.OK)
        try:
            async for request in requests:
                if request.WhichOneof("update") == "arbitration":
                    self._target.arbitration.update(session, request.arbitration)
                else:
                    session.outbox.put_nowait(self._stream_error(session, request))
        except P4RuntimeError as err:
            log.info("stream closed on arbitration error: %s", err)
            close = _Close(err.code, err.message)
        except grpc.RpcError as err:
            log.debug("stream read ended: %s", err)
        except Exception:
            log.exception("stream closed on internal error")
            close = _Close(rpc_code.INTERNAL, "internal error in the embedded target")
        session.outbox.put_nowait(close)

    def _stream_error(
        self, session: _Session, request: p4r.StreamMessageRequest
    ) -> p4r.StreamMessageResponse:
        """Packet I/O and digests are not implemented; say so on the stream (spec §16.6)."""
        kind = request.WhichOneof("update")
        error = p4r.StreamError(canonical_code=rpc_code.UNIMPLEMENTED)
        if kind == "packet":
            error.packet_out.packet_out.CopyFrom(request.packet)
            if not self._target.arbitration.is_primary(session.election_id):
                error.canonical_code = rpc_code.PERMISSION_DENIED
                error.message = "only the primary may send packets"
            else:
                error.message = "packet-out is not implemented by the embedded target"
        elif kind == "digest_ack":
            error.digest_list_ack.digest_list_ack.CopyFrom(request.digest_ack)
            error.message = "digests are not implemented by the embedded target"
        else:
            error.other.other.CopyFrom(request.other)
            error.message = f"stream message {kind} is not implemented"
        return p4r.StreamMessageResponse(error=error)

    async def Write(
        self, request: p4r.WriteRequest, context: grpc.aio.ServicerContext
    ) -> p4r.WriteResponse:
        try:
            results = self._write(request)
        except P4RuntimeError as err:
            await context.abort(_status(err.code), err.message)
        if any(err is not None for err in results):
            summary = _summary("write", results)
            log.info("%s", summary)
            await context.abort(
                grpc.StatusCode.UNKNOWN,
                summary,
                trailing_metadata=_details_trailer(results, summary),
            )
        return p4r.WriteResponse()

    def _check_primary(
        self, request: p4r.WriteRequest | p4r.SetForwardingPipelineConfigRequest
    ) -> None:
        """Device, role and election id of a mutating request: only the primary may write."""
        self._check_device(request.device_id)
        self._check_role(request.role, request.role_id)
        election_id = U128.decode(request.election_id) if request.HasField("election_id") else None
        if not self._target.arbitration.is_primary(election_id):
            raise P4RuntimeError(
                rpc_code.PERMISSION_DENIED,
                f"election id {election_id} is not the primary's "
                f"({self._target.arbitration.primary_election_id})",
            )

    def _write(self, request: p4r.WriteRequest) -> list[P4RuntimeError | None]:
        target = self._target
        for callback in list(target.on_write):
            callback(request)
        self._check_primary(request)
        tables = self._pipeline()
        engine = target.engine
        updates = request.updates
        if request.atomicity == p4r.WriteRequest.CONTINUE_ON_ERROR:
            results: list[P4RuntimeError | None] = []
            accepted: list[tuple[int, p4r.Update]] = []
            for index, update in enumerate(updates):
                try:
                    engine.check(update)
                    tables.write(update)
                except P4RuntimeError as err:
                    results.append(err)
                except Exception as exc:
                    log.exception("write: internal error applying %s", update)
                    results.append(P4RuntimeError(rpc_code.INTERNAL, f"internal error: {exc}"))
                else:
                    accepted.append((index, update))
                    results.append(None)
            for index, refused in self._engine_apply(tables, accepted, atomic=False).items():
                results[index] = refused
            target.write_count += sum(result is None for result in results)
            return results
        if request.atomicity in (
            p4r.WriteRequest.ROLLBACK_ON_ERROR,
            p4r.WriteRequest.DATAPLANE_ATOMIC,
        ):
            # The store is only touched from this event loop and the batch is applied
            # without yielding, so no packet sees it half done: all-or-none is also
            # data plane atomic.
            failures: dict[int, P4RuntimeError] = {}
            for index, update in enumerate(updates):
                try:
                    engine.check(update)
                except P4RuntimeError as err:
                    failures[index] = err
                    break
            else:
                try:
                    failed = tables.write_atomic(updates)
                except Exception as exc:
                    log.exception("write: internal error applying an all-or-none batch")
                    raise P4RuntimeError(rpc_code.INTERNAL, f"internal error: {exc}") from exc
                if failed is None:
                    failures = self._engine_apply(tables, list(enumerate(updates)), atomic=True)
                else:
                    failures = dict([failed])
            if not failures:
                target.write_count += len(updates)
                return [None] * len(updates)
            first = min(failures)
            rolled_back = P4RuntimeError(
                rpc_code.ABORTED, f"not applied: update {first} failed and the batch rolled back"
            )
            return [failures.get(i, rolled_back) for i in range(len(updates))]
        raise P4RuntimeError(rpc_code.INVALID_ARGUMENT, f"unknown atomicity {request.atomicity}")

    def _engine_apply(
        self, tables: TableStore, accepted: Sequence[tuple[int, p4r.Update]], atomic: bool
    ) -> dict[int, P4RuntimeError]:
        indices = [index for index, _ in accepted]
        try:
            return self._target.engine.apply(tables, accepted, atomic)
        except P4RuntimeError as err:
            return dict.fromkeys(indices, err)
        except Exception as exc:
            log.exception("write: internal error in the %s engine", type(self._target.engine))
            return dict.fromkeys(indices, P4RuntimeError(rpc_code.INTERNAL, f"internal: {exc}"))

    async def Read(
        self, request: p4r.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[p4r.ReadResponse]:
        try:
            self._check_device(request.device_id)
            self._check_role(request.role, 0)
            tables = self._pipeline()
        except P4RuntimeError as err:
            await context.abort(_status(err.code), err.message)
        # Everything is read before the first yield, so the answer is one consistent state.
        found: list[p4r.Entity] = []
        results: list[P4RuntimeError | None] = []
        for entity in request.entities:
            try:
                found.extend(tables.read(entity))
                results.append(None)
            except P4RuntimeError as err:
                results.append(err)
            except Exception as exc:
                log.exception("read: internal error answering %s", entity)
                results.append(P4RuntimeError(rpc_code.INTERNAL, f"internal error: {exc}"))
        for start in range(0, len(found), _READ_CHUNK):
            yield p4r.ReadResponse(entities=found[start : start + _READ_CHUNK])
        if any(err is not None for err in results):
            summary = _summary("read", results)
            await context.abort(
                grpc.StatusCode.UNKNOWN,
                summary,
                trailing_metadata=_details_trailer(results, summary),
            )

    async def SetForwardingPipelineConfig(
        self, request: p4r.SetForwardingPipelineConfigRequest, context: grpc.aio.ServicerContext
    ) -> p4r.SetForwardingPipelineConfigResponse:
        try:
            self._set_pipeline(request)
        except P4RuntimeError as err:
            log.info("SetForwardingPipelineConfig refused: %s", err)
            await context.abort(_status(err.code), err.message)
        except Exception as exc:
            log.exception("SetForwardingPipelineConfig failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
        return p4r.SetForwardingPipelineConfigResponse()

    def _set_pipeline(self, request: p4r.SetForwardingPipelineConfigRequest) -> None:
        target = self._target
        self._check_primary(request)
        action = request.action
        actions = p4r.SetForwardingPipelineConfigRequest
        if action in (actions.VERIFY_AND_SAVE, actions.COMMIT):
            raise P4RuntimeError(
                rpc_code.UNIMPLEMENTED, "VERIFY_AND_SAVE and COMMIT are not implemented"
            )
        if action not in (actions.VERIFY, actions.VERIFY_AND_COMMIT, actions.RECONCILE_AND_COMMIT):
            raise P4RuntimeError(rpc_code.INVALID_ARGUMENT, f"unknown action {action}")
        if not request.HasField("config"):
            raise P4RuntimeError(rpc_code.INVALID_ARGUMENT, "config is required")
        if action == actions.VERIFY:
            target.verify(request.config)
            return
        target.commit(request.config, reconcile=action == actions.RECONCILE_AND_COMMIT)

    async def GetForwardingPipelineConfig(
        self, request: p4r.GetForwardingPipelineConfigRequest, context: grpc.aio.ServicerContext
    ) -> p4r.GetForwardingPipelineConfigResponse:
        if request.device_id != self._target.device_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown device {request.device_id}")
        kinds = p4r.GetForwardingPipelineConfigRequest
        kind = request.response_type
        if kind not in (
            kinds.ALL,
            kinds.COOKIE_ONLY,
            kinds.P4INFO_AND_COOKIE,
            kinds.DEVICE_CONFIG_AND_COOKIE,
        ):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown response_type {kind}")
        stored = self._target.config
        if stored is None:
            # The spec's answer when no pipeline is known: leave `config` unset.
            return p4r.GetForwardingPipelineConfigResponse()
        config = p4r.ForwardingPipelineConfig()
        if kind in (kinds.ALL, kinds.P4INFO_AND_COOKIE):
            config.p4info.SetInParent()  # present even when the P4Info is empty
            config.p4info.CopyFrom(stored.p4info)
        if kind in (kinds.ALL, kinds.DEVICE_CONFIG_AND_COOKIE):
            config.p4_device_config = stored.p4_device_config
        if stored.HasField("cookie"):
            config.cookie.CopyFrom(stored.cookie)
        return p4r.GetForwardingPipelineConfigResponse(config=config)

    def _check_device(self, device_id: int) -> None:
        if device_id != self._target.device_id:
            raise P4RuntimeError(
                rpc_code.NOT_FOUND,
                f"unknown device_id {device_id}; this target is device {self._target.device_id}",
            )

    @staticmethod
    def _check_role(role: str, role_id: int) -> None:
        if role or role_id:
            raise P4RuntimeError(rpc_code.NOT_FOUND, f"unknown role {role or role_id!r}")

    def _pipeline(self) -> TableStore:
        if self._target.tables is None:
            raise P4RuntimeError(rpc_code.FAILED_PRECONDITION, NO_PIPELINE)
        return self._target.tables


def add_p4runtime(server: grpc.aio.Server, target: EmbeddedTarget) -> None:
    """Serve P4Runtime for `target` on `server` (create it with GRPC_SERVER_OPTIONS)."""
    p4r_grpc.add_P4RuntimeServicer_to_server(_P4RuntimeServicer(target), server)
