"""The micropay state machine for one order: pay once, query, reverse while the outcome is unknown.

Every state is journaled before the external call it leads to, so a run cut anywhere resumes
correctly from the journal, and a journal that cannot record the next state (JournalError)
stops the machine before that call. Micropay is sent at most once per order, ever: the
journal's pay_sent_at is set (atomically, only if unset) before the request goes out, and a
resumed order is only ever queried or reversed.

Every order ends SUCCEEDED, FAILED, REVERSED or CLOSED, or, once pay_sent_at + attention_after
has passed, NEEDS_ATTENTION: the reason and the operator's action are journaled, and the order
is still retried at a slow, capped cadence (attention_retry doubling to attention_retry_max).
The rules (DESIGN.md, "Face sessions and payments"):
- a paid answer is ours only for our out_trade_no and amount; an orderquery answer also needs
  the payer of the captured face. Another order's paid number is FAILED(OUT_TRADE_NO_USED),
  never SUCCEEDED and never reversed;
- SYSTEMERROR, BANKERROR, timeouts, untrusted answers and return_code=FAIL: query at once, then
  every poll_interval; after return_code=FAIL, ORDERNOTEXIST means FAILED;
- still open give_up_after past pay_sent_at: reverse (never sooner than reverse_after);
- ORDERNOTEXIST once in_flight_after has passed (no micropay of ours can still arrive): one
  reverse attempt, then CLOSED ("never reached WeChat Pay");
- recall=Y or a failed call: reverse again with capped backoff; a definite refusal (recall=N)
  ends the reversing: a query decides, else NEEDS_ATTENTION (REVERSE_EXPIRE: refund it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from facepayd.clock import Clock, wait_event
from facepayd.errors import BackendRejected, ConfigError, FacepayError, InvalidArgument, WrongState
from facepayd.payments.models import (
    Coupon,
    EventKind,
    PaidDetails,
    Payment,
    PaymentEvent,
    PaymentState,
    paid_to_json,
)
from facepayd.payments.ports import PaymentBackend, PaymentJournal
from facepayd.payments.progress import Activity, Progress, ProgressHub
from facepayd.wxpay.codes import Api, Disposition, classify
from facepayd.wxpay.models import MicropayOrder, ReverseResult, TradeResult, TradeState

__all__ = [
    "DAEMON_RESTARTED",
    "History",
    "PaymentMachine",
    "PaymentTimings",
    "history",
]

log = structlog.get_logger(__name__)

# Reasons written into pending/reversing/reversed/cancelled/closed events.
DAEMON_RESTARTED = "DAEMON_RESTARTED"
INTERNAL_ERROR = "INTERNAL_ERROR"
TIMEOUT = "TIMEOUT"
MANUAL = "MANUAL"
REVOKED = "REVOKED"
RESPONSE_MISMATCH = "RESPONSE_MISMATCH"
ORDER_NOT_FOUND = "ORDER_NOT_FOUND"  # reversing: orderquery says WeChat Pay has no such order
NEVER_REACHED = "NEVER_REACHED_WECHAT_PAY"
OUT_TRADE_NO_USED = "OUT_TRADE_NO_USED"
# SUCCEEDED from NEEDS_ATTENTION(REVERSE_EXPIRE): orderquery says REFUND, the refund was made.
REFUNDED = "REFUNDED"
# FAILED err_code: the WeChat Pay client refused micropay before sending it; nothing was sent.
NOT_SENT = "NOT_SENT"

# NEEDS_ATTENTION reasons; UNRESOLVED keeps calling reverse, the others keep querying.
REVERSE_EXPIRE = "REVERSE_EXPIRE"
REVERSE_REFUSED = "REVERSE_REFUSED"
UNRESOLVED = "UNRESOLVED"
ACTIONS = {
    REVERSE_EXPIRE: "refund it in the merchant platform if the customer was charged;"
    " it is too old to be reversed",
    REVERSE_REFUSED: "check the order and the merchant account in the merchant platform,"
    " and refund it there if the customer was charged",
    UNRESOLVED: "check the order in the merchant platform; the daemon keeps trying to reverse it",
    OUT_TRADE_NO_USED: "check the order number in the merchant platform: it is used by another"
    " order, which is not reversed; retry the sale with a new out_trade_no",
}

# PENDING events name the micropay answer the machine must remember after a restart.
_ANSWER = "answer"
_NUMBER_USED = "number_used"
_REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class PaymentTimings:
    """The state machine's timers, in seconds (WeChat's production values by default)."""

    poll_interval: float = 5.0  # between order queries while the outcome is open
    reverse_after: float = 15.0  # never reverse sooner than this after micropay was sent
    give_up_after: float = 30.0  # still unknown this long after micropay: reverse
    reverse_backoff: float = 1.0  # first wait before calling reverse (or a failed step) again
    reverse_backoff_max: float = 30.0
    # No micropay of ours can still reach WeChat Pay this long after it was sent: at least the
    # WeChat Pay client's whole-request timeout. Only then does ORDERNOTEXIST mean "never".
    in_flight_after: float = 30.0
    # Not settled this long after micropay: NEEDS_ATTENTION, retried at the slow cadence.
    attention_after: float = 120.0
    attention_retry: float = 60.0
    attention_retry_max: float = 900.0

    def __post_init__(self) -> None:
        # A zero wait would turn a retry loop into a tight one.
        for name in ("poll_interval", "reverse_backoff", "attention_retry"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")


@dataclass(frozen=True, slots=True)
class History:
    """What the machine must know from an order's journaled events after a restart."""

    number_used: bool = False  # micropay said ORDERPAID/OUT_TRADE_NO_USED: never reverse
    rejected: str = ""  # micropay's return_code=FAIL code: ORDERNOTEXIST then means FAILED
    reversing_reason: str = TIMEOUT
    reversing_since: float | None = None  # wall time REVERSING was last entered


def history(events: Iterable[PaymentEvent]) -> History:
    """The facts the machine keeps in an order's events."""
    number_used, rejected = False, ""
    reason, since = TIMEOUT, None
    for event in events:
        if event.state is PaymentState.PENDING:
            answer = event.data.get(_ANSWER)
            number_used = number_used or answer == _NUMBER_USED
            if answer == _REJECTED:
                rejected = str(event.data.get("reason", ""))
        elif event.state is PaymentState.REVERSING:
            reason, since = str(event.data.get("reason", TIMEOUT)), event.time
    return History(number_used, rejected, reason, since)


# ---------------------------------------------------------------- what a query says


class _Verdict(enum.StrEnum):
    """What one orderquery answer says about this order."""

    PAID = "paid"  # our order, paid
    NOT_OURS = "not_ours"  # the number belongs to another order
    REVOKED = "revoked"
    FAILED = "failed"  # CLOSED or PAYERROR
    NOT_EXIST = "not_exist"
    OPEN = "open"  # USERPAYING, NOTPAY
    UNKNOWN = "unknown"  # no usable answer


# ---------------------------------------------------------------- the machine's phases


@dataclass(frozen=True, slots=True)
class _Settle:
    delay: float  # before the first query


@dataclass(frozen=True, slots=True)
class _Reverse:
    reason: str


@dataclass(frozen=True, slots=True)
class _Attend:
    delay: float  # before the next retry


@dataclass(frozen=True, slots=True)
class _Done:
    payment: Payment


_Step = _Settle | _Reverse | _Attend | _Done


class OneShotCode:
    """A face or auth code for the one micropay request: taken once, then held nowhere."""

    __slots__ = ("__weakref__", "_code")

    def __init__(self, code: str) -> None:
        self._code: str | None = code

    def take(self) -> str:
        """The code, emptying the holder; WrongState when it was taken already."""
        code, self._code = self._code, None
        if code is None:
            raise WrongState("the code was already used for its one micropay request")
        return code

    def clear(self) -> None:
        """Forget the code (after its request, or when it will never be sent)."""
        self._code = None

    @property
    def empty(self) -> bool:
        """True once the code was taken or cleared."""
        return self._code is None

    def __repr__(self) -> str:
        return f"OneShotCode(empty={self.empty})"


class PaymentMachine:
    """Drives one order from its journaled state to a final one (or NEEDS_ATTENTION)."""

    def __init__(
        self,
        out_trade_no: str,
        *,
        journal: PaymentJournal,
        backend: PaymentBackend,
        clock: Clock,
        timings: PaymentTimings,
        spbill_create_ip: str = "127.0.0.1",
        device_info: str = "",
        reverse_requested: asyncio.Event | None = None,
        progress: ProgressHub | None = None,
    ) -> None:
        self._out_trade_no = out_trade_no
        self._journal = journal
        self._backend = backend
        self._clock = clock
        self._timings = timings
        self._spbill_create_ip = spbill_create_ip
        self._device_info = device_info
        self._reverse_requested = reverse_requested or asyncio.Event()
        self._history = History()
        # Monotonic time at which micropay was sent, derived from the journaled wall time.
        self._paid_mono: float | None = None
        self._log = log.bind(out_trade_no=out_trade_no)
        # For the progress notices: the state as the machine last saw it, when it was entered,
        # why, and the calls of each kind made since.
        self._progress = progress
        self._state = PaymentState.CAPTURING
        self._entered = clock.time()
        self._why = ""
        self._attempts: dict[Activity, int] = {}

    async def pay(self, code: OneShotCode) -> Payment:
        """Mark a code payment sent and send micropay once with its code, then settle it.

        The payment was journaled PAYING by begin_code_payment (a face payment is marked with
        its capture and comes through send_marked). The holder is emptied before the order is
        settled (queries and reverses may take days), whatever happens to the one request.
        """
        try:
            # Refused (WrongState) unless PAYING and never attempted: the at-most-once guard.
            # Stamped with our clock: the reverse timers are measured from it.
            payment = await self._journal.mark_pay_sent(self._out_trade_no, at=self._clock.time())
        except BaseException:
            code.clear()
            raise
        return await self.send_marked(payment, code)

    async def send_marked(self, payment: Payment, code: OneShotCode) -> Payment:
        """Send micropay once for an order whose pay_sent_at was just journaled, then settle it."""
        try:
            self._anchor(payment)
            self._seen(payment)
            outcome = await self._send_micropay(payment, code.take())
        finally:
            code.clear()
        return await self._run(await self._after_micropay(payment, outcome))

    async def resume(self, reason: str = DAEMON_RESTARTED) -> Payment:
        """Continue a journaled order after a restart or a failed run; never sends micropay."""
        payment = await self._journal.get(self._out_trade_no)
        if payment.final:
            return payment
        if payment.pay_sent_at is None:
            # CAPTURING, or PAYING before the request went out: nothing reached WeChat Pay.
            return await self._transition(
                PaymentState.CANCELLED,
                EventKind.CANCELLED,
                {
                    "reason": reason,
                    "description": "stopped before micropay was sent; nothing charged",
                },
            )
        await self._load(payment)
        match payment.state:
            case PaymentState.PAYING:
                step: _Step = await self._pending(reason, 0.0)
            case PaymentState.PENDING:
                step = _Settle(0.0)
            case PaymentState.NEEDS_ATTENTION:
                step = _Attend(0.0)
            case _:
                step = _Reverse(self._history.reversing_reason)
        return await self._run(step)

    async def reverse(self, reason: str = MANUAL) -> Payment:
        """Reverse a paid or unfinished order that micropay was sent for."""
        payment = await self._journal.get(self._out_trade_no)
        if payment.pay_sent_at is None or payment.state in (
            PaymentState.FAILED,
            PaymentState.CANCELLED,
            PaymentState.REVERSED,
            PaymentState.CLOSED,
        ):
            _refuse_reverse(payment)
        await self._load(payment)
        if self._history.number_used:
            raise WrongState(
                f"payment {self._out_trade_no}: its number is used by another order,"
                " which is never reversed"
            )
        if payment.state is PaymentState.REVERSING:
            reason = self._history.reversing_reason
        return await self._run(_Reverse(reason))

    # ------------------------------------------------------------------ driver

    async def _run(self, step: _Step) -> Payment:
        """Walk the phases until the order is final."""
        while True:
            match step:
                case _Done(payment):
                    return payment
                case _Settle(delay):
                    step = await self._settle(delay)
                case _Reverse(reason):
                    step = await self._reversing(reason)
                case _Attend(delay):
                    step = await self._attending(delay)

    async def _load(self, payment: Payment) -> None:
        self._anchor(payment)
        events = await self._journal.events(self._out_trade_no)
        self._history = history(events)
        self._seen(payment)
        if events:
            self._why = str(events[-1].data.get("reason", ""))

    # ------------------------------------------------------------------ micropay

    async def _send_micropay(self, payment: Payment, code: str) -> TradeResult | FacepayError:
        """The verified answer, or the error: unknown outcome, or refused before sending."""
        order = payment.order
        request = MicropayOrder(
            out_trade_no=order.out_trade_no,
            total_fee=order.total_fee,
            body=order.body,
            auth_code=code,
            spbill_create_ip=self._spbill_create_ip,
            device_info=self._device_info,
            attach=order.attach,
            detail=order.detail,
            fee_type=order.fee_type,
            goods_tag=order.goods_tag,
            limit_pay=order.limit_pay,
            time_start=order.time_start,
            time_expire=order.time_expire,
            receipt=order.receipt,
            scene_info=order.scene_info,
        )
        self._calling(Activity.PAYING)
        try:
            return await self._backend.micropay(request)
        except BackendRejected as exc:
            # A refusal of the request itself (return_code=FAIL), whoever raised it.
            return TradeResult(
                TradeState.REJECTED, order.out_trade_no, exc.code or exc.reason, exc.message
            )
        except (InvalidArgument, ConfigError) as exc:
            # The client's own checks, before the POST: nothing reached WeChat Pay.
            self._log.error("micropay_not_sent", reason=exc.reason, error=str(exc))
            return exc
        except FacepayError as exc:
            # Sent or not, we cannot know: BackendUnavailable, ResponseNotTrusted.
            self._log.warning("micropay_outcome_unknown", reason=exc.reason, error=str(exc))
            return exc

    async def _after_micropay(self, payment: Payment, outcome: TradeResult | FacepayError) -> _Step:
        if isinstance(outcome, InvalidArgument | ConfigError):
            # Refused before the POST: not an unknown outcome, nothing to query or reverse.
            description = f"refused before sending; nothing was charged: {outcome}"
            return _Done(await self._fail(NOT_SENT, description))
        if isinstance(outcome, FacepayError):
            return await self._pending(outcome.reason, 0.0)
        if outcome.state is TradeState.SUCCESS:
            # The answer to our own request: our out_trade_no and amount make it our charge.
            if outcome.out_trade_no in ("", payment.out_trade_no) and (
                outcome.total_fee == payment.total_fee
            ):
                return _Done(await self._succeed(outcome))
            self._log.warning("micropay_success_mismatch", total_fee=outcome.total_fee)
            return await self._pending(RESPONSE_MISMATCH, 0.0)
        if outcome.state is TradeState.REJECTED:
            self._log.warning("micropay_rejected", err_code=outcome.err_code)
            code = outcome.err_code or TradeState.REJECTED.value
            return await self._pending(code, 0.0, _REJECTED)
        disposition = classify(Api.MICROPAY, outcome.err_code)
        if outcome.state is TradeState.FAILED and disposition is Disposition.FAILED:
            return _Done(await self._fail(outcome.err_code, outcome.err_code_des))
        if disposition is Disposition.NUMBER_USED:
            return await self._pending(outcome.err_code, 0.0, _NUMBER_USED)
        if outcome.state is TradeState.USERPAYING or disposition is Disposition.USERPAYING:
            return await self._pending("USERPAYING", self._timings.poll_interval)
        # SYSTEMERROR, BANKERROR, unlisted codes: only a query can tell, and at once.
        return await self._pending(outcome.err_code or outcome.state.value, 0.0)

    async def _pending(self, reason: str, first_delay: float, answer: str = "") -> _Step:
        data: dict[str, str | int] = {"reason": reason}
        if answer:
            data[_ANSWER] = answer
        await self._transition(PaymentState.PENDING, EventKind.PENDING, data)
        self._history = History(
            number_used=answer == _NUMBER_USED,
            rejected=reason if answer == _REJECTED else "",
        )
        return _Settle(first_delay)

    # ------------------------------------------------------------------ PENDING: query

    async def _settle(self, delay: float) -> _Step:
        """Query until the order settles; at give-up reverse it (a used number: attention)."""
        t = self._timings
        while True:
            if delay > 0:
                self._waiting(Activity.WAITING_TO_QUERY, Activity.QUERYING, delay)
                await wait_event(self._clock, self._reverse_requested, delay)
            if self._reverse_requested.is_set():
                self._reverse_requested.clear()
                if not self._history.number_used:
                    return _Reverse(MANUAL)
            verdict, result = await self._ask()
            done = await self._conclude(verdict, result)
            if done is not None:
                return done
            since = self._since_paid()
            if verdict is _Verdict.NOT_EXIST:
                if self._history.rejected:
                    return _Done(
                        await self._fail(
                            self._history.rejected,
                            "WeChat Pay refused the micropay request and has no such order",
                        )
                    )
                if since >= t.in_flight_after:
                    return _Reverse(ORDER_NOT_FOUND)
            if since >= t.give_up_after:
                if self._history.number_used:
                    step = await self._attention(
                        OUT_TRADE_NO_USED,
                        "WeChat Pay says the number is used; its order could not be checked",
                    )
                    return step or _Attend(t.attention_retry)
                return _Reverse(TIMEOUT)
            delay = min(t.poll_interval, t.give_up_after - since)
            if verdict is _Verdict.NOT_EXIST:
                delay = min(delay, t.in_flight_after - since)

    async def _ask(self) -> tuple[_Verdict, TradeResult | None]:
        """Query once: what the answer says about this order."""
        payment = await self._journal.get(self._out_trade_no)
        self._calling(Activity.QUERYING)
        try:
            result = await self._backend.orderquery(
                out_trade_no=self._out_trade_no, transaction_id=payment.transaction_id
            )
        except FacepayError as exc:
            self._log.warning("orderquery_failed", reason=exc.reason, error=str(exc))
            self._answered(exc.reason)
            return _Verdict.UNKNOWN, None
        if result.out_trade_no not in ("", self._out_trade_no):
            self._log.warning("orderquery_answer_for_other_order")
            return _Verdict.UNKNOWN, None
        used = self._history.number_used
        match result.state:
            case TradeState.SUCCESS:
                verdict = _Verdict.PAID if self._owned(payment, result) else _Verdict.NOT_OURS
            case TradeState.REFUND:
                # Paid, then refunded through another channel: the charge happened, if ours.
                ours = not used and self._owned(payment, result)
                verdict = _Verdict.PAID if ours else _Verdict.NOT_OURS
            case TradeState.REVOKED:
                verdict = _Verdict.NOT_OURS if used else _Verdict.REVOKED
            case TradeState.CLOSED | TradeState.PAYERROR:
                verdict = _Verdict.NOT_OURS if used else _Verdict.FAILED
            case TradeState.NOT_EXIST:
                verdict = _Verdict.NOT_OURS if used else _Verdict.NOT_EXIST
            case TradeState.USERPAYING | TradeState.NOTPAY:
                # Another amount or payer under our number is someone else's sale in progress:
                # never reversed by us.
                foreign = used or self._differs(payment, result)
                verdict = _Verdict.NOT_OURS if foreign else _Verdict.OPEN
            case _:
                verdict = _Verdict.UNKNOWN
        self._log.debug("orderquery", trade_state=result.state.value, verdict=verdict)
        self._answered(result.state.value)
        return verdict, result

    def _owned(self, payment: Payment, result: TradeResult) -> bool:
        """A paid query answer is ours only for our amount and the payer of the captured face."""
        if result.total_fee != payment.total_fee:
            self._log.warning(
                "paid_answer_amount_differs", total_fee=result.total_fee, ours=payment.total_fee
            )
            return False
        if payment.openid:
            if result.openid != payment.openid:
                self._log.warning("paid_answer_payer_differs")
                return False
            return True
        # No captured payer to compare with: only a number of our own is trusted on amount.
        return not self._history.number_used

    def _differs(self, payment: Payment, result: TradeResult) -> bool:
        """An open answer whose amount or payer (where it names them) is not this order's."""
        if result.total_fee and result.total_fee != payment.total_fee:
            self._log.warning("open_answer_amount_differs")
            return True
        if result.openid and payment.openid and result.openid != payment.openid:
            self._log.warning("open_answer_payer_differs")
            return True
        return False

    async def _conclude(
        self, verdict: _Verdict, result: TradeResult | None, refusal: ReverseResult | None = None
    ) -> _Done | None:
        """The final state a query answer decides, if it decides one."""
        if verdict is _Verdict.PAID and result is not None:
            return _Done(await self._succeed(result, refusal))
        if verdict is _Verdict.NOT_OURS:
            return _Done(
                await self._fail(
                    OUT_TRADE_NO_USED,
                    "the order number is used by another order at WeChat Pay;"
                    " nothing of this order was charged and nothing was reversed",
                )
            )
        if verdict is _Verdict.REVOKED:
            return _Done(await self._reversed(REVOKED))
        if verdict is _Verdict.FAILED and result is not None:
            return _Done(await self._fail(result.state.value, result.err_code_des))
        return None

    # ------------------------------------------------------------------ REVERSING

    async def _reversing(self, reason: str) -> _Step:
        """Journal REVERSING, then call reverse until it is confirmed or the order settles."""
        t = self._timings
        self._reverse_requested.clear()
        payment = await self._journal.get(self._out_trade_no)
        if payment.state is not PaymentState.REVERSING:
            await self._transition(PaymentState.REVERSING, EventKind.PENDING, {"reason": reason})
            self._history = History(
                self._history.number_used, self._history.rejected, reason, self._clock.time()
            )
        wait = t.reverse_after - self._since_paid()
        if wait > 0:
            self._waiting(Activity.WAITING_TO_REVERSE, Activity.REVERSING, wait)
            await self._clock.sleep(wait)
        deadline = self._reversing_deadline(reason)
        backoff = t.reverse_backoff
        while True:
            step = await self._reverse_once(reason)
            if step is not None:
                return step
            left = deadline - self._clock.monotonic()
            if left <= 0:
                step = await self._attention(UNRESOLVED, "reverse is not confirmed yet")
                return step or _Attend(t.attention_retry)
            self._waiting(Activity.RETRYING, Activity.REVERSING, min(backoff, left))
            await self._clock.sleep(min(backoff, left))
            backoff = min(backoff * 2, t.reverse_backoff_max)

    def _reversing_deadline(self, reason: str) -> float:
        """Monotonic time of the attention bound: from pay, or for a manual reverse from it."""
        assert self._paid_mono is not None
        deadline = self._paid_mono + self._timings.attention_after
        since = self._history.reversing_since
        if reason == MANUAL and since is not None:
            window = self._timings.attention_after - self._timings.give_up_after
            deadline = max(deadline, self._mono_of(since) + window)
        return deadline

    async def _reverse_once(self, reason: str) -> _Step | None:
        """Call reverse once; the next step, or None to call it again later."""
        payment = await self._journal.get(self._out_trade_no)
        refusal: ReverseResult | None = None
        self._calling(Activity.REVERSING)
        try:
            answer = await self._backend.reverse(
                out_trade_no=self._out_trade_no, transaction_id=payment.transaction_id
            )
        except FacepayError as exc:
            self._log.warning("reverse_failed", reason=exc.reason, error=str(exc))
        else:
            if answer.succeeded:
                return _Done(await self._reversed(reason))
            if answer.recall:
                self._log.info("reverse_recall", err_code=answer.err_code)
            else:
                self._log.warning("reverse_refused", err_code=answer.err_code)
                refusal = answer
        if refusal is None and reason != ORDER_NOT_FOUND:
            return None
        # A definite refusal ends the reversing, and an order WeChat Pay had not seen gets one
        # attempt: the order's own state decides.
        verdict, result = await self._ask()
        expired = refusal is not None and (
            classify(Api.REVERSE, refusal.err_code) is Disposition.EXPIRED
        )
        if verdict is _Verdict.PAID and expired and reason != MANUAL:
            # Paid, and too old to reverse: only an operator's refund gives the money back.
            return await self._attention(REVERSE_EXPIRE, _refusal_text(refusal))
        done = await self._conclude(verdict, result, refusal)
        if done is not None:
            return done
        if verdict is _Verdict.NOT_EXIST:
            if self._since_paid() >= self._timings.in_flight_after:
                return _Done(await self._closed())
            return None
        if refusal is None:
            return None
        return await self._attention(
            REVERSE_EXPIRE if expired else REVERSE_REFUSED, _refusal_text(refusal)
        )

    # ------------------------------------------------------------------ NEEDS_ATTENTION

    async def _attending(self, delay: float) -> _Step:
        """One slow retry of an order that waits for an operator."""
        t = self._timings
        if delay > 0:
            call = Activity.REVERSING if self._why == UNRESOLVED else Activity.QUERYING
            self._waiting(Activity.RETRYING, call, delay)
            await wait_event(self._clock, self._reverse_requested, delay)
        if self._reverse_requested.is_set():
            self._reverse_requested.clear()
            if not self._history.number_used:
                return _Reverse(MANUAL)
        # At least attention_retry, doubling to the cap: never a tight loop.
        later = min(max(delay * 2, t.attention_retry), t.attention_retry_max)
        payment = await self._journal.get(self._out_trade_no)
        if payment.attention_reason == UNRESOLVED:
            return await self._reverse_once(self._history.reversing_reason) or _Attend(later)
        verdict, result = await self._ask()
        if verdict is _Verdict.PAID and payment.attention_reason == REVERSE_EXPIRE:
            if result is not None and result.state is TradeState.REFUND:
                # Refunded (through the daemon or the merchant platform): what the operator was
                # asked to do is done. Paid it was; its refunds (refunded_fee) tell the rest.
                self._log.info("payment_refunded_after_reverse_expired")
                return _Done(await self._succeed(result, reason=REFUNDED))
            return _Attend(later)  # still paid: the refund is the operator's
        done = await self._conclude(verdict, result)
        if done is not None:
            return done
        if verdict is _Verdict.NOT_EXIST and self._since_paid() >= t.in_flight_after:
            return _Done(await self._closed())
        return _Attend(later)

    async def _attention(self, reason: str, description: str) -> _Step | None:
        """Journal NEEDS_ATTENTION with reason; None when it already is (nothing new)."""
        payment = await self._journal.get(self._out_trade_no)
        if payment.state is PaymentState.NEEDS_ATTENTION and payment.attention_reason == reason:
            return None
        action = ACTIONS[reason]
        self._log.warning("payment_needs_attention", reason=reason, action=action)
        await self._transition(
            PaymentState.NEEDS_ATTENTION,
            EventKind.NEEDS_ATTENTION,
            {"reason": reason, "action": action, "description": description},
            attention_reason=reason,
            attention_action=action,
        )
        return _Attend(self._timings.attention_retry)

    # ------------------------------------------------------------------ final states

    async def _succeed(
        self, result: TradeResult, refusal: ReverseResult | None = None, *, reason: str = ""
    ) -> Payment:
        data: dict[str, str | int] = {
            "transaction_id": result.transaction_id,
            "total_fee": result.total_fee,
            "cash_fee": result.cash_fee,
            "fee_type": result.fee_type,
            "bank_type": result.bank_type,
            "time_end": result.time_end,
            "openid": result.openid,
        }
        updates: dict[str, str | int] = {
            "transaction_id": result.transaction_id,
            "bank_type": result.bank_type,
            "cash_fee": result.cash_fee,
            "fee_type": result.fee_type,
            "time_end": result.time_end,
        }
        if result.openid:
            updates["openid"] = result.openid
        paid = _paid_details(result)
        # The further answer fields, only those WeChat Pay sent (an event stays small).
        for name, value in paid_event_fields(paid).items():
            data[name] = value
        updates["paid_details"] = paid_to_json(paid)
        if reason:
            data["reason"] = reason
        if refusal is not None:
            # Why a reverse did not happen stays next to the paid order.
            updates["err_code"] = refusal.err_code or REVERSE_REFUSED
            updates["err_code_des"] = refusal.err_code_des
        return await self._transition(PaymentState.SUCCEEDED, EventKind.SUCCEEDED, data, **updates)

    async def _fail(self, err_code: str, description: str) -> Payment:
        return await self._transition(
            PaymentState.FAILED,
            EventKind.FAILED,
            {"err_code": err_code, "description": description},
            err_code=err_code,
            err_code_des=description,
        )

    async def _reversed(self, reason: str) -> Payment:
        return await self._transition(
            PaymentState.REVERSED,
            EventKind.REVERSED,
            {"reason": reason},
            err_code="",
            err_code_des="",
        )

    async def _closed(self) -> Payment:
        return await self._transition(
            PaymentState.CLOSED,
            EventKind.CLOSED,
            {
                "reason": NEVER_REACHED,
                "description": "WeChat Pay has no such order and no micropay of ours can still"
                " reach it; nothing was charged",
            },
        )

    # ------------------------------------------------------------------ helpers

    async def _transition(
        self,
        state: PaymentState,
        kind: EventKind,
        data: dict[str, str | int],
        **updates: str | int,
    ) -> Payment:
        await self._journal.append(self._out_trade_no, state, kind, data, **updates)
        payment = await self._journal.get(self._out_trade_no)
        self._seen(payment)
        if "reason" in data:
            self._why = str(data["reason"])
        return payment

    # ------------------------------------------------------------------ progress notices

    def _seen(self, payment: Payment) -> None:
        """Track the journaled state: a new one starts its own count of calls."""
        if payment.state is not self._state:
            self._state, self._entered = payment.state, payment.updated_at
            self._attempts.clear()

    def _answered(self, reason: str) -> None:
        """While PENDING, the newest answer (USERPAYING, NOTPAY, an error) says why it waits."""
        if self._state is PaymentState.PENDING:
            self._why = reason

    def _calling(self, activity: Activity) -> None:
        """Count a WeChat Pay call of this kind and tell the watchers it is on its way."""
        attempt = self._attempts.get(activity, 0) + 1
        self._attempts[activity] = attempt
        self._notify(activity, attempt, None)

    def _waiting(self, activity: Activity, call: Activity, seconds: float) -> None:
        """Tell the watchers the next call of kind call is due in seconds."""
        self._notify(activity, self._attempts.get(call, 0) + 1, seconds)

    def _notify(self, activity: Activity, attempt: int, wait: float | None) -> None:
        hub = self._progress
        # The hot path: with nobody watching, no notice is even built.
        if hub is None or not hub.listening(self._out_trade_no):
            return
        now = self._clock.time()
        hub.publish(
            Progress(
                out_trade_no=self._out_trade_no,
                state=self._state,
                activity=activity,
                attempt=attempt,
                since=self._entered,
                next_at=None if wait is None else now + wait,
                reason=self._why,
            )
        )

    def _anchor(self, payment: Payment) -> None:
        """Place pay_sent_at on the monotonic clock, so wall-clock jumps cannot hurry a reverse."""
        assert payment.pay_sent_at is not None
        self._paid_mono = self._mono_of(payment.pay_sent_at)

    def _mono_of(self, wall: float) -> float:
        return self._clock.monotonic() - max(0.0, self._clock.time() - wall)

    def _since_paid(self) -> float:
        assert self._paid_mono is not None
        return self._clock.monotonic() - self._paid_mono


def _paid_details(result: TradeResult) -> PaidDetails:
    """The paid answer's fields beyond those the machine checks, as WeChat Pay sent them."""
    return PaidDetails(
        settlement_total_fee=result.settlement_total_fee,
        coupon_fee=result.coupon_fee,
        coupon_count=result.coupon_count,
        coupons=tuple(Coupon(c.coupon_id, c.coupon_type, c.coupon_fee) for c in result.coupons),
        cash_fee_type=result.cash_fee_type,
        promotion_detail=result.promotion_detail,
        is_subscribe=result.is_subscribe,
        trade_type=result.trade_type,
        sub_openid=result.sub_openid,
        attach=result.attach,
        trade_state_desc=result.trade_state_desc,
        device_info=result.device_info,
        trade_state=result.trade_state,
    )


def paid_event_fields(paid: PaidDetails) -> dict[str, str | int]:
    """The non-empty PaidDetails fields for a succeeded event; coupons as canonical JSON."""
    fields: dict[str, str | int] = {}
    for name, value in dataclasses.asdict(paid).items():
        if name == "coupons":
            if value:
                fields[name] = json.dumps(value, sort_keys=True, separators=(",", ":"))
        elif value:
            fields[name] = value
    return fields


def _refusal_text(refusal: ReverseResult | None) -> str:
    if refusal is None:
        return "reverse was refused"
    return f"reverse was refused: {refusal.err_code} {refusal.err_code_des}".strip()


def _refuse_reverse(payment: Payment) -> None:
    """Refuse a reverse of an order that cannot or need not be reversed."""
    if payment.pay_sent_at is None and not payment.final:
        rule = "was never sent to WeChat Pay; cancel the face session instead"
    else:
        rule = f"is {payment.state}; only a paid or unfinished payment can be reversed"
    raise WrongState(f"payment {payment.out_trade_no} {rule}")
