"""Daemon-owned flows: face pay, code pay, capture-only, user info, PayScore status.

An RPC handler validates, then starts (or attaches to) a flow and streams what it reports; the
flow runs as a task the daemon owns, so a POS that hangs up never cuts an SDK call or a payment
in half. The camera is claimed before anything is journaled: a busy terminal changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import structlog

from facepayd.clock import Clock, wait_for
from facepayd.device.sdk import FaceCode, UiResult, UserInfo
from facepayd.errors import (
    AlreadyExists,
    ConfigError,
    DeviceError,
    FacepayError,
    FaceSessionEnded,
    JournalError,
)
from facepayd.face.lifecycle import Lifecycle
from facepayd.face.sessions import (
    SCAN_PAYMENT,
    USER_CANCEL,
    FaceOptions,
    FaceSessions,
    Session,
    SessionEnd,
    SessionState,
)
from facepayd.payments.models import PaymentEvent, PaymentOrder, PaymentState
from facepayd.payments.service import PaymentService
from facepayd.payscore.service import NOT_CONFIGURED, PayScoreOutcome, PayScoreStatus
from facepayd.tasks import TaskOwner

__all__ = [
    "CaptureCancelled",
    "CaptureHandle",
    "CaptureStep",
    "FaceCode",
    "FaceFlows",
    "FacePayHandle",
    "FacePayStep",
    "SessionStartedStep",
    "UiResult",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

JOURNAL_UNAVAILABLE = "JOURNAL_UNAVAILABLE"
POS_HUNG_UP = "POS_HUNG_UP"
INTERNAL_ERROR = "INTERNAL_ERROR"


class FlowCrashed(FacepayError):
    """A flow stopped on a bug; the POS sees INTERNAL with a fixed text."""

    reason = "INTERNAL"

    def __init__(self) -> None:
        super().__init__("the face session stopped on an internal error")


@dataclass(frozen=True, slots=True)
class SessionStartedStep:
    """A capture-only session holds the camera."""

    session_id: str


@dataclass(frozen=True, slots=True)
class CaptureCancelled:
    """The capture ended without a face code."""

    reason: str
    description: str


# What a StartFacePay stream carries: journaled payment events and the UI's end.
FacePayStep = PaymentEvent | SessionEnd
# What a CaptureFaceCode stream carries, in order.
CaptureStep = SessionStartedStep | FaceCode | CaptureCancelled | UiResult | SessionEnd


@dataclass(slots=True, eq=False)
class FacePayHandle:
    """What the POS that started (or re-attached to) a face or code payment holds."""

    out_trade_no: str
    created: bool
    _payments: PaymentService
    # None for a re-attach: only the starter follows the face UI.
    session: Session | None = None
    # Resolves once the new order is journaled (or with why it could not be).
    _journaled: asyncio.Future[None] | None = field(default=None, repr=False)
    # The face code is a secret: kept out of the repr.
    _face_code: asyncio.Future[str] | None = field(default=None, repr=False)
    # Resolves when the flow ends; an exception ends the stream with that error.
    _outcome: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def session_id(self) -> str:
        """The face session of a started payment ("" for a re-attach)."""
        return self.session.id if self.session is not None else ""

    @property
    def face_code(self) -> str | None:
        """The captured face code, only for the POS that started the capture."""
        code = self._face_code
        if code is None or not code.done() or code.cancelled():
            return None
        return code.result()

    async def steps(self) -> AsyncIterator[FacePayStep]:
        """The payment's events from seq 1 and (for the starter) the UI's end, until both end."""
        if self._journaled is not None:
            await asyncio.shield(self._journaled)
        # An async generator (PaymentService.watch), closed here when the stream ends.
        watch = cast(AsyncGenerator[PaymentEvent, None], self._payments.watch(self.out_trade_no, 0))
        end = self.session.ended if self.session is not None else None
        outcome = self._outcome
        next_event: asyncio.Future[PaymentEvent] = asyncio.ensure_future(anext(watch))
        payment_over = False
        try:
            while not payment_over or end is not None:
                waiting: set[asyncio.Future[Any]] = set()
                if not payment_over:
                    waiting.add(next_event)
                if end is not None:
                    waiting.add(end)
                if outcome is not None:
                    waiting.add(outcome)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not payment_over and next_event.done():
                    try:
                        event = next_event.result()
                    except StopAsyncIteration:
                        payment_over = True
                    else:
                        yield event
                        next_event = asyncio.ensure_future(anext(watch))
                    continue
                if end is not None and end.done():
                    yield end.result()
                    end = None
                    continue
                if outcome is not None and outcome.done():
                    error = outcome.exception()
                    if error is not None:
                        raise error
                    outcome = None
        finally:
            next_event.cancel()
            with contextlib.suppress(BaseException):
                await next_event
            await watch.aclose()


@dataclass(slots=True, eq=False)
class CaptureHandle:
    """A capture-only session's steps, for the POS that started it."""

    session: Session
    _detach: Callable[[], None]
    _steps: asyncio.Queue[CaptureStep | BaseException | None] = field(default_factory=asyncio.Queue)
    _done: bool = False

    async def steps(self) -> AsyncIterator[CaptureStep]:
        """Session started, the face code (or cancelled), the SDK's confirmation, the UI's end."""
        try:
            while True:
                step = await self._steps.get()
                if step is None:
                    self._done = True
                    return
                if isinstance(step, BaseException):
                    self._done = True
                    raise step
                yield step
        finally:
            if not self._done:
                # The POS hung up before the end: the flow quits the UI (SDK 2.22+).
                self._detach()

    def _put(self, step: CaptureStep | BaseException | None) -> None:
        self._steps.put_nowait(step)


class FaceFlows:
    """Starts and owns every flow that holds the camera."""

    def __init__(
        self,
        *,
        sessions: FaceSessions,
        payments: PaymentService,
        lifecycle: Lifecycle,
        clock: Clock,
        journal_retry: float = 1.0,
        journal_retry_max: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._payments = payments
        self._lifecycle = lifecycle
        self._clock = clock
        self._journal_retry = journal_retry
        self._journal_retry_max = journal_retry_max
        self._tasks = TaskOwner("face-flows")
        # Face payments whose session is open, by out_trade_no (for a concurrent re-attach).
        self._paying: dict[str, FacePayHandle] = {}

    @property
    def running(self) -> int:
        """Flows and journal retries still running."""
        return len(self._tasks)

    # ------------------------------------------------------------------ face pay

    async def start_face_pay(self, order: PaymentOrder, options: FaceOptions) -> FacePayHandle:
        """Start a face payment, or re-attach to the one with this out_trade_no."""
        attached = await self._attach(order)
        if attached is not None:
            return attached
        # A journal known not to write could never record this order: refuse before the camera.
        self._payments.require_journal()
        # Atomic and before any write: a loser gets TerminalBusy and nothing is journaled.
        session = await self._sessions.claim(
            "pay", wait=options.wait_if_busy, out_trade_no=order.out_trade_no
        )
        if options.wait_if_busy:
            # While this caller waited, another may have created the same order, or the
            # journal may have stopped taking writes.
            try:
                attached = await self._attach(order)
                if attached is None:
                    self._payments.require_journal()
            except BaseException:
                self._sessions.release_unused(session)
                raise
            if attached is not None:
                self._sessions.release_unused(session)
                return attached
        loop = asyncio.get_running_loop()
        handle = FacePayHandle(
            order.out_trade_no,
            created=True,
            _payments=self._payments,
            session=session,
            _journaled=loop.create_future(),
            _face_code=loop.create_future(),
            _outcome=loop.create_future(),
        )
        self._paying[order.out_trade_no] = handle
        self._own(self._run_face_pay(session, order, options, handle), session, handle._outcome)
        return handle

    # ------------------------------------------------------------------ code pay

    async def start_code_pay(self, order: PaymentOrder, auth_code: str) -> FacePayHandle:
        """Pay a scanned payment code, or continue a face sale the customer chose to scan.

        No camera is needed: the payment task is the daemon's (PaymentService), and the
        handle streams the payment's events from seq 1, a continued sale's face events too.
        The same out_trade_no and parameters again re-attach.
        """
        payment, started = await self._payments.start_code_pay(order, auth_code)
        return FacePayHandle(payment.out_trade_no, created=started, _payments=self._payments)

    async def _attach(self, order: PaymentOrder) -> FacePayHandle | None:
        running = self._paying.get(order.out_trade_no)
        if running is not None and running._journaled is not None:
            # Its order is being journaled right now; attach once it is.
            with contextlib.suppress(FacepayError):
                await asyncio.shield(running._journaled)
        if not await self._payments.exists(order.out_trade_no):
            return None
        # begin() compares the parameters: the same re-attach, different ones are refused.
        payment, created = await self._payments.begin(order)
        if created:  # pragma: no cover - only if the order vanished between find and begin
            log.error("face_pay_order_created_without_session", out_trade_no=order.out_trade_no)
            with contextlib.suppress(FacepayError):
                await self._payments.record_cancelled(
                    order.out_trade_no, INTERNAL_ERROR, "created without a face session"
                )
        return FacePayHandle(payment.out_trade_no, created=False, _payments=self._payments)

    async def _run_face_pay(
        self, session: Session, order: PaymentOrder, options: FaceOptions, handle: FacePayHandle
    ) -> None:
        out_trade_no = order.out_trade_no
        assert handle._journaled is not None
        assert handle._face_code is not None
        journaled = handle._journaled
        structlog.contextvars.bind_contextvars(out_trade_no=out_trade_no)
        try:
            async with self._sessions.hold(session):
                # The SDK call goes out first; the order is committed while it is on its way
                # (journal-first asks it durable before micropay, not before the camera).
                capture = asyncio.ensure_future(
                    self._sessions.capture(
                        session, options, out_trade_no=out_trade_no, total_fee=order.total_fee
                    )
                )
                try:
                    await _camera_requested(session, capture)
                    await self._begin_own(order, session)
                except asyncio.CancelledError:
                    capture.cancel()
                    raise
                except Exception as exc:
                    # Nothing journaled: close the UI, pay nothing, end the stream with why.
                    error = exc if isinstance(exc, FacepayError) else FlowCrashed()
                    if error is not exc:
                        log.exception("face_pay_begin_crashed")
                    reason = exc.reason if isinstance(exc, FacepayError) else INTERNAL_ERROR
                    await self._abandon_capture(session, capture, reason, journaled, error)
                    return
                journaled.set_result(None)
                try:
                    code = await capture
                except FaceSessionEnded as exc:
                    await self._record_cancelled(out_trade_no, exc.return_code, exc.return_msg)
                    return
                except Exception as exc:
                    # Journaled and no code (device, authinfo fetch, a bug): CANCELLED, never
                    # left CAPTURING with nobody to end it.
                    await self._record_cancelled(out_trade_no, *_why(exc))
                    if not isinstance(exc, FacepayError):
                        raise
                    return
                handle._face_code.set_result(code.face_code)
                try:
                    # One commit between the face code and micropay: the face's record and the
                    # at-most-once mark together; the payment task sends micropay after it.
                    await self._payments.pay_captured(
                        out_trade_no,
                        code.face_code,
                        code.openid,
                        code.sub_openid,
                        code.underage_state,
                        code.telephone_used,
                    )
                except Exception as exc:
                    # The code is never paid unrecorded: close the UI, cancel, end the stream.
                    await self._close_result_page(session, success=False)
                    _resolve(
                        handle._outcome, exc if isinstance(exc, FacepayError) else FlowCrashed()
                    )
                    await self._record_cancelled(out_trade_no, *_why(exc))
                    await self._sessions.wait_end(session)
                    if not isinstance(exc, FacepayError):
                        raise
                    return
                if self._lifecycle.version.has_update_pay_result:
                    # Old SDKs keep their UI open until told the result; the camera is not held
                    # past the face deadline for it (the payment goes on without the UI).
                    try:
                        final = await wait_for(
                            self._clock,
                            self._payments.wait_final(out_trade_no),
                            self._sessions.face_timeout,
                        )
                    except TimeoutError:
                        log.warning("pay_result_not_shown_in_time")
                    else:
                        await self._close_result_page(
                            session, success=final.state is PaymentState.SUCCEEDED
                        )
                await self._sessions.wait_end(session)
        finally:
            self._paying.pop(out_trade_no, None)
            _resolve(journaled, FlowCrashed())
            structlog.contextvars.unbind_contextvars("out_trade_no")

    async def _begin_own(self, order: PaymentOrder, session: Session) -> None:
        """Journal this capture's order; AlreadyExists when another request journaled it first."""
        _, created = await self._payments.begin(order, session_id=session.id)
        if not created:
            # Journaled after our re-attach lookup (a StartCodePay, a waiting StartFacePay):
            # its sale, not ours, so this capture must not go on.
            raise AlreadyExists(
                f"payment {order.out_trade_no} was started by another request meanwhile;"
                " follow it with WatchPayment"
            )

    async def _abandon_capture(
        self,
        session: Session,
        capture: asyncio.Future[FaceCode],
        reason: str,
        journaled: asyncio.Future[None],
        error: FacepayError,
    ) -> None:
        """Quit a capture that can never be paid; below 2.22 wait for the SDK's own end."""
        quit_sent = await self._sessions.quit_if_open(session, reason)
        # The stream ends now (within the face deadline), whatever the SDK does next.
        _resolve(journaled, error)
        if not quit_sent:
            log.info("capture_left_to_the_sdk", session_id=session.id)
        with contextlib.suppress(FacepayError):
            await capture
        await self._close_result_page(session, success=False)
        await self._sessions.wait_end(session)

    async def _close_result_page(self, session: Session, *, success: bool) -> None:
        """Close the UI after a code: the pay result below 2.13, quit from 2.22."""
        if session.state is not SessionState.RESULT_PAGE:
            return
        try:
            if self._lifecycle.version.has_update_pay_result:
                await self._sessions.report_pay_result(session, success)
            elif not success:
                await self._sessions.quit_if_open(session, JOURNAL_UNAVAILABLE)
        except FacepayError as exc:
            log.warning("result_page_not_closed", error=exc.reason)

    async def _record_cancelled(self, out_trade_no: str, reason: str, description: str) -> None:
        """CANCELLED now, or by a daemon-owned retry once the journal writes again."""
        try:
            await self._payments.record_cancelled(out_trade_no, reason, description)
        except JournalError:
            log.warning("cancel_not_journaled_retrying", reason=reason)
            self._tasks.spawn(
                self._retry_cancelled(out_trade_no, reason, description),
                name=f"cancel {out_trade_no}",
            )
        except FacepayError as exc:
            # Already moved on (or final): nothing to cancel.
            log.warning("cancel_refused", error=str(exc))

    async def _retry_cancelled(self, out_trade_no: str, reason: str, description: str) -> None:
        delay = self._journal_retry
        while True:
            await self._clock.sleep(delay)
            try:
                await self._payments.record_cancelled(out_trade_no, reason, description)
            except JournalError:
                delay = min(delay * 2, self._journal_retry_max)
                continue
            except FacepayError as exc:
                log.warning("cancel_refused", out_trade_no=out_trade_no, error=str(exc))
            else:
                log.info("cancel_journaled_after_retry", out_trade_no=out_trade_no)
            return

    # ------------------------------------------------------------------ capture-only

    async def start_capture(
        self, options: FaceOptions, *, out_trade_no: str, total_fee: int
    ) -> CaptureHandle:
        """Capture-only: a face code for a POS that pays through its own backend."""
        session = await self._sessions.claim(
            "capture", wait=options.wait_if_busy, out_trade_no=out_trade_no
        )
        handle = CaptureHandle(session, lambda: self._detached(session))
        outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outcome.add_done_callback(lambda done: _end_capture(handle, done))
        self._own(
            self._run_capture(session, options, out_trade_no, total_fee, handle), session, outcome
        )
        return handle

    async def _run_capture(
        self,
        session: Session,
        options: FaceOptions,
        out_trade_no: str,
        total_fee: int,
        handle: CaptureHandle,
    ) -> None:
        async with self._sessions.hold(session):
            capture = asyncio.ensure_future(
                self._sessions.capture(
                    session, options, out_trade_no=out_trade_no, total_fee=total_fee
                )
            )
            try:
                # The POS hears of the session once the face UI call is on its way, not before.
                await _camera_requested(session, capture)
            except BaseException:
                capture.cancel()
                raise
            handle._put(SessionStartedStep(session.id))
            try:
                code = await capture
            except FaceSessionEnded as exc:
                handle._put(CaptureCancelled(exc.return_code, exc.return_msg))
            except DeviceError:
                handle._put(await self._sessions.wait_end(session))
                raise
            else:
                handle._put(code)
                # Below 2.13 the UI waits for ReportPayResult; from 2.13 for its own callback.
                await self._sessions.wait_end(session)
                if session.ui_result is not None:
                    handle._put(session.ui_result)
            handle._put(await self._sessions.wait_end(session))

    def _detached(self, session: Session) -> None:
        if session.state is SessionState.FACE_UI:
            # Nobody will receive the code: quit the UI rather than cancel the SDK call.
            self._tasks.spawn(
                self._sessions.quit_if_open(session, POS_HUNG_UP), name=f"quit {session.id}"
            )

    # ------------------------------------------------------------------ user info, PayScore

    async def user_info(self, options: FaceOptions) -> UserInfo:
        """Identify the user by face (getWxpayfaceUserInfo)."""
        session = await self._sessions.claim("userinfo", wait=options.wait_if_busy)
        return await self._unary(session, self._run_user_info(session, options))

    async def _run_user_info(self, session: Session, options: FaceOptions) -> UserInfo:
        async with self._sessions.hold(session):
            return await self._sessions.user_info(session, options)

    async def check_payscore_status(
        self,
        options: FaceOptions,
        *,
        out_trade_no: str,
        out_request_no: str = "",
        service_id: str = "",
    ) -> PayScoreStatus:
        """Recognise the user and ask for PayScore and authorization (getUserPayScoreStatus)."""
        if not service_id:
            raise ConfigError(NOT_CONFIGURED)
        session = await self._sessions.claim(
            "payscore", wait=options.wait_if_busy, out_trade_no=out_trade_no
        )
        return await self._unary(
            session,
            self._run_payscore(
                session, options, out_trade_no, out_request_no or out_trade_no, service_id
            ),
        )

    async def _run_payscore(
        self,
        session: Session,
        options: FaceOptions,
        out_trade_no: str,
        out_request_no: str,
        service_id: str,
    ) -> PayScoreStatus:
        async with self._sessions.hold(session):
            try:
                status = await self._sessions.payscore_status(
                    session,
                    options,
                    out_trade_no=out_trade_no,
                    out_request_no=out_request_no,
                    service_id=service_id,
                )
            except FaceSessionEnded as exc:
                # Leaving the UI or choosing to scan are documented answers, not errors.
                if exc.return_code not in (USER_CANCEL, SCAN_PAYMENT):
                    raise
                result = PayScoreStatus(
                    outcome=PayScoreOutcome(exc.return_code),
                    return_msg=exc.return_msg,
                    err_code=exc.err_code,
                )
            else:
                result = PayScoreStatus(
                    outcome=PayScoreOutcome(status.return_code),
                    openid=status.openid,
                    sub_openid=status.sub_openid,
                    face_sid=status.face_sid,
                    return_msg=status.return_msg,
                    err_code=status.err_code,
                )
        log.info("payscore_status", out_trade_no=out_trade_no, outcome=result.outcome.value)
        return result

    async def _unary(self, session: Session, work: Coroutine[Any, Any, T]) -> T:
        """Run a one-answer flow as a daemon-owned task; a caller that leaves quits the UI."""
        outcome: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._own(work, session, outcome)
        try:
            return await asyncio.shield(outcome)
        except asyncio.CancelledError:
            self._detached(session)
            outcome.add_done_callback(_consume)
            raise

    # ------------------------------------------------------------------ ownership

    def _own(
        self, work: Coroutine[Any, Any, T], session: Session, outcome: asyncio.Future[T] | None
    ) -> None:
        """Run work as an owned task; its result or error resolves outcome, never a hang."""

        async def run() -> None:
            try:
                result = await work
            except FacepayError as exc:
                log.info("face_flow_ended", kind=session.kind, reason=exc.reason)
                _resolve(outcome, exc)
            except asyncio.CancelledError:
                _resolve(outcome, FlowCrashed())
                raise
            except Exception:
                # A bug must not leave a stream waiting: the POS gets INTERNAL.
                log.exception("face_flow_crashed", kind=session.kind)
                _resolve(outcome, FlowCrashed())
            else:
                if outcome is not None and not outcome.done():
                    outcome.set_result(result)

        try:
            task = self._tasks.spawn(run(), name=f"{session.kind} {session.id}")
        except BaseException:
            work.close()
            self._sessions.release_unused(session)
            raise

        def cleanup(_task: asyncio.Task[None]) -> None:
            # A task cancelled before it ran never entered hold(): free its claim here, and
            # close the flow it never started (a no-op for one that ran).
            work.close()
            if self._sessions.active is session:
                self._sessions.release_unused(session)
            _resolve(outcome, FlowCrashed())

        task.add_done_callback(cleanup)

    async def close(self) -> None:
        """Stop every flow and journal retry (payments started by flows go on)."""
        await self._tasks.close()


async def _camera_requested(session: Session, capture: asyncio.Future[FaceCode]) -> None:
    """Until the capture's face UI call has been written (or the capture ended without one).

    The capture task resolves ui_requested in the same step that writes the call frame, so
    whatever runs after this (the journal commit, session_started to the POS) goes behind it.
    """
    if not session.ui_requested.done() and not capture.done():
        await asyncio.wait((session.ui_requested, capture), return_when=asyncio.FIRST_COMPLETED)


def _resolve(outcome: asyncio.Future[Any] | None, error: BaseException) -> None:
    if outcome is not None and not outcome.done():
        outcome.set_exception(error)
        outcome.add_done_callback(_consume)


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (someone else reports it)."""
    if not future.cancelled():
        future.exception()


def _end_capture(handle: CaptureHandle, outcome: asyncio.Future[None]) -> None:
    error = None if outcome.cancelled() else outcome.exception()
    if error is not None:
        handle._put(error)
    handle._put(None)


def _why(exc: BaseException) -> tuple[str, str]:
    """The reason and description a cancelled order keeps for exc, without internal text."""
    if isinstance(exc, JournalError):
        return JOURNAL_UNAVAILABLE, "the journal could not be written"
    if isinstance(exc, FacepayError):
        return exc.reason, str(exc)
    log.exception("face_pay_crashed", exc_info=exc)
    return INTERNAL_ERROR, "the face payment stopped on an internal error"
