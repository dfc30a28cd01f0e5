"""Daemon-owned tasks by key: the bookkeeping the payment and refund services share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Hashable,
    Iterable,
    Iterator,
    Sequence,
)
from typing import Any, Generic, Protocol, TypeVar

import structlog

from facepayd.clock import Clock, race
from facepayd.tasks import TaskOwner

__all__ = ["OwnedTasks"]

log = structlog.get_logger(__name__)


class _Settles(Protocol):
    @property
    def settled(self) -> bool: ...


class _Event(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def state(self) -> _Settles: ...


class _Record(Protocol):
    @property
    def last_seq(self) -> int: ...

    @property
    def settled(self) -> bool: ...


K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
E = TypeVar("E", bound=_Event)


class OwnedTasks(Generic[K, T]):
    """One owned task per key, its watchers' wake-up events, and the keys in NEEDS_ATTENTION."""

    def __init__(
        self,
        noun: str,
        clock: Clock,
        closed_error: Callable[[str], Exception],
        on_finish: Callable[[K], object] = lambda key: None,
    ) -> None:
        # noun ("payment"): names the tasks, the log events and the errors raised once closed.
        self._noun = noun
        self._clock = clock
        self._closed_error = closed_error
        self._on_finish = on_finish
        # Strong references, exceptions logged, awaited at close; tasks finds one by key.
        self._owner = TaskOwner(f"{noun}s")
        self.tasks: dict[K, asyncio.Task[T]] = {}
        # The wake-up events of the watchers of each key, dropped when a watcher leaves.
        self.watchers: dict[K, set[asyncio.Event]] = {}
        self.needs_attention: set[K] = set()
        self.closed = False

    def check_open(self) -> None:
        """Refuse new work (closed_error) once close has begun."""
        if self.closed:
            raise self._closed_error(f"the {self._noun} service is stopping")

    def stopped(self, doing: str, key: K) -> Exception:
        """The error a waiter raises when the service closes under it."""
        return self._closed_error(f"stopped {doing} {self._noun} {key}")

    def spawn(self, key: K, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run coro as the key's owned task; the key is forgotten when it ends."""
        task = self._owner.spawn(coro, name=f"{self._noun} {key}")
        self.tasks[key] = task
        task.add_done_callback(lambda done: self._task_done(key, done))
        return task

    def resume(
        self,
        unfinished: Iterable[tuple[K, bool]],
        drive: Callable[[K], Coroutine[Any, Any, T]],
    ) -> int:
        """Spawn drive(key) for each (key, needs attention) without a task; returns how many."""
        started = 0
        for key, needs_attention in unfinished:
            if needs_attention:
                self.needs_attention.add(key)
            if key in self.tasks:
                continue
            self.spawn(key, drive(key))
            started += 1
        if started:
            log.info(f"{self._noun}s_resumed", count=started)
        return started

    def notify(self, key: K, needs_attention: bool) -> None:
        """A journaled change of key: update the attention set and wake its watchers."""
        if needs_attention:
            self.needs_attention.add(key)
        else:
            self.needs_attention.discard(key)
        for event in self.watchers.get(key, ()):
            event.set()

    async def watch(
        self,
        key: K,
        after_seq: int,
        events: Callable[[K, int], Awaitable[Sequence[E]]],
        get: Callable[[K], Awaitable[_Record]],
    ) -> AsyncIterator[E]:
        """Events after after_seq from events(), then live ones; ends once settled."""
        last = after_seq
        with self.watching(key) as changed:
            while True:
                # Cleared before reading, so an event committed after the read still wakes us.
                changed.clear()
                found = await events(key, last)
                if found:
                    for event in found:
                        yield event
                        last = event.seq
                    # Settled at its newest event (a replay goes past an earlier settled one).
                    if found[-1].state.settled:
                        return
                    continue
                record = await get(key)
                if record.last_seq > last:
                    continue
                if record.settled:
                    return
                if self.closed:
                    raise self.stopped("watching", key)
                await changed.wait()

    @contextlib.contextmanager
    def watching(self, key: K) -> Iterator[asyncio.Event]:
        """A wake-up event for one watcher; nothing is left behind when it leaves."""
        changed = asyncio.Event()
        self.watchers.setdefault(key, set()).add(changed)
        try:
            yield changed
        finally:
            watchers = self.watchers.get(key)
            if watchers is not None:
                watchers.discard(changed)
                if not watchers:
                    del self.watchers[key]

    async def close(self, grace: float) -> None:
        """Let the tasks finish for up to grace seconds, then cancel them (resumable)."""
        self.closed = True
        tasks = list(self.tasks.values())
        if tasks and grace > 0:
            everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
            await race(self._clock, everything, grace)
        pending = [task for task in tasks if not task.done()]
        await self._owner.close()
        if pending:
            log.info(f"{self._noun}s_left_for_resume", count=len(pending))
        for events in self.watchers.values():
            for event in events:
                event.set()

    def _task_done(self, key: K, task: asyncio.Task[T]) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]
            self._on_finish(key)
