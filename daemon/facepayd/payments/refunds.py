"""Refunds: the machine that settles one refund from the journal, and the service that owns them.

Journal-first, like payments: a refund is RECORDED (its sum against the paid amount checked in
the same transaction) before anything is sent, and SENDING is committed before each request goes
out. A refund in SENDING may be at WeChat Pay, so it is only ever queried (refundquery by
out_refund_no); it is sent again, with the same out_refund_no, only when the query says WeChat
Pay has no such refund AND no request of ours can still arrive: the last one was answered, or
in_flight_after has passed since it went out. WeChat Pay also treats a repeated out_refund_no as
the same refund (its documentation asks for exactly that after a failure), so a resend can never
refund twice; the query first is what the daemon relies on, that idempotency is a second guard.

Every refund ends SUCCEEDED, CLOSED (REFUNDCLOSE), CHANGE (the money went to an abnormal account:
an operator settles it) or FAILED (a definite error: nothing refunded), or, not accepted by
WeChat Pay within attention_after of its first send, NEEDS_ATTENTION, still queried (and sent
again when proven absent) at a slow, capped cadence. An accepted refund (PROCESSING) is queried
until it ends: refunds to a bank card can take days, so it becomes NEEDS_ATTENTION only past
processing_attention_after (days) or after processing_attention_answers answers in a row that
cannot settle it; it is then still queried at the slow cadence, and never sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog

from facepayd.clock import Clock
from facepayd.errors import (
    ConfigError,
    FacepayError,
    InvalidArgument,
    NotFound,
    Unavailable,
    WrongState,
)
from facepayd.payments.owned import OwnedTasks
from facepayd.payments.ports import RefundBackend, RefundJournal, RefundList
from facepayd.payments.refund_models import (
    NOT_SENT,
    OUT_REFUND_NO_USED,
    Refund,
    RefundEvent,
    RefundRequest,
    RefundState,
)
from facepayd.wxpay.codes import Api, Disposition, classify
from facepayd.wxpay.models import RefundOrder, RefundOutcome, RefundQueryResult, RefundStatus

__all__ = [
    "ACTIONS",
    "OUT_REFUND_NO_USED",
    "PROCESSING_UNRESOLVED",
    "REFUND_CHANGE",
    "UNRESOLVED",
    "RefundMachine",
    "RefundService",
    "RefundServiceClosed",
    "RefundTimings",
]

log = structlog.get_logger(__name__)

# Reasons of sending events.
FIRST = "FIRST"
RESEND = "NOT_FOUND_RESEND"  # a query found no such refund, and nothing of ours is in flight
RETRY = "RETRY"  # the POS asked again for a FAILED refund
DAEMON_RESTARTED = "DAEMON_RESTARTED"
INTERNAL_ERROR = "INTERNAL_ERROR"

# Attention reasons (NEEDS_ATTENTION, CHANGE) and the operator's action for each.
UNRESOLVED = "REFUND_UNRESOLVED"
PROCESSING_UNRESOLVED = "REFUND_PROCESSING_UNRESOLVED"
REFUND_CHANGE = "REFUND_CHANGE"
ACTIONS = {
    UNRESOLVED: "check the refund in the merchant platform; the daemon keeps querying it and sends"
    " it again, with the same out_refund_no, only while WeChat Pay has no such refund",
    PROCESSING_UNRESOLVED: "WeChat Pay accepted the refund but it has not ended: check it in the"
    " merchant platform; the daemon keeps querying it slowly and never sends it again",
    REFUND_CHANGE: "the refund went to an abnormal account (the payer's card is closed or frozen):"
    " settle it in the merchant platform's abnormal refunds (退款异常), to the payer's balance or"
    " by another route",
}


@dataclass(frozen=True, slots=True)
class RefundTimings:
    """The refund machine's timers, in seconds."""

    poll_interval: float = 5.0  # first query of an accepted refund; doubles up to poll_max
    poll_max: float = 300.0
    retry_backoff: float = 1.0  # first wait after an unclear answer; doubles up to the max
    retry_backoff_max: float = 30.0
    # FREQUENCY_LIMITED / INVALID_REQ_TOO_MUCH: "请在1分钟后再来重试".
    throttled_wait: float = 60.0
    # No refund request of ours can still reach WeChat Pay this long after it was sent: at least
    # the WeChat Pay client's whole-request timeout. Only then does REFUNDNOTEXIST mean "never".
    in_flight_after: float = 30.0
    attention_after: float = 120.0  # not accepted this long after the first send
    attention_retry: float = 60.0
    attention_retry_max: float = 900.0
    # Accepted (PROCESSING) but not ended this long after the first send (bank cards take
    # days), or after this many answers in a row that cannot settle it: NEEDS_ATTENTION.
    processing_attention_after: float = 3 * 86_400.0
    processing_attention_answers: int = 10

    def __post_init__(self) -> None:
        # A zero wait would turn a retry loop into a tight one.
        for name in ("poll_interval", "retry_backoff", "attention_retry"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        if self.processing_attention_answers < 1:
            raise ValueError("processing_attention_answers must be at least 1")


class RefundMachine:
    """Settles one refund; every step is journaled before the call it leads to."""

    def __init__(
        self,
        out_refund_no: str,
        *,
        journal: RefundJournal,
        backend: RefundBackend,
        clock: Clock,
        timings: RefundTimings,
    ) -> None:
        self._no = out_refund_no
        self._journal = journal
        self._backend = backend
        self._clock = clock
        self._timings = timings
        self._log = log.bind(out_refund_no=out_refund_no)
        # What the latest send of this run learnt; a resumed run knows nothing (the safe side).
        self._answered = False  # it was answered: nothing of ours is in flight
        self._rejected = ""  # its return_code=FAIL code: REFUNDNOTEXIST then means FAILED
        self._wait = 0.0  # before the next query (a retry code asks for patience)
        self._backoff = timings.retry_backoff
        self._attend_delay = timings.attention_retry

    async def run(self, reason: str = FIRST) -> Refund:
        """Drive the refund from its journaled state to a final state."""
        refund = await self._journal.get(self._no)
        while not refund.final:
            match refund.state:
                case RefundState.RECORDED:
                    refund = await self._send(reason)
                case RefundState.SENDING:
                    refund = await self._resolve()
                case RefundState.PROCESSING:
                    refund = await self._poll()
                case RefundState.NEEDS_ATTENTION:
                    refund = await self._attend()
                case _:  # pragma: no cover - every unfinished state is matched above
                    raise AssertionError(refund.state)
        return refund

    # ------------------------------------------------------------------ steps

    async def _send(self, reason: str) -> Refund:
        """Journal SENDING, then send the refund once."""
        refund = await self._journal.mark_sending(self._no, reason)
        if refund.state is not RefundState.SENDING:
            # The journal failed it: the payment is no longer refundable. Nothing is sent.
            return refund
        self._answered, self._rejected, self._wait = False, "", 0.0
        order = RefundOrder(
            out_refund_no=self._no,
            total_fee=refund.total_fee,
            refund_fee=refund.refund_fee,
            out_trade_no=refund.out_trade_no,
            transaction_id=refund.transaction_id,
            refund_desc=refund.request.refund_desc,
            refund_account=refund.request.refund_account,
        )
        try:
            result = await self._backend.refund(order)
        except (InvalidArgument, ConfigError) as exc:
            # The client's own checks, before the POST: nothing was sent, and sending it again
            # would be refused the same way. Never "may have arrived".
            self._log.error("refund_not_sent", reason=exc.reason, error=str(exc))
            return await self._fail(
                NOT_SENT, f"refused before sending; nothing left the terminal: {exc}"
            )
        except FacepayError as exc:
            # No answer we can use: the request may have arrived. Only a query may follow.
            self._log.warning("refund_request_failed", reason=exc.reason, error=str(exc))
            return refund
        match result.outcome:
            case RefundOutcome.ACCEPTED:
                self._backoff = self._timings.retry_backoff
                data: dict[str, str | int] = {
                    "refund_id": result.refund_id,
                    "refund_fee": result.refund_fee or refund.refund_fee,
                    "settlement_refund_fee": result.settlement_refund_fee,
                    "cash_refund_fee": result.cash_refund_fee,
                    "coupon_refund_fee": result.coupon_refund_fee,
                }
                updates = {k: v for k, v in data.items() if k != "refund_fee"}
                if result.transaction_id:
                    updates["transaction_id"] = result.transaction_id
                return await self._to(RefundState.PROCESSING, data, **updates)
            case RefundOutcome.FAILED:
                return await self._fail(result.err_code, result.err_code_des)
            case RefundOutcome.RETRY:
                self._answered = True
                throttled = classify(Api.REFUND, result.err_code) is Disposition.THROTTLED
                self._wait = self._timings.throttled_wait if throttled else self._next_backoff()
                self._log.info("refund_retry", err_code=result.err_code, wait=self._wait)
            case RefundOutcome.REJECTED:
                self._answered, self._rejected = True, result.err_code or "REJECTED"
                self._log.warning("refund_rejected", err_code=result.err_code)
            case _:
                # An unlisted code: an answer, but not a known one; it may hide an acceptance.
                self._log.warning("refund_answer_unknown", err_code=result.err_code)
        return refund

    async def _resolve(self) -> Refund:
        """SENDING: query until the refund is found, proven absent (then resend), or overdue."""
        t = self._timings
        while True:
            if self._wait > 0:
                await self._clock.sleep(self._wait)
            answer = await self._ask()
            done = await self._conclude(answer)
            if done is not None:
                return done
            refund = await self._journal.get(self._no)
            since_sent = self._since(refund.sent_at)
            overdue = self._since(refund.first_sent_at) >= t.attention_after
            if answer.status is RefundStatus.NOT_EXIST:
                if self._rejected:
                    return await self._fail(
                        self._rejected,
                        "WeChat Pay refused the refund request and has no such refund",
                    )
                if (self._answered or since_sent >= t.in_flight_after) and not overdue:
                    return await self._send(RESEND)
            if overdue:
                return await self._attention(UNRESOLVED, "WeChat Pay has not accepted the refund")
            self._wait = self._next_backoff()
            if answer.status is RefundStatus.NOT_EXIST and not self._answered:
                # Ask again as soon as the in-flight window closes, not a backoff later.
                self._wait = min(self._wait, max(t.in_flight_after - since_sent, 0.0) + 0.001)

    async def _poll(self) -> Refund:
        """PROCESSING: query at a doubling, capped interval until the refund ends.

        Not ended within processing_attention_after of the first send, or answered in a way
        that cannot settle it processing_attention_answers times in a row: NEEDS_ATTENTION,
        still queried (slowly, by _attend), never sent again.
        """
        t = self._timings
        delay = t.poll_interval
        unsettling = 0
        while True:
            await self._clock.sleep(delay)
            answer = await self._ask()
            refund = await self._journal.get(self._no)
            done = await self._conclude(answer)
            if done is not None and done.state is not RefundState.PROCESSING:
                return done
            why = self._cannot_settle(refund, answer)
            if why:
                unsettling += 1
                self._log.warning("accepted_refund_unsettled", why=why, in_a_row=unsettling)
            elif answer.status is not RefundStatus.UNKNOWN:
                unsettling = 0
            if unsettling >= t.processing_attention_answers:
                return await self._attention(
                    PROCESSING_UNRESOLVED,
                    f"WeChat Pay accepted the refund, then answered {unsettling} times in a row:"
                    f" {why}",
                )
            if self._since(refund.first_sent_at) >= t.processing_attention_after:
                return await self._attention(
                    PROCESSING_UNRESOLVED, "WeChat Pay accepted the refund; it has not ended"
                )
            delay = min(delay * 2, t.poll_max)

    @staticmethod
    def _cannot_settle(refund: Refund, answer: RefundQueryResult) -> str:
        """Why a query answer about an accepted refund can never settle it ("" when it can)."""
        if answer.status is RefundStatus.NOT_EXIST:
            return "no such refund (REFUNDNOTEXIST)"
        definite = classify(Api.REFUNDQUERY, answer.err_code) is Disposition.FAILED
        if answer.status is RefundStatus.UNKNOWN and answer.err_code and definite:
            return f"a definite query error ({answer.err_code})"
        if answer.refund_fee not in (0, refund.refund_fee):
            return "a refund of another amount"
        return ""

    async def _attend(self) -> Refund:
        """NEEDS_ATTENTION: one slow query; a refund proven absent is sent again.

        Never for one WeChat Pay accepted (PROCESSING_UNRESOLVED): that one is only queried.
        """
        t = self._timings
        delay = self._attend_delay
        await self._clock.sleep(delay)
        self._attend_delay = min(max(delay * 2, t.attention_retry), t.attention_retry_max)
        answer = await self._ask()
        done = await self._conclude(answer)
        if done is not None:
            return done
        refund = await self._journal.get(self._no)
        if refund.attention_reason == PROCESSING_UNRESOLVED:
            return refund
        if answer.status is RefundStatus.NOT_EXIST and (
            self._answered or self._since(refund.sent_at) >= t.in_flight_after
        ):
            if self._rejected:
                return await self._fail(self._rejected, "WeChat Pay has no such refund")
            return await self._send(RESEND)
        return refund

    # ------------------------------------------------------------------ answers

    async def _ask(self) -> RefundQueryResult:
        """Query once; UNKNOWN when there is no usable answer."""
        try:
            answer = await self._backend.refundquery(out_refund_no=self._no)
        except FacepayError as exc:
            self._log.warning("refundquery_failed", reason=exc.reason, error=str(exc))
            return RefundQueryResult(RefundStatus.UNKNOWN, out_refund_no=self._no)
        self._log.debug("refundquery", status=answer.status.value, err_code=answer.err_code)
        return answer

    async def _conclude(self, answer: RefundQueryResult) -> Refund | None:
        """The state a query answer decides, journaled; None when it decides nothing new."""
        refund = await self._journal.get(self._no)
        if self._foreign(refund, answer):
            if refund.state is RefundState.PROCESSING:
                # WeChat Pay accepted our request for our order under this number: the row is
                # not one we can trust, and it is never taken as ours.
                self._log.warning("refund_answer_for_another_order")
                return None
            self._log.warning("refund_number_used_by_another_order")
            return await self._fail(
                OUT_REFUND_NO_USED,
                "WeChat Pay has a refund of another order under this out_refund_no (another"
                " till of the merchant used it); nothing of this payment was refunded: refund"
                " it again with a new out_refund_no",
            )
        if answer.status in (
            RefundStatus.SUCCESS,
            RefundStatus.CHANGE,
            RefundStatus.PROCESSING,
        ) and answer.refund_fee not in (0, refund.refund_fee):
            # The number holds another amount: not a refund we sent. Never taken as ours.
            self._log.warning("refund_answer_amount_differs", refund_fee=answer.refund_fee)
            return None
        amounts: dict[str, str | int] = {
            "refund_id": answer.refund_id,
            "settlement_refund_fee": answer.settlement_refund_fee,
            "cash_refund_fee": answer.cash_refund_fee,
            "coupon_refund_fee": answer.coupon_refund_fee,
            "refund_channel": answer.refund_channel,
        }
        amounts = {k: v for k, v in amounts.items() if v}
        match answer.status:
            case RefundStatus.SUCCESS:
                data = {
                    **amounts,
                    "refund_fee": refund.refund_fee,
                    "success_time": answer.success_time,
                    "recv_account": answer.recv_account,
                }
                updates = {k: v for k, v in data.items() if k != "refund_fee"}
                return await self._to(RefundState.SUCCEEDED, data, **updates)
            case RefundStatus.REFUNDCLOSE:
                return await self._to(
                    RefundState.CLOSED,
                    {
                        "reason": "REFUNDCLOSE",
                        "description": "WeChat Pay closed the refund; nothing was refunded",
                    },
                    **amounts,
                )
            case RefundStatus.CHANGE:
                action = ACTIONS[REFUND_CHANGE]
                self._log.warning("refund_needs_attention", reason=REFUND_CHANGE, action=action)
                return await self._to(
                    RefundState.CHANGE,
                    {
                        "recv_account": answer.recv_account,
                        "action": action,
                        "description": "the refund could not reach the payer's account",
                    },
                    **amounts,
                    recv_account=answer.recv_account,
                    attention_reason=REFUND_CHANGE,
                    attention_action=action,
                )
            case RefundStatus.PROCESSING:
                if refund.state is RefundState.PROCESSING or (
                    refund.attention_reason == PROCESSING_UNRESOLVED
                ):
                    # Still processing: nothing new (an operator was already asked to look).
                    return None
                return await self._to(
                    RefundState.PROCESSING, {**amounts, "refund_fee": refund.refund_fee}, **amounts
                )
            case _:
                return None

    @staticmethod
    def _foreign(refund: Refund, answer: RefundQueryResult) -> bool:
        """A found refund row whose order (out_trade_no, transaction_id) is not our payment's."""
        if answer.status in (RefundStatus.NOT_EXIST, RefundStatus.UNKNOWN):
            return False
        if answer.out_trade_no and answer.out_trade_no != refund.out_trade_no:
            return True
        return bool(
            answer.transaction_id
            and refund.transaction_id
            and answer.transaction_id != refund.transaction_id
        )

    async def _attention(self, reason: str, description: str) -> Refund:
        refund = await self._journal.get(self._no)
        if refund.state is RefundState.NEEDS_ATTENTION and refund.attention_reason == reason:
            return refund
        action = ACTIONS[reason]
        self._log.warning("refund_needs_attention", reason=reason, action=action)
        # _attend_delay is not reset: a resend that ends here again keeps the backed-off
        # cadence, doubling to attention_retry_max.
        return await self._to(
            RefundState.NEEDS_ATTENTION,
            {"reason": reason, "action": action, "description": description},
            attention_reason=reason,
            attention_action=action,
        )

    async def _fail(self, err_code: str, description: str) -> Refund:
        return await self._to(
            RefundState.FAILED,
            {"err_code": err_code, "description": description},
            err_code=err_code,
            err_code_des=description,
        )

    async def _to(self, state: RefundState, data: dict[str, str | int], **updates: Any) -> Refund:
        await self._journal.append(self._no, state, data, **updates)
        return await self._journal.get(self._no)

    def _since(self, wall: float | None) -> float:
        return 0.0 if wall is None else max(0.0, self._clock.time() - wall)

    def _next_backoff(self) -> float:
        wait = self._backoff
        self._backoff = min(self._backoff * 2, self._timings.retry_backoff_max)
        return wait


class RefundServiceClosed(Unavailable):
    """The daemon is stopping: no new refund work is accepted."""

    reason = "UNAVAILABLE"


class RefundService:
    """Owns refund tasks; RPC handlers only start them and watch the journal.

    Requests come validated by the API layer's rules (rpc/refunds.py); the amount against the
    payment is the journal's to check, atomically.
    """

    def __init__(
        self,
        journal: RefundJournal,
        backend: RefundBackend,
        clock: Clock,
        timings: RefundTimings,
        *,
        available: bool = True,
    ) -> None:
        self._journal = journal
        self._backend = backend
        self._clock = clock
        self._timings = timings
        # False without the merchant certificate: refund is a /secapi call.
        self._available = available
        # The refund tasks by out_refund_no, their watchers, and the refunds in NEEDS_ATTENTION.
        self._owned: OwnedTasks[str, Refund] = OwnedTasks("refund", clock, RefundServiceClosed)
        journal.add_listener(self._on_event)

    async def refund(self, request: RefundRequest, *, retry_failed: bool = False) -> Refund:
        """Record a refund and start sending it; the same parameters re-attach.

        retry_failed: a FAILED refund with these parameters is recorded and sent again, with
        the same out_refund_no, as WeChat Pay asks after a failure.
        """
        self._owned.check_open()
        if not self._available:
            raise ConfigError("refunds need the merchant API certificate (merchant.cert)")
        refund, created = await self._journal.create_refund(request)
        if not created and retry_failed and refund.state is RefundState.FAILED:
            await self._journal.retry_failed(refund.out_refund_no)
            refund = await self._journal.get(refund.out_refund_no)
            created = True
        if not refund.final and refund.out_refund_no not in self._owned.tasks:
            reason = (RETRY if retry_failed else FIRST) if created else DAEMON_RESTARTED
            self._spawn(refund.out_refund_no, reason)
        return refund

    async def get(self, out_refund_no: str) -> Refund:
        """One refund, or NotFound."""
        return await self._journal.get(out_refund_no)

    async def for_payment(
        self, out_trade_no: str, page_size: int = 50, page_token: str = ""
    ) -> tuple[RefundList, str]:
        """A payment's refunds, oldest first, and the next page's token."""
        return await self._journal.for_payment(out_trade_no, page_size, page_token)

    async def refunded_fee(self, out_trade_no: str) -> int:
        """What the payment's SUCCEEDED refunds gave back, in fen."""
        return await self._journal.refunded_fee(out_trade_no)

    def watch(self, out_refund_no: str, after_seq: int = 0) -> AsyncIterator[RefundEvent]:
        """Events after after_seq from the journal, then live ones; ends once settled."""
        return self._owned.watch(out_refund_no, after_seq, self._journal.events, self._journal.get)

    async def resume_unfinished(self) -> int:
        """Start a task for every unfinished journaled refund; call before reporting ready."""
        self._owned.check_open()
        unfinished = [
            (r.out_refund_no, r.state is RefundState.NEEDS_ATTENTION)
            for r in await self._journal.unfinished()
        ]
        return self._owned.resume(unfinished, lambda no: self._drive(no, DAEMON_RESTARTED))

    def unfinished_count(self) -> int:
        """Refunds being settled in the background."""
        return len(self._owned.tasks)

    def needs_attention_count(self) -> int:
        """Refunds in NEEDS_ATTENTION."""
        return len(self._owned.needs_attention)

    async def needing_attention(self) -> RefundList:
        """The refunds in NEEDS_ATTENTION, oldest first."""
        return [
            r for r in await self._journal.unfinished() if r.state is RefundState.NEEDS_ATTENTION
        ]

    async def close(self, grace: float) -> None:
        """Let refund tasks finish for up to grace seconds, then cancel them (resumable)."""
        await self._owned.close(grace)

    # ------------------------------------------------------------------ internals

    def _machine(self, out_refund_no: str) -> RefundMachine:
        return RefundMachine(
            out_refund_no,
            journal=self._journal,
            backend=self._backend,
            clock=self._clock,
            timings=self._timings,
        )

    def _spawn(self, out_refund_no: str, reason: str) -> asyncio.Task[Refund]:
        return self._owned.spawn(out_refund_no, self._drive(out_refund_no, reason))

    async def _drive(self, out_refund_no: str, reason: str) -> Refund:
        """Run the machine; after a failure, resume from the journal with capped backoff.

        A step that could not journal its next state never made the call that state leads to.
        """
        structlog.contextvars.bind_contextvars(out_refund_no=out_refund_no)
        delay = self._timings.retry_backoff
        while True:
            try:
                return await self._machine(out_refund_no).run(reason)
            except WrongState as exc:
                # A refused transition is a bug or a race (the table logged it at error): the
                # refund is left only once the journal says it is final, else tried again.
                refund = await self._journal.get(out_refund_no)
                if refund.final:
                    log.warning("refund_step_refused", error=str(exc), state=refund.state.value)
                    return refund
                log.exception("refund_step_refused", state=refund.state.value, retry_in=delay)
            except NotFound:
                log.exception("refund_missing_from_journal")
                raise
            except Exception:
                log.exception("refund_task_failed", retry_in=delay)
            await self._clock.sleep(delay)
            delay = min(delay * 2, self._timings.retry_backoff_max)
            reason = INTERNAL_ERROR

    def _on_event(self, event: RefundEvent) -> None:
        """Journal listener: one log line per state change, and wake the refund's watchers."""
        log.info(
            "refund_event",
            out_refund_no=event.out_refund_no,
            out_trade_no=event.out_trade_no,
            seq=event.seq,
            state=event.state.value,
            kind=event.kind.value,
            **event.data,
        )
        self._owned.notify(event.out_refund_no, event.state is RefundState.NEEDS_ATTENTION)
