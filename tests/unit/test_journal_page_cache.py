"""The journal's SQLite page cache is bounded below SQLite's default, so RSS stops growing."""

from __future__ import annotations

from pathlib import Path

from facepayd.clock import ManualClock
from facepayd.journal import Journal


async def test_the_page_cache_is_512_kib_on_the_journals_connection(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3", clock=ManualClock())
    try:
        db = journal.database
        size = await db.run(lambda: db.connection.execute("PRAGMA cache_size").fetchone()[0])
        # Negative: KiB, not pages. SQLite's default is -2000 (2 MB, measured filling the
        # daemon's RSS over its first 1,800 payments).
        assert size == -512
    finally:
        await journal.close()
