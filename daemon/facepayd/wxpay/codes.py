"""What each v2 err_code means for the order: the one table the payment logic decides by.

Codes come from the reference's error tables for micropay, orderquery and reverse. A code
that is not in the table is never taken as a definite failure: for micropay and orderquery
it means "outcome unknown, query again", for reverse "call again" (while the answer's
recall=N still ends the reversing: the order's own state then decides).
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
    }
)

_UNLISTED: Mapping[Api, Disposition] = MappingProxyType(
    {Api.MICROPAY: _Q, Api.ORDERQUERY: _Q, Api.REVERSE: Disposition.RETRY}
)


def classify(api: Api, err_code: str) -> Disposition:
    """The disposition of err_code for api; unlisted codes are treated as unknown, never failed."""
    return ERROR_CODES[api].get(err_code, _UNLISTED[api])


def codes_with(api: Api, disposition: Disposition) -> frozenset[str]:
    """Every listed err_code of api with the given disposition."""
    return frozenset(code for code, d in ERROR_CODES[api].items() if d is disposition)
