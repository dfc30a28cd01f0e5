"""TerminalService: validates requests, calls the domain, converts results to protobuf."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
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
from facepayd.payscore import (
    NOT_CONFIGURED,
    PayScoreOutcome,
    PayScoreService,
    ServiceOrderView,
)
from facepayd.rpc import validation as v
from facepayd.rpc.status import to_status
from facepayd.sessions import FaceOptions, FaceSessions
from facepayd.wxpay import payscore_models as psm

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
_PAYMENT_STATE: dict[PaymentState, Any] = {
    state: pb.PaymentState.Value(f"PAYMENT_STATE_{state.name}") for state in PaymentState
}
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
    payscore: PayScoreService | None = None


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
    async def wrapper(
        self: TerminalService, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[T]:
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
            mode=pb.SDK_MODE_AGGREGATE
            if d.lifecycle.mode is SdkMode.AGGREGATE
            else pb.SDK_MODE_NON_AGGREGATE,
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
    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
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
    async def Reinitialize(
        self, request: pb.ReinitializeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReinitializeResponse:
        """Release and init the SDK again."""
        self._require_idle()
        await self._d.lifecycle.reinitialize()
        return pb.ReinitializeResponse(status=self.status())

    @_rpc
    async def Release(
        self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseResponse:
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
            if (
                event.kind == "face_captured"
                and face_code is not None
                and face_code.done()
                and not face_code.cancelled()
            ):
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
        async with sessions.open(
            "capture", wait=options.wait_if_busy, out_trade_no=request.out_trade_no
        ) as session:
            yield pb.CaptureFaceCodeResponse(
                event=pb.CaptureEvent(session_started=pb.SessionStarted(session_id=session.id))
            )
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
                info = await asyncio.wait_for(
                    session.update_results.get(), self._d.config.device.face_timeout
                )
                confirmed = pb.PayResultConfirmed(
                    return_code=info.get("return_code", ""), return_msg=info.get("return_msg", "")
                )
                yield pb.CaptureFaceCodeResponse(
                    event=pb.CaptureEvent(pay_result_confirmed=confirmed)
                )

    @_rpc
    async def CancelSession(
        self, request: pb.CancelSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelSessionResponse:
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
    async def GetUserInfo(
        self, request: pb.GetUserInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUserInfoResponse:
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
        v.require_out_trade_no(request.out_trade_no)
        await self._d.payments.get(request.out_trade_no)
        async for event in self._d.payments.watch(request.out_trade_no, request.after_seq):
            yield pb.WatchPaymentResponse(event=_event(event))

    @_rpc
    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPaymentResponse:
        """One payment from the journal."""
        v.require_out_trade_no(request.out_trade_no)
        return pb.GetPaymentResponse(
            payment=_payment(await self._d.payments.get(request.out_trade_no))
        )

    @_rpc
    async def ListPayments(
        self, request: pb.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPaymentsResponse:
        """Payments from the journal, newest first, paged."""
        rules = v.Rules()
        rules.int_range("page_size", request.page_size, 0, 200)
        states = []
        for index, value in enumerate(request.states):
            if value not in _PAYMENT_STATE_BACK:
                rules.fail(
                    f"states[{index}]", "must be a known PaymentState other than UNSPECIFIED"
                )
            else:
                states.append(_PAYMENT_STATE_BACK[value])
        if len(request.page_token) > 512:
            rules.fail("page_token", "must be a token from a previous ListPayments")
        rules.check()
        payments, token = await self._d.payments.list(
            states=states,
            created_after=_unix(request.created_after)
            if request.HasField("created_after")
            else None,
            created_before=_unix(request.created_before)
            if request.HasField("created_before")
            else None,
            page_size=request.page_size or 50,
            page_token=request.page_token,
        )
        return pb.ListPaymentsResponse(
            payments=[_payment(p) for p in payments], next_page_token=token
        )

    @_rpc
    async def ReversePayment(
        self, request: pb.ReversePaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReversePaymentResponse:
        """Reverse a payment."""
        v.require_out_trade_no(request.out_trade_no)
        return pb.ReversePaymentResponse(
            payment=_payment(await self._d.payments.reverse(request.out_trade_no))
        )

    # ------------------------------------------------------------------ PayScore

    @_rpc
    async def CheckPayScoreStatus(
        self, request: pb.CheckPayScoreStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckPayScoreStatusResponse:
        """Recognise the user by face and check PayScore and authorization."""
        rules = v.Rules()
        _out_order_no(rules, "out_trade_no", request.out_trade_no)
        rules.pattern(
            "payscore_out_request_no",
            request.payscore_out_request_no,
            _OUT_REQUEST_NO,
            "must match [0-9A-Za-z_-|*]{1,64}",
            required=False,
        )
        _max_chars(rules, "payscore_service_id", request.payscore_service_id, 32)
        options = self._face(request.face, "face", rules)
        rules.check()
        status = await self._payscore().check_status(
            options,
            out_trade_no=request.out_trade_no,
            out_request_no=request.payscore_out_request_no,
            service_id=request.payscore_service_id,
        )
        return pb.CheckPayScoreStatusResponse(
            outcome=_PAYSCORE_OUTCOME[status.outcome],
            openid=status.openid,
            sub_openid=status.sub_openid,
            face_sid=status.face_sid,
            return_msg=status.return_msg,
        )

    @_rpc
    async def CreateServiceOrder(
        self, request: pb.CreateServiceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateServiceOrderResponse:
        """Create a service order (journaled before it is sent)."""
        rules = v.Rules()
        _out_order_no(rules, "out_order_no", request.out_order_no)
        _max_chars(rules, "service_id", request.service_id, 32)
        _max_chars(
            rules,
            "service_introduction",
            request.service_introduction,
            psm.MAX_SERVICE_INTRODUCTION,
            required=True,
        )
        _items(rules, request.post_payments, request.post_discounts)
        if not request.HasField("risk_fund"):
            rules.fail("risk_fund", "is required")
        else:
            names = tuple(sorted(psm.RISK_FUND_NAMES))
            rules.choice("risk_fund.name", request.risk_fund.name, names)
            if not request.risk_fund.name:
                rules.fail("risk_fund.name", "is required")
            rules.int_range("risk_fund.amount", request.risk_fund.amount, 0, _MAX_FEN)
            _max_chars(rules, "risk_fund.description", request.risk_fund.description, 30)
        _time_range(rules, "time_range", request.time_range, start_required=True)
        _location(rules, "location", request.location)
        _max_chars(rules, "attach", request.attach, psm.MAX_ATTACH)
        _max_chars(rules, "notify_url", request.notify_url, psm.MAX_NOTIFY_URL)
        rules.pattern(
            "openid", request.openid, v.OPENID, "must match [0-9A-Za-z_-]{1,128}", required=False
        )
        rules.check()
        order = psm.NewServiceOrder(
            out_order_no=request.out_order_no,
            service_id=request.service_id,
            service_introduction=request.service_introduction,
            post_payments=_payments_in(request.post_payments),
            post_discounts=_discounts_in(request.post_discounts),
            time_range=_time_range_in(request.time_range),
            location=_location_in(request.location) if request.HasField("location") else None,
            risk_fund=psm.RiskFund(
                name=request.risk_fund.name,
                amount=request.risk_fund.amount,
                description=request.risk_fund.description,
            ),
            attach=request.attach,
            notify_url=request.notify_url,
            openid=request.openid,
            need_user_confirm=request.need_user_confirm,
        )
        view = await self._payscore().create(order)
        return pb.CreateServiceOrderResponse(order=_service_order(view))

    @_rpc
    async def CompleteServiceOrder(
        self, request: pb.CompleteServiceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteServiceOrderResponse:
        """Complete a service order; its amounts are checked before anything is sent."""
        rules = v.Rules()
        _out_order_no(rules, "out_order_no", request.out_order_no)
        if not request.post_payments:
            rules.fail("post_payments", "at least one item is required to complete")
        _items(rules, request.post_payments, request.post_discounts)
        rules.int_range("total_amount", request.total_amount, 0, _MAX_FEN)
        if request.HasField("time_range"):
            _time_range(rules, "time_range", request.time_range, start_required=False)
        _location(rules, "location", request.location)
        _max_chars(rules, "goods_tag", request.goods_tag, 32)
        rules.check()
        completion = psm.ServiceOrderCompletion(
            post_payments=_payments_in(request.post_payments),
            post_discounts=_discounts_in(request.post_discounts),
            total_amount=request.total_amount,
            time_range=_time_range_in(request.time_range)
            if request.HasField("time_range")
            else None,
            location=_location_in(request.location) if request.HasField("location") else None,
            profit_sharing=request.profit_sharing,
            goods_tag=request.goods_tag,
        )
        view = await self._payscore().complete(request.out_order_no, completion)
        return pb.CompleteServiceOrderResponse(order=_service_order(view))

    @_rpc
    async def SyncServiceOrder(
        self, request: pb.SyncServiceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.SyncServiceOrderResponse:
        """Report a service order paid through another channel."""
        rules = v.Rules()
        _out_order_no(rules, "out_order_no", request.out_order_no)
        rules.choice("type", request.type, (psm.SYNC_ORDER_PAID,))
        rules.pattern(
            "paid_time", request.paid_time, v.TIME14, "must be yyyyMMddHHmmss", required=True
        )
        rules.check()
        view = await self._payscore().sync(
            request.out_order_no, request.paid_time, request.type or psm.SYNC_ORDER_PAID
        )
        return pb.SyncServiceOrderResponse(order=_service_order(view))

    @_rpc
    async def GetServiceOrder(
        self, request: pb.GetServiceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServiceOrderResponse:
        """One service order as WeChat Pay answers now, with the journal's state."""
        rules = v.Rules()
        _out_order_no(rules, "out_order_no", request.out_order_no)
        rules.check()
        view = await self._payscore().get(request.out_order_no)
        return pb.GetServiceOrderResponse(order=_service_order(view))

    @_rpc
    async def CancelServiceOrder(
        self, request: pb.CancelServiceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelServiceOrderResponse:
        """Cancel a service order that has not been completed."""
        rules = v.Rules()
        _out_order_no(rules, "out_order_no", request.out_order_no)
        _max_chars(rules, "reason", request.reason, psm.MAX_CANCEL_REASON, required=True)
        rules.check()
        view = await self._payscore().cancel(request.out_order_no, request.reason)
        return pb.CancelServiceOrderResponse(order=_service_order(view))

    @_rpc
    async def GetUnionId(
        self, request: pb.GetUnionIdRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUnionIdResponse:
        """The user's UnionID from a face_sid."""
        rules = v.Rules()
        rules.pattern(
            "face_sid",
            request.face_sid,
            _FACE_SID,
            "must match [A-Za-z0-9_.~-]{1,256} (it is a URL path segment)",
            required=True,
        )
        rules.check()
        return pb.GetUnionIdResponse(unionid=await self._payscore().unionid(request.face_sid))

    # ------------------------------------------------------------------ helpers

    def _payscore(self) -> PayScoreService:
        if self._d.payscore is None:
            raise errors.ConfigError(NOT_CONFIGURED)
        return self._d.payscore

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
        rules.pattern(
            "fee_type",
            request.fee_type,
            v.FEE_TYPE,
            "must be an ISO 4217 code like CNY",
            required=False,
        )
        rules.max_bytes("goods_tag", request.goods_tag, 32)
        rules.choice("limit_pay", request.limit_pay, ("no_credit",))
        rules.pattern(
            "time_expire", request.time_expire, v.TIME14, "must be yyyyMMddHHmmss", required=False
        )
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
        v.face_options(
            rules, prefix, face.openid, face.screen_index, face.overlay_option, face.face_authtype
        )
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


def _unix(ts: timestamp_pb2.Timestamp) -> float:
    # Not ToDatetime().timestamp(): that naive datetime is read as local time (UTC+8 in China).
    return float(ts.ToNanoseconds()) / 1e9


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
            setattr(
                kind,
                field.name,
                int(value) if field.type in (field.TYPE_INT32, field.TYPE_INT64) else str(value),
            )
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


# ---------------------------------------------------------------------- PayScore converters

# out_order_no is a URL path segment: "|" and "*" from the reference would be percent-encoded.
_OUT_ORDER_NO = re.compile(r"[0-9A-Za-z_\-]{1,32}")
_OUT_REQUEST_NO = re.compile(r"[0-9A-Za-z_\-|*]{1,64}")
_FACE_SID = re.compile(r"[A-Za-z0-9_.~\-]{1,256}")
_START_TIME = re.compile(r"\d{14}|OnAccept")
_MAX_FEN = 10**12
_PAYSCORE_OUTCOME: dict[PayScoreOutcome, Any] = {
    outcome: pb.PayScoreOutcome.Value(f"PAY_SCORE_OUTCOME_{outcome.name}")
    for outcome in PayScoreOutcome
}
_SERVICE_ORDER_STATE: dict[psm.ServiceOrderState, Any] = {
    state: pb.ServiceOrderState.Value(f"SERVICE_ORDER_STATE_{state.name}")
    for state in psm.ServiceOrderState
}


def _out_order_no(rules: v.Rules, field: str, value: str) -> None:
    rules.pattern(
        field,
        value,
        _OUT_ORDER_NO,
        "must match [0-9A-Za-z_-]{1,32} (| and * do not survive the URL path)",
        required=True,
    )


def _max_chars(
    rules: v.Rules, field: str, value: str, limit: int, *, required: bool = False
) -> None:
    if not value:
        if required:
            rules.fail(field, "is required")
        return
    if len(value) > limit:
        rules.fail(field, f"must be at most {limit} characters")
    if any(ord(ch) < 0x20 for ch in value):
        rules.fail(field, "must not contain control characters")


def _items(rules: v.Rules, payments: Any, discounts: Any) -> None:
    if len(payments) > psm.MAX_POST_PAYMENTS:
        rules.fail("post_payments", f"at most {psm.MAX_POST_PAYMENTS} items")
    if len(discounts) > psm.MAX_POST_DISCOUNTS:
        rules.fail("post_discounts", f"at most {psm.MAX_POST_DISCOUNTS} items")
    for prefix, items in (("post_payments", payments), ("post_discounts", discounts)):
        for i, item in enumerate(items):
            _max_chars(rules, f"{prefix}[{i}].name", item.name, 20, required=True)
            _max_chars(rules, f"{prefix}[{i}].description", item.description, 30)
            rules.int_range(f"{prefix}[{i}].amount", item.amount, 0, _MAX_FEN)
            rules.int_range(f"{prefix}[{i}].count", item.count, 0, 1_000_000)


def _time_range(rules: v.Rules, prefix: str, t: pb.TimeRange, *, start_required: bool) -> None:
    rules.pattern(
        f"{prefix}.start_time",
        t.start_time,
        _START_TIME,
        "must be yyyyMMddHHmmss or OnAccept",
        required=start_required,
    )
    rules.pattern(
        f"{prefix}.end_time", t.end_time, v.TIME14, "must be yyyyMMddHHmmss", required=False
    )
    _max_chars(rules, f"{prefix}.start_time_remark", t.start_time_remark, 20)
    _max_chars(rules, f"{prefix}.end_time_remark", t.end_time_remark, 20)


def _location(rules: v.Rules, prefix: str, loc: pb.Location) -> None:
    _max_chars(rules, f"{prefix}.start_location", loc.start_location, 50)
    _max_chars(rules, f"{prefix}.end_location", loc.end_location, 50)


def _payments_in(items: Any) -> tuple[psm.PostPayment, ...]:
    # Proto3 has no absent integers: 0 means "not given" (the reference makes both optional).
    return tuple(
        psm.PostPayment(
            name=p.name, amount=p.amount or None, description=p.description, count=p.count or None
        )
        for p in items
    )


def _discounts_in(items: Any) -> tuple[psm.PostDiscount, ...]:
    return tuple(
        psm.PostDiscount(
            name=d.name, description=d.description, amount=d.amount or None, count=d.count or None
        )
        for d in items
    )


def _time_range_in(t: pb.TimeRange) -> psm.TimeRange:
    return psm.TimeRange(
        start_time=t.start_time,
        start_time_remark=t.start_time_remark,
        end_time=t.end_time,
        end_time_remark=t.end_time_remark,
    )


def _location_in(loc: pb.Location) -> psm.Location:
    return psm.Location(start_location=loc.start_location, end_location=loc.end_location)


def _service_order(view: ServiceOrderView) -> pb.ServiceOrder:
    message = pb.ServiceOrder(
        out_order_no=view.out_order_no, journal_state=view.journal_state.value
    )
    order = view.order
    if order is None:
        return message
    message.service_id = order.service_id
    message.order_id = order.order_id
    message.state = _SERVICE_ORDER_STATE[order.state]
    message.state_description = order.state_description
    message.service_introduction = order.service_introduction
    message.post_payments.extend(
        pb.PostPayment(
            name=p.name, amount=p.amount or 0, description=p.description, count=p.count or 0
        )
        for p in order.post_payments
    )
    message.post_discounts.extend(
        pb.PostDiscount(
            name=d.name, description=d.description, amount=d.amount or 0, count=d.count or 0
        )
        for d in order.post_discounts
    )
    if order.risk_fund is not None:
        message.risk_fund.CopyFrom(
            pb.RiskFund(
                name=order.risk_fund.name,
                amount=order.risk_fund.amount,
                description=order.risk_fund.description,
            )
        )
    if order.time_range is not None:
        message.time_range.CopyFrom(
            pb.TimeRange(
                start_time=order.time_range.start_time,
                start_time_remark=order.time_range.start_time_remark,
                end_time=order.time_range.end_time,
                end_time_remark=order.time_range.end_time_remark,
            )
        )
    if order.location is not None:
        message.location.CopyFrom(
            pb.Location(
                start_location=order.location.start_location,
                end_location=order.location.end_location,
            )
        )
    message.total_amount = order.total_amount or 0
    message.attach = order.attach
    message.openid = order.openid
    message.need_collection = order.need_collection
    return message
