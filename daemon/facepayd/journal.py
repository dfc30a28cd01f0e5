"""The crash-safe payment journal: SQLite (WAL, synchronous=FULL) written from one worker thread.

Each state change updates the payment's row and appends its event in one transaction, and is
committed before the external call it leads to. Events are append-only (triggers refuse UPDATE
and DELETE). Face codes, auth codes and authinfo are never written here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import structlog

from facepayd.clock import Clock, SystemClock
from facepayd.errors import AlreadyExists, InvalidArgument, NotFound
from facepayd.payments.models import (
    TRANSITIONS,
    EventKind,
    Payment,
    PaymentEvent,
    PaymentOrder,
    PaymentState,
)

__all__ = [
    "MAX_PAGE_SIZE",
    "SCHEMA_VERSION",
    "Journal",
    "JournalListener",
    "ServiceOrderEvent",
    "ServiceOrderRecord",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")
JournalListener = Callable[[PaymentEvent], None]
# Aliases: inside Journal, the name "list" is the method.
PaymentList = list[Payment]
EventList = list[PaymentEvent]

MAX_PAGE_SIZE = 200
_PAGE_CURSOR_RULE = "is not a token from a previous ListPayments"

# Append a tuple of statements to add a schema version; never edit a released one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE payments (
            out_trade_no   TEXT PRIMARY KEY,
            params         TEXT NOT NULL,
            params_hash    TEXT NOT NULL,
            state          TEXT NOT NULL,
            total_fee      INTEGER NOT NULL,
            body           TEXT NOT NULL,
            attach         TEXT NOT NULL DEFAULT '',
            transaction_id TEXT NOT NULL DEFAULT '',
            openid         TEXT NOT NULL DEFAULT '',
            bank_type      TEXT NOT NULL DEFAULT '',
            cash_fee       INTEGER NOT NULL DEFAULT 0,
            fee_type       TEXT NOT NULL DEFAULT '',
            time_end       TEXT NOT NULL DEFAULT '',
            err_code       TEXT NOT NULL DEFAULT '',
            err_code_des   TEXT NOT NULL DEFAULT '',
            created_at     REAL NOT NULL,
            updated_at     REAL NOT NULL,
            pay_sent_at    REAL,
            final          INTEGER NOT NULL DEFAULT 0,
            last_seq       INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX payments_by_created ON payments (created_at, out_trade_no)",
        "CREATE INDEX payments_unfinished ON payments (created_at) WHERE final = 0",
        """
        CREATE TABLE payment_events (
            out_trade_no TEXT NOT NULL REFERENCES payments (out_trade_no),
            seq          INTEGER NOT NULL,
            time         REAL NOT NULL,
            state        TEXT NOT NULL,
            kind         TEXT NOT NULL,
            data         TEXT NOT NULL,
            PRIMARY KEY (out_trade_no, seq)
        ) WITHOUT ROWID
        """,
        """
        CREATE TRIGGER payment_events_no_update BEFORE UPDATE ON payment_events
        BEGIN SELECT RAISE(ABORT, 'payment_events is append-only'); END
        """,
        """
        CREATE TRIGGER payment_events_no_delete BEFORE DELETE ON payment_events
        BEGIN SELECT RAISE(ABORT, 'payment_events is append-only'); END
        """,
    ),
    # 2: PayScore service orders. `pending` names the call whose answer is not recorded yet
    # ('' when none): such an order is resolved by a query after a restart.
    (
        """
        CREATE TABLE service_orders (
            out_order_no     TEXT PRIMARY KEY,
            params           TEXT NOT NULL,
            params_hash      TEXT NOT NULL,
            journal_state    TEXT NOT NULL,
            pending          TEXT NOT NULL DEFAULT '',
            risk_fund_amount INTEGER,
            answer           TEXT,
            created_at       REAL NOT NULL,
            updated_at       REAL NOT NULL,
            last_seq         INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX service_orders_pending ON service_orders (created_at) WHERE pending != ''",
        """
        CREATE TABLE service_order_events (
            out_order_no  TEXT NOT NULL REFERENCES service_orders (out_order_no),
            seq           INTEGER NOT NULL,
            time          REAL NOT NULL,
            journal_state TEXT NOT NULL,
            kind          TEXT NOT NULL,
            data          TEXT NOT NULL,
            PRIMARY KEY (out_order_no, seq)
        ) WITHOUT ROWID
        """,
        """
        CREATE TRIGGER service_order_events_no_update BEFORE UPDATE ON service_order_events
        BEGIN SELECT RAISE(ABORT, 'service_order_events is append-only'); END
        """,
        """
        CREATE TRIGGER service_order_events_no_delete BEFORE DELETE ON service_order_events
        BEGIN SELECT RAISE(ABORT, 'service_order_events is append-only'); END
        """,
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Result columns a state change may set; pay_sent_at has its own guarded call.
_ROW_UPDATES = frozenset(
    {
        "transaction_id",
        "openid",
        "bank_type",
        "cash_fee",
        "fee_type",
        "time_end",
        "err_code",
        "err_code_des",
    }
)
_INT_COLUMNS = frozenset({"cash_fee"})
_ORDER_FIELDS = frozenset(f.name for f in dataclasses.fields(PaymentOrder))
_PAYMENT_COLUMNS = (
    "params, state, transaction_id, openid, bank_type, cash_fee, fee_type, time_end, "
    "err_code, err_code_des, created_at, updated_at, pay_sent_at, last_seq"
)


class Journal:
    """Payments and their events in SQLite; every call runs on one dedicated worker thread."""

    def __init__(
        self,
        path: Path,
        executor: concurrent.futures.ThreadPoolExecutor,
        connection: sqlite3.Connection,
        clock: Clock,
    ) -> None:
        """Use Journal.open."""
        self._path = path
        self._executor = executor
        self._db = connection
        self._clock = clock
        self._listeners: list[JournalListener] = []
        self._closed = False

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, clock: Clock | None = None) -> Journal:
        """Open (creating and migrating as needed) the journal at path."""
        db_path = Path(path)
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="facepayd-journal"
        )
        loop = asyncio.get_running_loop()
        try:
            connection = await loop.run_in_executor(executor, _connect, db_path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db_path, executor, connection, clock or SystemClock())

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def add_listener(self, listener: JournalListener) -> None:
        """Call listener on the event loop with every event once it is committed."""
        self._listeners.append(listener)

    async def close(self) -> None:
        """Finish queued writes, close the database and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await asyncio.shield(loop.run_in_executor(self._executor, self._db.close))
        finally:
            self._executor.shutdown(wait=False)

    async def settings(self) -> dict[str, str]:
        """journal_mode and synchronous as SQLite reports them on the journal's connection."""
        settings: dict[str, str] = await self._run(self._settings)
        return settings

    async def create_payment(
        self, order: PaymentOrder, *, data: Mapping[str, str | int] | None = None
    ) -> tuple[Payment, bool]:
        """Journal a new payment (CAPTURING, session_started), or return the same-parameter one."""
        now = self._clock.time()
        payment, event = await self._run(self._create_payment, order, dict(data or {}), now)
        if event is not None:
            self._notify(event)
        return payment, event is not None

    async def append(
        self,
        out_trade_no: str,
        state: PaymentState,
        kind: EventKind,
        data: Mapping[str, str | int] | None = None,
        **row_updates: str | int,
    ) -> PaymentEvent:
        """Move a payment to state and append its event, in one transaction."""
        unknown = set(row_updates) - _ROW_UPDATES
        if unknown:
            raise ValueError(f"not a payment result column: {', '.join(sorted(unknown))}")
        now = self._clock.time()
        event: PaymentEvent = await self._run(
            self._append, out_trade_no, state, kind, dict(data or {}), row_updates, now
        )
        self._notify(event)
        return event

    async def mark_pay_sent(self, out_trade_no: str, at: float | None = None) -> Payment:
        """Record that micropay is about to be sent (at: wall time); refused if it ever was."""
        now = self._clock.time() if at is None else at
        payment: Payment = await self._run(self._mark_pay_sent, out_trade_no, now)
        return payment

    async def get(self, out_trade_no: str) -> Payment:
        """The payment, or NotFound."""
        payment = await self.find(out_trade_no)
        if payment is None:
            raise NotFound(f"no payment with out_trade_no {out_trade_no}")
        return payment

    async def find(self, out_trade_no: str) -> Payment | None:
        """The payment, or None."""
        payment: Payment | None = await self._run(self._find, out_trade_no)
        return payment

    async def events(self, out_trade_no: str, after_seq: int = 0) -> EventList:
        """The payment's events with seq > after_seq, in order."""
        events: EventList = await self._run(self._events, out_trade_no, after_seq)
        return events

    async def list(
        self,
        states: Iterable[PaymentState] = (),
        created_after: float | None = None,
        created_before: float | None = None,
        page_size: int = 50,
        page_token: str = "",
    ) -> tuple[PaymentList, str]:
        """Payments newest first, created_after <= created_at < created_before; next token or ""."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
        cursor = _decode_token(page_token) if page_token else None
        result: tuple[PaymentList, str] = await self._run(
            self._list, tuple(states), created_after, created_before, page_size, cursor
        )
        return result

    async def unfinished(self) -> PaymentList:
        """Every payment not in a final state, oldest first."""
        payments: PaymentList = await self._run(self._unfinished)
        return payments

    # ------------------------------------------------------------------ worker thread

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("the journal is closed")
        loop = asyncio.get_running_loop()
        # Shielded: a cancelled caller must not lose track of a write the worker completes.
        return await asyncio.shield(loop.run_in_executor(self._executor, fn, *args))

    def _settings(self) -> dict[str, str]:
        mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = self._db.execute("PRAGMA synchronous").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return {"journal_mode": str(mode).upper(), "synchronous": names.get(synchronous, "?")}

    def _notify(self, event: PaymentEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("journal_listener_failed", out_trade_no=event.out_trade_no)

    def _create_payment(
        self, order: PaymentOrder, data: dict[str, str | int], now: float
    ) -> tuple[Payment, PaymentEvent | None]:
        params = order.to_dict()
        params_json = _canonical(params)
        params_hash = hashlib.sha256(params_json.encode()).hexdigest()
        with _transaction(self._db):
            row = self._db.execute(
                "SELECT params, params_hash FROM payments WHERE out_trade_no = ?",
                (order.out_trade_no,),
            ).fetchone()
            if row is not None:
                if row[1] != params_hash:
                    stored = json.loads(row[0])
                    differ = sorted(k for k in params if stored.get(k) != params[k])
                    raise AlreadyExists(
                        f"out_trade_no {order.out_trade_no} exists with different parameters: "
                        f"field(s) {', '.join(differ) or 'unknown'}"
                    )
                return self._require(order.out_trade_no), None
            self._db.execute(
                "INSERT INTO payments (out_trade_no, params, params_hash, state, total_fee, body,"
                " attach, created_at, updated_at, final, last_seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 1)",
                (
                    order.out_trade_no,
                    params_json,
                    params_hash,
                    PaymentState.CAPTURING.value,
                    order.total_fee,
                    order.body,
                    order.attach,
                    now,
                    now,
                ),
            )
            event = PaymentEvent(
                order.out_trade_no, 1, now, PaymentState.CAPTURING, EventKind.SESSION_STARTED, data
            )
            self._insert_event(event)
            return self._require(order.out_trade_no), event

    def _append(
        self,
        out_trade_no: str,
        state: PaymentState,
        kind: EventKind,
        data: dict[str, str | int],
        row_updates: Mapping[str, str | int],
        now: float,
    ) -> PaymentEvent:
        with _transaction(self._db):
            row = self._db.execute(
                "SELECT state, last_seq FROM payments WHERE out_trade_no = ?", (out_trade_no,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no payment with out_trade_no {out_trade_no}")
            current, seq = PaymentState(row[0]), int(row[1]) + 1
            if state not in TRANSITIONS[current]:
                raise InvalidArgument(
                    "state", f"payment {out_trade_no} cannot go from {current} to {state}"
                )
            columns = sorted(row_updates)
            assignments = "".join(f", {column} = ?" for column in columns)
            values = [
                int(row_updates[c]) if c in _INT_COLUMNS else str(row_updates[c]) for c in columns
            ]
            # Column names come from the _ROW_UPDATES allowlist, never from input.
            self._db.execute(
                "UPDATE payments SET state = ?, final = ?, last_seq = ?, updated_at = ?"  # noqa: S608
                f"{assignments} WHERE out_trade_no = ?",
                (state.value, int(state.final), seq, now, *values, out_trade_no),
            )
            event = PaymentEvent(out_trade_no, seq, now, state, kind, data)
            self._insert_event(event)
            return event

    def _mark_pay_sent(self, out_trade_no: str, now: float) -> Payment:
        with _transaction(self._db):
            updated = self._db.execute(
                "UPDATE payments SET pay_sent_at = ?, updated_at = ?"
                " WHERE out_trade_no = ? AND state = ? AND pay_sent_at IS NULL",
                (now, now, out_trade_no, PaymentState.PAYING.value),
            ).rowcount
            payment = self._require(out_trade_no)
            if updated != 1:
                why = (
                    "micropay was already attempted"
                    if payment.pay_sent_at is not None
                    else f"payment is {payment.state}, not PAYING"
                )
                raise InvalidArgument("out_trade_no", f"{out_trade_no}: {why}")
            return payment

    def _find(self, out_trade_no: str) -> Payment | None:
        row = self._db.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE out_trade_no = ?",  # noqa: S608
            (out_trade_no,),
        ).fetchone()
        return None if row is None else _payment(row)

    def _require(self, out_trade_no: str) -> Payment:
        payment = self._find(out_trade_no)
        if payment is None:
            raise NotFound(f"no payment with out_trade_no {out_trade_no}")
        return payment

    def _events(self, out_trade_no: str, after_seq: int) -> EventList:
        rows = self._db.execute(
            "SELECT seq, time, state, kind, data FROM payment_events"
            " WHERE out_trade_no = ? AND seq > ? ORDER BY seq",
            (out_trade_no, after_seq),
        ).fetchall()
        return [
            PaymentEvent(
                out_trade_no,
                int(seq),
                float(time),
                PaymentState(state),
                EventKind(kind),
                json.loads(data),
            )
            for seq, time, state, kind, data in rows
        ]

    def _list(
        self,
        states: tuple[PaymentState, ...],
        created_after: float | None,
        created_before: float | None,
        page_size: int,
        cursor: tuple[float, str] | None,
    ) -> tuple[PaymentList, str]:
        where: list[str] = []
        args: list[Any] = []
        if states:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            args.extend(s.value for s in states)
        if created_after is not None:
            where.append("created_at >= ?")
            args.append(created_after)
        if created_before is not None:
            where.append("created_at < ?")
            args.append(created_before)
        if cursor is not None:
            where.append("(created_at, out_trade_no) < (?, ?)")
            args.extend(cursor)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        # Only placeholders and fixed fragments are formatted in; values are bound.
        rows = self._db.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments{clause}"  # noqa: S608
            " ORDER BY created_at DESC, out_trade_no DESC LIMIT ?",
            (*args, page_size + 1),
        ).fetchall()
        payments = [_payment(row) for row in rows[:page_size]]
        token = ""
        if len(rows) > page_size:
            last = payments[-1]
            token = _encode_token(last.created_at, last.out_trade_no)
        return payments, token

    def _unfinished(self) -> PaymentList:
        rows = self._db.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments"  # noqa: S608
            " WHERE final = 0 ORDER BY created_at, out_trade_no"
        ).fetchall()
        return [_payment(row) for row in rows]

    def _insert_event(self, event: PaymentEvent) -> None:
        self._db.execute(
            "INSERT INTO payment_events (out_trade_no, seq, time, state, kind, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                event.out_trade_no,
                event.seq,
                event.time,
                event.state.value,
                event.kind.value,
                _canonical(event.data),
            ),
        )

    # ------------------------------------------------------------------ PayScore service orders

    async def begin_service_order(
        self,
        out_order_no: str,
        params: Mapping[str, Any],
        risk_fund_amount: int,
        *,
        journal_state: str,
        data: Mapping[str, Any] | None = None,
    ) -> ServiceOrderRecord:
        """Journal a create about to be sent (pending 'create'); committed before it is sent."""
        now = self._clock.time()
        record: ServiceOrderRecord = await self._run(
            self._begin_service_order,
            out_order_no,
            dict(params),
            risk_fund_amount,
            journal_state,
            dict(data or {}),
            now,
        )
        return record

    async def adopt_service_order(
        self,
        out_order_no: str,
        answer: Mapping[str, Any],
        risk_fund_amount: int | None,
        *,
        journal_state: str,
    ) -> ServiceOrderRecord:
        """Journal an order WeChat Pay knows but this journal did not (created elsewhere)."""
        now = self._clock.time()
        record: ServiceOrderRecord = await self._run(
            self._adopt_service_order,
            out_order_no,
            dict(answer),
            risk_fund_amount,
            journal_state,
            now,
        )
        return record

    async def mark_service_order(
        self,
        out_order_no: str,
        journal_state: str,
        kind: str,
        data: Mapping[str, Any] | None = None,
        *,
        pending: str = "",
        answer: Mapping[str, Any] | None = None,
        only_if_changed: bool = False,
    ) -> ServiceOrderRecord:
        """Set the order's state, pending call and (if given) latest answer, with its event."""
        now = self._clock.time()
        record: ServiceOrderRecord = await self._run(
            self._mark_service_order,
            out_order_no,
            journal_state,
            kind,
            dict(data or {}),
            pending,
            None if answer is None else dict(answer),
            only_if_changed,
            now,
        )
        return record

    async def find_service_order(self, out_order_no: str) -> ServiceOrderRecord | None:
        """The journaled service order, or None."""
        record: ServiceOrderRecord | None = await self._run(self._find_service_order, out_order_no)
        return record

    async def pending_service_orders(self) -> ServiceOrderList:
        """Orders with a call whose answer is not recorded, oldest first."""
        records: ServiceOrderList = await self._run(self._pending_service_orders)
        return records

    async def service_order_events(self, out_order_no: str) -> ServiceOrderEventList:
        """The order's events in order."""
        events: ServiceOrderEventList = await self._run(self._service_order_events, out_order_no)
        return events

    def _begin_service_order(
        self,
        out_order_no: str,
        params: dict[str, Any],
        risk_fund_amount: int,
        journal_state: str,
        data: dict[str, Any],
        now: float,
    ) -> ServiceOrderRecord:
        params_json = _canonical(params)
        params_hash = hashlib.sha256(params_json.encode()).hexdigest()
        with _transaction(self._db):
            existing = self._find_service_order(out_order_no)
            if existing is None:
                self._db.execute(
                    "INSERT INTO service_orders (out_order_no, params, params_hash, journal_state,"
                    " pending, risk_fund_amount, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, 'create', ?, ?, ?)",
                    (
                        out_order_no,
                        params_json,
                        params_hash,
                        journal_state,
                        risk_fund_amount,
                        now,
                        now,
                    ),
                )
            elif existing.answer is None and not existing.pending:
                # Never answered and nothing in flight: WeChat Pay has no such order, so a
                # corrected create may reuse the number.
                self._db.execute(
                    "UPDATE service_orders SET params = ?, params_hash = ?, journal_state = ?,"
                    " pending = 'create', risk_fund_amount = ?, updated_at = ?"
                    " WHERE out_order_no = ?",
                    (params_json, params_hash, journal_state, risk_fund_amount, now, out_order_no),
                )
            else:
                keys = set(params) | set(existing.params)
                differ = sorted(k for k in keys if existing.params.get(k) != params.get(k))
                detail = f" with different parameters: {', '.join(differ)}" if differ else ""
                raise AlreadyExists(f"service order {out_order_no} exists{detail}")
            self._service_order_event(out_order_no, journal_state, "create_requested", data, now)
            return self._require_service_order(out_order_no)

    def _adopt_service_order(
        self,
        out_order_no: str,
        answer: dict[str, Any],
        risk_fund_amount: int | None,
        journal_state: str,
        now: float,
    ) -> ServiceOrderRecord:
        with _transaction(self._db):
            if self._find_service_order(out_order_no) is None:
                self._db.execute(
                    "INSERT INTO service_orders (out_order_no, params, params_hash, journal_state,"
                    " pending, risk_fund_amount, answer, created_at, updated_at)"
                    " VALUES (?, '{}', '', ?, '', ?, ?, ?, ?)",
                    (
                        out_order_no,
                        journal_state,
                        risk_fund_amount,
                        _canonical(answer),
                        now,
                        now,
                    ),
                )
                self._service_order_event(out_order_no, journal_state, "adopted", {}, now)
            return self._require_service_order(out_order_no)

    def _mark_service_order(
        self,
        out_order_no: str,
        journal_state: str,
        kind: str,
        data: dict[str, Any],
        pending: str,
        answer: dict[str, Any] | None,
        only_if_changed: bool,
        now: float,
    ) -> ServiceOrderRecord:
        with _transaction(self._db):
            current = self._require_service_order(out_order_no)
            answer_json = None if answer is None else _canonical(answer)
            unchanged = (
                current.journal_state == journal_state
                and current.pending == pending
                and (answer is None or current.answer == json.loads(answer_json or "null"))
            )
            if only_if_changed and unchanged:
                return current
            self._db.execute(
                "UPDATE service_orders SET journal_state = ?, pending = ?,"
                " answer = COALESCE(?, answer), updated_at = ? WHERE out_order_no = ?",
                (journal_state, pending, answer_json, now, out_order_no),
            )
            self._service_order_event(out_order_no, journal_state, kind, data, now)
            return self._require_service_order(out_order_no)

    def _service_order_event(
        self, out_order_no: str, journal_state: str, kind: str, data: dict[str, Any], now: float
    ) -> None:
        seq = (
            int(
                self._db.execute(
                    "SELECT last_seq FROM service_orders WHERE out_order_no = ?", (out_order_no,)
                ).fetchone()[0]
            )
            + 1
        )
        self._db.execute(
            "UPDATE service_orders SET last_seq = ? WHERE out_order_no = ?", (seq, out_order_no)
        )
        self._db.execute(
            "INSERT INTO service_order_events (out_order_no, seq, time, journal_state, kind, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (out_order_no, seq, now, journal_state, kind, _canonical(data)),
        )

    def _find_service_order(self, out_order_no: str) -> ServiceOrderRecord | None:
        row = self._db.execute(
            f"SELECT {_SERVICE_ORDER_COLUMNS} FROM service_orders"  # noqa: S608
            " WHERE out_order_no = ?",
            (out_order_no,),
        ).fetchone()
        return None if row is None else _service_order(row)

    def _require_service_order(self, out_order_no: str) -> ServiceOrderRecord:
        record = self._find_service_order(out_order_no)
        if record is None:
            raise NotFound(f"no service order {out_order_no} in the journal")
        return record

    def _pending_service_orders(self) -> ServiceOrderList:
        rows = self._db.execute(
            f"SELECT {_SERVICE_ORDER_COLUMNS} FROM service_orders"  # noqa: S608
            " WHERE pending != '' ORDER BY created_at, out_order_no"
        ).fetchall()
        return [_service_order(row) for row in rows]

    def _service_order_events(self, out_order_no: str) -> ServiceOrderEventList:
        rows = self._db.execute(
            "SELECT seq, time, journal_state, kind, data FROM service_order_events"
            " WHERE out_order_no = ? ORDER BY seq",
            (out_order_no,),
        ).fetchall()
        return [
            ServiceOrderEvent(out_order_no, int(seq), float(t), state, kind, json.loads(data))
            for seq, t, state, kind, data in rows
        ]


def _connect(path: Path) -> sqlite3.Connection:
    """Open and migrate the database; runs on the journal's worker thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created private before SQLite opens it; SQLite gives -wal/-shm the same mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        _configure(db)
        _migrate(db)
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


def _migrate(db: sqlite3.Connection) -> None:
    with _transaction(db):
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"journal schema version {version} is newer than this daemon's {SCHEMA_VERSION}"
            )
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                db.execute(statement)
        if row is None:
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif version != SCHEMA_VERSION:
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _payment(row: tuple[Any, ...]) -> Payment:
    (
        params,
        state,
        transaction_id,
        openid,
        bank_type,
        cash_fee,
        fee_type,
        time_end,
        err_code,
        err_code_des,
        created_at,
        updated_at,
        pay_sent_at,
        last_seq,
    ) = row
    stored = json.loads(params)
    order = PaymentOrder(**{k: v for k, v in stored.items() if k in _ORDER_FIELDS})
    return Payment(
        order=order,
        state=PaymentState(state),
        created_at=float(created_at),
        updated_at=float(updated_at),
        last_seq=int(last_seq),
        transaction_id=transaction_id,
        openid=openid,
        bank_type=bank_type,
        cash_fee=int(cash_fee),
        fee_type=fee_type,
        time_end=time_end,
        err_code=err_code,
        err_code_des=err_code_des,
        pay_sent_at=None if pay_sent_at is None else float(pay_sent_at),
    )


def _canonical(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _encode_token(created_at: float, out_trade_no: str) -> str:
    raw = json.dumps([created_at, out_trade_no], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[float, str]:
    try:
        fields = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument("page_token", _PAGE_CURSOR_RULE) from exc
    match fields:
        case [int() | float() as created_at, str() as out_trade_no]:
            return float(created_at), out_trade_no
        case _:
            raise InvalidArgument("page_token", _PAGE_CURSOR_RULE)


# ---------------------------------------------------------------------- PayScore service orders

_SERVICE_ORDER_COLUMNS = (
    "out_order_no, params, journal_state, pending, risk_fund_amount, answer, created_at,"
    " updated_at, last_seq"
)


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceOrderRecord:
    """A PayScore service order as journaled: its create parameters and latest answer."""

    out_order_no: str
    params: dict[str, Any]
    journal_state: str
    # The call whose answer is not recorded yet ("" when none).
    pending: str
    risk_fund_amount: int | None
    # WeChat Pay's latest verified answer, None until one arrived.
    answer: dict[str, Any] | None
    created_at: float
    updated_at: float
    last_seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceOrderEvent:
    """One step of a service order (append-only)."""

    out_order_no: str
    seq: int
    time: float
    journal_state: str
    kind: str
    data: dict[str, Any]


# Aliases: inside Journal, the name "list" is the method.
ServiceOrderList = list[ServiceOrderRecord]
ServiceOrderEventList = list[ServiceOrderEvent]


def _service_order(row: tuple[Any, ...]) -> ServiceOrderRecord:
    no, params, state, pending, risk, answer, created_at, updated_at, last_seq = row
    return ServiceOrderRecord(
        out_order_no=no,
        params=json.loads(params),
        journal_state=state,
        pending=pending,
        risk_fund_amount=None if risk is None else int(risk),
        answer=None if answer is None else json.loads(answer),
        created_at=float(created_at),
        updated_at=float(updated_at),
        last_seq=int(last_seq),
    )
