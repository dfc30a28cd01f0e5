"""Face payments end to end: the real daemon process against simulated WeChat Pay and terminal."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import httpx
import pytest
from google.protobuf import timestamp_pb2

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    TerminalClient,
    WrongStateError,
)
from facepayd.sim.daemon_process import DaemonProcess
from facepayd.sim.stack import MERCHANT, SimStack
from facepayd.sim.terminal import SimLatencies
from facepayd.sim.wxpay import OrderRecord, Scenario
from facepayd.wxpay.http import ClientCert, build_http_clients
from facepayd.wxpay.models import MicropayOrder, TradeState
from facepayd.wxpay.v2 import WxPayV2Client
from tests.helpers import until
from tests.integration.conftest import DaemonFactory, StackFactory

S = pb.PaymentState
# Short backend deadline so the SLOW scenario times out quickly (the answer is "unknown").
FAST_WXPAY = {"read_timeout": 2.0, "request_timeout": 2.0}
# No micropay of ours is still in flight 3 s after it went out (read_timeout 2 s on loopback).
FAST_PAYMENTS = {"in_flight_after": 3.0, "attention_after": 20.0}
FINAL = {
    S.PAYMENT_STATE_SUCCEEDED,
    S.PAYMENT_STATE_FAILED,
    S.PAYMENT_STATE_REVERSED,
    S.PAYMENT_STATE_CANCELLED,
    S.PAYMENT_STATE_CLOSED,
}
# Where a POS stream ends: final, or waiting for an operator.
SETTLED = FINAL | {S.PAYMENT_STATE_NEEDS_ATTENTION}


def kinds(events: Sequence[pb.PaymentEvent]) -> list[str]:
    """The event kinds in order."""
    return [e.WhichOneof("kind") or "" for e in events]


def check_sequence(events: Sequence[pb.PaymentEvent], out_trade_no: str) -> None:
    """seq counts 1..n without gaps, every event is ours, only the last one is final."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), events
    assert all(e.out_trade_no == out_trade_no for e in events)
    assert all(e.state not in SETTLED for e in events[:-1]), events
    assert events[-1].state in SETTLED, events


async def pay(
    client: TerminalClient, out_trade_no: str, amount: int, body: str = "goods", **fields: str
) -> list[pb.PaymentEvent]:
    """StartFacePay to the end of its stream (waiting for the camera if it is busy)."""
    face = pb.FaceOptions(wait_if_busy=True)
    return [e async for e in client.start_face_pay(out_trade_no, amount, body, face=face, **fields)]


def ledger(stack: SimStack, out_trade_no: str) -> OrderRecord:
    """The simulator's ledger entry, which must exist."""
    assert stack.wxpay is not None
    record = stack.wxpay.order(out_trade_no)
    assert record is not None, f"{out_trade_no} never reached WeChat Pay"
    return record


@dataclass(frozen=True)
class Expect:
    """How one amount scenario must end."""

    amount: int
    state: int
    kinds: tuple[str, ...]
    charged: bool
    pending_reason: str = ""


PENDING_SUCCESS = ("session_started", "face_captured", "pending", "succeeded")
PENDING_REVERSED = ("session_started", "face_captured", "pending", "pending", "reversed")
SCENARIOS = {
    "SUCCESS": Expect(
        1, S.PAYMENT_STATE_SUCCEEDED, ("session_started", "face_captured", "succeeded"), True
    ),
    "USERPAYING_THEN_SUCCESS": Expect(
        101, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "USERPAYING"
    ),
    "USERPAYING_FOREVER": Expect(
        102, S.PAYMENT_STATE_REVERSED, PENDING_REVERSED, False, "USERPAYING"
    ),
    "USERPAYING_THEN_PAYERROR": Expect(
        103,
        S.PAYMENT_STATE_FAILED,
        ("session_started", "face_captured", "pending", "failed"),
        False,
    ),
    "REVERSE_RECALL": Expect(104, S.PAYMENT_STATE_REVERSED, PENDING_REVERSED, False, "USERPAYING"),
    "SYSTEMERROR_PAID": Expect(
        201, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "SYSTEMERROR"
    ),
    # WeChat Pay never created it: one reverse (refused, as for any unknown order), then CLOSED.
    "SYSTEMERROR_NOT_PAID": Expect(
        202,
        S.PAYMENT_STATE_CLOSED,
        ("session_started", "face_captured", "pending", "pending", "closed"),
        False,
        "SYSTEMERROR",
    ),
    "REVERSE_TRADE_ERROR": Expect(
        105,
        S.PAYMENT_STATE_NEEDS_ATTENTION,
        ("session_started", "face_captured", "pending", "pending", "needs_attention"),
        False,
        "USERPAYING",
    ),
    "REVERSE_EXPIRE": Expect(
        106,
        S.PAYMENT_STATE_NEEDS_ATTENTION,
        ("session_started", "face_captured", "pending", "pending", "needs_attention"),
        False,
        "USERPAYING",
    ),
    "NOTPAY": Expect(204, S.PAYMENT_STATE_REVERSED, PENDING_REVERSED, False, "SYSTEMERROR"),
    "CLOSED": Expect(
        205,
        S.PAYMENT_STATE_FAILED,
        ("session_started", "face_captured", "pending", "failed"),
        False,
        "SYSTEMERROR",
    ),
    # return_code=FAIL: unsigned, so queried at once; ORDERNOTEXIST makes it FAILED.
    "RETURN_FAIL_SIGNERROR": Expect(
        601,
        S.PAYMENT_STATE_FAILED,
        ("session_started", "face_captured", "pending", "failed"),
        False,
        "FAIL",
    ),
    "BANKERROR": Expect(
        203,
        S.PAYMENT_STATE_FAILED,
        ("session_started", "face_captured", "pending", "failed"),
        False,
        "BANKERROR",
    ),
    "NOTENOUGH": Expect(
        301, S.PAYMENT_STATE_FAILED, ("session_started", "face_captured", "failed"), False
    ),
    "AUTHCODEEXPIRE": Expect(
        302, S.PAYMENT_STATE_FAILED, ("session_started", "face_captured", "failed"), False
    ),
    # A forged SUCCESS is refused; the verified query says PAYERROR.
    "FORGED_SUCCESS": Expect(
        401,
        S.PAYMENT_STATE_FAILED,
        ("session_started", "face_captured", "pending", "failed"),
        False,
        "BACKEND_RESPONSE_NOT_TRUSTED",
    ),
    "SLOW": Expect(501, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "BACKEND_UNAVAILABLE"),
    "DROP_CONNECTION": Expect(
        502, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "BACKEND_UNAVAILABLE"
    ),
    # Every untrusted micropay answer is only a reason to query; the paid state comes from a
    # verified orderquery answer.
    "MALFORMED_XML": Expect(
        503, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "BACKEND_RESPONSE_NOT_TRUSTED"
    ),
    "TAMPERED": Expect(
        504, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "BACKEND_RESPONSE_NOT_TRUSTED"
    ),
    "UNSIGNED": Expect(
        505, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "BACKEND_RESPONSE_NOT_TRUSTED"
    ),
    "XML_BOMB": Expect(
        506, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "BACKEND_RESPONSE_NOT_TRUSTED"
    ),
    "DTD_ENTITY": Expect(
        507, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "BACKEND_RESPONSE_NOT_TRUSTED"
    ),
    "OVERSIZED": Expect(
        508, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "BACKEND_RESPONSE_NOT_TRUSTED"
    ),
    "WRONG_APPID": Expect(
        509, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "BACKEND_RESPONSE_NOT_TRUSTED"
    ),
    "HTTP_500": Expect(
        510, S.PAYMENT_STATE_SUCCEEDED, PENDING_SUCCESS, True, "BACKEND_UNAVAILABLE"
    ),
}


async def test_every_micropay_scenario_ends_in_the_right_state_with_its_events_in_order(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack, wxpay=FAST_WXPAY, payments=FAST_PAYMENTS)
    names = list(SCENARIOS)
    async with daemon.client() as client:
        # One camera: captures queue up; the payments then settle side by side in the daemon.
        results = await asyncio.gather(
            *(pay(client, f"SC{n:02d}", SCENARIOS[name].amount) for n, name in enumerate(names))
        )
        replays = {
            n: [e async for e in client.watch_payment(f"SC{n:02d}")] for n in range(len(names))
        }
        journal = {n: await client.get_payment(f"SC{n:02d}") for n in range(len(names))}
    failures = []
    for n, (name, events) in enumerate(zip(names, results, strict=True)):
        want, no = SCENARIOS[name], f"SC{n:02d}"
        assert stack.wxpay is not None
        if name.startswith("RETURN_FAIL"):
            # Refused before any trade: WeChat Pay has no order, nothing to check there.
            assert stack.wxpay.order(no) is None
            assert kinds(events) == list(want.kinds)
            assert events[-1].failed.err_code == "FAIL"
            continue
        record = ledger(stack, no)
        try:
            check_sequence(events, no)
            assert tuple(kinds(events)) == want.kinds
            assert events[-1].state == want.state
            assert journal[n].state == want.state
            assert journal[n].final == (want.state != S.PAYMENT_STATE_NEEDS_ATTENTION)
            assert journal[n].last_seq == len(events)
            # The POS that started the capture sees the face code; a replay never does.
            assert len(events[1].face_captured.face_code) == 18
            assert events[1].face_captured.openid
            assert [
                e.face_captured.face_code for e in replays[n] if e.HasField("face_captured")
            ] == [""]
            assert kinds(replays[n]) == kinds(events)
            if want.pending_reason:
                assert events[2].pending.reason == want.pending_reason
            assert record.micropay_calls == 1, "micropay is sent once per order"
            assert record.charge_count <= 1
            assert record.charged is want.charged
            if want.state == S.PAYMENT_STATE_SUCCEEDED:
                paid = events[-1].succeeded
                assert paid.transaction_id == record.transaction_id == journal[n].transaction_id
                assert paid.total_fee == want.amount
                # WeChat Pay charged the user whose face was captured.
                assert paid.openid == events[1].face_captured.openid
                if want.kinds != SCENARIOS["SUCCESS"].kinds:
                    assert record.query_calls >= 1, "a refused answer is settled by a query"
            if want.state == S.PAYMENT_STATE_REVERSED:
                assert events[-2].state == S.PAYMENT_STATE_REVERSING
                assert events[-2].pending.reason == "TIMEOUT"
                assert record.reverse_calls >= 1
                # Never reversed sooner than reverse_after (1.5 s) after micropay went out.
                captured_at = events[1].time.ToNanoseconds()
                assert events[-1].time.ToNanoseconds() - captured_at >= 1.5e9
            if want.state == S.PAYMENT_STATE_FAILED:
                assert journal[n].err_code
                assert events[-1].failed.err_code == journal[n].err_code
            if want.state == S.PAYMENT_STATE_CLOSED:
                assert events[-2].pending.reason == "ORDER_NOT_FOUND"
                assert events[-1].closed.reason == "NEVER_REACHED_WECHAT_PAY"
                assert record.reverse_calls == 1
            if want.state == S.PAYMENT_STATE_NEEDS_ATTENTION:
                attention = events[-1].needs_attention
                assert (
                    attention.reason
                    == {
                        "REVERSE_TRADE_ERROR": "REVERSE_REFUSED",
                        "REVERSE_EXPIRE": "REVERSE_EXPIRE",
                    }[name]
                )
                assert attention.action
                assert (journal[n].attention_reason, journal[n].attention_action) == (
                    attention.reason,
                    attention.action,
                )
                assert record.reverse_calls == 1, "a definite refusal ends the reversing"
        except AssertionError as exc:
            failures.append(f"{name} ({no}): {exc}\n  events={kinds(events)} ledger={record}")
    assert not failures, "\n".join(failures)
    recall = ledger(stack, f"SC{names.index('REVERSE_RECALL'):02d}")
    assert recall.reverse_calls == stack.options.reverse_recalls + 1, (
        "reverse is repeated while recall=Y"
    )
    assert ledger(stack, f"SC{names.index('NOTENOUGH'):02d}").query_calls == 0
    # Never reversed sooner than reverse_after after micropay (the sim's own clock).
    ages = [r.age for r in stack.wxpay.reverses() if r.age is not None]
    assert ages
    assert min(ages) >= 1.5 - 0.1
    async with daemon.client() as client:
        status = await client.get_status()
        attention = await client.list_payments(states=[S.PAYMENT_STATE_NEEDS_ATTENTION])
    assert status.needs_attention_payments == 2
    assert sorted(p.attention_reason for p in attention.payments) == [
        "REVERSE_EXPIRE",
        "REVERSE_REFUSED",
    ]


async def test_another_orders_paid_number_is_failed_out_trade_no_used_and_never_reversed(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    """A number paid before by someone else (another till, a seeded order) is not ours."""
    assert stack.wxpay is not None
    assert stack.pki is not None
    cert = ClientCert.load_pkcs12_file(stack.pki.client_p12, stack.pki.client_p12_password)
    http = build_http_clients(stack.wxpay.ca_file, cert, httpx.Timeout(5.0))
    try:
        other_till = WxPayV2Client(
            MERCHANT,
            stack.api_key,
            stack.options.sign_type,
            api_base_url=stack.wxpay.base_url,
            authinfo_url=stack.wxpay.authinfo_url,
            http=http.api,
            secapi_http=http.secapi,
            clock=stack.clock,
        )
        first = await other_till.micropay(
            MicropayOrder(
                out_trade_no="OP1",
                total_fee=7,
                body="goods",
                auth_code="134567890123456789",
                spbill_create_ip="127.0.0.1",
            )
        )
    finally:
        await http.aclose()
    assert first.state is TradeState.SUCCESS
    # Same number, another amount: micropay says OUT_TRADE_NO_USED.
    stack.wxpay.seed_paid_order("OP2", total_fee=9)
    daemon = await make_daemon(stack, wxpay=FAST_WXPAY, payments=FAST_PAYMENTS)
    async with daemon.client() as client:
        same_amount = await pay(client, "OP1", 7)  # ORDERPAID
        other_amount = await pay(client, "OP2", 8)
        with pytest.raises(WrongStateError):
            await client.reverse_payment("OP1")
        status = await client.get_status()
    for out_trade_no, events, code, micropays in (
        ("OP1", same_amount, "ORDERPAID", 2),
        ("OP2", other_amount, "OUT_TRADE_NO_USED", 1),
    ):
        check_sequence(events, out_trade_no)
        assert kinds(events) == ["session_started", "face_captured", "pending", "failed"]
        assert events[2].pending.reason == code
        assert events[-1].failed.err_code == "OUT_TRADE_NO_USED"
        record = ledger(stack, out_trade_no)
        assert record.charged, "the other order keeps its money"
        assert record.charge_count == 1
        assert record.micropay_calls == micropays
        assert record.reverse_calls == 0
        assert record.query_calls >= 1
    assert stack.wxpay.reverses() == ()
    assert status.unfinished_payments == 0


async def test_pos_that_hangs_up_mid_payment_re_attaches_and_sees_every_event_once(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        stream = client.start_face_pay("RA1", 101, "goods")
        seen = [await anext(stream), await anext(stream)]
        await stream.aclose()  # the POS crashes after the face was captured
        assert kinds(seen) == ["session_started", "face_captured"]
        rest = [e async for e in client.watch_payment("RA1", after_seq=seen[-1].seq)]
        everything = seen + rest
        check_sequence(everything, "RA1")
        assert kinds(everything) == list(PENDING_SUCCESS)
        # The payment finished although nobody was listening for part of it.
        payment = await client.get_payment("RA1")
        assert payment.state == S.PAYMENT_STATE_SUCCEEDED
        # A later watch replays the whole history and ends.
        again = [e async for e in client.watch_payment("RA1", after_seq=0)]
        assert [e.seq for e in again] == [e.seq for e in everything]
        assert [e async for e in client.watch_payment("RA1", after_seq=payment.last_seq)] == []
        with pytest.raises(NotFoundError):
            async for _ in client.watch_payment("NOSUCH"):
                pass
    assert ledger(stack, "RA1").charge_count == 1


async def test_pos_that_hangs_up_during_capture_does_not_stop_the_payment(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        stream = client.start_face_pay("HU1", 1, "goods")
        assert (await anext(stream)).HasField("session_started")
        await stream.aclose()
        events = [e async for e in client.watch_payment("HU1")]
    check_sequence(events, "HU1")
    assert kinds(events) == ["session_started", "face_captured", "succeeded"]
    assert events[1].face_captured.face_code == ""
    assert ledger(stack, "HU1").charged


async def test_same_out_trade_no_re_attaches_and_different_parameters_are_refused(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        first = client.start_face_pay("ID1", 101, "goods", attach="a1")
        head = [await anext(first), await anext(first)]
        # A second POS (or the same one retrying) with the same parameters re-attaches.
        second = await pay(client, "ID1", 101, attach="a1")
        rest = [e async for e in first]
        with pytest.raises(AlreadyExistsError) as conflict:
            await pay(client, "ID1", 102, attach="a1")
        with pytest.raises(AlreadyExistsError) as conflict_body:
            await pay(client, "ID1", 101, body="other", attach="a1")
        after = await pay(client, "ID1", 101, attach="a1")
    check_sequence(head + rest, "ID1")
    assert kinds(second) == kinds(head + rest) == list(PENDING_SUCCESS)
    assert second[1].face_captured.face_code == "", "only the POS that captured sees the code"
    assert [e.seq for e in after] == [e.seq for e in second]
    assert "total_fee" in conflict.value.message
    assert "ID1" in conflict.value.message
    assert "body" in conflict_body.value.message
    record = ledger(stack, "ID1")
    assert record.micropay_calls == 1
    assert record.charge_count == 1
    assert stack.terminal is not None
    assert stack.terminal.calls["getWxpayfaceCode"] == 1


async def test_get_and_list_payments_with_filters_and_paging(
    stack: SimStack, make_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The terminal's local time is China's: the time filters must not depend on it.
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        for n in range(3):
            await pay(client, f"LS{n}", 1)
        middle = await client.get_payment("LS1")
        await pay(client, "LSF", 301)
        listed: list[pb.Payment] = []
        token = ""
        pages = 0
        while True:
            page = await client.list_payments(page_size=2, page_token=token)
            listed.extend(page.payments)
            pages += 1
            token = page.next_page_token
            if not token:
                break
        failed = await client.list_payments(states=[S.PAYMENT_STATE_FAILED])
        succeeded = await client.list_payments(
            states=[S.PAYMENT_STATE_SUCCEEDED, S.PAYMENT_STATE_REVERSED]
        )
        stub = client._stubs()[0]
        window = await stub.ListPayments(
            pb.ListPaymentsRequest(
                created_after=_plus_nanos(middle.created_at, -1000),
                created_before=_plus_nanos(middle.created_at, 1000),
            )
        )
        with pytest.raises(NotFoundError):
            await client.get_payment("LS9")
        with pytest.raises(InvalidArgumentError) as bad_token:
            await client.list_payments(page_token="not-a-token")
    assert [p.out_trade_no for p in listed] == ["LSF", "LS2", "LS1", "LS0"]
    assert pages == 2
    assert [p.out_trade_no for p in failed.payments] == ["LSF"]
    assert failed.payments[0].err_code == "NOTENOUGH"
    assert [p.out_trade_no for p in succeeded.payments] == ["LS2", "LS1", "LS0"]
    assert [p.out_trade_no for p in window.payments] == ["LS1"]
    assert middle.state == S.PAYMENT_STATE_SUCCEEDED
    assert middle.transaction_id
    assert middle.final
    assert middle.total_fee == 1
    assert middle.body == "goods"
    assert middle.last_seq == 3
    assert "page_token" in [f for f, _ in bad_token.value.field_violations] or "page_token" in str(
        bad_token.value
    )


def _plus_nanos(ts: timestamp_pb2.Timestamp, nanos: int) -> timestamp_pb2.Timestamp:
    later = timestamp_pb2.Timestamp()
    later.FromNanoseconds(ts.ToNanoseconds() + nanos)
    return later


async def test_reverse_of_a_paid_order_refunds_it(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        await pay(client, "RV1", 1)
        assert ledger(stack, "RV1").charged
        reversed_payment = await client.reverse_payment("RV1")
        events = [e async for e in client.watch_payment("RV1")]
        again = await client.reverse_payment("RV1")  # idempotent: already reversed
        await pay(client, "RV2", 301)
        with pytest.raises(WrongStateError):
            await client.reverse_payment("RV2")  # failed: nothing to reverse
    assert reversed_payment.state == S.PAYMENT_STATE_REVERSED
    assert reversed_payment.final
    assert again.state == S.PAYMENT_STATE_REVERSED
    assert kinds(events) == ["session_started", "face_captured", "succeeded", "pending", "reversed"]
    assert events[3].state == S.PAYMENT_STATE_REVERSING
    assert events[3].pending.reason == "MANUAL"
    record = ledger(stack, "RV1")
    assert record.refunded
    assert not record.charged
    assert record.reverse_calls == 1
    assert ledger(stack, "RV2").reverse_calls == 0


async def test_cancel_during_capture_ends_cancelled_and_sends_nothing(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    sims = await make_stack(latencies=SimLatencies(init=0.0, rawdata=0.0, face_capture=20.0))
    daemon = await make_daemon(sims)
    sim = sims.terminal
    assert sim is not None
    assert sims.wxpay is not None
    async with daemon.client() as client:
        stream = client.start_face_pay("CN1", 1, "goods")
        started = await anext(stream)
        await until(lambda: sim.face_ui_open, 10, "the face UI")
        status = await client.get_status()
        cancelled_session = await client.cancel_session(toast_text="cancelled by the cashier")
        rest = [e async for e in stream]
        payment = await client.get_payment("CN1")
        with pytest.raises(WrongStateError):
            await client.reverse_payment("CN1")
    events = [started, *rest]
    check_sequence(events, "CN1")
    assert kinds(events) == ["session_started", "cancelled"]
    assert events[-1].cancelled.reason == "POS_CANCEL"
    assert cancelled_session == status.active_session_id
    assert payment.state == S.PAYMENT_STATE_CANCELLED
    assert sims.wxpay.ledger == {}
    assert sim.calls["quitWxpayface"] == 1


async def test_a_stop_during_capture_closes_the_face_ui_and_ends_the_payment_cancelled(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    sims = await make_stack(latencies=SimLatencies(init=0.0, rawdata=0.0, face_capture=60.0))
    # A grace period longer than the test: the stream ends because the UI was closed.
    daemon = await make_daemon(sims, server={"stop_grace": 120.0})
    sim = sims.terminal
    assert sim is not None
    assert sims.wxpay is not None
    async with daemon.client() as client:
        stream = client.start_face_pay("SD1", 1, "goods")
        started = await anext(stream)
        await until(lambda: sim.face_ui_open, 10, "the face UI")
        stopping = asyncio.ensure_future(daemon.stop())
        rest = [e async for e in stream]
        assert await stopping == 0
    events = [started, *rest]
    check_sequence(events, "SD1")
    assert kinds(events) == ["session_started", "cancelled"]
    assert events[-1].cancelled.reason == "SHUTDOWN"
    assert sim.calls["quitWxpayface"] == 1
    assert not sim.face_ui_open
    assert sims.wxpay.ledger == {}
    await daemon.start()
    async with daemon.client() as client:
        assert (await client.get_payment("SD1")).state == S.PAYMENT_STATE_CANCELLED


async def test_capture_only_on_an_old_sdk_reports_the_result_and_streams_the_confirmation(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    sims = await make_stack(sdk_version="2.12.0")
    daemon = await make_daemon(sims)
    sim = sims.terminal
    assert sim is not None
    assert sims.wxpay is not None
    async with daemon.client() as client:
        events = client.capture_face_code("CO1", 100)
        started = await anext(events)
        captured = await anext(events)
        assert captured.HasField("face_captured")
        assert len(captured.face_captured.face_code) == 18
        await client.report_pay_result(started.session_started.session_id, True)
        confirmed = await anext(events)
        ended = [e async for e in events]
        assert [e.session_ended.reason for e in ended] == ["PAY_RESULT_REPORTED"]
        # A full face payment on the old SDK tells the face UI the result by itself.
        paid = await pay(client, "CO2", 1)
    assert confirmed.HasField("pay_result_confirmed")
    assert confirmed.pay_result_confirmed.return_code == "SUCCESS"
    # The payment's own report to the face UI follows its final event.
    await until(lambda: sim.calls["updateWxpayfacePayResult"] == 2, 10, "the second result report")
    assert paid[-1].state == S.PAYMENT_STATE_SUCCEEDED
    assert sims.wxpay.order("CO1") is None, "capture-only never pays through the daemon"


BAD_INPUT: tuple[tuple[str, int, str, dict[str, str], str], ...] = (
    ("BI1", 0, "x", {}, "total_fee"),
    ("BI2", -1, "x", {}, "total_fee"),
    ("BI3", 501, "x", {}, "total_fee"),  # above the configured max_amount
    ("bad no!", 1, "x", {}, "out_trade_no"),
    ("BI@9", 1, "x", {}, "out_trade_no"),  # @ is orderquery's only, not micropay's
    ("A" * 33, 1, "x", {}, "out_trade_no"),
    ("BI4#", 1, "x", {}, "out_trade_no"),
    ("BI5", 1, "b" * 129, {}, "body"),
    ("BI6", 1, "x", {"attach": "a" * 128}, "attach"),
    # Characters XML cannot carry could never reach WeChat Pay.
    ("BI7", 1, "a\x00b", {}, "body"),
    ("BI8", 1, "x", {"attach": "\x1b[31m"}, "attach"),
)


async def test_bad_input_is_refused_naming_the_field_and_nothing_is_sent_or_journaled(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack, payments={"max_amount": 500})
    async with daemon.client() as client:
        for out_trade_no, amount, body, extra, field in BAD_INPUT:
            with pytest.raises(InvalidArgumentError) as bad:
                await pay(client, out_trade_no, amount, body, **extra)
            assert [f for f, _ in bad.value.field_violations] == [field], out_trade_no
            if len(out_trade_no) <= 32 and out_trade_no.isalnum():
                with pytest.raises(NotFoundError):
                    await client.get_payment(out_trade_no)
        listed = await client.list_payments()
        # The ceiling is inclusive; _ - | * are allowed in out_trade_no (@ is orderquery's only).
        ok = await pay(client, "Bi-max_|*9", 500)
    assert list(listed.payments) == []
    assert ok[-1].state == S.PAYMENT_STATE_SUCCEEDED
    assert stack.wxpay is not None
    assert list(stack.wxpay.ledger) == ["Bi-max_|*9"]
    assert stack.terminal is not None
    assert stack.terminal.calls["getWxpayfaceCode"] == 1


# ------------------------------------------------------------------ the CLI, as a real process


def _cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from facepay_client.cli import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", code, "--socket", str(daemon.socket), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def _cli_async(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the simulators live on this event loop and must keep answering.
    return await asyncio.to_thread(_cli, daemon, *args)


async def test_cli_pay_and_payment_commands_end_to_end(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    paid = await _cli_async(daemon, "pay", "--amount", "1", "--body", "x", "--out-trade-no", "CLI1")
    assert paid.returncode == 0, paid.stderr
    lines = paid.stdout.splitlines()
    assert lines[0].split() == ["out_trade_no:", "CLI1"]
    # The face UI's end is its own line; the rest are the payment's events.
    assert [line.split()[0] for line in lines if "session_ended" in line] == ["session_ended"]
    lines = [line for line in lines if "session_ended" not in line]
    assert [line.split()[3] for line in lines[1:]] == [
        "session_started",
        "face_captured",
        "succeeded",
    ]
    assert [line.split()[2] for line in lines[1:]][-1] == "SUCCEEDED"
    face_codes = stack.terminal.issued_face_codes if stack.terminal else []
    assert face_codes
    assert all(code not in paid.stdout for code in face_codes)

    generated = await _cli_async(daemon, "--json", "pay", "--amount", "301", "--body", "x")
    assert generated.returncode == 1, generated.stderr  # ended FAILED
    assert '"NOTENOUGH"' in generated.stdout

    got = await _cli_async(daemon, "payment", "get", "CLI1")
    assert got.returncode == 0, got.stderr
    assert "SUCCEEDED" in got.stdout
    assert "CLI1" in got.stdout

    listed = await _cli_async(daemon, "payment", "list", "--state", "SUCCEEDED")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["CLI1"]

    watched = await _cli_async(daemon, "payment", "watch", "CLI1", "--after-seq", "1")
    assert watched.returncode == 0, watched.stderr
    assert [line.split()[0] for line in watched.stdout.splitlines()] == ["#2", "#3"]

    reversed_ = await _cli_async(daemon, "payment", "reverse", "CLI1")
    assert reversed_.returncode == 0, reversed_.stderr
    assert "REVERSED" in reversed_.stdout
    assert ledger(stack, "CLI1").refunded

    missing = await _cli_async(daemon, "payment", "get", "NOSUCH")
    assert missing.returncode == 7
    invalid = await _cli_async(
        daemon, "pay", "--amount", "1", "--body", "x", "--out-trade-no", "bad no"
    )
    assert invalid.returncode == 6
    assert "out_trade_no" in invalid.stderr + invalid.stdout
    assert stack.wxpay is not None
    assert stack.wxpay.order("bad no") is None


async def test_grpc_status_of_a_conflict_is_already_exists(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        await pay(client, "GS1", 1)
        with pytest.raises(AlreadyExistsError) as conflict:
            await pay(client, "GS1", 2)
    assert conflict.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert conflict.value.reason == "ALREADY_EXISTS"


async def test_reverse_of_a_pending_payment_stops_the_queries_and_reverses_it(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack, payments={"give_up_after": 60.0})
    async with daemon.client() as client:
        stream = client.start_face_pay("RP1", 102, "goods")
        head = [await anext(stream) for _ in range(3)]
        assert head[-1].state == S.PAYMENT_STATE_PENDING
        reversed_payment = await client.reverse_payment("RP1")
        rest = [e async for e in stream]
    events = head + rest
    check_sequence(events, "RP1")
    assert kinds(events) == list(PENDING_REVERSED)
    assert events[3].state == S.PAYMENT_STATE_REVERSING
    assert events[3].pending.reason == "MANUAL"
    assert reversed_payment.state == S.PAYMENT_STATE_REVERSED
    # Still not before reverse_after (1.5 s) after micropay.
    assert events[-1].time.ToNanoseconds() - events[1].time.ToNanoseconds() >= 1.5e9
    record = ledger(stack, "RP1")
    assert not record.charged
    assert record.reverse_calls == 1


async def test_a_stop_mid_payment_leaves_it_to_the_next_start_which_finishes_it(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    # The grace period is shorter than the payment needs: the rest is left in the journal.
    daemon = await make_daemon(stack, server={"stop_grace": 0.2}, payments={"give_up_after": 60.0})
    async with daemon.client() as client:
        stream = client.start_face_pay("ST1", 102, "goods")
        head = [await anext(stream) for _ in range(3)]
        assert head[-1].state == S.PAYMENT_STATE_PENDING
        assert await daemon.stop() == 0
        with pytest.raises(Exception):  # noqa: B017 - the stream ends with the daemon
            async for _ in stream:
                pass
    record = ledger(stack, "ST1")
    assert record.micropay_calls == 1
    assert record.reverse_calls == 0
    daemon.sections["payments"] = {"give_up_after": 2.0}
    await daemon.start()
    async with daemon.client() as client:
        rest = [e async for e in client.watch_payment("ST1", after_seq=head[-1].seq)]
    events = head + rest
    check_sequence(events, "ST1")
    assert events[-1].state == S.PAYMENT_STATE_REVERSED
    record = ledger(stack, "ST1")
    assert record.micropay_calls == 1, "a resumed payment is queried or reversed, never paid again"
    assert not record.charged
    assert record.reverse_calls >= 1


async def test_untrusted_answers_everywhere_never_make_a_paid_state_and_end_reversed(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    """Micropay and every query answer forged, bombed or oversized: give up, reverse, refund."""
    faults = [
        Scenario.TAMPERED,
        Scenario.UNSIGNED,
        Scenario.XML_BOMB,
        Scenario.DTD_ENTITY,
        Scenario.OVERSIZED,
    ]
    sim = stack.wxpay
    assert sim is not None
    for n, fault in enumerate(faults):
        sim.script(f"UT{n}", fault, times=1000)
    daemon = await make_daemon(stack)

    async def run(n: int) -> list[pb.PaymentEvent]:
        events = []
        async with daemon.client() as client:
            async for event in client.start_face_pay(
                f"UT{n}", 1, "goods", face=pb.FaceOptions(wait_if_busy=True)
            ):
                events.append(event)
                assert event.state != S.PAYMENT_STATE_SUCCEEDED
                if event.state == S.PAYMENT_STATE_REVERSING:
                    # Only now do answers become trustworthy again: the reverse is confirmed.
                    sim.clear_scripts(f"UT{n}")
        return events

    results = await asyncio.gather(*(run(n) for n in range(len(faults))))
    for n, events in enumerate(results):
        check_sequence(events, f"UT{n}")
        assert kinds(events) == list(PENDING_REVERSED), (faults[n], kinds(events))
        assert events[2].pending.reason == "BACKEND_RESPONSE_NOT_TRUSTED"
        record = ledger(stack, f"UT{n}")
        assert record.query_calls >= 2, faults[n]
        assert record.charge_count == 1, faults[n]
        assert record.refunded, faults[n]
        assert not record.charged, faults[n]
