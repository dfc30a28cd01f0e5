"""The journal's database: one SQLite file (WAL, synchronous=FULL) used from one worker thread.

Every write, and every read while a statement is queued on the worker, runs on that thread; a
point read while the worker is idle may run on the event loop through a read-only connection
(Database.read), which then sees exactly what the worker would.

Every SQLite failure (a full disk, an I/O error, a locked or corrupt file) leaves here as one
JournalError, so the domain decides what an unwritable journal means, not sqlite3. Write
listeners hear of every storage failure and of every committed change (JournalHealth).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import structlog

from facepayd.errors import JournalError
from facepayd.journal.migrations import MIGRATIONS, SCHEMA_VERSION

__all__ = ["Database", "WriteListener", "canonical", "transaction"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Called on the event loop: False after a storage failure, True after a committed change.
WriteListener = Callable[[bool], None]
# Errors of the statement, not of the storage: a constraint, a trigger, a misuse.
_NOT_STORAGE = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
# The database file and the files SQLite keeps beside it in WAL mode.
_FILE_SUFFIXES = ("", "-wal", "-shm")


class Database:
    """The SQLite connection and the single thread every statement runs on."""

    def __init__(
        self,
        path: Path,
        executor: concurrent.futures.ThreadPoolExecutor,
        connection: sqlite3.Connection,
        reader: sqlite3.Connection | None = None,
    ) -> None:
        """Use Database.open."""
        self._path = path
        self._executor = executor
        self._connection = connection
        self._reader = reader
        # Statements submitted to the worker and not yet finished (counted on the loop).
        self._pending = 0
        self._closed = False
        self._write_listeners: list[WriteListener] = []

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Database:
        """Open (creating and migrating as needed) the database at path."""
        db_path = Path(path)
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="facepayd-journal"
        )
        loop = asyncio.get_running_loop()
        try:
            connection = await loop.run_in_executor(executor, _connect, db_path)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise JournalError(f"cannot open the journal: {type(exc).__name__}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        try:
            reader = await loop.run_in_executor(executor, _connect_reader, db_path)
        except sqlite3.Error as exc:
            # Only a shortcut: every read still works through the worker.
            log.warning("journal_reader_unavailable", error=type(exc).__name__)
            reader = None
        return cls(db_path, executor, connection, reader)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection; use it only inside functions passed to run()."""
        return self._connection

    def add_write_listener(self, listener: WriteListener) -> None:
        """Call listener(False) after each storage failure, listener(True) after each write."""
        self._write_listeners.append(listener)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on the worker thread; SQLite errors become JournalError."""
        if self._closed:
            raise JournalError("the journal is closed")
        loop = asyncio.get_running_loop()
        # Shielded: a cancelled caller must not lose track of a write the worker completes.
        future = loop.run_in_executor(self._executor, self._counted, fn, args)
        self._pending += 1
        future.add_done_callback(self._finished)
        try:
            result, wrote = await asyncio.shield(future)
        except sqlite3.Error as exc:
            if not isinstance(exc, _NOT_STORAGE):
                self._tell_writers(ok=False)
            # The class name only: SQLite's message can carry paths and values.
            raise JournalError(f"the journal cannot be used: {type(exc).__name__}") from exc
        if wrote:
            self._tell_writers(ok=True)
        return result

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(connection, *args) for a short read-only point lookup; SQLite errors: JournalError.

        While nothing is queued on the worker, every statement it was given has committed (or
        failed), so the read-only connection's snapshot (one per statement, in WAL) is the
        worker's view: fn runs on the loop, without two thread hops. Otherwise, and if the
        reader fails, fn runs on the worker with its connection, in order with the rest.
        """
        if self._closed:
            raise JournalError("the journal is closed")
        reader = self._reader
        if reader is not None and self._pending == 0:
            try:
                return fn(reader, *args)
            except sqlite3.Error as exc:
                # BUSY (busy_timeout 0: the loop never waits on a lock) or worse; the worker
                # answers, and reports a storage failure if there is one.
                log.warning("journal_reader_fallback", error=type(exc).__name__)
        return await self.run(lambda: fn(self._connection, *args))

    async def probe(self) -> None:
        """Commit one tiny write: JournalError unless the storage takes writes now."""
        await self.run(self._probe)

    def size_bytes(self) -> int:
        """Bytes of the database file and its WAL and shared-memory files on disk."""
        total = 0
        for suffix in _FILE_SUFFIXES:
            with contextlib.suppress(OSError):
                total += os.stat(f"{self._path}{suffix}").st_size
        return total

    async def settings(self) -> dict[str, str]:
        """journal_mode and synchronous as SQLite reports them on this connection."""
        settings: dict[str, str] = await self.run(self._settings)
        return settings

    async def close(self) -> None:
        """Finish queued statements, close the database and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            with contextlib.suppress(sqlite3.Error):
                self._reader.close()
            self._reader = None
        loop = asyncio.get_running_loop()
        try:
            await asyncio.shield(loop.run_in_executor(self._executor, self._connection.close))
        finally:
            self._executor.shutdown(wait=False)

    def _counted(self, fn: Callable[..., T], args: tuple[Any, ...]) -> tuple[T, bool]:
        """fn(*args), and whether it changed rows (every write commits before it returns)."""
        before = self._connection.total_changes
        result = fn(*args)
        return result, self._connection.total_changes != before

    def _finished(self, _future: asyncio.Future[Any]) -> None:
        self._pending -= 1

    def _tell_writers(self, *, ok: bool) -> None:
        # A listener's bug must never turn a committed write into an error for its caller.
        for listener in list(self._write_listeners):
            try:
                listener(ok)
            except Exception:
                log.exception("journal_write_listener_failed")

    def _probe(self) -> None:
        with transaction(self._connection):
            self._connection.execute("UPDATE journal_probe SET writes = writes + 1")

    def _settings(self) -> dict[str, str]:
        mode = self._connection.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = self._connection.execute("PRAGMA synchronous").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return {"journal_mode": str(mode).upper(), "synchronous": names.get(synchronous, "?")}


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception, a failed COMMIT included."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        # A full disk often fails here, when WAL frames are written: still inside the guard, so
        # the connection never stays in a transaction that every later BEGIN would trip over.
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def canonical(value: Mapping[str, Any]) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text (and hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _connect(path: Path) -> sqlite3.Connection:
    """Open and migrate the database; runs on the worker thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created private before SQLite opens it; SQLite gives -wal/-shm the same mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        _configure(db)
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def _connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to the migrated file (WAL, set by _connect), used on the loop."""
    db = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        db.execute("PRAGMA query_only = ON")
        # Never block the loop on a lock: BUSY falls back to the worker at once.
        db.execute("PRAGMA busy_timeout = 0")
        # Point lookups touch a handful of pages: 128 KiB, not SQLite's 2 MiB default (RSS, P5).
        db.execute("PRAGMA cache_size = -128")
    except BaseException:
        db.close()
        raise
    return db


def _configure(db: sqlite3.Connection) -> None:
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL is required")
    # FULL: a commit is on disk before the external call it precedes.
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA busy_timeout = 5000")
    # 512 KiB of page cache (SQLite's default is 2 MiB): the daemon reads recent rows and the
    # B-tree's inner pages, which fit; the default grew the daemon by 2.2 MB over its first
    # 1,800 payments (make bench, P5) until full, and older pages come from the OS page cache.
    db.execute("PRAGMA cache_size = -512")


def migrate(db: sqlite3.Connection) -> None:
    """Create or upgrade the schema to SCHEMA_VERSION; refuse a newer file."""
    with transaction(db):
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal schema version {version} is newer than this daemon's {SCHEMA_VERSION}"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                db.execute(statement)
        if row is None:
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif version != SCHEMA_VERSION:
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
