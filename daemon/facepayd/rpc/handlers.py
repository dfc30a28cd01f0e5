"""What every area of the API shares: the domain it adapts and the error translation."""

from __future__ import annotations

import functools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf import message

from facepayd import errors
from facepayd.face.authinfo import AuthinfoCache
from facepayd.face.flows import FaceFlows
from facepayd.face.lifecycle import Lifecycle
from facepayd.face.sessions import FaceSessions
from facepayd.ops.config import Config
from facepayd.ops.diagnose import Diagnostics
from facepayd.payments.refunds import RefundService
from facepayd.payments.service import PaymentService
from facepayd.payscore.service import PayScoreService
from facepayd.rpc.status import to_status

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Domain:
    """What the API adapts: the daemon's domain objects."""

    config: Config
    lifecycle: Lifecycle
    authinfo: AuthinfoCache
    sessions: FaceSessions
    flows: FaceFlows
    payments: PaymentService
    payscore: PayScoreService | None = None
    diagnostics: Diagnostics | None = None
    refunds: RefundService | None = None


class Area:
    """One area of the API (status, face, payments, refunds, PayScore): handlers over the domain."""

    _d: Domain


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands in for a request whose bytes did not decode; its handler refuses it."""

    message_name: str


def request_deserializer(
    method: str, message_type: type[message.Message]
) -> Callable[[bytes], message.Message | Undecodable]:
    """message_type.FromString, but bytes that do not decode give an Undecodable marker.

    grpc.aio answers a deserializer's exception with UNKNOWN and its text; the marker lets
    the handler answer INVALID_ARGUMENT naming the method instead.
    """
    name = message_type.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> message.Message | Undecodable:
        try:
            return message_type.FromString(data)
        except message.DecodeError:
            # Only the size: the bytes may hold a face code or an auth code.
            log.info("rpc_undecodable_request", rpc=method, size=len(data))
            return Undecodable(name)

    return deserialize


def _undecodable(rpc: str, request: Undecodable) -> errors.InvalidArgument:
    return errors.InvalidArgument(
        "request", f"is not a valid {request.message_name}: its bytes do not decode ({rpc})"
    )


def unary(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Translate domain errors into rich statuses at the API boundary."""

    @functools.wraps(handler)
    async def wrapper(self: Area, request: Any, context: grpc.aio.ServicerContext) -> T:
        if isinstance(request, Undecodable):
            await context.abort_with_status(to_status(_undecodable(handler.__name__, request)))
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await context.abort_with_status(to_status(_domain_error(handler.__name__, exc)))
            raise AssertionError("abort_with_status returned") from exc

    return wrapper


def stream(
    handler: Callable[..., AsyncIterator[T]],
) -> Callable[..., AsyncIterator[T]]:
    """The same translation for server-streaming handlers."""

    @functools.wraps(handler)
    async def wrapper(
        self: Area, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[T]:
        if isinstance(request, Undecodable):
            await context.abort_with_status(to_status(_undecodable(handler.__name__, request)))
        try:
            async for item in handler(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, none leaks text
            await context.abort_with_status(to_status(_domain_error(handler.__name__, exc)))

    return wrapper


def _domain_error(rpc: str, exc: Exception) -> errors.FacepayError:
    """exc as the client may see it; anything unexpected is INTERNAL with a correlation id."""
    if isinstance(exc, errors.FacepayError):
        log.info("rpc_error", rpc=rpc, reason=exc.reason, error=str(exc))
        return exc
    correlation_id = secrets.token_hex(6)
    # The traceback goes to the log only; the client gets a fixed text and the id to quote.
    log.error("rpc_internal_error", rpc=rpc, correlation_id=correlation_id, exc_info=exc)
    return errors.Internal(correlation_id)
