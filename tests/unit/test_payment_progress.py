"""Progress notices: what the payment machine tells live watchers, and how they reach them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facepayd.clock import ManualClock
from facepayd.journal import Journal
from facepayd.payments.models import EventKind, PaymentEvent, PaymentState
from facepayd.payments.progress import Activity, Progress, ProgressFeed, ProgressHub, with_progress
from tests.helpers import settle, until
from tests.unit.test_payment_machine import (
    RECALL,
    REVERSED_OK,
    USERPAYING,
    FakeBackend,
    Rig,
    _paid,
    _service,
)

S = PaymentState
A = Activity


class CountingHub(ProgressHub):
    """The real hub, counting the notices the machine built."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Progress] = []

    def publish(self, progress: Progress) -> None:
        self.published.append(progress)
        super().publish(progress)


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    timings: dict[str, float] = getattr(request, "param", {})
    clock = ManualClock()
    backend = FakeBackend(clock)
    journal = await Journal.open(tmp_path / "journal.db", clock=clock)
    service = _service(journal.payments, backend, clock, **timings)
    service.progress = CountingHub()
    yield Rig(clock, backend, journal, service, tmp_path / "journal.db", clock.time())
    await service.close(0)
    await journal.close()


async def _collect(feed: ProgressFeed, notices: list[Progress]) -> None:
    while True:
        notices.append(await feed.get())


async def test_a_payment_nobody_watches_builds_no_notice(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_answers = [USERPAYING, _paid()]
    await rig.start()
    assert (await rig.final()).state is S.SUCCEEDED
    hub = rig.service.progress
    assert isinstance(hub, CountingHub)
    assert hub.published == []
    assert not hub.listening("T1")


async def test_a_watcher_sees_micropay_then_the_polls_counting_up(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_answers = [USERPAYING, USERPAYING, _paid()]
    rig.backend.micropay_gate = gate = asyncio.Event()
    notices: list[Progress] = []
    with rig.service.progress.follow("T1") as feed:
        collector = asyncio.ensure_future(_collect(feed, notices))
        await rig.start()
        await until(lambda: bool(notices), what="the micropay notice")
        paying = notices[-1]
        assert (paying.state, paying.activity, paying.attempt) == (S.PAYING, A.PAYING, 1)
        assert paying.next_at is None
        gate.set()
        assert (await rig.final()).state is S.SUCCEEDED
        await settle()
        collector.cancel()
    assert not rig.service.progress.listening("T1")  # the watcher left: nothing kept
    waits = [n for n in notices if n.activity is A.WAITING_TO_QUERY]
    assert [n.attempt for n in waits] == [1, 2, 3]
    pending_since = next(
        e.time for e in await rig.journal.payments.events("T1") if e.state is S.PENDING
    )
    for number, wait in enumerate(waits):
        assert wait.state is S.PENDING
        assert wait.reason == "USERPAYING"
        assert wait.since == pending_since
        # Polls every 5 s from the micropay answer.
        assert wait.next_at == rig.t0 + 5.0 * (number + 1)


@pytest.mark.parametrize(
    "rig", [{"give_up_after": 10.0, "reverse_after": 20.0, "in_flight_after": 10.0}], indirect=True
)
async def test_a_watcher_sees_the_wait_to_reverse_and_the_retries(rig: Rig) -> None:
    rig.backend.micropay_answers = [USERPAYING]
    rig.backend.query_default = USERPAYING
    rig.backend.reverse_answers = [RECALL, REVERSED_OK]
    notices: list[Progress] = []
    with rig.service.progress.follow("T1") as feed:
        collector = asyncio.ensure_future(_collect(feed, notices))
        await rig.start()
        assert (await rig.final()).state is S.REVERSED
        await settle()
        collector.cancel()
    reversing = [n for n in notices if n.state is S.REVERSING]
    waiting = [n for n in reversing if n.activity is A.WAITING_TO_REVERSE]
    assert len(waiting) == 1
    # Given up at 10 s, reverse allowed from 20 s after micropay: the first reverse call.
    assert (waiting[0].attempt, waiting[0].next_at, waiting[0].reason) == (
        1,
        rig.t0 + 20,
        "TIMEOUT",
    )
    retrying = [n for n in reversing if n.activity is A.RETRYING]
    assert [(n.attempt, n.next_at) for n in retrying] == [(2, rig.t0 + 21)]


def _event(seq: int, state: PaymentState) -> PaymentEvent:
    return PaymentEvent("T1", seq, 0.0, state, EventKind.PENDING)


def _notice(state: PaymentState, attempt: int = 1) -> Progress:
    return Progress("T1", state, A.QUERYING, attempt, 0.0, None, "USERPAYING")


async def test_a_feed_keeps_only_the_newest_notice() -> None:
    feed = ProgressFeed()
    feed.put(_notice(S.PENDING, 1))
    feed.put(_notice(S.PENDING, 2))
    assert (await feed.get()).attempt == 2
    late = asyncio.ensure_future(feed.get())
    await settle()
    assert not late.done()
    feed.put(_notice(S.PENDING, 3))
    assert (await late).attempt == 3


async def test_a_notice_waits_for_the_event_of_its_state_and_none_follows_the_end() -> None:
    events: asyncio.Queue[PaymentEvent | None] = asyncio.Queue()

    async def journaled() -> AsyncIterator[PaymentEvent]:
        while (event := await events.get()) is not None:
            yield event

    feed = ProgressFeed()
    seen: list[PaymentEvent | Progress] = []

    async def consume() -> None:
        async for item in with_progress(journaled(), feed):
            seen.append(item)

    consumer = asyncio.ensure_future(consume())
    events.put_nowait(_event(1, S.PAYING))
    await until(lambda: len(seen) == 1)
    # A PENDING notice before the PENDING event has gone out is held back...
    feed.put(_notice(S.PENDING))
    await settle()
    assert len(seen) == 1
    events.put_nowait(_event(2, S.PENDING))
    # ...and follows it.
    await until(lambda: len(seen) == 3)
    assert isinstance(seen[1], PaymentEvent)
    assert seen[1].state is S.PENDING
    assert isinstance(seen[2], Progress)
    assert seen[2].state is S.PENDING
    # A stale notice (of a state before the newest event) is never shown, not even at the end.
    events.put_nowait(_event(3, S.SUCCEEDED))
    await until(lambda: len(seen) == 4)
    feed.put(_notice(S.PENDING, 7))
    await settle()
    events.put_nowait(None)
    await consumer
    assert len(seen) == 4
    assert isinstance(seen[3], PaymentEvent)
    assert seen[3].state is S.SUCCEEDED


async def test_a_notice_before_the_first_event_waits_for_it() -> None:
    events: asyncio.Queue[PaymentEvent | None] = asyncio.Queue()

    async def journaled() -> AsyncIterator[PaymentEvent]:
        while (event := await events.get()) is not None:
            yield event

    feed = ProgressFeed()
    seen: list[PaymentEvent | Progress] = []

    async def consume() -> None:
        async for item in with_progress(journaled(), feed):
            seen.append(item)

    consumer = asyncio.ensure_future(consume())
    # micropay is on its way before the stream has sent code_received.
    feed.put(_notice(S.PAYING))
    await settle()
    assert seen == []
    events.put_nowait(_event(1, S.PAYING))
    await until(lambda: len(seen) == 2)
    assert [type(item) for item in seen] == [PaymentEvent, Progress]
    events.put_nowait(None)
    await consumer
