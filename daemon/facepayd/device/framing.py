"""Varint length-delimited bridge Frames on asyncio streams, as Java's writeDelimitedTo writes."""

from __future__ import annotations

import asyncio

from google.protobuf.message import DecodeError

from facepay.bridge.v1 import bridge_pb2
from facepayd.errors import DeviceError, DeviceLost

__all__ = [
    "MAX_FRAME_SIZE",
    "FrameBuffer",
    "FrameReader",
    "decode_varint",
    "encode_frame",
    "encode_varint",
    "read_frame",
    "write_frame",
]

# Far above any real frame (rawdata is 2 KiB, authinfo 4 KiB); a bigger length prefix means a
# desynchronised or hostile stream, and honouring it would let the peer make us buffer anything.
MAX_FRAME_SIZE = 1 << 20

# A 64-bit varint never needs more than ten bytes.
_MAX_VARINT_BYTES = 10
# One read takes whatever the stream holds up to this: several frames, or a frame and a half.
_READ_CHUNK = 64 * 1024


def encode_varint(value: int) -> bytes:
    """Encode a non-negative int as a protobuf base-128 varint."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes) -> tuple[int, int]:
    """Decode a varint at the start of ``data``; return (value, bytes used)."""
    value = 0
    for index, byte in enumerate(data[:_MAX_VARINT_BYTES]):
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, index + 1
    if len(data) >= _MAX_VARINT_BYTES:
        raise DeviceError("bridge frame length prefix is not a valid varint")
    raise DeviceError("bridge frame length prefix is truncated")


def encode_frame(frame: bridge_pb2.Frame, *, max_size: int = MAX_FRAME_SIZE) -> bytes:
    """Serialize ``frame`` with its varint length prefix."""
    body = frame.SerializeToString()
    if len(body) > max_size:
        raise DeviceError(f"bridge frame of {len(body)} bytes exceeds the {max_size}-byte limit")
    return encode_varint(len(body)) + body


async def write_frame(
    writer: asyncio.StreamWriter, frame: bridge_pb2.Frame, *, max_size: int = MAX_FRAME_SIZE
) -> None:
    """Write one frame and drain; DeviceLost when the stream is gone."""
    data = encode_frame(frame, max_size=max_size)
    if writer.is_closing():
        raise DeviceLost("bridge stream is closed")
    try:
        writer.write(data)
        await writer.drain()
    except (ConnectionError, OSError) as exc:
        raise DeviceLost("bridge stream closed while writing") from exc


async def read_frame(
    reader: asyncio.StreamReader, *, max_size: int = MAX_FRAME_SIZE
) -> bridge_pb2.Frame | None:
    """Read one frame: None at a clean end, DeviceLost mid-frame, DeviceError if invalid."""
    length = await _read_length(reader)
    if length is None:
        return None
    if length > max_size:
        raise DeviceError(f"bridge frame of {length} bytes exceeds the {max_size}-byte limit")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise DeviceLost("bridge stream ended inside a frame") from exc
    except (ConnectionError, OSError) as exc:
        raise DeviceLost("bridge stream broke while reading") from exc
    frame = bridge_pb2.Frame()
    try:
        frame.ParseFromString(body)
    except DecodeError as exc:
        raise DeviceError("bridge frame is not a valid Frame message") from exc
    return frame


async def _read_length(reader: asyncio.StreamReader) -> int | None:
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        try:
            chunk = await reader.readexactly(1)
        except asyncio.IncompleteReadError as exc:
            if index == 0:
                return None
            raise DeviceLost("bridge stream ended inside a frame length") from exc
        except (ConnectionError, OSError) as exc:
            raise DeviceLost("bridge stream broke while reading") from exc
        byte = chunk[0]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value
    raise DeviceError("bridge frame length prefix is not a valid varint")


class FrameBuffer:
    """Frames parsed off the front of the bytes received so far (a reader's or a protocol's)."""

    __slots__ = ("_buffer", "_max_size")

    def __init__(self, *, max_size: int = MAX_FRAME_SIZE) -> None:
        self._max_size = max_size
        self._buffer = bytearray()

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished frame are held."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append bytes as they arrived."""
        self._buffer += data

    def next(self) -> bridge_pb2.Frame | None:
        """One whole frame off the front, or None until more has arrived; DeviceError if invalid."""
        buffer = self._buffer
        value = 0
        used = 0
        for index, byte in enumerate(buffer[:_MAX_VARINT_BYTES]):
            value |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                used = index + 1
                break
        else:
            if len(buffer) >= _MAX_VARINT_BYTES:
                raise DeviceError("bridge frame length prefix is not a valid varint")
            return None
        if value > self._max_size:
            raise DeviceError(
                f"bridge frame of {value} bytes exceeds the {self._max_size}-byte limit"
            )
        end = used + value
        if len(buffer) < end:
            return None
        body = bytes(buffer[used:end])
        del buffer[:end]
        frame = bridge_pb2.Frame()
        try:
            frame.ParseFromString(body)
        except DecodeError as exc:
            raise DeviceError("bridge frame is not a valid Frame message") from exc
        return frame


class FrameReader:
    """Frames from one stream, read buffered: one read of what has arrived, every frame parsed.

    read_frame() reads the length prefix a byte at a time so it never takes bytes past its
    frame; a long-lived reader (the bridge client, the simulated bridge) owns its stream and
    parses frames out of one buffer instead (``frames``: what was read past the last frame).
    """

    __slots__ = ("_reader", "frames")

    def __init__(self, reader: asyncio.StreamReader, *, max_size: int = MAX_FRAME_SIZE) -> None:
        self._reader = reader
        self.frames = FrameBuffer(max_size=max_size)

    async def read(self) -> bridge_pb2.Frame | None:
        """The next frame: None at a clean end, DeviceLost mid-frame, DeviceError if invalid."""
        while (frame := self.frames.next()) is None:
            try:
                data = await self._reader.read(_READ_CHUNK)
            except (ConnectionError, OSError) as exc:
                raise DeviceLost("bridge stream broke while reading") from exc
            if not data:
                if not self.frames.pending:
                    return None
                raise DeviceLost("bridge stream ended inside a frame")
            self.frames.feed(data)
        return frame
