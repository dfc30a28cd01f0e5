"""Refunds: the journal's rules, the transition table, and the machine against a fake backend."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from facepayd.clock import ManualClock
from facepayd.errors import (
    AlreadyExists,
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    NotFound,
    RefundExceedsPaid,
    ResponseNotTrusted,
    WrongState,
)
from facepayd.journal import Journal, Retention
from facepayd.journal.retention import DAY
from facepayd.payments.models import EventKind, PaymentOrder, PaymentState
from facepayd.payments.refund_models import (
    NOT_SENT,
    OUT_REFUND_NO_USED,
    PAYMENT_NOT_REFUNDABLE,
    REFUND_TRANSITIONS,
    RefundRequest,
    RefundState,
)
from facepayd.payments.refunds import (
    ACTIONS,
    PROCESSING_UNRESOLVED,
    REFUND_CHANGE,
    UNRESOLVED,
    RefundService,
    RefundTimings,
)
from facepayd.wxpay.codes import Api, Disposition, classify, codes_with
from facepayd.wxpay.models import (
    RefundOrder,
    RefundOutcome,
    RefundQueryResult,
    RefundResult,
    RefundStatus,
)
from tests.unit.manual_time import quiesce, run_timers

R = RefundState
FEE = 1000
TIMINGS = RefundTimings(
    poll_interval=1.0,
    poll_max=8.0,
    retry_backoff=0.5,
    retry_backoff_max=4.0,
    throttled_wait=60.0,
    in_flight_after=10.0,
    attention_after=120.0,
    attention_retry=30.0,
    attention_retry_max=240.0,
    processing_attention_after=3600.0,
    processing_attention_answers=3,
)

RefundAnswer = RefundResult | Exception
QueryAnswer = RefundQueryResult | Exception
ACCEPTED = RefundResult(RefundOutcome.ACCEPTED, refund_id="50000001", refund_fee=0)
NOT_EXIST = RefundQueryResult(RefundStatus.NOT_EXIST, err_code="REFUNDNOTEXIST")
PROCESSING = RefundQueryResult(RefundStatus.PROCESSING, refund_id="50000001")


def success(**overrides: object) -> RefundQueryResult:
    fields: dict[str, object] = {
        "status": RefundStatus.SUCCESS,
        "refund_id": "50000001",
        "success_time": "2025-01-01 12:00:00",
        "recv_account": "支付用户的零钱",
        "refund_channel": "BALANCE",
    }
    fields.update(overrides)
    return RefundQueryResult(**fields)  # type: ignore[arg-type]


@dataclass
class FakeRefundBackend:
    """A RefundBackend that plays scripted answers and records when each call came."""

    clock: ManualClock
    refund_answers: list[RefundAnswer] = field(default_factory=list)
    query_answers: list[QueryAnswer] = field(default_factory=list)
    refund_default: RefundAnswer = ACCEPTED
    query_default: QueryAnswer = field(default_factory=success)
    sends: list[tuple[RefundOrder, float]] = field(default_factory=list)
    queries: list[float] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    async def refund(self, order: RefundOrder) -> RefundResult:
        self.sends.append((order, self.clock.time()))
        self.calls.append("refund")
        answer = self.refund_answers.pop(0) if self.refund_answers else self.refund_default
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def refundquery(self, *, out_refund_no: str) -> RefundQueryResult:
        self.queries.append(self.clock.time())
        self.calls.append("refundquery")
        answer = self.query_answers.pop(0) if self.query_answers else self.query_default
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class Rig:
    clock: ManualClock
    backend: FakeRefundBackend
    journal: Journal
    service: RefundService
    path: Path

    async def paid(self, no: str = "T1", fee: int = FEE) -> None:
        """A payment journaled SUCCEEDED."""
        store = self.journal.payments
        await store.create_payment(PaymentOrder(no, fee, "goods"))
        await store.append(no, PaymentState.PAYING, EventKind.FACE_CAPTURED, openid="o")
        await store.mark_pay_sent(no)
        await store.append(no, PaymentState.SUCCEEDED, EventKind.SUCCEEDED, transaction_id="42")

    async def run(self, seconds: float = 0.0) -> None:
        """Let tasks run, moving the clock timer by timer up to seconds from now."""
        await run_timers(self.clock, seconds, self.quiesce)

    async def quiesce(self) -> None:
        """Until every refund task waits on the clock."""
        await quiesce(self.clock, lambda: self.service.unfinished_count(), "refund")

    async def restart(self) -> None:
        await self.service.close(0)
        await self.journal.close()
        self.journal = await Journal.open(self.path, clock=self.clock)
        self.service = RefundService(self.journal.refunds, self.backend, self.clock, TIMINGS)
        await self.service.resume_unfinished()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = ManualClock()
    backend = FakeRefundBackend(clock)
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path, clock=clock)
    service = RefundService(journal.refunds, backend, clock, TIMINGS)
    r = Rig(clock, backend, journal, service, path)
    yield r
    await r.service.close(0)
    await r.journal.close()


def request(no: str = "R1", fee: int = FEE, **fields: str) -> RefundRequest:
    return RefundRequest(out_refund_no=no, out_trade_no="T1", refund_fee=fee, **fields)


async def states(rig: Rig, no: str) -> list[RefundState]:
    return [e.state for e in await rig.journal.refunds.events(no)]


# ---------------------------------------------------------------- the transition table


async def _force(rig: Rig, no: str, state: RefundState) -> None:
    """Put a refund into state behind the table's back (test set-up only)."""
    db = rig.journal.database

    def put() -> None:
        db.connection.execute(
            "UPDATE refunds SET state = ?, final = ? WHERE out_refund_no = ?",
            (state.value, int(state.final), no),
        )

    await db.run(put)


async def _take(rig: Rig, no: str, state: RefundState) -> None:
    """Ask the journal for one transition to state, the way the machine would."""
    store = rig.journal.refunds
    if state is R.SENDING:
        await store.mark_sending(no, "TEST")
    elif state is R.RECORDED:
        await store.retry_failed(no)
    elif state in (R.NEEDS_ATTENTION, R.CHANGE):
        await store.append(no, state, attention_reason="X", attention_action="do")
    else:
        await store.append(no, state)


async def test_every_transition_in_the_table_is_taken_and_every_other_refused(rig: Rig) -> None:
    await rig.paid(fee=10_000)
    numbers = itertools.count()
    for current, wanted in itertools.product(RefundState, RefundState):
        no = f"W{next(numbers)}"
        await rig.journal.refunds.create_refund(request(no, 1))
        await _force(rig, no, current)
        before = await rig.journal.refunds.get(no)
        if wanted in REFUND_TRANSITIONS[current]:
            await _take(rig, no, wanted)
            after = await rig.journal.refunds.get(no)
            assert after.state is wanted, (current, wanted)
            assert after.last_seq == before.last_seq + 1
            assert after.final is wanted.final
        else:
            with pytest.raises(WrongState):
                await _take(rig, no, wanted)
            assert await rig.journal.refunds.get(no) == before, (current, wanted)
        # Out of the way of the sum for the next one.
        await _force(rig, no, R.FAILED)


def test_final_states_have_no_way_out_but_a_retry_of_a_failure() -> None:
    for state in RefundState:
        if state.final:
            assert REFUND_TRANSITIONS[state] <= {R.RECORDED}, state
    assert R.NEEDS_ATTENTION.settled
    assert not R.NEEDS_ATTENTION.final
    assert not R.FAILED.counts
    assert not R.CLOSED.counts
    assert R.CHANGE.counts


# ---------------------------------------------------------------- the journal's rules


async def test_full_refund_is_sent_once_and_queried_to_success(rig: Rig) -> None:
    await rig.paid()
    rig.backend.query_answers = [PROCESSING, PROCESSING]
    refund = await rig.service.refund(request(refund_desc="broken cup"))
    assert refund.state is R.RECORDED
    await rig.run(60)
    refund = await rig.service.get("R1")
    assert refund.state is R.SUCCEEDED
    assert refund.refund_id == "50000001"
    assert refund.recv_account == "支付用户的零钱"
    assert len(rig.backend.sends) == 1
    order = rig.backend.sends[0][0]
    assert (order.out_refund_no, order.total_fee, order.refund_fee) == ("R1", FEE, FEE)
    assert (order.transaction_id, order.refund_desc) == ("42", "broken cup")
    assert await states(rig, "R1") == [R.RECORDED, R.SENDING, R.PROCESSING, R.SUCCEEDED]
    assert await rig.service.refunded_fee("T1") == FEE
    # Queried at the poll interval, doubling: 1 s, then 2 s, then 4 s after acceptance.
    start = rig.backend.sends[0][1]
    assert [q - start for q in rig.backend.queries] == [1.0, 3.0, 7.0]


async def test_partial_refunds_add_up_and_an_over_refund_is_refused_before_sending(
    rig: Rig,
) -> None:
    await rig.paid()
    await rig.service.refund(request("R1", 300))
    await rig.service.refund(request("R2", 600))
    with pytest.raises(RefundExceedsPaid, match="100 of 1000"):
        await rig.service.refund(request("R3", 101))
    assert await rig.journal.refunds.find("R3") is None
    await rig.run(30)
    assert [o.out_refund_no for o, _ in rig.backend.sends] == ["R1", "R2"]
    # Exactly what is left is fine.
    await rig.service.refund(request("R3", 100))
    await rig.run(30)
    assert await rig.service.refunded_fee("T1") == FEE
    with pytest.raises(RefundExceedsPaid):
        await rig.service.refund(request("R4", 1))


async def test_concurrent_refunds_never_exceed_the_paid_amount(rig: Rig) -> None:
    await rig.paid()
    results = await asyncio.gather(
        *(rig.service.refund(request(f"C{n}", 400)) for n in range(5)), return_exceptions=True
    )
    accepted = [r for r in results if not isinstance(r, Exception)]
    assert len(accepted) == 2
    assert all(isinstance(r, RefundExceedsPaid) for r in results if isinstance(r, Exception))


async def test_same_number_re_attaches_and_other_parameters_are_refused(rig: Rig) -> None:
    await rig.paid()
    first = await rig.service.refund(request("R1", 300, refund_desc="a"))
    again = await rig.service.refund(request("R1", 300, refund_desc="a"))
    assert again.out_refund_no == first.out_refund_no
    assert again.created_at == first.created_at
    with pytest.raises(AlreadyExists, match="refund_desc"):
        await rig.service.refund(request("R1", 300, refund_desc="b"))
    with pytest.raises(AlreadyExists, match="refund_fee"):
        await rig.service.refund(request("R1", 301, refund_desc="a"))
    await rig.run(30)
    assert len(rig.backend.sends) == 1


async def test_only_a_paid_payment_is_refundable(rig: Rig) -> None:
    with pytest.raises(NotFound):
        await rig.service.refund(request())
    store = rig.journal.payments
    await store.create_payment(PaymentOrder("T1", FEE, "goods"))
    with pytest.raises(WrongState, match="CAPTURING"):
        await rig.service.refund(request())
    await store.append("T1", PaymentState.CANCELLED, EventKind.CANCELLED)
    with pytest.raises(WrongState, match="CANCELLED"):
        await rig.service.refund(request())
    assert rig.backend.sends == []


async def test_a_payment_too_old_to_reverse_is_refundable(rig: Rig) -> None:
    store = rig.journal.payments
    await store.create_payment(PaymentOrder("T1", FEE, "goods"))
    await store.append("T1", PaymentState.PAYING, EventKind.FACE_CAPTURED)
    await store.mark_pay_sent("T1")
    await store.append("T1", PaymentState.PENDING, EventKind.PENDING)
    await store.append(
        "T1",
        PaymentState.NEEDS_ATTENTION,
        EventKind.NEEDS_ATTENTION,
        attention_reason="UNRESOLVED",
        attention_action="x",
    )
    with pytest.raises(WrongState, match="UNRESOLVED"):
        await rig.service.refund(request())
    await store.append(
        "T1",
        PaymentState.NEEDS_ATTENTION,
        EventKind.NEEDS_ATTENTION,
        attention_reason="REVERSE_EXPIRE",
        attention_action="refund it",
    )
    await rig.service.refund(request())
    await rig.run(30)
    assert (await rig.service.get("R1")).state is R.SUCCEEDED


async def test_a_refund_is_listed_with_its_payment_in_pages(rig: Rig) -> None:
    await rig.paid()
    for n in range(5):
        await rig.service.refund(request(f"R{n}", 10))
        await rig.clock.advance(1)
    page, token = await rig.service.for_payment("T1", page_size=2)
    assert [r.out_refund_no for r in page] == ["R0", "R1"]
    assert token == "R1"
    page, token = await rig.service.for_payment("T1", page_size=2, page_token=token)
    assert [r.out_refund_no for r in page] == ["R2", "R3"]
    page, token = await rig.service.for_payment("T1", page_size=2, page_token=token)
    assert [r.out_refund_no for r in page] == ["R4"]
    assert token == ""
    with pytest.raises(InvalidArgument):
        await rig.service.for_payment("T1", page_token="NOPE")
    with pytest.raises(InvalidArgument):
        await rig.service.for_payment("T1", page_size=0)


# ---------------------------------------------------------------- uncertain answers


async def test_a_timeout_is_queried_and_sent_again_only_once_proven_absent(rig: Rig) -> None:
    await rig.paid()
    rig.backend.refund_answers = [BackendUnavailable("timed out")]
    rig.backend.query_default = NOT_EXIST
    await rig.service.refund(request())
    await rig.run(TIMINGS.in_flight_after - 0.1)
    assert len(rig.backend.sends) == 1, "sent again while the first could still arrive"
    assert rig.backend.queries, "the unknown outcome was queried"
    rig.backend.query_default = success()
    rig.backend.query_answers = [NOT_EXIST]
    await rig.run(TIMINGS.in_flight_after)
    assert len(rig.backend.sends) == 2
    first, second = rig.backend.sends
    assert second[1] - first[1] >= TIMINGS.in_flight_after
    assert second[0] == first[0], "the resend is the same request, same out_refund_no"
    assert (await rig.service.get("R1")).state is R.SUCCEEDED
    events = await rig.journal.refunds.events("R1")
    sending = [e.data for e in events if e.state is R.SENDING]
    assert sending == [
        {"attempt": 1, "reason": "FIRST"},
        {"attempt": 2, "reason": "NOT_FOUND_RESEND"},
    ]


@pytest.mark.parametrize(
    "failure", [BackendUnavailable("timed out"), ResponseNotTrusted("bad sign")]
)
async def test_an_unknown_outcome_found_at_wechat_is_never_sent_again(
    rig: Rig, failure: Exception
) -> None:
    await rig.paid()
    rig.backend.refund_answers = [failure]
    rig.backend.query_answers = [PROCESSING]
    await rig.service.refund(request())
    await rig.run(300)
    assert len(rig.backend.sends) == 1
    assert await states(rig, "R1") == [R.RECORDED, R.SENDING, R.PROCESSING, R.SUCCEEDED]


@pytest.mark.parametrize("code", sorted(codes_with(Api.REFUND, Disposition.RETRY)))
async def test_a_retry_code_is_queried_then_sent_again_with_the_same_number(
    rig: Rig, code: str
) -> None:
    await rig.paid()
    rig.backend.refund_answers = [RefundResult(RefundOutcome.RETRY, err_code=code)]
    rig.backend.query_answers = [NOT_EXIST]
    await rig.service.refund(request())
    await rig.run(60)
    assert [o.out_refund_no for o, _ in rig.backend.sends] == ["R1", "R1"]
    assert rig.backend.calls[:3] == ["refund", "refundquery", "refund"], "queried before a resend"
    assert (await rig.service.get("R1")).state is R.SUCCEEDED


@pytest.mark.parametrize("code", sorted(codes_with(Api.REFUND, Disposition.THROTTLED)))
async def test_a_throttled_refund_waits_a_minute(rig: Rig, code: str) -> None:
    await rig.paid()
    rig.backend.refund_answers = [RefundResult(RefundOutcome.RETRY, err_code=code)]
    rig.backend.query_answers = [NOT_EXIST]
    await rig.service.refund(request())
    await rig.run(300)
    first, second = rig.backend.sends
    assert rig.backend.queries[0] - first[1] >= TIMINGS.throttled_wait
    assert second[1] - first[1] >= TIMINGS.throttled_wait


@pytest.mark.parametrize("code", sorted(codes_with(Api.REFUND, Disposition.FAILED)))
async def test_a_definite_error_fails_the_refund_and_frees_the_amount(rig: Rig, code: str) -> None:
    await rig.paid()
    rig.backend.refund_answers = [
        RefundResult(RefundOutcome.FAILED, err_code=code, err_code_des="no")
    ]
    await rig.service.refund(request())
    await rig.run(60)
    refund = await rig.service.get("R1")
    assert (refund.state, refund.err_code, refund.err_code_des) == (R.FAILED, code, "no")
    assert len(rig.backend.sends) == 1
    assert rig.backend.queries == []
    # Nothing was refunded: the whole amount can be refunded under another number.
    await rig.service.refund(request("R2"))


@pytest.mark.parametrize(
    "refusal",
    [
        InvalidArgument("refund_desc", "must not contain characters XML 1.0 cannot carry"),
        ConfigError("refund needs the merchant API certificate"),
    ],
)
async def test_a_refund_the_client_refuses_before_sending_fails_and_is_never_resent(
    rig: Rig, refusal: Exception
) -> None:
    await rig.paid()
    rig.backend.refund_answers = [refusal]
    await rig.service.refund(request())
    await rig.run(TIMINGS.attention_after * 2)
    refund = await rig.service.get("R1")
    assert (refund.state, refund.err_code) == (R.FAILED, NOT_SENT)
    assert "nothing left the terminal" in refund.err_code_des
    assert len(rig.backend.sends) == 1
    assert rig.backend.queries == []
    # Nothing was refunded: the amount is free again.
    await rig.service.refund(request("R2"))


async def test_a_refused_request_with_no_refund_at_wechat_fails(rig: Rig) -> None:
    await rig.paid()
    rig.backend.refund_answers = [RefundResult(RefundOutcome.REJECTED, err_code="SIGNERROR")]
    rig.backend.query_default = NOT_EXIST
    await rig.service.refund(request())
    await rig.run(60)
    refund = await rig.service.get("R1")
    assert (refund.state, refund.err_code) == (R.FAILED, "SIGNERROR")
    assert len(rig.backend.sends) == 1


async def test_a_failed_refund_is_sent_again_on_request_with_the_same_number(rig: Rig) -> None:
    await rig.paid()
    rig.backend.refund_answers = [RefundResult(RefundOutcome.FAILED, err_code="NOTENOUGH")]
    await rig.service.refund(request())
    await rig.run(10)
    assert (await rig.service.get("R1")).state is R.FAILED
    # A re-attach without retry_failed changes nothing.
    assert (await rig.service.refund(request())).state is R.FAILED
    await rig.service.refund(request(), retry_failed=True)
    await rig.run(30)
    assert (await rig.service.get("R1")).state is R.SUCCEEDED
    assert len(rig.backend.sends) == 2
    assert await states(rig, "R1") == [
        R.RECORDED,
        R.SENDING,
        R.FAILED,
        R.RECORDED,
        R.SENDING,
        R.PROCESSING,
        R.SUCCEEDED,
    ]


async def test_refundclose_and_change(rig: Rig) -> None:
    await rig.paid()
    rig.backend.query_answers = [RefundQueryResult(RefundStatus.REFUNDCLOSE)]
    await rig.service.refund(request("R1", 600))
    await rig.run(30)
    assert (await rig.service.get("R1")).state is R.CLOSED
    rig.backend.query_answers = [
        RefundQueryResult(RefundStatus.CHANGE, recv_account="招商银行信用卡0403")
    ]
    await rig.service.refund(request("R2", 1000))
    await rig.run(30)
    change = await rig.service.get("R2")
    assert change.state is R.CHANGE
    assert change.final
    assert change.attention_reason == REFUND_CHANGE
    assert change.attention_action == ACTIONS[REFUND_CHANGE]
    assert change.recv_account == "招商银行信用卡0403"
    # CHANGE counts against the payment: the money left the merchant.
    with pytest.raises(RefundExceedsPaid):
        await rig.service.refund(request("R3", 1))
    assert await rig.service.refunded_fee("T1") == 0


async def test_an_answer_for_another_amount_is_never_taken_as_ours(rig: Rig) -> None:
    await rig.paid()
    rig.backend.query_answers = [success(refund_fee=1)]
    await rig.service.refund(request())
    await rig.run(1.5)
    assert (await rig.service.get("R1")).state is R.PROCESSING


@pytest.mark.parametrize(
    "foreign",
    [
        {"out_trade_no": "T-OTHER-TILL"},
        {"out_trade_no": "T1", "transaction_id": "4200-other"},
    ],
)
async def test_a_refund_of_another_order_under_our_number_is_never_taken_as_ours(
    rig: Rig, foreign: dict[str, str]
) -> None:
    await rig.paid()
    # Our request's answer is lost; the number turns out to be another till's refund.
    rig.backend.refund_answers = [BackendUnavailable("timed out")]
    rig.backend.query_default = success(**foreign)
    await rig.service.refund(request())
    await rig.run(TIMINGS.attention_retry_max * 2)
    refund = await rig.service.get("R1")
    assert refund.state is R.FAILED
    assert refund.err_code == OUT_REFUND_NO_USED
    assert "new out_refund_no" in refund.err_code_des
    assert len(rig.backend.sends) == 1, "nothing is sent again under a number that is not ours"
    assert await rig.service.refunded_fee("T1") == 0
    with pytest.raises(WrongState, match="new out_refund_no"):
        await rig.service.refund(request(), retry_failed=True)
    # The money is still refundable, under a number of our own.
    rig.backend.query_default = success(out_trade_no="T1", transaction_id="42")
    await rig.service.refund(request("R2"))
    await rig.run(30)
    assert (await rig.service.get("R2")).state is R.SUCCEEDED


async def test_an_accepted_refund_ignores_a_row_for_another_order(rig: Rig) -> None:
    await rig.paid()
    rig.backend.query_answers = [success(out_trade_no="T-OTHER"), success(out_trade_no="T1")]
    await rig.service.refund(request())
    await rig.run(1.5)
    assert (await rig.service.get("R1")).state is R.PROCESSING
    await rig.run(5)
    assert (await rig.service.get("R1")).state is R.SUCCEEDED


async def test_unresolved_refund_needs_attention_and_is_still_retried(rig: Rig) -> None:
    await rig.paid()
    rig.backend.refund_default = BackendUnavailable("down")
    rig.backend.query_default = BackendUnavailable("down")
    await rig.service.refund(request())
    await rig.run(TIMINGS.attention_after + 5)
    refund = await rig.service.get("R1")
    assert refund.state is R.NEEDS_ATTENTION
    assert refund.attention_reason == UNRESOLVED
    assert refund.attention_action
    assert rig.service.needs_attention_count() == 1
    assert [r.out_refund_no for r in await rig.service.needing_attention()] == ["R1"]
    assert len(rig.backend.sends) == 1, "never sent again without proof of absence"
    queries = len(rig.backend.queries)
    rig.backend.query_default = NOT_EXIST
    rig.backend.refund_default = ACCEPTED
    await rig.run(TIMINGS.attention_retry + 1)
    assert len(rig.backend.queries) > queries
    rig.backend.query_default = success()
    await rig.run(TIMINGS.attention_retry_max)
    assert (await rig.service.get("R1")).state is R.SUCCEEDED
    assert len(rig.backend.sends) == 2
    assert rig.service.needs_attention_count() == 0
    assert await rig.service.needing_attention() == []


async def test_resends_from_needs_attention_back_off_to_the_slow_cap(rig: Rig) -> None:
    await rig.paid()
    # Never answered, never found: every resend ends in NEEDS_ATTENTION again.
    rig.backend.refund_default = BackendUnavailable("timed out")
    rig.backend.query_default = NOT_EXIST
    await rig.service.refund(request())
    await rig.run(TIMINGS.attention_after + 1)
    assert (await rig.service.get("R1")).state is R.NEEDS_ATTENTION
    start = len(rig.backend.sends)
    await rig.run(TIMINGS.attention_retry_max * 6)
    times = [t for _, t in rig.backend.sends[start - 1 :]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 4
    assert gaps == sorted(gaps), "the cadence never speeds up again"
    assert gaps[-1] >= TIMINGS.attention_retry_max
    assert gaps[-1] < TIMINGS.attention_retry_max + TIMINGS.in_flight_after + 1


class RefusingOnce:
    """A refund journal whose first mark_sending is refused (WrongState), as after a race."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.refused = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def mark_sending(self, out_refund_no: str, reason: str) -> object:
        if not self.refused:
            self.refused += 1
            raise WrongState("refund R1 cannot go from RECORDED to SENDING")
        return await self._store.mark_sending(out_refund_no, reason)  # type: ignore[attr-defined]


async def test_a_refused_step_of_an_unfinished_refund_is_retried_not_abandoned(rig: Rig) -> None:
    await rig.paid()
    await rig.service.close(0)
    journal = RefusingOnce(rig.journal.refunds)
    rig.service = RefundService(journal, rig.backend, rig.clock, TIMINGS)  # type: ignore[arg-type]
    await rig.service.refund(request())
    await rig.run(1)
    assert journal.refused == 1
    assert rig.service.unfinished_count() == 1, "the task goes on while the refund is unfinished"
    await rig.run(30)
    assert (await rig.service.get("R1")).state is R.SUCCEEDED
    assert len(rig.backend.sends) == 1


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (NOT_EXIST, "REFUNDNOTEXIST"),
        (success(refund_fee=1), "another amount"),
        (RefundQueryResult(RefundStatus.UNKNOWN, err_code="SIGNERROR"), "SIGNERROR"),
    ],
)
async def test_an_accepted_refund_answered_unsettled_in_a_row_needs_attention_never_resent(
    rig: Rig, answer: RefundQueryResult, why: str
) -> None:
    await rig.paid()
    rig.backend.query_default = answer
    await rig.service.refund(request())
    await rig.run(60)
    refund = await rig.service.get("R1")
    assert refund.state is R.NEEDS_ATTENTION
    assert refund.attention_reason == PROCESSING_UNRESOLVED
    assert refund.attention_action == ACTIONS[PROCESSING_UNRESOLVED]
    events = await rig.journal.refunds.events("R1")
    assert why in str(events[-1].data["description"])
    # At the last of the answers in a row.
    assert events[-1].time == rig.backend.queries[TIMINGS.processing_attention_answers - 1]
    # Still queried at the slow cadence, and never sent again.
    queries = len(rig.backend.queries)
    await rig.run(TIMINGS.attention_retry_max * 3)
    assert len(rig.backend.queries) > queries
    assert len(rig.backend.sends) == 1
    rig.backend.query_default = success()
    await rig.run(TIMINGS.attention_retry_max + 1)
    assert (await rig.service.get("R1")).state is R.SUCCEEDED


async def test_an_accepted_refund_that_does_not_end_needs_attention_after_the_bound(
    rig: Rig,
) -> None:
    await rig.paid()
    rig.backend.query_default = PROCESSING
    await rig.service.refund(request())
    await rig.run(TIMINGS.processing_attention_after - TIMINGS.poll_max - 1)
    assert (await rig.service.get("R1")).state is R.PROCESSING
    # The first query at or past the bound decides.
    await rig.run(2 * TIMINGS.poll_max + 2)
    refund = await rig.service.get("R1")
    assert (refund.state, refund.attention_reason) == (R.NEEDS_ATTENTION, PROCESSING_UNRESOLVED)
    assert rig.service.needs_attention_count() == 1
    # PROCESSING answers keep it there, without an event each.
    seq = refund.last_seq
    await rig.run(TIMINGS.attention_retry_max * 3)
    assert (await rig.service.get("R1")).last_seq == seq
    assert len(rig.backend.sends) == 1


# ---------------------------------------------------------------- restarts


async def test_a_kill_between_journaling_and_sending_resumes_without_a_second_refund(
    rig: Rig,
) -> None:
    await rig.paid()
    # Recorded, then SENDING committed: the process died before the request left.
    await rig.journal.refunds.create_refund(request())
    await rig.journal.refunds.mark_sending("R1", "FIRST")
    rig.backend.query_default = NOT_EXIST
    await rig.restart()
    await rig.run(TIMINGS.in_flight_after - 0.1)
    assert rig.backend.sends == [], "sent while the first request could still be on its way"
    rig.backend.query_default = success()
    rig.backend.query_answers = [NOT_EXIST]
    await rig.run(5)
    assert len(rig.backend.sends) == 1
    assert (await rig.service.get("R1")).state is R.SUCCEEDED


async def test_a_refund_whose_payment_was_reversed_before_sending_fails_unsent(
    rig: Rig,
) -> None:
    await rig.paid()
    await rig.journal.refunds.create_refund(request())
    db = rig.journal.database

    def reversed_meanwhile() -> None:
        # Test set-up: the payment left SUCCEEDED behind the refund's back.
        db.connection.execute("UPDATE payments SET state = 'REVERSED' WHERE out_trade_no = 'T1'")

    await db.run(reversed_meanwhile)
    await rig.restart()
    await rig.run(60)
    refund = await rig.service.get("R1")
    assert (refund.state, refund.err_code) == (R.FAILED, PAYMENT_NOT_REFUNDABLE)
    assert "REVERSED" in refund.err_code_des
    assert rig.backend.sends == []
    assert await states(rig, "R1") == [R.RECORDED, R.FAILED]


async def test_a_refund_recorded_but_never_sent_is_sent_after_a_restart(rig: Rig) -> None:
    await rig.paid()
    await rig.journal.refunds.create_refund(request())
    await rig.restart()
    await rig.run(30)
    assert len(rig.backend.sends) == 1
    events = await rig.journal.refunds.events("R1")
    assert events[1].data["reason"] == "DAEMON_RESTARTED"
    assert (await rig.service.get("R1")).state is R.SUCCEEDED


async def test_an_accepted_refund_is_only_queried_after_a_restart(rig: Rig) -> None:
    await rig.paid()
    rig.backend.query_default = PROCESSING
    await rig.service.refund(request())
    await rig.run(3)
    assert (await rig.service.get("R1")).state is R.PROCESSING
    await rig.restart()
    rig.backend.query_default = success()
    await rig.run(30)
    assert len(rig.backend.sends) == 1
    assert (await rig.service.get("R1")).state is R.SUCCEEDED


async def test_watch_replays_and_follows_to_the_end(rig: Rig) -> None:
    await rig.paid()
    rig.backend.query_answers = [PROCESSING]
    await rig.service.refund(request())
    seen: list[RefundState] = []

    async def watch() -> None:
        async for event in rig.service.watch("R1"):
            seen.append(event.state)

    watcher = asyncio.create_task(watch())
    await rig.run(30)
    await asyncio.wait_for(watcher, 5)
    assert seen == [R.RECORDED, R.SENDING, R.PROCESSING, R.SUCCEEDED]
    replay = [e.seq async for e in rig.service.watch("R1", after_seq=2)]
    assert replay == [3, 4]


# ---------------------------------------------------------------- retention


async def test_retention_prunes_refunds_with_their_payment_and_holds_unfinished_ones(
    rig: Rig,
) -> None:
    await rig.paid("T1")
    await rig.paid("T2")
    await rig.service.refund(RefundRequest("R1", "T1", 10))
    rig.backend.query_default = PROCESSING
    await rig.service.refund(RefundRequest("R2", "T2", 10))
    await rig.run(5)
    assert (await rig.service.get("R1")).state is R.PROCESSING  # R1 too: both polled
    rig.backend.query_answers = [success()]
    await rig.run(TIMINGS.poll_max + 1)
    done = {no: (await rig.service.get(no)).state for no in ("R1", "R2")}
    assert sorted(done.values()) == [R.PROCESSING, R.SUCCEEDED]
    finished = next(no for no, s in done.items() if s is R.SUCCEEDED)
    open_one = next(no for no, s in done.items() if s is R.PROCESSING)
    await rig.clock.advance(91 * DAY)
    retention = Retention(
        rig.journal.payments, rig.clock, retention_days=90, refunds=rig.journal.refunds
    )
    assert await retention.prune() == 1
    assert await rig.journal.refunds.find(finished) is None
    assert await rig.journal.refunds.events(finished) == []
    assert await rig.journal.refunds.find(open_one) is not None
    remaining, _ = await rig.journal.payments.list()
    assert [p.out_trade_no for p in remaining] == [
        (await rig.journal.refunds.get(open_one)).out_trade_no
    ]


def test_every_refund_code_the_documentation_lists_is_mapped() -> None:
    documented = {
        "SYSTEMERROR": Disposition.RETRY,
        "BIZERR_NEED_RETRY": Disposition.RETRY,
        "TRADE_OVERDUE": Disposition.FAILED,
        "ERROR": Disposition.FAILED,
        "USER_ACCOUNT_ABNORMAL": Disposition.FAILED,
        "INVALID_REQ_TOO_MUCH": Disposition.THROTTLED,
        "NOTENOUGH": Disposition.FAILED,
        "INVALID_TRANSACTIONID": Disposition.FAILED,
        "PARAM_ERROR": Disposition.FAILED,
        "APPID_NOT_EXIST": Disposition.FAILED,
        "MCHID_NOT_EXIST": Disposition.FAILED,
        "ORDERNOTEXIST": Disposition.FAILED,
        "REQUIRE_POST_METHOD": Disposition.FAILED,
        "SIGNERROR": Disposition.FAILED,
        "XML_FORMAT_ERROR": Disposition.FAILED,
        "FREQUENCY_LIMITED": Disposition.THROTTLED,
        "REFUND_FEE_MISMATCH": Disposition.FAILED,
        "ORDER_NOT_PAID": Disposition.FAILED,
    }
    assert {code: classify(Api.REFUND, code) for code in documented} == documented
    assert classify(Api.REFUND, "SOMETHING_NEW") is Disposition.QUERY
    queried = {
        "SYSTEMERROR": Disposition.QUERY,
        "REFUNDNOTEXIST": Disposition.NOT_EXIST,
        "INVALID_TRANSACTIONID": Disposition.FAILED,
        "PARAM_ERROR": Disposition.FAILED,
        "APPID_NOT_EXIST": Disposition.FAILED,
        "MCHID_NOT_EXIST": Disposition.FAILED,
        "REQUIRE_POST_METHOD": Disposition.FAILED,
        "SIGNERROR": Disposition.FAILED,
        "XML_FORMAT_ERROR": Disposition.FAILED,
    }
    assert {code: classify(Api.REFUNDQUERY, code) for code in queried} == queried
    assert classify(Api.REFUNDQUERY, "SOMETHING_NEW") is Disposition.QUERY
