"""Domain models of refunds: the request, its journaled state, its events and the transition table.

A refund belongs to one paid payment (out_trade_no) and is keyed by its out_refund_no, the
idempotency key: WeChat Pay's v2 `secapi/pay/refund` takes the same number again after a failure
and refunds it at most once.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from facepayd.payments.models import PaymentState

# WeChat Pay: at most 50 refunds of one order.
MAX_REFUNDS_PER_PAYMENT = 50
# NEEDS_ATTENTION of a payment with this reason is paid and too old to reverse: a refund is the way.
REFUNDABLE_ATTENTION_REASONS = frozenset({"REVERSE_EXPIRE"})
# FAILED err_code: refundquery shows our out_refund_no on another order (another till of the
# same mch_id used the number): that refund is not ours, and ours can never be sent under it.
OUT_REFUND_NO_USED = "OUT_REFUND_NO_USED"
# FAILED err_code: the WeChat Pay client refused the request before sending it (a field it cannot
# carry, a missing certificate): nothing left the terminal.
NOT_SENT = "NOT_SENT"
# FAILED err_code: the payment stopped being refundable (reversed, say) before the request left.
PAYMENT_NOT_REFUNDABLE = "PAYMENT_NOT_REFUNDABLE"
# Payment states whose money can be refunded (NEEDS_ATTENTION only with a reason above).
REFUNDABLE_PAYMENT_STATES = frozenset({PaymentState.SUCCEEDED, PaymentState.NEEDS_ATTENTION})


class RefundState(enum.StrEnum):
    """Where a refund stands; mirrors facepay.terminal.v1.RefundState."""

    RECORDED = "RECORDED"  # journaled, never sent: sending it cannot refund twice
    SENDING = "SENDING"  # sent_at set: it may be at WeChat Pay; only a query tells, never a resend
    PROCESSING = "PROCESSING"  # WeChat Pay accepted it (or a query says PROCESSING): being queried
    SUCCEEDED = "SUCCEEDED"  # final: the money is back with the payer
    CLOSED = "CLOSED"  # final: REFUNDCLOSE, nothing was refunded
    # Final for the daemon: the money left the merchant but the payer's account is abnormal; an
    # operator settles it in the merchant platform (attention_action says how).
    CHANGE = "CHANGE"
    FAILED = "FAILED"  # final: a definite error, nothing refunded (a retry on request may follow)
    # Not final: not settled in the bounded time; still retried at a slow, capped cadence.
    NEEDS_ATTENTION = "NEEDS_ATTENTION"

    @property
    def final(self) -> bool:
        """Whether nothing more happens to the refund on its own."""
        return self in REFUND_FINAL_STATES

    @property
    def settled(self) -> bool:
        """Final, or waiting for an operator: nothing more for a POS to wait for."""
        return self in REFUND_FINAL_STATES or self is RefundState.NEEDS_ATTENTION

    @property
    def counts(self) -> bool:
        """Whether the refund's fee counts against what was paid (it is or may be refunded)."""
        return self not in (RefundState.FAILED, RefundState.CLOSED)


REFUND_FINAL_STATES: frozenset[RefundState] = frozenset(
    {RefundState.SUCCEEDED, RefundState.CLOSED, RefundState.CHANGE, RefundState.FAILED}
)

_R = RefundState
# Every state change the journal accepts (its append is the one place that checks); anything
# else is a bug: logged at error and refused.
REFUND_TRANSITIONS: dict[RefundState, frozenset[RefundState]] = {
    # FAILED without sending: the payment stopped being refundable before the request left.
    _R.RECORDED: frozenset({_R.SENDING, _R.FAILED}),
    # SENDING again: a resend, only once a query found no such refund and nothing of ours can
    # still arrive (same out_refund_no).
    _R.SENDING: frozenset(
        {
            _R.SENDING,
            _R.PROCESSING,
            _R.SUCCEEDED,
            _R.CLOSED,
            _R.CHANGE,
            _R.FAILED,
            _R.NEEDS_ATTENTION,
        }
    ),
    _R.PROCESSING: frozenset({_R.SUCCEEDED, _R.CLOSED, _R.CHANGE, _R.NEEDS_ATTENTION}),
    # A new reason replaces the old one; a resend journals SENDING first.
    _R.NEEDS_ATTENTION: frozenset(
        {
            _R.NEEDS_ATTENTION,
            _R.SENDING,
            _R.PROCESSING,
            _R.SUCCEEDED,
            _R.CLOSED,
            _R.CHANGE,
            _R.FAILED,
        }
    ),
    _R.SUCCEEDED: frozenset(),
    _R.CLOSED: frozenset(),
    _R.CHANGE: frozenset(),
    # Retried on the POS's request with the same out_refund_no, as WeChat Pay asks after a
    # failure: recorded again (the sum is checked again).
    _R.FAILED: frozenset({_R.RECORDED}),
}


class RefundEventKind(enum.StrEnum):
    """What a refund event reports; the names of the RefundEvent.kind oneof."""

    RECORDED = "recorded"
    SENDING = "sending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    CLOSED = "closed"
    CHANGE = "change"
    FAILED = "failed"
    NEEDS_ATTENTION = "needs_attention"


# The event kind each state is entered with.
KIND_OF_STATE: dict[RefundState, RefundEventKind] = {
    state: RefundEventKind(state.value.lower()) for state in RefundState
}


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """What a POS asked to be refunded: the idempotency parameters of one out_refund_no."""

    out_refund_no: str
    out_trade_no: str
    refund_fee: int
    refund_desc: str = ""
    # REFUND_SOURCE_UNSETTLED_FUNDS (default at WeChat Pay) or REFUND_SOURCE_RECHARGE_FUNDS.
    refund_account: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (for the journal)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Refund:
    """One refund as the journal has it."""

    request: RefundRequest
    state: RefundState
    total_fee: int  # the payment's amount, sent as total_fee
    created_at: float
    updated_at: float
    last_seq: int
    transaction_id: str = ""
    refund_id: str = ""
    settlement_refund_fee: int = 0
    cash_refund_fee: int = 0
    coupon_refund_fee: int = 0
    refund_channel: str = ""
    success_time: str = ""
    recv_account: str = ""
    err_code: str = ""
    err_code_des: str = ""
    attention_reason: str = ""
    attention_action: str = ""
    # Wall time of the first and the latest send; set means "only a query may follow".
    first_sent_at: float | None = None
    sent_at: float | None = None
    attempts: int = 0

    @property
    def out_refund_no(self) -> str:
        """The merchant refund number (the idempotency key)."""
        return self.request.out_refund_no

    @property
    def out_trade_no(self) -> str:
        """The refunded payment."""
        return self.request.out_trade_no

    @property
    def refund_fee(self) -> int:
        """The amount to refund, in fen."""
        return self.request.refund_fee

    @property
    def final(self) -> bool:
        """Whether the refund is in a final state."""
        return self.state.final

    @property
    def settled(self) -> bool:
        """Whether the refund is final or waits for an operator."""
        return self.state.settled


@dataclass(frozen=True, slots=True)
class RefundEvent:
    """One journaled step of a refund; seq counts from 1 without gaps, per refund."""

    out_refund_no: str
    out_trade_no: str
    seq: int
    time: float
    state: RefundState
    kind: RefundEventKind
    data: dict[str, str | int] = field(default_factory=dict)
