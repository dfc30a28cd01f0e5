"""The journal's transaction guard: a failed COMMIT is rolled back, not left open."""

from __future__ import annotations

import sqlite3

import pytest

from facepayd.journal.db import transaction


def test_a_failed_commit_leaves_no_transaction_open() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    # A deferred foreign key is checked at COMMIT: the one way to make COMMIT itself fail here.
    db.execute(
        "CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(sqlite3.IntegrityError), transaction(db):
        db.execute("INSERT INTO child (parent) VALUES (7)")
    assert not db.in_transaction
    assert db.execute("SELECT count(*) FROM child").fetchone() == (0,)
    with transaction(db):
        db.execute("INSERT INTO parent (id) VALUES (7)")
        db.execute("INSERT INTO child (parent) VALUES (7)")
    assert db.execute("SELECT count(*) FROM child").fetchone() == (1,)
