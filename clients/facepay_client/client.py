"""Typed async client for facepay.terminal.v1.TerminalService on the daemon's Unix socket."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from facepay.terminal.v1 import terminal_pb2, terminal_pb2_grpc

DEFAULT_SOCKET_PATH = "/run/facepayd/facepayd.sock"
ERROR_DOMAIN = "facepay.terminal.v1"

# Quick calls (status, lifecycle, journal, backend) vs calls that wait for a person at the camera.
DEFAULT_TIMEOUT = 30.0
DEFAULT_FACE_TIMEOUT = 120.0

# A daemon on the same box restarts in seconds; gRPC's default backoff (1 s growing to 120 s)
# would leave a waiting client idle long after the socket is back.
_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

# ---------------------------------------------------------------- errors
#
# FacepayClientError                 any failed call; code, reason, message, violations, metadata
# ├── DaemonUnavailableError         socket unreachable, no answer in time, daemon starting/stopping
# ├── InvalidArgumentError           INVALID_FIELD / INVALID_ARGUMENT; see field_violations
# ├── TerminalBusyError              TERMINAL_BUSY; session_id names the holder
# ├── DeviceError                    SDK_NOT_READY, DEVICE_LOST, DEVICE_TIMEOUT, SDK_ERROR,
# │                                  NOT_SUPPORTED_BY_SDK
# ├── FaceSessionEndedError          FACE_SESSION_ENDED
# ├── BackendError                   BACKEND_UNAVAILABLE, BACKEND_RESPONSE_NOT_TRUSTED,
# │                                  BACKEND_REJECTED
# ├── NotFoundError                  NOT_FOUND
# ├── AlreadyExistsError             ALREADY_EXISTS
# ├── OrderStateError                ORDER_STATE
# └── WrongStateError                WRONG_STATE
#     └── RefundExceedsPaidError     REFUND_EXCEEDS_PAID


class FacepayClientError(Exception):
    """A TerminalService call failed; carries the daemon's google.rpc.Status details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        field_violations: list[tuple[str, str]] | None = None,
        metadata: dict[str, str] | None = None,
        domain: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.field_violations = list(field_violations or [])
        self.metadata = dict(metadata or {})
        self.domain = domain

    def __str__(self) -> str:
        label = self.reason or self.code.name
        return f"{label}: {self.message}" if self.message else label


class DaemonUnavailableError(FacepayClientError):
    """The daemon is unreachable, did not answer in time, or is starting or stopping."""


class InvalidArgumentError(FacepayClientError):
    """A request field breaks a rule; field_violations lists each one."""


class TerminalBusyError(FacepayClientError):
    """Another face session holds the camera."""

    @property
    def session_id(self) -> str:
        """The session holding the camera, when the daemon named it."""
        return self.metadata.get("session_id", "")


class DeviceError(FacepayClientError):
    """The peripheral or its SDK is not ready, gone, frozen, or answered an error."""


class FaceSessionEndedError(FacepayClientError):
    """The face UI ended without a face code."""


class BackendError(FacepayClientError):
    """WeChat Pay was unreachable, untrusted, or rejected the request."""


class NotFoundError(FacepayClientError):
    """No such payment, session or order."""


class AlreadyExistsError(FacepayClientError):
    """The key exists with different parameters."""


class OrderStateError(FacepayClientError):
    """A PayScore order is not in a state that allows this."""


class WrongStateError(FacepayClientError):
    """The payment, session or SDK is not in a state that allows this call."""


class RefundExceedsPaidError(WrongStateError):
    """The refund would take back more than is left of the payment; nothing was sent."""


_ERROR_BY_REASON: dict[str, type[FacepayClientError]] = {
    "INVALID_FIELD": InvalidArgumentError,
    "TERMINAL_BUSY": TerminalBusyError,
    "SDK_NOT_READY": DeviceError,
    "DEVICE_LOST": DeviceError,
    "DEVICE_TIMEOUT": DeviceError,
    "SDK_ERROR": DeviceError,
    "NOT_SUPPORTED_BY_SDK": DeviceError,
    "DEVICE_ERROR": DeviceError,
    "DEVICE_APP_MISSING": DeviceError,
    "FACE_SESSION_ENDED": FaceSessionEndedError,
    "BACKEND_UNAVAILABLE": BackendError,
    "BACKEND_RESPONSE_NOT_TRUSTED": BackendError,
    "BACKEND_REJECTED": BackendError,
    "BACKEND_ERROR": BackendError,
    "NOT_FOUND": NotFoundError,
    "ALREADY_EXISTS": AlreadyExistsError,
    "UNAVAILABLE": DaemonUnavailableError,
    "ORDER_STATE": OrderStateError,
    "WRONG_STATE": WrongStateError,
    "REFUND_EXCEEDS_PAID": RefundExceedsPaidError,
    # Nothing was done; the same request can be sent again once the disk can be written.
    "JOURNAL_UNAVAILABLE": DaemonUnavailableError,
}

# Used when the status carries no ErrorInfo (transport failures, an unexpected daemon error).
_ERROR_BY_CODE: dict[grpc.StatusCode, type[FacepayClientError]] = {
    grpc.StatusCode.UNAVAILABLE: DaemonUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DaemonUnavailableError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
}


def error_from_rpc(exc: grpc.aio.AioRpcError) -> FacepayClientError:
    """Translate a failed call into the most specific FacepayClientError."""
    code: grpc.StatusCode = exc.code()
    message: str = exc.details() or ""
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        # A Status detail that contradicts the call's own code is a daemon bug; keep what is sure.
        status = None
    if status is not None:
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend((v.field, v.description) for v in bad.field_violations)
    cls = _ERROR_BY_REASON.get(reason) or _ERROR_BY_CODE.get(code, FacepayClientError)
    return cls(code, reason, message, violations, metadata, domain)


# ---------------------------------------------------------------- client


class TerminalClient:
    """Async client for one facepayd; open with `async with` or connect()."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str] = DEFAULT_SOCKET_PATH,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        face_timeout: float | None = DEFAULT_FACE_TIMEOUT,
        wait_for_ready: bool = False,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self.face_timeout = face_timeout
        # True: calls wait (within their deadline) for a daemon that is not listening yet.
        self.wait_for_ready = wait_for_ready
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._health: Any = None

    async def open(self) -> None:
        """Create the channel; connecting happens on the first call."""
        if self._channel is not None:
            return
        self._channel = grpc.aio.insecure_channel(
            "unix:" + self.socket_path, options=_CHANNEL_OPTIONS
        )
        self._stub = terminal_pb2_grpc.TerminalServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        """Close the channel, cancelling calls still running."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # A gRPC deadline for the health watch, not an asyncio timeout around it.
    async def wait_until_serving(self, timeout: float, service: str = "") -> None:
        """Wait until gRPC health reports SERVING; DaemonUnavailableError after timeout."""
        request = health_pb2.HealthCheckRequest(service=service)
        call = self._stubs()[1].Watch(request, timeout=timeout, wait_for_ready=True)
        try:
            async for response in call:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DaemonUnavailableError(
                    exc.code(), "", f"daemon not serving after {timeout:g} s"
                ) from exc
            raise error_from_rpc(exc) from exc
        finally:
            call.cancel()
        raise DaemonUnavailableError(
            grpc.StatusCode.UNAVAILABLE, "", "health watch ended before SERVING"
        )

    # -------------------------------------------------------------- status and lifecycle

    async def get_status(self) -> terminal_pb2.TerminalStatus:
        """The terminal's lifecycle state, device and counters."""
        response: terminal_pb2.GetStatusResponse = await self._unary(
            "GetStatus", terminal_pb2.GetStatusRequest()
        )
        return response.status

    async def diagnose(self) -> list[terminal_pb2.DiagnosticCheck]:
        """The daemon's own checks (device, SDK, authinfo, clock, certificate, journal, ...)."""
        response: terminal_pb2.DiagnoseResponse = await self._unary(
            "Diagnose", terminal_pb2.DiagnoseRequest()
        )
        return list(response.checks)

    async def watch_status(self) -> AsyncGenerator[terminal_pb2.TerminalStatus, None]:
        """The current status, then every change."""
        async for response in self._stream("WatchStatus", terminal_pb2.WatchStatusRequest()):
            yield response.status

    async def reinitialize(self) -> terminal_pb2.TerminalStatus:
        """Release and init the SDK again."""
        response: terminal_pb2.ReinitializeResponse = await self._unary(
            "Reinitialize", terminal_pb2.ReinitializeRequest()
        )
        return response.status

    async def release(self) -> terminal_pb2.TerminalStatus:
        """Release the SDK (frees the camera)."""
        response: terminal_pb2.ReleaseResponse = await self._unary(
            "Release", terminal_pb2.ReleaseRequest()
        )
        return response.status

    async def enable_firewall(self) -> terminal_pb2.TerminalStatus:
        """Turn the SDK firewall on."""
        response: terminal_pb2.EnableFirewallResponse = await self._unary(
            "EnableFirewall", terminal_pb2.EnableFirewallRequest()
        )
        return response.status

    async def disable_firewall(self) -> terminal_pb2.TerminalStatus:
        """Turn the SDK firewall off."""
        response: terminal_pb2.DisableFirewallResponse = await self._unary(
            "DisableFirewall", terminal_pb2.DisableFirewallRequest()
        )
        return response.status

    # -------------------------------------------------------------- face sessions

    async def start_face_pay(
        self,
        out_trade_no: str,
        total_fee: int,
        body: str,
        *,
        face: terminal_pb2.FaceOptions | None = None,
        **fields: str,
    ) -> AsyncGenerator[terminal_pb2.PaymentEvent, None]:
        """Capture a face and pay; yields each payment event (start_face_pay_stream has all)."""
        stream = self.start_face_pay_stream(out_trade_no, total_fee, body, face=face, **fields)
        async with aclosing(stream):
            async for response in stream:
                if response.HasField("event"):
                    yield response.event

    async def start_face_pay_stream(
        self,
        out_trade_no: str,
        total_fee: int,
        body: str,
        *,
        face: terminal_pb2.FaceOptions | None = None,
        **fields: str,
    ) -> AsyncGenerator[terminal_pb2.StartFacePayResponse, None]:
        """Capture a face and pay; yields payment events, progress and, once, the face UI's end.

        Each response holds `event` (a PaymentEvent), `progress` (a PaymentProgress: what the
        daemon is doing now; not journaled, no seq, never replayed) or `session_ended` (the
        screen is free); the stream ends once the payment is final and the face UI has closed.
        """
        request = terminal_pb2.StartFacePayRequest(
            out_trade_no=out_trade_no, total_fee=total_fee, body=body, face=face, **fields
        )
        async for response in self._stream("StartFacePay", request):
            yield response

    async def start_code_pay(
        self,
        out_trade_no: str,
        total_fee: int,
        body: str,
        auth_code: str,
        **fields: str,
    ) -> AsyncGenerator[terminal_pb2.PaymentEvent, None]:
        """Pay a scanned payment code (or continue a scanned face sale); yields its events."""
        responses = self.start_code_pay_stream(out_trade_no, total_fee, body, auth_code, **fields)
        async with aclosing(responses):
            async for response in responses:
                if response.HasField("event"):
                    yield response.event

    async def start_code_pay_stream(
        self,
        out_trade_no: str,
        total_fee: int,
        body: str,
        auth_code: str,
        **fields: str,
    ) -> AsyncGenerator[terminal_pb2.StartCodePayResponse, None]:
        """start_code_pay with the live progress: each response holds `event` or `progress`."""
        request = terminal_pb2.StartCodePayRequest(
            out_trade_no=out_trade_no,
            total_fee=total_fee,
            body=body,
            auth_code=auth_code,
            **fields,
        )
        async for response in self._stream("StartCodePay", request):
            yield response

    async def capture_face_code(
        self,
        out_trade_no: str = "",
        total_fee: int = 0,
        *,
        face: terminal_pb2.FaceOptions | None = None,
        face_code_type: str = "",
    ) -> AsyncGenerator[terminal_pb2.CaptureEvent, None]:
        """Capture-only: session, face code (or cancelled), confirmation, then session_ended."""
        request = terminal_pb2.CaptureFaceCodeRequest(
            out_trade_no=out_trade_no, total_fee=total_fee, face=face, face_code_type=face_code_type
        )
        async for response in self._stream("CaptureFaceCode", request):
            yield response.event

    async def cancel_session(self, session_id: str = "", toast_text: str = "") -> str:
        """Quit the face UI; returns the cancelled session's id."""
        request = terminal_pb2.CancelSessionRequest(session_id=session_id, toast_text=toast_text)
        response: terminal_pb2.CancelSessionResponse = await self._unary("CancelSession", request)
        return response.session_id

    async def report_pay_result(self, session_id: str, success: bool) -> None:
        """Capture-only flows: tell the terminal whether the POS's payment succeeded."""
        result = terminal_pb2.PAY_RESULT_SUCCESS if success else terminal_pb2.PAY_RESULT_ERROR
        request = terminal_pb2.ReportPayResultRequest(session_id=session_id, result=result)
        await self._unary("ReportPayResult", request)

    async def get_user_info(
        self, face: terminal_pb2.FaceOptions | None = None
    ) -> terminal_pb2.GetUserInfoResponse:
        """Identify the user by face."""
        request = terminal_pb2.GetUserInfoRequest(face=face)
        response: terminal_pb2.GetUserInfoResponse = await self._unary(
            "GetUserInfo", request, waits_for_face=True
        )
        return response

    # -------------------------------------------------------------- payments

    async def watch_payment(
        self, out_trade_no: str, after_seq: int = 0
    ) -> AsyncGenerator[terminal_pb2.PaymentEvent, None]:
        """Replay a payment's events after after_seq, then follow it to its final state."""
        stream = self.watch_payment_stream(out_trade_no, after_seq)
        async with aclosing(stream):
            async for response in stream:
                if response.HasField("event"):
                    yield response.event

    async def watch_payment_stream(
        self, out_trade_no: str, after_seq: int = 0
    ) -> AsyncGenerator[terminal_pb2.WatchPaymentResponse, None]:
        """watch_payment with the live progress: each response holds `event` or `progress`."""
        request = terminal_pb2.WatchPaymentRequest(out_trade_no=out_trade_no, after_seq=after_seq)
        async for response in self._stream("WatchPayment", request):
            yield response

    async def get_payment(self, out_trade_no: str) -> terminal_pb2.Payment:
        """One payment from the journal."""
        request = terminal_pb2.GetPaymentRequest(out_trade_no=out_trade_no)
        response: terminal_pb2.GetPaymentResponse = await self._unary("GetPayment", request)
        return response.payment

    async def list_payments(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        states: Iterable[terminal_pb2.PaymentState] = (),
    ) -> terminal_pb2.ListPaymentsResponse:
        """One page of payments, newest first; next_page_token continues."""
        request = terminal_pb2.ListPaymentsRequest(
            page_size=page_size, page_token=page_token, states=list(states)
        )
        response: terminal_pb2.ListPaymentsResponse = await self._unary("ListPayments", request)
        return response

    async def reverse_payment(self, out_trade_no: str) -> terminal_pb2.Payment:
        """Reverse a payment: refund it if paid, close it if not."""
        request = terminal_pb2.ReversePaymentRequest(out_trade_no=out_trade_no)
        response: terminal_pb2.ReversePaymentResponse = await self._unary("ReversePayment", request)
        return response.payment

    # -------------------------------------------------------------- refunds

    async def refund_payment(
        self,
        out_trade_no: str,
        refund_fee: int,
        out_refund_no: str,
        *,
        refund_desc: str = "",
        refund_account: str = "",
        retry_failed: bool = False,
    ) -> AsyncGenerator[terminal_pb2.RefundEvent, None]:
        """Refund (part of) a paid payment; its events from seq 1 to its end.

        The same out_refund_no with the same parameters re-attaches to the refund.
        """
        request = terminal_pb2.RefundPaymentRequest(
            out_trade_no=out_trade_no,
            out_refund_no=out_refund_no,
            refund_fee=refund_fee,
            refund_desc=refund_desc,
            refund_account=refund_account,
            retry_failed=retry_failed,
        )
        async for response in self._stream("RefundPayment", request):
            yield response.event

    async def watch_refund(
        self, out_refund_no: str, after_seq: int = 0
    ) -> AsyncGenerator[terminal_pb2.RefundEvent, None]:
        """Replay a refund's events after after_seq, then follow it to its end."""
        request = terminal_pb2.WatchRefundRequest(out_refund_no=out_refund_no, after_seq=after_seq)
        async for response in self._stream("WatchRefund", request):
            yield response.event

    async def get_refund(self, out_refund_no: str) -> terminal_pb2.Refund:
        """One refund from the journal."""
        request = terminal_pb2.GetRefundRequest(out_refund_no=out_refund_no)
        response: terminal_pb2.GetRefundResponse = await self._unary("GetRefund", request)
        return response.refund

    async def list_refunds(
        self, out_trade_no: str, *, page_size: int = 0, page_token: str = ""
    ) -> terminal_pb2.ListRefundsResponse:
        """One page of a payment's refunds, oldest first; next_page_token continues."""
        request = terminal_pb2.ListRefundsRequest(
            out_trade_no=out_trade_no, page_size=page_size, page_token=page_token
        )
        response: terminal_pb2.ListRefundsResponse = await self._unary("ListRefunds", request)
        return response

    # -------------------------------------------------------------- PayScore

    async def check_pay_score_status(
        self,
        out_trade_no: str,
        *,
        payscore_out_request_no: str = "",
        payscore_service_id: str = "",
        face: terminal_pb2.FaceOptions | None = None,
    ) -> terminal_pb2.CheckPayScoreStatusResponse:
        """Recognise the user and check PayScore authorization."""
        request = terminal_pb2.CheckPayScoreStatusRequest(
            out_trade_no=out_trade_no,
            payscore_out_request_no=payscore_out_request_no,
            payscore_service_id=payscore_service_id,
            face=face,
        )
        response: terminal_pb2.CheckPayScoreStatusResponse = await self._unary(
            "CheckPayScoreStatus", request, waits_for_face=True
        )
        return response

    async def create_service_order(
        self, request: terminal_pb2.CreateServiceOrderRequest
    ) -> terminal_pb2.ServiceOrder:
        """Create a PayScore service order."""
        response: terminal_pb2.CreateServiceOrderResponse = await self._unary(
            "CreateServiceOrder", request
        )
        return response.order

    async def complete_service_order(
        self, request: terminal_pb2.CompleteServiceOrderRequest
    ) -> terminal_pb2.ServiceOrder:
        """Complete a service order with its final amounts."""
        response: terminal_pb2.CompleteServiceOrderResponse = await self._unary(
            "CompleteServiceOrder", request
        )
        return response.order

    async def sync_service_order(
        self, out_order_no: str, paid_time: str, sync_type: str = "Order_Paid"
    ) -> terminal_pb2.ServiceOrder:
        """Tell WeChat a service order was paid another way."""
        request = terminal_pb2.SyncServiceOrderRequest(
            out_order_no=out_order_no, type=sync_type, paid_time=paid_time
        )
        response: terminal_pb2.SyncServiceOrderResponse = await self._unary(
            "SyncServiceOrder", request
        )
        return response.order

    async def get_service_order(self, out_order_no: str) -> terminal_pb2.ServiceOrder:
        """One service order, as WeChat and the journal see it."""
        request = terminal_pb2.GetServiceOrderRequest(out_order_no=out_order_no)
        response: terminal_pb2.GetServiceOrderResponse = await self._unary(
            "GetServiceOrder", request
        )
        return response.order

    async def cancel_service_order(
        self, out_order_no: str, reason: str
    ) -> terminal_pb2.ServiceOrder:
        """Cancel a service order."""
        request = terminal_pb2.CancelServiceOrderRequest(out_order_no=out_order_no, reason=reason)
        response: terminal_pb2.CancelServiceOrderResponse = await self._unary(
            "CancelServiceOrder", request
        )
        return response.order

    async def get_union_id(self, face_sid: str) -> terminal_pb2.GetUnionIdResponse:
        """The user's UnionID from a face_sid."""
        request = terminal_pb2.GetUnionIdRequest(face_sid=face_sid)
        response: terminal_pb2.GetUnionIdResponse = await self._unary("GetUnionId", request)
        return response

    # -------------------------------------------------------------- private

    def _stubs(self) -> tuple[Any, Any]:
        if self._channel is None:
            raise RuntimeError("TerminalClient is not open; use `async with` or connect()")
        return self._stub, self._health

    async def _unary(self, method: str, request: Any, *, waits_for_face: bool = False) -> Any:
        rpc: Callable[..., Awaitable[Any]] = getattr(self._stubs()[0], method)
        deadline = self.face_timeout if waits_for_face else self.timeout
        try:
            return await rpc(request, timeout=deadline, wait_for_ready=self.wait_for_ready)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc

    async def _stream(self, method: str, request: Any) -> AsyncGenerator[Any, None]:
        # Streams last as long as the payment or watch does, so they carry no deadline.
        call = getattr(self._stubs()[0], method)(request, wait_for_ready=self.wait_for_ready)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        finally:
            # A consumer that stops early hangs up; the daemon keeps the payment going.
            call.cancel()


async def connect(
    socket_path: str | os.PathLike[str] = DEFAULT_SOCKET_PATH,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    face_timeout: float | None = DEFAULT_FACE_TIMEOUT,
    wait_for_ready: bool = False,
) -> TerminalClient:
    """An open TerminalClient; close it with `await client.close()`."""
    client = TerminalClient(
        socket_path, timeout=timeout, face_timeout=face_timeout, wait_for_ready=wait_for_ready
    )
    await client.open()
    return client
