"""Refunds: RefundPayment, WatchRefund, GetRefund, ListRefunds, and the refund request's rules."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd.errors import ConfigError
from facepayd.payments.refund_models import (
    MAX_REFUNDS_PER_PAYMENT,
    Refund,
    RefundEvent,
    RefundRequest,
    RefundState,
)
from facepayd.payments.refunds import RefundService
from facepayd.rpc import validation as v
from facepayd.rpc.convert import INT_TYPES, timestamp
from facepayd.rpc.handlers import Area, stream, unary

# refund's charset for out_refund_no (wider than micropay's out_trade_no: "@" is allowed).
OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_OUT_REFUND_NO_RULE = "must match [0-9A-Za-z_-|*@]{1,64}"
REFUND_ACCOUNTS = ("REFUND_SOURCE_UNSETTLED_FUNDS", "REFUND_SOURCE_RECHARGE_FUNDS")

REFUND_STATE: dict[RefundState, Any] = {
    state: pb.RefundState.Value(f"REFUND_STATE_{state.name}") for state in RefundState
}


class RefundsArea(Area):
    """The journal's refunds."""

    @stream
    async def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RefundPaymentResponse]:
        """Record a refund, start it, and stream its events from seq 1 to its end."""
        refund_request = refund_request_of(request, self._d.config.payments.max_amount)
        refunds = self._refunds()
        refund = await refunds.refund(refund_request, retry_failed=request.retry_failed)
        async for event in refunds.watch(refund.out_refund_no):
            yield pb.RefundPaymentResponse(event=refund_event_message(event))

    @stream
    async def WatchRefund(
        self, request: pb.WatchRefundRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchRefundResponse]:
        """Replay after after_seq, then follow to the end."""
        rules = v.Rules()
        out_refund_no(rules, "out_refund_no", request.out_refund_no)
        v.after_seq(rules, request.after_seq)
        rules.check()
        refunds = self._refunds()
        await refunds.get(request.out_refund_no)
        async for event in refunds.watch(request.out_refund_no, request.after_seq):
            yield pb.WatchRefundResponse(event=refund_event_message(event))

    @unary
    async def GetRefund(
        self, request: pb.GetRefundRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRefundResponse:
        """One refund from the journal."""
        rules = v.Rules()
        out_refund_no(rules, "out_refund_no", request.out_refund_no)
        rules.check()
        refund = await self._refunds().get(request.out_refund_no)
        return pb.GetRefundResponse(refund=refund_message(refund))

    @unary
    async def ListRefunds(
        self, request: pb.ListRefundsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRefundsResponse:
        """A payment's refunds, oldest first, paged."""
        rules = v.Rules()
        v.existing_out_trade_no(rules, "out_trade_no", request.out_trade_no)
        rules.int_range("page_size", request.page_size, 0, MAX_REFUNDS_PER_PAYMENT)
        out_refund_no(rules, "page_token", request.page_token, required=False)
        rules.check()
        await self._d.payments.get(request.out_trade_no)
        refunds, token = await self._refunds().for_payment(
            request.out_trade_no, request.page_size or MAX_REFUNDS_PER_PAYMENT, request.page_token
        )
        return pb.ListRefundsResponse(
            refunds=[refund_message(r) for r in refunds], next_page_token=token
        )

    def _refunds(self) -> RefundService:
        if self._d.refunds is None:
            raise ConfigError("refunds are not set up in this daemon")
        return self._d.refunds


def out_refund_no(rules: v.Rules, field: str, value: str, *, required: bool = True) -> None:
    """A merchant refund number as refund takes it: [0-9A-Za-z_-|*@]{1,64}."""
    rules.pattern(field, value, OUT_REFUND_NO, _OUT_REFUND_NO_RULE, required=required)


def refund_request_of(request: pb.RefundPaymentRequest, max_amount: int) -> RefundRequest:
    """The refund a RefundPayment asks for; InvalidArgument listing every broken rule."""
    rules = v.Rules()
    v.existing_out_trade_no(rules, "out_trade_no", request.out_trade_no)
    out_refund_no(rules, "out_refund_no", request.out_refund_no)
    # The upper bound that matters, what is left of the payment, is the journal's to check.
    rules.int_range("refund_fee", request.refund_fee, 1, max_amount)
    rules.max_bytes("refund_desc", request.refund_desc, 80)
    rules.choice("refund_account", request.refund_account, REFUND_ACCOUNTS)
    rules.check()
    return RefundRequest(
        out_refund_no=request.out_refund_no,
        out_trade_no=request.out_trade_no,
        refund_fee=request.refund_fee,
        refund_desc=request.refund_desc,
        refund_account=request.refund_account,
    )


def refund_message(refund: Refund) -> pb.Refund:
    """A journaled refund as the API shows it."""
    return pb.Refund(
        out_refund_no=refund.out_refund_no,
        out_trade_no=refund.out_trade_no,
        transaction_id=refund.transaction_id,
        refund_id=refund.refund_id,
        state=REFUND_STATE[refund.state],
        refund_fee=refund.refund_fee,
        total_fee=refund.total_fee,
        refund_desc=refund.request.refund_desc,
        refund_account=refund.request.refund_account,
        settlement_refund_fee=refund.settlement_refund_fee,
        cash_refund_fee=refund.cash_refund_fee,
        coupon_refund_fee=refund.coupon_refund_fee,
        refund_channel=refund.refund_channel,
        success_time=refund.success_time,
        recv_account=refund.recv_account,
        err_code=refund.err_code,
        err_code_des=refund.err_code_des,
        attention_reason=refund.attention_reason,
        attention_action=refund.attention_action,
        created_at=timestamp(refund.created_at),
        updated_at=timestamp(refund.updated_at),
        last_seq=refund.last_seq,
        final=refund.final,
        attempts=refund.attempts,
    )


def refund_event_message(event: RefundEvent) -> pb.RefundEvent:
    """A journaled refund event; its data fills the kind's fields of the same names."""
    message = pb.RefundEvent(
        out_refund_no=event.out_refund_no,
        out_trade_no=event.out_trade_no,
        seq=event.seq,
        time=timestamp(event.time),
        state=REFUND_STATE[event.state],
    )
    kind = getattr(message, event.kind)
    for field in kind.DESCRIPTOR.fields:
        if field.name in event.data:
            value = event.data[field.name]
            setattr(kind, field.name, int(value) if field.type in INT_TYPES else str(value))
    kind.SetInParent()
    return message
