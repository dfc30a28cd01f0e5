"""grpc.aio on a Unix socket: the TerminalService, health and reflection."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from facepay.terminal.v1 import terminal_pb2
from facepayd.errors import ConfigError
from facepayd.rpc.handlers import request_deserializer
from facepayd.rpc.service import TerminalService

SERVICE_NAME = terminal_pb2.DESCRIPTOR.services_by_name["TerminalService"].full_name
# gRPC refuses a bigger request itself (RESOURCE_EXHAUSTED) before any handler runs.
MAX_REQUEST_BYTES = 1 << 20

# grpcio-reflection ships only v1alpha; v1 is the same protocol renamed (identical messages and
# field numbers), so v1alpha's servicer answers v1 calls byte for byte.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"

# 0660 for the socket, set before bind: a chmod after bind leaves a window with looser modes.
_SOCKET_UMASK = 0o117


def terminal_handler(service: TerminalService) -> grpc.GenericRpcHandler:
    """TerminalService's method handlers, each with a deserializer that never raises."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in terminal_pb2.DESCRIPTOR.services_by_name["TerminalService"].methods:
        request_type = getattr(terminal_pb2, method.input_type.name)
        response_type = getattr(terminal_pb2, method.output_type.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(service, method.name),
            request_deserializer=request_deserializer(method.name, request_type),
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _register_reflection_v1_descriptor() -> None:
    """Put grpc/reflection/v1/reflection.proto, v1alpha's file renamed, in the default pool."""
    pool = descriptor_pool.Default()
    name = "grpc/reflection/v1/reflection.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        pass
    else:
        return  # registered already (a second server, or a grpcio-reflection that has v1)
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = name, _V1_PACKAGE
    proto.options.Clear()
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    for message in proto.message_type:
        # Only message-typed fields: setting type_name at all marks it present.
        for f in message.field:
            if f.type_name:
                f.type_name = f.type_name.replace(old, new)
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    pool.Add(proto)


def enable_reflection(server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
    """Server reflection as v1 and v1alpha, listing service_names and both reflection names."""
    _register_reflection_v1_descriptor()
    names = (*service_names, reflection.SERVICE_NAME, REFLECTION_V1)
    servicer = reflection.aio.ReflectionServicer(names)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),)
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)


class RpcServer:
    """The POS-facing server; health reports SERVING only while the terminal is usable."""

    def __init__(self, service: TerminalService, socket_path: Path, *, reflection_on: bool) -> None:
        self._socket_path = socket_path
        self._server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ]
        )
        self._server.add_generic_rpc_handlers((terminal_handler(service),))
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if reflection_on:
            names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
            enable_reflection(self._server, names)

    async def start(self) -> None:
        """Bind the socket (mode 0660 via umask) and start serving, NOT_SERVING until told."""
        await self.set_serving(False)
        path = self._socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        # The caller holds the instance lock, so a socket file left here is stale.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(_SOCKET_UMASK)
        try:
            try:
                port = self._server.add_insecure_port(f"unix:{path}")
            except RuntimeError:
                # grpc's answer to a path past the Unix limit; config checks it first.
                port = 0
            if port == 0:
                raise ConfigError(f"server.socket: cannot bind {path}")
            await self._server.start()
        finally:
            os.umask(old)

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the service and overall."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._health.set(SERVICE_NAME, status)
        await self._health.set("", status)

    async def stop(self, grace: float) -> None:
        """NOT_SERVING, then stop accepting and give in-flight calls `grace` seconds."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()
