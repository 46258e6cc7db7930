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
    "Objects (endpoints, services, policy programs, routes) admitted to the device or refused, "
    "by reason; counted once per change of outcome, not per retry",
    ["kind", "result", "reason"],
)
# The reasons of felix_p4_admissions_total: a fixed vocabulary, so dashboards can rely on it.
ADMITTED = "none"  # the reason label of result="admitted"
TABLE_FULL = "table_full"  # a table the object needs has no room left for it
SHARE = "share"  # one endpoint would take more than its share of a table (endpoint_share)
DEVICE_SMALLER = "device_smaller"  # the device answered RESOURCE_EXHAUSTED; rolled back
MISSING_OBJECT = "missing_object"  # names a policy or profile Felix has not sent (it denies)
UNSUPPORTED = "unsupported"  # the pipeline cannot represent it (stages, buckets, program ids)
INVALID = "invalid"  # malformed input, or an endpoint the pipeline cannot address
CONFLICT = "conflict"  # its port or entries collide with another object's
WRITE_FAILED = "write_failed"  # the device rejected some of its entries for another reason
REASONS = (
    ADMITTED,
    TABLE_FULL,
    SHARE,
    DEVICE_SMALLER,
    MISSING_OBJECT,
    UNSUPPORTED,
    INVALID,
    CONFLICT,
    WRITE_FAILED,
)
REPEATS = Counter(
    "felix_p4_log_repeats_suppressed_total",
    "Log lines not written because they repeated the last one about the same thing",
    ["about"],
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
