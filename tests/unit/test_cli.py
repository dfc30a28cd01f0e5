"""The facepay CLI and client end to end against a fake TerminalService on a real Unix socket."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from facepay.terminal.v1 import terminal_pb2, terminal_pb2_grpc
from facepay_client import (
    DaemonUnavailableError,
    TerminalBusyError,
    TerminalClient,
)
from facepay_client.cli import (
    ExitCode,
    _build_parser,
    _Following,
    _interrupted,
    _Output,
    _progress_text,
    main,
)
from tests.helpers import until

_DEADLINE = 10.0
_FACE_CODE = "FACECODE-must-stay-secret-7731"


def rich_error(
    code: grpc.StatusCode,
    reason: str,
    message: str,
    *,
    metadata: dict[str, str] | None = None,
    violations: Sequence[tuple[str, str]] = (),
) -> grpc.Status:
    """A google.rpc.Status with ErrorInfo (and BadRequest), as the daemon sends it."""
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason=reason, domain="facepay.terminal.v1", metadata=metadata or {}
        )
    )
    details = [info]
    if violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in violations
                ]
            )
        )
        details.append(bad)
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return rpc_status.to_status(status)


def event(seq: int, state: int, **kind: Any) -> terminal_pb2.PaymentEvent:
    return terminal_pb2.PaymentEvent(out_trade_no="", seq=seq, state=state, **kind)


class FakeTerminal(terminal_pb2_grpc.TerminalServiceServicer):
    """Answers from canned data, records requests, fails a method on request."""

    def __init__(self) -> None:
        self.status = terminal_pb2.TerminalStatus(
            state=terminal_pb2.LIFECYCLE_STATE_READY,
            mode=terminal_pb2.SDK_MODE_NON_AGGREGATE,
            device=terminal_pb2.DeviceInfo(transport="tcp 127.0.0.1:7100", serial="SIM-0001"),
            counters=terminal_pb2.TerminalCounters(inits=1, captures=3),
            daemon_version="0.1.0",
            firewall_enabled=True,
        )
        self.failures: dict[str, grpc.Status] = {}
        self.requests: dict[str, list[Any]] = {}
        self.pay_events: list[terminal_pb2.PaymentEvent] = []
        # Sent after pay event number ``session_ended_after`` (1-based) when set.
        self.session_ended: terminal_pb2.SessionEnded | None = None
        self.session_ended_after = 0
        self.page = terminal_pb2.ListPaymentsResponse()
        self.reported = asyncio.Event()
        # When set, StartFacePay waits for it after the event numbered ``pause_after``.
        self.resume: asyncio.Event | None = None
        self.pause_after = 0
        # Sent after the pay event numbered by the key (not journaled, as the daemon streams it).
        self.pay_progress: dict[int, list[terminal_pb2.PaymentProgress]] = {}

    async def _enter(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.requests.setdefault(method, []).append(request)
        if method in self.failures:
            await context.abort_with_status(self.failures[method])

    async def GetStatus(self, request: Any, context: Any) -> Any:
        await self._enter("GetStatus", request, context)
        return terminal_pb2.GetStatusResponse(status=self.status)

    async def StartFacePay(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await self._enter("StartFacePay", request, context)
        for n, item in enumerate(self.pay_events, 1):
            copy = terminal_pb2.PaymentEvent()
            copy.CopyFrom(item)
            copy.out_trade_no = request.out_trade_no
            yield terminal_pb2.StartFacePayResponse(event=copy)
            for progress in self.pay_progress.get(n, []):
                yield terminal_pb2.StartFacePayResponse(progress=progress)
            if self.resume is not None and n == self.pause_after:
                await self.resume.wait()
            if self.session_ended is not None and n == self.session_ended_after:
                yield terminal_pb2.StartFacePayResponse(session_ended=self.session_ended)

    async def StartCodePay(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await self._enter("StartCodePay", request, context)
        received = terminal_pb2.CodeReceived(source=terminal_pb2.PAYMENT_SOURCE_CODE)
        paid = terminal_pb2.PaymentSucceeded(transaction_id="4200002", total_fee=1)
        for item in (
            event(1, terminal_pb2.PAYMENT_STATE_PAYING, code_received=received),
            event(2, terminal_pb2.PAYMENT_STATE_SUCCEEDED, succeeded=paid),
        ):
            item.out_trade_no = request.out_trade_no
            yield terminal_pb2.StartCodePayResponse(event=item)

    async def WatchStatus(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await self._enter("WatchStatus", request, context)
        for state in (terminal_pb2.LIFECYCLE_STATE_READY, terminal_pb2.LIFECYCLE_STATE_IN_SESSION):
            status = terminal_pb2.TerminalStatus()
            status.CopyFrom(self.status)
            status.state = state
            yield terminal_pb2.WatchStatusResponse(status=status)

    async def CaptureFaceCode(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await self._enter("CaptureFaceCode", request, context)
        started = terminal_pb2.SessionStarted(session_id="sess-42")
        yield terminal_pb2.CaptureFaceCodeResponse(
            event=terminal_pb2.CaptureEvent(session_started=started)
        )
        captured = terminal_pb2.FaceCaptured(face_code=_FACE_CODE, openid="o-user-1")
        yield terminal_pb2.CaptureFaceCodeResponse(
            event=terminal_pb2.CaptureEvent(face_captured=captured)
        )
        # Old SDKs confirm the POS's report on the same stream.
        await self.reported.wait()
        confirmed = terminal_pb2.PayResultConfirmed(return_code="SUCCESS")
        yield terminal_pb2.CaptureFaceCodeResponse(
            event=terminal_pb2.CaptureEvent(pay_result_confirmed=confirmed)
        )
        ended = terminal_pb2.SessionEnded(session_id="sess-42", reason="PAY_RESULT_REPORTED")
        yield terminal_pb2.CaptureFaceCodeResponse(
            event=terminal_pb2.CaptureEvent(session_ended=ended)
        )

    async def ReportPayResult(self, request: Any, context: Any) -> Any:
        await self._enter("ReportPayResult", request, context)
        self.reported.set()
        return terminal_pb2.ReportPayResultResponse()

    async def GetPayment(self, request: Any, context: Any) -> Any:
        await self._enter("GetPayment", request, context)
        return terminal_pb2.GetPaymentResponse(
            payment=terminal_pb2.Payment(out_trade_no=request.out_trade_no, total_fee=1)
        )

    async def ListPayments(self, request: Any, context: Any) -> Any:
        await self._enter("ListPayments", request, context)
        return self.page

    async def RefundPayment(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await self._enter("RefundPayment", request, context)
        recorded = terminal_pb2.RefundEvent(
            out_refund_no=request.out_refund_no,
            out_trade_no=request.out_trade_no,
            seq=1,
            state=terminal_pb2.REFUND_STATE_RECORDED,
            recorded=terminal_pb2.RefundRecorded(refund_fee=request.refund_fee),
        )
        yield terminal_pb2.RefundPaymentResponse(event=recorded)
        # The connection drops before the refund's end.
        await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")

    async def CompleteServiceOrder(self, request: Any, context: Any) -> Any:
        await self._enter("CompleteServiceOrder", request, context)
        return terminal_pb2.CompleteServiceOrderResponse(
            order=terminal_pb2.ServiceOrder(
                out_order_no=request.out_order_no,
                state=terminal_pb2.SERVICE_ORDER_STATE_DOING,
                total_amount=request.total_amount,
            )
        )


class WatchedHealth(health.aio.HealthServicer):
    """The stock health servicer, telling the test when a watcher has arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.watching = asyncio.Event()

    async def Watch(self, request: Any, context: Any) -> None:
        self.watching.set()
        await super().Watch(request, context)


@dataclass
class Daemon:
    fake: FakeTerminal
    health: WatchedHealth
    socket: str

    async def run(self, *argv: str) -> int:
        """Run the CLI in a thread (it owns its event loop) against this daemon."""
        return await asyncio.to_thread(main, ["--socket", self.socket, *argv])


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    # tmp_path can exceed the 108-byte sun_path limit; a short directory under /tmp cannot.
    with tempfile.TemporaryDirectory(prefix="fpc") as directory:
        socket = str(Path(directory) / "facepayd.sock")
        server = grpc.aio.server()
        fake = FakeTerminal()
        checker = WatchedHealth()
        terminal_pb2_grpc.add_TerminalServiceServicer_to_server(fake, server)
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        server.add_insecure_port("unix:" + socket)
        await server.start()
        try:
            yield Daemon(fake, checker, socket)
        finally:
            await server.stop(None)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- status


async def test_status_prints_aligned_fields(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await daemon.run("status") == ExitCode.OK
    out = capsys.readouterr().out
    assert re.search(r"^state:\s+READY$", out, re.MULTILINE)
    assert re.search(r"^device\.serial:\s+SIM-0001$", out, re.MULTILINE)
    assert re.search(r"^counters\.captures:\s+3$", out, re.MULTILINE)
    assert re.search(r"^firewall_enabled:\s+yes$", out, re.MULTILINE)
    value_columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines(out)}
    assert len(value_columns) == 1, out


async def test_status_json_is_one_object(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await daemon.run("--json", "status") == ExitCode.OK
    [line] = lines(capsys.readouterr().out)
    status = json.loads(line)
    # Short enum names and int64 as numbers, as the text output shows them.
    assert status["state"] == "READY"
    assert status["mode"] == "NON_AGGREGATE"
    assert status["device"]["serial"] == "SIM-0001"
    assert status["counters"]["captures"] == 3
    assert status["counters"]["releases"] == 0
    assert status["fault"] == ""


# ---------------------------------------------------------------- errors


async def test_busy_terminal_exits_3_naming_the_session(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.failures["StartFacePay"] = rich_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        "TERMINAL_BUSY",
        "another face session holds the camera",
        metadata={"session_id": "sess-holder-9"},
    )
    code = await daemon.run("pay", "--amount", "1", "--body", "water", "--out-trade-no", "T1")
    captured = capsys.readouterr()
    assert code == ExitCode.BUSY
    assert "sess-holder-9" in captured.err
    assert "TERMINAL_BUSY" in captured.err
    assert lines(captured.out) == ["out_trade_no: T1"]


async def test_busy_terminal_json_error_carries_reason_and_metadata(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.failures["StartFacePay"] = rich_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        "TERMINAL_BUSY",
        "busy",
        metadata={"session_id": "sess-holder-9"},
    )
    code = await daemon.run("--json", "pay", "--amount", "1", "--body", "b", "--out-trade-no", "T")
    first, error = (json.loads(line) for line in lines(capsys.readouterr().out))
    assert code == ExitCode.BUSY
    assert first == {"out_trade_no": "T"}
    assert error["exit_code"] == ExitCode.BUSY
    assert error["error"]["reason"] == "TERMINAL_BUSY"
    assert error["error"]["metadata"] == {"session_id": "sess-holder-9"}


async def test_invalid_argument_exits_6_listing_each_field(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.failures["StartFacePay"] = rich_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        "the request breaks 2 rules",
        violations=[
            ("total_fee", "must be 1..100000"),
            ("out_trade_no", "must match [0-9A-Za-z_-|*@]{1,32}"),
        ],
    )
    code = await daemon.run("pay", "--amount", "0", "--body", "x", "--out-trade-no", "bad id")
    err = capsys.readouterr().err
    assert code == ExitCode.INVALID_ARGUMENT
    assert "total_fee: must be 1..100000" in err
    assert "out_trade_no: must match" in err


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, "SDK_NOT_READY", ExitCode.DEVICE),
        (grpc.StatusCode.UNAVAILABLE, "DEVICE_LOST", ExitCode.DEVICE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "DEVICE_TIMEOUT", ExitCode.DEVICE),
        (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE", ExitCode.BACKEND),
        (grpc.StatusCode.FAILED_PRECONDITION, "BACKEND_REJECTED", ExitCode.BACKEND),
        (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", ExitCode.CONFLICT),
        (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", ExitCode.UNREACHABLE),
        (grpc.StatusCode.INTERNAL, "", ExitCode.FAILED),
    ],
)
async def test_error_reason_decides_exit_code(
    daemon: Daemon,
    capsys: pytest.CaptureFixture[str],
    code: grpc.StatusCode,
    reason: str,
    expected: ExitCode,
) -> None:
    # The reason, not the gRPC code, decides: DEVICE_LOST is UNAVAILABLE but means exit 4.
    daemon.fake.failures["GetPayment"] = rich_error(code, reason, "it went wrong")
    assert await daemon.run("payment", "get", "T1") == expected
    assert "it went wrong" in capsys.readouterr().err


async def test_unreachable_daemon_exits_8(capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="fpc") as directory:
        socket = str(Path(directory) / "nobody-listens.sock")
        code = await asyncio.to_thread(main, ["--socket", socket, "status"])
    assert code == ExitCode.UNREACHABLE
    assert f"cannot reach facepayd at {socket}" in capsys.readouterr().err


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["payment", "list", "--state", "PAID_TWICE"]) == ExitCode.USAGE
    assert "SUCCEEDED" in capsys.readouterr().err
    assert main(["payscore", "create", "O1", "--post-payment", "rent"]) == ExitCode.USAGE
    assert main([]) == ExitCode.USAGE


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (["pay", "--body", "water"], "--amount"),
        (["payscore", "complete", "O1"], "--post-payment"),
        (["payscore", "create", "O1", "--introduction", "x", "--risk-fund", "DEPOSIT:1"],
         "--start-time"),
        (["payscore", "create", "O1", "--start-time", "OnAccept", "--introduction", "x"],
         "--risk-fund"),
        (["payscore", "sync", "O1"], "--paid-time"),
    ],
)  # fmt: skip
def test_missing_required_flag_is_a_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str], argv: list[str], missing: str
) -> None:
    assert main(argv) == ExitCode.USAGE
    assert missing in capsys.readouterr().err


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_has_help_and_required_ones_are_listed_as_required() -> None:
    parsers = list(_parsers(_build_parser()))
    assert len(parsers) > 20
    for parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{parser.prog} {action.dest}: no help text"
            if action.required and action.option_strings:
                [group] = [g for g in parser._action_groups if action in g._group_actions]
                assert group.title == "required options", f"{parser.prog} {action.dest}"
    pay_help = next(p for p in parsers if p.prog.endswith(" pay")).format_help()
    assert "1 fen = 0.01 CNY" in pay_help


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == ExitCode.OK
    assert capsys.readouterr().out.strip() == f"facepay {metadata.version('facepay-terminal')}"


class _ClosedPipe(io.StringIO):
    """stdout whose reader has gone: every write fails as a closed pipe's does."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_closed_stdout_is_not_an_error(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert await daemon.run("status") == ExitCode.OK
    # An endless stream stops once nobody reads it.
    assert await daemon.run("watch") == ExitCode.OK
    assert len(daemon.fake.requests["WatchStatus"]) == 1
    # A payment is followed to its end, so the exit code still says how it ended.
    failed = terminal_pb2.PaymentFailed(err_code="NOTENOUGH")
    daemon.fake.pay_events = [
        *_happy_events()[:2],
        event(3, terminal_pb2.PAYMENT_STATE_FAILED, failed=failed),
    ]
    assert await daemon.run("pay", "--amount", "1", "--body", "w") == ExitCode.FAILED
    assert capsys.readouterr().err == ""


async def test_watch_lines_start_with_the_time(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await daemon.run("watch") == ExitCode.OK
    rows = lines(capsys.readouterr().out)
    assert len(rows) == 2
    for row, state in zip(rows, ["READY", "IN_SESSION"], strict=True):
        stamp, rest = row.split("  ", 1)
        assert datetime.fromisoformat(stamp).tzinfo is not None
        assert rest.startswith(f"state={state} ")
    assert await daemon.run("--json", "watch") == ExitCode.OK
    first = json.loads(lines(capsys.readouterr().out)[0])
    assert datetime.fromisoformat(first["received_at"]).tzinfo is not None
    assert first["state"] == "READY"


# ---------------------------------------------------------------- payments


def _happy_events() -> list[terminal_pb2.PaymentEvent]:
    return [
        event(1, terminal_pb2.PAYMENT_STATE_CAPTURING,
              session_started=terminal_pb2.SessionStarted(session_id="sess-1")),
        event(2, terminal_pb2.PAYMENT_STATE_PAYING,
              face_captured=terminal_pb2.FaceCaptured(face_code=_FACE_CODE, openid="o-user-1")),
        event(3, terminal_pb2.PAYMENT_STATE_PENDING,
              pending=terminal_pb2.PaymentPending(reason="USERPAYING")),
        event(4, terminal_pb2.PAYMENT_STATE_SUCCEEDED,
              succeeded=terminal_pb2.PaymentSucceeded(transaction_id="4200001", total_fee=1)),
    ]  # fmt: skip


async def test_pay_prints_events_in_order_without_the_face_code(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.pay_events = _happy_events()
    code = await daemon.run("pay", "--amount", "1", "--body", "water", "--attach", "lane 3")
    out = capsys.readouterr().out
    assert code == ExitCode.OK
    first, *rest = lines(out)
    [request] = daemon.fake.requests["StartFacePay"]
    assert first == f"out_trade_no: {request.out_trade_no}"
    assert re.fullmatch(r"FP\d{14}[0-9a-f]{10}", request.out_trade_no)
    assert (request.total_fee, request.body, request.attach) == (1, "water", "lane 3")
    assert [line.split()[0] for line in rest] == ["#1", "#2", "#3", "#4"]
    assert [line.split()[2] for line in rest] == ["CAPTURING", "PAYING", "PENDING", "SUCCEEDED"]
    assert "session_id=sess-1" in rest[0]
    assert "openid=o-user-1" in rest[1]
    assert "reason=USERPAYING" in rest[2]
    assert "transaction_id=4200001" in rest[3]
    assert _FACE_CODE not in out


@pytest.mark.parametrize("after", [2, 4])
async def test_pay_prints_the_screen_free_and_waits_for_it_after_the_final_state(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], after: int
) -> None:
    daemon.fake.pay_events = _happy_events()
    daemon.fake.session_ended = terminal_pb2.SessionEnded(
        session_id="sess-1", reason="USER_QUERY_CANCEL", return_msg="user left"
    )
    daemon.fake.session_ended_after = after
    code = await daemon.run("pay", "--amount", "1", "--body", "water", "--out-trade-no", "T2")
    out = capsys.readouterr().out
    assert code == ExitCode.OK
    rest = lines(out)[1:]
    assert len(rest) == 5
    ended = rest[after]
    assert ended.split()[0] == "session_ended"
    assert "reason=USER_QUERY_CANCEL" in ended
    assert "session_id=sess-1" in ended
    # The client library's payment view leaves the face UI's end out.
    async with TerminalClient(daemon.socket) as client:
        events = [e async for e in client.start_face_pay("T3", 1, "water")]
    assert [e.seq for e in events] == [1, 2, 3, 4]


async def test_pay_json_hides_the_face_code_too(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.pay_events = _happy_events()
    code = await daemon.run("--json", "pay", "--amount", "1", "--body", "w", "--out-trade-no", "T")
    out = capsys.readouterr().out
    records = [json.loads(line) for line in lines(out)]
    assert code == ExitCode.OK
    assert [r.get("seq") for r in records] == [None, 1, 2, 3, 4]
    assert [r.get("state") for r in records[1:]] == ["CAPTURING", "PAYING", "PENDING", "SUCCEEDED"]
    assert records[4]["succeeded"]["total_fee"] == 1
    assert records[2]["face_captured"]["openid"] == "o-user-1"
    assert _FACE_CODE not in out


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        (event(2, terminal_pb2.PAYMENT_STATE_FAILED,
               failed=terminal_pb2.PaymentFailed(err_code="NOTENOUGH")), ExitCode.FAILED),
        (event(2, terminal_pb2.PAYMENT_STATE_CANCELLED,
               cancelled=terminal_pb2.SessionCancelled(reason="USER_CANCEL")), ExitCode.FAILED),
        (event(2, terminal_pb2.PAYMENT_STATE_REVERSED,
               reversed=terminal_pb2.PaymentReversed(reason="TIMEOUT")), ExitCode.FAILED),
        (event(2, terminal_pb2.PAYMENT_STATE_CLOSED,
               closed=terminal_pb2.PaymentClosed(reason="NEVER_REACHED_WECHAT_PAY")),
         ExitCode.FAILED),
        (event(2, terminal_pb2.PAYMENT_STATE_NEEDS_ATTENTION,
               needs_attention=terminal_pb2.PaymentNeedsAttention(
                   reason="REVERSE_EXPIRE", action="refund it")), ExitCode.FAILED),
    ],
)  # fmt: skip
async def test_pay_that_does_not_succeed_exits_1(
    daemon: Daemon, final: terminal_pb2.PaymentEvent, expected: ExitCode
) -> None:
    daemon.fake.pay_events = [_happy_events()[0], final]
    assert await daemon.run("pay", "--amount", "1", "--body", "w") == expected


def _waiting_to_query(attempt: int, in_seconds: float) -> terminal_pb2.PaymentProgress:
    progress = terminal_pb2.PaymentProgress(
        state=terminal_pb2.PAYMENT_STATE_PENDING,
        activity="WAITING_TO_QUERY",
        attempt=attempt,
        reason="USERPAYING",
    )
    progress.next_at.FromNanoseconds(int((time.time() + in_seconds) * 1e9))
    return progress


async def test_pay_prints_what_the_daemon_streams_while_it_waits(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.pay_events = _happy_events()
    daemon.fake.pay_progress = {3: [_waiting_to_query(4, 600)]}
    daemon.fake.resume = asyncio.Event()
    daemon.fake.pause_after = 3  # PENDING USERPAYING: the daemon keeps querying WeChat Pay
    run = asyncio.ensure_future(
        daemon.run("--progress", "0.05", "pay", "--amount", "1", "--body", "w")
    )
    err = ""

    def progressed() -> bool:
        nonlocal err
        err += capsys.readouterr().err
        return err.count("USERPAYING") >= 2

    await until(progressed, what="progress lines while PENDING")
    daemon.fake.resume.set()
    assert await run == ExitCode.OK
    progress = [line for line in lines(err) if "USERPAYING" in line]
    for line in progress:
        assert re.fullmatch(
            r"facepay: [\d.]+ s: the payer confirms on their phone \(USERPAYING\); "
            r"querying WeChat Pay \(4\) in \d+ min \d\d s…",
            line,
        ), line
    elapsed = [float(line.split()[1]) for line in progress]
    assert elapsed == sorted(elapsed)


@pytest.mark.parametrize(
    ("activity", "attempt", "in_seconds", "reason", "text"),
    [
        ("PAYING", 1, None, "", "sending the payment to WeChat Pay"),
        ("QUERYING", 3, None, "USERPAYING", "querying WeChat Pay (3)"),
        ("WAITING_TO_QUERY", 2, 4.2, "SYSTEMERROR",
         "no answer yet (SYSTEMERROR); querying WeChat Pay (2) in 5 s"),
        ("REVERSING", 2, None, "TIMEOUT", "reversing the payment with WeChat Pay (2)"),
        ("WAITING_TO_REVERSE", 1, 11.5, "TIMEOUT", "waiting to reverse (12 s)"),
        ("RETRYING", 3, 62.0, "UNRESOLVED", "trying again in 1 min 02 s (UNRESOLVED)"),
        ("SOMETHING_NEW", 4, None, "", "something new (4)"),
    ],
)  # fmt: skip
def test_progress_lines_say_what_the_daemon_streamed(
    activity: str, attempt: int, in_seconds: float | None, reason: str, text: str
) -> None:
    now = 1_700_000_000.0
    progress = terminal_pb2.PaymentProgress(activity=activity, attempt=attempt, reason=reason)
    if in_seconds is not None:
        progress.next_at.FromNanoseconds(int((now + in_seconds) * 1e9))
    assert _progress_text(progress, now) == text


async def test_pay_json_keeps_progress_off_stdout(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.pay_events = _happy_events()
    daemon.fake.pay_progress = {3: [_waiting_to_query(2, 600)]}
    daemon.fake.resume = asyncio.Event()
    daemon.fake.pause_after = 3
    run = asyncio.ensure_future(
        daemon.run("--json", "--progress", "0.05", "pay", "--amount", "1", "--body", "w")
    )
    out = err = ""

    def progressed() -> bool:
        nonlocal out, err
        captured = capsys.readouterr()
        out, err = out + captured.out, err + captured.err
        return "querying WeChat Pay (2)" in err

    await until(progressed, what="a progress line on stderr")
    daemon.fake.resume.set()
    assert await run == ExitCode.OK
    out += capsys.readouterr().out
    records = [json.loads(line) for line in lines(out)]
    # Every stdout line is JSON: the out_trade_no, then the four events, and no progress.
    assert [r.get("seq") for r in records] == [None, 1, 2, 3, 4]
    assert not any("progress" in r or "activity" in r for r in records)


async def test_a_notice_after_the_final_event_is_not_shown(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.pay_events = _happy_events()
    daemon.fake.pay_progress = {4: [_waiting_to_query(9, 600)]}
    daemon.fake.session_ended = terminal_pb2.SessionEnded(session_id="s", reason="RESULT_SHOWN")
    daemon.fake.session_ended_after = 4
    daemon.fake.resume = asyncio.Event()
    daemon.fake.pause_after = 4  # final, the face UI still open
    run = asyncio.ensure_future(
        daemon.run("--progress", "0.05", "pay", "--amount", "1", "--body", "w")
    )
    err = ""

    def progressed() -> bool:
        nonlocal err
        err += capsys.readouterr().err
        return "waiting for the face UI to close" in err

    await until(progressed, what="the line after the final event")
    daemon.fake.resume.set()
    assert await run == ExitCode.OK
    assert "querying WeChat Pay (9)" not in err + capsys.readouterr().err


async def test_no_progress_lines_with_progress_0(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.pay_events = _happy_events()
    daemon.fake.resume = asyncio.Event()
    daemon.fake.pause_after = 3
    run = asyncio.ensure_future(
        daemon.run("--progress", "0", "pay", "--amount", "1", "--body", "w")
    )
    await until(lambda: "StartFacePay" in daemon.fake.requests)
    daemon.fake.resume.set()
    assert await run == ExitCode.OK
    assert capsys.readouterr().err == ""


async def test_stream_ending_early_tells_how_to_reattach(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.pay_events = _happy_events()[:3]
    assert await daemon.run("pay", "--amount", "1", "--body", "w", "--out-trade-no", "T7") == 1
    # The socket is named too: it is not the default one.
    expected = f"facepay --socket {daemon.socket} payment watch T7 --after-seq 3"
    assert expected in capsys.readouterr().err


async def test_payment_list_sends_paging_flags(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.page = terminal_pb2.ListPaymentsResponse(
        payments=[
            terminal_pb2.Payment(
                out_trade_no="T1", state=terminal_pb2.PAYMENT_STATE_SUCCEEDED, total_fee=100
            ),
            terminal_pb2.Payment(out_trade_no="T2", state=terminal_pb2.PAYMENT_STATE_FAILED),
        ],
        next_page_token="page-3",
    )
    code = await daemon.run(
        "payment", "list", "--state", "succeeded", "--state", "PAYMENT_STATE_FAILED",
        "--limit", "2", "--page-token", "page-2",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == ExitCode.OK
    [request] = daemon.fake.requests["ListPayments"]
    assert request.page_size == 2
    assert request.page_token == "page-2"
    assert list(request.states) == [
        terminal_pb2.PAYMENT_STATE_SUCCEEDED,
        terminal_pb2.PAYMENT_STATE_FAILED,
    ]
    rows = lines(out)
    assert rows[0].split()[:3] == ["T1", "SUCCEEDED", "100"]
    assert rows[1].split()[:2] == ["T2", "FAILED"]
    assert rows[2] == "next_page_token: page-3"


# ---------------------------------------------------------------- capture and PayScore


async def test_capture_prints_face_code_and_reports_the_result(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await daemon.run(
        "capture", "--out-trade-no", "T9", "--amount", "250", "--report", "success"
    )
    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert re.search(rf"^face_code:\s+{_FACE_CODE}$", out, re.MULTILINE)
    assert re.search(r"^openid:\s+o-user-1$", out, re.MULTILINE)
    assert re.search(r"^return_code:\s+SUCCESS$", out, re.MULTILINE)
    assert re.search(r"^reason:\s+PAY_RESULT_REPORTED$", out, re.MULTILINE)
    [capture] = daemon.fake.requests["CaptureFaceCode"]
    assert (capture.out_trade_no, capture.total_fee) == ("T9", 250)
    [report] = daemon.fake.requests["ReportPayResult"]
    assert (report.session_id, report.result) == ("sess-42", terminal_pb2.PAY_RESULT_SUCCESS)


async def test_payscore_complete_totals_payments_minus_discounts(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await daemon.run(
        "payscore", "complete", "O1",
        "--post-payment", "rent:300", "--post-payment", "bags:200:2",
        "--post-discount", "welcome:100",
    )  # fmt: skip
    assert code == ExitCode.OK
    [request] = daemon.fake.requests["CompleteServiceOrder"]
    assert request.total_amount == 400
    assert [(p.name, p.amount, p.count) for p in request.post_payments] == [
        ("rent", 300, 0),
        ("bags", 200, 2),
    ]
    assert re.search(r"^state:\s+DOING$", capsys.readouterr().out, re.MULTILINE)


# ---------------------------------------------------------------- library


async def test_client_raises_typed_busy_error(daemon: Daemon) -> None:
    daemon.fake.failures["StartFacePay"] = rich_error(
        grpc.StatusCode.FAILED_PRECONDITION, "TERMINAL_BUSY", "busy", metadata={"session_id": "s9"}
    )
    async with TerminalClient(daemon.socket) as client:
        with pytest.raises(TerminalBusyError) as caught:
            async for _ in client.start_face_pay("T1", 1, "water"):
                pass
    assert caught.value.session_id == "s9"
    assert caught.value.domain == "facepay.terminal.v1"
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_wait_until_serving_returns_once_serving(daemon: Daemon) -> None:
    await daemon.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    async with TerminalClient(daemon.socket) as client:
        waiter = asyncio.create_task(client.wait_until_serving(_DEADLINE))
        await asyncio.wait_for(daemon.health.watching.wait(), _DEADLINE)
        assert not waiter.done()
        await daemon.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await asyncio.wait_for(waiter, _DEADLINE)


async def test_wait_until_serving_gives_up_at_its_deadline(daemon: Daemon) -> None:
    await daemon.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    async with TerminalClient(daemon.socket) as client:
        with pytest.raises(DaemonUnavailableError):
            await client.wait_until_serving(0.2)


async def test_payment_list_shows_why_a_payment_needs_attention(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.fake.page = terminal_pb2.ListPaymentsResponse(
        payments=[
            terminal_pb2.Payment(
                out_trade_no="T9",
                state=terminal_pb2.PAYMENT_STATE_NEEDS_ATTENTION,
                total_fee=100,
                attention_reason="REVERSE_EXPIRE",
                attention_action="refund it in the merchant platform",
            ),
        ],
    )
    assert await daemon.run("payment", "list") == ExitCode.OK
    rows = lines(capsys.readouterr().out)
    assert rows[0].split()[:2] == ["T9", "NEEDS_ATTENTION"]
    assert rows[1].split() == [
        "reason:", "REVERSE_EXPIRE", "action:", "refund", "it", "in", "the", "merchant", "platform"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("following", "expected", "absent"),
    [
        (_Following("T5", last_seq=1), ["payment T5 goes on", "facepay cancel",
         "follow it with: facepay --socket /s payment watch T5 --after-seq 1"], []),
        (_Following("T5", last_seq=3, captured=True),
         ["payment T5 goes on", "payment watch T5 --after-seq 3"], ["facepay cancel"]),
        # Nothing streamed yet: the daemon may not have the order, so no promise that it goes on.
        (_Following("T5"), ["before facepayd confirmed payment T5",
         "look with: facepay --socket /s payment get T5"], ["goes on in facepayd"]),
    ],
)  # fmt: skip
def test_interrupted_pay_says_what_happens_to_the_payment(
    following: _Following, expected: list[str], absent: list[str]
) -> None:
    args = _build_parser().parse_args(["--socket", "/s", "pay", "--amount", "1", "--body", "b"])
    err = io.StringIO()
    _interrupted(_Output(False, io.StringIO(), err), args, following)
    for text in expected:
        assert text in err.getvalue()
    for text in absent:
        assert text not in err.getvalue()


async def test_a_refund_cut_off_prints_the_exact_re_run_with_its_number(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await daemon.run("payment", "refund", "T1", "--fee", "100", "--reason", "broken cup")
    assert code != ExitCode.OK
    captured = capsys.readouterr()
    sent = daemon.fake.requests["RefundPayment"][0].out_refund_no
    assert sent.startswith("RF")
    assert sent in captured.out, "the number is printed up front"
    rerun = shlex.join(
        [
            "facepay", "--socket", daemon.socket, "payment", "refund", "T1", "--fee", "100",
            "--out-refund-no", sent, "--reason", "broken cup",
        ]
    )  # fmt: skip
    assert rerun in captured.err
    # Running it re-sends the same number, not a new refund.
    await daemon.run(*shlex.split(rerun)[3:])
    assert daemon.fake.requests["RefundPayment"][1].out_refund_no == sent
    # Two genuine partial refunds of the same fee still get two numbers.
    await daemon.run("payment", "refund", "T1", "--fee", "100", "--reason", "broken cup")
    assert daemon.fake.requests["RefundPayment"][2].out_refund_no != sent


def test_an_interrupted_refund_prints_the_exact_re_run() -> None:
    args = _build_parser().parse_args(["--socket", "/s", "payment", "refund", "T1", "--fee", "5"])
    args.refund_rerun = "facepay --socket /s payment refund T1 --fee 5 --out-refund-no RF1"
    err = io.StringIO()
    _interrupted(_Output(False, io.StringIO(), err), args, _Following())
    assert "the refund may go on in facepayd" in err.getvalue()
    assert args.refund_rerun in err.getvalue()


# ---------------------------------------------------------------- completion


def _complete(script: str, *words: str) -> list[str]:
    """What bash completes for `facepay WORDS...` (the last word is the one being typed)."""
    words_array = " ".join(shlex.quote(w) for w in ("facepay", *words))
    program = (
        f"{script}\nCOMP_WORDS=({words_array}); COMP_CWORD={len(words)}; _facepay;"
        ' printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", program], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.split()


def test_bash_completion_lists_the_subcommands_and_their_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["completion", "bash"]) == ExitCode.OK
    script = capsys.readouterr().out
    assert "complete -F _facepay facepay" in script
    commands = set(_complete(script, ""))
    assert {"status", "pay", "payment", "payscore", "doctor", "bridge-check", "completion"} <= (
        commands
    )
    assert {"--socket", "--json", "--progress", "--version"} <= commands
    assert _complete(script, "pa") == ["pay", "payment", "payscore"]
    assert set(_complete(script, "payment", "")) == {
        "-h",
        "--help",
        "get",
        "list",
        "watch",
        "reverse",
        "refund",
        "refunds",
    }
    assert _complete(script, "--json", "payment", "watch", "--a") == ["--after-seq"]
    assert "--amount" in _complete(script, "pay", "--a")
    assert _complete(script, "pay", "--limit-pay", "") == ["no_credit"]
    assert _complete(script, "completion", "") == ["-h", "--help", "bash", "zsh"]


def test_zsh_completion_runs_the_same_function_through_bashcompinit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["completion", "zsh"]) == ExitCode.OK
    script = capsys.readouterr().out
    assert script.startswith("#compdef facepay\nautoload -U +X bashcompinit && bashcompinit\n")
    assert "complete -F _facepay facepay" in script


_AUTH_CODE = "134567890123456789"
_CODE_ORDER = ("--out-trade-no", "CP1", "--amount", "1", "--body", "tea")


async def test_code_pay_refuses_a_code_on_the_command_line_saying_why(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await daemon.run("code-pay", "--auth-code", _AUTH_CODE, *_CODE_ORDER)
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert "--auth-code: must be -" in err
    assert "visible to other users in ps and kept in the shell's history" in err
    assert _AUTH_CODE not in err
    assert "StartCodePay" not in daemon.fake.requests


async def test_code_pay_reads_a_piped_code_with_readline(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_getpass(prompt: str = "") -> str:
        raise AssertionError("getpass on a pipe")

    monkeypatch.setattr("getpass.getpass", no_getpass)
    monkeypatch.setattr("sys.stdin", io.StringIO(_AUTH_CODE + "\n"))
    assert await daemon.run("code-pay", "--auth-code", "-", *_CODE_ORDER) == ExitCode.OK
    [request] = daemon.fake.requests["StartCodePay"]
    assert request.auth_code == _AUTH_CODE
    captured = capsys.readouterr()
    assert _AUTH_CODE not in captured.out + captured.err


class _Tty(io.StringIO):
    """A terminal's stdin: reading it directly would echo the code."""

    def isatty(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:
        raise AssertionError("an echoing read on a terminal")


async def test_code_pay_reads_the_code_unechoed_on_a_terminal(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return _AUTH_CODE

    monkeypatch.setattr("getpass.getpass", getpass)
    monkeypatch.setattr("sys.stdin", _Tty())
    assert await daemon.run("code-pay", "--auth-code", "-", *_CODE_ORDER) == ExitCode.OK
    assert len(prompts) == 1
    [request] = daemon.fake.requests["StartCodePay"]
    assert request.auth_code == _AUTH_CODE
    captured = capsys.readouterr()
    assert _AUTH_CODE not in captured.out + captured.err
