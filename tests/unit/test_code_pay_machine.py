"""Code payments in the payment service: the scanned code is sent once, never kept, and a restart
before micropay cancels the order exactly as it does a face payment's."""

from __future__ import annotations

import gc
import inspect
from pathlib import Path

import httpx
import pytest
import structlog

from facepayd.clock import ManualClock
from facepayd.errors import InvalidArgument
from facepayd.journal import Journal
from facepayd.payments.machine import DAEMON_RESTARTED
from facepayd.payments.models import CodeStart, EventKind, PaymentOrder, PaymentSource, PaymentState
from facepayd.wxpay.models import Merchant, MicropayOrder, TradeResult, TradeState
from facepayd.wxpay.v2 import WxPayV2Client
from tests.helpers import until
from tests.unit.test_payment_machine import FakeBackend, _paid, _service

S = PaymentState
CODE = "134000000000000009"
ORDER = PaymentOrder("C1", 888, "goods", time_start="20250101115900")


async def test_a_code_payment_sends_the_code_once_and_keeps_it_nowhere(tmp_path: Path) -> None:
    clock = ManualClock()
    backend = FakeBackend(clock)
    backend.micropay_answers = [_paid(out_trade_no="C1", total_fee=888)]
    journal = await Journal.open(tmp_path / "j.db", clock=clock)
    service = _service(journal.payments, backend, clock)
    try:
        with structlog.testing.capture_logs() as logs:
            payment, started = await service.start_code_pay(ORDER, CODE)
            assert (started, payment.state, payment.source) == (
                True,
                S.PAYING,
                PaymentSource.CODE,
            )
            await until(lambda: service.unfinished_count() == 0, 10, "the payment task")
            again, started = await service.start_code_pay(ORDER, "134000000000000010")
        assert not started
        assert again.state is S.SUCCEEDED
        assert [o.auth_code for o in backend.orders] == [CODE]  # once, and the re-attach none
        assert backend.orders[0].time_start == ORDER.time_start
        events = await journal.payments.events("C1")
        assert [(e.state, e.kind) for e in events] == [
            (S.PAYING, EventKind.CODE_RECEIVED),
            (S.SUCCEEDED, EventKind.SUCCEEDED),
        ]
        # The capture saw the payment's own lines (so the absence below means something).
        assert [(e["kind"], e["state"]) for e in logs if e["event"] == "payment_event"] == [
            ("code_received", "PAYING"),
            ("succeeded", "SUCCEEDED"),
        ]
        assert all(CODE not in repr(e) for e in logs)
    finally:
        await service.close(0)
        await journal.close()
    assert CODE.encode() not in (tmp_path / "j.db").read_bytes()


async def test_a_restart_between_journaling_and_micropay_cancels_the_code_payment(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    backend = FakeBackend(clock)
    journal = await Journal.open(tmp_path / "j.db", clock=clock)
    # The daemon died right after the journal step: PAYING, micropay never sent, code gone.
    _, start = await journal.payments.begin_code_payment(ORDER)
    assert start is CodeStart.CREATED
    await journal.close()
    journal = await Journal.open(tmp_path / "j.db", clock=clock)
    service = _service(journal.payments, backend, clock)
    try:
        assert await service.resume_unfinished() == 1
        await until(lambda: service.unfinished_count() == 0, 10, "the resumed task")
        payment = await service.get("C1")
        assert (payment.state, payment.pay_sent_at) == (S.CANCELLED, None)
        events = await journal.payments.events("C1")
        assert events[-1].data["reason"] == DAEMON_RESTARTED
        assert backend.count("micropay") == 0
        # The same request again re-attaches to the CANCELLED sale; nothing is sent.
        again, started = await service.start_code_pay(ORDER, CODE)
        assert (started, again.state) == (False, S.CANCELLED)
        assert backend.count("micropay") == 0
    finally:
        await service.close(0)
        await journal.close()


async def test_micropay_refuses_a_device_info_longer_than_the_reference_allows() -> None:
    async with httpx.AsyncClient() as http:
        client = WxPayV2Client(
            Merchant("wx1", "1900000001"),
            "k" * 32,
            "MD5",
            api_base_url="https://127.0.0.1:9",
            authinfo_url="https://127.0.0.1:9/face/get_wxpayface_authinfo",
            http=http,
            secapi_http=None,
            clock=ManualClock(),
        )
        order = MicropayOrder("C1", 1, "goods", auth_code=CODE, device_info="D" * 33)
        with pytest.raises(InvalidArgument, match="device_info"):
            await client.micropay(order)


@pytest.mark.parametrize("source", [PaymentSource.CODE, PaymentSource.FACE])
async def test_the_code_is_referenced_by_nothing_once_micropay_was_sent(
    tmp_path: Path, source: PaymentSource
) -> None:
    clock = ManualClock()
    backend = FakeBackend(clock)
    # WeChat Pay keeps the order open: the payment task lives on, querying.
    backend.micropay_answers = [TradeResult(TradeState.USERPAYING, "C1")]
    journal = await Journal.open(tmp_path / "j.db", clock=clock)
    service = _service(journal.payments, backend, clock)
    code = "".join(["1340", "00000000000077"])  # a string object of this test alone
    try:
        if source is PaymentSource.CODE:
            await service.start_code_pay(ORDER, code)
        else:
            await service.begin(ORDER)
            await service.pay_captured("C1", code, "o-user", "", 1)
        await until(lambda: backend.count("micropay") == 1, 10, "micropay")
        # Settling: the machine sleeps on the clock before its first query.
        await until(lambda: clock.sleepers > 0, 10, "the settle wait")
        assert service.unfinished_count() == 1  # the task still runs
        assert backend.orders.pop().auth_code == code  # the fake's own record of the request
        gc.collect()
        here = inspect.currentframe()
        assert [r for r in gc.get_referrers(code) if r is not here] == []
    finally:
        await service.close(0)
        await journal.close()
