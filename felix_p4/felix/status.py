"""Status back to Felix on fd 4: liveness, per-endpoint status, DataplaneInSync."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Protocol

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix.convert import endpoint_id
from felix_p4.felix.wire import encode_frame
from felix_p4.model.endpoints import WorkloadEndpointKey

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    """Where reports to Felix go: Felix's fd 4, or the socket to felix-p4-shim."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> None: ...


class StatusReporter:
    """Writes FromDataplane frames with increasing sequence numbers.

    Endpoint statuses are deduplicated: Felix hears a status when it or the endpoint it
    describes changes (the CNI plugin waits for "up" with the endpoint it created).
    """

    def __init__(self, out: FrameSink) -> None:
        self._out = out
        self._sequence = 0
        self._started = time.monotonic()
        self._endpoint_status: dict[WorkloadEndpointKey, tuple[str, bytes]] = {}
        self.sent = 0

    def _send(self, message: fb.FromDataplane) -> None:
        self._sequence += 1
        message.sequence_number = self._sequence
        self._out.write(encode_frame(message))
        self._out.flush()
        self.sent += 1

    def process_status(self) -> None:
        self._send(
            fb.FromDataplane(
                process_status_update=fb.ProcessStatusUpdate(
                    iso_timestamp=datetime.now(UTC).isoformat(),
                    uptime=time.monotonic() - self._started,
                )
            )
        )

    def endpoint_status(
        self, key: WorkloadEndpointKey, status: str, endpoint: fb.WorkloadEndpoint | None
    ) -> None:
        seen = (status, endpoint.SerializeToString(deterministic=True) if endpoint else b"")
        if self._endpoint_status.get(key) == seen:
            return
        self._endpoint_status[key] = seen
        update = fb.WorkloadEndpointStatusUpdate(
            id=endpoint_id(key), status=fb.EndpointStatus(status=status)
        )
        if endpoint is not None:
            update.endpoint.CopyFrom(endpoint)
        self._send(fb.FromDataplane(workload_endpoint_status_update=update))

    def endpoint_removed(self, key: WorkloadEndpointKey) -> None:
        if self._endpoint_status.pop(key, None) is None:
            return
        self._send(
            fb.FromDataplane(
                workload_endpoint_status_remove=fb.WorkloadEndpointStatusRemove(id=endpoint_id(key))
            )
        )

    def dataplane_in_sync(self) -> None:
        self._send(fb.FromDataplane(dataplane_in_sync=fb.DataplaneInSync()))
