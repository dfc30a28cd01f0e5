"""Background tasks with an owner: a strong reference, the exception logged, awaited at stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from facepayd.errors import FacepayError

log = structlog.get_logger(__name__)

T = TypeVar("T")


class TaskOwner:
    """Keeps the tasks it starts until they end; asyncio itself holds only a weak reference."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str = "") -> asyncio.Task[T]:
        """Start coro as a task this owner keeps; refused once the owner is closed."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._name} is stopping; no new tasks")
        task = asyncio.get_running_loop().create_task(coro, name=name or self._name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def close(self) -> None:
        """Cancel every task still running and wait for all of them to end."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, FacepayError):
            # A failure the domain names (a lost device, a refused call): not a bug.
            log.warning(
                "background_task_ended", owner=self._name, task=task.get_name(), reason=exc.reason
            )
        elif exc is not None:
            log.error(
                "background_task_failed",
                owner=self._name,
                task=task.get_name(),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
