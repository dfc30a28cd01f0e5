"""BridgeClient reads frames in its protocol once the hello is in: bytes that came with the hello
are not lost, and a stream that breaks right after it is a loss, over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from facepay.bridge.v1 import bridge_pb2
from facepayd.clock import SystemClock
from facepayd.device.bridge import BridgeClient
from facepayd.device.framing import FrameReader, encode_frame
from facepayd.device.tcp import TcpTransport
from facepayd.errors import DeviceError, DeviceLost

_DEADLINE = 10.0

Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _hello() -> bytes:
    return encode_frame(
        bridge_pb2.Frame(hello=bridge_pb2.Hello(protocol_version="1.0", sdk_version="2.22.0"))
    )


@contextlib.asynccontextmanager
async def _peer(serve: Peer) -> AsyncIterator[int]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _client(port: int) -> BridgeClient:
    client = BridgeClient(TcpTransport("127.0.0.1", port), SystemClock(), heartbeat_interval=60.0)
    await asyncio.wait_for(client.connect(), _DEADLINE)
    return client


async def test_a_ping_sent_with_the_hello_is_answered() -> None:
    pong: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One write: the ping arrives in the same read as the hello, before the client attaches.
        writer.write(_hello() + encode_frame(bridge_pb2.Frame(ping=bridge_pb2.Ping(nonce=7))))
        frame = await FrameReader(reader).read()
        pong.set_result(frame.pong.nonce if frame is not None else -1)
        await reader.read()

    async with _peer(serve) as port:
        client = await _client(port)
        try:
            assert await asyncio.wait_for(pong, _DEADLINE) == 7
        finally:
            await client.close()


async def test_calls_are_answered_from_callbacks_split_across_reads() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_hello())
        frames = FrameReader(reader)
        while (frame := await frames.read()) is not None:
            answer = bridge_pb2.Frame()
            answer.callback.call_id = frame.call.call_id
            answer.callback.kind = bridge_pb2.CALLBACK_KIND_RESULT
            answer.callback.info.update({"return_code": "SUCCESS", "rawdata": "r" * 3000})
            data = encode_frame(answer)
            # A byte at a time for the prefix, then the rest: the feed must reassemble it.
            for index in range(3):
                writer.write(data[index : index + 1])
                await writer.drain()
            writer.write(data[3:])
            await writer.drain()

    async with _peer(serve) as port:
        client = await _client(port)
        try:
            for _ in range(3):
                info = await client.call("getWxpayfaceRawdata", {}, timeout=_DEADLINE)
                assert info == {"return_code": "SUCCESS", "rawdata": "r" * 3000}
        finally:
            await client.close()


@pytest.mark.parametrize(
    ("after_hello", "error"),
    [
        (b"", DeviceLost),  # the stream closes right after the hello
        (b"\x05ab", DeviceLost),  # ... inside a frame
        (b"\xff" * 10, DeviceError),  # garbage where a length prefix should be
    ],
    ids=["closed", "closed-mid-frame", "garbage"],
)
async def test_a_stream_that_breaks_after_the_hello_is_lost(
    after_hello: bytes, error: type[Exception]
) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_hello() + after_hello)
        await writer.drain()
        writer.close()

    async with _peer(serve) as port:
        client = BridgeClient(
            TcpTransport("127.0.0.1", port), SystemClock(), heartbeat_interval=60.0
        )
        lost: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        client.add_lost_listener(lambda reason: lost.done() or lost.set_result(reason))
        await asyncio.wait_for(client.connect(), _DEADLINE)
        try:
            reason = await asyncio.wait_for(lost, _DEADLINE)
            assert isinstance(reason, error)
            assert not client.connected
            with pytest.raises(DeviceLost):
                await client.call("getWxpayfaceRawdata", {}, timeout=_DEADLINE)
        finally:
            await client.close()
