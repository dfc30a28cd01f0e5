"""Database.read: a point read on the loop while the worker is idle, the worker's answer otherwise.

The worker is held inside SQLite (an authorizer that blocks the INSERT until the test lets it go),
so a read issued while a write is queued is seen in order, not timed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facepayd.clock import ManualClock
from facepayd.errors import JournalError
from facepayd.journal import Journal
from facepayd.payments.models import PaymentOrder, PaymentState
from tests.helpers import until


def _order(out_trade_no: str) -> PaymentOrder:
    return PaymentOrder(out_trade_no=out_trade_no, total_fee=100, body="goods")


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await Journal.open(tmp_path / "journal.db", clock=ManualClock())
    yield j
    await j.close()


def _thread_of(db: sqlite3.Connection, out_trade_no: str) -> tuple[str, int]:
    """The thread the read ran on, and how many rows it found."""
    rows = db.execute(
        "SELECT count(*) FROM payments WHERE out_trade_no = ?", (out_trade_no,)
    ).fetchall()
    return threading.current_thread().name, int(rows[0][0])


async def test_an_idle_journal_reads_on_the_loop_and_sees_every_commit(journal: Journal) -> None:
    db = journal.database
    assert await db.read(_thread_of, "R1") == (threading.current_thread().name, 0)
    await journal.payments.create_payment(_order("R1"))
    # Committed by the worker, read at once on the loop's own connection.
    assert await db.read(_thread_of, "R1") == (threading.current_thread().name, 1)
    payment = await journal.payments.find("R1")
    assert payment is not None
    assert payment.state is PaymentState.CAPTURING


async def test_a_read_while_a_write_is_queued_waits_for_it_on_the_worker(
    journal: Journal,
) -> None:
    db = journal.database
    reached, released = threading.Event(), threading.Event()

    def hold_insert(action: int, table: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_INSERT and table == "payments":
            reached.set()
            released.wait(30)  # bounded: a broken test fails instead of hanging the worker
        return sqlite3.SQLITE_OK

    await db.run(lambda: db.connection.set_authorizer(hold_insert))
    create = asyncio.ensure_future(journal.payments.create_payment(_order("Q1")))
    await until(reached.is_set, 10, "the insert held inside SQLite")
    find = asyncio.ensure_future(journal.payments.find("Q1"))
    thread = asyncio.ensure_future(db.read(_thread_of, "Q1"))
    await asyncio.sleep(0)
    # Queued behind the insert, not answered from the reader's older snapshot.
    assert not find.done()
    assert not thread.done()
    released.set()
    await create
    payment = await find
    assert payment is not None
    assert payment.out_trade_no == "Q1"
    name, count = await thread
    assert name.startswith("facepayd-journal")
    assert count == 1
    await db.run(lambda: db.connection.set_authorizer(None))
    # Idle again: back on the loop.
    assert await db.read(_thread_of, "Q1") == (threading.current_thread().name, 1)


async def test_a_failing_reader_falls_back_to_the_worker(journal: Journal) -> None:
    db = journal.database
    await journal.payments.create_payment(_order("F1"))
    reader = db._reader
    assert reader is not None
    reader.close()  # every statement on it now raises sqlite3.ProgrammingError
    name, count = await db.read(_thread_of, "F1")
    assert name.startswith("facepayd-journal")
    assert count == 1
    payment = await journal.payments.find("F1")
    assert payment is not None


async def test_a_read_error_on_the_worker_too_is_a_journal_error(journal: Journal) -> None:
    def broken(db: sqlite3.Connection) -> None:
        db.execute("SELECT * FROM no_such_table").fetchall()

    with pytest.raises(JournalError) as failed:
        await journal.database.read(broken)
    assert failed.value.reason == "JOURNAL_UNAVAILABLE"


async def test_a_closed_journal_refuses_reads(journal: Journal) -> None:
    await journal.close()
    with pytest.raises(JournalError):
        await journal.payments.find("X1")
