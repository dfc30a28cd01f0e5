"""Varint length-delimited Frame reading and writing, limits and broken streams."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from facepay.bridge.v1 import bridge_pb2
from facepayd.device.framing import (
    MAX_FRAME_SIZE,
    FrameReader,
    decode_varint,
    encode_frame,
    encode_varint,
    read_frame,
    write_frame,
)
from facepayd.errors import DeviceError, DeviceLost


def _reader(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


# Reads frames off one stream: read_frame() each time, or one buffered FrameReader.
Reads = Callable[[asyncio.StreamReader, int], Callable[[], Awaitable[bridge_pb2.Frame | None]]]


def _unbuffered(
    reader: asyncio.StreamReader, max_size: int
) -> Callable[[], Awaitable[bridge_pb2.Frame | None]]:
    return lambda: read_frame(reader, max_size=max_size)


def _buffered(
    reader: asyncio.StreamReader, max_size: int
) -> Callable[[], Awaitable[bridge_pb2.Frame | None]]:
    return FrameReader(reader, max_size=max_size).read


@pytest.fixture(params=[_unbuffered, _buffered], ids=["read_frame", "FrameReader"])
def reads(request: pytest.FixtureRequest) -> Reads:
    """Both readers must behave alike on every stream."""
    chosen: Reads = request.param
    return chosen


def _call_frame(call_id: int = 7, size: int = 0) -> bridge_pb2.Frame:
    return bridge_pb2.Frame(
        call=bridge_pb2.Call(
            call_id=call_id, method="getWxpayfaceCode", params={"authinfo": "A" * size}
        )
    )


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],
)
def test_varint_matches_the_protobuf_encoding(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert decode_varint(encoded + b"rest") == (value, len(encoded))


def test_varint_rejects_negative_and_overlong() -> None:
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(DeviceError):
        decode_varint(b"\xff" * 11)
    with pytest.raises(DeviceError):
        decode_varint(b"\x80")


def test_encoded_frame_is_what_java_parse_delimited_expects() -> None:
    frame = _call_frame()
    body = frame.SerializeToString()
    assert encode_frame(frame) == encode_varint(len(body)) + body


async def test_frames_round_trip_back_to_back(reads: Reads) -> None:
    frames = [
        _call_frame(1),
        bridge_pb2.Frame(ping=bridge_pb2.Ping(nonce=2**64 - 1)),
        _call_frame(3, size=5000),  # a multi-byte length prefix
        bridge_pb2.Frame(hello=bridge_pb2.Hello(sdk_version="2.22.0")),
    ]
    read = reads(_reader(b"".join(encode_frame(f) for f in frames)), MAX_FRAME_SIZE)
    for expected in frames:
        assert await read() == expected
    assert await read() is None


async def test_empty_frame_is_a_valid_zero_length_message(reads: Reads) -> None:
    frame = await reads(_reader(b"\x00"), MAX_FRAME_SIZE)()
    assert frame is not None
    assert frame.WhichOneof("body") is None


async def test_oversized_length_prefix_is_refused_before_reading_the_body(reads: Reads) -> None:
    # No body follows: a reader that trusted the prefix would wait or fail with DeviceLost.
    reader = _reader(encode_varint(MAX_FRAME_SIZE + 1), eof=False)
    with pytest.raises(DeviceError) as info:
        await asyncio.wait_for(reads(reader, MAX_FRAME_SIZE)(), 5)
    assert not isinstance(info.value, DeviceLost)


async def test_custom_limit_applies_on_both_sides(reads: Reads) -> None:
    frame = _call_frame(size=200)
    with pytest.raises(DeviceError):
        encode_frame(frame, max_size=100)
    with pytest.raises(DeviceError):
        await reads(_reader(encode_frame(frame)), 100)()
    assert await reads(_reader(encode_frame(frame)), 1000)() == frame


async def test_overlong_varint_prefix_is_a_protocol_error(reads: Reads) -> None:
    with pytest.raises(DeviceError) as info:
        await reads(_reader(b"\xff" * 11), MAX_FRAME_SIZE)()
    assert not isinstance(info.value, DeviceLost)


@pytest.mark.parametrize(
    "data",
    [b"\x80", encode_frame(_call_frame())[:-3]],
    ids=["inside-length", "inside-body"],
)
async def test_stream_ending_inside_a_frame_is_device_lost(data: bytes, reads: Reads) -> None:
    with pytest.raises(DeviceLost):
        await reads(_reader(data), MAX_FRAME_SIZE)()


async def test_garbage_body_is_a_protocol_error(reads: Reads) -> None:
    body = b"\xff\xff\xff\xff"
    with pytest.raises(DeviceError) as info:
        await reads(_reader(encode_varint(len(body)) + body), MAX_FRAME_SIZE)()
    assert not isinstance(info.value, DeviceLost)


_FRAMES = st.lists(
    st.builds(_call_frame, st.integers(0, 2**31), st.integers(0, 300)), min_size=1, max_size=6
)


@given(frames=_FRAMES, cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_buffered_reader_gets_every_frame_however_the_bytes_arrive(
    frames: list[bridge_pb2.Frame], cuts: list[int]
) -> None:
    """Frames split anywhere (inside a length prefix too) or several to a chunk come out whole."""
    data = b"".join(encode_frame(f) for f in frames)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]

    async def scenario() -> list[bridge_pb2.Frame | None]:
        reader = asyncio.StreamReader()
        frames_in = FrameReader(reader)

        async def feed() -> None:
            for chunk in chunks:
                reader.feed_data(chunk)
                await asyncio.sleep(0)  # the reader sees each chunk on its own
            reader.feed_eof()

        feeder = asyncio.ensure_future(feed())
        got = [await frames_in.read() for _ in range(len(frames) + 1)]
        await feeder
        return got

    assert asyncio.run(scenario()) == [*frames, None]


@pytest.fixture
async def tcp_pair() -> AsyncIterator[tuple[asyncio.StreamWriter, asyncio.StreamReader]]:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client_writer = await asyncio.open_connection("127.0.0.1", port)
    server_reader, server_writer = await asyncio.wait_for(accepted.get(), 5)
    try:
        yield client_writer, server_reader
    finally:
        client_writer.close()
        server_writer.close()
        server.close()
        await server.wait_closed()


async def test_write_frame_over_a_real_socket(
    tcp_pair: tuple[asyncio.StreamWriter, asyncio.StreamReader], reads: Reads
) -> None:
    writer, reader = tcp_pair
    read = reads(reader, MAX_FRAME_SIZE)
    frames = [_call_frame(i, size=i * 1000) for i in range(1, 6)]
    for frame in frames:
        await write_frame(writer, frame)
    received = [await asyncio.wait_for(read(), 5) for _ in frames]
    assert received == frames
    writer.close()
    assert await asyncio.wait_for(read(), 5) is None


async def test_write_on_a_closed_stream_is_device_lost(
    tcp_pair: tuple[asyncio.StreamWriter, asyncio.StreamReader],
) -> None:
    writer, _ = tcp_pair
    writer.close()
    with pytest.raises(DeviceLost):
        await write_frame(writer, _call_frame())
