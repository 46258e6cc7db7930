"""Prometheus metrics, and the HTTP endpoint serving them with liveness and readiness probes."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

log = logging.getLogger(__name__)

BAD_INPUT = Counter(
    "felix_p4_bad_input_total", "Felix frames or objects rejected, by kind", ["kind"]
)
IGNORED_PAYLOADS = Counter(
    "felix_p4_ignored_payloads_total", "Felix payloads deliberately not applied", ["payload"]
)
UNSUPPORTED_FIELDS = Counter(
    "felix_p4_unsupported_fields_total",
    "Workload endpoint fields Felix set that felix-p4 does not program, per endpoint change",
    ["field"],
)
WRITES = Counter("felix_p4_p4runtime_updates_total", "P4Runtime updates sent", ["result"])
APPLIES = Counter("felix_p4_applies_total", "Applies of Felix state to the device")
RECONNECTS = Counter("felix_p4_p4runtime_reconnects_total", "Failed P4Runtime (re)connections")
ADMISSIONS = Counter(
    "felix_p4_admissions_total",
    "Objects (endpoints, services) admitted to or refused room on the device",
    ["kind", "result"],
)
OCCUPANCY = Gauge(
    "felix_p4_table_entries", "Entries desired or on the device, per table", ["table"]
)
CAPACITY = Gauge(
    "felix_p4_table_capacity", "Entries a table can hold as far as the driver knows", ["table"]
)
SESSIONS = Counter("felix_p4_felix_sessions_total", "Felix sessions served")
IN_SYNC = Gauge(
    "felix_p4_dataplane_in_sync", "1 once DataplaneInSync was sent in the current Felix session"
)


async def serve(address: str, ready: Callable[[], bool]) -> web.AppRunner:
    """/metrics, /livez and /readyz on `address` (host:port), answered by this event loop:
    a loop that stops turning fails the liveness probe by timing out."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def livez(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not in sync with Felix yet\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = address.rpartition(":")
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    log.info("metrics, /livez and /readyz on %s", address)
    return runner
