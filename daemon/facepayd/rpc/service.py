"""TerminalService: validates requests, calls the domain, converts results to protobuf."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf import timestamp_pb2

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay.terminal.v1 import terminal_pb2_grpc as pb_grpc
from facepayd import __version__, errors
from facepayd.authinfo import AuthinfoCache
from facepayd.config import Config, SdkMode
from facepayd.face_pay import FacePayFlows
from facepayd.lifecycle import Lifecycle, State
from facepayd.payments.models import Payment, PaymentEvent, PaymentOrder, PaymentState
from facepayd.payments.service import PaymentService
from facepayd.rpc import validation as v
from facepayd.rpc.status import to_status
from facepayd.sessions import FaceOptions, FaceSessions

log = structlog.get_logger(__name__)

T = TypeVar("T")

_LIFECYCLE = {
    State.DISCONNECTED: pb.LIFECYCLE_STATE_DISCONNECTED,
    State.UNINITIALIZED: pb.LIFECYCLE_STATE_UNINITIALIZED,
    State.INITIALIZING: pb.LIFECYCLE_STATE_INITIALIZING,
    State.READY: pb.LIFECYCLE_STATE_READY,
    State.IN_SESSION: pb.LIFECYCLE_STATE_IN_SESSION,
    State.RELEASING: pb.LIFECYCLE_STATE_RELEASING,
    State.FAULT: pb.LIFECYCLE_STATE_FAULT,
    State.STOPPING: pb.LIFECYCLE_STATE_STOPPING,
}
_PAYMENT_STATE = {state: pb.PaymentState.Value(f"PAYMENT_STATE_{state.name}") for state in PaymentState}
_PAYMENT_STATE_BACK = {value: state for state, value in _PAYMENT_STATE.items()}


@dataclass(frozen=True, slots=True)
class Domain:
    """What the API adapts: the daemon's domain objects."""

    config: Config
    lifecycle: Lifecycle
    authinfo: AuthinfoCache
    sessions: FaceSessions
    flows: FacePayFlows
    payments: PaymentService


def _rpc(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Translate domain errors into rich statuses at the API boundary."""

    @functools.wraps(handler)
    async def wrapper(self: TerminalService, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await handler(self, request, context)
        except errors.FacepayError as exc:
            log.info("rpc_error", rpc=handler.__name__, reason=exc.reason, error=str(exc))
            await context.abort_with_status(to_status(exc))
            raise AssertionError("abort_with_status returned") from exc

    return wrapper


def _stream(
    handler: Callable[..., AsyncIterator[T]],
) -> Callable[..., AsyncIterator[T]]:
    """The same translation for server-streaming handlers."""

    @functools.wraps(handler)
    async def wrapper(self: TerminalService, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
        try:
            async for item in handler(self, request, context):
                yield item
        except errors.FacepayError as exc:
            log.info("rpc_error", rpc=handler.__name__, reason=exc.reason, error=str(exc))
            await context.abort_with_status(to_status(exc))

    return wrapper


class TerminalService(pb_grpc.TerminalServiceServicer):  # type: ignore[misc]
    """The facepay.terminal.v1 API over the daemon's domain."""

    def __init__(self, domain: Domain) -> None:
        self._d = domain

    # ------------------------------------------------------------------ status

    def status(self) -> pb.TerminalStatus:
        """The terminal's status as the API shows it."""
        d = self._d
        hello = d.lifecycle.hello
        info = d.lifecycle.peripheral
        device = pb.DeviceInfo(
            transport=d.lifecycle.transport_description,
            serial=info.serial or (hello.device_serial if hello else ""),
            model=info.model or (hello.device_model if hello else ""),
            bridge_version=hello.bridge_version if hello else "",
            sdk_version=hello.sdk_version if hello else "",
            face_app_version=info.face_app_version or (hello.face_app_version if hello else ""),
            bridge_app_version=info.bridge_app_version,
            face_app_installed=bool(info.face_app_installed)
            if info.face_app_installed is not None
            else bool(hello and hello.face_app_version),
            bridge_app_installed=bool(info.bridge_app_installed)
            if info.bridge_app_installed is not None
            else hello is not None,
        )
        status = pb.TerminalStatus(
            state=_LIFECYCLE[d.lifecycle.state],
            mode=pb.SDK_MODE_AGGREGATE if d.lifecycle.mode is SdkMode.AGGREGATE else pb.SDK_MODE_NON_AGGREGATE,
            device=device,
            fault=d.lifecycle.fault,
            active_session_id=d.sessions.active.id if d.sessions.active else "",
            firewall_enabled=d.lifecycle.firewall_enabled,
            counters=pb.TerminalCounters(
                inits=d.lifecycle.counters.inits,
                releases=d.lifecycle.counters.releases,
                authinfo_fetches=d.authinfo.fetches,
                captures=d.sessions.captures,
                bridge_calls=d.lifecycle.bridge_calls,
                reconnects=d.lifecycle.counters.reconnects,
            ),
            daemon_version=__version__,
            unfinished_payments=d.payments.unfinished_count(),
        )
        if d.authinfo.expires_at is not None:
            status.authinfo_expires_at.CopyFrom(_timestamp(d.authinfo.expires_at))
        return status

    @_rpc
    async def GetStatus(self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext) -> pb.GetStatusResponse:
        """Current status."""
        return pb.GetStatusResponse(status=self.status())

    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        """Current status first, then each change."""
        changed = asyncio.Event()
        self._d.lifecycle.add_listener(changed.set)
        try:
            last = None
            while True:
                changed.clear()
                current = self.status()
                if current != last:
                    yield pb.WatchStatusResponse(status=current)
                    last = current
                await changed.wait()
        finally:
            self._d.lifecycle.remove_listener(changed.set)

    # ------------------------------------------------------------------ lifecycle

    @_rpc
    async def Reinitialize(self, request: pb.ReinitializeRequest, context: grpc.aio.ServicerContext) -> pb.ReinitializeResponse:
        """Release and init the SDK again."""
        self._require_idle()
        await self._d.lifecycle.reinitialize()
        return pb.ReinitializeResponse(status=self.status())

    @_rpc
    async def Release(self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext) -> pb.ReleaseResponse:
        """Release the SDK."""
        self._require_idle()
        await self._d.lifecycle.release()
        return pb.ReleaseResponse(status=self.status())

    @_rpc
    async def EnableFirewall(
        self, request: pb.EnableFirewallRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnableFirewallResponse:
        """enableFirewall."""
        await self._d.lifecycle.enable_firewall()
        return pb.EnableFirewallResponse(status=self.status())

    @_rpc
    async def DisableFirewall(
        self, request: pb.DisableFirewallRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableFirewallResponse:
        """disableFirewall."""
        await self._d.lifecycle.disable_firewall()
        return pb.DisableFirewallResponse(status=self.status())

    # ------------------------------------------------------------------ face sessions

    @_stream
    async def StartFacePay(
        self, request: pb.StartFacePayRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StartFacePayResponse]:
        """Capture a face and pay; streams the payment's events to its final state."""
        order = self._order(request)
        options = self._face(request.face, "face")
        handle = await self._d.flows.start(order, options)
        face_code = handle.face_code
        async for event in self._d.payments.watch(order.out_trade_no, 0):
            message = _event(event)
            if event.kind == "face_captured" and face_code is not None and face_code.done() and not face_code.cancelled():
                # Only the POS that started this capture ever sees its face code.
                message.face_captured.face_code = face_code.result()
            yield pb.StartFacePayResponse(event=message)

    @_stream
    async def CaptureFaceCode(
        self, request: pb.CaptureFaceCodeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CaptureFaceCodeResponse]:
        """Capture-only: face code to the POS, then the SDK's result confirmation."""
        rules = v.Rules()
        v.out_trade_no(rules, "out_trade_no", request.out_trade_no)
        rules.int_range("total_fee", request.total_fee, 1, self._d.config.payments.max_amount)
        options = self._face(request.face, "face", rules)
        sessions = self._d.sessions
        async with sessions.open("capture", wait=options.wait_if_busy, out_trade_no=request.out_trade_no) as session:
            yield pb.CaptureFaceCodeResponse(event=pb.CaptureEvent(session_started=pb.SessionStarted(session_id=session.id)))
            try:
                capture = await sessions.capture(
                    session, options, out_trade_no=request.out_trade_no, total_fee=request.total_fee
                )
            except errors.FaceSessionEnded as exc:
                cancelled = pb.SessionCancelled(reason=exc.return_code, description=exc.return_msg)
                yield pb.CaptureFaceCodeResponse(event=pb.CaptureEvent(cancelled=cancelled))
                return
            captured = pb.FaceCaptured(
                face_code=capture.face_code,
                openid=capture.openid,
                sub_openid=capture.sub_openid,
                underage_state=capture.underage_state,
            )
            yield pb.CaptureFaceCodeResponse(event=pb.CaptureEvent(face_captured=captured))
            # The SDK's UI stays until it confirms the result (after ReportPayResult below 2.13).
            with contextlib.suppress(TimeoutError):
                info = await asyncio.wait_for(session.update_results.get(), self._d.config.device.face_timeout)
                confirmed = pb.PayResultConfirmed(
                    return_code=info.get("return_code", ""), return_msg=info.get("return_msg", "")
                )
                yield pb.CaptureFaceCodeResponse(event=pb.CaptureEvent(pay_result_confirmed=confirmed))

    @_rpc
    async def CancelSession(self, request: pb.CancelSessionRequest, context: grpc.aio.ServicerContext) -> pb.CancelSessionResponse:
        """Quit the face UI."""
        rules = v.Rules()
        v.session_id(rules, "session_id", request.session_id, required=False)
        if len(request.toast_text) > 64:
            rules.fail("toast_text", "must be at most 64 characters")
        rules.check()
        session_id = await self._d.sessions.cancel(request.session_id, request.toast_text)
        return pb.CancelSessionResponse(session_id=session_id)

    @_rpc
    async def ReportPayResult(
        self, request: pb.ReportPayResultRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportPayResultResponse:
        """The POS's payment result for a capture-only session."""
        rules = v.Rules()
        v.session_id(rules, "session_id", request.session_id, required=True)
        if request.result not in (pb.PAY_RESULT_SUCCESS, pb.PAY_RESULT_ERROR):
            rules.fail("result", "must be PAY_RESULT_SUCCESS or PAY_RESULT_ERROR")
        rules.check()
        session = self._d.sessions.active
        if session is None or session.id != request.session_id or session.kind != "capture":
            raise errors.NotFound(f"no capture session {request.session_id}")
        await self._d.sessions.report_pay_result(session, request.result == pb.PAY_RESULT_SUCCESS)
        return pb.ReportPayResultResponse()

    @_rpc
    async def GetUserInfo(self, request: pb.GetUserInfoRequest, context: grpc.aio.ServicerContext) -> pb.GetUserInfoResponse:
        """Identify the user by face."""
        options = self._face(request.face, "face")
        async with self._d.sessions.open("userinfo", wait=options.wait_if_busy) as session:
            info = await self._d.sessions.user_info(session, options)
        return pb.GetUserInfoResponse(
            openid=info.get("openid", ""),
            sub_openid=info.get("sub_openid", ""),
            nickname=info.get("nickname", ""),
            token=info.get("token", ""),
            unionid_code=info.get("unionid_code", ""),
            unionid_msg=info.get("unionid_msg", ""),
        )

    # ------------------------------------------------------------------ payments

    @_stream
    async def WatchPayment(
        self, request: pb.WatchPaymentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchPaymentResponse]:
        """Replay after after_seq, then follow to the final state."""
        rules = v.Rules()
        v.out_trade_no(rules, "out_trade_no", request.out_trade_no)
        rules.check()
        await self._d.payments.get(request.out_trade_no)
        async for event in self._d.payments.watch(request.out_trade_no, request.after_seq):
            yield pb.WatchPaymentResponse(event=_event(event))

    @_rpc
    async def GetPayment(self, request: pb.GetPaymentRequest, context: grpc.aio.ServicerContext) -> pb.GetPaymentResponse:
        """One payment from the journal."""
        rules = v.Rules()
        v.out_trade_no(rules, "out_trade_no", request.out_trade_no)
        rules.check()
        return pb.GetPaymentResponse(payment=_payment(await self._d.payments.get(request.out_trade_no)))

    @_rpc
    async def ListPayments(self, request: pb.ListPaymentsRequest, context: grpc.aio.ServicerContext) -> pb.ListPaymentsResponse:
        """Payments from the journal, newest first, paged."""
        rules = v.Rules()
        rules.int_range("page_size", request.page_size, 0, 200)
        states = []
        for index, value in enumerate(request.states):
            if value not in _PAYMENT_STATE_BACK:
                rules.fail(f"states[{index}]", "must be a known PaymentState other than UNSPECIFIED")
            else:
                states.append(_PAYMENT_STATE_BACK[value])
        if len(request.page_token) > 512:
            rules.fail("page_token", "must be a token from a previous ListPayments")
        rules.check()
        payments, token = await self._d.payments.list(
            states=states,
            created_after=request.created_after.ToDatetime().timestamp() if request.HasField("created_after") else None,
            created_before=request.created_before.ToDatetime().timestamp() if request.HasField("created_before") else None,
            page_size=request.page_size or 50,
            page_token=request.page_token,
        )
        return pb.ListPaymentsResponse(payments=[_payment(p) for p in payments], next_page_token=token)

    @_rpc
    async def ReversePayment(
        self, request: pb.ReversePaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReversePaymentResponse:
        """Reverse a payment."""
        rules = v.Rules()
        v.out_trade_no(rules, "out_trade_no", request.out_trade_no)
        rules.check()
        return pb.ReversePaymentResponse(payment=_payment(await self._d.payments.reverse(request.out_trade_no)))

    # ------------------------------------------------------------------ helpers

    def _require_idle(self) -> None:
        active = self._d.sessions.active
        if active is not None:
            raise errors.TerminalBusy(active.id)

    def _order(self, request: pb.StartFacePayRequest) -> PaymentOrder:
        rules = v.Rules()
        v.out_trade_no(rules, "out_trade_no", request.out_trade_no)
        rules.int_range("total_fee", request.total_fee, 1, self._d.config.payments.max_amount)
        rules.max_bytes("body", request.body, 128, required=True)
        rules.max_bytes("attach", request.attach, 127)
        rules.max_bytes("detail", request.detail, 6000)
        rules.pattern("fee_type", request.fee_type, v.FEE_TYPE, "must be an ISO 4217 code like CNY", required=False)
        rules.max_bytes("goods_tag", request.goods_tag, 32)
        rules.choice("limit_pay", request.limit_pay, ("no_credit",))
        rules.pattern("time_expire", request.time_expire, v.TIME14, "must be yyyyMMddHHmmss", required=False)
        rules.max_bytes("scene_info", request.scene_info, 256)
        rules.choice("receipt", request.receipt, ("Y",))
        self._face(request.face, "face", rules)
        rules.check()
        return PaymentOrder(
            out_trade_no=request.out_trade_no,
            total_fee=request.total_fee,
            body=request.body,
            attach=request.attach,
            detail=request.detail,
            fee_type=request.fee_type,
            goods_tag=request.goods_tag,
            limit_pay=request.limit_pay,
            time_expire=request.time_expire,
            scene_info=request.scene_info,
            receipt=request.receipt,
        )

    def _face(self, face: pb.FaceOptions, prefix: str, rules: v.Rules | None = None) -> FaceOptions:
        own = rules is None
        rules = rules or v.Rules()
        v.face_options(rules, prefix, face.openid, face.screen_index, face.overlay_option, face.face_authtype)
        if own:
            rules.check()
        return FaceOptions(
            openid=face.openid,
            screen_index=face.screen_index,
            overlay_option=face.overlay_option,
            face_authtype=face.face_authtype or "FACEPAY",
            wait_if_busy=face.wait_if_busy,
            ask_unionid=face.ask_unionid,
        )


def _timestamp(unix: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(unix * 1e9))
    return ts


def _event(event: PaymentEvent) -> pb.PaymentEvent:
    message = pb.PaymentEvent(
        out_trade_no=event.out_trade_no,
        seq=event.seq,
        time=_timestamp(event.time),
        state=_PAYMENT_STATE[event.state],
    )
    kind = getattr(message, event.kind)
    for field in kind.DESCRIPTOR.fields:
        if field.name in event.data and field.name != "face_code":
            value = event.data[field.name]
            setattr(kind, field.name, int(value) if field.type in (field.TYPE_INT32, field.TYPE_INT64) else str(value))
    kind.SetInParent()
    return message


def _payment(payment: Payment) -> pb.Payment:
    return pb.Payment(
        out_trade_no=payment.out_trade_no,
        state=_PAYMENT_STATE[payment.state],
        total_fee=payment.total_fee,
        body=payment.body,
        attach=payment.attach,
        transaction_id=payment.transaction_id,
        openid=payment.openid,
        bank_type=payment.bank_type,
        cash_fee=payment.cash_fee,
        fee_type=payment.fee_type,
        time_end=payment.time_end,
        err_code=payment.err_code,
        err_code_des=payment.err_code_des,
        created_at=_timestamp(payment.created_at),
        updated_at=_timestamp(payment.updated_at),
        last_seq=payment.last_seq,
        final=payment.final,
    )
