"""The secret registry holds only live secrets: rotating ones replace, nothing grows for ever."""

from __future__ import annotations

import secrets
from pathlib import Path

from facepayd.clock import ManualClock
from facepayd.face.authinfo import AuthinfoCache, AuthinfoKey
from facepayd.ops import logs
from facepayd.ops.logs import REDACTED, redact_event
from facepayd.wxpay.models import AuthinfoGrant


def redacted(text: str) -> str:
    """What a log line carrying text shows."""
    return str(redact_event(None, "info", {"event": "e", "note": text})["note"])


def test_a_replaced_slot_masks_its_current_and_previous_value_only() -> None:
    slot = "test-slot-" + secrets.token_hex(4)
    values = [f"rotating-{i}-{secrets.token_hex(8)}" for i in range(4)]
    before = logs.secret_count()
    for value in values:
        logs.replace_secret(slot, value)
    assert logs.secret_count() == before + 2
    assert redacted(values[-1]) == REDACTED
    assert redacted(values[-2]) == REDACTED
    # Gone for good: no longer held, so no longer worth a regex alternative.
    assert redacted(values[0]) == values[0]
    logs.unregister_secret(values[-1])
    logs.unregister_secret(values[-2])
    assert logs.secret_count() == before
    assert redacted(values[-1]) == values[-1]


def test_held_for_life_secrets_are_bounded_and_unregister() -> None:
    value = "api-key-" + secrets.token_hex(8)
    logs.register_secret(value)
    assert redacted(f"key={value}") == f"key={REDACTED}"
    logs.unregister_secret(value)
    assert redacted(value) == value
    flood = [f"flood-{i}-{secrets.token_hex(6)}" for i in range(logs.MAX_SECRETS + 50)]
    for item in flood:
        logs.register_secret(item)
    assert logs.secret_count() <= 2 * logs.MAX_SECRETS
    assert redacted(flood[-1]) == REDACTED  # the newest is always held
    for item in flood:
        logs.unregister_secret(item)


def test_the_pattern_is_built_once_per_change_not_per_registration_or_line() -> None:
    logs.register_secret("once-" + secrets.token_hex(8))
    first = logs._SECRETS.pattern()
    assert logs._SECRETS.pattern() is first  # no change: the same compiled regex
    redacted("a line")
    assert logs._SECRETS.pattern() is first


async def test_a_year_of_authinfo_refreshes_keeps_two_authinfos_masked(tmp_path: Path) -> None:
    """Every 2 hours for a year: 4,380 fetches, and the registry does not grow with them."""
    clock = ManualClock()
    fetched: list[str] = []

    async def fetch() -> AuthinfoGrant:
        # A prefix no other test registers: the registry is process-wide.
        fetched.append("yearly-grant-" + secrets.token_hex(16))
        return AuthinfoGrant(fetched[-1], 7200)

    cache = AuthinfoCache(
        key=AuthinfoKey("D9", "wx", "1", "", "", "S9"),
        fetch=fetch,
        clock=clock,
        path=tmp_path / "authinfo.json",
        refresh_ahead=0.0,
    )
    before = logs.secret_count()
    for _ in range(4380):
        await cache.replace(await cache.get())
    assert len(fetched) > 4380
    assert logs.secret_count() == before + 2
    assert redacted(fetched[-1]) == REDACTED
    assert redacted(fetched[0]) == fetched[0]
