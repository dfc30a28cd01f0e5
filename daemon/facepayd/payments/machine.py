"""The micropay state machine for one order: pay once, query, reverse while the outcome is unknown.

Every state is journaled before the external call it leads to, so a run cut anywhere resumes
correctly from the journal. Micropay is sent at most once per order, ever: the journal's
pay_sent_at is set (atomically, only if unset) before the request goes out, and a resumed
order is only ever queried or reversed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog

from facepayd.clock import Clock
from facepayd.errors import BackendRejected, FacepayError, InvalidArgument
from facepayd.payments.models import EventKind, Payment, PaymentState
from facepayd.payments.ports import PaymentBackend, PaymentJournal
from facepayd.wxpay.codes import Api, Disposition, classify
from facepayd.wxpay.models import MicropayOrder, ReverseResult, TradeResult, TradeState

__all__ = ["DAEMON_RESTARTED", "PaymentMachine", "PaymentTimings"]

log = structlog.get_logger(__name__)

# Reasons written into pending/reversed/cancelled events.
DAEMON_RESTARTED = "DAEMON_RESTARTED"
INTERNAL_ERROR = "INTERNAL_ERROR"
TIMEOUT = "TIMEOUT"
MANUAL = "MANUAL"
REVOKED = "REVOKED"


@dataclass(frozen=True, slots=True)
class PaymentTimings:
    """The state machine's timers, in seconds."""

    poll_interval: float = 5.0  # between order queries while the outcome is open
    reverse_after: float = 15.0  # never reverse sooner than this after micropay was sent
    give_up_after: float = 40.0  # still unknown this long after micropay: reverse
    reverse_backoff: float = 1.0  # first wait before calling reverse again
    reverse_backoff_max: float = 30.0


class PaymentMachine:
    """Drives one order from its journaled state to a final one."""

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
    ) -> None:
        self._out_trade_no = out_trade_no
        self._journal = journal
        self._backend = backend
        self._clock = clock
        self._timings = timings
        self._spbill_create_ip = spbill_create_ip
        self._device_info = device_info
        self._reverse_requested = reverse_requested or asyncio.Event()
        # Monotonic time at which micropay was sent, derived from the journaled wall time.
        self._paid_mono: float | None = None
        self._log = log.bind(out_trade_no=out_trade_no)

    async def pay(self, face_code: str) -> Payment:
        """Send micropay once with face_code, then settle the order."""
        payment = await self._journal.get(self._out_trade_no)
        if payment.state is PaymentState.CAPTURING:
            await self._journal.append(
                self._out_trade_no, PaymentState.PAYING, EventKind.FACE_CAPTURED
            )
        # Refused (InvalidArgument) unless PAYING and never attempted: the at-most-once guard.
        # Stamped with our clock: the reverse timers are measured from it.
        payment = await self._journal.mark_pay_sent(self._out_trade_no, at=self._clock.time())
        self._anchor(payment)
        outcome = await self._send_micropay(payment, face_code)
        del face_code  # the face code is needed for exactly one request
        if isinstance(outcome, str):
            return await self._pending_then_settle(outcome)
        if outcome.state is TradeState.SUCCESS:
            if self._trusted_success(payment, outcome):
                return await self._succeed(outcome)
            return await self._pending_then_settle("RESPONSE_MISMATCH")
        if (
            outcome.state is TradeState.FAILED
            and classify(Api.MICROPAY, outcome.err_code) is Disposition.FAILED
        ):
            return await self._fail(outcome.err_code, outcome.err_code_des)
        # USERPAYING, SYSTEMERROR, BANKERROR, ORDERPAID, unlisted codes: only a query can tell.
        return await self._pending_then_settle(outcome.err_code or outcome.state.value)

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
        self._anchor(payment)
        if payment.state is PaymentState.PAYING:
            return await self._pending_then_settle(reason, first_delay=0.0)
        if payment.state is PaymentState.PENDING:
            return await self._settle(first_delay=0.0)
        return await self._reverse(await self._reversing_reason(payment))

    async def reverse(self, reason: str = MANUAL) -> Payment:
        """Reverse a paid or unfinished order that micropay was sent for."""
        payment = await self._journal.get(self._out_trade_no)
        if payment.pay_sent_at is None or payment.state in (
            PaymentState.FAILED,
            PaymentState.CANCELLED,
            PaymentState.REVERSED,
        ):
            _refuse_reverse(payment)
        self._anchor(payment)
        if payment.state is PaymentState.REVERSING:
            reason = await self._reversing_reason(payment)
        return await self._reverse(reason)

    # ------------------------------------------------------------------ steps

    async def _send_micropay(self, payment: Payment, face_code: str) -> TradeResult | str:
        """The verified answer, or the reason the outcome is unknown."""
        order = payment.order
        request = MicropayOrder(
            out_trade_no=order.out_trade_no,
            total_fee=order.total_fee,
            body=order.body,
            auth_code=face_code,
            spbill_create_ip=self._spbill_create_ip,
            device_info=self._device_info,
            attach=order.attach,
            detail=order.detail,
            fee_type=order.fee_type,
            goods_tag=order.goods_tag,
            limit_pay=order.limit_pay,
            time_expire=order.time_expire,
            receipt=order.receipt,
            scene_info=order.scene_info,
        )
        try:
            return await self._backend.micropay(request)
        except FacepayError as exc:
            # Sent or not, we cannot know: BackendUnavailable, ResponseNotTrusted, BackendRejected.
            self._log.warning("micropay_outcome_unknown", reason=exc.reason, error=str(exc))
            return exc.code or exc.reason if isinstance(exc, BackendRejected) else exc.reason

    async def _pending_then_settle(self, reason: str, first_delay: float | None = None) -> Payment:
        await self._transition(PaymentState.PENDING, EventKind.PENDING, {"reason": reason})
        return await self._settle(
            self._timings.poll_interval if first_delay is None else first_delay
        )

    async def _settle(self, first_delay: float) -> Payment:
        """Query until the order is final; reverse when asked or when the give-up time passes."""
        delay = first_delay
        while True:
            if delay > 0:
                await self._sleep_unless_reverse(delay)
            if self._reverse_requested.is_set():
                return await self._reverse(MANUAL)
            settled = await self._query()
            if settled is not None:
                return settled
            remaining = self._timings.give_up_after - self._since_paid()
            if remaining <= 0:
                return await self._reverse(TIMEOUT)
            delay = min(self._timings.poll_interval, remaining)

    async def _query(self, refusal: ReverseResult | None = None) -> Payment | None:
        """Query once; the final Payment when the answer settles the order, else None."""
        try:
            result = await self._backend.orderquery(out_trade_no=self._out_trade_no)
        except FacepayError as exc:
            self._log.warning("orderquery_failed", reason=exc.reason, error=str(exc))
            return None
        if result.out_trade_no and result.out_trade_no != self._out_trade_no:
            self._log.warning("orderquery_answer_for_other_order")
            return None
        payment = await self._journal.get(self._out_trade_no)
        match result.state:
            case TradeState.SUCCESS if self._trusted_success(payment, result):
                return await self._succeed(result, refusal)
            case TradeState.REFUND:
                # Paid, then refunded through another channel: the charge happened.
                return await self._succeed(result, refusal)
            case TradeState.REVOKED:
                return await self._reversed(REVOKED)
            case TradeState.CLOSED | TradeState.PAYERROR:
                return await self._fail(result.state.value, result.err_code_des)
            case _:
                # USERPAYING, NOTPAY, NOT_EXIST (the request may still arrive), UNKNOWN.
                self._log.debug("orderquery_open", trade_state=result.state.value)
                return None

    async def _reverse(self, reason: str) -> Payment:
        """Journal REVERSING, then call reverse until WeChat Pay confirms or settles the order."""
        payment = await self._journal.get(self._out_trade_no)
        if payment.state is not PaymentState.REVERSING:
            payment = await self._transition(
                PaymentState.REVERSING, EventKind.PENDING, {"reason": reason}
            )
        wait = self._timings.reverse_after - self._since_paid()
        if wait > 0:
            await self._clock.sleep(wait)
        backoff = self._timings.reverse_backoff
        while True:
            try:
                result = await self._backend.reverse(
                    out_trade_no=self._out_trade_no, transaction_id=payment.transaction_id
                )
            except FacepayError as exc:
                self._log.warning("reverse_failed", reason=exc.reason, error=str(exc))
            else:
                if result.succeeded and not result.recall:
                    return await self._reversed(reason)
                if not result.recall:
                    # A definite refusal (e.g. REVERSE_EXPIRE): the order's own state decides.
                    self._log.warning("reverse_refused", err_code=result.err_code)
                    settled = await self._query(refusal=result)
                    if settled is not None:
                        return settled
                else:
                    self._log.info("reverse_recall", err_code=result.err_code)
            await self._clock.sleep(backoff)
            backoff = min(backoff * 2, self._timings.reverse_backoff_max)

    # ------------------------------------------------------------------ final states

    async def _succeed(self, result: TradeResult, refusal: ReverseResult | None = None) -> Payment:
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
        if result.state is TradeState.REFUND:
            data["trade_state"] = TradeState.REFUND.value
        if refusal is not None:
            # Why a reverse did not happen stays next to the paid order.
            updates["err_code"] = refusal.err_code or "REVERSE_REFUSED"
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

    # ------------------------------------------------------------------ helpers

    async def _transition(
        self,
        state: PaymentState,
        kind: EventKind,
        data: dict[str, str | int],
        **updates: str | int,
    ) -> Payment:
        await self._journal.append(self._out_trade_no, state, kind, data, **updates)
        return await self._journal.get(self._out_trade_no)

    def _trusted_success(self, payment: Payment, result: TradeResult) -> bool:
        """A SUCCESS is taken only for our order and exactly our amount."""
        if result.out_trade_no not in ("", payment.out_trade_no):
            return False
        if result.total_fee != payment.total_fee:
            self._log.warning(
                "success_amount_mismatch", total_fee=result.total_fee, expected=payment.total_fee
            )
            return False
        return True

    def _anchor(self, payment: Payment) -> None:
        """Place pay_sent_at on the monotonic clock, so wall-clock jumps cannot hurry a reverse."""
        assert payment.pay_sent_at is not None
        elapsed = max(0.0, self._clock.time() - payment.pay_sent_at)
        self._paid_mono = self._clock.monotonic() - elapsed

    def _since_paid(self) -> float:
        assert self._paid_mono is not None
        return self._clock.monotonic() - self._paid_mono

    async def _sleep_unless_reverse(self, seconds: float) -> None:
        """Sleep on the injected clock; a reverse request ends the sleep early."""
        if self._reverse_requested.is_set():
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waker = asyncio.ensure_future(self._reverse_requested.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            for task in (sleeper, waker):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _reversing_reason(self, payment: Payment) -> str:
        """The reason journaled when the order entered REVERSING."""
        events = await self._journal.events(self._out_trade_no, max(0, payment.last_seq - 1))
        for event in reversed(events):
            if event.state is PaymentState.REVERSING:
                return str(event.data.get("reason", TIMEOUT))
        return TIMEOUT


def _refuse_reverse(payment: Payment) -> None:
    """Refuse a reverse of an order that cannot or need not be reversed."""
    if payment.pay_sent_at is None and not payment.final:
        rule = "was never sent to WeChat Pay; cancel the face session instead"
    else:
        rule = f"is {payment.state}; only a paid or unfinished payment can be reversed"
    raise InvalidArgument("out_trade_no", f"payment {payment.out_trade_no} {rule}")
