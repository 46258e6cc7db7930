"""Felix's framing on fds 3/4: an 8-byte little-endian length, then one protobuf message."""

from __future__ import annotations

import asyncio
import logging
import struct

from google.protobuf.message import DecodeError

from calico_proto import felixbackend_pb2 as fb

log = logging.getLogger(__name__)

HEADER = struct.Struct("<Q")
DEFAULT_MAX_FRAME = 64 * 1024 * 1024


class FrameTooLarge(Exception):
    """A length prefix above the configured cap; the stream cannot be resynchronised."""

    def __init__(self, length: int, cap: int) -> None:
        super().__init__(f"frame length {length} exceeds the cap of {cap} bytes")
        self.length = length
        self.cap = cap


class TruncatedFrame(Exception):
    """The peer closed the stream in the middle of a frame."""


def encode_frame(message: fb.FromDataplane | fb.ToDataplane) -> bytes:
    body = message.SerializeToString()
    return HEADER.pack(len(body)) + body


async def read_frame(
    reader: asyncio.StreamReader, max_frame: int = DEFAULT_MAX_FRAME
) -> bytes | None:
    """Return the next frame's body, or None at a clean end of stream (EOF between frames).

    `readexactly` absorbs short reads; a length above `max_frame` raises FrameTooLarge
    before any allocation, since trusting it would let one corrupt header exhaust memory.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise TruncatedFrame(
            f"stream ended inside a frame header ({len(exc.partial)} bytes)"
        ) from exc
    (length,) = HEADER.unpack(header)
    if length > max_frame:
        raise FrameTooLarge(length, max_frame)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise TruncatedFrame(
            f"stream ended inside a frame body ({len(exc.partial)} of {length} bytes)"
        ) from exc


def decode_to_dataplane(body: bytes) -> fb.ToDataplane:
    """Parse one frame body; raises DecodeError for bytes that are not a ToDataplane."""
    message = fb.ToDataplane()
    message.ParseFromString(body)
    return message


__all__ = [
    "DEFAULT_MAX_FRAME",
    "DecodeError",
    "FrameTooLarge",
    "TruncatedFrame",
    "decode_to_dataplane",
    "encode_frame",
    "read_frame",
]
