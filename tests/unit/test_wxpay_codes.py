"""The err_code table: every documented code classified, unknown codes never taken as failures."""

from __future__ import annotations

import httpx
import pytest

from facepayd.clock import ManualClock
from facepayd.wxpay.codes import ERROR_CODES, Api, Disposition, classify
from facepayd.wxpay.models import Merchant, MicropayOrder, TradeState
from facepayd.wxpay.v2 import WxPayV2Client
from facepayd.wxpay.xml import build_xml

MICROPAY_DOC_CODES = [
    "SYSTEMERROR",
    "PARAM_ERROR",
    "ORDERPAID",
    "NOAUTH",
    "AUTHCODEEXPIRE",
    "NOTENOUGH",
    "NOTSUPORTCARD",
    "ORDERCLOSED",
    "ORDERREVERSED",
    "BANKERROR",
    "USERPAYING",
    "AUTH_CODE_ERROR",
    "AUTH_CODE_INVALID",
    "XML_FORMAT_ERROR",
    "REQUIRE_POST_METHOD",
    "SIGNERROR",
    "LACK_PARAMS",
    "NOT_UTF8",
    "BUYER_MISMATCH",
    "APPID_NOT_EXIST",
    "MCHID_NOT_EXIST",
    "OUT_TRADE_NO_USED",
    "APPID_MCHID_NOT_MATCH",
    "INVALID_REQUEST",
    "TRADE_ERROR",
]
REVERSE_DOC_CODES = [
    "SYSTEMERROR",
    "INVALID_TRANSACTIONID",
    "PARAM_ERROR",
    "REQUIRE_POST_METHOD",
    "SIGNERROR",
    "REVERSE_EXPIRE",
    "INVALID_REQUEST",
    "TRADE_ERROR",
    "USERPAYING",
]


def test_every_documented_code_is_in_the_table() -> None:
    assert set(ERROR_CODES[Api.MICROPAY]) == set(MICROPAY_DOC_CODES)
    assert set(ERROR_CODES[Api.ORDERQUERY]) == {"ORDERNOTEXIST", "SYSTEMERROR"}
    assert set(ERROR_CODES[Api.REVERSE]) == set(REVERSE_DOC_CODES)


@pytest.mark.parametrize(
    ("api", "code", "expected"),
    [
        (Api.MICROPAY, "SYSTEMERROR", Disposition.QUERY),
        (Api.MICROPAY, "BANKERROR", Disposition.QUERY),
        (Api.MICROPAY, "ORDERPAID", Disposition.NUMBER_USED),
        (Api.MICROPAY, "OUT_TRADE_NO_USED", Disposition.NUMBER_USED),
        (Api.MICROPAY, "USERPAYING", Disposition.USERPAYING),
        (Api.MICROPAY, "NOTENOUGH", Disposition.FAILED),
        (Api.MICROPAY, "AUTHCODEEXPIRE", Disposition.FAILED),
        (Api.MICROPAY, "SOMETHING_NEW", Disposition.QUERY),
        (Api.MICROPAY, "", Disposition.QUERY),
        (Api.ORDERQUERY, "ORDERNOTEXIST", Disposition.NOT_EXIST),
        (Api.ORDERQUERY, "SYSTEMERROR", Disposition.QUERY),
        (Api.ORDERQUERY, "SOMETHING_NEW", Disposition.QUERY),
        (Api.REVERSE, "SYSTEMERROR", Disposition.RETRY),
        (Api.REVERSE, "USERPAYING", Disposition.RETRY),
        (Api.REVERSE, "REVERSE_EXPIRE", Disposition.EXPIRED),
        (Api.REVERSE, "TRADE_ERROR", Disposition.FAILED),
        (Api.REVERSE, "SOMETHING_NEW", Disposition.RETRY),
    ],
)
def test_classify(api: Api, code: str, expected: Disposition) -> None:
    assert classify(api, code) is expected


@pytest.mark.parametrize("code", ["SIGNERROR", "XML_FORMAT_ERROR"])
async def test_micropay_return_code_fail_reaches_the_machine_as_rejected(code: str) -> None:
    """return_code=FAIL is a typed outcome (REJECTED, its code), never a generic error."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = build_xml({"return_code": "FAIL", "return_msg": code})
        return httpx.Response(
            200, stream=httpx.ByteStream(body), headers={"Content-Type": "text/xml"}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = WxPayV2Client(
            Merchant("wx0000000000000001", "1900000001"),
            "k" * 32,
            "HMAC-SHA256",
            api_base_url="https://wxpay.test",
            authinfo_url="https://wxpay.test/face/get_wxpayface_authinfo",
            http=http,
            secapi_http=None,
            clock=ManualClock(),
        )
        result = await client.micropay(
            MicropayOrder("T1", 1, "goods", auth_code="134567890123456789")
        )
    # Unsigned, as WeChat's: return_code and return_msg only.
    assert (result.state, result.out_trade_no) == (TradeState.REJECTED, "T1")
    assert (result.err_code, result.err_code_des) == ("FAIL", code)
    assert "134567890123456789" not in repr(result)
