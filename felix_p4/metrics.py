"""Prometheus counters: bad input, rejected writes, applies. Served when metrics.address is set."""

from __future__ import annotations

from prometheus_client import Counter, start_http_server

BAD_INPUT = Counter(
    "felix_p4_bad_input_total", "Felix frames or objects rejected, by kind", ["kind"]
)
IGNORED_PAYLOADS = Counter(
    "felix_p4_ignored_payloads_total", "Felix payloads deliberately not applied", ["payload"]
)
WRITES = Counter("felix_p4_p4runtime_updates_total", "P4Runtime updates sent", ["result"])
APPLIES = Counter("felix_p4_applies_total", "Applies of Felix state to the device")
RECONNECTS = Counter("felix_p4_p4runtime_reconnects_total", "Failed P4Runtime (re)connections")


def serve(address: str) -> None:
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
