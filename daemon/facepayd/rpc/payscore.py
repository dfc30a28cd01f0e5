"""PayScore: the status check by face, service orders and UnionID."""

from __future__ import annotations

import re
from typing import Any

import grpc

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd import errors
from facepayd.payscore.service import (
    NOT_CONFIGURED,
    PayScoreOutcome,
    PayScoreService,
    ServiceOrderView,
)
from facepayd.rpc import validation as v
from facepayd.rpc.face import face_options
from facepayd.rpc.handlers import Area, unary
from facepayd.wxpay import payscore_models as psm


class PayScoreArea(Area):
    """PayScore over the domain's PayScore service."""

    @unary
    async def CheckPayScoreStatus(
        self, request: pb.CheckPayScoreStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckPayScoreStatusResponse:
        """Recognise the user by face and check PayScore and authorization."""
        rules = v.Rules()
        _out_order_no(rules, "out_trade_no", request.out_trade_no)
        rules.pattern(
            "payscore_out_request_no",
            request.payscore_out_request_no,
            _OUT_REQUEST_NO,
            "must match [0-9A-Za-z_-|*]{1,64}",
            required=False,
        )
        rules.max_chars("payscore_service_id", request.payscore_service_id, 32)
        options = face_options(request.face, "face", rules)
        rules.check()
        payscore = self._payscore()
        status = await self._d.flows.check_payscore_status(
            options,
            out_trade_no=request.out_trade_no,
            out_request_no=request.payscore_out_request_no,
            service_id=request.payscore_service_id or payscore.service_id,
        )
        return pb.CheckPayScoreStatusResponse(
            outcome=_PAYSCORE_OUTCOME[status.outcome],
            openid=status.openid,
            sub_openid=status.sub_openid,
            face_sid=status.face_sid,
            return_msg=status.return_msg,
            err_code=status.err_code,
        )

    @unary
    async def CreateServiceOrder(
        self, request: pb.CreateServiceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateServiceOrderResponse:
        """Create a service order (journaled before it is sent)."""
        rules = v.Rules()
        _out_order_no(rules, "out_order_no", request.out_order_no)
        rules.max_chars("service_id", request.service_id, 32)
        rules.max_chars(
            "service_introduction",
            request.service_introduction,
            psm.MAX_SERVICE_INTRODUCTION,
            required=True,
        )
        _items(rules, request.post_payments, request.post_discounts)
        if not request.HasField("risk_fund"):
            rules.fail("risk_fund", "is required")
        else:
            names = tuple(sorted(psm.RISK_FUND_NAMES))
            rules.choice("risk_fund.name", request.risk_fund.name, names)
            if not request.risk_fund.name:
                rules.fail("risk_fund.name", "is required")
            rules.int_range("risk_fund.amount", request.risk_fund.amount, 0, _MAX_FEN)
            rules.max_chars("risk_fund.description", request.risk_fund.description, 30)
        _time_range(rules, "time_range", request.time_range, start_required=True)
        _location(rules, "location", request.location)
        rules.max_chars("attach", request.attach, psm.MAX_ATTACH)
        if len(psm.attach_on_wire(request.attach)) > psm.MAX_ATTACH:
            # The reference's 256 counts the url-encoded form the daemon sends.
            rules.fail("attach", f"must be at most {psm.MAX_ATTACH} characters once url-encoded")
        rules.max_chars("notify_url", request.notify_url, psm.MAX_NOTIFY_URL)
        rules.pattern(
            "notify_url",
            request.notify_url,
            _NOTIFY_URL,
            "must be an https:// URL of printable ASCII",
            required=False,
        )
        v.openid(rules, "openid", request.openid)
        rules.check()
        order = psm.NewServiceOrder(
            out_order_no=request.out_order_no,
            service_id=request.service_id,
            service_introduction=request.service_introduction,
            post_payments=_payments_in(request.post_payments),
            post_discounts=_discounts_in(request.post_discounts),
            time_range=_time_range_in(request.time_range),
            location=_location_in(request.location) if request.HasField("location") else None,
            risk_fund=psm.RiskFund(
                name=request.risk_fund.name,
                amount=request.risk_fund.amount,
                description=request.risk_fund.description,
            ),
            attach=request.attach,
            notify_url=request.notify_url,
            openid=request.openid,
            need_user_confirm=request.need_user_confirm,
        )
        view = await self._payscore().create(order)
        return pb.CreateServiceOrderResponse(order=_service_order(view))

    @unary
    async def CompleteServiceOrder(
        self, request: pb.CompleteServiceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteServiceOrderResponse:
        """Complete a service order; its amounts are checked before anything is sent."""
        rules = v.Rules()
        _out_order_no(rules, "out_order_no", request.out_order_no)
        if not request.post_payments:
            rules.fail("post_payments", "at least one item is required to complete")
        _items(rules, request.post_payments, request.post_discounts)
        rules.int_range("total_amount", request.total_amount, 0, _MAX_FEN)
        if request.HasField("time_range"):
            _time_range(rules, "time_range", request.time_range, start_required=False)
        _location(rules, "location", request.location)
        rules.max_chars("goods_tag", request.goods_tag, 32)
        rules.check()
        completion = psm.ServiceOrderCompletion(
            post_payments=_payments_in(request.post_payments),
            post_discounts=_discounts_in(request.post_discounts),
            total_amount=request.total_amount,
            time_range=_time_range_in(request.time_range)
            if request.HasField("time_range")
            else None,
            location=_location_in(request.location) if request.HasField("location") else None,
            profit_sharing=request.profit_sharing,
            goods_tag=request.goods_tag,
        )
        view = await self._payscore().complete(request.out_order_no, completion)
        return pb.CompleteServiceOrderResponse(order=_service_order(view))

    @unary
    async def SyncServiceOrder(
        self, request: pb.SyncServiceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.SyncServiceOrderResponse:
        """Report a service order paid through another channel."""
        rules = v.Rules()
        _out_order_no(rules, "out_order_no", request.out_order_no)
        rules.choice("type", request.type, (psm.SYNC_ORDER_PAID,))
        rules.time14("paid_time", request.paid_time, required=True)
        rules.check()
        view = await self._payscore().sync(
            request.out_order_no, request.paid_time, request.type or psm.SYNC_ORDER_PAID
        )
        return pb.SyncServiceOrderResponse(order=_service_order(view))

    @unary
    async def GetServiceOrder(
        self, request: pb.GetServiceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServiceOrderResponse:
        """One service order as WeChat Pay answers now, with the journal's state."""
        rules = v.Rules()
        _out_order_no(rules, "out_order_no", request.out_order_no)
        rules.check()
        view = await self._payscore().get(request.out_order_no)
        return pb.GetServiceOrderResponse(order=_service_order(view))

    @unary
    async def CancelServiceOrder(
        self, request: pb.CancelServiceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelServiceOrderResponse:
        """Cancel a service order that has not been completed."""
        rules = v.Rules()
        _out_order_no(rules, "out_order_no", request.out_order_no)
        rules.max_chars("reason", request.reason, psm.MAX_CANCEL_REASON, required=True)
        rules.check()
        view = await self._payscore().cancel(request.out_order_no, request.reason)
        return pb.CancelServiceOrderResponse(order=_service_order(view))

    @unary
    async def GetUnionId(
        self, request: pb.GetUnionIdRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUnionIdResponse:
        """The user's UnionID from a face_sid."""
        rules = v.Rules()
        rules.pattern(
            "face_sid",
            request.face_sid,
            _FACE_SID,
            "must match [A-Za-z0-9_.~-]{1,256} (it is a URL path segment)",
            required=True,
        )
        rules.check()
        result = await self._payscore().unionid(request.face_sid)
        return pb.GetUnionIdResponse(unionid=result.unionid, openid=result.openid)

    # ------------------------------------------------------------------ helpers

    def _payscore(self) -> PayScoreService:
        if self._d.payscore is None:
            raise errors.ConfigError(NOT_CONFIGURED)
        return self._d.payscore


# ---------------------------------------------------------------------- PayScore converters

_OUT_REQUEST_NO = re.compile(r"[0-9A-Za-z_\-|*]{1,64}")
_FACE_SID = re.compile(r"[A-Za-z0-9_.~\-]{1,256}")
_NOTIFY_URL = re.compile(r"https://[\x21-\x7e]+")
_MAX_FEN = 10**12
_PAYSCORE_OUTCOME: dict[PayScoreOutcome, Any] = {
    outcome: pb.PayScoreOutcome.Value(f"PAY_SCORE_OUTCOME_{outcome.name}")
    for outcome in PayScoreOutcome
}
_SERVICE_ORDER_STATE: dict[psm.ServiceOrderState, Any] = {
    state: pb.ServiceOrderState.Value(f"SERVICE_ORDER_STATE_{state.name}")
    for state in psm.ServiceOrderState
}


def _out_order_no(rules: v.Rules, field: str, value: str) -> None:
    rules.pattern(
        field,
        value,
        psm.OUT_ORDER_NO,
        "must match [0-9A-Za-z_-|*]{1,32}",
        required=True,
    )


def _items(rules: v.Rules, payments: Any, discounts: Any) -> None:
    rules.at_most("post_payments", payments, psm.MAX_POST_PAYMENTS)
    rules.at_most("post_discounts", discounts, psm.MAX_POST_DISCOUNTS)
    for prefix, items, limit in (
        ("post_payments", payments, psm.MAX_POST_PAYMENTS),
        ("post_discounts", discounts, psm.MAX_POST_DISCOUNTS),
    ):
        # Past the limit the request is refused anyway: do not list a violation per item.
        for i, item in enumerate(items[:limit]):
            rules.max_chars(f"{prefix}[{i}].name", item.name, 20, required=True)
            rules.max_chars(f"{prefix}[{i}].description", item.description, 30)
            rules.int_range(f"{prefix}[{i}].amount", item.amount, 0, _MAX_FEN)
            rules.int_range(f"{prefix}[{i}].count", item.count, 0, 1_000_000)


def _time_range(rules: v.Rules, prefix: str, t: pb.TimeRange, *, start_required: bool) -> None:
    rules.time14(f"{prefix}.start_time", t.start_time, required=start_required, also=("OnAccept",))
    rules.time14(f"{prefix}.end_time", t.end_time, required=False)
    rules.max_chars(f"{prefix}.start_time_remark", t.start_time_remark, 20)
    rules.max_chars(f"{prefix}.end_time_remark", t.end_time_remark, 20)


def _location(rules: v.Rules, prefix: str, loc: pb.Location) -> None:
    rules.max_chars(f"{prefix}.start_location", loc.start_location, 50)
    rules.max_chars(f"{prefix}.end_location", loc.end_location, 50)


def _payments_in(items: Any) -> tuple[psm.PostPayment, ...]:
    # Proto3 has no absent integers: 0 means "not given" (the reference makes both optional).
    return tuple(
        psm.PostPayment(
            name=p.name, amount=p.amount or None, description=p.description, count=p.count or None
        )
        for p in items
    )


def _discounts_in(items: Any) -> tuple[psm.PostDiscount, ...]:
    return tuple(
        psm.PostDiscount(
            name=d.name, description=d.description, amount=d.amount or None, count=d.count or None
        )
        for d in items
    )


def _time_range_in(t: pb.TimeRange) -> psm.TimeRange:
    return psm.TimeRange(
        start_time=t.start_time,
        start_time_remark=t.start_time_remark,
        end_time=t.end_time,
        end_time_remark=t.end_time_remark,
    )


def _location_in(loc: pb.Location) -> psm.Location:
    return psm.Location(start_location=loc.start_location, end_location=loc.end_location)


def _service_order(view: ServiceOrderView) -> pb.ServiceOrder:
    message = pb.ServiceOrder(
        out_order_no=view.out_order_no, journal_state=view.journal_state.value
    )
    order = view.order
    if order is None:
        return message
    message.service_id = order.service_id
    message.order_id = order.order_id
    message.state = _SERVICE_ORDER_STATE[order.state]
    message.state_description = order.state_description
    message.service_introduction = order.service_introduction
    message.post_payments.extend(
        pb.PostPayment(
            name=p.name, amount=p.amount or 0, description=p.description, count=p.count or 0
        )
        for p in order.post_payments
    )
    message.post_discounts.extend(
        pb.PostDiscount(
            name=d.name, description=d.description, amount=d.amount or 0, count=d.count or 0
        )
        for d in order.post_discounts
    )
    if order.risk_fund is not None:
        message.risk_fund.CopyFrom(
            pb.RiskFund(
                name=order.risk_fund.name,
                amount=order.risk_fund.amount,
                description=order.risk_fund.description,
            )
        )
    if order.time_range is not None:
        message.time_range.CopyFrom(
            pb.TimeRange(
                start_time=order.time_range.start_time,
                start_time_remark=order.time_range.start_time_remark,
                end_time=order.time_range.end_time,
                end_time_remark=order.time_range.end_time_remark,
            )
        )
    if order.location is not None:
        message.location.CopyFrom(
            pb.Location(
                start_location=order.location.start_location,
                end_location=order.location.end_location,
            )
        )
    message.total_amount = order.total_amount or 0
    message.attach = order.attach
    message.openid = order.openid
    message.need_collection = order.need_collection
    message.package = order.package
    message.notify_url = order.notify_url
    message.appid = order.appid
    message.mchid = order.mchid
    if order.collection is not None:
        c = order.collection
        message.collection.CopyFrom(
            pb.ServiceOrderCollection(
                state=c.state,
                total_amount=c.total_amount,
                paying_amount=c.paying_amount,
                paid_amount=c.paid_amount,
                details=[
                    pb.ServiceOrderPayment(
                        amount=d.amount,
                        paid_type=d.paid_type,
                        paid_time=d.paid_time,
                        transaction_id=d.transaction_id,
                    )
                    for d in c.details
                ],
            )
        )
    return message
