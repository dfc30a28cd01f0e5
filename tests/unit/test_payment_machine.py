"""The micropay state machine and the payment service, against a fake backend and a manual clock."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import structlog

from facepayd.clock import ManualClock
from facepayd.errors import (
    AlreadyExists,
    BackendRejected,
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    JournalError,
    ResponseNotTrusted,
    WrongState,
)
from facepayd.journal import Journal
from facepayd.payments.machine import PaymentTimings
from facepayd.payments.models import EventKind, Payment, PaymentEvent, PaymentOrder, PaymentState
from facepayd.payments.service import PaymentService
from facepayd.wxpay.models import MicropayOrder, ReverseResult, TradeResult, TradeState
from tests.helpers import until

T = TypeVar("T")

FACE_CODE = "face-code-5e3b9d0c1a7f"
FEE = 888

Answer = TradeResult | ReverseResult | Exception


def _paid(**overrides: object) -> TradeResult:
    fields: dict[str, object] = {
        "state": TradeState.SUCCESS,
        "out_trade_no": "T1",
        "transaction_id": "4200000001",
        "openid": "o-user",
        "bank_type": "CMC",
        "total_fee": FEE,
        "cash_fee": FEE,
        "fee_type": "CNY",
        "time_end": "20250101120000",
    }
    fields.update(overrides)
    return TradeResult(**fields)  # type: ignore[arg-type]


USERPAYING = TradeResult(TradeState.USERPAYING, err_code="USERPAYING")
RECALL = ReverseResult(succeeded=False, recall=True, err_code="SYSTEMERROR")
REVERSED_OK = ReverseResult(succeeded=True, recall=False)


@dataclass
class FakeBackend:
    """A PaymentBackend that plays scripted answers and records when each call came."""

    clock: ManualClock
    micropay_answers: list[Answer] = field(default_factory=list)
    query_answers: list[Answer] = field(default_factory=list)
    reverse_answers: list[Answer] = field(default_factory=list)
    # Answered once the scripts run out.
    query_default: Answer = USERPAYING
    reverse_default: Answer = REVERSED_OK
    calls: list[tuple[str, float]] = field(default_factory=list)
    orders: list[MicropayOrder] = field(default_factory=list)
    # (call, out_trade_no, transaction_id) of every orderquery and reverse.
    keys: list[tuple[str, str, str]] = field(default_factory=list)
    micropay_gate: asyncio.Event | None = None

    def times(self, name: str) -> list[float]:
        return [t for n, t in self.calls if n == name]

    def count(self, name: str) -> int:
        return len(self.times(name))

    async def micropay(self, order: MicropayOrder) -> TradeResult:
        self.calls.append(("micropay", self.clock.time()))
        self.orders.append(order)
        if self.micropay_gate is not None:
            await self.micropay_gate.wait()
        return _answer(self.micropay_answers.pop(0), TradeResult)

    async def orderquery(self, *, out_trade_no: str = "", transaction_id: str = "") -> TradeResult:
        self.calls.append(("orderquery", self.clock.time()))
        self.keys.append(("orderquery", out_trade_no, transaction_id))
        answer = self.query_answers.pop(0) if self.query_answers else self.query_default
        return _answer(answer, TradeResult)

    async def reverse(self, *, out_trade_no: str, transaction_id: str = "") -> ReverseResult:
        self.calls.append(("reverse", self.clock.time()))
        self.keys.append(("reverse", out_trade_no, transaction_id))
        answer = self.reverse_answers.pop(0) if self.reverse_answers else self.reverse_default
        return _answer(answer, ReverseResult)


def _answer(answer: Answer, kind: type[T]) -> T:
    if isinstance(answer, Exception):
        raise answer
    assert isinstance(answer, kind)
    return answer


@dataclass
class Rig:
    clock: ManualClock
    backend: FakeBackend
    journal: Journal
    service: PaymentService
    path: Path
    t0: float

    async def start(self, out_trade_no: str = "T1") -> None:
        """A face payment up to micropay, as the face-pay flow drives it."""
        payment, created = await self.service.begin(
            PaymentOrder(out_trade_no=out_trade_no, total_fee=FEE, body="goods"), session_id="s1"
        )
        assert created
        assert payment.state is PaymentState.CAPTURING
        await self.service.pay_captured(out_trade_no, FACE_CODE, "o-user", "", 1)

    async def run_until(self, predicate: Callable[[], bool], step: float = 1.0) -> None:
        """Advance the clock step by step whenever the payment sleeps, until predicate holds."""
        for _ in range(1000):
            await until(lambda: predicate() or self.clock.sleepers > 0, 5, "payment to sleep")
            if predicate():
                return
            await self.clock.advance(step)
        raise AssertionError("predicate never held")

    async def final(self, out_trade_no: str = "T1") -> Payment:
        """Run the clock until the payment is final and its task gone, or NEEDS_ATTENTION."""
        done: list[Payment] = []

        async def wait() -> None:
            done.append(await self.service.wait_final(out_trade_no))

        def settled() -> bool:
            if not done:
                return False
            return done[0].state is S.NEEDS_ATTENTION or self.service.unfinished_count() == 0

        waiter = asyncio.ensure_future(wait())
        await self.run_until(settled)
        await waiter
        return done[0]

    async def kinds(self, out_trade_no: str = "T1") -> list[tuple[PaymentState, EventKind]]:
        return [(e.state, e.kind) for e in await self.journal.payments.events(out_trade_no)]

    async def reasons(self, out_trade_no: str = "T1") -> list[str | int]:
        return [
            e.data["reason"]
            for e in await self.journal.payments.events(out_trade_no)
            if "reason" in e.data
        ]


def _service(
    journal: Journal, backend: FakeBackend, clock: ManualClock, **timings: float
) -> PaymentService:
    return PaymentService(journal, backend, clock, PaymentTimings(**timings), "10.0.0.7", "POS-1")


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    timings: dict[str, float] = getattr(request, "param", {})
    clock = ManualClock()
    backend = FakeBackend(clock)
    path = tmp_path / "journal.db"
    journal = await Journal.open(path, clock=clock)
    service = _service(journal.payments, backend, clock, **timings)
    yield Rig(clock, backend, journal, service, path, clock.time())
    await service.close(0)
    await journal.close()


S = PaymentState
K = EventKind


async def test_instant_success(rig: Rig) -> None:
    rig.backend.micropay_answers = [_paid()]
    await rig.start()
    payment = await rig.final()
    assert payment.state is S.SUCCEEDED
    assert (payment.transaction_id, payment.cash_fee, payment.bank_type) == (
        "4200000001",
        FEE,
        "CMC",
    )
    assert rig.backend.count("orderquery") == rig.backend.count("reverse") == 0
    sent = rig.backend.orders[0]
    assert (sent.out_trade_no, sent.total_fee, sent.auth_code) == ("T1", FEE, FACE_CODE)
    assert (sent.spbill_create_ip, sent.device_info) == ("10.0.0.7", "POS-1")
    assert payment.pay_sent_at == rig.t0
    assert await rig.kinds() == [
        (S.CAPTURING, K.SESSION_STARTED),
        (S.PAYING, K.FACE_CAPTURED),
        (S.SUCCEEDED, K.SUCCEEDED),
    ]


async def test_userpaying_then_success_queries_every_poll_interval(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_answers = [USERPAYING, USERPAYING, _paid()]
    await rig.start()
    payment = await rig.final()
    assert payment.state is S.SUCCEEDED
    assert rig.backend.times("orderquery") == [rig.t0 + 5, rig.t0 + 10, rig.t0 + 15]
    assert await rig.kinds() == [
        (S.CAPTURING, K.SESSION_STARTED),
        (S.PAYING, K.FACE_CAPTURED),
        (S.PENDING, K.PENDING),
        (S.SUCCEEDED, K.SUCCEEDED),
    ]
    assert await rig.reasons() == ["USERPAYING"]


async def test_userpaying_forever_reverses_at_give_up(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    await rig.start()
    payment = await rig.final()
    assert payment.state is S.REVERSED
    assert rig.backend.times("orderquery") == [rig.t0 + 5 * i for i in range(1, 7)]
    assert rig.backend.times("reverse") == [rig.t0 + 30]
    assert rig.backend.count("micropay") == 1
    assert [state for state, _ in await rig.kinds()][-3:] == [S.PENDING, S.REVERSING, S.REVERSED]
    assert await rig.reasons() == ["USERPAYING", "TIMEOUT", "TIMEOUT"]


@pytest.mark.parametrize("rig", [{"give_up_after": 6.0}], indirect=True)
async def test_reverse_never_sooner_than_reverse_after(rig: Rig) -> None:
    rig.backend.micropay_answers = [BackendUnavailable("micropay: timed out")]
    await rig.start()
    await rig.run_until(lambda: rig.backend.count("orderquery") == 3)
    await until(lambda: rig.clock.sleepers > 0)
    assert rig.backend.times("orderquery") == [rig.t0, rig.t0 + 5, rig.t0 + 6]
    # Journaled before waiting out reverse_after; the reverse itself has not been called.
    assert (await rig.journal.payments.get("T1")).state is S.REVERSING
    assert rig.backend.count("reverse") == 0
    payment = await rig.final()
    assert payment.state is S.REVERSED
    assert rig.backend.times("reverse") == [rig.t0 + 15]


async def test_systemerror_then_query_success(rig: Rig) -> None:
    rig.backend.micropay_answers = [TradeResult(TradeState.UNKNOWN, err_code="SYSTEMERROR")]
    rig.backend.query_answers = [_paid()]
    await rig.start()
    assert (await rig.final()).state is S.SUCCEEDED
    # An unknown outcome is queried at once, not after a poll interval.
    assert rig.backend.times("orderquery") == [rig.t0]
    assert await rig.reasons() == ["SYSTEMERROR"]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (BackendUnavailable("micropay: timed out"), "BACKEND_UNAVAILABLE"),
        (
            ResponseNotTrusted("micropay: answer signature is missing or wrong"),
            "BACKEND_RESPONSE_NOT_TRUSTED",
        ),
    ],
)
async def test_micropay_error_leads_to_query(rig: Rig, error: Exception, reason: str) -> None:
    rig.backend.micropay_answers = [error]
    rig.backend.query_answers = [
        TradeResult(TradeState.NOT_EXIST, err_code="ORDERNOTEXIST"),
        _paid(),
    ]
    await rig.start()
    assert (await rig.final()).state is S.SUCCEEDED
    assert rig.backend.count("micropay") == 1
    assert rig.backend.times("orderquery") == [rig.t0, rig.t0 + 5]
    assert await rig.reasons() == [reason]


async def test_untrusted_answers_are_never_taken_as_paid(rig: Rig) -> None:
    # A forged SUCCESS is refused by the client (ResponseNotTrusted); an answer for another
    # order number is ignored by the machine.
    rig.backend.micropay_answers = [
        ResponseNotTrusted("micropay: answer signature is missing or wrong")
    ]
    rig.backend.query_answers = [
        ResponseNotTrusted("orderquery: answer signature is missing or wrong"),
        _paid(out_trade_no="OTHER"),
    ]
    rig.backend.query_default = ResponseNotTrusted("orderquery: forged")
    await rig.start()
    payment = await rig.final()
    assert payment.state is S.REVERSED
    assert S.SUCCEEDED not in [state for state, _ in await rig.kinds()]
    assert rig.backend.times("reverse") == [rig.t0 + 30]


async def test_micropay_success_for_another_amount_is_queried(rig: Rig) -> None:
    rig.backend.micropay_answers = [_paid(total_fee=1)]
    rig.backend.query_answers = [_paid()]
    await rig.start()
    assert (await rig.final()).state is S.SUCCEEDED
    assert await rig.reasons() == ["RESPONSE_MISMATCH"]


@pytest.mark.parametrize("code", ["NOTENOUGH", "AUTHCODEEXPIRE", "ORDERREVERSED"])
async def test_definite_failures_fail_without_query(rig: Rig, code: str) -> None:
    rig.backend.micropay_answers = [
        TradeResult(TradeState.FAILED, err_code=code, err_code_des="no")
    ]
    await rig.start()
    payment = await rig.final()
    assert payment.state is S.FAILED
    assert (payment.err_code, payment.err_code_des) == (code, "no")
    assert rig.backend.count("orderquery") == rig.backend.count("reverse") == 0
    events = await rig.journal.payments.events("T1")
    assert events[-1].data == {"err_code": code, "description": "no"}


@pytest.mark.parametrize("state", [TradeState.FAILED, TradeState.UNKNOWN])
async def test_orderpaid_is_queried_not_failed(rig: Rig, state: TradeState) -> None:
    rig.backend.micropay_answers = [TradeResult(state, err_code="ORDERPAID")]
    rig.backend.query_answers = [_paid()]
    await rig.start()
    assert (await rig.final()).state is S.SUCCEEDED


@pytest.mark.parametrize(
    "refusal",
    [
        InvalidArgument("body", "must not contain characters XML 1.0 cannot carry"),
        ConfigError("unsupported sign_type"),
    ],
)
async def test_micropay_refused_by_the_client_before_sending_fails_without_a_query(
    rig: Rig, refusal: Exception
) -> None:
    rig.backend.micropay_answers = [refusal]
    await rig.start()
    payment = await rig.final()
    assert (payment.state, payment.err_code) == (S.FAILED, "NOT_SENT")
    assert "nothing was charged" in payment.err_code_des
    assert rig.backend.count("orderquery") == rig.backend.count("reverse") == 0


async def test_failed_without_a_listed_code_is_not_taken_as_unpaid(rig: Rig) -> None:
    rig.backend.micropay_answers = [TradeResult(TradeState.FAILED, err_code="SOMETHING_NEW")]
    rig.backend.query_answers = [_paid()]
    await rig.start()
    assert (await rig.final()).state is S.SUCCEEDED


@pytest.mark.parametrize(
    ("trade_state", "final", "err_code"),
    [
        (TradeState.CLOSED, S.FAILED, "CLOSED"),
        (TradeState.PAYERROR, S.FAILED, "PAYERROR"),
        (TradeState.REVOKED, S.REVERSED, ""),
    ],
)
async def test_query_final_states(
    rig: Rig, trade_state: TradeState, final: PaymentState, err_code: str
) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_answers = [TradeResult(trade_state, out_trade_no="T1")]
    await rig.start()
    payment = await rig.final()
    assert (payment.state, payment.err_code) == (final, err_code)
    assert rig.backend.count("reverse") == 0


NOT_EXIST = TradeResult(TradeState.NOT_EXIST, err_code="ORDERNOTEXIST")
TRADE_ERROR = ReverseResult(False, False, "TRADE_ERROR", "refused")


@pytest.mark.parametrize("rig", [{"in_flight_after": 20.0}], indirect=True)
async def test_never_reached_wechat_pay_is_closed_after_one_reverse_attempt(rig: Rig) -> None:
    rig.backend.micropay_answers = [BackendUnavailable("micropay: timed out")]
    rig.backend.query_default = NOT_EXIST
    rig.backend.reverse_default = TRADE_ERROR  # what a cautious WeChat Pay says to an unknown order
    await rig.start()
    payment = await rig.final()
    assert payment.state is S.CLOSED
    assert payment.final
    # Queried until no micropay of ours can still arrive, then one reverse, then closed.
    assert rig.backend.times("orderquery") == [rig.t0 + t for t in (0, 5, 10, 15, 20, 20)]
    assert rig.backend.times("reverse") == [rig.t0 + 20]
    events = await rig.journal.payments.events("T1")
    assert [(e.state, e.kind) for e in events[-2:]] == [
        (S.REVERSING, K.PENDING),
        (S.CLOSED, K.CLOSED),
    ]
    assert events[-2].data["reason"] == "ORDER_NOT_FOUND"
    assert events[-1].data["reason"] == "NEVER_REACHED_WECHAT_PAY"


@pytest.mark.parametrize("rig", [{"in_flight_after": 20.0}], indirect=True)
async def test_not_exist_is_reversed_no_sooner_than_reverse_after(rig: Rig) -> None:
    rig.backend.micropay_answers = [BackendUnavailable("micropay: timed out")]
    rig.backend.query_default = NOT_EXIST
    rig.backend.reverse_default = REVERSED_OK
    await rig.start()
    assert (await rig.final()).state is S.REVERSED
    assert rig.backend.times("reverse") == [rig.t0 + 20]


async def test_restart_after_pay_sent_but_before_the_request_left_ends_closed(rig: Rig) -> None:
    await _journaled(rig, S.PAYING, sent=True)  # killed right after journaling pay_sent_at
    rig.backend.query_default = NOT_EXIST
    rig.backend.reverse_default = TRADE_ERROR
    await rig.clock.advance(2)
    assert await rig.service.resume_unfinished() == 1
    payment = await rig.final()
    assert payment.state is S.CLOSED
    assert rig.backend.count("micropay") == 0
    assert rig.backend.times("reverse") == [rig.t0 + 30]
    assert rig.backend.count("reverse") == 1


@pytest.mark.parametrize("code", ["SIGNERROR", "XML_FORMAT_ERROR"])
async def test_micropay_return_code_fail_is_queried_at_once_and_not_exist_fails_it(
    rig: Rig, code: str
) -> None:
    rig.backend.micropay_answers = [TradeResult(TradeState.REJECTED, "T1", code, "refused")]
    rig.backend.query_default = NOT_EXIST
    await rig.start()
    payment = await rig.final()
    assert (payment.state, payment.err_code) == (S.FAILED, code)
    assert rig.backend.times("orderquery") == [rig.t0]
    assert rig.backend.count("reverse") == 0
    assert await rig.reasons() == [code]


async def test_micropay_return_code_fail_raised_as_rejected_is_the_same_outcome(rig: Rig) -> None:
    rig.backend.micropay_answers = [BackendRejected("SIGNERROR", "bad signature")]
    rig.backend.query_answers = [_paid()]  # unsigned, so never proof: the query decides
    await rig.start()
    assert (await rig.final()).state is S.SUCCEEDED
    assert rig.backend.times("orderquery") == [rig.t0]


# ---------------------------------------------------------------- someone else's order


@pytest.mark.parametrize("code", ["ORDERPAID", "OUT_TRADE_NO_USED"])
@pytest.mark.parametrize(
    "foreign",
    [_paid(openid="o-someone-else"), _paid(total_fee=FEE + 1), _paid(total_fee=FEE + 1, openid="")],
)
async def test_a_number_paid_by_another_order_fails_and_is_never_reversed(
    rig: Rig, code: str, foreign: TradeResult
) -> None:
    rig.backend.micropay_answers = [TradeResult(TradeState.FAILED, "T1", code, "used")]
    rig.backend.query_default = foreign
    await rig.start()
    payment = await rig.final()
    assert (payment.state, payment.err_code) == (S.FAILED, "OUT_TRADE_NO_USED")
    assert payment.transaction_id == ""
    assert rig.backend.times("orderquery") == [rig.t0]
    assert rig.backend.count("reverse") == 0
    with pytest.raises(WrongState):
        await rig.service.reverse("T1")
    assert rig.backend.count("reverse") == 0


async def test_after_systemerror_a_paid_answer_for_another_payer_is_not_ours(rig: Rig) -> None:
    rig.backend.micropay_answers = [TradeResult(TradeState.UNKNOWN, "T1", "SYSTEMERROR")]
    rig.backend.query_default = _paid(openid="o-someone-else")
    await rig.start()
    payment = await rig.final()
    assert (payment.state, payment.err_code) == (S.FAILED, "OUT_TRADE_NO_USED")
    await rig.clock.advance(100)
    assert rig.backend.count("reverse") == 0


@pytest.mark.parametrize(
    "answer",
    [
        _paid(state=TradeState.REFUND, openid="o-someone-else"),
        _paid(state=TradeState.REFUND, total_fee=FEE + 1),
        _paid(state=TradeState.USERPAYING, total_fee=FEE + 1, transaction_id=""),
        _paid(state=TradeState.NOTPAY, openid="o-someone-else", transaction_id=""),
    ],
    ids=[
        "refunded-other-payer",
        "refunded-other-amount",
        "userpaying-other-amount",
        "notpay-other",
    ],
)
async def test_after_a_lost_answer_another_sale_under_our_number_is_never_ours_nor_reversed(
    rig: Rig, answer: TradeResult
) -> None:
    rig.backend.micropay_answers = [BackendUnavailable("micropay: timed out")]
    rig.backend.query_default = answer
    await rig.start()
    payment = await rig.final()
    assert (payment.state, payment.err_code) == (S.FAILED, "OUT_TRADE_NO_USED")
    await rig.clock.advance(100)
    assert rig.backend.count("reverse") == 0


async def test_a_used_number_that_cannot_be_checked_needs_attention_and_is_never_reversed(
    rig: Rig,
) -> None:
    rig.backend.micropay_answers = [TradeResult(TradeState.FAILED, "T1", "ORDERPAID", "paid")]
    rig.backend.query_default = BackendUnavailable("orderquery: timed out")
    await rig.start()
    payment = await rig.final()
    assert payment.state is S.NEEDS_ATTENTION
    assert payment.attention_reason == "OUT_TRADE_NO_USED"
    assert "new out_trade_no" in payment.attention_action
    assert rig.service.needs_attention_count() == 1
    with pytest.raises(WrongState, match="never reversed"):
        await rig.service.reverse("T1")
    # Still checked, slowly; and once the query answers, the other order is not ours.
    rig.backend.query_default = _paid(openid="o-someone-else")
    await rig.run_until(lambda: rig.service.unfinished_count() == 0, step=10)
    payment = await rig.journal.payments.get("T1")
    assert (payment.state, payment.err_code) == (S.FAILED, "OUT_TRADE_NO_USED")
    assert rig.backend.count("reverse") == 0
    assert rig.service.needs_attention_count() == 0


# ---------------------------------------------------------------- bounded liveness


async def test_a_definite_reverse_refusal_ends_the_reversing_and_the_query_decides(
    rig: Rig,
) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.reverse_default = TRADE_ERROR
    await rig.start()
    payment = await rig.final()  # the query still says USERPAYING: an operator must look
    assert payment.state is S.NEEDS_ATTENTION
    assert (payment.attention_reason, payment.attention_action) == (
        "REVERSE_REFUSED",
        "check the order and the merchant account in the merchant platform, and refund it"
        " there if the customer was charged",
    )
    assert rig.backend.times("reverse") == [rig.t0 + 30]
    events = await rig.journal.payments.events("T1")
    assert events[-1].kind is K.NEEDS_ATTENTION
    assert events[-1].data["description"] == "reverse was refused: TRADE_ERROR refused"
    # Retried by query at the slow cadence, doubling up to its cap; never reversed again.
    queries_before = rig.backend.count("orderquery")
    await rig.run_until(lambda: rig.backend.count("orderquery") == queries_before + 6, step=30)
    times = rig.backend.times("orderquery")[queries_before - 1 :]
    assert [b - a for a, b in itertools.pairwise(times)] == [60, 120, 240, 480, 900, 900]
    assert rig.backend.count("reverse") == 1
    rig.backend.query_default = TradeResult(TradeState.CLOSED, "T1")
    await rig.run_until(lambda: rig.service.unfinished_count() == 0, step=60)
    assert (await rig.journal.payments.get("T1")).state is S.FAILED


async def test_reverse_expire_needs_attention_with_refund_as_the_action(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_answers = [*[USERPAYING] * 6, _paid()]
    rig.backend.query_default = _paid()
    rig.backend.reverse_default = ReverseResult(False, False, "REVERSE_EXPIRE", "too old")
    await rig.start()
    payment = await rig.final()
    assert payment.state is S.NEEDS_ATTENTION
    assert payment.attention_reason == "REVERSE_EXPIRE"
    assert payment.attention_action.startswith("refund it")
    assert rig.backend.count("reverse") == 1
    assert rig.service.needs_attention_count() == 1
    # Still paid at every slow retry: it stays NEEDS_ATTENTION, the refund is the operator's.
    await rig.clock.advance(1000)
    await until(lambda: rig.clock.sleepers > 0)
    assert (await rig.journal.payments.get("T1")).state is S.NEEDS_ATTENTION
    assert rig.backend.count("reverse") == 1


async def test_a_payment_too_old_to_reverse_settles_succeeded_once_refunded(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_answers = [*[USERPAYING] * 6, _paid()]
    rig.backend.query_default = _paid()
    rig.backend.reverse_default = ReverseResult(False, False, "REVERSE_EXPIRE", "too old")
    await rig.start()
    assert (await rig.final()).attention_reason == "REVERSE_EXPIRE"
    # Refunded (the daemon's RefundPayment): orderquery now says REFUND.
    rig.backend.query_default = _paid(state=TradeState.REFUND, trade_state="REFUND")
    await rig.run_until(lambda: rig.service.unfinished_count() == 0, step=60)
    payment = await rig.journal.payments.get("T1")
    assert payment.state is S.SUCCEEDED
    assert payment.attention_reason == ""
    last = (await rig.journal.payments.events("T1"))[-1]
    assert (last.kind, last.data["reason"], last.data["trade_state"]) == (
        K.SUCCEEDED,
        "REFUNDED",
        "REFUND",
    )
    assert rig.backend.count("reverse") == 1
    assert rig.service.needs_attention_count() == 0


@pytest.mark.parametrize("rig", [{"reverse_backoff_max": 8.0}], indirect=True)
async def test_a_reverse_never_confirmed_needs_attention_at_the_bound_then_retries_slowly(
    rig: Rig,
) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.reverse_default = RECALL
    await rig.start()
    payment = await rig.final()
    assert payment.state is S.NEEDS_ATTENTION
    assert payment.attention_reason == "UNRESOLVED"
    assert payment.updated_at == rig.t0 + 120  # exactly at attention_after
    in_bound = rig.backend.times("reverse")
    assert in_bound[0] == rig.t0 + 30
    assert all(t <= rig.t0 + 120 for t in in_bound)
    assert [b - a for a, b in itertools.pairwise(in_bound)][:5] == [1, 2, 4, 8, 8]
    # Then reverse is still called, at the slow, capped cadence: never a tight loop.
    await rig.run_until(lambda: rig.backend.count("reverse") == len(in_bound) + 6, step=30)
    slow = rig.backend.times("reverse")[len(in_bound) - 1 :]
    assert [b - a for a, b in itertools.pairwise(slow)] == [60, 120, 240, 480, 900, 900]
    rig.backend.reverse_default = REVERSED_OK
    await rig.run_until(lambda: rig.service.unfinished_count() == 0, step=60)
    payment = await rig.journal.payments.get("T1")
    assert (payment.state, payment.attention_reason) == (S.REVERSED, "")
    assert (await rig.journal.payments.events("T1"))[-1].data == {"reason": "TIMEOUT"}
    assert rig.service.needs_attention_count() == 0


async def test_needs_attention_is_resumed_after_a_restart(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.reverse_default = TRADE_ERROR
    await rig.start()
    assert (await rig.final()).state is S.NEEDS_ATTENTION
    await rig.service.close(0)
    await rig.journal.close()
    rig.journal = await Journal.open(rig.path, clock=rig.clock)
    rig.service = _service(rig.journal.payments, rig.backend, rig.clock)
    rig.backend.query_default = _paid()
    assert await rig.service.resume_unfinished() == 1
    assert rig.service.needs_attention_count() == 1
    await rig.run_until(lambda: rig.service.unfinished_count() == 0)
    payment = await rig.journal.payments.get("T1")
    assert (payment.state, payment.attention_reason) == (S.SUCCEEDED, "")
    # The first retry after a restart comes at once.
    assert rig.backend.times("orderquery")[-1] == rig.clock.time()
    assert rig.service.needs_attention_count() == 0


async def test_query_and_reverse_use_the_transaction_id_once_known(rig: Rig) -> None:
    rig.backend.micropay_answers = [_paid()]
    rig.backend.reverse_answers = [TRADE_ERROR]
    rig.backend.query_default = _paid()
    await rig.start()
    await rig.final()
    reversal = asyncio.ensure_future(rig.service.reverse("T1"))
    await rig.run_until(reversal.done)
    with pytest.raises(BackendRejected):
        await reversal
    assert rig.backend.keys == [
        ("reverse", "T1", "4200000001"),
        ("orderquery", "T1", "4200000001"),
    ]


# ---------------------------------------------------------------- journal errors


def _deny_writes(action: int, *_args: object) -> int:
    return sqlite3.SQLITE_DENY if action in _WRITES else sqlite3.SQLITE_OK


_WRITES = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}


async def _writes(rig: Rig, allowed: bool) -> None:
    db = rig.journal.database
    authorizer = None if allowed else _deny_writes
    await db.run(lambda: db.connection.set_authorizer(authorizer))


async def test_a_state_that_cannot_be_journaled_never_sends_its_call(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    await rig.start()
    await rig.run_until(lambda: rig.backend.count("orderquery") == 5)  # t0 + 25
    await _writes(rig, allowed=False)
    with structlog.testing.capture_logs() as logs:
        await rig.clock.advance(5)  # give-up: REVERSING cannot be journaled
        await until(lambda: any(e["event"] == "payment_journal_unavailable" for e in logs))
        for _ in range(4):
            await rig.clock.advance(30)  # the service retries from the journal, capped
            await until(lambda: rig.clock.sleepers > 0)
    assert rig.backend.count("reverse") == 0
    assert (await rig.journal.payments.get("T1")).state is S.PENDING
    retries = [e for e in logs if e["event"] == "payment_journal_unavailable"]
    assert [e["retry_in"] for e in retries][:4] == [1, 2, 4, 8]
    await _writes(rig, allowed=True)
    payment = await rig.final()
    assert payment.state is S.REVERSED
    assert rig.backend.count("micropay") == 1


async def test_micropay_is_not_sent_when_pay_sent_cannot_be_journaled(rig: Rig) -> None:
    await rig.service.begin(PaymentOrder("T1", FEE, "goods"))
    await _writes(rig, allowed=False)
    with pytest.raises(JournalError):
        await rig.service.pay_captured("T1", FACE_CODE, "o-user", "", 1)
    # The payment task settles it from the journal once it writes again; it never pays.
    await until(lambda: rig.clock.sleepers > 0)
    await rig.clock.advance(4)
    assert rig.backend.count("micropay") == 0
    await _writes(rig, allowed=True)
    payment = await rig.final()
    assert payment.state is S.CANCELLED
    assert payment.pay_sent_at is None
    assert rig.backend.calls == []


async def test_the_face_capture_and_the_pay_sent_mark_are_one_commit(rig: Rig) -> None:
    rig.backend.micropay_gate = asyncio.Event()  # micropay hangs: look at what came before it
    await rig.service.begin(PaymentOrder("T1", FEE, "goods"))
    db = rig.journal.database
    statements: list[str] = []
    await db.run(lambda: db.connection.set_trace_callback(statements.append))
    await rig.service.pay_captured("T1", FACE_CODE, "o-user", "", 1)
    await until(lambda: rig.backend.count("micropay") == 1)
    await db.run(lambda: db.connection.set_trace_callback(None))
    assert [x for x in statements if x.startswith("COMMIT")] == ["COMMIT"]
    payment = await rig.journal.payments.get("T1")
    assert (payment.state, payment.pay_sent_at, payment.openid) == (S.PAYING, rig.t0, "o-user")
    events = await rig.journal.payments.events("T1")
    assert [e.kind for e in events][-1] is EventKind.FACE_CAPTURED
    rig.backend.micropay_gate.set()


async def test_reverse_recall_repeats_with_backoff(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.reverse_answers = [RECALL, BackendUnavailable("reverse: timed out"), RECALL, RECALL]
    await rig.start()
    assert (await rig.final()).state is S.REVERSED
    times = rig.backend.times("reverse")
    assert [b - a for a, b in itertools.pairwise(times)] == [1, 2, 4, 8]
    assert times[0] == rig.t0 + 30


@pytest.mark.parametrize("rig", [{"reverse_backoff_max": 3.0}], indirect=True)
async def test_reverse_backoff_is_capped(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.reverse_answers = [RECALL] * 5
    await rig.start()
    assert (await rig.final()).state is S.REVERSED
    times = rig.backend.times("reverse")
    assert [b - a for a, b in itertools.pairwise(times)] == [1, 2, 3, 3, 3]


async def test_refused_reverse_is_settled_by_query(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_answers = [*[USERPAYING] * 6, _paid()]
    rig.backend.reverse_answers = [
        ReverseResult(succeeded=False, recall=False, err_code="TRADE_ERROR")
    ]
    await rig.start()
    payment = await rig.final()
    assert payment.state is S.SUCCEEDED
    assert payment.err_code == "TRADE_ERROR"
    assert rig.backend.count("reverse") == 1


# ---------------------------------------------------------------- at most once, resume


async def test_unexpected_error_after_send_resumes_by_query(rig: Rig) -> None:
    rig.backend.micropay_answers = [RuntimeError("bug in the client")]
    rig.backend.query_answers = [_paid()]
    await rig.start()
    assert (await rig.final()).state is S.SUCCEEDED
    assert rig.backend.count("micropay") == 1
    assert await rig.reasons() == ["INTERNAL_ERROR"]


async def test_pay_twice_sends_micropay_once(rig: Rig) -> None:
    rig.backend.micropay_answers = [_paid(), _paid()]
    await rig.start()
    with pytest.raises(WrongState):  # its task still runs
        await rig.service.pay_captured("T1", FACE_CODE, "o-user", "", 1)
    assert (await rig.final()).state is S.SUCCEEDED
    with pytest.raises(WrongState):  # the journal refuses: it is no longer CAPTURING
        await rig.service.pay_captured("T1", FACE_CODE, "o-user", "", 1)
    await until(lambda: rig.service.unfinished_count() == 0)
    assert rig.backend.count("micropay") == 1


async def test_shutdown_mid_micropay_then_restart_only_queries(rig: Rig) -> None:
    rig.backend.micropay_gate = asyncio.Event()  # never answers: the request hangs
    await rig.start()
    await until(lambda: rig.backend.count("micropay") == 1)
    await rig.service.close(0)
    assert rig.service.unfinished_count() == 0
    payment = await rig.journal.payments.get("T1")
    assert payment.state is S.PAYING
    assert payment.pay_sent_at == rig.t0
    await rig.journal.close()

    await rig.clock.advance(3)
    rig.journal = await Journal.open(rig.path, clock=rig.clock)
    rig.backend.query_answers = [USERPAYING, _paid()]
    rig.service = _service(rig.journal.payments, rig.backend, rig.clock)
    assert await rig.service.resume_unfinished() == 1
    assert (await rig.final()).state is S.SUCCEEDED
    assert rig.backend.count("micropay") == 1
    assert rig.backend.times("orderquery") == [rig.t0 + 3, rig.t0 + 8]
    assert await rig.reasons() == ["DAEMON_RESTARTED"]


async def _journaled(rig: Rig, state: PaymentState, *, sent: bool) -> None:
    """Put T1 in the journal in state, as a run cut short would have left it."""
    await rig.journal.payments.create_payment(PaymentOrder("T1", FEE, "goods"))
    if state is S.CAPTURING:
        return
    await rig.journal.payments.append("T1", S.PAYING, K.FACE_CAPTURED)
    if sent:
        await rig.journal.payments.mark_pay_sent("T1")
    if state in (S.PENDING, S.REVERSING):
        await rig.journal.payments.append("T1", S.PENDING, K.PENDING, {"reason": "USERPAYING"})
    if state is S.REVERSING:
        await rig.journal.payments.append("T1", S.REVERSING, K.PENDING, {"reason": "TIMEOUT"})


@pytest.mark.parametrize(("state", "sent"), [(S.CAPTURING, False), (S.PAYING, False)])
async def test_resume_before_send_cancels(rig: Rig, state: PaymentState, sent: bool) -> None:
    await _journaled(rig, state, sent=sent)
    assert await rig.service.resume_unfinished() == 1
    payment = await rig.final()
    assert payment.state is S.CANCELLED
    assert (await rig.journal.payments.events("T1"))[-1].data["reason"] == "DAEMON_RESTARTED"
    assert rig.backend.calls == []


@pytest.mark.parametrize("state", [S.PAYING, S.PENDING])
async def test_resume_after_send_queries(rig: Rig, state: PaymentState) -> None:
    await _journaled(rig, state, sent=True)
    await rig.clock.advance(2)
    rig.backend.query_answers = [USERPAYING, _paid()]
    assert await rig.service.resume_unfinished() == 1
    assert (await rig.final()).state is S.SUCCEEDED
    assert rig.backend.times("orderquery") == [rig.t0 + 2, rig.t0 + 7]
    assert rig.backend.count("micropay") == 0


async def test_resume_unknown_reverses_at_give_up_counted_from_send(rig: Rig) -> None:
    await _journaled(rig, S.PENDING, sent=True)
    await rig.clock.advance(100)  # the daemon was down for a while
    assert await rig.service.resume_unfinished() == 1
    assert (await rig.final()).state is S.REVERSED
    assert rig.backend.times("orderquery") == [rig.t0 + 100]
    assert rig.backend.times("reverse") == [rig.t0 + 100]
    assert rig.backend.count("micropay") == 0


async def test_resume_reversing_waits_for_reverse_after(rig: Rig) -> None:
    await _journaled(rig, S.REVERSING, sent=True)
    await rig.clock.advance(3)
    rig.backend.reverse_answers = [RECALL]
    assert await rig.service.resume_unfinished() == 1
    assert (await rig.final()).state is S.REVERSED
    assert rig.backend.times("reverse") == [rig.t0 + 15, rig.t0 + 16]
    assert rig.backend.count("micropay") == rig.backend.count("orderquery") == 0
    assert (await rig.journal.payments.events("T1"))[-1].data == {"reason": "TIMEOUT"}


# ---------------------------------------------------------------- service


async def test_begin_is_idempotent_and_rejects_other_parameters(rig: Rig) -> None:
    order = PaymentOrder("T1", FEE, "goods")
    first, created = await rig.service.begin(order)
    again, created_again = await rig.service.begin(order)
    assert created
    assert not created_again
    assert again == first
    with pytest.raises(AlreadyExists, match="different parameters: field\\(s\\) total_fee"):
        await rig.service.begin(PaymentOrder("T1", FEE + 1, "goods"))


async def test_cancel_only_before_micropay(rig: Rig) -> None:
    await rig.service.begin(PaymentOrder("C1", FEE, "goods"))
    await rig.service.record_cancelled("C1", "USER_CANCEL", "the user cancelled")
    payment = await rig.service.get("C1")
    assert payment.state is S.CANCELLED
    rig.backend.micropay_answers = [USERPAYING]
    await rig.start()
    with pytest.raises(WrongState):
        await rig.service.record_cancelled("T1", "POS_CANCEL", "")
    await until(lambda: rig.backend.count("micropay") == 1)
    with pytest.raises(WrongState):
        await rig.service.record_cancelled("T1", "POS_CANCEL", "")


async def test_manual_reverse_of_a_paid_order(rig: Rig) -> None:
    rig.backend.micropay_answers = [_paid()]
    await rig.start()
    await rig.final()
    reversal = asyncio.ensure_future(rig.service.reverse("T1"))
    await rig.run_until(reversal.done)
    payment = await reversal
    assert payment.state is S.REVERSED
    assert rig.backend.times("reverse") == [rig.t0 + 15]
    assert [state for state, _ in await rig.kinds()][-3:] == [S.SUCCEEDED, S.REVERSING, S.REVERSED]
    assert await rig.reasons() == ["MANUAL", "MANUAL"]
    assert await rig.service.reverse("T1") == payment  # already reversed: nothing more to do


async def test_manual_reverse_of_a_pending_order_does_not_wait_for_give_up(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    await rig.start()
    await until(lambda: rig.backend.count("micropay") == 1)
    reversal = asyncio.ensure_future(rig.service.reverse("T1"))
    await rig.run_until(reversal.done)
    assert (await reversal).state is S.REVERSED
    assert rig.backend.times("reverse") == [rig.t0 + 15]


async def test_manual_reverse_refused_by_wechat_keeps_the_order_paid(rig: Rig) -> None:
    rig.backend.micropay_answers = [_paid()]
    rig.backend.reverse_default = ReverseResult(False, False, "REVERSE_EXPIRE", "too old")
    rig.backend.query_default = _paid()
    await rig.start()
    await rig.final()
    reversal = asyncio.ensure_future(rig.service.reverse("T1"))
    await rig.run_until(reversal.done)
    with pytest.raises(BackendRejected) as info:
        await reversal
    assert info.value.code == "REVERSE_EXPIRE"
    assert (await rig.journal.payments.get("T1")).state is S.SUCCEEDED


async def test_manual_reverse_refuses_unpaid_orders(rig: Rig) -> None:
    rig.backend.micropay_answers = [TradeResult(TradeState.FAILED, err_code="NOTENOUGH")]
    await rig.start()
    await rig.final()
    with pytest.raises(WrongState):
        await rig.service.reverse("T1")
    await rig.service.begin(PaymentOrder("C1", FEE, "goods"))
    with pytest.raises(WrongState, match="never sent"):
        await rig.service.reverse("C1")
    assert rig.backend.count("reverse") == 0


async def test_watch_replays_then_follows_without_gap_or_duplicate(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_answers = [USERPAYING, _paid()]
    seen: dict[str, list[PaymentEvent]] = {"all": [], "late": []}

    async def collect(name: str, after_seq: int) -> None:
        async for event in rig.service.watch("T1", after_seq):
            seen[name].append(event)

    await rig.start()
    everything = asyncio.ensure_future(collect("all", 0))
    await until(lambda: rig.backend.count("micropay") == 1)
    await rig.run_until(lambda: rig.backend.count("orderquery") == 1)
    late = asyncio.ensure_future(collect("late", 2))
    await rig.final()
    await asyncio.wait_for(asyncio.gather(everything, late), 5)
    assert [e.seq for e in seen["all"]] == [1, 2, 3, 4]
    assert [e.seq for e in seen["late"]] == [3, 4]
    assert seen["all"][-1].state is S.SUCCEEDED
    assert seen["all"][1].data == {"openid": "o-user", "sub_openid": "", "underage_state": 1}
    # A watch of a final payment replays and ends at once.
    replay = [e.seq async for e in rig.service.watch("T1", 0)]
    assert replay == [1, 2, 3, 4]
    assert [e async for e in rig.service.watch("T1", 4)] == []


async def test_pos_hanging_up_does_not_stop_the_payment(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_answers = [_paid()]
    await rig.start()
    watcher = asyncio.ensure_future(anext(aiter(rig.service.watch("T1", 3))))
    await until(lambda: rig.backend.count("micropay") == 1)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    assert (await rig.final()).state is S.SUCCEEDED


async def test_face_code_is_never_journaled_or_logged(rig: Rig) -> None:
    rig.backend.micropay_answers = [BackendRejected("SYSTEMERROR", "busy")]
    rig.backend.query_answers = [_paid()]
    with structlog.testing.capture_logs() as logs:
        await rig.start()
        await rig.final()
    assert logs, "state changes are logged"
    assert any(entry.get("state") == "SUCCEEDED" for entry in logs)
    assert FACE_CODE not in repr(logs)
    await rig.journal.close()
    stored = b"".join(p.read_bytes() for p in rig.path.parent.glob("journal.db*"))
    assert b"o-user" in stored  # the files are readable as written
    assert FACE_CODE.encode() not in stored
    rig.journal = await Journal.open(rig.path, clock=rig.clock)


async def test_finished_watches_leave_nothing_behind(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_answers = [_paid()]
    await rig.start()
    watchers = [asyncio.ensure_future(rig.service.wait_final("T1")) for _ in range(3)]
    await rig.final()
    await asyncio.wait_for(asyncio.gather(*watchers), 5)
    assert [e.seq async for e in rig.service.watch("T1")] == [1, 2, 3, 4]
    assert rig.service._owned.watchers == {}
