"""Face sessions: one camera, one session at a time; the SDK calls that open the face UI."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import structlog

from facepayd.errors import (
    FacepayError,
    FaceSessionEnded,
    NotFound,
    NotSupported,
    SdkError,
    TerminalBusy,
)
from facepayd.face.authinfo import AuthinfoCache
from facepayd.face.lifecycle import Lifecycle
from facepayd.ops.config import DeviceConfig, MerchantConfig

log = structlog.get_logger(__name__)

# return_code values with which the face UI ends without a result.
USER_CANCEL = "USER_CANCEL"
SCAN_PAYMENT = "SCAN_PAYMENT"


@dataclass(frozen=True, slots=True)
class FaceOptions:
    """How the face UI is shown (getWxpayfaceCode / getWxpayfaceUserInfo params)."""

    openid: str = ""
    screen_index: str = ""
    overlay_option: str = ""
    face_authtype: str = "FACEPAY"
    wait_if_busy: bool = False
    ask_unionid: bool = False


@dataclass(frozen=True, slots=True)
class FaceCapture:
    """A face code and who it belongs to. face_code is a secret: never log it."""

    face_code: str
    openid: str
    sub_openid: str
    underage_state: int

    def __repr__(self) -> str:
        return f"FaceCapture(openid={self.openid!r}, face_code=<redacted>)"


@dataclass(slots=True)
class Session:
    """One face session holding the camera."""

    id: str
    kind: str
    out_trade_no: str = ""
    cancel_reason: str = ""
    face_ui_open: bool = False
    update_results: asyncio.Queue[dict[str, str]] = field(default_factory=asyncio.Queue)

    def on_update_result(self, info: dict[str, str]) -> None:
        """The SDK's updateResultWxpayfaceCallBack for this session's capture."""
        self.update_results.put_nowait(dict(info))


def _new_session_id() -> str:
    return "fs_" + secrets.token_hex(8)


class FaceSessions:
    """Grants the camera to one session at a time and runs the face UI calls."""

    def __init__(
        self,
        *,
        lifecycle: Lifecycle,
        authinfo: AuthinfoCache,
        merchant: MerchantConfig,
        device: DeviceConfig,
        new_id: Callable[[], str] = _new_session_id,
    ) -> None:
        self._lifecycle = lifecycle
        self._authinfo = authinfo
        self._merchant = merchant
        self._device = device
        self._new_id = new_id
        self._camera = asyncio.Lock()
        self._active: Session | None = None
        self.captures = 0

    @property
    def active(self) -> Session | None:
        """The session holding the camera, if any."""
        return self._active

    def try_claim(self) -> bool:
        """Whether the camera is free right now (the caller still has to open a session)."""
        return not self._camera.locked()

    @contextlib.asynccontextmanager
    async def open(
        self, kind: str, *, wait: bool, out_trade_no: str = ""
    ) -> AsyncIterator[Session]:
        """Hold the camera for one session; TerminalBusy unless the caller asked to wait."""
        if self._camera.locked() and not wait:
            holder = self._active.id if self._active else "starting"
            raise TerminalBusy(holder)
        async with self._camera:
            session = Session(id=self._new_id(), kind=kind, out_trade_no=out_trade_no)
            self._active = session
            structlog.contextvars.bind_contextvars(session_id=session.id)
            log.info("session_started", kind=kind)
            try:
                async with self._lifecycle.session():
                    yield session
            finally:
                self._active = None
                log.info("session_ended", kind=kind)
                structlog.contextvars.unbind_contextvars("session_id")

    async def capture(
        self, session: Session, options: FaceOptions, *, out_trade_no: str, total_fee: int
    ) -> FaceCapture:
        """Open the face UI and return a face code (getWxpayfaceCode)."""
        params = self._face_params(options)
        params.update(
            {
                "out_trade_no": out_trade_no,
                "total_fee": str(total_fee),
                "face_code_type": "1",
                "ignore_update_pay_result": "0",
            }
        )
        if options.openid:
            params["openid"] = options.openid
        info = await self._face_call(session, "getWxpayfaceCode", params)
        self.captures += 1
        return FaceCapture(
            face_code=info.get("face_code", ""),
            openid=info.get("openid", ""),
            sub_openid=info.get("sub_openid", ""),
            underage_state=_int(info.get("underage_state", "0")),
        )

    async def user_info(self, session: Session, options: FaceOptions) -> dict[str, str]:
        """Identify the user by face (getWxpayfaceUserInfo)."""
        params = self._face_params(options)
        if options.ask_unionid:
            params["ask_unionid"] = "1"
        return await self._face_call(session, "getWxpayfaceUserInfo", params)

    async def payscore_status(
        self,
        session: Session,
        options: FaceOptions,
        *,
        out_trade_no: str,
        out_request_no: str,
        service_id: str,
    ) -> dict[str, str]:
        """getUserPayScoreStatus; every documented outcome is returned, not raised."""
        params = {
            "appid": self._merchant.appid,
            "mch_id": self._merchant.mch_id,
            "out_trade_no": out_trade_no,
            "payscore_out_request_no": out_request_no,
            "payscore_service_id": service_id,
            "ask_unionid": "1" if options.ask_unionid else "0",
        }
        return await self._face_call(
            session,
            "getUserPayScoreStatus",
            params,
            ends_ok=frozenset({"SUCCESS", "ERROR", USER_CANCEL, SCAN_PAYMENT}),
        )

    async def cancel(self, session_id: str, toast_text: str) -> str:
        """Quit the face UI of the named (or current) session before a code is returned."""
        session = self._active
        if session is None or (session_id and session.id != session_id):
            raise NotFound(
                f"no face session {session_id}".rstrip() if session_id else "no face session"
            )
        if not self._lifecycle.supports_quit():
            raise NotSupported("quitWxpayface needs SDK 2.22 or later")
        await self._quit(session, "POS_CANCEL", toast_text)
        return session.id

    async def quit_for_shutdown(self) -> None:
        """Close a face UI still waiting for a face, so that stopping waits on nobody."""
        session = self._active
        if session is None or not session.face_ui_open or not self._lifecycle.supports_quit():
            return
        try:
            await self._quit(session, "SHUTDOWN", "")
        except FacepayError as exc:
            log.warning("quit_on_shutdown_failed", reason=exc.reason)

    async def _quit(self, session: Session, reason: str, toast_text: str) -> None:
        session.cancel_reason = reason
        params = {"toast_text": toast_text} if toast_text else {}
        info = await self._lifecycle.call("quitWxpayface", params)
        if info.get("return_code") != "SUCCESS":
            raise SdkError("quitWxpayface", info.get("return_code", ""), info.get("return_msg", ""))

    async def report_pay_result(self, session: Session, success: bool) -> bool:
        """Tell an SDK below 2.13 the payment result; False when the SDK does not need it."""
        if not self._lifecycle.supports_update_pay_result():
            return False
        params = {
            "appid": self._merchant.appid,
            "mch_id": self._merchant.mch_id,
            "store_id": self._merchant.store_id,
            "authinfo": await self._authinfo.get(),
            "payresult": "SUCCESS" if success else "ERROR",
        }
        info = await self._lifecycle.call("updateWxpayfacePayResult", params)
        if info.get("return_code") != "SUCCESS":
            raise SdkError(
                "updateWxpayfacePayResult", info.get("return_code", ""), info.get("return_msg", "")
            )
        return True

    def _face_params(self, options: FaceOptions) -> dict[str, str]:
        params = {
            "appid": self._merchant.appid,
            "mch_id": self._merchant.mch_id,
            "sub_appid": self._merchant.sub_appid,
            "sub_mch_id": self._merchant.sub_mch_id,
            "store_id": self._merchant.store_id,
            "face_authtype": options.face_authtype or "FACEPAY",
            "screen_index": options.screen_index,
            "overlay_option": options.overlay_option,
        }
        return {k: v for k, v in params.items() if v}

    async def _face_call(
        self,
        session: Session,
        method: str,
        params: dict[str, str],
        *,
        ends_ok: frozenset[str] = frozenset({"SUCCESS"}),
    ) -> dict[str, str]:
        authinfo = await self._authinfo.get()
        for attempt in (1, 2):
            session.face_ui_open = True
            try:
                info = await self._lifecycle.call(
                    method,
                    {**params, "authinfo": authinfo},
                    timeout=self._device.face_timeout,
                    on_update_result=session.on_update_result,
                )
            finally:
                session.face_ui_open = False
            code = info.get("return_code", "")
            if code in ends_ok:
                return info
            # The SDK names a rejected authinfo only in its message: refresh once and retry.
            if attempt == 1 and "authinfo" in info.get("return_msg", "").lower():
                log.info("authinfo_rejected_by_sdk", method=method)
                authinfo = await self._authinfo.replace(authinfo)
                continue
            reason = session.cancel_reason or _end_reason(code, info.get("return_msg", ""))
            raise FaceSessionEnded(
                method, reason, info.get("return_msg", ""), info.get("err_code", "")
            )
        raise AssertionError("unreachable")


def _end_reason(return_code: str, return_msg: str) -> str:
    if return_code in (USER_CANCEL, SCAN_PAYMENT):
        return return_code
    msg = return_msg.lower()
    if "timeout" in msg or "time out" in msg:
        return "FACE_TIMEOUT"
    if "camera" in msg:
        return "CAMERA_ERROR"
    return return_code or "ERROR"


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
