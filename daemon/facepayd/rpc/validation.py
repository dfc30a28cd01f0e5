"""Request field rules from the reference: types, lengths and charsets, checked before any work."""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Sized

from google.protobuf import timestamp_pb2

from facepayd.errors import InvalidArgument

# micropay's charset; "@" is orderquery's only, and every order here starts with micropay.
OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{1,32}")
OPENID = re.compile(r"[0-9A-Za-z_\-]{1,128}")
SESSION_ID = re.compile(r"fs_[0-9a-f]{16}")
FEE_TYPE = re.compile(r"[A-Z]{3}")
TIME14 = re.compile(r"\d{14}")
UNRESERVED = re.compile(r"[A-Za-z0-9_\-.~]{1,128}")
# The journal's page tokens: base64url segments joined by "."; the journal checks their signature.
PAGE_TOKEN = re.compile(r"[A-Za-z0-9_\-.]{1,256}")
NEXT_PAGE_RULE = "must be a next_page_token from a previous ListPayments"

# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_NANOS = (0, 999_999_999)
# The status travels in trailing metadata (8 KiB by default): past this, violations are counted.
MAX_VIOLATIONS = 10


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

    def check(self) -> None:
        """Raise every recorded violation as one InvalidArgument."""
        if self._violations:
            first, *rest = self._violations
            if self._unlisted:
                rest.append(("request", f"and {self._unlisted} more violations"))
            raise InvalidArgument(first[0], first[1], *rest)

    def _text(self, field: str, value: str, *, required: bool) -> bool:
        """Presence and control characters of free text; True when there is text to measure."""
        if not value:
            if required:
                self.fail(field, "is required")
            return False
        # Cc: C0, DEL and C1. None belongs in a receipt, a toast or a signed WeChat Pay request.
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            self.fail(field, "must not contain control characters")
        return True


def out_trade_no(rules: Rules, field: str, value: str, *, required: bool = True) -> None:
    """A merchant order number as micropay takes it: [0-9A-Za-z_-|*]{1,32}."""
    rules.pattern(field, value, OUT_TRADE_NO, "must match [0-9A-Za-z_-|*]{1,32}", required=required)


def require_out_trade_no(value: str) -> None:
    """Raise InvalidArgument unless out_trade_no is a valid merchant order number."""
    rules = Rules()
    out_trade_no(rules, "out_trade_no", value)
    rules.check()


def openid(rules: Rules, field: str, value: str) -> None:
    """An openid, optional."""
    rules.pattern(field, value, OPENID, "must match [0-9A-Za-z_-]{1,128}", required=False)


def face_options(
    rules: Rules,
    prefix: str,
    openid_value: str,
    screen_index: str,
    overlay_option: str,
    face_authtype: str,
) -> None:
    """The face UI options of getWxpayfaceCode."""
    openid(rules, f"{prefix}.openid", openid_value)
    rules.choice(f"{prefix}.screen_index", screen_index, ("0", "1", "2", "3", "4"))
    rules.choice(f"{prefix}.overlay_option", overlay_option, ("0", "1"))
    rules.choice(
        f"{prefix}.face_authtype", face_authtype, ("FACEPAY", "FACEPAY_DELAY", "FACE_AUTH")
    )


def session_id(rules: Rules, field: str, value: str, *, required: bool) -> None:
    """A session id as the daemon issues them."""
    rules.pattern(
        field, value, SESSION_ID, "must be a session id like fs_0123456789abcdef", required=required
    )
