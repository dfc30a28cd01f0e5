"""The WeChat Pay v2 XML client: authinfo, micropay, orderquery, reverse, refund, refundquery."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable, Mapping

import httpx
import structlog

from facepayd.clock import Clock
from facepayd.errors import (
    BackendRejected,
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    ResponseNotTrusted,
)
from facepayd.wxpay.codes import Api, Disposition, classify
from facepayd.wxpay.http import ClientCert, WxPayHttpClients, build_http_clients
from facepayd.wxpay.models import (
    AuthinfoGrant,
    Merchant,
    MicropayOrder,
    RefundOrder,
    RefundOutcome,
    RefundQueryResult,
    RefundResult,
    RefundStatus,
    ReverseResult,
    TradeCoupon,
    TradeResult,
    TradeState,
)
from facepayd.wxpay.sign import SIGN_TYPES, sign, verify
from facepayd.wxpay.xml import build_xml, parse_xml, read_capped

__all__ = ["ClientCert", "WxPayHttpClients", "WxPayV2Client", "build_http_clients"]

# Used when an authinfo answer omits expires_in (optional in the reference): short, so a
# cache built on it refreshes early rather than trusting a token past its real life.
DEFAULT_AUTHINFO_EXPIRES_IN = 600
_MAX_MESSAGE = 128
# More coupon rows than this in one answer is not an answer WeChat Pay gives.
_MAX_COUPONS = 100
# micropay's String(32).
_MAX_DEVICE_INFO = 32
_REDACTED = "[redacted]"

_QUERY_TRADE_STATES: Mapping[str, TradeState] = {
    "SUCCESS": TradeState.SUCCESS,
    "REFUND": TradeState.REFUND,
    "NOTPAY": TradeState.NOTPAY,
    "CLOSED": TradeState.CLOSED,
    "REVOKED": TradeState.REVOKED,
    "USERPAYING": TradeState.USERPAYING,
    "PAYERROR": TradeState.PAYERROR,
}
_REFUND_OUTCOMES: Mapping[Disposition, RefundOutcome] = {
    Disposition.FAILED: RefundOutcome.FAILED,
    Disposition.RETRY: RefundOutcome.RETRY,
    Disposition.THROTTLED: RefundOutcome.RETRY,
}
_REFUND_STATUSES: Mapping[str, RefundStatus] = {
    "SUCCESS": RefundStatus.SUCCESS,
    "REFUNDCLOSE": RefundStatus.REFUNDCLOSE,
    "PROCESSING": RefundStatus.PROCESSING,
    "CHANGE": RefundStatus.CHANGE,
}
# refundquery lists at most this many refunds per answer (WeChat Pay pages past 10 with offset).
_MAX_REFUND_ROWS = 50
_MICROPAY_STATES: Mapping[Disposition, TradeState] = {
    Disposition.FAILED: TradeState.FAILED,
    Disposition.USERPAYING: TradeState.USERPAYING,
}


def _default_nonce() -> str:
    return secrets.token_hex(16)


log = structlog.get_logger(__name__)


class WxPayV2Client:
    """Signed v2 XML calls; every answer is size-capped, safely parsed and verified."""

    def __init__(
        self,
        merchant: Merchant,
        api_key: str,
        sign_type: str,
        *,
        api_base_url: str,
        authinfo_url: str,
        http: httpx.AsyncClient,
        secapi_http: httpx.AsyncClient | None,
        clock: Clock,
        max_response_bytes: int = 65536,
        nonce: Callable[[], str] | None = None,
        total_timeout: float = 30.0,
    ) -> None:
        if sign_type not in SIGN_TYPES:
            raise ConfigError(f"unsupported sign_type {sign_type!r}; use MD5 or HMAC-SHA256")
        if not api_key:
            raise ConfigError("the WeChat Pay API key is empty")
        self._merchant = merchant
        self._api_key = api_key
        self._sign_type = sign_type
        self._api_base_url = api_base_url.rstrip("/")
        self._authinfo_url = authinfo_url
        self._http = http
        self._secapi_http = secapi_http
        self._clock = clock
        self._max_response_bytes = max_response_bytes
        self._nonce = nonce or _default_nonce
        self._total_timeout = total_timeout

    def __repr__(self) -> str:
        return f"WxPayV2Client(mch_id={self._merchant.mch_id!r}, sign_type={self._sign_type!r})"

    async def get_authinfo(
        self, *, rawdata: str, store_id: str, store_name: str, device_id: str, attach: str = ""
    ) -> AuthinfoGrant:
        """Exchange the SDK's rawdata for an authinfo valid expires_in seconds."""
        params = {
            **self._merchant_params(),
            "store_id": store_id,
            "store_name": store_name,
            "device_id": device_id,
            "attach": attach,
            "rawdata": rawdata,
            "now": str(int(self._clock.time())),
            "version": "1",
        }
        fields = await self._call(
            "get_wxpayface_authinfo",
            self._http,
            self._authinfo_url,
            params,
            secrets_sent=(rawdata,),
            mch_id_required=False,
        )
        authinfo = fields.get("authinfo", "")
        if not authinfo:
            raise ResponseNotTrusted("get_wxpayface_authinfo: answer carries no authinfo")
        expires_in = _int_field(fields, "expires_in", "get_wxpayface_authinfo")
        return AuthinfoGrant(
            authinfo=authinfo,
            expires_in=expires_in if "expires_in" in fields else DEFAULT_AUTHINFO_EXPIRES_IN,
        )

    async def micropay(self, order: MicropayOrder) -> TradeResult:
        """Charge a face_code; BackendUnavailable/ResponseNotTrusted leave the outcome unknown.

        A return_code=FAIL answer is the typed outcome REJECTED (err_code: its code), not an
        exception: the payment machine queries it before calling the order failed.
        """
        if not order.out_trade_no:
            raise InvalidArgument("out_trade_no", "must not be empty")
        if order.total_fee <= 0:
            raise InvalidArgument("total_fee", "must be a positive number of fen")
        if len(order.device_info) > _MAX_DEVICE_INFO:
            raise InvalidArgument("device_info", f"must be at most {_MAX_DEVICE_INFO} characters")
        params = {
            **self._merchant_params(),
            "device_info": order.device_info,
            "body": order.body,
            "detail": order.detail,
            "attach": order.attach,
            "out_trade_no": order.out_trade_no,
            "total_fee": str(order.total_fee),
            "fee_type": order.fee_type,
            "spbill_create_ip": order.spbill_create_ip,
            "goods_tag": order.goods_tag,
            "limit_pay": order.limit_pay,
            "time_start": order.time_start,
            "time_expire": order.time_expire,
            "receipt": order.receipt,
            "auth_code": order.auth_code,
            "scene_info": order.scene_info,
        }
        try:
            fields = await self._call(
                "micropay",
                self._http,
                f"{self._api_base_url}/pay/micropay",
                params,
                secrets_sent=(order.auth_code,),
            )
        except BackendRejected as exc:  # only _call's return_code=FAIL raises it
            return TradeResult(
                state=TradeState.REJECTED,
                out_trade_no=order.out_trade_no,
                err_code=exc.code,
                err_code_des=exc.message,
            )
        self._check_echo(fields, "out_trade_no", order.out_trade_no, "micropay")
        result_code = _result_code(fields, "micropay")
        if result_code == "SUCCESS":
            return _trade_result(fields, TradeState.SUCCESS, order.out_trade_no, "micropay")
        err_code = fields.get("err_code", "")
        state = _MICROPAY_STATES.get(classify(Api.MICROPAY, err_code), TradeState.UNKNOWN)
        return TradeResult(
            state=state,
            out_trade_no=order.out_trade_no,
            err_code=err_code,
            err_code_des=_message(fields.get("err_code_des", ""), (order.auth_code,)),
        )

    async def orderquery(self, *, out_trade_no: str = "", transaction_id: str = "") -> TradeResult:
        """Where an order stands now; NOT_EXIST when WeChat Pay never saw it."""
        if not out_trade_no and not transaction_id:
            raise InvalidArgument("out_trade_no", "out_trade_no or transaction_id is required")
        params = {
            **self._merchant_params(),
            "out_trade_no": out_trade_no,
            "transaction_id": transaction_id,
        }
        fields = await self._call(
            "orderquery", self._http, f"{self._api_base_url}/pay/orderquery", params
        )
        if out_trade_no:
            self._check_echo(fields, "out_trade_no", out_trade_no, "orderquery")
        if transaction_id:
            self._check_echo(fields, "transaction_id", transaction_id, "orderquery")
        result_code = _result_code(fields, "orderquery")
        if result_code != "SUCCESS":
            err_code = fields.get("err_code", "")
            disposition = classify(Api.ORDERQUERY, err_code)
            return TradeResult(
                state=TradeState.NOT_EXIST
                if disposition is Disposition.NOT_EXIST
                else TradeState.UNKNOWN,
                out_trade_no=out_trade_no,
                err_code=err_code,
                err_code_des=_message(fields.get("err_code_des", ""), ()),
                transaction_id=transaction_id,
            )
        trade_state = fields.get("trade_state", "")
        # An unheard-of trade_state is not proof of anything: the caller queries again.
        state = _QUERY_TRADE_STATES.get(trade_state, TradeState.UNKNOWN)
        return _trade_result(fields, state, out_trade_no, "orderquery")

    async def reverse(self, *, out_trade_no: str, transaction_id: str = "") -> ReverseResult:
        """Cancel an order (refunding it if paid) over the merchant-certificate connection."""
        if not out_trade_no:
            raise InvalidArgument("out_trade_no", "must not be empty")
        if self._secapi_http is None:
            raise ConfigError("reverse needs the merchant API certificate, which is not configured")
        params = {
            **self._merchant_params(),
            "out_trade_no": out_trade_no,
            "transaction_id": transaction_id,
        }
        fields = await self._call(
            "reverse", self._secapi_http, f"{self._api_base_url}/secapi/pay/reverse", params
        )
        err_code = fields.get("err_code", "")
        # recall is required in the answer and decides: N means "do not call reverse again",
        # whatever the code. An answer without it is not one we can act on: call again later.
        succeeded = _result_code(fields, "reverse") == "SUCCESS"
        if "recall" not in fields and not succeeded:
            raise ResponseNotTrusted("reverse: the answer has no recall")
        recall = fields.get("recall", "") == "Y"
        if succeeded:
            return ReverseResult(succeeded=True, recall=recall)
        return ReverseResult(
            succeeded=False,
            recall=recall,
            err_code=err_code,
            err_code_des=_message(fields.get("err_code_des", ""), ()),
        )

    async def refund(self, order: RefundOrder) -> RefundResult:
        """Ask for a refund over the merchant-certificate connection; refundquery tells its end.

        BackendUnavailable/ResponseNotTrusted leave it unknown (the request may have arrived);
        a return_code=FAIL answer is the typed outcome REJECTED, not proof of anything.
        """
        if not order.out_refund_no:
            raise InvalidArgument("out_refund_no", "must not be empty")
        if not order.out_trade_no and not order.transaction_id:
            raise InvalidArgument("out_trade_no", "out_trade_no or transaction_id is required")
        if not 0 < order.refund_fee <= order.total_fee:
            raise InvalidArgument("refund_fee", "must be between 1 and total_fee")
        if self._secapi_http is None:
            raise ConfigError("refund needs the merchant API certificate, which is not configured")
        params = {
            **self._merchant_params(),
            # WeChat Pay takes transaction_id first when both are given.
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no,
            "out_refund_no": order.out_refund_no,
            "total_fee": str(order.total_fee),
            "refund_fee": str(order.refund_fee),
            "refund_fee_type": order.refund_fee_type,
            "refund_desc": order.refund_desc,
            "refund_account": order.refund_account,
        }
        try:
            fields = await self._call(
                "refund", self._secapi_http, f"{self._api_base_url}/secapi/pay/refund", params
            )
        except BackendRejected as exc:  # only _call's return_code=FAIL raises it
            return RefundResult(
                RefundOutcome.REJECTED,
                out_refund_no=order.out_refund_no,
                err_code=exc.code,
                err_code_des=exc.message,
            )
        self._check_echo(fields, "out_refund_no", order.out_refund_no, "refund")
        if order.out_trade_no:
            self._check_echo(fields, "out_trade_no", order.out_trade_no, "refund")
        if order.transaction_id:
            self._check_echo(fields, "transaction_id", order.transaction_id, "refund")
        if _result_code(fields, "refund") != "SUCCESS":
            err_code = fields.get("err_code", "")
            return RefundResult(
                _REFUND_OUTCOMES.get(classify(Api.REFUND, err_code), RefundOutcome.UNKNOWN),
                out_refund_no=order.out_refund_no,
                err_code=err_code,
                err_code_des=_message(fields.get("err_code_des", ""), ()),
            )
        refund_fee = _int_field(fields, "refund_fee", "refund")
        if "refund_fee" in fields and refund_fee != order.refund_fee:
            raise ResponseNotTrusted("refund: answer refund_fee does not match ours")
        coupon = _int_field(fields, "coupon_refund_fee", "refund")
        return RefundResult(
            RefundOutcome.ACCEPTED,
            out_refund_no=order.out_refund_no,
            refund_id=fields.get("refund_id", ""),
            transaction_id=fields.get("transaction_id", ""),
            refund_fee=order.refund_fee,
            settlement_refund_fee=_int_field(fields, "settlement_refund_fee", "refund"),
            cash_refund_fee=_int_field(fields, "cash_refund_fee", "refund"),
            coupon_refund_fee=coupon,
        )

    async def refundquery(self, *, out_refund_no: str) -> RefundQueryResult:
        """Where one refund stands now, by its out_refund_no; NOT_EXIST when WeChat Pay has none."""
        if not out_refund_no:
            raise InvalidArgument("out_refund_no", "must not be empty")
        params = {**self._merchant_params(), "out_refund_no": out_refund_no}
        fields = await self._call(
            "refundquery", self._http, f"{self._api_base_url}/pay/refundquery", params
        )
        if _result_code(fields, "refundquery") != "SUCCESS":
            err_code = fields.get("err_code", "")
            not_exist = classify(Api.REFUNDQUERY, err_code) is Disposition.NOT_EXIST
            return RefundQueryResult(
                RefundStatus.NOT_EXIST if not_exist else RefundStatus.UNKNOWN,
                out_refund_no=out_refund_no,
                err_code=err_code,
                err_code_des=_message(fields.get("err_code_des", ""), ()),
            )
        count = min(_int_field(fields, "refund_count", "refundquery"), _MAX_REFUND_ROWS)
        for n in range(count):
            if fields.get(f"out_refund_no_{n}") != out_refund_no:
                continue
            refund_fee = _int_field(fields, f"refund_fee_{n}", "refundquery")
            coupon = _int_field(fields, f"coupon_refund_fee_{n}", "refundquery")
            status = fields.get(f"refund_status_{n}", "")
            return RefundQueryResult(
                # An unheard-of status is not proof of anything: the caller asks again.
                _REFUND_STATUSES.get(status, RefundStatus.UNKNOWN),
                out_refund_no=out_refund_no,
                refund_id=fields.get(f"refund_id_{n}", ""),
                transaction_id=fields.get("transaction_id", ""),
                out_trade_no=fields.get("out_trade_no", ""),
                refund_fee=refund_fee,
                settlement_refund_fee=_int_field(
                    fields, f"settlement_refund_fee_{n}", "refundquery"
                ),
                # refundquery names no cash part per refund: what the coupons did not cover.
                cash_refund_fee=max(refund_fee - coupon, 0),
                coupon_refund_fee=coupon,
                refund_channel=fields.get(f"refund_channel_{n}", ""),
                success_time=fields.get(f"refund_success_time_{n}", ""),
                # Spelled "accout" by WeChat Pay.
                recv_account=_message(fields.get(f"refund_recv_accout_{n}", ""), ()),
            )
        # An answer without our row says nothing about our refund.
        return RefundQueryResult(RefundStatus.UNKNOWN, out_refund_no=out_refund_no)

    def _merchant_params(self) -> dict[str, str]:
        m = self._merchant
        return {
            "appid": m.appid,
            "mch_id": m.mch_id,
            "sub_appid": m.sub_appid,
            "sub_mch_id": m.sub_mch_id,
        }

    async def _call(
        self,
        api: str,
        client: httpx.AsyncClient,
        url: str,
        params: Mapping[str, str],
        *,
        secrets_sent: Iterable[str] = (),
        mch_id_required: bool = True,
    ) -> dict[str, str]:
        """Send one signed request; return the verified fields of a SUCCESS answer."""
        request = {k: v for k, v in params.items() if v}
        request["nonce_str"] = self._nonce()
        request["sign_type"] = self._sign_type
        request["sign"] = sign(request, self._api_key, self._sign_type)
        body = build_xml(request)
        data = await self._post(api, client, url, body)
        fields = parse_xml(data, self._max_response_bytes)
        return_code = fields.get("return_code", "")
        if not return_code:
            raise ResponseNotTrusted(f"{api}: answer has no return_code")
        if return_code != "SUCCESS":
            # A FAIL is a communication-level refusal, never a trade result, signed or not.
            hidden = (self._api_key, *secrets_sent)
            code = _message(fields.get("err_code", "") or return_code, hidden)
            raise BackendRejected(code, _message(fields.get("return_msg", ""), hidden))
        if not verify(fields, self._api_key, self._sign_type):
            raise ResponseNotTrusted(f"{api}: answer signature is missing or wrong")
        self._check_echo(fields, "appid", self._merchant.appid, api, required=True)
        self._check_echo(fields, "mch_id", self._merchant.mch_id, api, required=mch_id_required)
        if self._merchant.sub_mch_id:
            self._check_echo(fields, "sub_mch_id", self._merchant.sub_mch_id, api)
        return fields

    async def _post(self, api: str, client: httpx.AsyncClient, url: str, body: bytes) -> bytes:
        headers = {"Content-Type": "text/xml; charset=utf-8", "Accept-Encoding": "identity"}
        try:
            async with asyncio.timeout(self._total_timeout):
                async with client.stream("POST", url, content=body, headers=headers) as response:
                    if response.status_code != httpx.codes.OK:
                        raise BackendUnavailable(f"{api}: HTTP status {response.status_code}")
                    encoding = response.headers.get("content-encoding", "identity").lower()
                    if encoding != "identity":
                        # Decompressing first would defeat the size cap.
                        raise ResponseNotTrusted(f"{api}: answer uses content-encoding {encoding}")
                    length = response.headers.get("content-length")
                    if (
                        length is not None
                        and length.isdigit()
                        and int(length) > self._max_response_bytes
                    ):
                        raise ResponseNotTrusted(
                            f"{api}: response body larger than {self._max_response_bytes} bytes"
                        )
                    return await read_capped(response.aiter_raw(), self._max_response_bytes)
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"{api}: no complete answer within {self._total_timeout:g} s"
            ) from exc
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(f"{api}: timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"{api}: transport failed ({type(exc).__name__})") from exc

    @staticmethod
    def _check_echo(
        fields: Mapping[str, str], name: str, expected: str, api: str, *, required: bool = False
    ) -> None:
        if name not in fields:
            if required:
                raise ResponseNotTrusted(f"{api}: answer lacks {name}")
            return
        if fields[name] != expected:
            raise ResponseNotTrusted(f"{api}: answer {name} does not match ours")


def _result_code(fields: Mapping[str, str], api: str) -> str:
    result_code = fields.get("result_code", "")
    if result_code not in ("SUCCESS", "FAIL"):
        raise ResponseNotTrusted(f"{api}: answer has no valid result_code")
    return result_code


def _int_field(fields: Mapping[str, str], name: str, api: str) -> int:
    raw = fields.get(name, "")
    if not raw:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise ResponseNotTrusted(f"{api}: answer {name} is not a whole number")
    return int(raw)


def _informational_int(fields: Mapping[str, str], name: str, api: str) -> int:
    """A reply amount that decides nothing (coupons, settlement, cash): 0 when malformed."""
    raw = fields.get(name, "")
    if raw and (not raw.isascii() or not raw.isdigit() or len(raw) > 12):
        # Distrusting a paid answer over a field that only informs would fail every query
        # alike and reverse a sale the customer paid; the value itself is not logged.
        log.warning("wxpay_field_not_a_whole_number", api=api, field=name)
        return 0
    return int(raw) if raw else 0


def _coupons(fields: Mapping[str, str], api: str) -> tuple[TradeCoupon, ...]:
    """The coupon_*_$n rows, $n from 0 while any of the three is present."""
    rows: list[TradeCoupon] = []
    for n in range(_MAX_COUPONS):
        names = (f"coupon_id_{n}", f"coupon_type_{n}", f"coupon_fee_{n}")
        if not any(name in fields for name in names):
            break
        rows.append(
            TradeCoupon(
                coupon_id=fields.get(names[0], ""),
                coupon_type=fields.get(names[1], ""),
                coupon_fee=_informational_int(fields, names[2], api),
            )
        )
    return tuple(rows)


def _trade_result(
    fields: Mapping[str, str], state: TradeState, out_trade_no: str, api: str
) -> TradeResult:
    return TradeResult(
        state=state,
        out_trade_no=fields.get("out_trade_no", "") or out_trade_no,
        err_code=fields.get("err_code", ""),
        err_code_des=_message(fields.get("err_code_des", ""), ()),
        transaction_id=fields.get("transaction_id", ""),
        openid=fields.get("openid", ""),
        sub_openid=fields.get("sub_openid", ""),
        bank_type=fields.get("bank_type", ""),
        total_fee=_int_field(fields, "total_fee", api),
        cash_fee=_informational_int(fields, "cash_fee", api),
        fee_type=fields.get("fee_type", ""),
        time_end=fields.get("time_end", ""),
        attach=fields.get("attach", ""),
        settlement_total_fee=_informational_int(fields, "settlement_total_fee", api),
        coupon_fee=_informational_int(fields, "coupon_fee", api),
        coupon_count=_informational_int(fields, "coupon_count", api),
        coupons=_coupons(fields, api),
        cash_fee_type=fields.get("cash_fee_type", ""),
        promotion_detail=fields.get("promotion_detail", ""),
        is_subscribe=fields.get("is_subscribe", ""),
        trade_type=fields.get("trade_type", ""),
        trade_state_desc=_message(fields.get("trade_state_desc", ""), (), limit=256),
        device_info=fields.get("device_info", ""),
        trade_state=fields.get("trade_state", "") if api == "orderquery" else "",
    )


def _message(text: str, hidden: Iterable[str], *, limit: int = _MAX_MESSAGE) -> str:
    """A peer-supplied message made safe for logs: bounded, one line, our secrets cut out."""
    for secret in hidden:
        if secret:
            text = text.replace(secret, _REDACTED)
    text = " ".join(text.split())
    return text[:limit]
