"""Domain results of WeChat Pay calls: what the payment logic sees, never raw XML."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Merchant:
    """Who is paid: the merchant identity sent with every call (no secrets)."""

    appid: str
    mch_id: str
    sub_appid: str = ""
    sub_mch_id: str = ""


@dataclass(frozen=True, slots=True)
class AuthinfoGrant:
    """A verified get_wxpayface_authinfo answer."""

    authinfo: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class MicropayOrder:
    """The fields of one micropay call; auth_code is the face code or the scanned code."""

    out_trade_no: str
    total_fee: int
    body: str
    auth_code: str = field(repr=False)  # the face code or scanned payment code: a secret
    spbill_create_ip: str = "127.0.0.1"
    device_info: str = ""
    attach: str = ""
    detail: str = ""
    fee_type: str = ""
    goods_tag: str = ""
    limit_pay: str = ""
    time_start: str = ""
    time_expire: str = ""
    receipt: str = ""
    scene_info: str = ""


class TradeState(enum.StrEnum):
    """Where an order stands after a verified micropay or orderquery answer."""

    SUCCESS = "SUCCESS"  # paid
    USERPAYING = "USERPAYING"  # waiting for the user (password); query again
    UNKNOWN = "UNKNOWN"  # SYSTEMERROR, BANKERROR and the like: query again
    FAILED = "FAILED"  # a definite failure: nothing was charged
    # micropay return_code=FAIL (SIGNERROR, XML_FORMAT_ERROR...): refused before any trade,
    # but unsigned, so not proof: query, and only ORDERNOTEXIST makes it a failure.
    REJECTED = "REJECTED"
    NOTPAY = "NOTPAY"  # orderquery: not paid (yet)
    CLOSED = "CLOSED"
    REVOKED = "REVOKED"  # reversed
    REFUND = "REFUND"
    PAYERROR = "PAYERROR"
    NOT_EXIST = "NOT_EXIST"  # orderquery ORDERNOTEXIST: WeChat never saw the order


@dataclass(frozen=True, slots=True)
class TradeCoupon:
    """One coupon_*_$n row of a paid answer."""

    coupon_id: str = ""
    coupon_type: str = ""
    coupon_fee: int = 0


@dataclass(frozen=True, slots=True)
class TradeResult:
    """A verified micropay or orderquery answer."""

    state: TradeState
    out_trade_no: str = ""
    err_code: str = ""
    err_code_des: str = ""
    transaction_id: str = ""
    openid: str = ""
    sub_openid: str = ""
    bank_type: str = ""
    total_fee: int = 0
    cash_fee: int = 0
    fee_type: str = ""
    time_end: str = ""
    attach: str = ""
    settlement_total_fee: int = 0
    coupon_fee: int = 0
    coupon_count: int = 0
    coupons: tuple[TradeCoupon, ...] = ()
    cash_fee_type: str = ""
    promotion_detail: str = ""
    is_subscribe: str = ""
    trade_type: str = ""
    trade_state_desc: str = ""
    device_info: str = ""
    trade_state: str = ""  # orderquery's trade_state as sent ("" for micropay)


@dataclass(frozen=True, slots=True)
class ReverseResult:
    """A verified reverse answer: done, or call again while recall is set."""

    succeeded: bool
    recall: bool
    err_code: str = ""
    err_code_des: str = ""
