"""Retention: final payments older than retention_days leave the journal, in small batches.

A batch is one short transaction, so payments never wait long for the journal's one worker;
batches are spaced out on the injected clock. Unfinished and NEEDS_ATTENTION payments are never
deleted (the store and the schema's triggers both refuse them).
"""

from __future__ import annotations

import structlog

from facepayd.clock import Clock
from facepayd.errors import JournalError
from facepayd.journal.payments import PaymentStore

__all__ = ["DAY", "Retention"]

log = structlog.get_logger(__name__)

DAY = 86_400.0


class Retention:
    """Prunes the payment journal now and then; run() is a task its owner keeps."""

    def __init__(
        self,
        payments: PaymentStore,
        clock: Clock,
        *,
        retention_days: int,
        interval: float = 3600.0,
        batch: int = 100,
        pause: float = 1.0,
    ) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if not interval > 0 or not pause > 0 or batch < 1:
            raise ValueError("interval and pause must be positive, batch at least 1")
        self._payments = payments
        self._clock = clock
        self._keep = retention_days * DAY
        self._interval = interval
        self._batch = batch
        self._pause = pause

    async def run(self) -> None:
        """Prune, then again every interval, until cancelled."""
        while True:
            await self.prune()
            await self._clock.sleep(self._interval)

    async def prune(self) -> int:
        """Delete every final payment past retention, one batch at a time; how many went."""
        total = 0
        while True:
            cutoff = self._clock.time() - self._keep
            try:
                pruned = await self._payments.prune(cutoff, self._batch)
            except JournalError as exc:
                # A full disk is no reason to stop: the next interval tries again.
                log.warning("retention_failed", error=str(exc), pruned=total)
                return total
            total += pruned
            if pruned < self._batch:
                break
            await self._clock.sleep(self._pause)
        if total:
            log.info("payments_pruned", count=total, journal_bytes=self._payments.size_bytes())
        return total
