"""Retention: final payments older than retention_days leave the journal, in small batches.

A batch is one short transaction, so payments never wait long for the journal's one worker;
batches are spaced out on the injected clock. Unfinished and NEEDS_ATTENTION payments are never
deleted (the store and the schema's triggers both refuse them).

Refunds go first, with their payment: a final refund leaves once it and its payment are past
retention (a refund's change also dates its payment, so a payment is never older than its
refunds), and a payment with an unfinished refund is held (dated now) so it is never taken.
"""

from __future__ import annotations

import structlog

from facepayd.clock import Clock
from facepayd.errors import JournalError
from facepayd.journal.payments import PaymentStore
from facepayd.journal.refunds import RefundStore

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
        refunds: RefundStore | None = None,
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
        self._refunds = refunds

    async def run(self) -> None:
        """Prune, then again every interval, until cancelled."""
        while True:
            await self.prune()
            await self._clock.sleep(self._interval)

    async def prune(self) -> int:
        """Delete every final payment past retention, one batch at a time; how many went."""
        total = 0
        if self._refunds is not None and not await self._prune_refunds():
            return total
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

    async def _prune_refunds(self) -> bool:
        """Hold payments with unfinished refunds, then prune final refunds; False on failure."""
        assert self._refunds is not None
        total = 0
        try:
            # Held until the next run: no payment with an unfinished refund falls due meanwhile.
            horizon = self._clock.time() - self._keep + self._interval
            await self._refunds.hold_payments(horizon)
            while True:
                pruned = await self._refunds.prune(self._clock.time() - self._keep, self._batch)
                total += pruned
                if pruned < self._batch:
                    break
                await self._clock.sleep(self._pause)
        except JournalError as exc:
            # Payments wait too: one of them may still be held by a refund not yet marked.
            log.warning("retention_failed", error=str(exc), refunds_pruned=total)
            return False
        if total:
            log.info("refunds_pruned", count=total)
        return True
