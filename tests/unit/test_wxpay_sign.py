"""Known-answer tests for v2 signatures, computed independently of the code under test."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from facepayd.errors import ConfigError
from facepayd.wxpay.sign import HMAC_SHA256, MD5, sign, signing_string, verify

# The example from WeChat Pay's v2 signature documentation.
DOC_KEY = "192006250b4c09247ec02edce69f6a2d"
DOC_PARAMS = {
    "appid": "wxd930ea5d5a258f4f",
    "mch_id": "10000100",
    "device_info": "1000",
    "body": "test",
    "nonce_str": "ibuaiVcKdpRxkhJA",
}

KEY = "k3y-For-Tests-0123456789abcdefXY"
PARAMS: dict[str, str | int | None] = {
    "total_fee": 101,
    "body": "刷脸支付 & <测试>",
    "appid": "wx2421b1c4370ec43b",
    "sign": "SHOULD-BE-IGNORED",
    "attach": "",
    "detail": None,
    "zero": "0",
    "space": " ",
    "Upper": "case sorts first",
}
# Sorted by byte order (upper case first), "sign", "" and None left out, "0" and " " kept.
EXPECTED_TEXT = (
    "Upper=case sorts first&appid=wx2421b1c4370ec43b&body=刷脸支付 & <测试>&space= "
    "&total_fee=101&zero=0&key=" + KEY
)


def test_documented_md5_example() -> None:
    assert sign(DOC_PARAMS, DOC_KEY, MD5) == "9A0A8659F005D6984697E2CA0A9CF3B7"


def test_documented_hmac_sha256_example() -> None:
    assert sign(DOC_PARAMS, DOC_KEY, HMAC_SHA256) == (
        "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    )


def test_signing_string_skip_rules() -> None:
    assert signing_string(PARAMS, KEY) == EXPECTED_TEXT


def test_md5_known_answer() -> None:
    expected = hashlib.md5(EXPECTED_TEXT.encode()).hexdigest().upper()
    assert sign(PARAMS, KEY, MD5) == expected


def test_hmac_sha256_known_answer() -> None:
    expected = hmac.new(KEY.encode(), EXPECTED_TEXT.encode(), hashlib.sha256).hexdigest().upper()
    assert sign(PARAMS, KEY, HMAC_SHA256) == expected


@pytest.mark.parametrize("sign_type", [MD5, HMAC_SHA256])
def test_verify_accepts_own_signature_and_refuses_any_change(sign_type: str) -> None:
    fields = {"return_code": "SUCCESS", "appid": "wx1", "total_fee": "1"}
    fields["sign"] = sign(fields, KEY, sign_type)
    assert verify(fields, KEY, sign_type)
    assert not verify({**fields, "total_fee": "2"}, KEY, sign_type)
    assert not verify({**fields, "extra": "x"}, KEY, sign_type)
    assert not verify(fields, KEY + "x", sign_type)
    other = HMAC_SHA256 if sign_type == MD5 else MD5
    assert not verify(fields, KEY, other)


@pytest.mark.parametrize("bad", ["", "签名", "00"])
def test_verify_refuses_missing_empty_and_garbage_sign(bad: str) -> None:
    fields = {"return_code": "SUCCESS"}
    assert not verify(fields, KEY, MD5)
    assert not verify({**fields, "sign": bad}, KEY, MD5)


def test_empty_values_do_not_change_the_signature() -> None:
    base = {"a": "1", "b": "2"}
    assert sign(base, KEY, MD5) == sign({**base, "c": "", "d": None}, KEY, MD5)
    assert sign(base, KEY, MD5) != sign({**base, "c": "0"}, KEY, MD5)


def test_unknown_sign_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        sign({"a": "1"}, KEY, "SHA1")
    assert KEY not in str(info.value)
