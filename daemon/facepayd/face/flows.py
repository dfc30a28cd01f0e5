"""StartFacePay as daemon-owned work: capture a face, then hand the code to the payment service."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog

from facepayd.errors import DeviceError, FacepayError, FaceSessionEnded, TerminalBusy
from facepayd.face.lifecycle import Lifecycle
from facepayd.face.sessions import FaceOptions, FaceSessions
from facepayd.payments.models import PaymentOrder, PaymentState
from facepayd.payments.service import PaymentService

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class FacePayHandle:
    """What the POS that started (or re-attached to) a face payment holds."""

    out_trade_no: str
    created: bool
    # Resolves to the face code for the POS that started the capture; None for a re-attach.
    face_code: asyncio.Future[str] | None = field(default=None)


class FacePayFlows:
    """Runs capture → micropay as tasks the daemon owns, so a POS hang-up cuts nothing in half."""

    def __init__(
        self, *, sessions: FaceSessions, payments: PaymentService, lifecycle: Lifecycle
    ) -> None:
        self._sessions = sessions
        self._payments = payments
        self._lifecycle = lifecycle
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, order: PaymentOrder, options: FaceOptions) -> FacePayHandle:
        """Start a face payment, or re-attach to the one with this out_trade_no."""
        existing = await self._payments.find(order.out_trade_no)
        if existing is None and not options.wait_if_busy and not self._sessions.try_claim():
            # Checked before journaling: a busy terminal changes nothing.
            active = self._sessions.active
            raise TerminalBusy(active.id if active else "starting")
        payment, created = await self._payments.begin(order)
        if not created:
            return FacePayHandle(payment.out_trade_no, created=False)
        face_code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(self._run(order, options, face_code))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return FacePayHandle(order.out_trade_no, created=True, face_code=face_code)

    async def close(self) -> None:
        """Cancel captures still waiting for a face; the payments they started go on."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(
        self, order: PaymentOrder, options: FaceOptions, face_code: asyncio.Future[str]
    ) -> None:
        out_trade_no = order.out_trade_no
        structlog.contextvars.bind_contextvars(out_trade_no=out_trade_no)
        try:
            async with self._sessions.open(
                "pay", wait=options.wait_if_busy, out_trade_no=out_trade_no
            ) as session:
                try:
                    capture = await self._sessions.capture(
                        session, options, out_trade_no=out_trade_no, total_fee=order.total_fee
                    )
                except FaceSessionEnded as exc:
                    await self._payments.record_cancelled(
                        out_trade_no, exc.return_code, exc.return_msg
                    )
                    return
                except DeviceError as exc:
                    await self._payments.record_cancelled(out_trade_no, exc.reason, str(exc))
                    return
                if not face_code.done():
                    face_code.set_result(capture.face_code)
                await self._payments.record_face_captured(
                    out_trade_no, capture.openid, capture.sub_openid, capture.underage_state
                )
                self._payments.pay(out_trade_no, capture.face_code)
                if self._lifecycle.supports_update_pay_result():
                    # Old SDKs keep their UI open until told the result.
                    final = await self._payments.wait_final(out_trade_no)
                    with contextlib.suppress(FacepayError):
                        await self._sessions.report_pay_result(
                            session, final.state is PaymentState.SUCCEEDED
                        )
        except TerminalBusy as exc:
            await self._payments.record_cancelled(out_trade_no, exc.reason, str(exc))
        except FacepayError as exc:
            log.warning("face_pay_failed", error=str(exc))
            with contextlib.suppress(FacepayError):
                await self._payments.record_cancelled(out_trade_no, exc.reason, str(exc))
        except Exception:
            # A bug must not leave the payment CAPTURING with its POS waiting forever; refused
            # (and left to its payment task) once micropay may have been sent.
            log.exception("face_pay_crashed")
            with contextlib.suppress(FacepayError):
                await self._payments.record_cancelled(
                    out_trade_no, "INTERNAL_ERROR", "the face payment stopped on an internal error"
                )
        finally:
            if not face_code.done():
                face_code.cancel()
            structlog.contextvars.unbind_contextvars("out_trade_no")
