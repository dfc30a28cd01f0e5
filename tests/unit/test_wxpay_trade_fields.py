"""A paid answer's informational amounts inform; only the fields that decide decide trust."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import pytest
import structlog

from facepayd.clock import ManualClock
from facepayd.errors import ResponseNotTrusted
from facepayd.wxpay.models import Merchant, TradeResult, TradeState
from facepayd.wxpay.sign import sign
from facepayd.wxpay.v2 import WxPayV2Client
from facepayd.wxpay.xml import build_xml

KEY = "k" * 32
MERCHANT = Merchant("wx0000000000000001", "1900000001")
PAID = {
    "return_code": "SUCCESS",
    "result_code": "SUCCESS",
    "appid": MERCHANT.appid,
    "mch_id": MERCHANT.mch_id,
    "nonce_str": "n",
    "out_trade_no": "T1",
    "transaction_id": "4200000001",
    "trade_state": "SUCCESS",
    "total_fee": "1000",
    "cash_fee": "900",
    "coupon_fee": "100",
    "coupon_count": "1",
    "coupon_id_0": "C1",
    "coupon_fee_0": "100",
    "settlement_total_fee": "1000",
}


async def _orderquery(fields: Mapping[str, str]) -> TradeResult:
    def answer(request: httpx.Request) -> httpx.Response:
        signed = dict(fields)
        signed["sign"] = sign(signed, KEY, "HMAC-SHA256")
        return httpx.Response(200, stream=httpx.ByteStream(build_xml(signed)))

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = WxPayV2Client(
            MERCHANT,
            KEY,
            "HMAC-SHA256",
            api_base_url="https://wxpay.test",
            authinfo_url="https://wxpay.test/face/get_wxpayface_authinfo",
            http=http,
            secapi_http=None,
            clock=ManualClock(),
        )
        return await client.orderquery(out_trade_no="T1")


@pytest.mark.parametrize(
    "name", ["cash_fee", "coupon_fee", "coupon_count", "coupon_fee_0", "settlement_total_fee"]
)
async def test_a_malformed_informational_amount_is_zero_and_named_but_the_sale_stays_paid(
    name: str,
) -> None:
    with structlog.testing.capture_logs() as logs:
        result = await _orderquery({**PAID, name: "9x9secret"})
    assert result.state is TradeState.SUCCESS
    assert result.total_fee == 1000
    coupons = result.coupons
    value = coupons[0].coupon_fee if name == "coupon_fee_0" else getattr(result, name)
    assert value == 0
    warnings = [e for e in logs if e["event"] == "wxpay_field_not_a_whole_number"]
    assert [(e["log_level"], e["field"], e["api"]) for e in warnings] == [
        ("warning", name, "orderquery")
    ]
    assert "9x9secret" not in repr(logs)


@pytest.mark.parametrize("value", ["10.00", "-1", "1e3", "\uff11\uff10"])
async def test_a_malformed_total_fee_still_makes_the_answer_untrusted(value: str) -> None:
    with pytest.raises(ResponseNotTrusted):
        await _orderquery({**PAID, "total_fee": value})
