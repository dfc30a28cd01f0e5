"""The err_code table: every documented code classified, unknown codes never taken as failures."""

from __future__ import annotations

import pytest

from facepayd.wxpay.codes import ERROR_CODES, Api, Disposition, classify

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
        (Api.MICROPAY, "ORDERPAID", Disposition.QUERY),
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
        (Api.REVERSE, "REVERSE_EXPIRE", Disposition.FAILED),
        (Api.REVERSE, "SOMETHING_NEW", Disposition.RETRY),
    ],
)
def test_classify(api: Api, code: str, expected: Disposition) -> None:
    assert classify(api, code) is expected
