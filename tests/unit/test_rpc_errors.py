"""An unexpected exception reaches the client as INTERNAL with a correlation id, never its text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from facepay_client import FacepayClientError, NotFoundError, TerminalClient
from facepayd.errors import NotFound
from facepayd.rpc.handlers import Domain
from facepayd.rpc.server import RpcServer
from facepayd.rpc.service import TerminalService

LEAK = "/var/lib/facepayd/journal.sqlite3 is locked by pid 4242"


class BrokenPayments:
    """A payment service whose every call fails the way a bug would."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def get(self, out_trade_no: str) -> Any:
        raise self.error

    async def watch(self, out_trade_no: str, after_seq: int = 0) -> AsyncIterator[Any]:
        raise self.error
        yield  # pragma: no cover - makes this an async generator


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[BrokenPayments, Path]]:
    payments = BrokenPayments(RuntimeError(LEAK))
    domain = Domain(
        config=None,  # type: ignore[arg-type]
        lifecycle=None,  # type: ignore[arg-type]
        authinfo=None,  # type: ignore[arg-type]
        sessions=None,  # type: ignore[arg-type]
        flows=None,  # type: ignore[arg-type]
        payments=payments,  # type: ignore[arg-type]
    )
    socket = tmp_path / "t.sock"
    server = RpcServer(TerminalService(domain), socket, reflection_on=False)
    await server.start()
    try:
        yield payments, socket
    finally:
        await server.stop(0)


async def test_a_unary_bug_is_internal_with_a_correlation_id_and_no_text(
    served: tuple[BrokenPayments, Path],
) -> None:
    _, socket = served
    with structlog.testing.capture_logs() as logs:
        async with TerminalClient(str(socket)) as client:
            with pytest.raises(FacepayClientError) as caught:
                await client.get_payment("T1")
    error = caught.value
    assert error.reason == "INTERNAL"
    assert "locked" not in str(error)
    assert "/var/lib" not in str(error)
    correlation_id = error.metadata["correlation_id"]
    assert correlation_id in error.message
    logged = [e for e in logs if e["event"] == "rpc_internal_error"]
    assert [e["correlation_id"] for e in logged] == [correlation_id]
    assert logged[0]["rpc"] == "GetPayment"


async def test_a_streaming_bug_is_internal_too(served: tuple[BrokenPayments, Path]) -> None:
    _, socket = served
    async with TerminalClient(str(socket)) as client:
        with pytest.raises(FacepayClientError) as caught:
            async for _ in client.watch_payment("T1"):
                pass
    assert caught.value.reason == "INTERNAL"
    assert LEAK not in str(caught.value)
    assert caught.value.metadata["correlation_id"]


async def test_domain_errors_keep_their_own_status(served: tuple[BrokenPayments, Path]) -> None:
    payments, socket = served
    payments.error = NotFound("no payment with out_trade_no T1")
    async with TerminalClient(str(socket)) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.get_payment("T1")
    assert caught.value.reason == "NOT_FOUND"
    assert "correlation_id" not in caught.value.metadata
