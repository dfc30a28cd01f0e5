"""Every parameter and answer field the reference names, and where each is in the API.

One row per (call, direction, name) of ../shared/reference (wxpayface-android-sdk.md, and
wxfacepay-js-module.md for getWxpayfaceUserInfo and the getWxpayfaceCode options only it names).
A request row says where the value comes from (`api`: a request field, or `config:` a setting, or
`daemon:` something the daemon makes); a reply row says where the POS reads it (`api`: message
fields, several joined by " or "; `ErrorInfo.metadata.X` for an error's metadata). A row with
`left_out` is not reachable on purpose, and says why. tests/integration/test_reference_table.py
checks every row against the simulators' recorded requests and the gRPC API, and that README.md's
"Reference coverage" section is exactly `markdown(ROWS)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["request", "reply"]


@dataclass(frozen=True, slots=True)
class Row:
    """One reference parameter (request) or answer field (reply) of one call."""

    call: str
    direction: Direction
    name: str
    api: str = ""
    left_out: str = ""


def _rows(
    call: str, direction: Direction, *entries: tuple[str, str] or tuple[str, str, str]
) -> tuple[Row, ...]:
    return tuple(Row(call, direction, *entry) for entry in entries)


_VERIFIED = "verified (signature, echo), then dropped: it proves the answer, it is not data"
_FACE = "getWxpayfaceCode"
_USER = "getWxpayfaceUserInfo"

ROWS: tuple[Row, ...] = (
    *_rows(
        _FACE,
        "request",
        ("appid", "config:merchant.appid"),
        ("mch_id", "config:merchant.mch_id"),
        ("sub_appid", "config:merchant.sub_appid"),
        ("sub_mch_id", "config:merchant.sub_mch_id"),
        ("store_id", "config:merchant.store_id"),
        ("openid", "FaceOptions.openid"),
        ("telephone", "FaceOptions.telephone"),
        ("out_trade_no", "StartFacePayRequest.out_trade_no or CaptureFaceCodeRequest.out_trade_no"),
        ("total_fee", "StartFacePayRequest.total_fee or CaptureFaceCodeRequest.total_fee"),
        ("face_authtype", "FaceOptions.face_authtype"),
        ("authinfo", "daemon:authinfo cache (get_wxpayface_authinfo)"),
        ("ask_face_permit", "FaceOptions.ask_face_permit"),
        ("ask_ret_page", "FaceOptions.ask_ret_page"),
        ("face_code_type", "CaptureFaceCodeRequest.face_code_type (StartFacePay: 1)"),
        ("ignore_update_pay_result", "FaceOptions.ignore_update_pay_result (below SDK 2.13)"),
        ("screen_index", "FaceOptions.screen_index"),
        ("overlay_option", "FaceOptions.overlay_option"),
    ),
    *_rows(
        _FACE,
        "reply",
        ("return_code", "SessionCancelled.reason or ErrorInfo.metadata.return_code"),
        ("return_msg", "SessionCancelled.description"),
        (
            "err_code",
            "",
            "an SDK secondary code (271378620/1) is handled by the daemon (init, "
            "retry); any other reaches ErrorInfo.metadata.err_code of the SDK_ERROR it raises",
        ),
        ("face_code", "FaceCaptured.face_code"),
        ("openid", "FaceCaptured.openid"),
        ("sub_openid", "FaceCaptured.sub_openid"),
        ("underage_state", "FaceCaptured.underage_state"),
        ("telephone_used", "FaceCaptured.telephone_used"),
    ),
    # updateResultWxpayfaceCallBack, getWxpayfaceCode's second callback.
    *_rows(
        "updateResultWxpayfaceCallBack",
        "reply",
        ("return_code", "SessionEnded.reason or PayResultConfirmed.return_code"),
        ("return_msg", "SessionEnded.return_msg or PayResultConfirmed.return_msg"),
    ),
    *_rows(
        _USER,
        "request",
        ("appid", "config:merchant.appid"),
        ("mch_id", "config:merchant.mch_id"),
        ("sub_appid", "config:merchant.sub_appid"),
        ("sub_mch_id", "config:merchant.sub_mch_id"),
        ("store_id", "config:merchant.store_id"),
        ("face_authtype", "FaceOptions.face_authtype"),
        ("authinfo", "daemon:authinfo cache (get_wxpayface_authinfo)"),
        ("ask_unionid", "FaceOptions.ask_unionid"),
        ("screen_index", "FaceOptions.screen_index"),
    ),
    *_rows(
        _USER,
        "reply",
        ("status", "", "the JS module's own wrapper flag; the SDK's return_code stands for it"),
        ("openid", "GetUserInfoResponse.openid"),
        ("sub_openid", "GetUserInfoResponse.sub_openid"),
        ("nickname", "GetUserInfoResponse.nickname"),
        ("token", "GetUserInfoResponse.token"),
        ("unionid_code", "GetUserInfoResponse.unionid_code"),
        ("unionid_msg", "GetUserInfoResponse.unionid_msg"),
        ("errorCode", "ErrorInfo.metadata.return_code"),
    ),
    *_rows(
        "micropay",
        "request",
        ("appid", "config:merchant.appid"),
        ("mch_id", "config:merchant.mch_id"),
        ("device_info", "config:merchant.device_id (at most 32 characters)"),
        ("nonce_str", "daemon:random per request"),
        ("sign", "daemon:signed with the API key"),
        ("sign_type", "config:wxpay.sign_type"),
        ("body", "StartFacePayRequest.body or StartCodePayRequest.body"),
        ("detail", "StartFacePayRequest.detail or StartCodePayRequest.detail"),
        ("attach", "StartFacePayRequest.attach or StartCodePayRequest.attach"),
        ("out_trade_no", "StartFacePayRequest.out_trade_no or StartCodePayRequest.out_trade_no"),
        ("total_fee", "StartFacePayRequest.total_fee or StartCodePayRequest.total_fee"),
        ("fee_type", "StartFacePayRequest.fee_type or StartCodePayRequest.fee_type"),
        ("spbill_create_ip", "config:merchant.spbill_create_ip"),
        ("goods_tag", "StartFacePayRequest.goods_tag or StartCodePayRequest.goods_tag"),
        ("limit_pay", "StartFacePayRequest.limit_pay or StartCodePayRequest.limit_pay"),
        ("time_start", "StartFacePayRequest.time_start or StartCodePayRequest.time_start"),
        ("time_expire", "StartFacePayRequest.time_expire or StartCodePayRequest.time_expire"),
        ("receipt", "StartFacePayRequest.receipt or StartCodePayRequest.receipt"),
        ("auth_code", "FaceCaptured.face_code (StartFacePay) or StartCodePayRequest.auth_code"),
        ("scene_info", "StartFacePayRequest.scene_info or StartCodePayRequest.scene_info"),
    ),
    *_rows(
        "micropay",
        "reply",
        ("return_code", "PaymentPending.reason"),
        (
            "return_msg",
            "",
            "a return_code FAIL describes our request, not the order: logged "
            "(bounded, secrets cut out); the order is decided by the query that follows",
        ),
        ("appid", "", _VERIFIED),
        ("mch_id", "", _VERIFIED),
        ("device_info", "PaymentSucceeded.device_info or Payment.device_info"),
        ("nonce_str", "", _VERIFIED),
        ("sign", "", _VERIFIED),
        ("result_code", "PaymentEvent.state"),
        ("err_code", "PaymentFailed.err_code or Payment.err_code"),
        ("err_code_des", "PaymentFailed.description or Payment.err_code_des"),
        ("openid", "PaymentSucceeded.openid or Payment.openid"),
        ("is_subscribe", "PaymentSucceeded.is_subscribe or Payment.is_subscribe"),
        ("trade_type", "PaymentSucceeded.trade_type or Payment.trade_type"),
        ("bank_type", "PaymentSucceeded.bank_type or Payment.bank_type"),
        ("fee_type", "PaymentSucceeded.fee_type or Payment.fee_type"),
        ("total_fee", "PaymentSucceeded.total_fee or Payment.total_fee"),
        (
            "settlement_total_fee",
            "PaymentSucceeded.settlement_total_fee or Payment.settlement_total_fee",
        ),
        ("coupon_fee", "PaymentSucceeded.coupon_fee or Payment.coupon_fee"),
        ("cash_fee_type", "PaymentSucceeded.cash_fee_type or Payment.cash_fee_type"),
        ("cash_fee", "PaymentSucceeded.cash_fee or Payment.cash_fee"),
        ("transaction_id", "PaymentSucceeded.transaction_id or Payment.transaction_id"),
        ("out_trade_no", "PaymentEvent.out_trade_no or Payment.out_trade_no"),
        ("attach", "PaymentSucceeded.attach or Payment.echoed_attach"),
        ("time_end", "PaymentSucceeded.time_end or Payment.time_end"),
        ("promotion_detail", "PaymentSucceeded.promotion_detail or Payment.promotion_detail"),
    ),
    *_rows(
        "orderquery",
        "request",
        ("appid", "config:merchant.appid"),
        ("mch_id", "config:merchant.mch_id"),
        ("transaction_id", "daemon:from micropay's or an earlier query's answer, once known"),
        ("out_trade_no", "StartFacePayRequest.out_trade_no or StartCodePayRequest.out_trade_no"),
        ("nonce_str", "daemon:random per request"),
        ("sign", "daemon:signed with the API key"),
        ("sign_type", "config:wxpay.sign_type"),
    ),
    *_rows(
        "orderquery",
        "reply",
        (
            "return_code",
            "",
            "a return_code FAIL of a query is one more unknown answer: "
            "the daemon queries again (logged)",
        ),
        ("return_msg", "", "as return_code: logged, then queried again"),
        ("appid", "", _VERIFIED),
        ("mch_id", "", _VERIFIED),
        ("nonce_str", "", _VERIFIED),
        ("sign", "", _VERIFIED),
        ("result_code", "PaymentEvent.state"),
        (
            "err_code",
            "",
            "ORDERNOTEXIST or SYSTEMERROR: the daemon's machine acts on it "
            "(CLOSED after a reverse attempt, or query again); PaymentClosed.reason says which",
        ),
        ("err_code_des", "", "as err_code: logged; the state it leads to has its own description"),
        ("device_info", "PaymentSucceeded.device_info or Payment.device_info"),
        ("openid", "PaymentSucceeded.openid or Payment.openid"),
        ("is_subscribe", "PaymentSucceeded.is_subscribe or Payment.is_subscribe"),
        ("trade_type", "PaymentSucceeded.trade_type or Payment.trade_type"),
        ("trade_state", "PaymentSucceeded.trade_state or Payment.trade_state"),
        ("bank_type", "PaymentSucceeded.bank_type or Payment.bank_type"),
        ("total_fee", "PaymentSucceeded.total_fee or Payment.total_fee"),
        (
            "settlement_total_fee",
            "PaymentSucceeded.settlement_total_fee or Payment.settlement_total_fee",
        ),
        ("fee_type", "PaymentSucceeded.fee_type or Payment.fee_type"),
        ("cash_fee", "PaymentSucceeded.cash_fee or Payment.cash_fee"),
        ("cash_fee_type", "PaymentSucceeded.cash_fee_type or Payment.cash_fee_type"),
        ("coupon_fee", "PaymentSucceeded.coupon_fee or Payment.coupon_fee"),
        ("coupon_count", "PaymentSucceeded.coupon_count or Payment.coupon_count"),
        ("coupon_type_$n", "PaymentSucceeded.coupons.coupon_type or Payment.coupons.coupon_type"),
        ("coupon_id_$n", "PaymentSucceeded.coupons.coupon_id or Payment.coupons.coupon_id"),
        ("coupon_fee_$n", "PaymentSucceeded.coupons.coupon_fee or Payment.coupons.coupon_fee"),
        ("transaction_id", "PaymentSucceeded.transaction_id or Payment.transaction_id"),
        ("out_trade_no", "PaymentEvent.out_trade_no or Payment.out_trade_no"),
        ("attach", "PaymentSucceeded.attach or Payment.echoed_attach"),
        ("time_end", "PaymentSucceeded.time_end or Payment.time_end"),
        ("trade_state_desc", "PaymentSucceeded.trade_state_desc or Payment.trade_state_desc"),
    ),
    *_rows(
        "reverse",
        "request",
        ("appid", "config:merchant.appid"),
        ("mch_id", "config:merchant.mch_id"),
        ("transaction_id", "daemon:from micropay's or a query's answer, once known"),
        ("out_trade_no", "ReversePaymentRequest.out_trade_no"),
        ("nonce_str", "daemon:random per request"),
        ("sign", "daemon:signed with the API key"),
        ("sign_type", "config:wxpay.sign_type"),
    ),
    *_rows(
        "reverse",
        "reply",
        (
            "return_code",
            "",
            "a return_code FAIL is a failed attempt: reverse is called again "
            "with capped backoff (logged)",
        ),
        ("return_msg", "", "as return_code: logged"),
        ("appid", "", _VERIFIED),
        ("mch_id", "", _VERIFIED),
        ("nonce_str", "", _VERIFIED),
        ("sign", "", _VERIFIED),
        ("result_code", "PaymentEvent.state or Payment.state"),
        ("err_code", "Payment.err_code or ErrorInfo.metadata.code"),
        ("err_code_des", "Payment.err_code_des"),
        (
            "recall",
            "",
            "decides whether the daemon calls reverse again; a POS sees the outcome "
            "(REVERSED, or NEEDS_ATTENTION with its reason)",
        ),
    ),
)


def markdown(rows: tuple[Row, ...] = ROWS) -> str:
    """The rows as the README's table."""
    lines = [
        "| call | direction | reference name | in the API | left out because |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        api = f"`{row.api}`" if row.api else ""
        lines.append(f"| {row.call} | {row.direction} | `{row.name}` | {api} | {row.left_out} |")
    return "\n".join(lines) + "\n"
