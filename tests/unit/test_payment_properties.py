"""Property-based: the payment machine over random backend answers and restarts from the journal.

A hypothesis RuleBasedStateMachine drives the real PaymentService and journal (SQLite files)
against a fake WeChat Pay that keeps a small ledger of its own: what really happened to the
money. Its answers are the ledger's truth unless a rule scripted a fault for the next call:
every listed err_code of wxpay/codes.py, unlisted codes, return_code=FAIL, timeouts
(BackendUnavailable), forged or unparseable answers (ResponseNotTrusted). Foreign paid orders
sit under some numbers. An order is paid by face, by a scanned code (StartCodePay), or by face
cancelled with SCAN_PAYMENT and continued by code under the same number. Time moves only on the
ManualClock, to each next timer; a restart closes the service and the journal file and resumes
from it. For every run:

- micropay is sent at most once per out_trade_no;
- no reverse comes sooner than reverse_after after micropay was sent, none reaches a foreign
  order (whose micropay answer, ORDERPAID/OUT_TRADE_NO_USED, arrives: a lost one could only be
  reversed blind at give-up, as WeChat's own guidance says);
- every order is final or NEEDS_ATTENTION once attention_after has passed since micropay;
- SUCCEEDED only while the ledger holds this order's money, and a final order is SUCCEEDED
  exactly when it does;
- a code payment (and a continued face sale) has source CODE, a face payment FACE, and every
  payment's seq counts from 1 without gaps.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from facepayd.clock import ManualClock
from facepayd.errors import BackendRejected, BackendUnavailable, ResponseNotTrusted
from facepayd.journal import Journal
from facepayd.payments.machine import PaymentTimings
from facepayd.payments.models import Payment, PaymentOrder, PaymentSource, PaymentState
from facepayd.payments.service import PaymentService
from facepayd.wxpay.codes import Api, Disposition, codes_with
from facepayd.wxpay.models import MicropayOrder, ReverseResult, TradeResult, TradeState
from tests.unit.manual_time import quiesce, run_timers

S = PaymentState
TIMINGS = PaymentTimings(
    poll_interval=1.0,
    reverse_after=3.0,
    give_up_after=6.0,
    reverse_backoff=0.5,
    reverse_backoff_max=2.0,
    in_flight_after=2.0,  # sooner than reverse_after: a never-seen order waits for it
    attention_after=15.0,
    attention_retry=5.0,
    attention_retry_max=20.0,
)
EPSILON = 1e-3
MAX_ORDERS = 5

# ---------------------------------------------------------------- what a rule can script

MICROPAY_OUTCOMES = st.sampled_from(
    [
        ("pay", ""),
        ("userpaying", ""),
        ("lost", ""),  # never reached WeChat Pay, no answer
        *[("decline", code) for code in sorted(codes_with(Api.MICROPAY, Disposition.FAILED))],
        *[("reject", code) for code in ("SIGNERROR", "XML_FORMAT_ERROR", "PARAM_ERROR")],
    ]
)
MICROPAY_REPLIES = st.sampled_from(
    ["truthful", "timeout", "untrusted", "SYSTEMERROR", "BANKERROR", "NEW_CODE"]
)
QUERY_FAULTS = st.sampled_from(
    ["timeout", "untrusted", "SYSTEMERROR", "NEW_CODE", "return_fail", "odd_state"]
)
REVERSE_PLANS = st.sampled_from(
    [
        ("truthful", ""),
        ("timeout", ""),
        ("untrusted", ""),
        ("return_fail", ""),
        ("recall", "SYSTEMERROR"),
        ("recall", "USERPAYING"),
        ("recall", "NEW_CODE"),
        ("refuse", "NEW_CODE"),
        *[
            ("refuse", code)
            for code in sorted(
                codes_with(Api.REVERSE, Disposition.FAILED)
                | codes_with(Api.REVERSE, Disposition.EXPIRED)
            )
        ],
    ]
)
OPEN = ("USERPAYING", "NOTPAY")


@dataclass
class Entry:
    """One order as WeChat Pay holds it."""

    total_fee: int
    openid: str
    transaction_id: str
    state: str  # SUCCESS, USERPAYING, NOTPAY, PAYERROR, REVOKED, CLOSED
    foreign: bool = False
    charged: bool = False  # the money is held now (paid, not refunded)


@dataclass
class FakeWxPay:
    """A PaymentBackend with a ledger; scripted faults act on the next call."""

    clock: ManualClock
    payer_of: dict[str, str] = field(default_factory=dict)  # face code -> openid
    ledger: dict[str, Entry] = field(default_factory=dict)
    micropay_plans: dict[str, tuple[tuple[str, str], str]] = field(default_factory=dict)
    query_faults: list[str] = field(default_factory=list)
    reverse_plans: list[tuple[str, str]] = field(default_factory=list)
    micropay_calls: Counter[str] = field(default_factory=Counter)
    reverses: list[tuple[str, float]] = field(default_factory=list)
    foreign_reversed: list[str] = field(default_factory=list)

    def charged_by(self, out_trade_no: str) -> bool:
        entry = self.ledger.get(out_trade_no)
        return entry is not None and entry.charged and not entry.foreign

    async def micropay(self, order: MicropayOrder) -> TradeResult:
        no = order.out_trade_no
        self.micropay_calls[no] += 1
        entry = self.ledger.get(no)
        if entry is not None:
            # Taken by an earlier order: WeChat Pay says so, and charges nothing.
            code = "ORDERPAID" if entry.total_fee == order.total_fee else "OUT_TRADE_NO_USED"
            return TradeResult(TradeState.UNKNOWN, no, code, "used")
        (outcome, code), reply = self.micropay_plans.pop(no, (("pay", ""), "truthful"))
        if outcome == "lost":
            raise BackendUnavailable("micropay: timed out")
        if outcome == "reject":
            return TradeResult(TradeState.REJECTED, no, code, "refused")
        tid = f"4200{len(self.ledger):06d}"
        entry = Entry(order.total_fee, self.payer_of[order.auth_code], tid, "PAYERROR")
        self.ledger[no] = entry
        if outcome == "pay":
            entry.state, entry.charged = "SUCCESS", True
            truthful = self._paid(no, entry)
        elif outcome == "userpaying":
            entry.state = "USERPAYING"
            truthful = TradeResult(TradeState.USERPAYING, no, "USERPAYING")
        else:
            truthful = TradeResult(TradeState.FAILED, no, code, "declined")
        return self._spoil(no, reply, truthful)

    async def orderquery(self, *, out_trade_no: str = "", transaction_id: str = "") -> TradeResult:
        no = out_trade_no
        if self.query_faults:
            fault = self.query_faults.pop(0)
            if fault == "return_fail":
                raise BackendRejected("SIGNERROR", "bad signature")
            if fault == "odd_state":
                return TradeResult(TradeState.UNKNOWN, no)
            return self._spoil(no, fault, TradeResult(TradeState.UNKNOWN, no))
        entry = self.ledger.get(no)
        if entry is None:
            return TradeResult(TradeState.NOT_EXIST, no, "ORDERNOTEXIST")
        assert transaction_id in ("", entry.transaction_id)
        if entry.state == "SUCCESS":
            return self._paid(no, entry)
        return TradeResult(TradeState(entry.state), no)

    async def reverse(self, *, out_trade_no: str, transaction_id: str = "") -> ReverseResult:
        no = out_trade_no
        self.reverses.append((no, self.clock.time()))
        entry = self.ledger.get(no)
        if entry is not None and entry.foreign:
            self.foreign_reversed.append(no)
        kind, code = self.reverse_plans.pop(0) if self.reverse_plans else ("truthful", "")
        if kind == "timeout":
            raise BackendUnavailable("reverse: timed out")
        if kind == "untrusted":
            raise ResponseNotTrusted("reverse: forged")
        if kind == "return_fail":
            raise BackendRejected("SIGNERROR", "bad signature")
        if kind in ("recall", "refuse"):
            return ReverseResult(False, kind == "recall", code, "scripted")
        if entry is None:
            return ReverseResult(False, False, "TRADE_ERROR", "no such order")  # strict
        if entry.state == "USERPAYING":
            return ReverseResult(False, True, "USERPAYING", "paying")
        entry.state, entry.charged = "REVOKED", False
        return ReverseResult(True, False)

    @staticmethod
    def _paid(no: str, entry: Entry) -> TradeResult:
        return TradeResult(
            TradeState.SUCCESS,
            no,
            transaction_id=entry.transaction_id,
            openid=entry.openid,
            total_fee=entry.total_fee,
            cash_fee=entry.total_fee,
            bank_type="CMC",
            fee_type="CNY",
            time_end="20250101120000",
        )

    @staticmethod
    def _spoil(no: str, reply: str, truthful: TradeResult) -> TradeResult:
        if reply == "timeout":
            raise BackendUnavailable("timed out")
        if reply == "untrusted":
            raise ResponseNotTrusted("answer signature is missing or wrong")
        if reply == "truthful":
            return truthful
        return TradeResult(TradeState.UNKNOWN, no, reply, "unknown")


class PaymentProperties(RuleBasedStateMachine):
    """Orders, scripted answers, time and restarts; the properties checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="payprop"))
        self.clock = ManualClock()
        self.backend = FakeWxPay(self.clock)
        self.orders: list[str] = []
        self.sources: dict[str, PaymentSource] = {}
        self.logs = structlog.testing.LogCapture()
        structlog.configure(processors=[self.logs])
        self.journal: Journal | None = None
        self.service: PaymentService | None = None
        self.reversals: list[asyncio.Task[Payment]] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize()
    def open(self) -> None:
        self.run(self._open())

    async def _open(self) -> None:
        self.journal = await Journal.open(self.dir / "journal.db", clock=self.clock)
        self.service = PaymentService(self.journal.payments, self.backend, self.clock, TIMINGS)
        await self.service.resume_unfinished()
        await self._quiesce()

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: len(self.orders) < MAX_ORDERS)
    @rule(
        amount=st.sampled_from([1, 888]),
        foreign=st.sampled_from(["", "", "same_amount", "other_amount"]),
        outcome=MICROPAY_OUTCOMES,
        reply=MICROPAY_REPLIES,
        how=st.sampled_from(["face", "code", "scan_then_code"]),
    )
    def new_order(
        self, amount: int, foreign: str, outcome: tuple[str, str], reply: str, how: str
    ) -> None:
        no = f"P{len(self.orders)}"
        self.orders.append(no)
        if foreign:
            fee = amount if foreign == "same_amount" else amount + 1
            self.backend.ledger[no] = Entry(
                fee, "o-someone-else", f"4100{no}", "SUCCESS", foreign=True, charged=True
            )
        self.backend.micropay_plans[no] = (outcome, reply)
        self.run(self._pay(no, amount, how))

    async def _pay(self, no: str, amount: int, how: str) -> None:
        assert self.service is not None
        code = f"13{len(self.orders):016d}"
        self.backend.payer_of[code] = f"o-user-{no}"
        order = PaymentOrder(no, amount, "goods")
        if how == "code":
            await self.service.start_code_pay(order, code)
        else:
            await self.service.begin(order, session_id="s")
            if how == "face":
                await self.service.pay_captured(no, code, f"o-user-{no}", "", 1)
            else:
                await self.service.record_cancelled(no, "SCAN_PAYMENT", "the customer scans")
                await self.service.start_code_pay(order, code)
        self.sources[no] = PaymentSource.FACE if how == "face" else PaymentSource.CODE
        await self._quiesce()

    @rule(fault=QUERY_FAULTS)
    def query_fails_next(self, fault: str) -> None:
        self.backend.query_faults.append(fault)

    @rule(plan=REVERSE_PLANS)
    def reverse_answers_next(self, plan: tuple[str, str]) -> None:
        self.backend.reverse_plans.append(plan)

    @rule(action=st.sampled_from(["SUCCESS", "PAYERROR", "CLOSED", "NOTPAY"]))
    def the_user_acts(self, action: str) -> None:
        """Every order waiting for its user moves on (pays, fails, is closed, or not paid)."""
        for entry in self.backend.ledger.values():
            if entry.state in OPEN:
                entry.state = action
                entry.charged = action == "SUCCESS"

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 7.0, 20.0, 60.0]))
    def time_passes(self, seconds: float) -> None:
        self.run(self._run_for(seconds))

    @precondition(lambda self: bool(self.orders))
    @rule(index=st.integers(0, MAX_ORDERS - 1))
    def the_pos_reverses(self, index: int) -> None:
        """ReversePayment, left running in the background like a POS that waits for it."""
        assert self.service is not None
        no = self.orders[index % len(self.orders)]
        self.reversals.append(self.loop.create_task(self.service.reverse(no)))
        self.run(self._quiesce())

    @rule()
    def restart(self) -> None:
        self.run(self._restart())

    async def _restart(self) -> None:
        assert self.service is not None
        assert self.journal is not None
        await self.service.close(0)
        await self.journal.close()
        await asyncio.gather(*self.reversals, return_exceptions=True)
        self.reversals.clear()
        await self._open()

    # ------------------------------------------------------------------ properties

    @invariant()
    def safe(self) -> None:
        if self.journal is not None:
            self.run(self._check())

    async def _check(self, *, end: bool = False) -> None:
        backend = self.backend
        assert all(n == 1 for n in backend.micropay_calls.values()), backend.micropay_calls
        assert backend.foreign_reversed == [], "another order's money was reversed"
        payments = await self._payments()
        for no, at in backend.reverses:
            sent = payments[no].pay_sent_at
            assert sent is not None, f"{no} reversed, never sent"
            assert at - sent >= TIMINGS.reverse_after - EPSILON, f"{no} reversed too early"
        now = self.clock.time()
        for no, payment in payments.items():
            where = f"{no}: {payment.state} ledger={backend.ledger.get(no)}"
            if payment.state is S.SUCCEEDED:
                assert backend.charged_by(no), f"SUCCEEDED, not paid by this order: {where}"
            if payment.final:
                assert (payment.state is S.SUCCEEDED) == backend.charged_by(no), where
            if payment.state is S.NEEDS_ATTENTION:
                assert payment.attention_reason
                assert payment.attention_action
            sent = payment.pay_sent_at
            if sent is not None and not payment.settled:
                assert now <= await self._bound(no, sent) + EPSILON, f"not settled in time: {where}"
            assert payment.source is self.sources[no], where
            if end:
                seqs = [e.seq for e in await self.journal.payments.events(no)]  # type: ignore[union-attr]
                assert seqs == list(range(1, payment.last_seq + 1)), where
            if end:
                assert sent is not None or payment.state is S.CANCELLED, where
        failures = [e for e in self.logs.entries if e["log_level"] in ("error", "critical")]
        assert failures == [], failures

    async def _bound(self, no: str, sent: float) -> float:
        """When the order must be settled: attention_after past micropay or a manual reverse."""
        assert self.journal is not None
        bound = sent + TIMINGS.attention_after
        window = TIMINGS.attention_after - TIMINGS.give_up_after
        for event in await self.journal.payments.events(no):
            if event.state is S.REVERSING and event.data.get("reason") == "MANUAL":
                bound = max(bound, event.time + window)
        return bound

    async def _payments(self) -> dict[str, Payment]:
        assert self.journal is not None
        page, _ = await self.journal.payments.list(page_size=200)
        return {p.out_trade_no: p for p in page}

    def teardown(self) -> None:
        try:
            if self.journal is not None:
                # Long enough for every order to pass its bound, checked at each timer.
                self.run(self._run_for(TIMINGS.attention_after + TIMINGS.attention_retry_max))
                self.run(self._check(end=True))
                assert self.service is not None
                self.run(self._close())
        finally:
            structlog.reset_defaults()
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    async def _close(self) -> None:
        assert self.service is not None
        assert self.journal is not None
        await self.service.close(0)
        await self.journal.close()
        await asyncio.gather(*self.reversals, return_exceptions=True)

    # ------------------------------------------------------------------ time

    async def _quiesce(self) -> None:
        """Until every payment task waits on the clock."""
        assert self.service is not None
        await quiesce(self.clock, self.service.unfinished_count, "payment")

    async def _run_for(self, seconds: float) -> None:
        """Move the clock timer by timer, checking the properties at each one."""
        await run_timers(self.clock, seconds, self._quiesce, self._check)


PaymentProperties.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPaymentProperties = PaymentProperties.TestCase
