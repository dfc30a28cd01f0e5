"""Whether the journal can write: down on a storage failure, up again once writes succeed.

Down at the first failed write; up again on a committed write (a payment's retry, or the probe
that runs on the injected clock while the journal is down), but only once a whole probe
interval has passed without a failure: a disk that fails every other write cannot make health
flap faster than once per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

import structlog

from facepayd.clock import Clock
from facepayd.errors import JournalError
from facepayd.journal.db import Database
from facepayd.tasks import TaskOwner

__all__ = ["JournalHealth"]

log = structlog.get_logger(__name__)


class JournalHealth:
    """The journal's "writable" flag, its listeners and the probe that brings it back."""

    def __init__(self, database: Database, clock: Clock, *, probe_interval: float = 5.0) -> None:
        if not probe_interval > 0:
            raise ValueError("probe_interval must be greater than 0")
        self._database = database
        self._clock = clock
        self._interval = probe_interval
        self._writable = True
        self._failed_at = -math.inf
        self._listeners: list[Callable[[], None]] = []
        self._tasks = TaskOwner("journal-health")
        self._probe: asyncio.Task[None] | None = None
        database.add_write_listener(self._on_write)

    @property
    def writable(self) -> bool:
        """False from a failed write until writes succeed again."""
        return self._writable

    @property
    def probe_interval(self) -> float:
        """Seconds between probes, and the least time health stays down."""
        return self._interval

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call listener (on the event loop) each time writable changes."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling listener."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def close(self) -> None:
        """Stop the probe."""
        await self._tasks.close()

    # ------------------------------------------------------------------ internals

    def _on_write(self, ok: bool) -> None:
        now = self._clock.monotonic()
        if not ok:
            self._failed_at = now
            self._set(False)
            self._start_probe()
        elif not self._writable and now - self._failed_at >= self._interval:
            self._set(True)

    def _set(self, writable: bool) -> None:
        if writable is self._writable:
            return
        self._writable = writable
        if writable:
            log.info("journal_writable_again")
        else:
            log.error("journal_unwritable", probe_interval=self._interval)
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("journal_health_listener_failed")

    def _start_probe(self) -> None:
        if self._probe is not None and not self._probe.done():
            return
        # Refused (RuntimeError) only while closing: nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            self._probe = self._tasks.spawn(self._probe_until_writable(), name="journal probe")

    async def _probe_until_writable(self) -> None:
        """One committed probe write per interval until the journal is writable again."""
        while not self._writable:
            await self._clock.sleep(self._interval)
            if self._writable:
                return
            # A success reaches _on_write, which decides; a failure restarts the interval.
            with contextlib.suppress(JournalError):
                await self._database.probe()
