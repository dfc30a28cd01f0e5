"""What every area of the API shares: the domain it adapts and the error translation."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import structlog

from facepayd import errors
from facepayd.face.authinfo import AuthinfoCache
from facepayd.face.flows import FaceFlows
from facepayd.face.lifecycle import Lifecycle
from facepayd.face.sessions import FaceSessions
from facepayd.ops.config import Config
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


class Area:
    """One area of the API (status, face, payments, PayScore): handlers over the domain."""

    _d: Domain


def unary(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Translate domain errors into rich statuses at the API boundary."""

    @functools.wraps(handler)
    async def wrapper(self: Area, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await handler(self, request, context)
        except errors.FacepayError as exc:
            log.info("rpc_error", rpc=handler.__name__, reason=exc.reason, error=str(exc))
            await context.abort_with_status(to_status(exc))
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
        try:
            async for item in handler(self, request, context):
                yield item
        except errors.FacepayError as exc:
            log.info("rpc_error", rpc=handler.__name__, reason=exc.reason, error=str(exc))
            await context.abort_with_status(to_status(exc))

    return wrapper
