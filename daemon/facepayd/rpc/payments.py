"""Payments: StartCodePay, WatchPayment, GetPayment, ListPayments, ReversePayment, order rules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd.payments.models import PaymentEvent, PaymentOrder
from facepayd.payments.progress import Progress, with_progress
from facepayd.rpc import validation as v
from facepayd.rpc.convert import (
    PAYMENT_STATE,
    PAYMENT_STATE_BACK,
    event_message,
    payment_message,
    timestamp,
    unix,
)
from facepayd.rpc.handlers import Area, Domain, stream, unary

_MAX_PAGE_SIZE = 200


class PaymentsArea(Area):
    """The journal's payments, and the barcode payments that start without a face."""

    @stream
    async def StartCodePay(
        self, request: pb.StartCodePayRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StartCodePayResponse]:
        """Pay a scanned payment code (or continue a scanned face sale); streams its events."""
        rules = v.Rules()
        order = payment_order(request, self._d.config.payments.max_amount, rules, self._d)
        # The rule is named, the value never: an auth code is a secret like a face code.
        rules.secret_pattern("auth_code", request.auth_code, v.AUTH_CODE, v.AUTH_CODE_RULE)
        rules.check()
        handle = await self._d.flows.start_code_pay(order, request.auth_code)
        with self._d.payments.progress.follow(handle.out_trade_no) as feed:
            async for step in with_progress(handle.steps(), feed):
                if isinstance(step, Progress):
                    yield pb.StartCodePayResponse(progress=progress_message(step))
                elif isinstance(step, PaymentEvent):
                    yield pb.StartCodePayResponse(event=event_message(step))

    @stream
    async def WatchPayment(
        self, request: pb.WatchPaymentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchPaymentResponse]:
        """Replay after after_seq, then follow to the final state, with live progress."""
        rules = v.Rules()
        v.existing_out_trade_no(rules, "out_trade_no", request.out_trade_no)
        v.after_seq(rules, request.after_seq)
        rules.check()
        payments = self._d.payments
        await payments.get(request.out_trade_no)
        with payments.progress.follow(request.out_trade_no) as feed:
            events = payments.watch(request.out_trade_no, request.after_seq)
            async for item in with_progress(events, feed):
                if isinstance(item, Progress):
                    yield pb.WatchPaymentResponse(progress=progress_message(item))
                else:
                    yield pb.WatchPaymentResponse(event=event_message(item))

    @unary
    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPaymentResponse:
        """One payment from the journal."""
        v.require_existing_out_trade_no(request.out_trade_no)
        payment = payment_message(await self._d.payments.get(request.out_trade_no))
        await self._refunded(payment)
        return pb.GetPaymentResponse(payment=payment)

    @unary
    async def ListPayments(
        self, request: pb.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPaymentsResponse:
        """Payments from the journal, newest first, paged."""
        rules = v.Rules()
        rules.int_range("page_size", request.page_size, 0, _MAX_PAGE_SIZE)
        rules.pattern(
            "page_token", request.page_token, v.PAGE_TOKEN, v.NEXT_PAGE_RULE, required=False
        )
        # A state named twice selects nothing more: more entries than states is a broken client.
        rules.at_most("states", request.states, len(PAYMENT_STATE_BACK))
        states = []
        for index, value in enumerate(request.states[: len(PAYMENT_STATE_BACK)]):
            if value not in PAYMENT_STATE_BACK:
                rules.fail(
                    f"states[{index}]", "must be a known PaymentState other than UNSPECIFIED"
                )
            else:
                states.append(PAYMENT_STATE_BACK[value])
        for name in ("created_after", "created_before"):
            if request.HasField(name):
                rules.timestamp(name, getattr(request, name))
        rules.check()
        payments, token = await self._d.payments.list(
            states=states,
            created_after=unix(request.created_after)
            if request.HasField("created_after")
            else None,
            created_before=unix(request.created_before)
            if request.HasField("created_before")
            else None,
            page_size=request.page_size or 50,
            page_token=request.page_token,
        )
        messages = [payment_message(p) for p in payments]
        for message in messages:
            await self._refunded(message)
        return pb.ListPaymentsResponse(payments=messages, next_page_token=token)

    @unary
    async def ReversePayment(
        self, request: pb.ReversePaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReversePaymentResponse:
        """Reverse a payment."""
        v.require_existing_out_trade_no(request.out_trade_no)
        return pb.ReversePaymentResponse(
            payment=payment_message(await self._d.payments.reverse(request.out_trade_no))
        )

    async def _refunded(self, payment: pb.Payment) -> None:
        """Fill refunded_fee from the payment's refunds."""
        if self._d.refunds is not None:
            payment.refunded_fee = await self._d.refunds.refunded_fee(payment.out_trade_no)


def progress_message(progress: Progress) -> pb.PaymentProgress:
    """A progress notice, for the POS (not journaled, no seq)."""
    message = pb.PaymentProgress(
        out_trade_no=progress.out_trade_no,
        state=PAYMENT_STATE[progress.state],
        activity=progress.activity.value,
        attempt=progress.attempt,
        since=timestamp(progress.since),
        reason=progress.reason,
    )
    if progress.next_at is not None:
        message.next_at.CopyFrom(timestamp(progress.next_at))
    return message


def payment_order(
    request: pb.StartFacePayRequest | pb.StartCodePayRequest,
    max_amount: int,
    rules: v.Rules,
    domain: Domain,
) -> PaymentOrder:
    """The order of a StartFacePay or StartCodePay, its violations recorded into rules."""
    v.new_out_trade_no(rules, "out_trade_no", request.out_trade_no)
    rules.int_range("total_fee", request.total_fee, 1, max_amount)
    rules.max_bytes("body", request.body, 128, required=True)
    rules.max_bytes("attach", request.attach, 127)
    rules.json_object("detail", request.detail, 6000)
    rules.pattern(
        "fee_type",
        request.fee_type,
        v.FEE_TYPE,
        "must be an ISO 4217 code like CNY",
        required=False,
    )
    rules.max_bytes("goods_tag", request.goods_tag, 32)
    rules.choice("limit_pay", request.limit_pay, ("no_credit",))
    v.order_times(rules, request.time_start, request.time_expire, domain.payments.now())
    rules.json_object("scene_info", request.scene_info, 256)
    rules.choice("receipt", request.receipt, ("Y",))
    return PaymentOrder(
        out_trade_no=request.out_trade_no,
        total_fee=request.total_fee,
        body=request.body,
        attach=request.attach,
        detail=request.detail,
        fee_type=request.fee_type,
        goods_tag=request.goods_tag,
        limit_pay=request.limit_pay,
        time_expire=request.time_expire,
        scene_info=request.scene_info,
        receipt=request.receipt,
        time_start=request.time_start,
    )
