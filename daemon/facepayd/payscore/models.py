"""PayScore's domain records: a service order as the journal keeps it, and its events."""

from __future__ import annotations

import dataclasses
from typing import Any


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


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceOrderEvent:
    """One step of a service order (append-only)."""

    out_order_no: str
    seq: int
    time: float
    journal_state: str
    kind: str
    data: dict[str, Any]
