"""The raw limit: the driver's own WriteRequests, pre-encoded, written by a bare grpc.aio client."""

from __future__ import annotations

import time
from typing import Any

import grpc
from finsy.proto import p4r

WRITE = "/p4.v1.P4Runtime/Write"
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
]


def count_updates(requests: list[bytes]) -> int:
    return sum(len(p4r.WriteRequest.FromString(body).updates) for body in requests)


async def write_raw(address: str, requests: list[bytes]) -> dict[str, Any]:
    """Write `requests` one after another (as the driver does: one Write in flight), timed
    from the first call to the last acknowledgement on a channel that is already up."""
    updates = count_updates(requests)
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        # Bytes in, no serializer: the requests go out exactly as the driver encoded them.
        write = channel.unary_unary(WRITE, response_deserializer=p4r.WriteResponse.FromString)
        await channel.channel_ready()
        started = time.perf_counter()
        for body in requests:
            await write(body)
        seconds = time.perf_counter() - started
    return {
        "requests": len(requests),
        "entries": updates,
        "seconds": seconds,
        "rate": updates / seconds if seconds > 0 else 0.0,
    }
