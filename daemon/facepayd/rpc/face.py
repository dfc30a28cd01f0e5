"""Face sessions: StartFacePay, CaptureFaceCode, CancelSession, ReportPayResult, GetUserInfo."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd import errors
from facepayd.face.sessions import FaceOptions
from facepayd.rpc import validation as v
from facepayd.rpc.convert import event_message
from facepayd.rpc.handlers import Area, stream, unary
from facepayd.rpc.payments import payment_order


class FaceArea(Area):
    """Face sessions: the camera, and the payments that start with a face."""

    @stream
    async def StartFacePay(
        self, request: pb.StartFacePayRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StartFacePayResponse]:
        """Capture a face and pay; streams the payment's events to its final state."""
        rules = v.Rules()
        order = payment_order(request, self._d.config.payments.max_amount, rules)
        options = face_options(request.face, "face", rules)
        rules.check()
        handle = await self._d.flows.start(order, options)
        face_code = handle.face_code
        async for event in self._d.payments.watch(order.out_trade_no, 0):
            message = event_message(event)
            if (
                event.kind == "face_captured"
                and face_code is not None
                and face_code.done()
                and not face_code.cancelled()
            ):
                # Only the POS that started this capture ever sees its face code.
                message.face_captured.face_code = face_code.result()
            yield pb.StartFacePayResponse(event=message)

    @stream
    async def CaptureFaceCode(
        self, request: pb.CaptureFaceCodeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CaptureFaceCodeResponse]:
        """Capture-only: face code to the POS, then the SDK's result confirmation."""
        rules = v.Rules()
        v.out_trade_no(rules, "out_trade_no", request.out_trade_no)
        rules.int_range("total_fee", request.total_fee, 1, self._d.config.payments.max_amount)
        options = face_options(request.face, "face", rules)
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

    @unary
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

    @unary
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

    @unary
    async def GetUserInfo(
        self, request: pb.GetUserInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUserInfoResponse:
        """Identify the user by face."""
        options = face_options(request.face, "face")
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


def face_options(face: pb.FaceOptions, prefix: str, rules: v.Rules | None = None) -> FaceOptions:
    """The face UI options, checked into rules (or checked at once when none are given)."""
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
