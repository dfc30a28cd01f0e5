"""Face sessions: StartFacePay, CaptureFaceCode, CancelSession, ReportPayResult, GetUserInfo."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd import errors
from facepayd.face.flows import (
    CaptureCancelled,
    CaptureStep,
    FaceCode,
    FacePayHandle,
    FacePayStep,
    SessionStartedStep,
    UiResult,
)
from facepayd.face.sessions import FaceOptions, SessionEnd
from facepayd.payments.progress import Progress, with_progress
from facepayd.rpc import validation as v
from facepayd.rpc.convert import event_message
from facepayd.rpc.handlers import Area, stream, unary
from facepayd.rpc.payments import payment_order, progress_message

_MAX_TOAST_BYTES = 192
# StartFacePay charges the code at once: only FACEPAY means that.
_PAY_AUTHTYPES = ("FACEPAY",)
_PAY_AUTHTYPE_RULE = (
    "must be FACEPAY: StartFacePay charges at once; use CaptureFaceCode for FACEPAY_DELAY"
    " (the POS pays later) or FACE_AUTH (no payment)"
)
# getWxpayfaceCode's own options (the reference lists them for no other face call).
_FACE_CODE_ONLY = ("telephone", "ask_face_permit", "ask_ret_page", "ignore_update_pay_result")


class FaceArea(Area):
    """Face sessions: the camera, and the payments that start with a face."""

    @stream
    async def StartFacePay(
        self, request: pb.StartFacePayRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StartFacePayResponse]:
        """Capture a face and pay; streams the payment's events and the face UI's end."""
        rules = v.Rules()
        order = payment_order(request, self._d.config.payments.max_amount, rules, self._d)
        options = face_options(request.face, "face", rules, authtypes=_PAY_AUTHTYPES)
        rules.check()
        handle = await self._d.flows.start_face_pay(order, options)
        # Progress starts with micropay, after the face code: nothing reaches the POS ahead of
        # the getWxpayfaceCode frame.
        with self._d.payments.progress.follow(handle.out_trade_no) as feed:
            async for step in with_progress(handle.steps(), feed):
                if isinstance(step, Progress):
                    yield pb.StartFacePayResponse(progress=progress_message(step))
                    continue
                yield face_pay_response(handle, step)

    @stream
    async def CaptureFaceCode(
        self, request: pb.CaptureFaceCodeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CaptureFaceCodeResponse]:
        """Capture-only: face code to the POS, then the SDK's confirmation and the UI's end."""
        rules = v.Rules()
        code_type = request.face_code_type or "1"
        rules.choice("face_code_type", request.face_code_type, ("0", "1"))
        # The reference: out_trade_no and total_fee may be left out for face_code_type "1".
        required = code_type == "0"
        v.new_out_trade_no(rules, "out_trade_no", request.out_trade_no, required=required)
        if required or request.total_fee:
            rules.int_range("total_fee", request.total_fee, 1, self._d.config.payments.max_amount)
        options = face_options(request.face, "face", rules, face_code_type=code_type)
        # Checked before the camera is claimed: an invalid request never reaches the SDK.
        rules.check()
        handle = await self._d.flows.start_capture(
            options, out_trade_no=request.out_trade_no, total_fee=request.total_fee
        )
        async for step in handle.steps():
            yield pb.CaptureFaceCodeResponse(event=capture_event(step))

    @unary
    async def CancelSession(
        self, request: pb.CancelSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelSessionResponse:
        """Quit the face UI."""
        rules = v.Rules()
        v.session_id(rules, "session_id", request.session_id, required=False)
        # 64 CJK characters of the face UI's toast, measured in the bytes the bridge carries.
        rules.max_bytes("toast_text", request.toast_text, _MAX_TOAST_BYTES)
        rules.check()
        session_id = await self._d.sessions.cancel(request.session_id, request.toast_text)
        return pb.CancelSessionResponse(session_id=session_id)

    @unary
    async def ReportPayResult(
        self, request: pb.ReportPayResultRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportPayResultResponse:
        """The POS's payment result for a capture-only session."""
        rules = v.Rules()
        v.session_id(rules, "session_id", request.session_id, required=True)
        rules.enum(
            "result",
            request.result,
            (pb.PAY_RESULT_SUCCESS, pb.PAY_RESULT_ERROR),
            "PAY_RESULT_SUCCESS or PAY_RESULT_ERROR",
        )
        rules.check()
        session = self._d.sessions.active
        if session is None or session.id != request.session_id or session.kind != "capture":
            raise errors.NotFound(f"no capture session {request.session_id}")
        await self._d.sessions.report_pay_result(session, request.result == pb.PAY_RESULT_SUCCESS)
        return pb.ReportPayResultResponse()

    @unary
    async def GetUserInfo(
        self, request: pb.GetUserInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUserInfoResponse:
        """Identify the user by face."""
        rules = v.Rules()
        face = request.face
        for name in _FACE_CODE_ONLY:
            if getattr(face, name):
                rules.fail(
                    f"face.{name}", "is a getWxpayfaceCode option; GetUserInfo cannot send it"
                )
        options = face_options(face, "face", rules)
        rules.check()
        info = await self._d.flows.user_info(options)
        return pb.GetUserInfoResponse(
            openid=info.openid,
            sub_openid=info.sub_openid,
            nickname=info.nickname,
            token=info.token,
            unionid_code=info.unionid_code,
            unionid_msg=info.unionid_msg,
        )


def face_pay_response(handle: FacePayHandle, step: FacePayStep) -> pb.StartFacePayResponse:
    """One journaled step of a face payment, or the face UI's end, for the POS."""
    if isinstance(step, SessionEnd):
        return pb.StartFacePayResponse(session_ended=session_ended(step))
    message = event_message(step)
    face_code = handle.face_code
    if step.kind == "face_captured" and face_code is not None:
        # Only the POS that started this capture ever sees its face code.
        message.face_captured.face_code = face_code
    return pb.StartFacePayResponse(event=message)


def session_ended(end: SessionEnd) -> pb.SessionEnded:
    """The end of a face UI, for the POS."""
    return pb.SessionEnded(
        session_id=end.session_id, reason=end.reason.value, return_msg=end.return_msg
    )


def capture_event(step: CaptureStep) -> pb.CaptureEvent:
    """One step of a capture-only session."""
    if isinstance(step, SessionStartedStep):
        return pb.CaptureEvent(session_started=pb.SessionStarted(session_id=step.session_id))
    if isinstance(step, FaceCode):
        captured = pb.FaceCaptured(
            face_code=step.face_code,
            openid=step.openid,
            sub_openid=step.sub_openid,
            underage_state=step.underage_state,
            telephone_used=step.telephone_used,
        )
        return pb.CaptureEvent(face_captured=captured)
    if isinstance(step, CaptureCancelled):
        cancelled = pb.SessionCancelled(reason=step.reason, description=step.description)
        return pb.CaptureEvent(cancelled=cancelled)
    if isinstance(step, UiResult):
        confirmed = pb.PayResultConfirmed(return_code=step.return_code, return_msg=step.return_msg)
        return pb.CaptureEvent(pay_result_confirmed=confirmed)
    return pb.CaptureEvent(session_ended=session_ended(step))


def face_options(
    face: pb.FaceOptions,
    prefix: str,
    rules: v.Rules | None = None,
    *,
    authtypes: tuple[str, ...] = v.FACE_AUTHTYPES,
    face_code_type: str = "1",
) -> FaceOptions:
    """The face UI options, checked into rules (or checked at once when none are given)."""
    own = rules is None
    rules = rules or v.Rules()
    v.face_options(
        rules,
        prefix,
        face.openid,
        face.screen_index,
        face.overlay_option,
        face.face_authtype,
        authtypes=authtypes,
        authtype_rule=_PAY_AUTHTYPE_RULE if authtypes == _PAY_AUTHTYPES else "",
    )
    v.face_code_options(
        rules,
        prefix,
        face.telephone,
        face.ask_face_permit,
        face.ask_ret_page,
        face.ignore_update_pay_result,
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
        telephone=face.telephone,
        ask_face_permit=face.ask_face_permit,
        ask_ret_page=face.ask_ret_page,
        ignore_update_pay_result=face.ignore_update_pay_result,
        face_code_type=face_code_type,
    )
