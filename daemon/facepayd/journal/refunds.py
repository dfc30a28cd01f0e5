"""The refunds aggregate: one row per out_refund_no and its append-only events, in transactions.

The rules that keep money safe are checked inside the transaction that writes, so no two callers
can race past them: a refund is recorded only for a refundable payment, and only while the refunds
that are or may be refunded (every state but FAILED and CLOSED) stay within what was paid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from facepayd.clock import Clock
from facepayd.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    RefundExceedsPaid,
    WrongState,
)
from facepayd.journal.aggregate import delete_marked, notify, refuse_transition, set_columns
from facepayd.journal.db import Database, canonical, transaction
from facepayd.payments.models import PaymentState
from facepayd.payments.refund_models import (
    KIND_OF_STATE,
    MAX_REFUNDS_PER_PAYMENT,
    OUT_REFUND_NO_USED,
    PAYMENT_NOT_REFUNDABLE,
    REFUND_TRANSITIONS,
    REFUNDABLE_ATTENTION_REASONS,
    REFUNDABLE_PAYMENT_STATES,
    Refund,
    RefundEvent,
    RefundEventKind,
    RefundRequest,
    RefundState,
)

__all__ = ["MAX_REFUND_PAGE_SIZE", "RefundListener", "RefundStore"]

log = structlog.get_logger(__name__)

RefundListener = Callable[[RefundEvent], None]
# Aliases: inside RefundStore, the name "list" would shadow the builtin in annotations.
RefundList = list[Refund]
RefundEventList = list[RefundEvent]

MAX_REFUND_PAGE_SIZE = MAX_REFUNDS_PER_PAYMENT
_PAGE_RULE = "is not a next_page_token from a previous ListRefunds of this payment"

# Result columns a state change may set; the sending columns have their own call.
_ROW_UPDATES = frozenset(
    {
        "transaction_id",
        "refund_id",
        "settlement_refund_fee",
        "cash_refund_fee",
        "coupon_refund_fee",
        "refund_channel",
        "success_time",
        "recv_account",
        "err_code",
        "err_code_des",
        "attention_reason",
        "attention_action",
    }
)
_INT_COLUMNS = frozenset({"settlement_refund_fee", "cash_refund_fee", "coupon_refund_fee"})
# Kept only while an operator has to act (NEEDS_ATTENTION, CHANGE); every other state clears them.
_ATTENTION_COLUMNS = ("attention_reason", "attention_action")
_ATTENTION_STATES = frozenset({RefundState.NEEDS_ATTENTION, RefundState.CHANGE})
_NOT_COUNTED = tuple(s.value for s in RefundState if not s.counts)
_REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(RefundRequest))
_REFUND_COLUMNS = (
    "params, state, total_fee, created_at, updated_at, last_seq, transaction_id, refund_id, "
    "settlement_refund_fee, cash_refund_fee, coupon_refund_fee, refund_channel, success_time, "
    "recv_account, err_code, err_code_des, attention_reason, attention_action, first_sent_at, "
    "sent_at, attempts"
)


class RefundStore:
    """Refunds and their events; every call runs on the database's worker thread."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._database = database
        self._db = database.connection
        self._clock = clock
        self._listeners: list[RefundListener] = []

    def add_listener(self, listener: RefundListener) -> None:
        """Call listener on the event loop with every event once it is committed."""
        self._listeners.append(listener)

    async def create_refund(self, request: RefundRequest) -> tuple[Refund, bool]:
        """Journal a new refund (RECORDED), or return the same-parameter one (created False).

        Refused, with nothing written: another refund's parameters under the number
        (AlreadyExists), an unknown payment (NotFound), a payment that is not refundable
        (WrongState), or a sum past what was paid (RefundExceedsPaid).
        """
        now = self._clock.time()
        refund, event = await self._database.run(self._create, request, now)
        if event is not None:
            self._notify(event)
        return refund, event is not None

    async def retry_failed(self, out_refund_no: str) -> RefundEvent:
        """Record a FAILED refund again (same number), checking the sum again."""
        now = self._clock.time()
        event: RefundEvent = await self._database.run(self._retry, out_refund_no, now)
        self._notify(event)
        return event

    async def append(
        self,
        out_refund_no: str,
        state: RefundState,
        data: Mapping[str, str | int] | None = None,
        **row_updates: str | int,
    ) -> RefundEvent:
        """Move a refund to state and append its event, in one transaction.

        The one check of the transition table: an illegal change is logged at error and
        refused (WrongState). NEEDS_ATTENTION and CHANGE need an attention_reason.
        """
        unknown = set(row_updates) - _ROW_UPDATES
        if unknown:
            raise ValueError(f"not a refund result column: {', '.join(sorted(unknown))}")
        if state is RefundState.SENDING:
            raise ValueError("SENDING is journaled by mark_sending")
        if state in _ATTENTION_STATES:
            if not row_updates.get("attention_reason"):
                raise ValueError(f"{state} needs an attention_reason")
        else:
            row_updates = {**row_updates, **dict.fromkeys(_ATTENTION_COLUMNS, "")}
        now = self._clock.time()
        event: RefundEvent = await self._database.run(
            self._append, out_refund_no, state, dict(data or {}), row_updates, now
        )
        self._notify(event)
        return event

    async def mark_sending(self, out_refund_no: str, reason: str) -> Refund:
        """Journal SENDING (sent_at now, one more attempt) before the refund request goes out.

        A payment no longer refundable (reversed meanwhile) fails the refund instead
        (FAILED, PAYMENT_NOT_REFUNDABLE): the returned refund is then not SENDING, and nothing
        may be sent.
        """
        now = self._clock.time()
        refund, event = await self._database.run(self._mark_sending, out_refund_no, reason, now)
        self._notify(event)
        return refund

    async def get(self, out_refund_no: str) -> Refund:
        """The refund, or NotFound."""
        refund = await self.find(out_refund_no)
        if refund is None:
            raise NotFound(f"no refund with out_refund_no {out_refund_no}")
        return refund

    async def find(self, out_refund_no: str) -> Refund | None:
        """The refund, or None."""
        refund: Refund | None = await self._database.run(self._find, out_refund_no)
        return refund

    async def events(self, out_refund_no: str, after_seq: int = 0) -> RefundEventList:
        """The refund's events with seq > after_seq, in order."""
        events: RefundEventList = await self._database.run(self._events, out_refund_no, after_seq)
        return events

    async def for_payment(
        self, out_trade_no: str, page_size: int = 50, page_token: str = ""
    ) -> tuple[RefundList, str]:
        """A payment's refunds, oldest first; the next page's token ("" on the last page).

        The token is the last out_refund_no of a page: it names data the caller may read anyway,
        and one that is not a refund of this payment is refused.
        """
        if not 1 <= page_size <= MAX_REFUND_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 1 and {MAX_REFUND_PAGE_SIZE}")
        result: tuple[RefundList, str] = await self._database.run(
            self._for_payment, out_trade_no, page_size, page_token
        )
        return result

    async def refunded_fee(self, out_trade_no: str) -> int:
        """The sum of the payment's SUCCEEDED refunds, in fen."""
        total: int = await self._database.run(self._refunded_fee, out_trade_no)
        return total

    async def unfinished(self) -> RefundList:
        """Every refund not in a final state, oldest first."""
        refunds: RefundList = await self._database.run(self._unfinished)
        return refunds

    async def hold_payments(self, finished_before: float) -> int:
        """Keep payments with an unfinished refund out of retention (their updated_at is now)."""
        now = self._clock.time()
        held: int = await self._database.run(self._hold, finished_before, now)
        return held

    async def prune(self, finished_before: float, limit: int) -> int:
        """Delete up to limit final refunds whose refund and payment changed before the cutoff."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        pruned: int = await self._database.run(self._prune, finished_before, limit)
        return pruned

    # ------------------------------------------------------------------ worker thread

    def _notify(self, event: RefundEvent) -> None:
        notify(self._listeners, event, out_refund_no=event.out_refund_no)

    def _create(self, request: RefundRequest, now: float) -> tuple[Refund, RefundEvent | None]:
        params = request.to_dict()
        params_json = canonical(params)
        params_hash = hashlib.sha256(params_json.encode()).hexdigest()
        with transaction(self._db):
            row = self._db.execute(
                "SELECT params, params_hash FROM refunds WHERE out_refund_no = ?",
                (request.out_refund_no,),
            ).fetchone()
            if row is not None:
                if row[1] != params_hash:
                    stored = json.loads(row[0])
                    differ = sorted(k for k in params if stored.get(k) != params[k])
                    raise AlreadyExists(
                        f"out_refund_no {request.out_refund_no} exists with different parameters:"
                        f" field(s) {', '.join(differ) or 'unknown'}"
                    )
                return self._require(request.out_refund_no), None
            total_fee, transaction_id = self._check_refundable(
                request.out_trade_no, request.refund_fee
            )
            self._db.execute(
                "INSERT INTO refunds (out_refund_no, out_trade_no, params, params_hash, state,"
                " refund_fee, total_fee, transaction_id, created_at, updated_at, final, last_seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 1)",
                (
                    request.out_refund_no,
                    request.out_trade_no,
                    params_json,
                    params_hash,
                    RefundState.RECORDED.value,
                    request.refund_fee,
                    total_fee,
                    transaction_id,
                    now,
                    now,
                ),
            )
            event = RefundEvent(
                request.out_refund_no,
                request.out_trade_no,
                1,
                now,
                RefundState.RECORDED,
                RefundEventKind.RECORDED,
                _recorded_data(request, total_fee),
            )
            self._insert_event(event)
            self._touch_payment(request.out_trade_no, now)
            return self._require(request.out_refund_no), event

    def _check_refundable(self, out_trade_no: str, refund_fee: int) -> tuple[int, str]:
        """The payment's total_fee and transaction_id, if refund_fee more may be refunded."""
        row = self._db.execute(
            "SELECT total_fee, transaction_id FROM payments WHERE out_trade_no = ?",
            (out_trade_no,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no payment with out_trade_no {out_trade_no}")
        total_fee, transaction_id = int(row[0]), str(row[1])
        refusal = self._not_refundable(out_trade_no)
        if refusal:
            raise WrongState(refusal)
        marks = ", ".join("?" for _ in _NOT_COUNTED)
        committed, count = self._db.execute(
            "SELECT COALESCE(SUM(refund_fee), 0), COUNT(*) FROM refunds"  # noqa: S608
            f" WHERE out_trade_no = ? AND state NOT IN ({marks})",
            (out_trade_no, *_NOT_COUNTED),
        ).fetchone()
        if int(count) >= MAX_REFUNDS_PER_PAYMENT:
            raise WrongState(
                f"payment {out_trade_no} has {MAX_REFUNDS_PER_PAYMENT} refunds, WeChat Pay's limit"
            )
        left = total_fee - int(committed)
        if refund_fee > left:
            raise RefundExceedsPaid(
                f"refund of {refund_fee} fen exceeds what is left of payment {out_trade_no}:"
                f" {left} of {total_fee} fen (refunds that are or may be refunded count)"
            )
        return total_fee, transaction_id

    def _not_refundable(self, out_trade_no: str) -> str:
        """Why the payment's money cannot be refunded now ("" when it can)."""
        row = self._db.execute(
            "SELECT state, attention_reason FROM payments WHERE out_trade_no = ?",
            (out_trade_no,),
        ).fetchone()
        if row is None:
            return f"no payment with out_trade_no {out_trade_no}"
        state, attention_reason = PaymentState(row[0]), str(row[1])
        refundable = state in REFUNDABLE_PAYMENT_STATES and (
            state is PaymentState.SUCCEEDED or attention_reason in REFUNDABLE_ATTENTION_REASONS
        )
        if refundable:
            return ""
        why = f" ({attention_reason})" if attention_reason else ""
        return f"payment {out_trade_no} is {state}{why}; only a paid payment can be refunded"

    def _retry(self, out_refund_no: str, now: float) -> RefundEvent:
        with transaction(self._db):
            refund = self._require(out_refund_no)
            if refund.state is not RefundState.FAILED:
                raise WrongState(f"refund {out_refund_no} is {refund.state}, not FAILED")
            if refund.err_code == OUT_REFUND_NO_USED:
                raise WrongState(
                    f"out_refund_no {out_refund_no} is used by a refund of another order;"
                    " refund the payment with a new out_refund_no"
                )
            self._check_refundable(refund.out_trade_no, refund.refund_fee)
            cleared = dict.fromkeys(("err_code", "err_code_des", *_ATTENTION_COLUMNS), "")
            data = {**_recorded_data(refund.request, refund.total_fee), "reason": "RETRY"}
            return self._change(refund, RefundState.RECORDED, data, cleared, now)

    def _append(
        self,
        out_refund_no: str,
        state: RefundState,
        data: dict[str, str | int],
        row_updates: Mapping[str, str | int],
        now: float,
    ) -> RefundEvent:
        with transaction(self._db):
            return self._change(self._require(out_refund_no), state, data, row_updates, now)

    def _mark_sending(
        self, out_refund_no: str, reason: str, now: float
    ) -> tuple[Refund, RefundEvent]:
        with transaction(self._db):
            refund = self._require(out_refund_no)
            refusal = self._not_refundable(refund.out_trade_no)
            if refusal:
                # The payment changed since the refund was recorded (reversed, say): in the same
                # transaction that would mark it sent, so nothing is sent.
                log.warning("refund_payment_not_refundable", out_refund_no=out_refund_no)
                failed = {"err_code": PAYMENT_NOT_REFUNDABLE, "err_code_des": refusal}
                data: dict[str, str | int] = {
                    "err_code": PAYMENT_NOT_REFUNDABLE,
                    "description": refusal,
                }
                updates = {**failed, **dict.fromkeys(_ATTENTION_COLUMNS, "")}
                event = self._change(refund, RefundState.FAILED, data, updates, now)
                return self._require(out_refund_no), event
            attempt = refund.attempts + 1
            data = {"attempt": attempt, "reason": reason}
            updates = dict.fromkeys(_ATTENTION_COLUMNS, "")
            event = self._change(refund, RefundState.SENDING, data, updates, now)
            self._db.execute(
                "UPDATE refunds SET sent_at = ?, first_sent_at = COALESCE(first_sent_at, ?),"
                " attempts = ? WHERE out_refund_no = ?",
                (now, now, attempt, out_refund_no),
            )
            return self._require(out_refund_no), event

    def _change(
        self,
        refund: Refund,
        state: RefundState,
        data: dict[str, str | int],
        row_updates: Mapping[str, str | int],
        now: float,
    ) -> RefundEvent:
        """The one check of REFUND_TRANSITIONS, then the row and the event (in a transaction)."""
        if state not in REFUND_TRANSITIONS[refund.state]:
            refuse_transition("refund", "out_refund_no", refund.out_refund_no, refund.state, state)
        seq = refund.last_seq + 1
        assignments, values = set_columns(row_updates, _INT_COLUMNS)
        # Column names come from the _ROW_UPDATES allowlist, never from input.
        self._db.execute(
            "UPDATE refunds SET state = ?, final = ?, last_seq = ?, updated_at = ?"  # noqa: S608
            f"{assignments} WHERE out_refund_no = ?",
            (state.value, int(state.final), seq, now, *values, refund.out_refund_no),
        )
        event = RefundEvent(
            refund.out_refund_no, refund.out_trade_no, seq, now, state, KIND_OF_STATE[state], data
        )
        self._insert_event(event)
        self._touch_payment(refund.out_trade_no, now)
        return event

    def _touch_payment(self, out_trade_no: str, now: float) -> None:
        # A refund changes its payment (refunded_fee): the payment is never older than its
        # refunds, so retention never takes a payment before the refunds that point at it.
        self._db.execute(
            "UPDATE payments SET updated_at = MAX(updated_at, ?) WHERE out_trade_no = ?",
            (now, out_trade_no),
        )

    def _find(self, out_refund_no: str) -> Refund | None:
        row = self._db.execute(
            f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE out_refund_no = ?",  # noqa: S608
            (out_refund_no,),
        ).fetchone()
        return None if row is None else _refund(row)

    def _require(self, out_refund_no: str) -> Refund:
        refund = self._find(out_refund_no)
        if refund is None:
            raise NotFound(f"no refund with out_refund_no {out_refund_no}")
        return refund

    def _events(self, out_refund_no: str, after_seq: int) -> RefundEventList:
        owner = self._db.execute(
            "SELECT out_trade_no FROM refunds WHERE out_refund_no = ?", (out_refund_no,)
        ).fetchone()
        if owner is None:
            return []
        rows = self._db.execute(
            "SELECT seq, time, state, kind, data FROM refund_events"
            " WHERE out_refund_no = ? AND seq > ? ORDER BY seq",
            (out_refund_no, after_seq),
        ).fetchall()
        return [
            RefundEvent(
                out_refund_no,
                str(owner[0]),
                int(seq),
                float(time),
                RefundState(state),
                RefundEventKind(kind),
                json.loads(data),
            )
            for seq, time, state, kind, data in rows
        ]

    def _for_payment(
        self, out_trade_no: str, page_size: int, page_token: str
    ) -> tuple[RefundList, str]:
        args: list[Any] = [out_trade_no]
        after = ""
        if page_token:
            row = self._db.execute(
                "SELECT created_at FROM refunds WHERE out_refund_no = ? AND out_trade_no = ?",
                (page_token, out_trade_no),
            ).fetchone()
            if row is None:
                raise InvalidArgument("page_token", _PAGE_RULE)
            after = " AND (created_at, out_refund_no) > (?, ?)"
            args.extend((float(row[0]), page_token))
        rows = self._db.execute(
            f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE out_trade_no = ?{after}"  # noqa: S608
            " ORDER BY created_at, out_refund_no LIMIT ?",
            (*args, page_size + 1),
        ).fetchall()
        refunds = [_refund(row) for row in rows[:page_size]]
        more = len(rows) > page_size
        return refunds, refunds[-1].out_refund_no if more else ""

    def _refunded_fee(self, out_trade_no: str) -> int:
        (total,) = self._db.execute(
            "SELECT COALESCE(SUM(refund_fee), 0) FROM refunds WHERE out_trade_no = ? AND state = ?",
            (out_trade_no, RefundState.SUCCEEDED.value),
        ).fetchone()
        return int(total)

    def _unfinished(self) -> RefundList:
        rows = self._db.execute(
            f"SELECT {_REFUND_COLUMNS} FROM refunds"  # noqa: S608
            " WHERE final = 0 ORDER BY created_at, out_refund_no"
        ).fetchall()
        return [_refund(row) for row in rows]

    def _hold(self, finished_before: float, now: float) -> int:
        with transaction(self._db):
            return self._db.execute(
                "UPDATE payments SET updated_at = ? WHERE updated_at < ? AND out_trade_no IN"
                " (SELECT out_trade_no FROM refunds WHERE final = 0)",
                (now, finished_before),
            ).rowcount

    def _prune(self, finished_before: float, limit: int) -> int:
        with transaction(self._db):
            numbers = [
                row[0]
                for row in self._db.execute(
                    "SELECT r.out_refund_no FROM refunds r JOIN payments p USING (out_trade_no)"
                    " WHERE r.final = 1 AND r.updated_at < ? AND p.updated_at < ?"
                    " ORDER BY r.updated_at, r.out_refund_no LIMIT ?",
                    (finished_before, finished_before, limit),
                )
            ]
            if not numbers:
                return 0
            delete_marked(self._db, "refunds", "refund_events", "out_refund_no", numbers)
            return len(numbers)

    def _insert_event(self, event: RefundEvent) -> None:
        self._db.execute(
            "INSERT INTO refund_events (out_refund_no, seq, time, state, kind, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                event.out_refund_no,
                event.seq,
                event.time,
                event.state.value,
                event.kind.value,
                canonical(event.data),
            ),
        )


def _recorded_data(request: RefundRequest, total_fee: int) -> dict[str, str | int]:
    return {
        "refund_fee": request.refund_fee,
        "total_fee": total_fee,
        "refund_desc": request.refund_desc,
    }


def _refund(row: tuple[Any, ...]) -> Refund:
    (
        params,
        state,
        total_fee,
        created_at,
        updated_at,
        last_seq,
        transaction_id,
        refund_id,
        settlement_refund_fee,
        cash_refund_fee,
        coupon_refund_fee,
        refund_channel,
        success_time,
        recv_account,
        err_code,
        err_code_des,
        attention_reason,
        attention_action,
        first_sent_at,
        sent_at,
        attempts,
    ) = row
    stored = json.loads(params)
    request = RefundRequest(**{k: v for k, v in stored.items() if k in _REQUEST_FIELDS})
    return Refund(
        request=request,
        state=RefundState(state),
        total_fee=int(total_fee),
        created_at=float(created_at),
        updated_at=float(updated_at),
        last_seq=int(last_seq),
        transaction_id=transaction_id,
        refund_id=refund_id,
        settlement_refund_fee=int(settlement_refund_fee),
        cash_refund_fee=int(cash_refund_fee),
        coupon_refund_fee=int(coupon_refund_fee),
        refund_channel=refund_channel,
        success_time=success_time,
        recv_account=recv_account,
        err_code=err_code,
        err_code_des=err_code_des,
        attention_reason=attention_reason,
        attention_action=attention_action,
        first_sent_at=None if first_sent_at is None else float(first_sent_at),
        sent_at=None if sent_at is None else float(sent_at),
        attempts=int(attempts),
    )
