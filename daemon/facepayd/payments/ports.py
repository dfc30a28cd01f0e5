"""What the payments domain needs from outside: its journals and WeChat Pay's v2 calls."""

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
from facepayd.payments.refund_models import Refund, RefundEvent, RefundRequest, RefundState
from facepayd.wxpay.models import (
    MicropayOrder,
    RefundOrder,
    RefundQueryResult,
    RefundResult,
    ReverseResult,
    TradeResult,
)

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

    async def capture_and_mark_sent(
        self, out_trade_no: str, data: Mapping[str, str | int], openid: str, at: float
    ) -> tuple[PaymentEvent, Payment]: ...

    async def mark_pay_sent(self, out_trade_no: str, at: float | None = None) -> Payment: ...

    async def get(self, out_trade_no: str) -> Payment: ...

    async def find(self, out_trade_no: str) -> Payment | None: ...

    async def exists(self, out_trade_no: str) -> bool: ...

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

    async def refund_count(self, out_trade_no: str) -> int: ...


class PaymentBackend(Protocol):
    """The three WeChat Pay v2 calls a payment needs (WxPayV2Client implements them)."""

    async def micropay(self, order: MicropayOrder) -> TradeResult: ...

    async def orderquery(
        self, *, out_trade_no: str = "", transaction_id: str = ""
    ) -> TradeResult: ...

    async def reverse(self, *, out_trade_no: str, transaction_id: str = "") -> ReverseResult: ...


RefundList = list[Refund]
RefundEventList = list[RefundEvent]


class RefundJournal(Protocol):
    """Refunds and their events; the sum against the paid amount is checked atomically here."""

    def add_listener(self, listener: Callable[[RefundEvent], None]) -> None: ...

    async def create_refund(self, request: RefundRequest) -> tuple[Refund, bool]: ...

    async def retry_failed(self, out_refund_no: str) -> RefundEvent: ...

    async def append(
        self,
        out_refund_no: str,
        state: RefundState,
        data: Mapping[str, str | int] | None = None,
        **row_updates: str | int,
    ) -> RefundEvent: ...

    async def mark_sending(self, out_refund_no: str, reason: str) -> Refund:
        """Journal SENDING, or FAILED if the payment is no longer refundable (then send nothing)."""
        ...

    async def get(self, out_refund_no: str) -> Refund: ...

    async def find(self, out_refund_no: str) -> Refund | None: ...

    async def events(self, out_refund_no: str, after_seq: int = 0) -> RefundEventList: ...

    async def for_payment(
        self, out_trade_no: str, page_size: int = 50, page_token: str = ""
    ) -> tuple[RefundList, str]: ...

    async def refunded_fee(self, out_trade_no: str) -> int: ...

    async def unfinished(self) -> RefundList: ...


class RefundBackend(Protocol):
    """WeChat Pay v2's refund and refundquery (WxPayV2Client implements them)."""

    async def refund(self, order: RefundOrder) -> RefundResult: ...

    async def refundquery(self, *, out_refund_no: str) -> RefundQueryResult: ...
