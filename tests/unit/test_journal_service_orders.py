"""The journal's PayScore service orders: pending calls, recorded answers, append-only events."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facepayd.clock import ManualClock
from facepayd.errors import AlreadyExists, NotFound, WrongState
from facepayd.journal import Journal
from facepayd.payscore.models import JOURNAL_INITIAL, JOURNAL_TRANSITIONS, JournalState

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


async def _order_in(journal: Journal, no: str, state: JournalState) -> None:
    """A service order journaled in state, reached through allowed changes only."""
    store = journal.service_orders
    if state is JournalState.CREATING:
        await store.begin_service_order(no, PARAMS, 100, journal_state=state)
        return
    if state in JOURNAL_INITIAL:
        await store.adopt_service_order(no, {"state": "CREATED"}, 100, journal_state=state)
        return
    if state is JournalState.NOT_CREATED:
        await store.begin_service_order(no, PARAMS, 100, journal_state=JournalState.CREATING)
        await store.mark_service_order(no, state, "not_found")
        return
    await store.adopt_service_order(
        no, {"state": "CREATED"}, 100, journal_state=JournalState.RECORDED
    )
    await store.mark_service_order(no, state, "requested", pending="complete")


async def test_the_service_order_table_is_walked_every_allowed_change_taken_every_other_refused(
    journal: Journal,
) -> None:
    store = journal.service_orders
    for n, (current, wanted) in enumerate((a, b) for a in JournalState for b in JournalState):
        no = f"PS{n}"
        await _order_in(journal, no, current)
        before = await store.find_service_order(no)
        assert before is not None
        assert before.journal_state == current
        if wanted in JOURNAL_TRANSITIONS[current]:
            after = await store.mark_service_order(no, wanted, "walk")
            assert after.journal_state == wanted
        else:
            with pytest.raises(WrongState):
                await store.mark_service_order(no, wanted, "walk")
            unchanged = await store.find_service_order(no)
            assert unchanged == before


async def test_a_service_order_starts_only_created_or_adopted(journal: Journal) -> None:
    store = journal.service_orders
    with pytest.raises(WrongState):
        await store.begin_service_order("PSX", PARAMS, 100, journal_state=JournalState.COMPLETING)
    with pytest.raises(WrongState):
        await store.adopt_service_order(
            "PSY", {"state": "CREATED"}, 100, journal_state=JournalState.NOT_CREATED
        )
    assert await store.find_service_order("PSX") is None
    assert await store.find_service_order("PSY") is None


async def test_sent_at_is_when_a_request_of_the_pending_call_may_last_have_left(
    journal: Journal,
) -> None:
    store = journal.service_orders
    clock = store._clock
    assert isinstance(clock, ManualClock)
    begun = await store.begin_service_order("PS1", PARAMS, 100, journal_state="CREATING")
    assert begun.sent_at == clock.time()
    await clock.advance(5)
    kept = await store.mark_service_order(
        "PS1", "CREATING", "refreshed_in_flight", pending="create", answer={"state": "x"}
    )
    assert kept.sent_at == begun.sent_at, "a query does not move the in-flight bound"
    again = await store.mark_service_order(
        "PS1", "CREATING", "outcome_unknown", pending="create", sent=True
    )
    assert again.sent_at == clock.time()
    done = await store.mark_service_order("PS1", "RECORDED", "answered", answer={"state": "y"})
    assert done.sent_at is None
