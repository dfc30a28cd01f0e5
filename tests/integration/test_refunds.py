"""Refunds end to end: the real daemon process over gRPC on its Unix socket, the HTTPS simulator."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    RefundExceedsPaidError,
    TerminalClient,
    WrongStateError,
)
from facepayd.sim.daemon_process import DaemonProcess, child_env
from facepayd.sim.refunds import FEE_SCENARIOS, RefundScenario
from facepayd.sim.stack import SimStack
from tests.integration.conftest import DaemonFactory

RS = pb.RefundState
FAST_WXPAY = {"read_timeout": 2.0, "request_timeout": 2.0}
# No refund of ours is in flight 3 s after it went out; FREQUENCY_LIMITED waits attention_retry.
FAST_PAYMENTS = {"in_flight_after": 3.0, "attention_after": 30.0, "attention_retry": 2.0}
SETTLED = {
    RS.REFUND_STATE_SUCCEEDED,
    RS.REFUND_STATE_CLOSED,
    RS.REFUND_STATE_CHANGE,
    RS.REFUND_STATE_FAILED,
    RS.REFUND_STATE_NEEDS_ATTENTION,
}
# What each scenario of the simulator ends as, and its err_code when it fails.
EXPECTED: dict[RefundScenario, tuple[int, str]] = {
    RefundScenario.PROCESSING_THEN_SUCCESS: (RS.REFUND_STATE_SUCCEEDED, ""),
    RefundScenario.NOTENOUGH: (RS.REFUND_STATE_FAILED, "NOTENOUGH"),
    RefundScenario.SYSTEMERROR_THEN_SUCCESS: (RS.REFUND_STATE_SUCCEEDED, ""),
    RefundScenario.SYSTEMERROR_ACCEPTED: (RS.REFUND_STATE_SUCCEEDED, ""),
    RefundScenario.FREQUENCY_LIMITED: (RS.REFUND_STATE_SUCCEEDED, ""),
    RefundScenario.REFUNDCLOSE: (RS.REFUND_STATE_CLOSED, ""),
    RefundScenario.CHANGE: (RS.REFUND_STATE_CHANGE, ""),
    RefundScenario.DROP_CONNECTION: (RS.REFUND_STATE_SUCCEEDED, ""),
    RefundScenario.USER_ACCOUNT_ABNORMAL: (RS.REFUND_STATE_FAILED, "USER_ACCOUNT_ABNORMAL"),
    RefundScenario.BIZERR_NEED_RETRY: (RS.REFUND_STATE_SUCCEEDED, ""),
    RefundScenario.TRADE_OVERDUE: (RS.REFUND_STATE_FAILED, "TRADE_OVERDUE"),
    RefundScenario.QUERY_SYSTEMERROR: (RS.REFUND_STATE_SUCCEEDED, ""),
}


async def pay(client: TerminalClient, out_trade_no: str, amount: int) -> pb.PaymentEvent:
    """A face payment to its end; its last event."""
    face = pb.FaceOptions(wait_if_busy=True)
    events = [e async for e in client.start_face_pay(out_trade_no, amount, "goods", face=face)]
    return events[-1]


async def refund(
    client: TerminalClient, out_trade_no: str, fee: int, out_refund_no: str, **fields: str
) -> list[pb.RefundEvent]:
    """RefundPayment to the end of its stream."""
    return [e async for e in client.refund_payment(out_trade_no, fee, out_refund_no, **fields)]


def check_sequence(events: list[pb.RefundEvent], out_refund_no: str) -> None:
    """seq counts 1..n, every event is ours, only the last one is settled."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), events
    assert all(e.out_refund_no == out_refund_no for e in events)
    assert all(e.state not in SETTLED for e in events[:-1]), events
    assert events[-1].state in SETTLED, events


def no_double_refunds(stack: SimStack) -> None:
    """WeChat Pay's ledger: no refund request arrived for a refund it already had."""
    assert stack.wxpay is not None
    for record in stack.wxpay.refunds.values():
        assert record.duplicate_arrivals == 0, record


async def _daemon(stack: SimStack, make_daemon: DaemonFactory) -> DaemonProcess:
    assert stack.wxpay is not None
    stack.wxpay.refund_desk.processing_seconds = 1.0
    return await make_daemon(stack, wxpay=FAST_WXPAY, payments=FAST_PAYMENTS)


async def test_full_and_partial_refunds_and_an_over_refund_refused_before_sending(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await _daemon(stack, make_daemon)
    assert stack.wxpay is not None
    async with daemon.client() as client:
        assert (await pay(client, "RFP1", 20_000)).state == pb.PAYMENT_STATE_SUCCEEDED
        events = await refund(client, "RFP1", 7101, "RFP1-a", refund_desc="broken cup")
        check_sequence(events, "RFP1-a")
        kinds = [e.WhichOneof("kind") for e in events]
        assert kinds == ["recorded", "sending", "processing", "succeeded"]
        assert events[0].recorded.refund_fee == 7101
        assert events[0].recorded.total_fee == 20_000
        assert events[1].sending.attempt == 1
        done = events[-1].succeeded
        assert done.refund_id.startswith("50")
        assert done.recv_account == "支付用户的零钱"
        assert done.success_time
        # A definite refusal frees the amount; a SYSTEMERROR that was taken is not sent twice.
        failed = await refund(client, "RFP1", 7102, "RFP1-b")
        assert failed[-1].state == RS.REFUND_STATE_FAILED
        assert failed[-1].failed.err_code == "NOTENOUGH"
        taken = await refund(client, "RFP1", 7104, "RFP1-c")
        assert taken[-1].state == RS.REFUND_STATE_SUCCEEDED
        assert stack.wxpay.refunds["RFP1-c"].arrivals == 1
        left = 20_000 - 7101 - 7104
        with pytest.raises(RefundExceedsPaidError) as refused:
            await refund(client, "RFP1", left + 1, "RFP1-d")
        assert refused.value.reason == "REFUND_EXCEEDS_PAID"
        assert f"{left} of 20000" in refused.value.message
        assert "RFP1-d" not in stack.wxpay.refunds, "an over-refund reached WeChat Pay"
        with pytest.raises(NotFoundError):
            await client.get_refund("RFP1-d")
        rest = await refund(client, "RFP1", left, "RFP1-e")
        assert rest[-1].state == RS.REFUND_STATE_SUCCEEDED
        payment = await client.get_payment("RFP1")
        assert payment.refunded_fee == 20_000
        listed = await client.list_refunds("RFP1")
        assert [r.out_refund_no for r in listed.refunds] == [
            "RFP1-a",
            "RFP1-b",
            "RFP1-c",
            "RFP1-e",
        ]
        first = listed.refunds[0]
        assert first.refund_desc == "broken cup"
        assert first.final
        assert first.attempts == 1
        assert first.last_seq == 4
        page = await client.list_refunds("RFP1", page_size=3)
        assert page.next_page_token == "RFP1-c"
        page = await client.list_refunds("RFP1", page_size=3, page_token=page.next_page_token)
        assert [r.out_refund_no for r in page.refunds] == ["RFP1-e"]
        assert (await client.list_payments()).payments[0].refunded_fee == 20_000
        # A refunded payment is never reversed: refused before anything is sent.
        with pytest.raises(WrongStateError) as not_reversed:
            await client.reverse_payment("RFP1")
        assert "has refunds" in not_reversed.value.message
        assert (await client.get_payment("RFP1")).state == pb.PAYMENT_STATE_SUCCEEDED
        assert stack.wxpay.reverses("RFP1") == ()
        status = await client.get_status()
        assert (status.unfinished_refunds, status.needs_attention_refunds) == (0, 0)
    assert stack.wxpay.refund_desk.refunded_fee("RFP1") == 20_000
    no_double_refunds(stack)


async def test_every_refund_scenario_ends_as_documented(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await _daemon(stack, make_daemon)
    assert stack.wxpay is not None
    assert set(EXPECTED) == set(FEE_SCENARIOS.values())
    async with daemon.client() as client:
        numbers = {fee: f"RFS{n:02d}" for n, fee in enumerate(sorted(FEE_SCENARIOS))}
        for no in numbers.values():
            assert (await pay(client, no, 8000)).state == pb.PAYMENT_STATE_SUCCEEDED
        results = await asyncio.gather(
            *(refund(client, no, fee, f"{no}-r") for fee, no in numbers.items())
        )
        for (fee, no), events in zip(numbers.items(), results, strict=True):
            scenario = FEE_SCENARIOS[fee]
            state, err_code = EXPECTED[scenario]
            check_sequence(events, f"{no}-r")
            assert (scenario, events[-1].state) == (scenario, state)
            stored = await client.get_refund(f"{no}-r")
            assert stored.state == state
            assert stored.err_code == err_code
            if state == RS.REFUND_STATE_CHANGE:
                assert stored.attention_reason == "REFUND_CHANGE"
                assert "merchant platform" in stored.attention_action
                assert stored.recv_account
            record = stack.wxpay.refunds.get(f"{no}-r")
            if state == RS.REFUND_STATE_FAILED:
                assert record is None, f"{scenario} created a refund"
            else:
                assert record is not None
                assert record.refund_fee == fee
            paid_back = 0 if state != RS.REFUND_STATE_SUCCEEDED else fee
            assert (await client.get_payment(no)).refunded_fee == paid_back
    no_double_refunds(stack)


async def test_same_number_re_attaches_and_every_rule_is_checked_before_anything_is_recorded(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await _daemon(stack, make_daemon)
    assert stack.wxpay is not None
    async with daemon.client() as client:
        await pay(client, "RFA1", 1000)
        first = await refund(client, "RFA1", 400, "RFA1|r@1", refund_desc="x")
        again = await refund(client, "RFA1", 400, "RFA1|r@1", refund_desc="x")
        assert [e.seq for e in again] == [e.seq for e in first]
        assert again[-1].state == RS.REFUND_STATE_SUCCEEDED
        assert stack.wxpay.refunds["RFA1|r@1"].arrivals == 1
        with pytest.raises(AlreadyExistsError, match="refund_fee"):
            await refund(client, "RFA1", 401, "RFA1|r@1", refund_desc="x")
        replay = [e.seq async for e in client.watch_refund("RFA1|r@1", after_seq=2)]
        assert replay == list(range(3, first[-1].seq + 1))
        with pytest.raises(InvalidArgumentError) as bad:
            await refund(client, "RFA1", 0, "no spaces", refund_desc="退" * 27)
        fields = {field for field, _ in bad.value.field_violations}
        assert fields == {"refund_fee", "out_refund_no", "refund_desc"}
        with pytest.raises(InvalidArgumentError):
            await refund(client, "RFA1", 1, "R" * 65)
        with pytest.raises(InvalidArgumentError):
            await refund(client, "RFA1", 1, "RFA1-acct", refund_account="MY_POCKET")
        with pytest.raises(NotFoundError):
            await refund(client, "NOSUCH", 1, "RFA1-x")
        # Nothing was paid: nothing can be refunded (NOTENOUGH at micropay).
        assert (await pay(client, "RFA2", 301)).state == pb.PAYMENT_STATE_FAILED
        with pytest.raises(WrongStateError, match="FAILED"):
            await refund(client, "RFA2", 1, "RFA2-r")
        with pytest.raises(NotFoundError):
            await client.list_refunds("NOSUCH")
    assert set(stack.wxpay.refunds) == {"RFA1|r@1"}


async def test_a_refund_in_progress_is_resumed_after_a_restart_and_never_sent_twice(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await _daemon(stack, make_daemon)
    assert stack.wxpay is not None
    stack.wxpay.refund_desk.processing_seconds = 4.0
    async with daemon.client() as client:
        await pay(client, "RFK1", 8000)
        async for event in client.refund_payment("RFK1", 7101, "RFK1-r"):
            if event.state == RS.REFUND_STATE_PROCESSING:
                break
    await daemon.kill()
    await daemon.start()
    async with daemon.client() as client:
        events = [e async for e in client.watch_refund("RFK1-r")]
        assert events[-1].state == RS.REFUND_STATE_SUCCEEDED
        assert [e.WhichOneof("kind") for e in events].count("sending") == 1
    assert stack.wxpay.refunds["RFK1-r"].arrivals == 1


async def test_facepay_payment_refund_follows_the_refund_and_lists_it(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await _daemon(stack, make_daemon)
    async with daemon.client() as client:
        await pay(client, "RFC1", 1000)
    base = [sys.executable, "-m", "facepay_client.cli", "--socket", str(daemon.socket)]

    async def run(*argv: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            *base, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env()
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, err = await run(
        "payment", "refund", "RFC1", "--fee", "250", "--reason", "cold coffee"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("out_refund_no: RF")
    states = [line.split()[2] for line in lines[1:] if line.startswith("#")]
    assert states[0] == "RECORDED"
    assert states[-1] == "SUCCEEDED"
    code, out, err = await run("--json", "payment", "refund", "RFC1", "--fee", "751")
    assert code == 1, err
    assert json.loads(out.splitlines()[-1])["error"]["reason"] == "REFUND_EXCEEDS_PAID"
    code, out, err = await run("--json", "payment", "refunds", "RFC1")
    assert code == 0, err
    (page,) = [json.loads(line) for line in out.splitlines()]
    assert [r["state"] for r in page["refunds"]] == ["SUCCEEDED"]
    assert page["refunds"][0]["refund_fee"] == 250
