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


@dataclass(frozen=True, slots=True)
class RefundOrder:
    """The fields of one secapi/pay/refund call (transaction_id wins over out_trade_no)."""

    out_refund_no: str
    total_fee: int
    refund_fee: int
    out_trade_no: str = ""
    transaction_id: str = ""
    refund_fee_type: str = ""
    refund_desc: str = ""
    refund_account: str = ""


class RefundOutcome(enum.StrEnum):
    """What a verified refund answer says about the request."""

    ACCEPTED = "ACCEPTED"  # result_code SUCCESS: WeChat Pay took it; refundquery tells the end
    FAILED = "FAILED"  # a definite error: nothing refunded by this request
    RETRY = "RETRY"  # SYSTEMERROR, BIZERR_NEED_RETRY...: send the same request again later
    UNKNOWN = "UNKNOWN"  # an unlisted code: query before anything else
    # return_code FAIL (SIGNERROR, XML_FORMAT_ERROR...): refused whole, unsigned, not proof.
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class RefundResult:
    """A verified refund answer."""

    outcome: RefundOutcome
    out_refund_no: str = ""
    err_code: str = ""
    err_code_des: str = ""
    refund_id: str = ""
    transaction_id: str = ""
    refund_fee: int = 0
    settlement_refund_fee: int = 0
    cash_refund_fee: int = 0
    coupon_refund_fee: int = 0


class RefundStatus(enum.StrEnum):
    """Where one refund stands in a refundquery answer (refund_status_$n), or why none."""

    SUCCESS = "SUCCESS"
    REFUNDCLOSE = "REFUNDCLOSE"
    PROCESSING = "PROCESSING"
    CHANGE = "CHANGE"  # refunded to an abnormal account: the merchant platform settles it
    NOT_EXIST = "NOT_EXIST"  # REFUNDNOTEXIST: WeChat Pay has no such refund
    UNKNOWN = "UNKNOWN"  # SYSTEMERROR, an unheard-of status, a row that is not ours: ask again


@dataclass(frozen=True, slots=True)
class RefundQueryResult:
    """One refund's row of a verified refundquery answer."""

    status: RefundStatus
    out_refund_no: str = ""
    refund_id: str = ""
    # The refunded order as the answer names it: a row under our out_refund_no for another
    # order is another till's refund (the caller compares; "" when the answer names none).
    transaction_id: str = ""
    out_trade_no: str = ""
    refund_fee: int = 0
    settlement_refund_fee: int = 0
    cash_refund_fee: int = 0
    coupon_refund_fee: int = 0
    refund_channel: str = ""
    success_time: str = ""
    recv_account: str = ""
    err_code: str = ""
    err_code_des: str = ""
