"""The payment journal: durability settings, append-only events, idempotency, paging, reopening."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facepayd.clock import ManualClock
from facepayd.errors import AlreadyExists, InvalidArgument, NotFound
from facepayd.journal import Journal
from facepayd.journal.migrations import SCHEMA_VERSION
from facepayd.payments.models import EventKind, PaymentEvent, PaymentOrder, PaymentState


def _order(out_trade_no: str = "T1", **overrides: object) -> PaymentOrder:
    fields: dict[str, object] = {"out_trade_no": out_trade_no, "total_fee": 100, "body": "goods"}
    fields.update(overrides)
    return PaymentOrder(**fields)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.db"


@pytest.fixture
async def journal(path: Path, clock: ManualClock) -> AsyncIterator[Journal]:
    j = await Journal.open(path, clock=clock)
    yield j
    await j.close()


async def test_durability_settings_and_private_file(journal: Journal, path: Path) -> None:
    assert await journal.database.settings() == {"journal_mode": "WAL", "synchronous": "FULL"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


async def test_create_is_idempotent_for_same_parameters(
    journal: Journal, clock: ManualClock
) -> None:
    payment, created = await journal.payments.create_payment(
        _order(attach="a"), data={"session_id": "s1"}
    )
    assert created
    assert payment.state is PaymentState.CAPTURING
    assert (payment.last_seq, payment.created_at, payment.attach) == (1, clock.time(), "a")
    await clock.advance(3)
    again, created_again = await journal.payments.create_payment(_order(attach="a"))
    assert not created_again
    assert again == payment
    events = await journal.payments.events("T1")
    assert [(e.seq, e.kind, e.state, e.data) for e in events] == [
        (1, EventKind.SESSION_STARTED, PaymentState.CAPTURING, {"session_id": "s1"})
    ]


async def test_create_with_different_parameters_names_the_fields(journal: Journal) -> None:
    await journal.payments.create_payment(_order())
    with pytest.raises(AlreadyExists) as info:
        await journal.payments.create_payment(_order(total_fee=101, body="other"))
    assert str(info.value) == (
        "out_trade_no T1 exists with different parameters: field(s) body, total_fee"
    )
    assert (await journal.payments.get("T1")).total_fee == 100


async def test_append_updates_row_and_numbers_events(journal: Journal, clock: ManualClock) -> None:
    await journal.payments.create_payment(_order())
    seen: list[PaymentEvent] = []
    journal.payments.add_listener(seen.append)
    await clock.advance(1)
    await journal.payments.append(
        "T1", PaymentState.PAYING, EventKind.FACE_CAPTURED, {"openid": "o1"}, openid="o1"
    )
    await journal.payments.mark_pay_sent("T1")
    await journal.payments.append(
        "T1", PaymentState.PENDING, EventKind.PENDING, {"reason": "USERPAYING"}
    )
    await clock.advance(1)
    last = await journal.payments.append(
        "T1",
        PaymentState.SUCCEEDED,
        EventKind.SUCCEEDED,
        {"transaction_id": "42", "cash_fee": 100},
        transaction_id="42",
        cash_fee=100,
        bank_type="CMC",
    )
    assert (last.seq, last.time) == (4, clock.time())
    payment = await journal.payments.get("T1")
    assert payment.state is PaymentState.SUCCEEDED
    assert payment.final
    assert (payment.last_seq, payment.transaction_id, payment.cash_fee, payment.openid) == (
        4,
        "42",
        100,
        "o1",
    )
    assert payment.pay_sent_at == clock.time() - 1
    assert payment.updated_at == clock.time()
    assert [e.seq for e in await journal.payments.events("T1")] == [1, 2, 3, 4]
    assert [e.seq for e in await journal.payments.events("T1", after_seq=2)] == [3, 4]
    assert [e.seq for e in seen] == [2, 3, 4]


async def test_forbidden_transitions_and_columns_change_nothing(journal: Journal) -> None:
    await journal.payments.create_payment(_order())
    await journal.payments.append(
        "T1", PaymentState.CANCELLED, EventKind.CANCELLED, {"reason": "USER_CANCEL"}
    )
    with pytest.raises(InvalidArgument):
        await journal.payments.append("T1", PaymentState.SUCCEEDED, EventKind.SUCCEEDED)
    with pytest.raises(ValueError, match="pay_sent_at"):
        await journal.payments.append("T1", PaymentState.FAILED, EventKind.FAILED, pay_sent_at=1)
    with pytest.raises(NotFound):
        await journal.payments.append("nope", PaymentState.PAYING, EventKind.FACE_CAPTURED)
    payment = await journal.payments.get("T1")
    assert (payment.state, payment.last_seq) == (PaymentState.CANCELLED, 2)
    assert len(await journal.payments.events("T1")) == 2


async def test_pay_sent_is_recorded_at_most_once(journal: Journal) -> None:
    await journal.payments.create_payment(_order())
    with pytest.raises(InvalidArgument, match="not PAYING"):
        await journal.payments.mark_pay_sent("T1")
    await journal.payments.append("T1", PaymentState.PAYING, EventKind.FACE_CAPTURED)
    first = await journal.payments.mark_pay_sent("T1")
    assert first.pay_sent_at is not None
    with pytest.raises(InvalidArgument, match="already attempted"):
        await journal.payments.mark_pay_sent("T1")
    assert (await journal.payments.get("T1")).pay_sent_at == first.pay_sent_at


async def test_events_are_append_only(journal: Journal, path: Path) -> None:
    await journal.payments.create_payment(_order())
    with sqlite3.connect(path) as other:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            other.execute("UPDATE payment_events SET state = 'SUCCEEDED'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            other.execute("DELETE FROM payment_events")
    assert len(await journal.payments.events("T1")) == 1


async def test_get_unknown_is_not_found(journal: Journal) -> None:
    with pytest.raises(NotFound):
        await journal.payments.get("missing")
    assert await journal.payments.find("missing") is None


async def test_list_pages_newest_first_without_gaps(journal: Journal, clock: ManualClock) -> None:
    names = []
    for i in range(7):
        name = f"P{i}"
        names.append(name)
        await journal.payments.create_payment(_order(name))
        if i % 2:
            await clock.advance(1)  # pairs share created_at: the out_trade_no breaks the tie
    await journal.payments.append("P3", PaymentState.CANCELLED, EventKind.CANCELLED)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page, token = await journal.payments.list(page_size=3, page_token=token)
        seen.extend(p.out_trade_no for p in page)
        pages += 1
        if not token:
            break
        # A payment created after paging started lands before the cursor, not inside the pages.
        if pages == 1:
            await journal.payments.create_payment(_order("LATE"))
    assert seen == ["P6", "P5", "P4", "P3", "P2", "P1", "P0"]
    assert pages == 3

    cancelled, token = await journal.payments.list(states=[PaymentState.CANCELLED])
    assert [p.out_trade_no for p in cancelled] == ["P3"]
    assert token == ""
    start = (await journal.payments.get("P2")).created_at
    window, _ = await journal.payments.list(created_after=start, created_before=start + 2)
    assert [p.out_trade_no for p in window] == ["P5", "P4", "P3", "P2"]


@pytest.mark.parametrize("token", ["not-base64!", "bm90IGpzb24", "WzEsMiwzXQ"])
async def test_list_rejects_bad_tokens_and_sizes(journal: Journal, token: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await journal.payments.list(page_token=token)
    assert info.value.field == "page_token"
    for size in (0, 201):
        with pytest.raises(InvalidArgument):
            await journal.payments.list(page_size=size)


async def test_reopen_keeps_everything(path: Path, clock: ManualClock) -> None:
    first = await Journal.open(path, clock=clock)
    await first.payments.create_payment(_order("A"))
    await first.payments.create_payment(_order("B"))
    await first.payments.append("B", PaymentState.PAYING, EventKind.FACE_CAPTURED)
    await first.payments.mark_pay_sent("B")
    await first.payments.append(
        "B", PaymentState.PENDING, EventKind.PENDING, {"reason": "SYSTEMERROR"}
    )
    before = await first.payments.get("B")
    await first.close()

    second = await Journal.open(path, clock=clock)
    try:
        assert await second.payments.get("B") == before
        assert [e.kind for e in await second.payments.events("B")] == [
            EventKind.SESSION_STARTED,
            EventKind.FACE_CAPTURED,
            EventKind.PENDING,
        ]
        assert [p.out_trade_no for p in await second.payments.unfinished()] == ["A", "B"]
        event = await second.payments.append("B", PaymentState.SUCCEEDED, EventKind.SUCCEEDED)
        assert event.seq == 4
        assert [p.out_trade_no for p in await second.payments.unfinished()] == ["A"]
    finally:
        await second.close()
