"""PayScore's domain records: a service order as the journal keeps it, and its events."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class JournalState(enum.StrEnum):
    """Where the journal has a service order."""

    CREATING = "CREATING"  # create journaled; it may have been sent, no answer recorded
    COMPLETING = "COMPLETING"  # complete may have been sent, no answer recorded
    SYNCING = "SYNCING"  # sync may have been sent, no answer recorded
    CANCELLING = "CANCELLING"  # cancel may have been sent, no answer recorded
    RECORDED = "RECORDED"  # WeChat Pay's latest answer is recorded; nothing in flight
    # Completed and answered DOING/MCH_COMPLETE: WeChat Pay is collecting the charge; the
    # order is queried in the background (capped backoff) until it settles (DONE, or synced).
    CHARGING = "CHARGING"
    NOT_CREATED = "NOT_CREATED"  # WeChat Pay refused the create or never received it


_J = JournalState
_ANSWERED = frozenset({_J.RECORDED, _J.CHARGING})
_CALLS = frozenset({_J.COMPLETING, _J.SYNCING, _J.CANCELLING})
# The allowed changes, checked in the store's one setter. A state may repeat (a new answer, an
# outcome still unknown). A call in flight ends answered (RECORDED, or CHARGING while WeChat Pay
# collects), refused (back to the state before it: a refused create is NOT_CREATED, a refused
# complete/sync/cancel of an order awaiting its charge is CHARGING again, so it stays watched)
# or, for a create, not found; a known order takes a new call.
JOURNAL_TRANSITIONS: dict[JournalState, frozenset[JournalState]] = {
    _J.CREATING: frozenset({_J.CREATING, _J.NOT_CREATED}) | _ANSWERED,
    _J.COMPLETING: frozenset({_J.COMPLETING}) | _ANSWERED,
    _J.SYNCING: frozenset({_J.SYNCING}) | _ANSWERED,
    _J.CANCELLING: frozenset({_J.CANCELLING}) | _ANSWERED,
    _J.RECORDED: _ANSWERED | _CALLS,
    _J.CHARGING: _ANSWERED | _CALLS,
    # Created again, or found at WeChat Pay after all (a create that arrived late).
    _J.NOT_CREATED: frozenset({_J.NOT_CREATED, _J.CREATING}) | _ANSWERED,
}
# Where a service order's journal life starts: a create about to be sent, or adopted from an
# answer of WeChat Pay's.
JOURNAL_INITIAL: frozenset[JournalState] = frozenset({_J.CREATING}) | _ANSWERED


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceOrderRecord:
    """A PayScore service order as journaled: its create parameters and latest answer."""

    out_order_no: str
    params: dict[str, Any]
    journal_state: str
    # The call whose answer is not recorded yet ("" when none).
    pending: str
    risk_fund_amount: int | None
    # WeChat Pay's latest verified answer, None until one arrived.
    answer: dict[str, Any] | None
    created_at: float
    updated_at: float
    last_seq: int
    # The latest wall time a request of the pending call may have left; None when not known.
    sent_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceOrderEvent:
    """One step of a service order (append-only)."""

    out_order_no: str
    seq: int
    time: float
    journal_state: str
    kind: str
    data: dict[str, Any]
