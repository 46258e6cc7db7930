"""Felix framing: 8-byte little-endian length prefix, short reads, EOF, caps."""

import asyncio
import io
import struct

import pytest

from calico_proto import felixbackend_pb2 as fb
from felix_p4.felix import wire


def _read_all(
    data: bytes, chunks: int = 1, cap: int = wire.DEFAULT_MAX_FRAME
) -> list[bytes | None]:
    async def run() -> list[bytes | None]:
        reader = asyncio.StreamReader()
        size = max(1, len(data) // chunks)
        for i in range(0, len(data), size):
            reader.feed_data(data[i : i + size])
        reader.feed_eof()
        out: list[bytes | None] = []
        while True:
            body = await wire.read_frame(reader, cap)
            out.append(body)
            if body is None:
                return out

    return asyncio.run(run())


def test_frame_is_little_endian_length_then_message():
    msg = fb.ToDataplane(sequence_number=7, in_sync=fb.InSync())
    frame = wire.encode_frame(msg)
    assert struct.unpack("<Q", frame[:8])[0] == len(frame) - 8
    assert wire.decode_to_dataplane(frame[8:]) == msg


def test_frames_survive_byte_by_byte_delivery():
    msgs = [fb.ToDataplane(sequence_number=i, in_sync=fb.InSync()) for i in range(1, 4)]
    data = b"".join(wire.encode_frame(m) for m in msgs)
    bodies = _read_all(data, chunks=len(data))
    assert [wire.decode_to_dataplane(b) for b in bodies[:-1]] == msgs
    assert bodies[-1] is None


def test_eof_between_frames_is_a_clean_end():
    assert _read_all(b"") == [None]


def test_eof_inside_a_frame_is_truncation():
    frame = wire.encode_frame(fb.ToDataplane(sequence_number=1))
    with pytest.raises(wire.TruncatedFrame):
        _read_all(frame[:-1] if len(frame) > 8 else frame[:5])
    with pytest.raises(wire.TruncatedFrame):
        _read_all(frame[:3])


def test_absurd_length_is_refused_before_reading_it():
    with pytest.raises(wire.FrameTooLarge) as err:
        _read_all(struct.pack("<Q", 2**40), cap=1024)
    assert err.value.length == 2**40


class _ShortReads(io.BytesIO):
    """A blocking stream that returns at most 3 bytes per read, as pipes may."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(3 if size is None or size < 0 else min(size, 3))


def test_the_blocking_reader_frames_like_the_async_one():
    msgs = [fb.ToDataplane(sequence_number=i, in_sync=fb.InSync()) for i in range(1, 4)]
    data = b"".join(wire.encode_frame(m) for m in msgs)
    bodies = list(wire.read_frames(_ShortReads(data)))
    assert [wire.decode_to_dataplane(b) for b in bodies] == msgs
    assert list(wire.read_frames(io.BytesIO(b""))) == []


def test_the_blocking_reader_refuses_an_absurd_length_and_reports_truncation():
    with pytest.raises(wire.FrameTooLarge):
        list(wire.read_frames(io.BytesIO(struct.pack("<Q", 2**40)), 1024))
    frame = wire.encode_frame(fb.ToDataplane(sequence_number=1, in_sync=fb.InSync()))
    for torn in (frame[:3], frame[:-1]):
        with pytest.raises(wire.TruncatedFrame):
            list(wire.read_frames(io.BytesIO(torn)))
