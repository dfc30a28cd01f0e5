"""The crash-safe SQLite journal: the database worker and migrations, one store per aggregate."""

from __future__ import annotations

import os
from dataclasses import dataclass

from facepayd.clock import Clock, SystemClock
from facepayd.journal.db import Database
from facepayd.journal.health import JournalHealth
from facepayd.journal.payments import PaymentStore
from facepayd.journal.refunds import RefundStore
from facepayd.journal.retention import Retention
from facepayd.journal.service_orders import ServiceOrderStore

__all__ = [
    "Database",
    "Journal",
    "JournalHealth",
    "PaymentStore",
    "RefundStore",
    "Retention",
    "ServiceOrderStore",
]


@dataclass(frozen=True, slots=True)
class Journal:
    """One database file and the stores over it."""

    database: Database
    health: JournalHealth
    payments: PaymentStore
    service_orders: ServiceOrderStore
    refunds: RefundStore

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        probe_interval: float = 5.0,
    ) -> Journal:
        """Open (creating and migrating as needed) the journal at path."""
        clock = clock or SystemClock()
        database = await Database.open(path)
        health = JournalHealth(database, clock, probe_interval=probe_interval)
        return cls(
            database,
            health,
            PaymentStore(database, clock, health),
            ServiceOrderStore(database, clock),
            RefundStore(database, clock),
        )

    async def close(self) -> None:
        """Stop the write probe, finish queued writes and close the database."""
        await self.health.close()
        await self.database.close()
