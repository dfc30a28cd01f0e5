"""The payment service: journaled payments and the daemon-owned tasks that settle them."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

import structlog

from facepayd.clock import Clock
from facepayd.errors import BackendRejected, InvalidArgument, NotFound, Unavailable
from facepayd.payments.machine import (
    DAEMON_RESTARTED,
    INTERNAL_ERROR,
    MANUAL,
    PaymentMachine,
    PaymentTimings,
)
from facepayd.payments.models import (
    EventKind,
    Payment,
    PaymentEvent,
    PaymentOrder,
    PaymentState,
)
from facepayd.payments.ports import PaymentBackend, PaymentJournal, PaymentList

__all__ = ["PaymentService", "PaymentServiceClosed"]

log = structlog.get_logger(__name__)

_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,32}")


class PaymentServiceClosed(Unavailable):
    """The daemon is stopping: no new payment work is accepted."""

    reason = "UNAVAILABLE"


class PaymentService:
    """Owns payment tasks; RPC handlers only start them and watch the journal."""

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
        self._tasks: dict[str, asyncio.Task[Payment]] = {}
        self._reverse_requests: dict[str, asyncio.Event] = {}
        # One event per watched payment, set (and dropped) when its next event is committed.
        self._changes: dict[str, asyncio.Event] = {}
        # Serializes check-then-journal steps taken outside payment tasks.
        self._lock = asyncio.Lock()
        self._closed = False
        journal.add_listener(self._on_event)

    async def begin(self, order: PaymentOrder, session_id: str = "") -> tuple[Payment, bool]:
        """Journal a new payment (CAPTURING); re-attach when the same parameters exist."""
        self._check_open()
        _validate(order)
        data: dict[str, str | int] = {"session_id": session_id} if session_id else {}
        return await self._journal.create_payment(order, data=data)

    async def record_face_captured(
        self, out_trade_no: str, openid: str, sub_openid: str, underage_state: int
    ) -> PaymentEvent:
        """The face was captured: PAYING (the face code itself is never journaled)."""
        async with self._lock:
            payment = await self._journal.get(out_trade_no)
            if payment.state is not PaymentState.CAPTURING:
                raise InvalidArgument(
                    "out_trade_no", f"payment {out_trade_no} is {payment.state}, not CAPTURING"
                )
            return await self._journal.append(
                out_trade_no,
                PaymentState.PAYING,
                EventKind.FACE_CAPTURED,
                {"openid": openid, "sub_openid": sub_openid, "underage_state": underage_state},
                openid=openid,
            )

    async def record_cancelled(
        self, out_trade_no: str, reason: str, description: str
    ) -> PaymentEvent:
        """The face session ended without a payment: CANCELLED (only before micropay)."""
        async with self._lock:
            payment = await self._journal.get(out_trade_no)
            unsent = payment.state is PaymentState.CAPTURING or (
                payment.state is PaymentState.PAYING and payment.pay_sent_at is None
            )
            if not unsent or out_trade_no in self._tasks:
                raise InvalidArgument(
                    "out_trade_no",
                    f"payment {out_trade_no} is {payment.state} and may have been sent;"
                    " it cannot be cancelled",
                )
            return await self._journal.append(
                out_trade_no,
                PaymentState.CANCELLED,
                EventKind.CANCELLED,
                {"reason": reason, "description": description},
            )

    def pay(self, out_trade_no: str, face_code: str) -> None:
        """Start the daemon-owned task that sends micropay once and settles the order."""
        self._check_open()
        if out_trade_no in self._tasks:
            raise InvalidArgument("out_trade_no", f"payment {out_trade_no} is already in progress")
        # The face code lives only in this coroutine, for the one micropay request.
        self._spawn(out_trade_no, lambda machine: machine.pay(face_code))

    async def reverse(self, out_trade_no: str) -> Payment:
        """Reverse a paid or unfinished payment; returns it once final."""
        self._check_open()
        first, spawned = True, False
        while True:
            async with self._lock:
                payment = await self._journal.get(out_trade_no)
                state = payment.state
                if state is PaymentState.REVERSED:
                    return payment
                if state in (PaymentState.FAILED, PaymentState.CANCELLED):
                    if first:
                        raise InvalidArgument(
                            "out_trade_no",
                            f"payment {out_trade_no} is {state}: nothing was charged to reverse",
                        )
                    return payment
                if state is PaymentState.SUCCEEDED and spawned:
                    raise BackendRejected(
                        payment.err_code or "REVERSE_REFUSED",
                        f"reverse of {out_trade_no} was refused; it stays paid:"
                        f" {payment.err_code_des}",
                    )
                task = self._tasks.get(out_trade_no)
                if task is None:
                    if not payment.final and payment.pay_sent_at is None:
                        raise InvalidArgument(
                            "out_trade_no",
                            f"payment {out_trade_no} was never sent to WeChat Pay;"
                            " cancel its face session instead",
                        )
                    task = self._spawn(out_trade_no, lambda machine: machine.reverse(MANUAL))
                    spawned = True
                else:
                    self._reverse_event(out_trade_no).set()
            first = False
            # asyncio.wait: a caller that goes away does not cancel the payment's task.
            await asyncio.wait({task})

    async def get(self, out_trade_no: str) -> Payment:
        """One payment, or NotFound."""
        return await self._journal.get(out_trade_no)

    async def find(self, out_trade_no: str) -> Payment | None:
        """One payment, or None."""
        return await self._journal.find(out_trade_no)

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

    async def watch(self, out_trade_no: str, after_seq: int = 0) -> AsyncIterator[PaymentEvent]:
        """Events after after_seq from the journal, then live ones; ends after a final event."""
        last = after_seq
        while True:
            # Taken before reading, so an event committed after the read still wakes us.
            changed = self._changes.setdefault(out_trade_no, asyncio.Event())
            events = await self._journal.events(out_trade_no, last)
            if events:
                for event in events:
                    yield event
                    last = event.seq
                if events[-1].state.final:
                    return
                continue
            payment = await self._journal.get(out_trade_no)
            if payment.last_seq > last:
                continue
            if payment.final:
                return
            if self._closed:
                raise PaymentServiceClosed(f"stopped watching payment {out_trade_no}")
            await changed.wait()

    async def wait_final(self, out_trade_no: str) -> Payment:
        """Wait until the payment is in a final state and return it."""
        payment = await self._journal.get(out_trade_no)
        async for _ in self.watch(out_trade_no, payment.last_seq):
            pass
        return await self._journal.get(out_trade_no)

    async def resume_unfinished(self) -> int:
        """Start a task for every unfinished journaled payment; call before reporting ready."""
        self._check_open()
        started = 0
        for payment in await self._journal.unfinished():
            if payment.out_trade_no in self._tasks:
                continue
            self._spawn(payment.out_trade_no, lambda machine: machine.resume(DAEMON_RESTARTED))
            started += 1
        if started:
            log.info("payments_resumed", count=started)
        return started

    def unfinished_count(self) -> int:
        """Payments being settled in the background."""
        return len(self._tasks)

    async def close(self, grace: float) -> None:
        """Let payment tasks finish for up to grace seconds, then cancel them (resumable)."""
        self._closed = True
        tasks = list(self._tasks.values())
        if tasks and grace > 0:
            everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
            timer: asyncio.Future[Any] = asyncio.ensure_future(self._clock.sleep(grace))
            await asyncio.wait({everything, timer}, return_when=asyncio.FIRST_COMPLETED)
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.info("payments_left_for_resume", count=len(pending))
        for event in self._changes.values():
            event.set()
        self._changes.clear()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise PaymentServiceClosed("the payment service is stopping")

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
        )

    def _spawn(
        self,
        out_trade_no: str,
        start: Callable[[PaymentMachine], Coroutine[Any, Any, Payment]],
    ) -> asyncio.Task[Payment]:
        first = start(self._machine(out_trade_no))
        task = asyncio.get_running_loop().create_task(
            self._drive(out_trade_no, first), name=f"payment {out_trade_no}"
        )
        self._tasks[out_trade_no] = task
        task.add_done_callback(lambda done: self._task_done(out_trade_no, done))
        return task

    async def _drive(self, out_trade_no: str, first: Coroutine[Any, Any, Payment]) -> Payment:
        """Run a machine step; after an unexpected failure, resume from the journal with backoff."""
        structlog.contextvars.bind_contextvars(out_trade_no=out_trade_no)
        step = first
        delay = self._timings.reverse_backoff
        while True:
            try:
                return await step
            except InvalidArgument as exc:
                # The journal refused a step (e.g. micropay already attempted): nothing was sent.
                log.warning("payment_step_refused", error=str(exc))
                return await self._journal.get(out_trade_no)
            except NotFound:
                log.exception("payment_missing_from_journal")
                raise
            except Exception:
                log.exception("payment_task_failed")
            await self._clock.sleep(delay)
            delay = min(delay * 2, self._timings.reverse_backoff_max)
            step = self._machine(out_trade_no).resume(INTERNAL_ERROR)

    def _task_done(self, out_trade_no: str, task: asyncio.Task[Payment]) -> None:
        if self._tasks.get(out_trade_no) is task:
            del self._tasks[out_trade_no]
            self._reverse_requests.pop(out_trade_no, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("payment_task_ended", out_trade_no=out_trade_no, error=str(task.exception()))

    def _on_event(self, event: PaymentEvent) -> None:
        """Journal listener: one log line per state change, and wake the payment's watchers."""
        log.info(
            "payment_event",
            out_trade_no=event.out_trade_no,
            seq=event.seq,
            state=event.state.value,
            kind=event.kind.value,
            **{k: v for k, v in event.data.items() if k != "face_code"},
        )
        changed = self._changes.pop(event.out_trade_no, None)
        if changed is not None:
            changed.set()


def _validate(order: PaymentOrder) -> None:
    if not _OUT_TRADE_NO.fullmatch(order.out_trade_no):
        raise InvalidArgument("out_trade_no", "must be 1-32 characters of [0-9A-Za-z_-|*@]")
    if order.total_fee <= 0:
        raise InvalidArgument("total_fee", "must be a positive number of fen")
    if not order.body or len(order.body.encode()) > 128:
        raise InvalidArgument("body", "must be 1-128 bytes")
