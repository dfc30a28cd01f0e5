"""The payments aggregate: one row per order and its append-only events, in one transaction each."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import math
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from facepayd.clock import Clock
from facepayd.errors import AlreadyExists, InvalidArgument, NotFound, WrongState
from facepayd.journal.aggregate import delete_marked, notify, refuse_transition, set_columns
from facepayd.journal.db import Database, canonical, transaction
from facepayd.journal.health import JournalHealth
from facepayd.payments.models import (
    CONDITIONS,
    SCAN_PAYMENT,
    CodeStart,
    EventKind,
    Payment,
    PaymentEvent,
    PaymentOrder,
    PaymentSource,
    PaymentState,
    paid_from_json,
    transition_allowed,
)

__all__ = ["MAX_PAGE_SIZE", "MAX_PAGE_TOKEN", "PaymentListener", "PaymentStore"]

log = structlog.get_logger(__name__)

PaymentListener = Callable[[PaymentEvent], None]
# Aliases: inside PaymentStore, the name "list" is the method.
PaymentList = list[Payment]
EventList = list[PaymentEvent]

MAX_PAGE_SIZE = 200
_PAGE_CURSOR_RULE = "is not a token from a previous ListPayments with the same filters"
# Longer than any token this store issues (about 110 characters): refused before decoding.
MAX_PAGE_TOKEN = 256
_TOKEN_MAC_BYTES = 16

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
        "attention_reason",
        "attention_action",
        "paid_details",
    }
)
# Kept only while the payment is in NEEDS_ATTENTION; every other state clears them.
_ATTENTION_COLUMNS = ("attention_reason", "attention_action")
_INT_COLUMNS = frozenset({"cash_fee"})
# Columns an edge sets whoever takes it: a face sale continued after SCAN_PAYMENT is a code
# payment from that very step.
_EDGE_COLUMNS: dict[tuple[PaymentState, PaymentState], dict[str, str | int]] = {
    (PaymentState.CANCELLED, PaymentState.PAYING): {"source": PaymentSource.CODE.value},
}
_ORDER_FIELDS = frozenset(f.name for f in dataclasses.fields(PaymentOrder))
_PAYMENT_COLUMNS = (
    "params, state, transaction_id, openid, bank_type, cash_fee, fee_type, time_end, "
    "err_code, err_code_des, created_at, updated_at, pay_sent_at, last_seq, "
    "attention_reason, attention_action, source, paid_details"
)


class PaymentStore:
    """Payments and their events; every call runs on the database's worker thread."""

    def __init__(self, database: Database, clock: Clock, health: JournalHealth) -> None:
        self._database = database
        self._db = database.connection
        self._clock = clock
        self._health = health
        self._listeners: list[PaymentListener] = []
        # Page tokens are signed per run: a forged, edited or stale cursor is refused unparsed.
        self._token_key = secrets.token_bytes(32)

    @property
    def writable(self) -> bool:
        """False while the journal is known not to take writes (a full or failing disk)."""
        return self._health.writable

    def size_bytes(self) -> int:
        """Bytes of the journal's files on disk (every aggregate's, not only payments')."""
        return self._database.size_bytes()

    def add_listener(self, listener: PaymentListener) -> None:
        """Call listener on the event loop with every event once it is committed."""
        self._listeners.append(listener)

    async def create_payment(
        self, order: PaymentOrder, *, data: Mapping[str, str | int] | None = None
    ) -> tuple[Payment, bool]:
        """Journal a new payment (CAPTURING, session_started), or return the same-parameter one."""
        now = self._clock.time()
        payment, event = await self._database.run(
            self._create_payment, order, dict(data or {}), now
        )
        if event is not None:
            self._notify(event)
        return payment, event is not None

    async def begin_code_payment(self, order: PaymentOrder) -> tuple[Payment, CodeStart]:
        """Journal a code payment (PAYING, code_received), continue a scanned face sale, or attach.

        In one transaction: a new number is created PAYING with source CODE; a face payment
        CANCELLED with reason SCAN_PAYMENT and the same parameters continues as CODE (its seq
        going on); a code payment with the same parameters is returned as it is. Different
        parameters are refused (AlreadyExists), any other face payment too (WrongState).
        """
        now = self._clock.time()
        payment, start, event = await self._database.run(self._begin_code_payment, order, now)
        if event is not None:
            self._notify(event)
        return payment, start

    async def append(
        self,
        out_trade_no: str,
        state: PaymentState,
        kind: EventKind,
        data: Mapping[str, str | int] | None = None,
        **row_updates: str | int,
    ) -> PaymentEvent:
        """Move a payment to state and append its event, in one transaction.

        Through the one setter (_set_state), which checks the transition table and its
        CONDITIONS: an illegal change is logged at error and refused (WrongState);
        NEEDS_ATTENTION needs an attention_reason, other states clear it.
        """
        unknown = set(row_updates) - _ROW_UPDATES
        if unknown:
            raise ValueError(f"not a payment result column: {', '.join(sorted(unknown))}")
        if state is PaymentState.NEEDS_ATTENTION:
            if not row_updates.get("attention_reason"):
                raise ValueError("NEEDS_ATTENTION needs an attention_reason")
        else:
            row_updates = _attention_cleared(row_updates)
        now = self._clock.time()
        event: PaymentEvent = await self._database.run(
            self._append, out_trade_no, state, kind, dict(data or {}), row_updates, now
        )
        self._notify(event)
        return event

    async def capture_and_mark_sent(
        self, out_trade_no: str, data: Mapping[str, str | int], openid: str, at: float
    ) -> tuple[PaymentEvent, Payment]:
        """FACE_CAPTURED (CAPTURING → PAYING) and pay_sent_at (at: wall time), one transaction.

        The face's record and the at-most-once mark become durable with one commit, the last
        write before micropay; refused (WrongState) unless the payment is CAPTURING.
        """
        row_updates = _attention_cleared({"openid": openid})
        now = self._clock.time()
        event, payment = await self._database.run(
            self._capture_and_mark_sent, out_trade_no, dict(data), row_updates, now, at
        )
        self._notify(event)
        return event, payment

    async def mark_pay_sent(self, out_trade_no: str, at: float | None = None) -> Payment:
        """Record that micropay is about to be sent (at: wall time); refused if it ever was."""
        now = self._clock.time() if at is None else at
        payment: Payment = await self._database.run(self._mark_pay_sent, out_trade_no, now)
        return payment

    async def get(self, out_trade_no: str) -> Payment:
        """The payment, or NotFound."""
        payment = await self.find(out_trade_no)
        if payment is None:
            raise NotFound(f"no payment with out_trade_no {out_trade_no}")
        return payment

    async def find(self, out_trade_no: str) -> Payment | None:
        """The payment, or None."""
        payment: Payment | None = await self._database.read(_find_payment, out_trade_no)
        return payment

    async def exists(self, out_trade_no: str) -> bool:
        """Whether a payment with this out_trade_no is journaled (the re-attach check)."""
        found: bool = await self._database.read(_payment_exists, out_trade_no)
        return found

    async def events(self, out_trade_no: str, after_seq: int = 0) -> EventList:
        """The payment's events with seq > after_seq, in order."""
        events: EventList = await self._database.run(self._events, out_trade_no, after_seq)
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
        states = tuple(states)
        query = _query_key(states, created_after, created_before)
        cursor = self._decode_token(page_token, query) if page_token else None
        payments, last = await self._database.run(
            self._list, states, created_after, created_before, page_size, cursor
        )
        return payments, "" if last is None else self._encode_token(last, query)

    async def prune(self, finished_before: float, limit: int) -> int:
        """Delete up to limit final payments last changed before finished_before, with events."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        pruned: int = await self._database.run(self._prune, finished_before, limit)
        return pruned

    async def unfinished(self) -> PaymentList:
        """Every payment not in a final state, oldest first."""
        payments: PaymentList = await self._database.run(self._unfinished)
        return payments

    async def refund_count(self, out_trade_no: str) -> int:
        """How many refunds were ever recorded against the payment (any state)."""
        count: int = await self._database.run(self._refund_count, out_trade_no)
        return count

    # ------------------------------------------------------------------ worker thread

    def _mac(self, query: bytes, cursor: bytes) -> bytes:
        return hmac.digest(self._token_key, query + b"\0" + cursor, "sha256")[:_TOKEN_MAC_BYTES]

    def _encode_token(self, last: tuple[float, str], query: bytes) -> str:
        """An opaque cursor after last, signed for this run and these filters."""
        cursor = json.dumps(list(last), separators=(",", ":")).encode()
        return f"{_b64(cursor)}.{_b64(self._mac(query, cursor))}"

    def _decode_token(self, token: str, query: bytes) -> tuple[float, str]:
        """The cursor in token; InvalidArgument unless this run signed it for these filters."""
        cursor_text, dot, mac_text = token.partition(".")
        if len(token) > MAX_PAGE_TOKEN or not dot:
            raise InvalidArgument("page_token", _PAGE_CURSOR_RULE)
        try:
            cursor, mac = _unb64(cursor_text), _unb64(mac_text)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgument("page_token", _PAGE_CURSOR_RULE) from exc
        # Checked before parsing: only bytes this store wrote are ever decoded.
        if not hmac.compare_digest(mac, self._mac(query, cursor)):
            raise InvalidArgument("page_token", _PAGE_CURSOR_RULE)
        match json.loads(cursor):
            case [float() as created_at, str() as out_trade_no] if math.isfinite(created_at):
                return created_at, out_trade_no
            case _:
                raise InvalidArgument("page_token", _PAGE_CURSOR_RULE)

    def _notify(self, event: PaymentEvent) -> None:
        notify(self._listeners, event, out_trade_no=event.out_trade_no)

    def _create_payment(
        self, order: PaymentOrder, data: dict[str, str | int], now: float
    ) -> tuple[Payment, PaymentEvent | None]:
        with transaction(self._db):
            if self._same_order(order):
                return self._require(order.out_trade_no), None
            event = self._insert_payment(
                order,
                PaymentState.CAPTURING,
                PaymentSource.FACE,
                EventKind.SESSION_STARTED,
                data,
                now,
            )
            return self._require(order.out_trade_no), event

    def _begin_code_payment(
        self, order: PaymentOrder, now: float
    ) -> tuple[Payment, CodeStart, PaymentEvent | None]:
        no = order.out_trade_no
        with transaction(self._db):
            if not self._same_order(order):
                event = self._insert_payment(
                    order,
                    PaymentState.PAYING,
                    PaymentSource.CODE,
                    EventKind.CODE_RECEIVED,
                    {"source": PaymentSource.CODE.value},
                    now,
                )
                return self._require(no), CodeStart.CREATED, event
            payment = self._require(no)
            if payment.source is PaymentSource.CODE:
                return payment, CodeStart.EXISTING, None
            reason = self._last_reason(no)
            # A POS asking for this is not a bug: refused here, before the table's check.
            scanned = payment.state is PaymentState.CANCELLED and reason == SCAN_PAYMENT
            # pay_sent_at is never set on a CANCELLED order; checked all the same, since a
            # continuation must never follow a micropay.
            if not scanned or payment.pay_sent_at is not None:
                said = f" (reason {reason})" if payment.state is PaymentState.CANCELLED else ""
                raise WrongState(
                    f"payment {no} is a face payment in state {payment.state}{said}; only one"
                    " that ended CANCELLED with reason SCAN_PAYMENT continues as a code payment"
                )
            data: dict[str, str | int] = {"source": PaymentSource.CODE.value, "continued": 1}
            event = self._set_state(
                no,
                payment.state,
                payment.last_seq,
                PaymentState.PAYING,
                EventKind.CODE_RECEIVED,
                data,
                row_updates={},
                now=now,
            )
            return self._require(no), CodeStart.CONTINUED, event

    def _same_order(self, order: PaymentOrder) -> bool:
        """True when the number exists with these parameters; AlreadyExists with others."""
        row = self._db.execute(
            "SELECT params FROM payments WHERE out_trade_no = ?", (order.out_trade_no,)
        ).fetchone()
        if row is None:
            return False
        params = order.to_dict()
        # Parameters added later (time_start) count as their default in an older row.
        stored = {**PaymentOrder("", 0, "").to_dict(), **json.loads(row[0])}
        differ = sorted(k for k in params if k != "out_trade_no" and stored.get(k) != params[k])
        if differ:
            raise AlreadyExists(
                f"out_trade_no {order.out_trade_no} exists with different parameters: "
                f"field(s) {', '.join(differ)}"
            )
        return True

    def _insert_payment(
        self,
        order: PaymentOrder,
        state: PaymentState,
        source: PaymentSource,
        kind: EventKind,
        data: dict[str, str | int],
        now: float,
    ) -> PaymentEvent:
        params_json = canonical(order.to_dict())
        params_hash = hashlib.sha256(params_json.encode()).hexdigest()
        self._db.execute(
            "INSERT INTO payments (out_trade_no, params, params_hash, state, total_fee, body,"
            " attach, created_at, updated_at, final, last_seq, source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 1, ?)",
            (
                order.out_trade_no,
                params_json,
                params_hash,
                state.value,
                order.total_fee,
                order.body,
                order.attach,
                now,
                now,
                source.value,
            ),
        )
        event = PaymentEvent(order.out_trade_no, 1, now, state, kind, data)
        self._insert_event(event)
        return event

    def _last_reason(self, out_trade_no: str) -> str:
        """The reason in the payment's newest event ("" when it has none)."""
        row = self._db.execute(
            "SELECT data FROM payment_events WHERE out_trade_no = ? ORDER BY seq DESC LIMIT 1",
            (out_trade_no,),
        ).fetchone()
        return "" if row is None else str(json.loads(row[0]).get("reason", ""))

    def _set_state(
        self,
        out_trade_no: str,
        current: PaymentState,
        last_seq: int,
        state: PaymentState,
        kind: EventKind,
        data: dict[str, str | int],
        row_updates: Mapping[str, str | int],
        now: float,
    ) -> PaymentEvent:
        """The one setter of a payment's state: the table's check, the row and its event.

        Runs inside the caller's transaction. A conditional edge (CONDITIONS) is taken only
        when the payment's newest event carries its reason; an illegal change is logged at
        error and refused.
        """
        reason = self._last_reason(out_trade_no) if (current, state) in CONDITIONS else ""
        if not transition_allowed(current, state, reason):
            refuse_transition("payment", "out_trade_no", out_trade_no, current, state)
        seq = last_seq + 1
        row_updates = {**row_updates, **_EDGE_COLUMNS.get((current, state), {})}
        assignments, values = set_columns(row_updates, _INT_COLUMNS)
        # Column names come from allowlists (_ROW_UPDATES, _EDGE_COLUMNS), never from input.
        self._db.execute(
            "UPDATE payments SET state = ?, final = ?, last_seq = ?, updated_at = ?"  # noqa: S608
            f"{assignments} WHERE out_trade_no = ?",
            (state.value, int(state.final), seq, now, *values, out_trade_no),
        )
        event = PaymentEvent(out_trade_no, seq, now, state, kind, data)
        self._insert_event(event)
        return event

    def _append(
        self,
        out_trade_no: str,
        state: PaymentState,
        kind: EventKind,
        data: dict[str, str | int],
        row_updates: Mapping[str, str | int],
        now: float,
    ) -> PaymentEvent:
        with transaction(self._db):
            current, last_seq = self._current(out_trade_no)
            return self._set_state(
                out_trade_no, current, last_seq, state, kind, data, row_updates, now
            )

    def _capture_and_mark_sent(
        self,
        out_trade_no: str,
        data: dict[str, str | int],
        row_updates: Mapping[str, str | int],
        now: float,
        at: float,
    ) -> tuple[PaymentEvent, Payment]:
        with transaction(self._db):
            current, last_seq = self._current(out_trade_no)
            if current is not PaymentState.CAPTURING:
                raise WrongState(f"payment {out_trade_no} is {current}, not CAPTURING")
            event = self._set_state(
                out_trade_no,
                current,
                last_seq,
                PaymentState.PAYING,
                EventKind.FACE_CAPTURED,
                data,
                row_updates,
                now,
            )
            return event, self._set_pay_sent(out_trade_no, at)

    def _current(self, out_trade_no: str) -> tuple[PaymentState, int]:
        """The payment's state and last seq, inside the caller's transaction."""
        row = self._db.execute(
            "SELECT state, last_seq FROM payments WHERE out_trade_no = ?", (out_trade_no,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no payment with out_trade_no {out_trade_no}")
        return PaymentState(row[0]), int(row[1])

    def _mark_pay_sent(self, out_trade_no: str, now: float) -> Payment:
        with transaction(self._db):
            return self._set_pay_sent(out_trade_no, now)

    def _set_pay_sent(self, out_trade_no: str, now: float) -> Payment:
        """pay_sent_at, only if PAYING and never set, inside the caller's transaction."""
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
            raise WrongState(f"{out_trade_no}: {why}")
        return payment

    def _find(self, out_trade_no: str) -> Payment | None:
        return _find_payment(self._db, out_trade_no)

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
    ) -> tuple[PaymentList, tuple[float, str] | None]:
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
        if len(rows) <= page_size:
            return payments, None
        return payments, (payments[-1].created_at, payments[-1].out_trade_no)

    def _refund_count(self, out_trade_no: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM refunds WHERE out_trade_no = ?", (out_trade_no,)
        ).fetchone()
        return int(row[0])

    def _unfinished(self) -> PaymentList:
        rows = self._db.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments"  # noqa: S608
            " WHERE final = 0 ORDER BY created_at, out_trade_no"
        ).fetchall()
        return [_payment(row) for row in rows]

    def _prune(self, finished_before: float, limit: int) -> int:
        with transaction(self._db):
            # final = 1 only for the final states: never NEEDS_ATTENTION or an unfinished one.
            numbers = [
                row[0]
                for row in self._db.execute(
                    "SELECT out_trade_no FROM payments WHERE final = 1 AND updated_at < ?"
                    " ORDER BY updated_at, out_trade_no LIMIT ?",
                    (finished_before, limit),
                )
            ]
            if not numbers:
                return 0
            delete_marked(self._db, "payments", "payment_events", "out_trade_no", numbers)
            return len(numbers)

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
                canonical(event.data),
            ),
        )


def _find_payment(db: sqlite3.Connection, out_trade_no: str) -> Payment | None:
    """One payment by its primary key, on whichever connection runs it."""
    # fetchall steps the statement to its end, so the read snapshot ends here too.
    rows = db.execute(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE out_trade_no = ?",  # noqa: S608
        (out_trade_no,),
    ).fetchall()
    return _payment(rows[0]) if rows else None


def _attention_cleared(row_updates: Mapping[str, str | int]) -> dict[str, str | int]:
    """The row updates of a state other than NEEDS_ATTENTION: its reason and action cleared."""
    return {**row_updates, **dict.fromkeys(_ATTENTION_COLUMNS, "")}


def _payment_exists(db: sqlite3.Connection, out_trade_no: str) -> bool:
    """Whether the primary key is taken; no row is decoded."""
    rows = db.execute("SELECT 1 FROM payments WHERE out_trade_no = ?", (out_trade_no,)).fetchall()
    return bool(rows)


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
        attention_reason,
        attention_action,
        source,
        paid_details,
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
        attention_reason=attention_reason,
        attention_action=attention_action,
        source=PaymentSource(source),
        paid=paid_from_json(paid_details),
    )


def _query_key(
    states: tuple[PaymentState, ...], created_after: float | None, created_before: float | None
) -> bytes:
    """The filters a page token belongs to, canonically encoded."""
    return json.dumps(
        [sorted({s.value for s in states}), created_after, created_before], separators=(",", ":")
    ).encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
