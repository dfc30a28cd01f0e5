"""What the PayScore domain needs from outside: the journal of its service orders and v3 calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from facepayd.payscore.models import ServiceOrderEvent, ServiceOrderRecord
from facepayd.wxpay import payscore_models as m
from facepayd.wxpay.v3 import CompletionLimits


class ServiceOrderJournal(Protocol):
    """Service orders, each call journaled before it is sent."""

    async def begin_service_order(
        self,
        out_order_no: str,
        params: Mapping[str, Any],
        risk_fund_amount: int,
        *,
        journal_state: str,
        data: Mapping[str, Any] | None = None,
    ) -> ServiceOrderRecord: ...

    async def adopt_service_order(
        self,
        out_order_no: str,
        answer: Mapping[str, Any],
        risk_fund_amount: int | None,
        *,
        journal_state: str,
    ) -> ServiceOrderRecord: ...

    async def mark_service_order(
        self,
        out_order_no: str,
        journal_state: str,
        kind: str,
        data: Mapping[str, Any] | None = None,
        *,
        pending: str = "",
        answer: Mapping[str, Any] | None = None,
        only_if_changed: bool = False,
        sent: bool = False,
    ) -> ServiceOrderRecord: ...

    async def find_service_order(self, out_order_no: str) -> ServiceOrderRecord | None: ...

    async def pending_service_orders(self) -> list[ServiceOrderRecord]: ...

    async def settled_service_orders_in(self, journal_state: str) -> list[ServiceOrderRecord]: ...

    async def service_order_events(self, out_order_no: str) -> list[ServiceOrderEvent]: ...


class PayScoreBackend(Protocol):
    """WeChat Pay v3's PayScore calls (PayScoreClient implements them)."""

    async def create_service_order(self, order: m.NewServiceOrder) -> m.ServiceOrderResult: ...

    async def complete_service_order(
        self,
        out_order_no: str,
        completion: m.ServiceOrderCompletion,
        *,
        limits: CompletionLimits | None = None,
    ) -> m.ServiceOrderResult: ...

    async def sync_service_order(
        self, out_order_no: str, sync_type: str, paid_time: str, /
    ) -> m.ServiceOrderResult: ...

    async def get_service_order(self, out_order_no: str) -> m.ServiceOrderResult: ...

    async def cancel_service_order(
        self, out_order_no: str, reason: str
    ) -> m.ServiceOrderResult: ...

    async def get_user_unionid(self, face_sid: str) -> m.UnionIdResult: ...
