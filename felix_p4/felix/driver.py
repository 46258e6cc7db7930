"""The driver Felix execs: reads Felix's stream, keeps the model, applies it, reports status."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import random
import signal
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from felix_p4 import metrics
from felix_p4.compile.forwarding import check_schema
from felix_p4.config import ConfigError
from felix_p4.dataplane import Dataplane
from felix_p4.felix import wire
from felix_p4.felix.dispatch import IGNORED
from felix_p4.felix.status import UP, StatusReporter
from felix_p4.k8s.source import FileSource, KubeEvent, KubeSource
from felix_p4.k8s.watch import KubeWatcher
from felix_p4.model.endpoints import WorkloadEndpointKey
from felix_p4.model.state import DataplaneState, InvalidEndpoint
from felix_p4.model.values import InvalidObject, parse_mac
from felix_p4.p4.client import MAX_BATCH, P4RuntimeClient, P4RuntimeClientError, TlsSettings
from felix_p4.p4.pipeline import ensure_pipeline, load_pipeline
from felix_p4.p4.schema import PipelineSchema
from felix_p4.p4.sync import SyncEngine
from felix_p4.ports import PortResolver

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
RECONNECT_CAP_SECONDS = 5.0
# Tables the pipeline fills itself (PNA add_on_miss); the driver never diffs them.
LEARNED_TABLES = ("conntrack",)


class Driver:
    def __init__(
        self,
        settings: dict[str, Any],
        ports: PortResolver,
        in_fd: int = 3,
        out_fd: int = 4,
    ) -> None:
        self.settings = settings
        self.ports = ports
        self.in_fd = in_fd
        p4rt = settings["p4runtime"]
        # Settings first: a misconfigured driver must fail before it touches Felix's pipes.
        tls = _tls(p4rt)
        self.gateway_mac = parse_mac(settings["forwarding"]["gateway_mac"])
        for fd in (in_fd, out_fd):
            try:
                os.fstat(fd)
            except OSError:
                raise ConfigError(
                    f"fd {fd} is not open: felix-p4 is started by Felix "
                    "(FELIX_DATAPLANEDRIVER), which passes its stream on fds 3 and 4"
                ) from None
        self.status = StatusReporter(os.fdopen(out_fd, "wb", buffering=0))
        self.state = DataplaneState()
        self.client = P4RuntimeClient(
            p4rt["address"], int(p4rt["device_id"]), int(p4rt["election_id"]), tls
        )
        self.dataplane: Dataplane | None = None
        self._wake = asyncio.Event()
        self._config_changed = asyncio.Event()
        self._done = asyncio.Event()
        self._in_sync_reported = False
        # Endpoints whose status is not "up" are revisited at every apply until they are.
        self._not_up: set[WorkloadEndpointKey] = set()
        self._invalid: dict[WorkloadEndpointKey, str] = {}
        self._services_listed = asyncio.Event()
        self._tls_changed = False
        self._record = FrameRecorder(settings["record"]) if settings["record"] else None
        self.service_source = service_source(settings["services"])
        self.hairpin = {
            4: ipaddress.ip_address(settings["services"]["hairpin_v4"]),
            6: ipaddress.ip_address(settings["services"]["hairpin_v6"]),
        }

    # --- Felix side -------------------------------------------------------------------

    async def _read_felix(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**20)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(self.in_fd, "rb", buffering=0)
        )
        max_frame = int(self.settings["felix"]["max_frame_bytes"])
        while True:
            try:
                body = await wire.read_frame(reader, max_frame)
            except (wire.FrameTooLarge, wire.TruncatedFrame) as exc:
                # The stream has lost framing; nothing after this can be trusted.
                metrics.BAD_INPUT.labels("frame").inc()
                log.error("Felix stream unusable: %s; exiting so Felix restarts us", exc)
                raise SystemExit(1) from exc
            if body is None:
                log.info("Felix closed our input (fd %d); exiting", self.in_fd)
                return
            if self._record is not None:
                self._record.write(body)
            self.handle_frame(body)

    def handle_frame(self, body: bytes) -> None:
        try:
            message = wire.decode_to_dataplane(body)
        except DecodeError as exc:
            metrics.BAD_INPUT.labels("undecodable").inc()
            log.error("dropping undecodable ToDataplane frame of %d bytes: %s", len(body), exc)
            return
        payload = message.WhichOneof("payload")
        if payload is None:
            metrics.BAD_INPUT.labels("unknown_payload").inc()
            log.warning(
                "ignoring ToDataplane #%d with no payload we know (newer Felix?)",
                message.sequence_number,
            )
            return
        try:
            self.handle_payload(payload, getattr(message, payload))
        except InvalidEndpoint as exc:
            metrics.BAD_INPUT.labels(payload).inc()
            log.error("rejected %s: %s", payload, exc)
            self._invalid[exc.key] = str(exc)
            self._not_up.add(exc.key)
            self.state.changes.endpoints.add(exc.key)
        except InvalidObject as exc:
            metrics.BAD_INPUT.labels(payload).inc()
            log.error("rejected %s: %s", payload, exc)
            return
        if self.state.in_sync and self.state.changes:
            self._wake.set()

    def handle_payload(self, payload: str, pb: Any) -> None:
        state = self.state
        if payload == "in_sync":
            log.info("Felix is in sync")
            state.in_sync = True
            state.changes.node = True
        elif payload == "config_update":
            state.apply_config(pb)
            self._apply_log_level()
            self._config_changed.set()
        elif payload == "workload_endpoint_update":
            key = state.apply_workload_endpoint_update(pb)
            self._invalid.pop(key, None)
        elif payload == "workload_endpoint_remove":
            key = state.apply_workload_endpoint_remove(pb)
            self._invalid.pop(key, None)
            state.changes.endpoints.add(key)
        elif payload in ("host_metadata_update", "host_metadata_v4v6_update"):
            state.apply_host_metadata(pb.hostname, pb.ipv4_addr, getattr(pb, "ipv6_addr", ""))
        elif payload == "host_metadata_v6_update":
            old = state.hosts.get(pb.hostname)
            ipv4 = str(old.ipv4) if old and old.ipv4 else ""
            state.apply_host_metadata(pb.hostname, ipv4, pb.ipv6_addr)
        elif payload in (
            "host_metadata_remove",
            "host_metadata_v6_remove",
            "host_metadata_v4v6_remove",
        ):
            state.remove_host_metadata(pb.hostname)
        elif payload == "route_update":
            state.apply_route_update(pb)
        elif payload == "route_remove":
            state.apply_route_remove(pb)
        elif payload == "ipam_pool_update":
            state.apply_ipam_pool_update(pb)
        elif payload == "ipam_pool_remove":
            state.apply_ipam_pool_remove(pb)
        elif payload == "ipset_update":
            state.apply_ipset_update(pb)
        elif payload == "ipset_delta_update":
            state.apply_ipset_delta(pb)
        elif payload == "ipset_remove":
            state.apply_ipset_remove(pb)
        elif payload == "active_policy_update":
            state.apply_policy_update(pb)
        elif payload == "active_policy_remove":
            state.apply_policy_remove(pb)
        elif payload == "active_profile_update":
            state.apply_profile_update(pb)
        elif payload == "active_profile_remove":
            state.apply_profile_remove(pb)
        elif payload == "service_update":
            state.apply_service_update(pb)
        elif payload == "service_remove":
            state.apply_service_remove(pb)
        elif payload in IGNORED:
            metrics.IGNORED_PAYLOADS.labels(payload).inc()
            log.debug("ignoring %s: %s", payload, IGNORED[payload])
        else:
            metrics.BAD_INPUT.labels("unhandled_payload").inc()
            log.warning("ignoring %s: felix-p4 has no handler for it", payload)

    def _apply_log_level(self) -> None:
        if self.settings["log_level"]:
            return
        level = self.state.config.log_level
        if level is not None:
            logging.getLogger().setLevel(level)

    # --- device side ------------------------------------------------------------------

    async def _connect(self) -> Dataplane:
        p4info, device_config = load_pipeline(
            self.settings["pipeline"]["p4info"], self.settings["pipeline"]["device_config"]
        )
        schema = PipelineSchema(p4info)
        check_schema(schema)
        delay = 0.1
        while True:
            try:
                self.client.on_lost = self._wake.set
                await self.client.connect()
                await ensure_pipeline(
                    self.client, p4info, device_config, bool(self.settings["pipeline"]["push"])
                )
                sync = SyncEngine(
                    schema,
                    self.client,
                    min(int(self.settings["p4runtime"]["batch_size"]), MAX_BATCH),
                    unmanaged=LEARNED_TABLES,
                )
                await sync.load_installed()
                log.info("read %d installed entries back from the device", len(sync.installed))
                dataplane = Dataplane(
                    sync,
                    self.ports,
                    self.gateway_mac,
                    self.settings["ports"]["host"],
                    hairpin=self.hairpin,
                    services_enabled=self.service_source is not None,
                )
                dataplane.recover()
                self.dataplane = dataplane
                return dataplane
            except (P4RuntimeClientError, OSError, TimeoutError) as exc:
                # Capped exponential backoff with jitter, so drivers restarted together do
                # not retry in lockstep.
                pause = delay * random.uniform(0.5, 1.0)
                log.error(
                    "P4Runtime target %s: %s; retrying in %.1fs", self.client.address, exc, pause
                )
                metrics.RECONNECTS.inc()
                await self.client.close()
                await asyncio.sleep(pause)
                delay = min(delay * 2, RECONNECT_CAP_SECONDS)

    async def apply(self, dataplane: Dataplane) -> None:
        """Apply what changed and tell Felix the outcome for every touched endpoint."""
        outcome = await dataplane.apply(self.state, set(self._not_up), set(self._invalid))
        metrics.APPLIES.inc()
        metrics.WRITES.labels("ok").inc(outcome.written)
        metrics.WRITES.labels("error").inc(outcome.failed)
        for key, status in outcome.statuses.items():
            self.status.endpoint_status(key, status, self.state.endpoints.get(key))
            if status == UP:
                self._not_up.discard(key)
            else:
                self._not_up.add(key)
        for key in outcome.removed:
            self._not_up.discard(key)
            self.status.endpoint_removed(key)
        if outcome.retry or self._not_up:
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._wake.set)

    async def _apply_loop(self) -> None:
        dataplane = await self._connect()
        coalesce = float(self.settings["felix"]["coalesce_ms"]) / 1000
        while True:
            await self._wake.wait()
            # Let a burst of updates land before compiling them together (at least the
            # frames already read); updates arriving during an apply wait for the next one.
            await asyncio.sleep(coalesce)
            self._wake.clear()
            if self._tls_changed:
                self._tls_changed = False
                log.info("P4Runtime TLS files changed; reconnecting with them")
                dataplane = await self._reconnect()
            elif not self.client.is_primary:
                # The stream ended (target restarted, connection dropped) or another
                # controller took over: reconnect, re-read the device, converge.
                log.error("no longer primary for the P4Runtime target; reconnecting")
                dataplane = await self._reconnect()
            if not self.state.in_sync:
                continue
            if not self._in_sync_reported and self.service_source is not None:
                await self._first_service_list()
            try:
                await self.apply(dataplane)
            except P4RuntimeClientError as exc:
                log.error("apply failed: %s; reconnecting", exc)
                dataplane = await self._reconnect()
                self._wake.set()
                continue
            except Exception:
                # A bug, not bad input (that is rejected earlier): keep what is programmed,
                # keep serving Felix, and try again from a fresh read of the device.
                log.exception("apply failed unexpectedly; re-reading the device and retrying")
                metrics.BAD_INPUT.labels("apply_failure").inc()
                asyncio.get_running_loop().call_later(RETRY_SECONDS, self._wake.set)
                dataplane = await self._reconnect()
                continue
            if not self._in_sync_reported:
                self._in_sync_reported = True
                log.info("first apply after InSync done; telling Felix DataplaneInSync")
                self.status.dataplane_in_sync()
                # The snapshot's state lives as long as the driver: keep the cyclic garbage
                # collector from walking it again and again (pauses in later applies).
                gc.freeze()

    async def _reconnect(self) -> Dataplane:
        """A fresh session with the device; everything is diffed against it again."""
        await self.client.close()
        dataplane = await self._connect()
        self.state.changes.endpoints.update(self.state.endpoints)
        self.state.changes.node = True
        self._wake.set()
        return dataplane

    async def _watch_tls(self) -> None:
        """Reconnect when the TLS certificate or key files change (rotation)."""
        tls = self.client.tls
        if tls is None:
            await asyncio.Event().wait()  # plaintext: nothing to watch
            return
        paths = [p for p in (tls.ca, tls.cert, tls.key) if p is not None]
        interval = float(self.settings["p4runtime"]["tls"]["reload_seconds"])
        seen = _signatures(paths)
        while True:
            await asyncio.sleep(interval)
            current = _signatures(paths)
            if current != seen:
                seen = current
                self._tls_changed = True
                self._wake.set()

    async def _first_service_list(self) -> None:
        """Let the first apply include services, unless their source takes too long."""
        timeout = float(self.settings["services"]["sync_timeout_seconds"])
        try:
            await asyncio.wait_for(self._services_listed.wait(), timeout)
        except TimeoutError:
            log.error(
                "service source has not listed everything after %.0fs; programming without "
                "services until it has",
                timeout,
            )

    def _on_kube_event(self, event: KubeEvent) -> None:
        state = self.state
        if event.type == "SYNCED":
            if not state.services_synced:
                log.info("service source listed everything; services will be programmed")
            state.services_synced = True
            state.changes.services.update(state.kube_services)
            self._services_listed.set()
        elif event.type == "RESET":
            state.reset_kube()
        else:
            try:
                state.apply_kube_object(event.type, event.kind, event.obj)
            except InvalidObject as exc:
                metrics.BAD_INPUT.labels(f"kubernetes_{event.kind}").inc()
                meta = event.obj.get("metadata") or {}
                log.error(
                    "rejected %s %s/%s: %s",
                    event.kind,
                    meta.get("namespace", ""),
                    meta.get("name", ""),
                    exc,
                )
                return
        if state.in_sync and state.changes:
            self._wake.set()

    async def _watch_services(self) -> None:
        if self.service_source is None:
            await asyncio.Event().wait()  # nothing to watch; park until the driver stops
            return
        await self.service_source.run(self._on_kube_event)

    async def _liveness(self) -> None:
        """ProcessStatusUpdate at start and every ReportingIntervalSecs (0: start only)."""
        self.status.process_status()
        while True:
            interval = self.state.config.reporting_interval_secs
            self._config_changed.clear()
            try:
                await asyncio.wait_for(self._config_changed.wait(), interval or None)
            except TimeoutError:
                self.status.process_status()

    async def run(self) -> int:
        # The driver allocates hundreds of thousands of long-lived objects while it builds a
        # snapshot; the default thresholds make the cyclic collector rescan them constantly.
        gc.set_threshold(100_000, 50, 100)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._done.set)
        tasks = [
            asyncio.create_task(self._read_felix(), name="felix-reader"),
            asyncio.create_task(self._apply_loop(), name="apply"),
            asyncio.create_task(self._liveness(), name="liveness"),
            asyncio.create_task(self._watch_services(), name="services"),
            asyncio.create_task(self._watch_tls(), name="tls"),
            asyncio.create_task(self._done.wait(), name="signal"),
        ]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.client.close()
        code = 0
        for task in done:
            exc = task.exception()
            if isinstance(exc, SystemExit):
                code = int(exc.code or 0)
            elif exc is not None:
                log.error("driver task %s failed: %r", task.get_name(), exc)
                code = 1
        # Entries stay on the device: traffic keeps flowing while Felix restarts us.
        log.info("driver exiting with status %d; the pipeline stays programmed", code)
        return code


def service_source(settings: dict[str, Any]) -> KubeSource | None:
    """The configured source of Services and EndpointSlices, or None when disabled."""
    source = settings["source"]
    if source == "auto":
        source = "kubernetes" if os.environ.get("KUBERNETES_SERVICE_HOST") else "none"
    if source == "none":
        return None
    if source == "file":
        return FileSource(list(settings["files"]), float(settings["poll_seconds"]))
    if source == "kubernetes":
        return KubeWatcher(kubeconfig=settings["kubeconfig"] or None)
    raise ValueError(f"services.source {source!r} is not none, file, kubernetes or auto")


class FrameRecorder:
    """Appends Felix's frames, as framed on fd 3, to a file only its owner can read: the
    stream holds the whole cluster's policy and endpoint inventory."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(self.fd, 0o600)  # also when the file existed with wider permissions
        log.info("recording Felix's stream to %s", path)

    def write(self, body: bytes) -> None:
        os.write(self.fd, wire.HEADER.pack(len(body)) + body)


def _signatures(paths: list[Path]) -> list[tuple[int, int] | None]:
    out: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size))
    return out


def _tls(p4rt: dict[str, Any]) -> TlsSettings | None:
    """TLS settings, or None for plaintext, which must be configured explicitly."""
    tls = p4rt["tls"]
    files = (tls["ca"], tls["cert"], tls["key"])
    if any(files):
        if bool(tls["cert"]) != bool(tls["key"]):
            raise ConfigError("p4runtime.tls.cert and p4runtime.tls.key go together")
        return TlsSettings(
            ca=Path(tls["ca"]) if tls["ca"] else None,
            cert=Path(tls["cert"]) if tls["cert"] else None,
            key=Path(tls["key"]) if tls["key"] else None,
            server_name=tls["server_name"],
        )
    if not p4rt["plaintext"]:
        raise ConfigError(
            "P4Runtime needs TLS: set p4runtime.tls.ca (and cert/key for mutual TLS), "
            "or p4runtime.plaintext: true to accept an unencrypted channel"
        )
    log.warning(
        "P4Runtime to %s is plaintext (p4runtime.plaintext): anyone on the path can "
        "program the device",
        p4rt["address"],
    )
    return None
