"""The crash-safe SQLite journal: the database worker and migrations, one store per aggregate."""

from __future__ import annotations

import os
from dataclasses import dataclass

from facepayd.clock import Clock, SystemClock
from facepayd.journal.db import Database
from facepayd.journal.payments import PaymentStore
from facepayd.journal.service_orders import ServiceOrderStore

__all__ = ["Database", "Journal", "PaymentStore", "ServiceOrderStore"]


@dataclass(frozen=True, slots=True)
class Journal:
    """One database file and the stores over it."""

    database: Database
    payments: PaymentStore
    service_orders: ServiceOrderStore

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, clock: Clock | None = None) -> Journal:
        """Open (creating and migrating as needed) the journal at path."""
        clock = clock or SystemClock()
        database = await Database.open(path)
        return cls(database, PaymentStore(database, clock), ServiceOrderStore(database, clock))

    async def close(self) -> None:
        """Finish queued writes and close the database."""
        await self.database.close()
