"""gRPC server reflection over the Unix socket: v1 (what grpcurl tries first) and v1alpha."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from facepayd.rpc.server import REFLECTION_V1, SERVICE_NAME
from tests.unit.face_world import face_world, world_server

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
HEALTH = "grpc.health.v1.Health"


@contextlib.asynccontextmanager
async def channel(tmp_path: Path, *, reflection_on: bool) -> AsyncIterator[grpc.aio.Channel]:
    """A raw channel to the real server over the face world."""
    async with (
        face_world(tmp_path) as world,
        world_server(world, reflection_on=reflection_on) as socket,
        grpc.aio.insecure_channel(f"unix:{socket}") as ch,
    ):
        yield ch


def _messages(package: str) -> tuple[Any, Any]:
    """The request and response classes of one reflection version, by their full names."""
    pool = descriptor_pool.Default()
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
        for name in ("ServerReflectionRequest", "ServerReflectionResponse")
    )


async def _ask(ch: grpc.aio.Channel, service: str, **request: Any) -> Any:
    """One request on service's ServerReflectionInfo stream, decoded with that version's types."""
    request_cls, response_cls = _messages(service.rpartition(".")[0])
    call = ch.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    sent = request_cls(**request)
    responses = [r async for r in call(iter([sent]), timeout=10)]
    assert len(responses) == 1
    (response,) = responses
    assert response.original_request == sent
    return response


@pytest.mark.parametrize("service", [REFLECTION_V1, V1ALPHA])
async def test_reflection_lists_and_describes_the_service(tmp_path: Path, service: str) -> None:
    async with channel(tmp_path, reflection_on=True) as ch:
        listed = await _ask(ch, service, list_services="")
        names = {s.name for s in listed.list_services_response.service}
        assert names == {SERVICE_NAME, HEALTH, REFLECTION_V1, V1ALPHA}

        found = await _ask(ch, service, file_containing_symbol=SERVICE_NAME)
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in found.file_descriptor_response.file_descriptor_proto
        ]
        terminal = next(f for f in files if f.package == "facepay.terminal.v1")
        assert "TerminalService" in [s.name for s in terminal.service]

        # The v1 service is itself describable (grpcurl describe), under its own package.
        own = await _ask(ch, service, file_containing_symbol=REFLECTION_V1)
        (raw,) = own.file_descriptor_response.file_descriptor_proto
        v1 = descriptor_pb2.FileDescriptorProto.FromString(raw)
        assert v1.package == "grpc.reflection.v1"
        assert [m.input_type for m in v1.service[0].method] == [
            ".grpc.reflection.v1.ServerReflectionRequest"
        ]

        missing = await _ask(ch, service, file_containing_symbol="no.such.Service")
        assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_reflection_off_serves_neither_version(tmp_path: Path) -> None:
    async with channel(tmp_path, reflection_on=False) as ch:
        for service in (REFLECTION_V1, V1ALPHA):
            call = ch.stream_stream(f"/{service}/ServerReflectionInfo")
            list_services = b"\x3a\x00"  # field 7 (list_services) = "" in either version
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                _ = [r async for r in call(iter([list_services]), timeout=10)]
            assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
