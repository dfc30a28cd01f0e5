"""The payment journal: durability settings, append-only events, idempotency, paging, reopening."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import stat
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from facepayd.clock import ManualClock
from facepayd.errors import AlreadyExists, InvalidArgument, JournalError, NotFound, WrongState
from facepayd.journal import Journal
from facepayd.journal.migrations import MIGRATIONS, SCHEMA_VERSION
from facepayd.journal.payments import MAX_PAGE_TOKEN, PaymentStore
from facepayd.payments.models import (
    CONDITIONS,
    TRANSITIONS,
    CodeStart,
    EventKind,
    PaymentEvent,
    PaymentOrder,
    PaymentSource,
    PaymentState,
)
from tests.helpers import until


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
    with pytest.raises(WrongState):
        await journal.payments.append("T1", PaymentState.SUCCEEDED, EventKind.SUCCEEDED)
    with pytest.raises(ValueError, match="pay_sent_at"):
        await journal.payments.append("T1", PaymentState.FAILED, EventKind.FAILED, pay_sent_at=1)
    with pytest.raises(NotFound):
        await journal.payments.append("nope", PaymentState.PAYING, EventKind.FACE_CAPTURED)
    payment = await journal.payments.get("T1")
    assert (payment.state, payment.last_seq) == (PaymentState.CANCELLED, 2)
    assert len(await journal.payments.events("T1")) == 2


def _paths() -> dict[PaymentState, list[PaymentState]]:
    """A shortest path of allowed transitions from CAPTURING to every state."""
    paths = {PaymentState.CAPTURING: [PaymentState.CAPTURING]}
    queue = deque([PaymentState.CAPTURING])
    while queue:
        state = queue.popleft()
        for target in sorted(TRANSITIONS[state]):
            if target not in paths:
                paths[target] = [*paths[state], target]
                queue.append(target)
    return paths


def _kind(state: PaymentState) -> EventKind:
    return {
        PaymentState.CAPTURING: EventKind.SESSION_STARTED,
        PaymentState.PAYING: EventKind.FACE_CAPTURED,
        PaymentState.PENDING: EventKind.PENDING,
        PaymentState.REVERSING: EventKind.PENDING,
        PaymentState.SUCCEEDED: EventKind.SUCCEEDED,
        PaymentState.FAILED: EventKind.FAILED,
        PaymentState.REVERSED: EventKind.REVERSED,
        PaymentState.CANCELLED: EventKind.CANCELLED,
        PaymentState.CLOSED: EventKind.CLOSED,
        PaymentState.NEEDS_ATTENTION: EventKind.NEEDS_ATTENTION,
    }[state]


def _attention(state: PaymentState) -> dict[str, str]:
    if state is PaymentState.NEEDS_ATTENTION:
        return {"attention_reason": "UNRESOLVED", "attention_action": "check it"}
    return {}


async def test_transition_table_every_allowed_change_taken_every_other_refused(
    journal: Journal,
) -> None:
    paths = _paths()
    assert set(paths) == set(PaymentState), "every state is reachable from CAPTURING"
    taken: set[tuple[PaymentState, PaymentState]] = set()
    # A conditional edge is walked twice: with its reason in the newest event, and without.
    walks = [
        (source, target, reason)
        for source in PaymentState
        for target in PaymentState
        for reason in (
            (CONDITIONS[(source, target)], "") if (source, target) in CONDITIONS else ("",)
        )
    ]
    for n, (source, target, reason) in enumerate(walks):
        out_trade_no = f"W{n}"
        await journal.payments.create_payment(_order(out_trade_no))
        steps = paths[source][1:]
        for i, step in enumerate(steps):
            data = {"reason": reason} if reason and i == len(steps) - 1 else {}
            await journal.payments.append(out_trade_no, step, _kind(step), data, **_attention(step))
        before = await journal.payments.get(out_trade_no)
        assert before.state is source
        conditional = (source, target) in CONDITIONS
        if target in TRANSITIONS[source] and (not conditional or reason):
            event = await journal.payments.append(
                out_trade_no, target, _kind(target), **_attention(target)
            )
            assert event.state is target
            assert (await journal.payments.get(out_trade_no)).state is target
            taken.add((source, target))
        else:
            refused = pytest.raises(WrongState, match=f"from {source} to {target}")
            with structlog.testing.capture_logs() as logs, refused:
                await journal.payments.append(
                    out_trade_no, target, _kind(target), **_attention(target)
                )
            assert [e["log_level"] for e in logs if e["event"] == "payment_transition_refused"] == [
                "error"
            ]
            assert await journal.payments.get(out_trade_no) == before
    assert taken == {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    assert set(CONDITIONS) <= taken
    assert {s for s in PaymentState if not TRANSITIONS[s]} == PaymentState.final_states() - {
        PaymentState.SUCCEEDED,
        PaymentState.CANCELLED,
    }


async def test_a_face_sale_cancelled_to_scan_continues_as_a_code_payment_and_no_other(
    journal: Journal, clock: ManualClock
) -> None:
    for no, reason in (("SCAN", "SCAN_PAYMENT"), ("USER", "USER_CANCEL")):
        await journal.payments.create_payment(_order(no))
        await journal.payments.append(
            no, PaymentState.CANCELLED, EventKind.CANCELLED, {"reason": reason}
        )
    await clock.advance(1)
    with pytest.raises(AlreadyExists, match="total_fee"):
        await journal.payments.begin_code_payment(_order("SCAN", total_fee=101))
    payment, start = await journal.payments.begin_code_payment(_order("SCAN"))
    assert (start, payment.state, payment.source, payment.last_seq, payment.final) == (
        CodeStart.CONTINUED,
        PaymentState.PAYING,
        PaymentSource.CODE,
        3,
        False,
    )
    events = await journal.payments.events("SCAN")
    assert [(e.seq, e.state, e.kind) for e in events] == [
        (1, PaymentState.CAPTURING, EventKind.SESSION_STARTED),
        (2, PaymentState.CANCELLED, EventKind.CANCELLED),
        (3, PaymentState.PAYING, EventKind.CODE_RECEIVED),
    ]
    assert events[-1].data == {"source": "CODE", "continued": 1}
    again, start = await journal.payments.begin_code_payment(_order("SCAN"))
    assert (start, again) == (CodeStart.EXISTING, payment)
    # Any other cancel reason: the sale is over, its number stays CANCELLED.
    before = await journal.payments.get("USER")
    with pytest.raises(WrongState, match="SCAN_PAYMENT"):
        await journal.payments.begin_code_payment(_order("USER"))
    assert await journal.payments.get("USER") == before
    # A face payment still capturing is not continued either.
    await journal.payments.create_payment(_order("LIVE"))
    with pytest.raises(WrongState, match="CAPTURING"):
        await journal.payments.begin_code_payment(_order("LIVE"))
    # A new number is a code payment from the start: PAYING, seq 1, source CODE.
    fresh, start = await journal.payments.begin_code_payment(_order("NEW"))
    assert (start, fresh.state, fresh.source, fresh.last_seq) == (
        CodeStart.CREATED,
        PaymentState.PAYING,
        PaymentSource.CODE,
        1,
    )
    # Whichever writer takes the edge (the one setter checks it), the source switches in the
    # same step.
    await journal.payments.create_payment(_order("SCAN2"))
    await journal.payments.append(
        "SCAN2", PaymentState.CANCELLED, EventKind.CANCELLED, {"reason": "SCAN_PAYMENT"}
    )
    await journal.payments.append("SCAN2", PaymentState.PAYING, EventKind.CODE_RECEIVED)
    continued = await journal.payments.get("SCAN2")
    assert (continued.state, continued.source) == (PaymentState.PAYING, PaymentSource.CODE)


async def test_needs_attention_keeps_reason_and_action_until_it_is_left(
    journal: Journal,
) -> None:
    await journal.payments.create_payment(_order())
    for state in (PaymentState.PAYING, PaymentState.PENDING, PaymentState.REVERSING):
        await journal.payments.append("T1", state, _kind(state))
    with pytest.raises(ValueError, match="attention_reason"):
        await journal.payments.append(
            "T1", PaymentState.NEEDS_ATTENTION, _kind(PaymentState.NEEDS_ATTENTION)
        )
    await journal.payments.append(
        "T1",
        PaymentState.NEEDS_ATTENTION,
        EventKind.NEEDS_ATTENTION,
        {"reason": "REVERSE_EXPIRE", "action": "refund it"},
        attention_reason="REVERSE_EXPIRE",
        attention_action="refund it",
    )
    payment = await journal.payments.get("T1")
    assert (payment.attention_reason, payment.attention_action) == ("REVERSE_EXPIRE", "refund it")
    assert not payment.final
    assert payment.settled
    assert [p.out_trade_no for p in await journal.payments.unfinished()] == ["T1"]
    page, _ = await journal.payments.list(states=[PaymentState.NEEDS_ATTENTION])
    assert [p.attention_reason for p in page] == ["REVERSE_EXPIRE"]
    await journal.payments.append("T1", PaymentState.REVERSED, EventKind.REVERSED)
    payment = await journal.payments.get("T1")
    assert (payment.attention_reason, payment.attention_action, payment.final) == ("", "", True)


async def test_a_version_2_journal_gains_the_attention_columns(
    path: Path, clock: ManualClock
) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as old:
        for statements in MIGRATIONS[:2]:
            for statement in statements:
                old.execute(statement)
        old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        old.execute("INSERT INTO schema_version (version) VALUES (2)")
        old.execute(
            "INSERT INTO payments (out_trade_no, params, params_hash, state, total_fee, body,"
            " created_at, updated_at, final, last_seq) VALUES ('OLD', ?, 'h', 'PENDING', 100,"
            " 'goods', 1, 1, 0, 3)",
            ('{"out_trade_no": "OLD", "total_fee": 100, "body": "goods"}',),
        )
    path.chmod(0o600)
    journal = await Journal.open(path, clock=clock)
    try:
        old_payment = await journal.payments.get("OLD")
        assert (old_payment.state, old_payment.attention_reason) == (PaymentState.PENDING, "")
    finally:
        await journal.close()
    with sqlite3.connect(path) as reopened:
        assert reopened.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)
        ]


async def test_pay_sent_is_recorded_at_most_once(journal: Journal) -> None:
    await journal.payments.create_payment(_order())
    with pytest.raises(WrongState, match="not PAYING"):
        await journal.payments.mark_pay_sent("T1")
    await journal.payments.append("T1", PaymentState.PAYING, EventKind.FACE_CAPTURED)
    first = await journal.payments.mark_pay_sent("T1")
    assert first.pay_sent_at is not None
    with pytest.raises(WrongState, match="already attempted"):
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


def _unsigned(raw: str) -> str:
    """A cursor as the unsigned codec wrote it, with a made-up signature."""
    encoded = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    return f"{encoded}.AAAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.parametrize(
    "token",
    [
        "not-base64!",
        "bm90IGpzb24",
        "WzEsMiwzXQ",
        _unsigned("[" + "9" * 320 + ',"P1"]'),  # once an OverflowError in float()
        _unsigned('[1e999,"P1"]'),
        "A" * 257,
        ".",
    ],
)
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


# ---------------------------------------------------------------- health and pruning


def _deny_writes(action: int, *_: object) -> int:
    writes = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
    return sqlite3.SQLITE_DENY if action in writes else sqlite3.SQLITE_OK


async def _writes(journal: Journal, *, allowed: bool) -> None:
    db = journal.database
    await db.run(lambda: db.connection.set_authorizer(None if allowed else _deny_writes))


async def test_health_goes_down_on_a_failed_write_and_a_probe_brings_it_back(
    journal: Journal, clock: ManualClock
) -> None:
    changes: list[bool] = []
    journal.health.add_listener(lambda: changes.append(journal.health.writable))
    await _writes(journal, allowed=False)
    await journal.payments.find("T1")  # a read says nothing about writes
    assert journal.health.writable
    with pytest.raises(JournalError):
        await journal.payments.create_payment(_order())
    assert not journal.health.writable
    interval = journal.health.probe_interval
    await clock.advance(interval * 3)  # probes fail: still down, one probe per interval
    await until(lambda: clock.sleepers == 1, 5, "the probe asleep")
    assert changes == [False]
    await _writes(journal, allowed=True)
    await clock.advance(interval)
    await until(lambda: journal.health.writable, 5, "the probe's success")
    assert changes == [False, True]
    await until(lambda: clock.sleepers == 0, 5, "the probe ended")


async def test_a_disk_failing_every_other_write_cannot_make_health_flap(
    journal: Journal, clock: ManualClock
) -> None:
    changes: list[bool] = []
    journal.health.add_listener(lambda: changes.append(journal.health.writable))
    for n in range(20):
        await _writes(journal, allowed=n % 2 == 1)
        with contextlib.suppress(JournalError):
            await journal.payments.create_payment(_order(f"N{n}"))
    # Writes succeeded in between, but never a whole interval without a failure: still down.
    assert changes == [False]
    assert len((await journal.payments.list(page_size=200))[0]) == 10
    await _writes(journal, allowed=True)
    await journal.payments.create_payment(_order("NOW"))
    assert not journal.health.writable, "up again only once an interval passed without failure"
    await clock.advance(journal.health.probe_interval)
    await until(lambda: journal.health.writable, 5, "writable again")
    assert changes == [False, True]


async def test_size_is_the_bytes_of_the_database_files(journal: Journal, path: Path) -> None:
    before = journal.payments.size_bytes()
    await journal.payments.create_payment(_order(), data={"note": "x" * 4000})
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    assert journal.payments.size_bytes() == sum(f.stat().st_size for f in files if f.exists())
    assert journal.payments.size_bytes() > before


async def _journal_in(journal: Journal, out_trade_no: str, path: list[PaymentState]) -> None:
    await journal.payments.create_payment(_order(out_trade_no))
    for state in path[1:]:
        await journal.payments.append(out_trade_no, state, _kind(state), **_attention(state))


async def test_prune_deletes_only_final_payments_and_their_events(
    journal: Journal, clock: ManualClock, path: Path
) -> None:
    paths = _paths()
    for state in PaymentState:
        await _journal_in(journal, state.value, paths[state])
    await clock.advance(10)
    await _journal_in(journal, "RECENT", paths[PaymentState.SUCCEEDED])
    pruned = await journal.payments.prune(clock.time() - 5, limit=2)
    assert pruned == 2
    while await journal.payments.prune(clock.time() - 5, limit=2):
        pass
    kept = {p.out_trade_no for p in (await journal.payments.list(page_size=200))[0]}
    assert kept == {s.value for s in PaymentState if not s.final} | {"RECENT"}
    for state in PaymentState.final_states():
        assert await journal.payments.find(state.value) is None
        assert await journal.payments.events(state.value) == []
    with sqlite3.connect(path) as other:
        # The schema itself refuses the rest: unfinished rows and unmarked events stay.
        with pytest.raises(sqlite3.IntegrityError, match="pruned"):
            other.execute("UPDATE payments SET pruning = 1 WHERE out_trade_no = 'NEEDS_ATTENTION'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            other.execute("DELETE FROM payment_events WHERE out_trade_no = 'RECENT'")
        with pytest.raises(sqlite3.IntegrityError, match="deleted"):
            other.execute("DELETE FROM payments WHERE out_trade_no = 'RECENT'")
    assert len(await journal.payments.events("RECENT")) == len(paths[PaymentState.SUCCEEDED])


async def _first_token(journal: Journal, **filters: object) -> str:
    for i in range(3):
        await journal.payments.create_payment(_order(f"T{i}"))
    _, token = await journal.payments.list(page_size=1, **filters)  # type: ignore[arg-type]
    assert token
    return token


async def test_a_token_only_pages_the_query_that_issued_it(journal: Journal) -> None:
    token = await _first_token(journal, states=[PaymentState.CAPTURING])
    page, _ = await journal.payments.list(
        page_size=1, states=[PaymentState.CAPTURING], page_token=token
    )
    assert [p.out_trade_no for p in page] == ["T1"]
    other_queries: list[dict[str, object]] = [
        {},
        {"states": [PaymentState.CANCELLED]},
        {"states": [PaymentState.CAPTURING], "created_after": 0.0},
        {"states": [PaymentState.CAPTURING], "created_before": 1e10},
    ]
    for filters in other_queries:
        with pytest.raises(InvalidArgument) as info:
            await journal.payments.list(page_token=token, **filters)  # type: ignore[arg-type]
        assert info.value.field == "page_token"


async def test_an_edited_token_or_one_from_another_run_is_refused(
    journal: Journal, path: Path, clock: ManualClock
) -> None:
    token = await _first_token(journal)
    _, _, mac = token.partition(".")
    edited = base64.urlsafe_b64encode(b'[1.0,"T9"]').decode().rstrip("=") + "." + mac
    with pytest.raises(InvalidArgument):
        await journal.payments.list(page_token=edited)
    # Another store over the same file is another daemon run: its key differs.
    rerun = PaymentStore(journal.database, clock, journal.health)
    with pytest.raises(InvalidArgument):
        await rerun.list(page_token=token)
    assert len(token) <= MAX_PAGE_TOKEN


async def test_a_stored_coupon_with_a_newer_daemon_s_key_still_reads(tmp_path: Path) -> None:
    clock = ManualClock()
    journal = await Journal.open(tmp_path / "j.sqlite3", clock=clock)
    try:
        await journal.payments.create_payment(PaymentOrder("NC1", 100, "goods"))
        stored = (
            '{"coupon_fee":10,"coupons":[{"coupon_id":"C1","coupon_type":"CASH",'
            '"coupon_fee":10,"coupon_batch":"B9"}],"rebate":"x"}'
        )
        db = journal.database

        def write() -> None:
            # As a newer daemon (then a downgrade) left it: keys this release does not know.
            db.connection.execute(
                "UPDATE payments SET paid_details = ? WHERE out_trade_no = ?", (stored, "NC1")
            )
            db.connection.commit()

        await db.run(write)
        payment = await journal.payments.get("NC1")
        assert payment.paid.coupon_fee == 10
        assert [(c.coupon_id, c.coupon_type, c.coupon_fee) for c in payment.paid.coupons] == [
            ("C1", "CASH", 10)
        ]
    finally:
        await journal.close()
