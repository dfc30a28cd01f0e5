"""Shared test helpers: waiting on conditions with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll predicate on the event loop until true; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def settle() -> None:
    """Let ready tasks run to their next await."""
    for _ in range(20):
        await asyncio.sleep(0)
