"""Felix's framing on fds 3/4: an 8-byte little-endian length, then one protobuf message."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterator
from typing import BinaryIO

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


def read_frames(stream: BinaryIO, max_frame: int = DEFAULT_MAX_FRAME) -> Iterator[bytes]:
    """The frame bodies of a blocking stream (a recording), with read_frame's rules: a length
    above `max_frame` raises FrameTooLarge before any allocation, a stream ending inside a
    frame raises TruncatedFrame, and one ending between frames ends the iteration."""
    while True:
        header = _read_exactly(stream, HEADER.size)
        if not header:
            return
        if len(header) < HEADER.size:
            raise TruncatedFrame(f"stream ended inside a frame header ({len(header)} bytes)")
        (length,) = HEADER.unpack(header)
        if length > max_frame:
            raise FrameTooLarge(length, max_frame)
        body = _read_exactly(stream, length)
        if len(body) < length:
            raise TruncatedFrame(
                f"stream ended inside a frame body ({len(body)} of {length} bytes)"
            )
        yield body


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    """`size` bytes, fewer only at the end of the stream (read may return short)."""
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


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
    "read_frames",
]
