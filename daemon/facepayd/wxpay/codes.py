"""What each v2 err_code means for the order: the one table the payment logic decides by.

Codes come from the reference's error tables for micropay, orderquery and reverse, and from
WeChat Pay's public v2 documentation of refund and refundquery (the reference has no refund
section). A code that is not in the table is never taken as a definite failure: for micropay,
orderquery, refund and refundquery it means "outcome unknown, query again", for reverse "call
again" (while the answer's recall=N still ends the reversing: the order's own state then decides).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class Api(enum.StrEnum):
    """The v2 calls whose err_codes are classified."""

    MICROPAY = "micropay"
    ORDERQUERY = "orderquery"
    REVERSE = "reverse"
    REFUND = "refund"
    REFUNDQUERY = "refundquery"


class Disposition(enum.StrEnum):
    """What an err_code tells the caller to do next."""

    FAILED = "failed"  # definite: nothing was charged, or the call cannot succeed as sent
    QUERY = "query"  # outcome unknown: query the order now
    USERPAYING = "userpaying"  # the user is confirming: query again in about 5 s
    # micropay: the number is taken at WeChat Pay, maybe by another, earlier order: query, and
    # take a paid answer only when amount and payer are ours; never reverse it.
    NUMBER_USED = "number_used"
    NOT_EXIST = "not_exist"  # orderquery: WeChat Pay never saw the order
    RETRY = "retry"  # reverse: call reverse again
    EXPIRED = "expired"  # reverse: older than the 7-day window; only a refund undoes it
    # refund: too many requests; the same request again, no sooner than a minute later.
    THROTTLED = "throttled"


_F = Disposition.FAILED
_Q = Disposition.QUERY

ERROR_CODES: Mapping[Api, Mapping[str, Disposition]] = MappingProxyType(
    {
        Api.MICROPAY: MappingProxyType(
            {
                "SYSTEMERROR": _Q,
                "BANKERROR": _Q,
                "USERPAYING": Disposition.USERPAYING,
                # The order number is already known to WeChat Pay: micropay is sent once per
                # number, so it is most likely another order's; only a query can tell.
                "ORDERPAID": Disposition.NUMBER_USED,
                "OUT_TRADE_NO_USED": Disposition.NUMBER_USED,
                "PARAM_ERROR": _F,
                "NOAUTH": _F,
                "AUTHCODEEXPIRE": _F,
                "NOTENOUGH": _F,
                "NOTSUPORTCARD": _F,
                "ORDERCLOSED": _F,
                "ORDERREVERSED": _F,
                "AUTH_CODE_ERROR": _F,
                "AUTH_CODE_INVALID": _F,
                "XML_FORMAT_ERROR": _F,
                "REQUIRE_POST_METHOD": _F,
                "SIGNERROR": _F,
                "LACK_PARAMS": _F,
                "NOT_UTF8": _F,
                "BUYER_MISMATCH": _F,
                "APPID_NOT_EXIST": _F,
                "MCHID_NOT_EXIST": _F,
                "APPID_MCHID_NOT_MATCH": _F,
                "INVALID_REQUEST": _F,
                "TRADE_ERROR": _F,
            }
        ),
        Api.ORDERQUERY: MappingProxyType(
            {
                "ORDERNOTEXIST": Disposition.NOT_EXIST,
                "SYSTEMERROR": _Q,
            }
        ),
        Api.REVERSE: MappingProxyType(
            {
                "SYSTEMERROR": Disposition.RETRY,
                "USERPAYING": Disposition.RETRY,
                "INVALID_TRANSACTIONID": _F,
                "PARAM_ERROR": _F,
                "REQUIRE_POST_METHOD": _F,
                "SIGNERROR": _F,
                "REVERSE_EXPIRE": Disposition.EXPIRED,
                "INVALID_REQUEST": _F,
                "TRADE_ERROR": _F,
            }
        ),
        # A definite code means this request refunded nothing. RETRY codes ask for the same
        # request again ("请用相同参数再次调用"): the refund machine queries first and sends
        # again, with the same out_refund_no, only when WeChat Pay has no such refund.
        Api.REFUND: MappingProxyType(
            {
                "SYSTEMERROR": Disposition.RETRY,
                "BIZERR_NEED_RETRY": Disposition.RETRY,
                "FREQUENCY_LIMITED": Disposition.THROTTLED,
                "INVALID_REQ_TOO_MUCH": Disposition.THROTTLED,
                "TRADE_OVERDUE": _F,
                "ERROR": _F,
                "USER_ACCOUNT_ABNORMAL": _F,
                "NOTENOUGH": _F,
                "INVALID_TRANSACTIONID": _F,
                "PARAM_ERROR": _F,
                "APPID_NOT_EXIST": _F,
                "MCHID_NOT_EXIST": _F,
                "ORDERNOTEXIST": _F,
                "REQUIRE_POST_METHOD": _F,
                "SIGNERROR": _F,
                "XML_FORMAT_ERROR": _F,
                # Not in the refund error table, but answered by WeChat Pay: the number was used
                # with another amount (never ours: a number keeps its parameters here).
                "REFUND_FEE_MISMATCH": _F,
                # Named by issue 11, not by the documentation: the order is not paid.
                "ORDER_NOT_PAID": _F,
            }
        ),
        Api.REFUNDQUERY: MappingProxyType(
            {
                "SYSTEMERROR": _Q,
                "REFUNDNOTEXIST": Disposition.NOT_EXIST,
                "INVALID_TRANSACTIONID": _F,
                "PARAM_ERROR": _F,
                "APPID_NOT_EXIST": _F,
                "MCHID_NOT_EXIST": _F,
                "REQUIRE_POST_METHOD": _F,
                "SIGNERROR": _F,
                "XML_FORMAT_ERROR": _F,
            }
        ),
    }
)

_UNLISTED: Mapping[Api, Disposition] = MappingProxyType(
    {
        Api.MICROPAY: _Q,
        Api.ORDERQUERY: _Q,
        Api.REVERSE: Disposition.RETRY,
        Api.REFUND: _Q,
        Api.REFUNDQUERY: _Q,
    }
)


def classify(api: Api, err_code: str) -> Disposition:
    """The disposition of err_code for api; unlisted codes are treated as unknown, never failed."""
    return ERROR_CODES[api].get(err_code, _UNLISTED[api])


def codes_with(api: Api, disposition: Disposition) -> frozenset[str]:
    """Every listed err_code of api with the given disposition."""
    return frozenset(code for code, d in ERROR_CODES[api].items() if d is disposition)
