"""Driving daemon-owned tasks on a ManualClock: wait until they rest, move time timer by timer."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from facepayd.clock import ManualClock


async def quiesce(clock: ManualClock, tasks: Callable[[], int], what: str) -> None:
    """Until every one of tasks() waits on the clock (the journal's worker is a thread)."""
    stable = 0
    for _ in range(50_000):
        await asyncio.sleep(0)
        if clock.sleepers == tasks():
            stable += 1
            if stable >= 3:
                return
        else:
            stable = 0
            await asyncio.sleep(0.0002)
    raise AssertionError(f"the {what} tasks never came to rest")


async def run_timers(
    clock: ManualClock,
    seconds: float,
    rest: Callable[[], Awaitable[None]],
    check: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Move the clock timer by timer up to seconds from now, awaiting rest (and check) at each."""
    target = clock.time() + seconds
    while True:
        await rest()
        if check is not None:
            await check()
        # The next deadline of a sleeping task (ManualClock keeps them in a heap).
        due = min((d for d, _, f in clock._sleepers if not f.done()), default=math.inf)
        if due > target:
            await clock.advance(target - clock.time())
            await rest()
            return
        await clock.advance(max(0.0, due - clock.time()))
