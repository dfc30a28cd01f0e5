"""refundquery on the wire: the refunded order's numbers come back for the caller to compare."""

from __future__ import annotations

import httpx

from facepayd.clock import ManualClock
from facepayd.wxpay.models import Merchant, RefundStatus
from facepayd.wxpay.sign import sign
from facepayd.wxpay.v2 import WxPayV2Client
from facepayd.wxpay.xml import build_xml

KEY = "k" * 32
MERCHANT = Merchant("wx0000000000000001", "1900000001")


async def test_refundquery_returns_the_order_its_row_belongs_to() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        fields = {
            "return_code": "SUCCESS",
            "result_code": "SUCCESS",
            "appid": MERCHANT.appid,
            "mch_id": MERCHANT.mch_id,
            "nonce_str": "n",
            "out_trade_no": "T-OTHER-TILL",
            "transaction_id": "4200000001",
            "total_fee": "1000",
            "refund_count": "1",
            "out_refund_no_0": "R1",
            "refund_id_0": "50000001",
            "refund_fee_0": "1000",
            "refund_status_0": "SUCCESS",
        }
        fields["sign"] = sign(fields, KEY, "HMAC-SHA256")
        return httpx.Response(200, stream=httpx.ByteStream(build_xml(fields)))

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
        result = await client.refundquery(out_refund_no="R1")
    assert result.status is RefundStatus.SUCCESS
    assert (result.out_trade_no, result.transaction_id) == ("T-OTHER-TILL", "4200000001")
