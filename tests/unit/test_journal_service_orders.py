"""The journal's PayScore service orders: pending calls, recorded answers, append-only events."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facepayd.clock import ManualClock
from facepayd.errors import AlreadyExists, NotFound
from facepayd.journal import Journal

PARAMS = {"out_order_no": "PS1", "risk_fund": {"name": "DEPOSIT", "amount": 100}}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


@pytest.fixture
async def journal(path: Path) -> AsyncIterator[Journal]:
    j = await Journal.open(path, clock=ManualClock())
    yield j
    await j.close()


async def test_a_create_is_pending_until_its_answer_is_recorded_and_survives_reopening(
    journal: Journal, path: Path
) -> None:
    record = await journal.service_orders.begin_service_order(
        "PS1", PARAMS, 100, journal_state="CREATING"
    )
    assert (record.journal_state, record.pending, record.answer) == ("CREATING", "create", None)
    assert [r.out_order_no for r in await journal.service_orders.pending_service_orders()] == [
        "PS1"
    ]
    await journal.close()

    reopened = await Journal.open(path, clock=ManualClock())
    try:
        assert [r.out_order_no for r in await reopened.service_orders.pending_service_orders()] == [
            "PS1"
        ]
        answer = {"state": "DOING", "order_id": "1"}
        done = await reopened.service_orders.mark_service_order(
            "PS1", "RECORDED", "answered", answer=answer
        )
        assert (done.pending, done.answer, done.risk_fund_amount) == ("", answer, 100)
        assert await reopened.service_orders.pending_service_orders() == []
        # A query that learns nothing new adds no event.
        same = await reopened.service_orders.mark_service_order(
            "PS1", "RECORDED", "refreshed", answer=answer, only_if_changed=True
        )
        assert same.last_seq == done.last_seq == 2
        kinds = [e.kind for e in await reopened.service_orders.service_order_events("PS1")]
        assert kinds == ["create_requested", "answered"]
    finally:
        await reopened.close()


async def test_an_order_is_not_created_twice_with_different_parameters(journal: Journal) -> None:
    await journal.service_orders.begin_service_order("PS1", PARAMS, 100, journal_state="CREATING")
    other = {**PARAMS, "attach": "x"}
    with pytest.raises(AlreadyExists, match="attach"):
        await journal.service_orders.begin_service_order(
            "PS1", other, 100, journal_state="CREATING"
        )
    # Refused by WeChat Pay (no answer, nothing pending): the number may be reused.
    await journal.service_orders.mark_service_order(
        "PS1", "NOT_CREATED", "rejected", {"code": "NO_AUTH"}
    )
    again = await journal.service_orders.begin_service_order(
        "PS1", other, 100, journal_state="CREATING"
    )
    assert (again.params, again.pending) == (other, "create")


async def test_service_order_events_are_append_only(journal: Journal, path: Path) -> None:
    await journal.service_orders.begin_service_order("PS1", PARAMS, 100, journal_state="CREATING")
    db = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE service_order_events SET kind = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM service_order_events")
    finally:
        db.close()


async def test_unknown_orders(journal: Journal) -> None:
    assert await journal.service_orders.find_service_order("NOPE") is None
    with pytest.raises(NotFound):
        await journal.service_orders.mark_service_order("NOPE", "RECORDED", "answered")
    adopted = await journal.service_orders.adopt_service_order(
        "PS9", {"state": "DONE"}, 500, journal_state="RECORDED"
    )
    assert (adopted.params, adopted.pending, adopted.risk_fund_amount) == ({}, "", 500)
