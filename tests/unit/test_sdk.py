"""The typed SDK layer over a fake raw call: params sent, version gates, errors, face-UI ends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest

from facepayd.device.sdk import (
    CAMERA_ERROR,
    FACE_TIMEOUT,
    SCAN_PAYMENT,
    USER_CANCEL,
    FaceCode,
    FaceCodeRequest,
    FaceMerchant,
    FaceUi,
    InitOptions,
    PayScoreStatusRequest,
    ProxyType,
    Sdk,
    SdkVersion,
    UiResult,
    UserInfoRequest,
    parse_version,
    sdk_error,
)
from facepayd.errors import (
    AuthinfoRejected,
    FaceSessionEnded,
    NotSupported,
    SdkError,
    SdkInitializing,
    SdkNotInitialized,
)

CALL_TIMEOUT = 7.0
FACE_TIMEOUT_S = 42.0
MERCHANT = FaceMerchant(appid="wxA", mch_id="M1", store_id="S1", sub_appid="wxB", sub_mch_id="M2")
OK = {"return_code": "SUCCESS", "return_msg": "ok"}
NOT_INITIALIZED = {"return_code": "ERROR", "return_msg": "not init", "err_code": "271378620"}
INITIALIZING = {"return_code": "ERROR", "return_msg": "initializing", "err_code": "271378621"}
AUTHINFO_BAD = {"return_code": "ERROR", "return_msg": "authinfo invalid or expired"}


@dataclass
class Sent:
    method: str
    params: dict[str, str]
    timeout: float
    on_update_result: Callable[[dict[str, str]], None] | None


class FakeRaw:
    """A RawCall that records what is sent and answers from a list (default SUCCESS)."""

    def __init__(self, *answers: Mapping[str, str]) -> None:
        self.answers = [dict(a) for a in answers]
        self.sent: list[Sent] = []

    async def __call__(
        self,
        method: str,
        params: Mapping[str, str],
        *,
        timeout: float,
        on_update_result: Callable[[dict[str, str]], None] | None = None,
        on_sent: Callable[[int], None] | None = None,
    ) -> dict[str, str]:
        self.sent.append(Sent(method, dict(params), timeout, on_update_result))
        if on_sent is not None:
            on_sent(len(self.sent))  # the call id, as the bridge reports it once written
        return self.answers.pop(0) if self.answers else dict(OK)

    @property
    def last(self) -> Sent:
        return self.sent[-1]


def make(version: str = "2.22.0", *answers: Mapping[str, str]) -> tuple[Sdk, FakeRaw]:
    raw = FakeRaw(*answers)
    sdk = Sdk(
        raw, SdkVersion.parse(version), call_timeout=CALL_TIMEOUT, face_timeout=FACE_TIMEOUT_S
    )
    return sdk, raw


def face_request(**kw: object) -> FaceCodeRequest:
    return FaceCodeRequest(merchant=MERCHANT, authinfo="AUTH-SECRET", **kw)  # type: ignore[arg-type]


FACE_OK = {**OK, "face_code": "134567890123456789", "openid": "o1", "underage_state": "1"}


# ------------------------------------------------------------------ versions and gates


@pytest.mark.parametrize(
    ("text", "parts"),
    [("2.22.1", (2, 22, 1)), ("2.13", (2, 13)), (" v2.x.3 ", (2, 0, 3)), ("", (0,))],
)
def test_versions_parse_with_unparseable_parts_as_zero(text: str, parts: tuple[int, ...]) -> None:
    assert parse_version(text) == parts
    assert SdkVersion.parse(text).parts == parts


@pytest.mark.parametrize(
    ("version", "update_pay_result", "quit_", "firewall", "tcp_proxy", "perform_mode"),
    [
        ("2.11.9", True, False, False, False, False),
        ("2.12", True, False, False, True, False),
        ("2.12.9", True, False, False, True, False),
        ("2.13", False, False, False, True, True),
        ("2.20.9", False, False, False, True, True),
        ("2.21", False, False, True, True, True),
        ("2.21.9", False, False, True, True, True),
        ("2.22", False, True, True, True, True),
        ("3.0", False, True, True, True, True),
    ],
)
def test_version_gates(
    version: str,
    update_pay_result: bool,
    quit_: bool,
    firewall: bool,
    tcp_proxy: bool,
    perform_mode: bool,
) -> None:
    v = SdkVersion.parse(version)
    assert v.has_update_pay_result is update_pay_result
    assert v.has_quit is quit_
    assert v.has_firewall is firewall
    assert v.has_tcp_proxy is tcp_proxy
    assert v.has_perform_mode is perform_mode


async def test_update_pay_result_is_refused_from_2_13_without_a_call() -> None:
    sdk, raw = make("2.13.0")
    with pytest.raises(NotSupported, match=r"below SDK 2\.13"):
        await sdk.update_pay_result(MERCHANT, "AUTH", success=True)
    assert raw.sent == []


async def test_quit_is_refused_below_2_22_without_a_call() -> None:
    sdk, raw = make("2.21.9")
    with pytest.raises(NotSupported, match=r"2\.22"):
        await sdk.quit()
    assert raw.sent == []


@pytest.mark.parametrize("enable", [True, False])
async def test_firewall_is_refused_below_2_21_without_a_call(enable: bool) -> None:
    sdk, raw = make("2.20.9")
    call = sdk.enable_firewall if enable else sdk.disable_firewall
    with pytest.raises(NotSupported, match=r"2\.21"):
        await call("M1", "M2")
    assert raw.sent == []


async def test_init_proxy_type_http_is_refused_below_2_12_without_a_call() -> None:
    sdk, raw = make("2.11.0")
    with pytest.raises(NotSupported, match="proxy_type 3"):
        await sdk.init(InitOptions(ip="10.0.0.1", port="8080", proxy_type=ProxyType.HTTP))
    assert raw.sent == []


async def test_init_leaves_out_options_the_sdk_lacks() -> None:
    options = InitOptions(
        ip="10.0.0.1", port="8080", proxy_type=2, tcp_port="9090", perform_mode="LOW_PERFORM"
    )
    old, old_raw = make("2.11.0")
    await old.init(options)
    assert old_raw.last.params == {"ip": "10.0.0.1", "port": "8080", "proxy_type": "2"}
    mid, mid_raw = make("2.12.0")
    await mid.init(options)
    assert mid_raw.last.params == {
        "ip": "10.0.0.1",
        "port": "8080",
        "proxy_type": "2",
        "tcp_port": "9090",
    }
    new, new_raw = make("2.13.0")
    await new.init(options)
    assert new_raw.last.params["perform_mode"] == "LOW_PERFORM"


async def test_get_face_code_asks_for_update_pay_result_only_below_2_13() -> None:
    old, old_raw = make("2.12.0", FACE_OK)
    await old.get_face_code(face_request())
    assert old_raw.last.params["ignore_update_pay_result"] == "0"
    new, new_raw = make("2.13.0", FACE_OK)
    await new.get_face_code(face_request())
    assert "ignore_update_pay_result" not in new_raw.last.params


# ------------------------------------------------------------------ params of each call


async def test_init_without_options_sends_no_params_and_the_call_timeout() -> None:
    sdk, raw = make()
    await sdk.init(InitOptions())
    assert (raw.last.method, raw.last.params, raw.last.timeout) == (
        "initWxpayface",
        {},
        CALL_TIMEOUT,
    )


async def test_init_proxy_params() -> None:
    sdk, raw = make()
    await sdk.init(
        InitOptions(ip="p.example", port="3128", user="u", passwd="pw", proxy_type=ProxyType.HTTP)
    )
    assert raw.last.params == {
        "ip": "p.example",
        "port": "3128",
        "user": "u",
        "passwd": "pw",
        "proxy_type": "3",
    }


async def test_rawdata() -> None:
    sdk, raw = make("2.22.0", {**OK, "rawdata": "RAW"})
    assert await sdk.rawdata() == "RAW"
    assert (raw.last.method, raw.last.params, raw.last.timeout) == (
        "getWxpayfaceRawdata",
        {},
        CALL_TIMEOUT,
    )


async def test_rawdata_missing_is_an_error() -> None:
    sdk, _ = make("2.22.0", OK)
    with pytest.raises(SdkError, match="no rawdata"):
        await sdk.rawdata()


async def test_get_face_code_params_result_and_face_timeout() -> None:
    sdk, raw = make("2.22.0", {**FACE_OK, "sub_openid": "so1"})
    code = await sdk.get_face_code(
        face_request(
            ui=FaceUi(screen_index="1", overlay_option="1"),
            out_trade_no="T1",
            total_fee=100,
            openid="o-fast",
        )
    )
    assert raw.last.method == "getWxpayfaceCode"
    assert raw.last.timeout == FACE_TIMEOUT_S
    assert raw.last.params == {
        "appid": "wxA",
        "mch_id": "M1",
        "sub_appid": "wxB",
        "sub_mch_id": "M2",
        "store_id": "S1",
        "authinfo": "AUTH-SECRET",
        "face_authtype": "FACEPAY",
        "screen_index": "1",
        "overlay_option": "1",
        "openid": "o-fast",
        "out_trade_no": "T1",
        "total_fee": "100",
        "face_code_type": "1",
    }
    assert code == FaceCode("134567890123456789", "o1", "so1", 1)


async def test_get_face_code_leaves_out_empty_params() -> None:
    sdk, raw = make("2.22.0", FACE_OK)
    await sdk.get_face_code(FaceCodeRequest(merchant=FaceMerchant("wxA", "M1", "S1"), authinfo="A"))
    assert set(raw.last.params) == {
        "appid",
        "mch_id",
        "store_id",
        "authinfo",
        "face_authtype",
        "face_code_type",
    }


async def test_get_face_code_success_without_a_code_is_an_error() -> None:
    sdk, _ = make("2.22.0", {**OK, "openid": "o1"})
    with pytest.raises(SdkError, match="no face_code"):
        await sdk.get_face_code(face_request())


async def test_ui_result_callback_is_typed() -> None:
    sdk, raw = make("2.22.0", FACE_OK)
    heard: list[UiResult] = []
    await sdk.get_face_code(face_request(), on_ui_result=heard.append)
    listener = raw.last.on_update_result
    assert listener is not None
    listener({"return_code": "USER_QUERY_CANCEL", "return_msg": "left"})
    listener({"return_code": "SUCCESS", "return_msg": "done"})
    assert heard == [UiResult("USER_QUERY_CANCEL", "left"), UiResult("SUCCESS", "done")]
    assert [r.user_query_cancel for r in heard] == [True, False]


async def test_without_a_ui_listener_none_is_passed() -> None:
    sdk, raw = make("2.22.0", FACE_OK)
    await sdk.get_face_code(face_request())
    assert raw.last.on_update_result is None


async def test_below_2_13_no_ui_listener_is_registered_the_sdk_never_sends_one() -> None:
    sdk, raw = make("2.12.0", FACE_OK)
    await sdk.get_face_code(face_request(), on_ui_result=lambda _: None)
    assert raw.last.on_update_result is None


async def test_the_ui_listener_can_be_stopped_once_the_call_is_sent() -> None:
    raw = FakeRaw(FACE_OK)
    forgotten: list[int] = []
    sdk = Sdk(
        raw,
        SdkVersion.parse("2.22.0"),
        call_timeout=CALL_TIMEOUT,
        face_timeout=FACE_TIMEOUT_S,
        forget_update=forgotten.append,
    )
    stops: list[Callable[[], None]] = []
    await sdk.get_face_code(face_request(), on_ui_result=lambda _: None, on_listening=stops.append)
    assert forgotten == []
    [stop] = stops
    stop()
    assert forgotten == [1]  # the call id the bridge reported


async def test_get_user_info_params_and_result() -> None:
    answer = {
        **OK,
        "openid": "o1",
        "sub_openid": "so1",
        "nickname": "N",
        "token": "tok",
        "unionid_code": "SUCCESS",
        "unionid_msg": "SUCCESS",
    }
    sdk, raw = make("2.22.0", answer)
    info = await sdk.get_user_info(
        UserInfoRequest(
            merchant=MERCHANT, authinfo="A", ui=FaceUi(face_authtype="FACE_AUTH"), ask_unionid=True
        )
    )
    assert (raw.last.method, raw.last.timeout) == ("getWxpayfaceUserInfo", FACE_TIMEOUT_S)
    assert raw.last.params == {
        "appid": "wxA",
        "mch_id": "M1",
        "sub_appid": "wxB",
        "sub_mch_id": "M2",
        "store_id": "S1",
        "authinfo": "A",
        "face_authtype": "FACE_AUTH",
        "ask_unionid": "1",
    }
    assert (info.openid, info.sub_openid, info.nickname, info.token) == ("o1", "so1", "N", "tok")
    assert (info.unionid_code, info.unionid_msg) == ("SUCCESS", "SUCCESS")


def payscore_request(ask_unionid: bool = False) -> PayScoreStatusRequest:
    return PayScoreStatusRequest(
        merchant=MERCHANT,
        authinfo="A",
        out_trade_no="T1",
        out_request_no="R1",
        service_id="SVC",
        ask_unionid=ask_unionid,
    )


async def test_get_payscore_status_params_and_success() -> None:
    sdk, raw = make("2.22.0", {**OK, "openid": "o1", "face_sid": "sid"})
    status = await sdk.get_payscore_status(payscore_request(ask_unionid=True))
    assert (raw.last.method, raw.last.timeout) == ("getUserPayScoreStatus", FACE_TIMEOUT_S)
    assert raw.last.params == {
        "appid": "wxA",
        "mch_id": "M1",
        "authinfo": "A",
        "out_trade_no": "T1",
        "payscore_out_request_no": "R1",
        "payscore_service_id": "SVC",
        "ask_unionid": "1",
    }
    assert (status.return_code, status.openid, status.face_sid) == ("SUCCESS", "o1", "sid")


async def test_payscore_error_is_the_answer_payscore_off_or_not_authorized() -> None:
    sdk, raw = make("2.22.0", {"return_code": "ERROR", "return_msg": "user did not enable it"})
    status = await sdk.get_payscore_status(payscore_request())
    assert raw.last.params["ask_unionid"] == "0"
    assert (status.return_code, status.return_msg) == ("ERROR", "user did not enable it")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (NOT_INITIALIZED, SdkNotInitialized),
        (INITIALIZING, SdkInitializing),
        (AUTHINFO_BAD, AuthinfoRejected),
        ({"return_code": "ERROR", "return_msg": "face recognition timed out"}, FaceSessionEnded),
        ({"return_code": "USER_CANCEL", "return_msg": "cancelled"}, FaceSessionEnded),
        ({"return_code": "PARAM_ERROR", "return_msg": "missing payscore_service_id"}, SdkError),
    ],
)
async def test_payscore_errors_that_are_not_an_answer_are_raised(
    answer: dict[str, str], error: type[SdkError]
) -> None:
    sdk, _ = make("2.22.0", answer)
    with pytest.raises(error) as raised:
        await sdk.get_payscore_status(payscore_request())
    assert type(raised.value) is error


async def test_update_pay_result_params_and_its_answers_end_the_ui() -> None:
    sdk, raw = make(
        "2.12.0",
        OK,
        {"return_code": "USER_QUERY_CANCEL", "return_msg": "ask the merchant"},
        {"return_code": "ERROR", "return_msg": "no face payment waiting"},
    )
    assert await sdk.update_pay_result(MERCHANT, "A", success=True) == UiResult("SUCCESS", "ok")
    assert (raw.last.method, raw.last.timeout) == ("updateWxpayfacePayResult", CALL_TIMEOUT)
    assert raw.last.params == {
        "appid": "wxA",
        "mch_id": "M1",
        "store_id": "S1",
        "authinfo": "A",
        "payresult": "SUCCESS",
    }
    cancelled = await sdk.update_pay_result(MERCHANT, "A", success=False)
    assert raw.last.params["payresult"] == "ERROR"
    assert cancelled.user_query_cancel
    with pytest.raises(SdkError, match="no face payment waiting"):
        await sdk.update_pay_result(MERCHANT, "A", success=False)


async def test_quit_params() -> None:
    sdk, raw = make()
    await sdk.quit()
    assert (raw.last.method, raw.last.params, raw.last.timeout) == (
        "quitWxpayface",
        {},
        CALL_TIMEOUT,
    )
    await sdk.quit("Merchant stopped")
    assert raw.last.params == {"toast_text": "Merchant stopped"}


async def test_firewall_and_release_params() -> None:
    sdk, raw = make()
    await sdk.enable_firewall("M1", "M2")
    assert (raw.last.method, raw.last.params) == (
        "enableFirewall",
        {"mchId": "M1", "subMchId": "M2"},
    )
    await sdk.disable_firewall("M1", "")
    assert (raw.last.method, raw.last.params) == (
        "disableFirewall",
        {"mchId": "M1", "subMchId": ""},
    )
    await sdk.release()
    assert (raw.last.method, raw.last.params, raw.last.timeout) == (
        "releaseWxpayface",
        {},
        CALL_TIMEOUT,
    )


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("info", "error"),
    [
        (NOT_INITIALIZED, SdkNotInitialized),
        (INITIALIZING, SdkInitializing),
        (AUTHINFO_BAD, AuthinfoRejected),
        ({"return_code": "ERROR", "return_msg": "AuthInfo expired"}, AuthinfoRejected),
        # Our own missing param is a bug, not a rejection: a new authinfo would not help.
        ({"return_code": "PARAM_ERROR", "return_msg": "missing param authinfo"}, SdkError),
        ({"return_code": "SYSTEMERROR", "return_msg": "boom", "err_code": "5"}, SdkError),
        ({}, SdkError),
    ],
)
def test_sdk_error_builds_the_subclass_and_keeps_the_codes(
    info: dict[str, str], error: type[SdkError]
) -> None:
    built = sdk_error("someCall", info)
    assert type(built) is error
    assert built.method == "someCall"
    assert built.return_code == info.get("return_code", "")
    assert built.return_msg == info.get("return_msg", "")
    assert built.err_code == info.get("err_code", "")


@pytest.mark.parametrize(
    "call",
    ["init", "rawdata", "quit", "enable_firewall", "disable_firewall", "release"],
)
async def test_every_checked_call_raises_the_typed_error(call: str) -> None:
    sdk, _ = make("2.22.0", NOT_INITIALIZED)
    args: dict[str, tuple[object, ...]] = {
        "init": (InitOptions(),),
        "enable_firewall": ("M1", ""),
        "disable_firewall": ("M1", ""),
    }
    with pytest.raises(SdkNotInitialized) as raised:
        await getattr(sdk, call)(*args.get(call, ()))
    assert raised.value.err_code == "271378620"


async def test_init_initializing_is_its_own_error() -> None:
    sdk, _ = make("2.22.0", INITIALIZING)
    with pytest.raises(SdkInitializing):
        await sdk.init(InitOptions())


async def test_rejected_authinfo_on_a_face_call() -> None:
    sdk, _ = make("2.22.0", AUTHINFO_BAD)
    with pytest.raises(AuthinfoRejected) as raised:
        await sdk.get_face_code(face_request())
    assert raised.value.method == "getWxpayfaceCode"
    user, _ = make("2.22.0", AUTHINFO_BAD)
    with pytest.raises(AuthinfoRejected):
        await user.get_user_info(UserInfoRequest(merchant=MERCHANT, authinfo="A"))


async def test_not_initialized_on_a_face_call_is_not_a_face_end() -> None:
    sdk, _ = make("2.22.0", {**NOT_INITIALIZED, "return_msg": "camera service not initialized"})
    with pytest.raises(SdkNotInitialized):
        await sdk.get_face_code(face_request())


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"return_code": "USER_CANCEL", "return_msg": "user cancelled"}, USER_CANCEL),
        ({"return_code": "SCAN_PAYMENT", "return_msg": "scan instead"}, SCAN_PAYMENT),
        ({"return_code": "ERROR", "return_msg": "face recognition timed out"}, FACE_TIMEOUT),
        ({"return_code": "ERROR", "return_msg": "Timeout waiting for a face"}, FACE_TIMEOUT),
        ({"return_code": "ERROR", "return_msg": "camera error: cannot open"}, CAMERA_ERROR),
        # A cancel whose message names the authinfo is still the user's cancel.
        ({"return_code": "USER_CANCEL", "return_msg": "authinfo page closed"}, USER_CANCEL),
    ],
)
@pytest.mark.parametrize("method", ["getWxpayfaceCode", "getWxpayfaceUserInfo"])
async def test_face_ui_end_reasons(answer: dict[str, str], reason: str, method: str) -> None:
    sdk, _ = make("2.22.0", answer)
    call = (
        sdk.get_face_code(face_request())
        if method == "getWxpayfaceCode"
        else sdk.get_user_info(UserInfoRequest(merchant=MERCHANT, authinfo="A"))
    )
    with pytest.raises(FaceSessionEnded) as raised:
        await call
    assert (raised.value.method, raised.value.return_code) == (method, reason)
    assert raised.value.return_msg == answer["return_msg"]


async def test_other_face_errors_stay_plain_sdk_errors() -> None:
    sdk, _ = make("2.22.0", {"return_code": "PARAM_ERROR", "return_msg": "screen_index 0 to 4"})
    with pytest.raises(SdkError) as raised:
        await sdk.get_face_code(face_request())
    assert type(raised.value) is SdkError
    assert raised.value.return_code == "PARAM_ERROR"


def test_secrets_stay_out_of_reprs() -> None:
    assert "AUTH-SECRET" not in repr(face_request())
    assert "1345678" not in repr(FaceCode("134567890123456789", "o1"))
    assert "pw" not in repr(InitOptions(passwd="pw"))
    assert "authinfo=" not in repr(payscore_request())
