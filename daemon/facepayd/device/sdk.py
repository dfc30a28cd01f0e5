"""The WxPayFace SDK as typed calls: one method per SDK call, typed results, errors built here.

Everything above this module sees dataclasses and exceptions, never an info map. The SDK's
version gates live here too, so a call the peripheral's SDK lacks fails before it is sent.
Face codes and authinfo pass through this module; nothing here logs them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from facepayd.errors import (
    SDK_INITIALIZING,
    SDK_NOT_INITIALIZED,
    AuthinfoRejected,
    FaceSessionEnded,
    NotSupported,
    SdkError,
    SdkInitializing,
    SdkNotInitialized,
)
from facepayd.ops.logs import get_logger

__all__ = [
    "CAMERA_ERROR",
    "FACE_TIMEOUT",
    "SCAN_PAYMENT",
    "USER_CANCEL",
    "USER_QUERY_CANCEL",
    "FaceCode",
    "FaceCodeRequest",
    "FaceMerchant",
    "FaceUi",
    "InitOptions",
    "PayScoreStatus",
    "PayScoreStatusRequest",
    "ProxyType",
    "RawCall",
    "Sdk",
    "SdkVersion",
    "UiResult",
    "UserInfo",
    "UserInfoRequest",
    "parse_version",
    "sdk_error",
]

log = get_logger(__name__)

Info = dict[str, str]

# return_code values with which a face UI ends without a result.
USER_CANCEL = "USER_CANCEL"
SCAN_PAYMENT = "SCAN_PAYMENT"
# FaceSessionEnded reasons the SDK names only in return_msg.
FACE_TIMEOUT = "FACE_TIMEOUT"
CAMERA_ERROR = "CAMERA_ERROR"
# updateResultWxpayfaceCallBack / updateWxpayfacePayResult: the user left before the result.
USER_QUERY_CANCEL = "USER_QUERY_CANCEL"
# The SDK's own result page closed: the two answers that end a face UI after a face code.
_UI_ENDED = frozenset({"SUCCESS", USER_QUERY_CANCEL})


class RawCall(Protocol):
    """One bridge call: method and params out, the RESULT callback's info map back."""

    async def __call__(
        self,
        method: str,
        params: Mapping[str, str],
        *,
        timeout: float,
        on_update_result: Callable[[Info], None] | None = None,
        on_sent: Callable[[int], None] | None = None,
    ) -> Info: ...


def parse_version(text: str) -> tuple[int, ...]:
    """ "2.22.1" -> (2, 22, 1); unparseable parts count as 0."""
    parts: list[int] = []
    for piece in text.strip().split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class SdkVersion:
    """The peripheral's SDK version and the reference's version gates."""

    parts: tuple[int, ...] = (0,)

    @classmethod
    def parse(cls, text: str) -> SdkVersion:
        """From the bridge hello's sdk_version."""
        return cls(parse_version(text))

    def __str__(self) -> str:
        return ".".join(map(str, self.parts))

    @property
    def has_update_pay_result(self) -> bool:
        """updateWxpayfacePayResult exists only below 2.13."""
        return self.parts < (2, 13)

    @property
    def has_quit(self) -> bool:
        """quitWxpayface exists from 2.22."""
        return self.parts >= (2, 22)

    @property
    def has_firewall(self) -> bool:
        """enableFirewall / disableFirewall exist from 2.21."""
        return self.parts >= (2, 21)

    @property
    def has_tcp_proxy(self) -> bool:
        """initWxpayface's tcp_port and proxy_type 3 (Http) exist from 2.12."""
        return self.parts >= (2, 12)

    @property
    def has_perform_mode(self) -> bool:
        """initWxpayface's perform_mode exists from 2.13."""
        return self.parts >= (2, 13)


class ProxyType(enum.IntEnum):
    """initWxpayface proxy_type."""

    NONE = 0
    HTTP_TUNNEL = 1
    SOCKS5 = 2
    HTTP = 3  # 2.12 and later


@dataclass(frozen=True, slots=True)
class InitOptions:
    """initWxpayface's optional proxy and performance settings."""

    ip: str = ""
    port: str = ""
    user: str = ""
    passwd: str = field(default="", repr=False)
    proxy_type: int = ProxyType.NONE
    tcp_port: str = ""
    perform_mode: str = ""


@dataclass(frozen=True, slots=True)
class FaceMerchant:
    """Who the face UI runs for: the merchant identity every face call carries."""

    appid: str
    mch_id: str
    store_id: str
    sub_appid: str = ""
    sub_mch_id: str = ""


@dataclass(frozen=True, slots=True)
class FaceUi:
    """How the face UI is shown."""

    face_authtype: str = "FACEPAY"
    screen_index: str = ""
    overlay_option: str = ""


@dataclass(frozen=True, slots=True)
class FaceCodeRequest:
    """getWxpayfaceCode's parameters; authinfo is a secret."""

    merchant: FaceMerchant
    authinfo: str = field(repr=False)
    ui: FaceUi = FaceUi()
    out_trade_no: str = ""
    total_fee: int = 0
    openid: str = ""
    telephone: str = field(default="", repr=False)  # the customer's number: kept out of logs
    ask_face_permit: str = ""
    ask_ret_page: str = ""  # ignored by SDK 2.13 and later, sent as given
    ignore_update_pay_result: str = "0"  # below 2.13 only
    face_code_type: str = "1"  # "1": an 18-digit payment code for micropay


@dataclass(frozen=True, slots=True)
class FaceCode:
    """A face code and who it belongs to. face_code is a secret: never log it."""

    face_code: str = field(repr=False)
    openid: str
    sub_openid: str = ""
    underage_state: int = 0
    telephone_used: int = 0  # 1 when the SDK used the telephone passed in


@dataclass(frozen=True, slots=True)
class UiResult:
    """updateResultWxpayfaceCallBack: the SDK's own result page has closed."""

    return_code: str  # SUCCESS or USER_QUERY_CANCEL
    return_msg: str = ""

    @property
    def user_query_cancel(self) -> bool:
        """The user left the SDK's result page before it knew the outcome."""
        return self.return_code == USER_QUERY_CANCEL


@dataclass(frozen=True, slots=True)
class UserInfoRequest:
    """getWxpayfaceUserInfo's parameters; authinfo is a secret."""

    merchant: FaceMerchant
    authinfo: str = field(repr=False)
    ui: FaceUi = FaceUi()
    ask_unionid: bool = False


@dataclass(frozen=True, slots=True)
class UserInfo:
    """Who stood in front of the camera."""

    openid: str
    sub_openid: str = ""
    nickname: str = ""
    token: str = field(default="", repr=False)
    unionid_code: str = ""
    unionid_msg: str = ""


@dataclass(frozen=True, slots=True)
class PayScoreStatusRequest:
    """getUserPayScoreStatus's parameters; authinfo is a secret."""

    merchant: FaceMerchant
    authinfo: str = field(repr=False)
    out_trade_no: str
    out_request_no: str
    service_id: str
    ask_unionid: bool = False


@dataclass(frozen=True, slots=True)
class PayScoreStatus:
    """getUserPayScoreStatus's answer: SUCCESS, or ERROR when PayScore is off or not authorized."""

    return_code: str
    return_msg: str = ""
    openid: str = ""
    sub_openid: str = ""
    face_sid: str = ""
    err_code: str = ""  # the secondary code that may come with ERROR


def sdk_error(method: str, info: Mapping[str, str]) -> SdkError:
    """The one place an SDK error answer becomes an exception; err_code is kept."""
    return_code = info.get("return_code", "")
    return_msg = info.get("return_msg", "")
    err_code = info.get("err_code", "")
    if err_code == SDK_NOT_INITIALIZED:
        return SdkNotInitialized(method, return_code, return_msg, err_code)
    if err_code == SDK_INITIALIZING:
        return SdkInitializing(method, return_code, return_msg, err_code)
    # The SDK names a rejected authinfo only in its message; a PARAM_ERROR naming it is ours.
    if return_code != "PARAM_ERROR" and "authinfo" in return_msg.lower():
        return AuthinfoRejected(method, return_code, return_msg, err_code)
    return SdkError(method, return_code, return_msg, err_code)


def _face_ui_ended(method: str, info: Mapping[str, str]) -> SdkError:
    """A face UI that ended without a result (FaceSessionEnded), or an SDK error."""
    return_code = info.get("return_code", "")
    return_msg = info.get("return_msg", "")
    err_code = info.get("err_code", "")
    reason = _end_reason(return_code, return_msg)
    if reason and err_code not in (SDK_NOT_INITIALIZED, SDK_INITIALIZING):
        return FaceSessionEnded(method, reason, return_msg, err_code)
    return sdk_error(method, info)


def _end_reason(return_code: str, return_msg: str) -> str:
    """Why a face UI ended without a result, "" when the answer is an error of another kind."""
    if return_code in (USER_CANCEL, SCAN_PAYMENT):
        return return_code
    if return_code == "PARAM_ERROR":
        return ""
    msg = return_msg.lower()
    if "timeout" in msg or "time out" in msg or "timed out" in msg:
        return FACE_TIMEOUT
    if "camera" in msg:
        return CAMERA_ERROR
    return ""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


class Sdk:
    """WxPayFace over one raw call function (the bridge, or the lifecycle's retrying caller)."""

    def __init__(
        self,
        call: RawCall,
        version: SdkVersion,
        *,
        call_timeout: float,
        face_timeout: float,
        forget_update: Callable[[int], None] | None = None,
    ) -> None:
        self._call = call
        # Drops a call's UPDATE_RESULT listener (the bridge's forget_update, on its connection).
        self._forget_update = forget_update
        self.version = version
        self._call_timeout = call_timeout
        self._face_timeout = face_timeout

    async def init(self, options: InitOptions) -> None:
        """initWxpayface; SdkInitializing asks the caller to wait ~500 ms and init again."""
        v = self.version
        if options.proxy_type == ProxyType.HTTP and not v.has_tcp_proxy:
            raise NotSupported("initWxpayface proxy_type 3 (Http) needs SDK 2.12 or later")
        # Options this SDK lacks are left out (it would refuse the init), and said so.
        if options.tcp_port and not v.has_tcp_proxy:
            log.warning("sdk_option_unsupported", option="tcp_port", sdk_version=str(v))
        if options.perform_mode and not v.has_perform_mode:
            log.warning("sdk_option_unsupported", option="perform_mode", sdk_version=str(v))
        params = {
            "ip": options.ip,
            "port": options.port,
            "user": options.user,
            "passwd": options.passwd,
            "proxy_type": str(int(options.proxy_type)) if options.ip else "",
            "tcp_port": options.tcp_port if v.has_tcp_proxy else "",
            "perform_mode": options.perform_mode if v.has_perform_mode else "",
        }
        await self._checked("initWxpayface", {k: val for k, val in params.items() if val})

    async def rawdata(self) -> str:
        """getWxpayfaceRawdata: the data get_wxpayface_authinfo signs."""
        info = await self._checked("getWxpayfaceRawdata", {})
        rawdata = info.get("rawdata", "")
        if not rawdata:
            raise SdkError("getWxpayfaceRawdata", info.get("return_code", ""), "no rawdata")
        return rawdata

    async def get_face_code(
        self,
        request: FaceCodeRequest,
        *,
        on_ui_result: Callable[[UiResult], None] | None = None,
        on_listening: Callable[[Callable[[], None]], None] | None = None,
    ) -> FaceCode:
        """getWxpayfaceCode; on_ui_result hears updateResultWxpayfaceCallBack (the UI closed).

        on_listening gets, once the call is sent, a function that stops that listening (the
        caller's session may end before the SDK's second callback, or without one).
        """
        m, ui = request.merchant, request.ui
        params = {
            **_merchant_params(m),
            "authinfo": request.authinfo,
            "face_authtype": ui.face_authtype or "FACEPAY",
            "screen_index": ui.screen_index,
            "overlay_option": ui.overlay_option,
            "openid": request.openid,
            "telephone": request.telephone,
            "out_trade_no": request.out_trade_no,
            "total_fee": str(request.total_fee) if request.total_fee else "",
            "face_code_type": request.face_code_type or "1",
            "ask_face_permit": request.ask_face_permit,
            "ask_ret_page": request.ask_ret_page,
        }
        if self.version.has_update_pay_result:
            # Below 2.13 the UI waits for updateWxpayfacePayResult; from 2.13 the key is ignored.
            params["ignore_update_pay_result"] = request.ignore_update_pay_result or "0"
        listener: Callable[[Info], None] | None = None
        on_sent: Callable[[int], None] | None = None
        # Below 2.13 the SDK never sends updateResultWxpayfaceCallBack: nothing to listen for.
        if on_ui_result is not None and not self.version.has_update_pay_result:
            callback = on_ui_result

            def listener(info: Info) -> None:
                callback(UiResult(info.get("return_code", ""), info.get("return_msg", "")))

            forget, listening = self._forget_update, on_listening
            if forget is not None and listening is not None:
                drop = forget

                def on_sent(call_id: int) -> None:
                    listening(lambda: drop(call_id))

        info = await self._call(
            "getWxpayfaceCode",
            {k: val for k, val in params.items() if val},
            timeout=self._face_timeout,
            on_update_result=listener,
            on_sent=on_sent,
        )
        if info.get("return_code") != "SUCCESS":
            raise _face_ui_ended("getWxpayfaceCode", info)
        if not info.get("face_code"):
            raise SdkError("getWxpayfaceCode", "SUCCESS", "no face_code in the answer")
        return FaceCode(
            face_code=info.get("face_code", ""),
            openid=info.get("openid", ""),
            sub_openid=info.get("sub_openid", ""),
            underage_state=_int(info.get("underage_state", "0")),
            telephone_used=_int(info.get("telephone_used", "0")),
        )

    async def get_user_info(self, request: UserInfoRequest) -> UserInfo:
        """getWxpayfaceUserInfo: identify the user by face."""
        ui = request.ui
        params = {
            **_merchant_params(request.merchant),
            "authinfo": request.authinfo,
            "face_authtype": ui.face_authtype or "FACEPAY",
            "screen_index": ui.screen_index,
            "overlay_option": ui.overlay_option,
            "ask_unionid": "1" if request.ask_unionid else "",
        }
        info = await self._call(
            "getWxpayfaceUserInfo",
            {k: val for k, val in params.items() if val},
            timeout=self._face_timeout,
        )
        if info.get("return_code") != "SUCCESS":
            raise _face_ui_ended("getWxpayfaceUserInfo", info)
        return UserInfo(
            openid=info.get("openid", ""),
            sub_openid=info.get("sub_openid", ""),
            nickname=info.get("nickname", ""),
            token=info.get("token", ""),
            unionid_code=info.get("unionid_code", ""),
            unionid_msg=info.get("unionid_msg", ""),
        )

    async def get_payscore_status(self, request: PayScoreStatusRequest) -> PayScoreStatus:
        """getUserPayScoreStatus; ERROR (PayScore off, not authorized) is an answer, not raised."""
        m = request.merchant
        params = {
            "appid": m.appid,
            "mch_id": m.mch_id,
            "authinfo": request.authinfo,
            "out_trade_no": request.out_trade_no,
            "payscore_out_request_no": request.out_request_no,
            "payscore_service_id": request.service_id,
            "ask_unionid": "1" if request.ask_unionid else "0",
        }
        info = await self._call("getUserPayScoreStatus", params, timeout=self._face_timeout)
        code = info.get("return_code", "")
        if code == "ERROR":
            # ERROR is the answer "face recognised, PayScore not enabled or not authorized",
            # unless the SDK says it is not ready, refused the authinfo or the face UI failed.
            error = _face_ui_ended("getUserPayScoreStatus", info)
            if type(error) is not SdkError:
                raise error
        elif code != "SUCCESS":
            raise _face_ui_ended("getUserPayScoreStatus", info)
        return PayScoreStatus(
            return_code=code,
            return_msg=info.get("return_msg", ""),
            openid=info.get("openid", ""),
            sub_openid=info.get("sub_openid", ""),
            face_sid=info.get("face_sid", ""),
            err_code=info.get("err_code", ""),
        )

    async def update_pay_result(
        self, merchant: FaceMerchant, authinfo: str, *, success: bool
    ) -> UiResult:
        """updateWxpayfacePayResult, below SDK 2.13 only: its answer says the face UI closed."""
        if not self.version.has_update_pay_result:
            raise NotSupported("updateWxpayfacePayResult exists only below SDK 2.13")
        params = {
            "appid": merchant.appid,
            "mch_id": merchant.mch_id,
            "store_id": merchant.store_id,
            "authinfo": authinfo,
            "payresult": "SUCCESS" if success else "ERROR",
        }
        info = await self._call("updateWxpayfacePayResult", params, timeout=self._call_timeout)
        code = info.get("return_code", "")
        if code not in _UI_ENDED:
            raise sdk_error("updateWxpayfacePayResult", info)
        return UiResult(code, info.get("return_msg", ""))

    async def quit(self, toast_text: str = "") -> None:
        """quitWxpayface (2.22 and later): close a face UI that has not returned a code yet."""
        if not self.version.has_quit:
            raise NotSupported("quitWxpayface needs SDK 2.22 or later")
        await self._checked("quitWxpayface", {"toast_text": toast_text} if toast_text else {})

    async def enable_firewall(self, mch_id: str, sub_mch_id: str) -> None:
        """enableFirewall (2.21 and later); the SDK keeps it across restarts."""
        self._require_firewall("enableFirewall")
        await self._checked("enableFirewall", {"mchId": mch_id, "subMchId": sub_mch_id})

    async def disable_firewall(self, mch_id: str, sub_mch_id: str) -> None:
        """disableFirewall (2.21 and later)."""
        self._require_firewall("disableFirewall")
        await self._checked("disableFirewall", {"mchId": mch_id, "subMchId": sub_mch_id})

    async def release(self) -> None:
        """releaseWxpayface: free the camera for other payment platforms."""
        await self._checked("releaseWxpayface", {})

    def _require_firewall(self, method: str) -> None:
        if not self.version.has_firewall:
            raise NotSupported(f"{method} needs SDK 2.21 or later")

    async def _checked(self, method: str, params: Mapping[str, str]) -> Info:
        info = await self._call(method, params, timeout=self._call_timeout)
        if info.get("return_code") != "SUCCESS":
            raise sdk_error(method, info)
        return info


def _merchant_params(m: FaceMerchant) -> dict[str, str]:
    return {
        "appid": m.appid,
        "mch_id": m.mch_id,
        "sub_appid": m.sub_appid,
        "sub_mch_id": m.sub_mch_id,
        "store_id": m.store_id,
    }
