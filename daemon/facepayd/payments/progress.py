"""What a payment machine is doing right now, for the watchers attached at that moment.

Progress is not journaled, has no seq and is never replayed: it is a live view next to the
journaled events, which stay the record. Nothing is kept for a payment nobody watches: the hub
holds one feed per attached watcher, and a feed holds only the newest notice (a watcher that is
slow to read skips to the latest, it never queues them).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from facepayd.payments.models import PaymentEvent, PaymentState

__all__ = ["Activity", "Progress", "ProgressFeed", "ProgressHub", "with_progress"]

T = TypeVar("T")


class Activity(enum.StrEnum):
    """What the machine does for the order."""

    PAYING = "PAYING"  # micropay is on its way
    QUERYING = "QUERYING"  # orderquery is on its way
    REVERSING = "REVERSING"  # reverse is on its way
    WAITING_TO_QUERY = "WAITING_TO_QUERY"  # the next poll is due at next_at
    WAITING_TO_REVERSE = "WAITING_TO_REVERSE"  # reverse is not allowed before next_at
    RETRYING = "RETRYING"  # a step failed or waits for an operator: tried again at next_at


@dataclass(frozen=True, slots=True)
class Progress:
    """One notice: the call under way (or the wait for the next one)."""

    out_trade_no: str
    state: PaymentState
    activity: Activity
    attempt: int  # which call of this activity since the state was entered (for a wait: the next)
    since: float  # wall time the payment entered state
    next_at: float | None  # wall time the next call is due, when waiting
    reason: str  # USERPAYING, SYSTEMERROR, TIMEOUT...


class ProgressFeed:
    """One watcher's notices: only the newest is kept."""

    def __init__(self) -> None:
        self._latest: Progress | None = None
        self._ready = asyncio.Event()

    def put(self, progress: Progress) -> None:
        """Replace whatever the watcher has not read yet."""
        self._latest = progress
        self._ready.set()

    async def get(self) -> Progress:
        """The newest notice, once there is one."""
        while self._latest is None:
            self._ready.clear()
            await self._ready.wait()
        progress, self._latest = self._latest, None
        return progress


class ProgressHub:
    """The live watchers of each payment; a payment without one costs a dict lookup."""

    def __init__(self) -> None:
        self._feeds: dict[str, set[ProgressFeed]] = {}

    def listening(self, out_trade_no: str) -> bool:
        """Whether anyone watches this payment now (the machine builds no notice otherwise)."""
        return out_trade_no in self._feeds

    def publish(self, progress: Progress) -> None:
        """Hand a notice to the payment's current watchers."""
        for feed in self._feeds.get(progress.out_trade_no, ()):
            feed.put(progress)

    @contextlib.contextmanager
    def follow(self, out_trade_no: str) -> Iterator[ProgressFeed]:
        """A feed for one watcher; nothing is left behind when it leaves."""
        feed = ProgressFeed()
        self._feeds.setdefault(out_trade_no, set()).add(feed)
        try:
            yield feed
        finally:
            feeds = self._feeds.get(out_trade_no)
            if feeds is not None:
                feeds.discard(feed)
                if not feeds:
                    del self._feeds[out_trade_no]


async def with_progress(items: AsyncIterator[T], feed: ProgressFeed) -> AsyncIterator[T | Progress]:
    """items, with the feed's notices in between, until items ends.

    A notice about a state the watcher has not seen an event for yet (any notice before the
    first event) is held until that event has gone out (or dropped for a newer notice), so a
    watcher never reads progress ahead of the event that led to it; notices still unread when
    items ends are dropped.
    """
    shown: PaymentState | None = None
    held: Progress | None = None
    next_item: asyncio.Future[T] = asyncio.ensure_future(anext(items))
    next_notice: asyncio.Future[Progress] = asyncio.ensure_future(feed.get())
    try:
        while True:
            waiting: set[asyncio.Future[Any]] = {next_item, next_notice}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if next_notice.done():
                notice = next_notice.result()
                next_notice = asyncio.ensure_future(feed.get())
                # Before the first event nothing is shown yet: a StartCodePay's PAYING notice
                # waits for its code_received, never goes ahead of it.
                if shown is not None and notice.state is shown:
                    held = None
                    yield notice
                else:
                    held = notice
                continue
            try:
                item = next_item.result()
            except StopAsyncIteration:
                return
            next_item = asyncio.ensure_future(anext(items))
            yield item
            if isinstance(item, PaymentEvent):
                shown = item.state
                if held is not None and held.state is shown:
                    notice, held = held, None
                    yield notice
    finally:
        for future in (next_item, next_notice):
            future.cancel()
            with contextlib.suppress(BaseException):
                await future
        closer = getattr(items, "aclose", None)
        if closer is not None:
            await closer()
