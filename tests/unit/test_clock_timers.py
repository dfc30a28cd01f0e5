"""Clock.call_later: a timer without a task, on the real clock and on ManualClock."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref

from facepayd.clock import ManualClock, SystemClock
from tests.helpers import settle, until


async def test_manual_timer_fires_at_its_deadline_and_not_before() -> None:
    clock = ManualClock()
    fired: list[float] = []
    clock.call_later(5.0, lambda: fired.append(clock.monotonic()))
    assert clock.sleepers == 1
    await clock.advance(4.9)
    await settle()
    assert fired == []
    await clock.advance(0.1)
    await until(lambda: bool(fired))
    assert fired == [5.0]
    assert clock.sleepers == 0


async def test_a_cancelled_manual_timer_never_fires_and_is_no_sleeper() -> None:
    clock = ManualClock()
    fired: list[str] = []
    timer = clock.call_later(1.0, lambda: fired.append("late"))
    timer.cancel()
    assert clock.sleepers == 0
    await clock.advance(10.0)
    await settle()
    assert fired == []


async def test_system_timer_fires_and_cancels() -> None:
    clock = SystemClock()
    fired = asyncio.Event()
    cancelled: list[str] = []
    clock.call_later(0.0, fired.set)
    clock.call_later(0.0, lambda: cancelled.append("ran")).cancel()
    await asyncio.wait_for(fired.wait(), 5)
    await settle()
    assert cancelled == []


async def test_cancelled_manual_timers_do_not_stay_until_their_deadline() -> None:
    clock = ManualClock()
    kept = clock.call_later(3600.0, lambda: None)  # one live timer beside them
    gone: list[weakref.ref[object]] = []
    for _ in range(1000):
        timer = clock.call_later(3600.0, lambda: None)  # a deadline no advance reaches
        gone.append(weakref.ref(timer))
        timer.cancel()
        del timer
        sleeper = asyncio.ensure_future(clock.sleep(3600.0))
        await asyncio.sleep(0)
        sleeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sleeper
    await settle()
    gc.collect()
    # Dropped without the clock reaching them (lazily: at most as many as are live remain).
    assert sum(ref() is not None for ref in gone) <= 1
    assert clock.sleepers == 1
    assert not kept.cancelled()
