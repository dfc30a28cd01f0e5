"""PayScore (微信支付分) service orders as the domain sees them: requests and verified answers."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

# Limits from the v3 service-order reference.
MAX_POST_PAYMENTS = 100
MAX_POST_DISCOUNTS = 30
MAX_SERVICE_INTRODUCTION = 20
MAX_OUT_ORDER_NO = 32
MAX_ATTACH = 256
MAX_NOTIFY_URL = 255
MAX_CANCEL_REASON = 50
RISK_FUND_NAMES = frozenset({"DEPOSIT", "ADVANCE", "CASH_DEPOSIT", "ESTIMATE_ORDER_COST"})
# The risk-fund mode follows from its name (WeChat Pay's PayScore documentation): a user who
# fails the assessment pays a deposit (these names; complete may charge at most the order's
# risk fund), or is refused (ESTIMATE_ORDER_COST; at most the service ID's own risk cap).
DEPOSIT_RISK_FUND_NAMES = frozenset({"DEPOSIT", "ADVANCE", "CASH_DEPOSIT"})
SYNC_ORDER_PAID = "Order_Paid"
# out_order_no: "只能由数字、大小写字母_-|*组成"; in a URL path "|" and "*" are percent-encoded.
OUT_ORDER_NO = re.compile(r"[0-9A-Za-z_\-|*]{1,32}")


def attach_on_wire(attach: str) -> str:
    """attach as sent: the reference has it url-encoded first (UTF-8, every reserved byte)."""
    return quote(attach, safe="")


def attach_from_wire(attach: str) -> str:
    """attach as the merchant gave it, from the url-encoded form WeChat Pay echoes."""
    return unquote(attach)


class ServiceOrderState(enum.StrEnum):
    """Where a service order stands on WeChat Pay's side."""

    CREATED = "CREATED"  # created; a need_user_confirm order waits here for the user
    DOING = "DOING"  # in service; see state_description (USER_CONFIRM, MCH_COMPLETE)
    DONE = "DONE"  # completed and paid (final)
    REVOKED = "REVOKED"  # cancelled by the merchant (final)
    EXPIRED = "EXPIRED"  # CREATED for 30 days without change (final)


# state_description values while DOING.
USER_CONFIRM = "USER_CONFIRM"
MCH_COMPLETE = "MCH_COMPLETE"


@dataclass(frozen=True, slots=True)
class PostPayment:
    """One post-paid item; amount is the item's total in fen (not a unit price)."""

    name: str
    amount: int | None = None
    description: str = ""
    count: int | None = None


@dataclass(frozen=True, slots=True)
class PostDiscount:
    """One merchant discount; amount in fen is subtracted from the order total."""

    name: str
    description: str = ""
    amount: int | None = None
    count: int | None = None


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Service time: yyyyMMddHHmmss, or "OnAccept" for start_time."""

    start_time: str = ""
    start_time_remark: str = ""
    end_time: str = ""
    end_time_remark: str = ""


@dataclass(frozen=True, slots=True)
class Location:
    """Where the service starts and ends."""

    start_location: str = ""
    end_location: str = ""


@dataclass(frozen=True, slots=True)
class RiskFund:
    """The order's risk fund: the upper bound of what completion may charge."""

    name: str
    amount: int
    description: str = ""


@dataclass(frozen=True, slots=True)
class NewServiceOrder:
    """The fields of a create call; service_id defaults to the client's."""

    out_order_no: str
    service_introduction: str
    risk_fund: RiskFund
    time_range: TimeRange
    post_payments: tuple[PostPayment, ...] = ()
    post_discounts: tuple[PostDiscount, ...] = ()
    location: Location | None = None
    attach: str = ""
    notify_url: str = ""
    openid: str = ""
    need_user_confirm: bool = False
    service_id: str = ""


@dataclass(frozen=True, slots=True)
class ServiceOrderCompletion:
    """The fields of a complete call: what the user is finally charged."""

    post_payments: tuple[PostPayment, ...]
    total_amount: int
    post_discounts: tuple[PostDiscount, ...] = ()
    time_range: TimeRange | None = None
    location: Location | None = None
    profit_sharing: bool = False
    goods_tag: str = ""


@dataclass(frozen=True, slots=True)
class CollectionDetail:
    """One payment towards a completed order."""

    amount: int
    paid_type: str = ""
    paid_time: str = ""
    transaction_id: str = ""


@dataclass(frozen=True, slots=True)
class Collection:
    """What has been collected for a completed order (USER_PAYING, USER_PAID)."""

    state: str
    total_amount: int = 0
    paying_amount: int = 0
    paid_amount: int = 0
    details: tuple[CollectionDetail, ...] = ()


@dataclass(frozen=True, slots=True)
class UnionIdResult:
    """A face_sid's UnionID lookup; openid only when WeChat Pay's answer carries one."""

    unionid: str
    openid: str = ""


@dataclass(frozen=True, slots=True)
class ServiceOrderResult:
    """A verified service-order answer (create, complete, sync, query, cancel)."""

    out_order_no: str
    service_id: str
    state: ServiceOrderState
    appid: str = ""
    mchid: str = ""
    order_id: str = ""
    state_description: str = ""
    service_introduction: str = ""
    post_payments: tuple[PostPayment, ...] = ()
    post_discounts: tuple[PostDiscount, ...] = ()
    risk_fund: RiskFund | None = None
    time_range: TimeRange | None = None
    location: Location | None = None
    total_amount: int | None = None
    attach: str = ""  # as the merchant gave it (decoded from the wire's url-encoding)
    notify_url: str = ""
    openid: str = ""
    need_collection: bool = False
    package: str = ""
    collection: Collection | None = None
