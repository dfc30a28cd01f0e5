"""Domain models of face payments: the order, its journaled state and its events."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class PaymentSource(enum.StrEnum):
    """Where a payment's code came from; mirrors facepay.terminal.v1.PaymentSource."""

    FACE = "FACE"  # a face code (StartFacePay)
    CODE = "CODE"  # a payment code the cashier scanned (StartCodePay)


# The cancel reason with which the customer chose to scan instead of showing a face.
SCAN_PAYMENT = "SCAN_PAYMENT"


class CodeStart(enum.StrEnum):
    """What StartCodePay's journal step did with its out_trade_no."""

    CREATED = "CREATED"  # a new code payment, PAYING
    CONTINUED = "CONTINUED"  # a face payment cancelled SCAN_PAYMENT, now PAYING with source CODE
    EXISTING = "EXISTING"  # the same code payment already exists: re-attach


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
    CLOSED = "CLOSED"  # final: micropay never reached WeChat Pay; nothing was charged
    # Not final: not settled within the bounded time; an operator acts (attention_reason and
    # attention_action say why and how), and the daemon still retries at a slow, capped cadence.
    NEEDS_ATTENTION = "NEEDS_ATTENTION"

    @property
    def final(self) -> bool:
        """Whether nothing more happens to the payment on its own."""
        return self in FINAL_STATES

    @property
    def settled(self) -> bool:
        """Final, or waiting for an operator: nothing more for a POS at the till to wait for."""
        return self in FINAL_STATES or self is PaymentState.NEEDS_ATTENTION

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
        PaymentState.CLOSED,
    }
)

_S = PaymentState
# Every state change the journal accepts (its append is the one place that checks); anything
# else is a bug: logged at error and refused.
TRANSITIONS: dict[PaymentState, frozenset[PaymentState]] = {
    _S.CAPTURING: frozenset({_S.PAYING, _S.CANCELLED}),
    # CANCELLED only while micropay was never attempted (pay_sent_at unset); REVERSING on a
    # manual reverse of a PAYING order whose micropay went out.
    _S.PAYING: frozenset({_S.PENDING, _S.SUCCEEDED, _S.FAILED, _S.REVERSING, _S.CANCELLED}),
    # REVERSED when a query finds it already reversed; NEEDS_ATTENTION when a number used by
    # another order cannot be checked in time (such an order is never reversed).
    _S.PENDING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.REVERSING, _S.REVERSED, _S.NEEDS_ATTENTION}),
    # A definite refusal is settled by a query (paid, failed, revoked, never seen = CLOSED),
    # else NEEDS_ATTENTION; so is a reverse still unconfirmed at the attention bound.
    _S.REVERSING: frozenset({_S.REVERSED, _S.SUCCEEDED, _S.FAILED, _S.CLOSED, _S.NEEDS_ATTENTION}),
    # Still retried slowly: any answer that settles it ends it; a new reason replaces the old
    # one (NEEDS_ATTENTION again); a manual reverse journals REVERSING first. SUCCEEDED also
    # settles a paid order too old to reverse (REVERSE_EXPIRE) once orderquery says REFUND:
    # the refund it waited for was made (through the daemon or the merchant platform).
    _S.NEEDS_ATTENTION: frozenset(
        {_S.NEEDS_ATTENTION, _S.SUCCEEDED, _S.FAILED, _S.REVERSED, _S.CLOSED, _S.REVERSING}
    ),
    # A paid order can still be reversed on request.
    _S.SUCCEEDED: frozenset({_S.REVERSING}),
    _S.FAILED: frozenset(),
    _S.REVERSED: frozenset(),
    # Only a face payment the customer cancelled to scan (CONDITIONS), continued by StartCodePay
    # as the same sale; its source becomes CODE.
    _S.CANCELLED: frozenset({_S.PAYING}),
    _S.CLOSED: frozenset(),
}

# Edges of TRANSITIONS taken only when the payment's newest event carries this reason.
# CANCELLED -> PAYING: SCAN_PAYMENT says nothing reached WeChat Pay, so the sale may go on.
CONDITIONS: dict[tuple[PaymentState, PaymentState], str] = {
    (_S.CANCELLED, _S.PAYING): SCAN_PAYMENT,
}


def transition_allowed(current: PaymentState, wanted: PaymentState, reason: str = "") -> bool:
    """Whether the table allows current -> wanted, a conditional edge only with its reason."""
    if wanted not in TRANSITIONS[current]:
        return False
    required = CONDITIONS.get((current, wanted))
    return required is None or reason == required


class EventKind(enum.StrEnum):
    """What an event reports; the names of the PaymentEvent.kind oneof."""

    SESSION_STARTED = "session_started"
    FACE_CAPTURED = "face_captured"
    PENDING = "pending"  # also used on entering REVERSING, with the reason
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVERSED = "reversed"
    CANCELLED = "cancelled"
    CLOSED = "closed"
    NEEDS_ATTENTION = "needs_attention"
    CODE_RECEIVED = "code_received"  # a scanned code arrived: PAYING (the code is never kept)


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
    time_start: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (for the journal)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Coupon:
    """One coupon of a paid answer (coupon_id_$n, coupon_type_$n, coupon_fee_$n)."""

    coupon_id: str = ""
    coupon_type: str = ""
    coupon_fee: int = 0


@dataclass(frozen=True, slots=True)
class PaidDetails:
    """The paid answer's fields beyond the amounts the machine checks, kept as WeChat sent them."""

    settlement_total_fee: int = 0
    coupon_fee: int = 0
    coupon_count: int = 0
    coupons: tuple[Coupon, ...] = ()
    cash_fee_type: str = ""
    promotion_detail: str = ""
    is_subscribe: str = ""
    trade_type: str = ""
    sub_openid: str = ""
    attach: str = ""  # as echoed
    trade_state_desc: str = ""
    device_info: str = ""  # as echoed
    trade_state: str = ""  # orderquery's (SUCCESS or REFUND); "" for a micropay answer


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
    # Set in NEEDS_ATTENTION only: why, and what an operator should do.
    attention_reason: str = ""
    attention_action: str = ""
    source: PaymentSource = PaymentSource.FACE
    paid: PaidDetails = PaidDetails()

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

    @property
    def settled(self) -> bool:
        """Whether the payment is final or waits for an operator."""
        return self.state.settled


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """One journaled step of a payment; seq counts from 1 without gaps."""

    out_trade_no: str
    seq: int
    time: float
    state: PaymentState
    kind: EventKind
    data: dict[str, str | int] = field(default_factory=dict)


def paid_to_json(paid: PaidDetails) -> str:
    """The paid answer's further fields as the journal keeps them (canonical JSON)."""
    return json.dumps(asdict(paid), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def paid_from_json(text: str) -> PaidDetails:
    """PaidDetails from the journal's JSON; unknown keys (a newer daemon's) are ignored."""
    stored: dict[str, Any] = json.loads(text or "{}")
    coupons = tuple(Coupon(**_known(Coupon, row)) for row in stored.pop("coupons", ()))
    return PaidDetails(coupons=coupons, **_known(PaidDetails, stored))


def _known(kind: type[Any], stored: dict[str, Any]) -> dict[str, Any]:
    """The keys of a stored row that kind's dataclass has (a newer daemon may add more)."""
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in stored.items() if k in names}
