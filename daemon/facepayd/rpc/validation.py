"""Request field rules from the reference: types, lengths and charsets, checked before any work."""

from __future__ import annotations

import re

from facepayd.errors import InvalidArgument

# micropay's charset; "@" is orderquery's only, and every order here starts with micropay.
OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{1,32}")
OPENID = re.compile(r"[0-9A-Za-z_\-]{1,128}")
SESSION_ID = re.compile(r"fs_[0-9a-f]{16}")
FEE_TYPE = re.compile(r"[A-Z]{3}")
TIME14 = re.compile(r"\d{14}")
UNRESERVED = re.compile(r"[A-Za-z0-9_\-.~]{1,128}")


class Rules:
    """Collects every violation of one request, then raises them together."""

    def __init__(self) -> None:
        self._violations: list[tuple[str, str]] = []

    def fail(self, field: str, rule: str) -> None:
        """Record a violation."""
        self._violations.append((field, rule))

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
        """value's UTF-8 encoding must fit limit bytes."""
        if not value:
            if required:
                self.fail(field, "is required")
            return
        if len(value.encode("utf-8")) > limit:
            self.fail(field, f"must be at most {limit} bytes in UTF-8")
        if any(ord(ch) < 0x20 and ch not in "\t" for ch in value):
            self.fail(field, "must not contain control characters")

    def choice(self, field: str, value: str, allowed: tuple[str, ...]) -> None:
        """value must be empty or one of allowed."""
        if value and value not in allowed:
            self.fail(field, "must be one of " + ", ".join(allowed))

    def int_range(self, field: str, value: int, low: int, high: int) -> None:
        """low <= value <= high."""
        if not low <= value <= high:
            self.fail(field, f"must be between {low} and {high}")

    def check(self) -> None:
        """Raise every recorded violation as one InvalidArgument."""
        if self._violations:
            first, *rest = self._violations
            raise InvalidArgument(first[0], first[1], *rest)


def out_trade_no(rules: Rules, field: str, value: str, *, required: bool = True) -> None:
    """A merchant order number as micropay takes it: [0-9A-Za-z_-|*]{1,32}."""
    rules.pattern(field, value, OUT_TRADE_NO, "must match [0-9A-Za-z_-|*]{1,32}", required=required)


def require_out_trade_no(value: str) -> None:
    """Raise InvalidArgument unless out_trade_no is a valid merchant order number."""
    rules = Rules()
    out_trade_no(rules, "out_trade_no", value)
    rules.check()


def face_options(
    rules: Rules,
    prefix: str,
    openid: str,
    screen_index: str,
    overlay_option: str,
    face_authtype: str,
) -> None:
    """The face UI options of getWxpayfaceCode."""
    rules.pattern(
        f"{prefix}.openid", openid, OPENID, "must match [0-9A-Za-z_-]{1,128}", required=False
    )
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
