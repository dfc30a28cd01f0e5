"""Time as an injected dependency, so timers are testable without waiting."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Timer(Protocol):
    """A callback scheduled with Clock.call_later."""

    def cancel(self) -> object: ...


class Clock(Protocol):
    """Wall time, monotonic time, sleeping and timers."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        """Run callback on the running loop after seconds, unless cancelled first (no task)."""
        ...


async def race(clock: Clock, awaited: asyncio.Future[T], seconds: float) -> bool:
    """Wait for awaited at most seconds on clock; True if it finished (it is never cancelled)."""
    if awaited.done():
        return True
    deadline = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((awaited, deadline), return_when=asyncio.FIRST_COMPLETED)
    finally:
        deadline.cancel()
    return awaited.done()


async def wait_event(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Wait until event is set, at most seconds on clock; True if it was set."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        return await race(clock, waiter, seconds)
    finally:
        waiter.cancel()


async def wait_for(clock: Clock, awaitable: Awaitable[T], seconds: float) -> T:
    """asyncio.wait_for on the injected clock: the result, or TimeoutError (awaitable cancelled)."""
    task = asyncio.ensure_future(awaitable)
    try:
        if not await race(clock, task, seconds):
            raise TimeoutError(f"not done within {seconds:g}s")
        return task.result()
    finally:
        if not task.done():
            task.cancel()


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(seconds, callback)


class ManualClock:
    """A clock that moves only when a test advances it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._start = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        # Cancelled entries still in the heap; past half of it, the heap is rebuilt without them.
        self._cancelled = 0

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._start

    async def sleep(self, seconds: float) -> None:
        await self._push(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        future = self._push(seconds)
        future.add_done_callback(lambda done: None if done.cancelled() else callback())
        return future

    def _push(self, seconds: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(seconds, 0.0), next(self._order), future))
        future.add_done_callback(self._on_done)
        return future

    def _on_done(self, future: asyncio.Future[None]) -> None:
        """Count a cancelled entry; drop them all once they are half the heap (amortised)."""
        if not future.cancelled():
            return
        self._cancelled += 1
        if self._cancelled * 2 > len(self._sleepers):
            self._sleepers = [entry for entry in self._sleepers if not entry[2].cancelled()]
            heapq.heapify(self._sleepers)
            self._cancelled = 0

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in deadline order."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if future.cancelled():
                self._cancelled = max(self._cancelled - 1, 0)
            elif not future.done():
                future.set_result(None)
            # Let the woken task run before waking the next one.
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
