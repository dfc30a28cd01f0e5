"""Property-based: the refund machine over random WeChat Pay answers, faults and restarts.

A hypothesis RuleBasedStateMachine drives the real RefundService and journal (an SQLite file)
against a fake WeChat Pay that keeps its own refund ledger: what really happened to the money.
A refund request may be accepted, answered with any listed or unlisted code, refused whole
(return_code=FAIL), lost on its way, lost after WeChat Pay took it, or arrive late (within the
in-flight window); refundquery may fail; WeChat Pay settles refunds as SUCCESS, REFUNDCLOSE or
CHANGE when a rule says so; a restart closes the service and the journal and resumes from it.
For every run:

- no refund request reaches WeChat Pay while it already has that refund (sent at most once,
  unless a query proved it absent and nothing of ours could still arrive);
- neither the journal's counted refunds nor WeChat Pay's exceed what was paid, and a refusal
  for the sum happens only when the journal's sum would pass it;
- a final refund agrees with WeChat Pay (SUCCEEDED/CLOSED/CHANGE its status, FAILED none);
- a refund not accepted within attention_after of its first send is NEEDS_ATTENTION (or
  settled), and at the end every refund is final or NEEDS_ATTENTION with a reason and action.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from facepayd.clock import ManualClock
from facepayd.errors import BackendUnavailable, RefundExceedsPaid, ResponseNotTrusted
from facepayd.journal import Journal
from facepayd.payments.models import EventKind, PaymentOrder, PaymentState
from facepayd.payments.refund_models import Refund, RefundRequest, RefundState
from facepayd.payments.refunds import RefundService, RefundTimings
from facepayd.wxpay.codes import Api, Disposition, codes_with
from facepayd.wxpay.models import (
    RefundOrder,
    RefundOutcome,
    RefundQueryResult,
    RefundResult,
    RefundStatus,
)
from tests.unit.manual_time import quiesce, run_timers

R = RefundState
PAID = 1000
TIMINGS = RefundTimings(
    poll_interval=1.0,
    poll_max=8.0,
    retry_backoff=0.5,
    retry_backoff_max=4.0,
    throttled_wait=6.0,
    in_flight_after=5.0,
    attention_after=30.0,
    attention_retry=5.0,
    attention_retry_max=20.0,
)
LATE = 4.0  # a late request arrives this long after it was sent: inside the in-flight window
EPSILON = 1e-3
MAX_REFUNDS = 6

SEND_PLANS = st.sampled_from(
    [
        "accept",
        "accept",
        "accept_lost",
        "late",
        "lost",
        "untrusted_taken",
        "rejected",
        "unlisted",
        *(f"code:{c}" for c in sorted(codes_with(Api.REFUND, Disposition.RETRY))),
        *(f"code:{c}" for c in sorted(codes_with(Api.REFUND, Disposition.THROTTLED))),
        *(f"code:{c}" for c in sorted(codes_with(Api.REFUND, Disposition.FAILED))[:6]),
    ]
)
QUERY_FAULTS = st.sampled_from(["SYSTEMERROR", "timeout", "untrusted", "unlisted_status"])
ENDS = st.sampled_from([RefundStatus.SUCCESS, RefundStatus.REFUNDCLOSE, RefundStatus.CHANGE])


@dataclass
class WeChatRefunds:
    """The fake WeChat Pay: its refund ledger is the truth the properties check against."""

    clock: ManualClock
    status: dict[str, RefundStatus] = field(default_factory=dict)
    fee: dict[str, int] = field(default_factory=dict)
    late: list[tuple[float, str, int]] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    query_faults: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    sends: int = 0

    def arrive(self, no: str, fee: int) -> None:
        """A refund request reaches WeChat Pay."""
        if no in self.status:
            self.duplicates.append(no)
            return
        self.status[no] = RefundStatus.PROCESSING
        self.fee[no] = fee

    def deliver_late(self) -> None:
        now = self.clock.time()
        due = [item for item in self.late if item[0] <= now]
        self.late = [item for item in self.late if item[0] > now]
        for _, no, fee in due:
            self.arrive(no, fee)

    def refunded(self) -> int:
        return sum(
            f for no, f in self.fee.items() if self.status[no] is not RefundStatus.REFUNDCLOSE
        )

    async def refund(self, order: RefundOrder) -> RefundResult:
        self.deliver_late()
        self.sends += 1
        plan = self.plans.pop(0) if self.plans else "accept"
        no, fee = order.out_refund_no, order.refund_fee
        accepted = RefundResult(RefundOutcome.ACCEPTED, out_refund_no=no, refund_fee=fee)
        if plan == "accept":
            self.arrive(no, fee)
            return accepted
        if plan == "accept_lost":
            self.arrive(no, fee)
            raise BackendUnavailable("answer lost")
        if plan == "untrusted_taken":
            self.arrive(no, fee)
            raise ResponseNotTrusted("forged")
        if plan == "late":
            self.late.append((self.clock.time() + LATE, no, fee))
            raise BackendUnavailable("timed out")
        if plan == "lost":
            raise BackendUnavailable("connection refused")
        if plan == "rejected":
            return RefundResult(RefundOutcome.REJECTED, err_code="SIGNERROR")
        if plan == "unlisted":
            return RefundResult(RefundOutcome.UNKNOWN, err_code="SOMETHING_NEW")
        code = plan.removeprefix("code:")
        if no in self.status:
            # WeChat Pay answers a known number as the first time; the duplicate is recorded.
            self.duplicates.append(no)
            return accepted
        if code in codes_with(Api.REFUND, Disposition.FAILED):
            return RefundResult(RefundOutcome.FAILED, err_code=code)
        return RefundResult(RefundOutcome.RETRY, err_code=code)

    async def refundquery(self, *, out_refund_no: str) -> RefundQueryResult:
        self.deliver_late()
        fault = self.query_faults.pop(0) if self.query_faults else ""
        if fault == "timeout":
            raise BackendUnavailable("timed out")
        if fault == "untrusted":
            raise ResponseNotTrusted("bad sign")
        if fault == "SYSTEMERROR":
            return RefundQueryResult(RefundStatus.UNKNOWN, err_code="SYSTEMERROR")
        if fault == "unlisted_status":
            return RefundQueryResult(RefundStatus.UNKNOWN)
        status = self.status.get(out_refund_no)
        if status is None:
            return RefundQueryResult(RefundStatus.NOT_EXIST, err_code="REFUNDNOTEXIST")
        return RefundQueryResult(
            status, out_refund_no=out_refund_no, refund_fee=self.fee[out_refund_no]
        )


class RefundProperties(RuleBasedStateMachine):
    """Refunds, scripted answers, time and restarts; the properties checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="refundprop"))
        self.clock = ManualClock()
        self.wechat = WeChatRefunds(self.clock)
        self.numbers: list[str] = []
        self.logs = structlog.testing.LogCapture()
        structlog.configure(processors=[self.logs])
        self.journal: Journal | None = None
        self.service: RefundService | None = None

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize()
    def open(self) -> None:
        self.run(self._open(first=True))

    async def _open(self, *, first: bool = False) -> None:
        self.journal = await Journal.open(self.dir / "journal.db", clock=self.clock)
        if first:
            store = self.journal.payments
            await store.create_payment(PaymentOrder("T1", PAID, "goods"))
            await store.append("T1", PaymentState.PAYING, EventKind.FACE_CAPTURED)
            await store.mark_pay_sent("T1")
            await store.append("T1", PaymentState.SUCCEEDED, EventKind.SUCCEEDED)
        self.service = RefundService(self.journal.refunds, self.wechat, self.clock, TIMINGS)
        await self.service.resume_unfinished()
        await self._quiesce()

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: len(self.numbers) < MAX_REFUNDS)
    @rule(fee=st.sampled_from([1, 100, 300, 600]), plans=st.lists(SEND_PLANS, max_size=3))
    def the_pos_refunds(self, fee: int, plans: list[str]) -> None:
        no = f"R{len(self.numbers)}"
        self.numbers.append(no)
        self.wechat.plans.extend(plans)
        self.run(self._refund(no, fee))

    async def _refund(self, no: str, fee: int) -> None:
        assert self.service is not None
        assert self.journal is not None
        counted = sum(r.refund_fee for r in await self._refunds() if r.state.counts)
        try:
            await self.service.refund(RefundRequest(no, "T1", fee))
        except RefundExceedsPaid:
            assert counted + fee > PAID, "refused a refund that fits"
        else:
            assert counted + fee <= PAID, "accepted a refund past what was paid"
        await self._quiesce()

    @rule(plans=st.lists(SEND_PLANS, min_size=1, max_size=3))
    def next_sends_answer(self, plans: list[str]) -> None:
        self.wechat.plans.extend(plans)

    @rule(fault=QUERY_FAULTS)
    def next_query_fails(self, fault: str) -> None:
        self.wechat.query_faults.append(fault)

    @rule(end=ENDS)
    def wechat_settles(self, end: RefundStatus) -> None:
        for no, status in self.wechat.status.items():
            if status is RefundStatus.PROCESSING:
                self.wechat.status[no] = end

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 6.0, 20.0, 60.0]))
    def time_passes(self, seconds: float) -> None:
        self.run(self._run_for(seconds))

    @rule()
    def restart(self) -> None:
        self.run(self._restart())

    async def _restart(self) -> None:
        assert self.service is not None
        assert self.journal is not None
        await self.service.close(0)
        await self.journal.close()
        await self._open()

    # ------------------------------------------------------------------ properties

    @invariant()
    def safe(self) -> None:
        if self.journal is not None:
            self.run(self._check())

    async def _check(self, *, end: bool = False) -> None:
        wechat = self.wechat
        wechat.deliver_late()
        assert wechat.duplicates == [], f"sent while WeChat Pay had it: {wechat.duplicates}"
        assert wechat.refunded() <= PAID
        refunds = await self._refunds()
        assert sum(r.refund_fee for r in refunds if r.state.counts) <= PAID
        now = self.clock.time()
        for refund in refunds:
            no = refund.out_refund_no
            truth = wechat.status.get(no)
            where = f"{no}: {refund.state} wechat={truth}"
            if refund.state is R.SUCCEEDED:
                assert truth is RefundStatus.SUCCESS, where
            if refund.state is R.CLOSED:
                assert truth is RefundStatus.REFUNDCLOSE, where
            if refund.state is R.CHANGE:
                assert truth is RefundStatus.CHANGE, where
            if refund.state is R.FAILED:
                assert truth is None, where
                assert all(item[1] != no for item in wechat.late), where
            if refund.state in (R.NEEDS_ATTENTION, R.CHANGE):
                assert refund.attention_reason, where
                assert refund.attention_action, where
            if refund.state is R.SENDING and refund.first_sent_at is not None:
                bound = refund.first_sent_at + TIMINGS.attention_after + TIMINGS.throttled_wait
                assert now <= bound + EPSILON, f"not accepted nor NEEDS_ATTENTION in time: {where}"
            if end:
                assert refund.settled, where
        failures = [e for e in self.logs.entries if e["log_level"] in ("error", "critical")]
        assert failures == [], failures

    async def _refunds(self) -> list[Refund]:
        assert self.journal is not None
        page, _ = await self.journal.refunds.for_payment("T1", page_size=50)
        return page

    def teardown(self) -> None:
        try:
            if self.journal is not None:
                self.wechat.plans.clear()
                self.wechat.query_faults.clear()
                self.run(self._run_for(TIMINGS.attention_after + TIMINGS.attention_retry_max))
                self.wechat_settles(RefundStatus.SUCCESS)
                self.run(self._run_for(2 * TIMINGS.attention_retry_max))
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

    # ------------------------------------------------------------------ time

    async def _quiesce(self) -> None:
        """Until every refund task waits on the clock."""
        assert self.service is not None
        await quiesce(self.clock, self.service.unfinished_count, "refund")

    async def _run_for(self, seconds: float) -> None:
        """Move the clock timer by timer, checking the properties at each one."""
        await run_timers(self.clock, seconds, self._quiesce, self._check)


RefundProperties.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRefundProperties = RefundProperties.TestCase
