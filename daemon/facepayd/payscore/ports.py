"""What the PayScore domain needs from outside: the journal of its service orders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from facepayd.payscore.models import ServiceOrderEvent, ServiceOrderRecord


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
    ) -> ServiceOrderRecord: ...

    async def find_service_order(self, out_order_no: str) -> ServiceOrderRecord | None: ...

    async def pending_service_orders(self) -> list[ServiceOrderRecord]: ...

    async def settled_service_orders_in(self, journal_state: str) -> list[ServiceOrderRecord]: ...

    async def service_order_events(self, out_order_no: str) -> list[ServiceOrderEvent]: ...
