"""The payment service: journaled payments and the daemon-owned tasks that settle them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

import structlog

from facepayd.clock import Clock
from facepayd.errors import BackendRejected, JournalError, NotFound, Unavailable, WrongState
from facepayd.payments.machine import (
    DAEMON_RESTARTED,
    INTERNAL_ERROR,
    MANUAL,
    OneShotCode,
    PaymentMachine,
    PaymentTimings,
    history,
)
from facepayd.payments.models import (
    SCAN_PAYMENT,
    CodeStart,
    EventKind,
    Payment,
    PaymentEvent,
    PaymentOrder,
    PaymentState,
)
from facepayd.payments.owned import OwnedTasks
from facepayd.payments.ports import EventList, PaymentBackend, PaymentJournal, PaymentList
from facepayd.payments.progress import ProgressHub

__all__ = ["PaymentService", "PaymentServiceClosed"]

log = structlog.get_logger(__name__)


class PaymentServiceClosed(Unavailable):
    """The daemon is stopping: no new payment work is accepted."""

    reason = "UNAVAILABLE"


class PaymentService:
    """Owns payment tasks; RPC handlers only start them and watch the journal.

    Orders come validated by the API layer's rules (rpc/payments.py): the domain trusts them.
    """

    def __init__(
        self,
        journal: PaymentJournal,
        backend: PaymentBackend,
        clock: Clock,
        timings: PaymentTimings,
        merchant_spbill_ip: str = "127.0.0.1",
        device_info: str = "",
    ) -> None:
        self._journal = journal
        self._backend = backend
        self._clock = clock
        self._timings = timings
        self._spbill_ip = merchant_spbill_ip
        self._device_info = device_info
        self._reverse_requests: dict[str, asyncio.Event] = {}
        # The payment tasks by order, their watchers, and the orders in NEEDS_ATTENTION.
        self._owned: OwnedTasks[str, Payment] = OwnedTasks(
            "payment",
            clock,
            PaymentServiceClosed,
            on_finish=lambda out_trade_no: self._reverse_requests.pop(out_trade_no, None),
        )
        # The machines' live progress notices, for the watchers attached now (nothing is kept).
        self.progress = ProgressHub()
        # Serializes check-then-journal steps taken outside payment tasks.
        self._lock = asyncio.Lock()
        journal.add_listener(self._on_event)

    @property
    def journal_writable(self) -> bool:
        """False while the journal is known not to take writes."""
        return self._journal.writable

    def require_journal(self) -> None:
        """Refuse new payment work (JournalError) while the journal is known not to write."""
        if not self._journal.writable:
            raise JournalError("the journal cannot be written now; no new payment is accepted")

    def journal_bytes(self) -> int:
        """The journal's size on disk."""
        return self._journal.size_bytes()

    def now(self) -> float:
        """Wall time on the payments' clock (the API checks time_expire against it)."""
        return self._clock.time()

    async def start_code_pay(self, order: PaymentOrder, auth_code: str) -> tuple[Payment, bool]:
        """Journal a code payment (or continue a scanned face sale) and pay it once; or attach.

        Returns the payment and whether this call started its micropay. The auth_code is
        never journaled: it lives only in the payment task's coroutine, for one request.
        """
        self._owned.check_open()
        self.require_journal()
        async with self._lock:
            payment, start = await self._journal.begin_code_payment(order)
            if start is CodeStart.EXISTING:
                return payment, False
            # Journaled PAYING with pay_sent_at unset: a restart before the task sends micropay
            # resumes it as CANCELLED (the code is gone), as for a face payment.
            code = OneShotCode(auth_code)
            del auth_code  # from here on only the holder has it, until micropay empties it
            self._spawn(order.out_trade_no, lambda machine: machine.pay(code))
            return payment, True

    async def begin(self, order: PaymentOrder, session_id: str = "") -> tuple[Payment, bool]:
        """Journal a new payment (CAPTURING); re-attach when the same parameters exist."""
        self._owned.check_open()
        data: dict[str, str | int] = {"session_id": session_id} if session_id else {}
        return await self._journal.create_payment(order, data=data)

    async def pay_captured(
        self,
        out_trade_no: str,
        face_code: str,
        openid: str,
        sub_openid: str,
        underage_state: int,
        telephone_used: int = 0,
    ) -> PaymentEvent:
        """The face was captured: PAYING and marked sent in one commit, then paid once by a
        daemon-owned task (the face code itself is never journaled)."""
        code = OneShotCode(face_code)
        del face_code  # from here on only the holder has it, until micropay empties it
        data: dict[str, str | int] = {
            "openid": openid,
            "sub_openid": sub_openid,
            "underage_state": underage_state,
        }
        if telephone_used:
            data["telephone_used"] = telephone_used
        try:
            return await self._capture_then_pay(out_trade_no, data, openid, code)
        except BaseException:
            code.clear()
            raise

    async def _capture_then_pay(
        self, out_trade_no: str, data: dict[str, str | int], openid: str, code: OneShotCode
    ) -> PaymentEvent:
        self._owned.check_open()
        async with self._lock:
            if out_trade_no in self._owned.tasks:
                raise WrongState(f"payment {out_trade_no} is already in progress")
            try:
                # Stamped with the machine's clock: the reverse timers are measured from it.
                event, payment = await self._journal.capture_and_mark_sent(
                    out_trade_no, data, openid, at=self._clock.time()
                )
            except JournalError as exc:
                # Whether the commit landed is not known here: the payment task settles the
                # order from the journal once it writes again (CANCELLED without the mark,
                # queried as any sent order with it); micropay is never sent from here.
                reason = exc.reason
                self._spawn(out_trade_no, lambda machine: machine.resume(reason))
                raise
            self._spawn(out_trade_no, lambda machine: machine.send_marked(payment, code))
        return event

    async def record_cancelled(
        self, out_trade_no: str, reason: str, description: str
    ) -> PaymentEvent:
        """The face session ended without a payment: CANCELLED (only before micropay)."""
        async with self._lock:
            payment = await self._journal.get(out_trade_no)
            unsent = payment.state is PaymentState.CAPTURING or (
                payment.state is PaymentState.PAYING and payment.pay_sent_at is None
            )
            if not unsent or out_trade_no in self._owned.tasks:
                raise WrongState(
                    f"payment {out_trade_no} is {payment.state} and may have been sent;"
                    " it cannot be cancelled"
                )
            data: dict[str, str | int] = {"reason": reason, "description": description}
            if reason == SCAN_PAYMENT:
                # Nothing reached WeChat Pay: StartCodePay may continue this very sale.
                data["continue_with_code_pay"] = 1
            return await self._journal.append(
                out_trade_no, PaymentState.CANCELLED, EventKind.CANCELLED, data
            )

    async def reverse(self, out_trade_no: str) -> Payment:
        """Reverse a paid or unfinished payment; returns it once final or NEEDS_ATTENTION."""
        self._owned.check_open()
        first = True
        while True:
            async with self._lock:
                payment = await self._journal.get(out_trade_no)
                unpaid = payment.final and payment.state is not PaymentState.SUCCEEDED
                if payment.state is PaymentState.REVERSED or (unpaid and not first):
                    return payment
                await self._check_reversible(payment)
                first = False
                start = payment.last_seq
                task = self._owned.tasks.get(out_trade_no)
                if task is None:
                    task = self._spawn(out_trade_no, lambda machine: machine.reverse(MANUAL))
                else:
                    self._reverse_event(out_trade_no).set()
            events = await self._next_settled(out_trade_no, start, task)
            if not any(e.state is PaymentState.REVERSING for e in events):
                # Settled (e.g. paid by a query) before the machine saw the request: again.
                if events and events[-1].state.settled:
                    continue
                return await self._journal.get(out_trade_no)
            payment = await self._journal.get(out_trade_no)
            if payment.state is PaymentState.SUCCEEDED:
                raise BackendRejected(
                    payment.err_code or "REVERSE_REFUSED",
                    f"reverse of {out_trade_no} was refused; it stays paid: {payment.err_code_des}",
                )
            return payment

    async def get(self, out_trade_no: str) -> Payment:
        """One payment, or NotFound."""
        return await self._journal.get(out_trade_no)

    async def find(self, out_trade_no: str) -> Payment | None:
        """One payment, or None."""
        return await self._journal.find(out_trade_no)

    async def exists(self, out_trade_no: str) -> bool:
        """Whether a payment with this out_trade_no is journaled."""
        return await self._journal.exists(out_trade_no)

    async def list(
        self,
        states: Iterable[PaymentState] = (),
        created_after: float | None = None,
        created_before: float | None = None,
        page_size: int = 50,
        page_token: str = "",
    ) -> tuple[PaymentList, str]:
        """Payments newest first, with the next page's token ("" on the last page)."""
        return await self._journal.list(
            states, created_after, created_before, page_size, page_token
        )

    def watch(self, out_trade_no: str, after_seq: int = 0) -> AsyncIterator[PaymentEvent]:
        """Events after after_seq from the journal, then live ones; ends once settled.

        Settled: the newest event is final or NEEDS_ATTENTION (a later change, such as a manual
        reverse, is seen by watching again).
        """
        return self._owned.watch(out_trade_no, after_seq, self._journal.events, self._journal.get)

    async def wait_final(self, out_trade_no: str) -> Payment:
        """Wait until the payment is final or NEEDS_ATTENTION and return it."""
        payment = await self._journal.get(out_trade_no)
        async for _ in self.watch(out_trade_no, payment.last_seq):
            pass
        return await self._journal.get(out_trade_no)

    async def resume_unfinished(self) -> int:
        """Start a task for every unfinished journaled payment; call before reporting ready."""
        self._owned.check_open()
        unfinished = [
            (p.out_trade_no, p.state is PaymentState.NEEDS_ATTENTION)
            for p in await self._journal.unfinished()
        ]
        return self._owned.resume(
            unfinished, lambda no: self._drive(no, lambda machine: machine.resume(DAEMON_RESTARTED))
        )

    def unfinished_count(self) -> int:
        """Payments being settled in the background (NEEDS_ATTENTION ones included)."""
        return len(self._owned.tasks)

    def needs_attention_count(self) -> int:
        """Payments in NEEDS_ATTENTION: an operator has to act."""
        return len(self._owned.needs_attention)

    async def close(self, grace: float) -> None:
        """Let payment tasks finish for up to grace seconds, then cancel them (resumable)."""
        await self._owned.close(grace)

    # ------------------------------------------------------------------ internals

    async def _check_reversible(self, payment: Payment) -> None:
        """Refuse (WrongState) a reverse that cannot or must not happen."""
        no, state = payment.out_trade_no, payment.state
        if state in (PaymentState.FAILED, PaymentState.CANCELLED, PaymentState.CLOSED):
            raise WrongState(f"payment {no} is {state}: nothing was charged to reverse")
        if payment.pay_sent_at is None:
            raise WrongState(
                f"payment {no} was never sent to WeChat Pay; cancel its face session instead"
            )
        if history(await self._journal.events(no)).number_used:
            raise WrongState(
                f"payment {no}: its number is used by another order, which is never reversed"
            )
        if await self._journal.refund_count(no):
            # WeChat Pay refuses to reverse a refunded order; what is left goes back by refund.
            raise WrongState(f"payment {no} has refunds: refund what is left instead of reversing")

    async def _next_settled(
        self, out_trade_no: str, after_seq: int, task: asyncio.Task[Payment]
    ) -> EventList:
        """Events after after_seq up to the first settled one, or all once the task ended."""
        with self._owned.watching(out_trade_no) as changed:
            while True:
                changed.clear()
                events = await self._journal.events(out_trade_no, after_seq)
                for index, event in enumerate(events):
                    if event.state.settled:
                        return events[: index + 1]
                if task.done():
                    return events
                if self._owned.closed:
                    raise self._owned.stopped("waiting for", out_trade_no)
                waiter = asyncio.ensure_future(changed.wait())
                try:
                    # asyncio.wait: a caller that goes away does not cancel the payment's task.
                    await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()

    def _reverse_event(self, out_trade_no: str) -> asyncio.Event:
        return self._reverse_requests.setdefault(out_trade_no, asyncio.Event())

    def _machine(self, out_trade_no: str) -> PaymentMachine:
        return PaymentMachine(
            out_trade_no,
            journal=self._journal,
            backend=self._backend,
            clock=self._clock,
            timings=self._timings,
            spbill_create_ip=self._spbill_ip,
            device_info=self._device_info,
            reverse_requested=self._reverse_event(out_trade_no),
            progress=self.progress,
        )

    def _spawn(
        self,
        out_trade_no: str,
        start: Callable[[PaymentMachine], Coroutine[Any, Any, Payment]],
    ) -> asyncio.Task[Payment]:
        return self._owned.spawn(out_trade_no, self._drive(out_trade_no, start))

    async def _drive(
        self, out_trade_no: str, start: Callable[[PaymentMachine], Coroutine[Any, Any, Payment]]
    ) -> Payment:
        """Run a machine step; after a failure, resume from the journal with capped backoff.

        A step that could not journal its next state (JournalError) never made the call that
        state leads to; the retry starts again from what the journal holds.
        """
        structlog.contextvars.bind_contextvars(out_trade_no=out_trade_no)
        # Made here, not at spawn: a task cancelled before it ran leaves no coroutine behind.
        step = start(self._machine(out_trade_no))
        delay = self._timings.reverse_backoff
        while True:
            try:
                return await step
            except WrongState as exc:
                # The journal refused a step (e.g. micropay already attempted): nothing was sent.
                log.warning("payment_step_refused", error=str(exc))
                return await self._journal.get(out_trade_no)
            except NotFound:
                log.exception("payment_missing_from_journal")
                raise
            except JournalError as exc:
                log.warning("payment_journal_unavailable", error=str(exc), retry_in=delay)
            except Exception:
                log.exception("payment_task_failed", retry_in=delay)
            await self._clock.sleep(delay)
            delay = min(delay * 2, self._timings.reverse_backoff_max)
            step = self._machine(out_trade_no).resume(INTERNAL_ERROR)

    def _on_event(self, event: PaymentEvent) -> None:
        """Journal listener: one log line per state change, and wake the payment's watchers."""
        log.info(
            "payment_event",
            out_trade_no=event.out_trade_no,
            seq=event.seq,
            state=event.state.value,
            kind=event.kind.value,
            **{k: v for k, v in event.data.items() if k not in ("face_code", "auth_code")},
        )
        self._owned.notify(event.out_trade_no, event.state is PaymentState.NEEDS_ATTENTION)
