"""The P4Runtime session with the device: connect with backoff, pipeline, read-back, TLS."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from pathlib import Path

from felix_p4 import metrics
from felix_p4.p4.artefacts import ensure_pipeline, load_pipeline
from felix_p4.p4.client import MAX_BATCH, P4RuntimeClient, P4RuntimeClientError, TlsSettings
from felix_p4.p4.pem import PemError, check_certificates, check_key_pair, check_private_key
from felix_p4.p4.schema import PipelineSchema
from felix_p4.p4.sync import SyncEngine
from felix_p4.pipeline import PIPELINE
from felix_p4.settings import ConfigError, P4RuntimeSettings, PipelineSettings

log = logging.getLogger(__name__)

RECONNECT_CAP_SECONDS = 5.0


def tls_settings(p4rt: P4RuntimeSettings) -> TlsSettings | None:
    """TLS settings, or None for plaintext, which must be configured explicitly."""
    tls = p4rt.tls
    if tls.ca or tls.cert or tls.key:
        if bool(tls.cert) != bool(tls.key):
            raise ConfigError("p4runtime.tls.cert and p4runtime.tls.key go together")
        return TlsSettings(
            ca=Path(tls.ca) if tls.ca else None,
            cert=Path(tls.cert) if tls.cert else None,
            key=Path(tls.key) if tls.key else None,
            server_name=tls.server_name,
        )
    if not p4rt.plaintext:
        raise ConfigError(
            "P4Runtime needs TLS: set p4runtime.tls.ca (and cert/key for mutual TLS), "
            "or p4runtime.plaintext: true to accept an unencrypted channel"
        )
    return None


def check_tls_files(tls: TlsSettings | None) -> None:
    """Every TLS file can be read now and holds PEM of what its setting needs (certificates, a
    private key that is the certificate's); ConfigError names the setting, path and problem."""
    if tls is None:
        return
    checks = (("ca", tls.ca, check_certificates), ("cert", tls.cert, check_certificates))
    for setting, path, check in (*checks, ("key", tls.key, check_private_key)):
        if path is None:
            continue
        try:
            check(path.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"p4runtime.tls.{setting}: cannot read {path}: {exc.strerror}"
            ) from None
        except PemError as exc:
            raise ConfigError(f"p4runtime.tls.{setting}: {path}: {exc}") from None
    if tls.cert is not None and tls.key is not None:
        try:
            check_key_pair(tls.cert, tls.key)
        except PemError as exc:
            raise ConfigError(f"p4runtime.tls.cert and p4runtime.tls.key: {exc}") from None


class DeviceSession:
    """Owns the client; `connect` returns a sync engine holding what the device has."""

    def __init__(
        self, p4runtime: P4RuntimeSettings, pipeline: PipelineSettings, on_lost: Callable[[], None]
    ) -> None:
        self.settings = p4runtime
        self.pipeline = pipeline
        tls = tls_settings(p4runtime)
        check_tls_files(tls)
        if tls is None:
            log.warning(
                "P4Runtime to %s is plaintext (p4runtime.plaintext): anyone on the path can "
                "program the device",
                p4runtime.address,
            )
        self.client = P4RuntimeClient(
            p4runtime.address,
            p4runtime.device_id,
            p4runtime.election_id,
            tls,
            timeout=p4runtime.timeout_seconds,
        )
        # The failure the last connection attempt met (logged once, not per attempt).
        self._failing: str = ""
        self._failures = 0
        self.client.on_lost = on_lost
        self.tls_changed = False
        # Table sizes the device turned out to hold (it answered RESOURCE_EXHAUSTED below its
        # P4Info size): kept across reconnects while the device runs the pipeline they were
        # learned on, forgotten when a pipeline is pushed (the device's tables are rebuilt).
        self.learned_capacity: dict[str, int] = {}
        # Artefacts first: a driver that cannot load them fails before it connects.
        self.p4info, self.device_config = load_pipeline(pipeline)
        self.schema = PipelineSchema(self.p4info)
        self.schema.check(PIPELINE)

    @property
    def usable(self) -> bool:
        return self.client.is_primary and not self.tls_changed

    async def connect(self) -> SyncEngine:
        """Connect, become primary, run our pipeline, read the device back; retries with
        capped, jittered backoff (drivers restarted together do not retry in lockstep)."""
        p4info, device_config, schema = self.p4info, self.device_config, self.schema
        self.tls_changed = False
        delay = 0.1
        while True:
            try:
                await self.client.connect()
                pushed = await ensure_pipeline(
                    self.client, p4info, device_config, self.pipeline.push
                )
                if pushed and self.learned_capacity:
                    log.info(
                        "pipeline pushed: forgetting the smaller sizes learned for %s",
                        ", ".join(sorted(self.learned_capacity)),
                    )
                    self.learned_capacity.clear()
                sync = SyncEngine(
                    schema,
                    self.client,
                    min(self.settings.batch_size, MAX_BATCH),
                    learned=self.learned_capacity,
                )
                await sync.load_installed()
                log.info("read %d installed entries back from the device", len(sync.installed))
                self._recovered()
                return sync
            except (P4RuntimeClientError, OSError, TimeoutError) as exc:
                pause = delay * random.uniform(0.5, 1.0)
                self.failed(exc)
                metrics.RECONNECTS.inc()
                await self.client.close()
                await asyncio.sleep(pause)
                delay = min(delay * 2, RECONNECT_CAP_SECONDS)

    def failed(self, exc: BaseException) -> None:
        """Log a failure once per distinct reason; retries of the same one are counted."""
        reason = str(exc) or type(exc).__name__
        self._failures += 1
        if reason != self._failing:
            self._failing = reason
            log.error("P4Runtime target %s: %s; retrying", self.client.address, reason)
        else:
            log.debug(
                "P4Runtime target %s: %s (attempt %d)", self.client.address, reason, self._failures
            )

    def _recovered(self) -> None:
        if self._failing:
            log.info(
                "P4Runtime target %s answers again, after %d failed attempt%s",
                self.client.address,
                self._failures,
                "" if self._failures == 1 else "s",
            )
        self._failing = ""
        self._failures = 0

    async def reconnect(self) -> SyncEngine:
        await self.client.close()
        return await self.connect()

    async def close(self) -> None:
        await self.client.close()

    async def watch_tls(self, changed: Callable[[], None]) -> None:
        """Mark the session for reconnection when the TLS files change (rotation)."""
        tls = self.client.tls
        if tls is None:
            await asyncio.Event().wait()  # plaintext: nothing to watch
            return
        paths = [p for p in (tls.ca, tls.cert, tls.key) if p is not None]
        seen = _signatures(paths)
        while True:
            await asyncio.sleep(self.settings.tls.reload_seconds)
            current = _signatures(paths)
            if current != seen:
                seen = current
                self.tls_changed = True
                log.info("P4Runtime TLS files changed; reconnecting with them")
                changed()


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
