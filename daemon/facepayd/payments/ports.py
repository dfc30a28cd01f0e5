"""What the payments domain needs from outside: its journal and WeChat Pay's three v2 calls."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from facepayd.payments.models import (
    CodeStart,
    EventKind,
    Payment,
    PaymentEvent,
    PaymentOrder,
    PaymentState,
)
from facepayd.wxpay.models import MicropayOrder, ReverseResult, TradeResult

# Aliases: inside the Protocol, the name "list" is the method.
PaymentList = list[Payment]
EventList = list[PaymentEvent]


class PaymentJournal(Protocol):
    """Payments and their events, each state committed before the call it leads to."""

    def add_listener(self, listener: Callable[[PaymentEvent], None]) -> None: ...

    # False while the journal is known not to take writes (a full or failing disk).
    @property
    def writable(self) -> bool: ...

    def size_bytes(self) -> int: ...

    async def create_payment(
        self, order: PaymentOrder, *, data: Mapping[str, str | int] | None = None
    ) -> tuple[Payment, bool]: ...

    async def begin_code_payment(self, order: PaymentOrder) -> tuple[Payment, CodeStart]: ...

    async def append(
        self,
        out_trade_no: str,
        state: PaymentState,
        kind: EventKind,
        data: Mapping[str, str | int] | None = None,
        **row_updates: str | int,
    ) -> PaymentEvent: ...

    async def mark_pay_sent(self, out_trade_no: str, at: float | None = None) -> Payment: ...

    async def get(self, out_trade_no: str) -> Payment: ...

    async def find(self, out_trade_no: str) -> Payment | None: ...

    async def events(self, out_trade_no: str, after_seq: int = 0) -> EventList: ...

    async def list(
        self,
        states: Iterable[PaymentState] = (),
        created_after: float | None = None,
        created_before: float | None = None,
        page_size: int = 50,
        page_token: str = "",
    ) -> tuple[PaymentList, str]: ...

    async def unfinished(self) -> PaymentList: ...


class PaymentBackend(Protocol):
    """The three WeChat Pay v2 calls a payment needs (WxPayV2Client implements them)."""

    async def micropay(self, order: MicropayOrder) -> TradeResult: ...

    async def orderquery(
        self, *, out_trade_no: str = "", transaction_id: str = ""
    ) -> TradeResult: ...

    async def reverse(self, *, out_trade_no: str, transaction_id: str = "") -> ReverseResult: ...
