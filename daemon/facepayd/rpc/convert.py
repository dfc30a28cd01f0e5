"""Domain values to protobuf and back, shared by every area."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import timestamp_pb2

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd.face.lifecycle import State
from facepayd.payments.models import Coupon, Payment, PaymentEvent, PaymentSource, PaymentState

LIFECYCLE_STATE = {
    State.DISCONNECTED: pb.LIFECYCLE_STATE_DISCONNECTED,
    State.UNINITIALIZED: pb.LIFECYCLE_STATE_UNINITIALIZED,
    State.INITIALIZING: pb.LIFECYCLE_STATE_INITIALIZING,
    State.INIT_FAILED: pb.LIFECYCLE_STATE_INIT_FAILED,
    State.READY: pb.LIFECYCLE_STATE_READY,
    State.IN_SESSION: pb.LIFECYCLE_STATE_IN_SESSION,
    # The POS sees the session it knows about; the re-init inside it is the daemon's business.
    State.REINITIALIZING: pb.LIFECYCLE_STATE_IN_SESSION,
    State.RELEASING: pb.LIFECYCLE_STATE_RELEASING,
    State.FAULT: pb.LIFECYCLE_STATE_FAULT,
    State.STOPPING: pb.LIFECYCLE_STATE_STOPPING,
}
PAYMENT_STATE: dict[PaymentState, Any] = {
    state: pb.PaymentState.Value(f"PAYMENT_STATE_{state.name}") for state in PaymentState
}
PAYMENT_STATE_BACK = {value: state for state, value in PAYMENT_STATE.items()}
PAYMENT_SOURCE: dict[PaymentSource, Any] = {
    source: pb.PaymentSource.Value(f"PAYMENT_SOURCE_{source.name}") for source in PaymentSource
}
INT_TYPES = frozenset({3, 4, 5, 13, 17, 18})  # the protobuf int32/int64/uint* field types


def timestamp(unix: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(unix * 1e9))
    return ts


def unix(ts: timestamp_pb2.Timestamp) -> float:
    # Not ToDatetime().timestamp(): that naive datetime is read as local time (UTC+8 in China).
    return float(ts.ToNanoseconds()) / 1e9


def event_message(event: PaymentEvent) -> pb.PaymentEvent:
    message = pb.PaymentEvent(
        out_trade_no=event.out_trade_no,
        seq=event.seq,
        time=timestamp(event.time),
        state=PAYMENT_STATE[event.state],
    )
    kind = getattr(message, event.kind)
    for field in kind.DESCRIPTOR.fields:
        # Codes are never journaled; the names are excluded all the same.
        if field.name not in event.data or field.name in ("face_code", "auth_code"):
            continue
        value = event.data[field.name]
        if field.name == "coupons":
            kind.coupons.extend(_coupon(Coupon(**row)) for row in json.loads(str(value)))
        elif field.name == "source":
            setattr(kind, field.name, PAYMENT_SOURCE[PaymentSource(str(value))])
        elif field.type == field.TYPE_BOOL:
            setattr(kind, field.name, bool(value))
        elif field.type in INT_TYPES:
            setattr(kind, field.name, int(value))
        else:
            setattr(kind, field.name, str(value))
    kind.SetInParent()
    return message


def _coupon(coupon: Coupon) -> pb.Coupon:
    return pb.Coupon(
        coupon_id=coupon.coupon_id, coupon_type=coupon.coupon_type, coupon_fee=coupon.coupon_fee
    )


def payment_message(payment: Payment) -> pb.Payment:
    paid = payment.paid
    return pb.Payment(
        out_trade_no=payment.out_trade_no,
        state=PAYMENT_STATE[payment.state],
        total_fee=payment.total_fee,
        body=payment.body,
        attach=payment.attach,
        transaction_id=payment.transaction_id,
        openid=payment.openid,
        bank_type=payment.bank_type,
        cash_fee=payment.cash_fee,
        fee_type=payment.fee_type,
        time_end=payment.time_end,
        err_code=payment.err_code,
        err_code_des=payment.err_code_des,
        created_at=timestamp(payment.created_at),
        updated_at=timestamp(payment.updated_at),
        last_seq=payment.last_seq,
        final=payment.final,
        attention_reason=payment.attention_reason,
        attention_action=payment.attention_action,
        source=PAYMENT_SOURCE[payment.source],
        settlement_total_fee=paid.settlement_total_fee,
        coupon_fee=paid.coupon_fee,
        coupon_count=paid.coupon_count,
        coupons=[_coupon(c) for c in paid.coupons],
        cash_fee_type=paid.cash_fee_type,
        promotion_detail=paid.promotion_detail,
        is_subscribe=paid.is_subscribe,
        trade_type=paid.trade_type,
        sub_openid=paid.sub_openid,
        echoed_attach=paid.attach,
        trade_state_desc=paid.trade_state_desc,
        device_info=paid.device_info,
        trade_state=paid.trade_state,
        time_start=payment.order.time_start,
        time_expire=payment.order.time_expire,
    )
