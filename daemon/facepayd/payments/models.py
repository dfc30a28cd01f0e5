"""Domain models of face payments: the order, its journaled state and its events."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class PaymentState(enum.StrEnum):
    """Where a payment stands; mirrors facepay.terminal.v1.PaymentState."""

    CAPTURING = "CAPTURING"  # accepted, face capture not finished; nothing sent to WeChat Pay
    PAYING = "PAYING"  # face captured; micropay about to be (or being) sent
    PENDING = "PENDING"  # USERPAYING or outcome unknown: being queried
    REVERSING = "REVERSING"  # reverse journaled, being called until WeChat Pay confirms
    SUCCEEDED = "SUCCEEDED"  # final: paid (a manual reverse may still follow)
    FAILED = "FAILED"  # final: definitely not paid
    REVERSED = "REVERSED"  # final: reversed (refunded if it had been paid)
    CANCELLED = "CANCELLED"  # final: no face code; nothing was sent to WeChat Pay

    @property
    def final(self) -> bool:
        """Whether nothing more happens to the payment on its own."""
        return self in FINAL_STATES

    @classmethod
    def final_states(cls) -> frozenset[PaymentState]:
        """The final states."""
        return FINAL_STATES


FINAL_STATES: frozenset[PaymentState] = frozenset(
    {
        PaymentState.SUCCEEDED,
        PaymentState.FAILED,
        PaymentState.REVERSED,
        PaymentState.CANCELLED,
    }
)

_S = PaymentState
# Every state change the journal accepts; anything else is a bug and is refused.
TRANSITIONS: dict[PaymentState, frozenset[PaymentState]] = {
    _S.CAPTURING: frozenset({_S.PAYING, _S.CANCELLED}),
    # CANCELLED only while micropay was never attempted (pay_sent_at unset).
    _S.PAYING: frozenset({_S.PENDING, _S.SUCCEEDED, _S.FAILED, _S.REVERSING, _S.CANCELLED}),
    _S.PENDING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.REVERSING, _S.REVERSED}),
    # A reverse that WeChat Pay refuses for good is settled by a query: paid, closed or revoked.
    _S.REVERSING: frozenset({_S.REVERSED, _S.SUCCEEDED, _S.FAILED}),
    # A paid order can still be reversed on request.
    _S.SUCCEEDED: frozenset({_S.REVERSING}),
    _S.FAILED: frozenset(),
    _S.REVERSED: frozenset(),
    _S.CANCELLED: frozenset(),
}


class EventKind(enum.StrEnum):
    """What an event reports; the names of the PaymentEvent.kind oneof."""

    SESSION_STARTED = "session_started"
    FACE_CAPTURED = "face_captured"
    PENDING = "pending"  # also used on entering REVERSING, with the reason
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVERSED = "reversed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    """What a POS asked to be paid: the idempotency parameters of one out_trade_no."""

    out_trade_no: str
    total_fee: int
    body: str
    attach: str = ""
    detail: str = ""
    fee_type: str = ""
    goods_tag: str = ""
    limit_pay: str = ""
    time_expire: str = ""
    scene_info: str = ""
    receipt: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (for the journal)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Payment:
    """One order as the journal has it."""

    order: PaymentOrder
    state: PaymentState
    created_at: float
    updated_at: float
    last_seq: int
    transaction_id: str = ""
    openid: str = ""
    bank_type: str = ""
    cash_fee: int = 0
    fee_type: str = ""
    time_end: str = ""
    err_code: str = ""
    err_code_des: str = ""
    # Wall time micropay was first about to be sent; set means "never send micropay again".
    pay_sent_at: float | None = None

    @property
    def out_trade_no(self) -> str:
        """The merchant order number."""
        return self.order.out_trade_no

    @property
    def total_fee(self) -> int:
        """The amount asked, in fen."""
        return self.order.total_fee

    @property
    def body(self) -> str:
        """The goods description."""
        return self.order.body

    @property
    def attach(self) -> str:
        """The merchant's attach data."""
        return self.order.attach

    @property
    def final(self) -> bool:
        """Whether the payment is in a final state."""
        return self.state.final


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """One journaled step of a payment; seq counts from 1 without gaps."""

    out_trade_no: str
    seq: int
    time: float
    state: PaymentState
    kind: EventKind
    data: dict[str, str | int] = field(default_factory=dict)
