"""Request field rules from the reference: types, lengths and charsets, checked before any work."""

from __future__ import annotations

import datetime
import json
import re
import unicodedata
from collections.abc import Sized

from google.protobuf import timestamp_pb2

from facepayd.errors import InvalidArgument
from facepayd.wxpay.charset import NOT_XML, NOT_XML_RULE

# A new order goes to micropay, whose charset has no "@"; an existing order is looked up with
# orderquery's, which has it: an older release journaled "@" numbers that must stay reachable.
NEW_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{1,32}")
NEW_OUT_TRADE_NO_RULE = "must match [0-9A-Za-z_-|*]{1,32}"
EXISTING_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,32}")
EXISTING_OUT_TRADE_NO_RULE = "must match [0-9A-Za-z_-|*@]{1,32}"
OPENID = re.compile(r"[0-9A-Za-z_\-]{1,128}")
SESSION_ID = re.compile(r"fs_[0-9a-f]{16}")
FEE_TYPE = re.compile(r"[A-Z]{3}")
TIME14 = re.compile(r"\d{14}")
# WeChat's payment-code rule: 18 digits starting 10-15.
AUTH_CODE = re.compile(r"1[0-5][0-9]{16}")
AUTH_CODE_RULE = "must be 18 digits starting with 10, 11, 12, 13, 14 or 15"
TELEPHONE = re.compile(r"[0-9]{1,20}")
# WeChat Pay's times are Beijing time.
_BEIJING = datetime.timezone(datetime.timedelta(hours=8))
# micropay's time_expire: "最短失效时间间隔需大于1分钟".
MIN_EXPIRE_SECONDS = 60
UNRESERVED = re.compile(r"[A-Za-z0-9_\-.~]{1,128}")
# The journal's page tokens: base64url segments joined by "."; the journal checks their signature.
PAGE_TOKEN = re.compile(r"[A-Za-z0-9_\-.]{1,256}")
NEXT_PAGE_RULE = "must be a next_page_token from a previous ListPayments"

# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_NANOS = (0, 999_999_999)
# The status travels in trailing metadata (8 KiB by default): past this, violations are counted.
MAX_VIOLATIONS = 10


def _no_json_constant(name: str) -> None:
    """Refuse json's NaN, Infinity and -Infinity: JSON (RFC 8259) has no such values."""
    raise ValueError(f"{name} is not JSON")


class Rules:
    """Collects every violation of one request, then raises them together."""

    def __init__(self) -> None:
        self._violations: list[tuple[str, str]] = []
        self._unlisted = 0

    def fail(self, field: str, rule: str) -> None:
        """Record a violation (the first MAX_VIOLATIONS are listed, the rest counted)."""
        if len(self._violations) < MAX_VIOLATIONS:
            self._violations.append((field, rule))
        else:
            self._unlisted += 1

    def pattern(
        self, field: str, value: str, regex: re.Pattern[str], rule: str, *, required: bool
    ) -> None:
        """value must match regex whole; empty passes unless required."""
        if not value:
            if required:
                self.fail(field, "is required")
            return
        if not regex.fullmatch(value):
            self.fail(field, rule)

    def max_bytes(self, field: str, value: str, limit: int, *, required: bool = False) -> None:
        """Free text whose UTF-8 encoding must fit limit bytes (the v2 API's String(n))."""
        if self._text(field, value, required=required) and len(value.encode("utf-8")) > limit:
            self.fail(field, f"must be at most {limit} bytes in UTF-8")

    def max_chars(self, field: str, value: str, limit: int, *, required: bool = False) -> None:
        """Free text of at most limit characters (the v3 API's string[1,n])."""
        if self._text(field, value, required=required) and len(value) > limit:
            self.fail(field, f"must be at most {limit} characters")

    def choice(self, field: str, value: str, allowed: tuple[str, ...]) -> None:
        """value must be empty or one of allowed."""
        if value and value not in allowed:
            self.fail(field, "must be one of " + ", ".join(allowed))

    def enum(self, field: str, value: int, allowed: tuple[int, ...], names: str) -> None:
        """An enum field must hold one of the allowed known values (never UNSPECIFIED)."""
        if value not in allowed:
            self.fail(field, f"must be {names}")

    def int_range(self, field: str, value: int, low: int, high: int) -> None:
        """low <= value <= high."""
        if not low <= value <= high:
            self.fail(field, f"must be between {low} and {high}")

    def at_most(self, field: str, items: Sized, limit: int) -> None:
        """A repeated field holds at most limit items."""
        if len(items) > limit:
            self.fail(field, f"must have at most {limit} items")

    def timestamp(self, field: str, value: timestamp_pb2.Timestamp) -> None:
        """A Timestamp inside its documented range (ToNanoseconds refuses the rest)."""
        low, high = _TIMESTAMP_SECONDS
        if not low <= value.seconds <= high or not _NANOS[0] <= value.nanos <= _NANOS[1]:
            self.fail(field, "must be a valid timestamp between years 1 and 9999")

    def time14(self, field: str, value: str, *, required: bool, also: tuple[str, ...] = ()) -> None:
        """A yyyyMMddHHmmss date and time that exists (or one of the literal words in also)."""
        if not value:
            if required:
                self.fail(field, "is required")
            return
        if value in also:
            return
        rule = "must be yyyyMMddHHmmss" + "".join(f" or {word}" for word in also)
        if not TIME14.fullmatch(value):
            self.fail(field, rule)
            return
        try:
            datetime.datetime.strptime(value, "%Y%m%d%H%M%S")
        except ValueError:
            self.fail(field, rule + " (a date and time that exists)")

    def json_object(self, field: str, value: str, limit: int) -> None:
        """Free text of at most limit bytes that is one JSON object (detail, scene_info)."""
        if not value:
            return
        self.max_bytes(field, value, limit)
        try:
            parsed = json.loads(value, parse_constant=_no_json_constant)
        except (ValueError, RecursionError):
            # RecursionError: nesting deeper than the parser's stack ('[' * 6000).
            parsed = None
        if not isinstance(parsed, dict):
            self.fail(field, "must be a JSON object")

    def secret_pattern(self, field: str, value: str, regex: re.Pattern[str], rule: str) -> None:
        """A required secret matching regex; the violation states the rule, never the value."""
        if not value:
            self.fail(field, "is required")
        elif not regex.fullmatch(value):
            self.fail(field, rule)

    def check(self) -> None:
        """Raise every recorded violation as one InvalidArgument."""
        if self._violations:
            first, *rest = self._violations
            if self._unlisted:
                rest.append(("request", f"and {self._unlisted} more violations"))
            raise InvalidArgument(first[0], first[1], *rest)

    def _text(self, field: str, value: str, *, required: bool) -> bool:
        """Presence and characters of free text; True when there is text to measure."""
        if not value:
            if required:
                self.fail(field, "is required")
            return False
        # Cc: C0, DEL and C1. None belongs in a receipt, a toast or a signed WeChat Pay request.
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            self.fail(field, "must not contain control characters")
        elif NOT_XML.search(value):
            # Free text may go into a v2 XML request (micropay, refund), where the builder
            # refuses it on every send: refused here, before anything is journaled.
            self.fail(field, NOT_XML_RULE)
        return True


def new_out_trade_no(rules: Rules, field: str, value: str, *, required: bool = True) -> None:
    """The number of a new order, as micropay takes it: [0-9A-Za-z_-|*]{1,32}."""
    rules.pattern(field, value, NEW_OUT_TRADE_NO, NEW_OUT_TRADE_NO_RULE, required=required)


def existing_out_trade_no(rules: Rules, field: str, value: str) -> None:
    """The number of an existing order, as orderquery takes it: [0-9A-Za-z_-|*@]{1,32}."""
    rules.pattern(field, value, EXISTING_OUT_TRADE_NO, EXISTING_OUT_TRADE_NO_RULE, required=True)


def after_seq(rules: Rules, value: int) -> None:
    """A watch's after_seq: event seqs are SQLite INTEGERs, so nothing above 2**63 - 1 names one."""
    rules.int_range("after_seq", value, 0, 2**63 - 1)


def require_existing_out_trade_no(value: str) -> None:
    """Raise InvalidArgument unless out_trade_no can name an existing order."""
    rules = Rules()
    existing_out_trade_no(rules, "out_trade_no", value)
    rules.check()


def openid(rules: Rules, field: str, value: str) -> None:
    """An openid, optional."""
    rules.pattern(field, value, OPENID, "must match [0-9A-Za-z_-]{1,128}", required=False)


FACE_AUTHTYPES = ("FACEPAY", "FACEPAY_DELAY", "FACE_AUTH")


def face_options(
    rules: Rules,
    prefix: str,
    openid_value: str,
    screen_index: str,
    overlay_option: str,
    face_authtype: str,
    *,
    authtypes: tuple[str, ...] = FACE_AUTHTYPES,
    authtype_rule: str = "",
) -> None:
    """The face UI options of getWxpayfaceCode (authtypes: the face_authtype values allowed)."""
    openid(rules, f"{prefix}.openid", openid_value)
    rules.choice(f"{prefix}.screen_index", screen_index, ("0", "1", "2", "3", "4"))
    rules.choice(f"{prefix}.overlay_option", overlay_option, ("0", "1"))
    if face_authtype and face_authtype not in authtypes:
        rules.fail(
            f"{prefix}.face_authtype", authtype_rule or "must be one of " + ", ".join(authtypes)
        )


def face_code_options(
    rules: Rules,
    prefix: str,
    telephone: str,
    ask_face_permit: str,
    ask_ret_page: str,
    ignore_update_pay_result: str,
) -> None:
    """getWxpayfaceCode's further options."""
    rules.pattern(
        f"{prefix}.telephone", telephone, TELEPHONE, "must be 1 to 20 digits", required=False
    )
    rules.choice(f"{prefix}.ask_face_permit", ask_face_permit, ("0", "1"))
    rules.choice(f"{prefix}.ask_ret_page", ask_ret_page, ("0", "1"))
    if ignore_update_pay_result == "1":
        # Below 2.13 the daemon learns that the face UI closed only from the pay result it
        # reports; with "1" the camera's end could not be seen. From 2.13 the key is ignored.
        rules.fail(
            f"{prefix}.ignore_update_pay_result",
            "must be 0 or empty: the daemon reports the pay result to keep the face UI's end"
            " observable (SDK below 2.13; ignored from 2.13)",
        )
    else:
        rules.choice(f"{prefix}.ignore_update_pay_result", ignore_update_pay_result, ("0",))


def beijing_unix(time14: str) -> float | None:
    """A valid yyyyMMddHHmmss in Beijing time as unix seconds, else None."""
    if not TIME14.fullmatch(time14):
        return None
    try:
        moment = datetime.datetime.strptime(time14, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return moment.replace(tzinfo=_BEIJING).timestamp()


def order_times(rules: Rules, time_start: str, time_expire: str, now: float) -> None:
    """time_start and time_expire as micropay takes them: expiry more than a minute away."""
    rules.time14("time_start", time_start, required=False)
    rules.time14("time_expire", time_expire, required=False)
    expire = beijing_unix(time_expire)
    if expire is None:
        return
    start = beijing_unix(time_start)
    # From the order's start when given, and from now in any case: an order that expires
    # within a minute of being sent cannot be paid.
    for base, name in ((start, "time_start"), (now, "now")):
        if base is not None and expire - base <= MIN_EXPIRE_SECONDS:
            rules.fail(
                "time_expire",
                f"must be more than {MIN_EXPIRE_SECONDS} seconds after {name} (Beijing time)",
            )
            return


def session_id(rules: Rules, field: str, value: str, *, required: bool) -> None:
    """A session id as the daemon issues them."""
    rules.pattern(
        field, value, SESSION_ID, "must be a session id like fs_0123456789abcdef", required=required
    )
