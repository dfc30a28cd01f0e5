"""PayScore service orders: create parameters, the call in flight and the latest answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import structlog

from facepayd.clock import Clock
from facepayd.errors import AlreadyExists, NotFound, WrongState
from facepayd.journal.db import Database, canonical, transaction
from facepayd.payscore.models import (
    JOURNAL_INITIAL,
    JOURNAL_TRANSITIONS,
    JournalState,
    ServiceOrderEvent,
    ServiceOrderRecord,
)

log = structlog.get_logger(__name__)

__all__ = ["ServiceOrderStore"]

# Aliases: inside the store, the name "list" would be a method.
ServiceOrderList = list[ServiceOrderRecord]
ServiceOrderEventList = list[ServiceOrderEvent]


class ServiceOrderStore:
    """PayScore service orders and their events; every call runs on the database's worker thread."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._database = database
        self._db = database.connection
        self._clock = clock

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
        record: ServiceOrderRecord = await self._database.run(
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
        record: ServiceOrderRecord = await self._database.run(
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
        sent: bool = False,
    ) -> ServiceOrderRecord:
        """Set the order's state, pending call and (if given) latest answer, with its event.

        sent: a request of the pending call may have left just now (sent_at is set to now).
        """
        now = self._clock.time()
        record: ServiceOrderRecord = await self._database.run(
            self._mark_service_order,
            out_order_no,
            journal_state,
            kind,
            dict(data or {}),
            pending,
            None if answer is None else dict(answer),
            only_if_changed,
            sent,
            now,
        )
        return record

    async def find_service_order(self, out_order_no: str) -> ServiceOrderRecord | None:
        """The journaled service order, or None."""
        record: ServiceOrderRecord | None = await self._database.run(
            self._find_service_order, out_order_no
        )
        return record

    async def pending_service_orders(self) -> ServiceOrderList:
        """Orders with a call whose answer is not recorded, oldest first."""
        records: ServiceOrderList = await self._database.run(self._pending_service_orders)
        return records

    async def settled_service_orders_in(self, journal_state: str) -> ServiceOrderList:
        """Orders in journal_state with nothing pending, oldest first."""
        records: ServiceOrderList = await self._database.run(
            self._settled_service_orders_in, journal_state
        )
        return records

    async def service_order_events(self, out_order_no: str) -> ServiceOrderEventList:
        """The order's events in order."""
        events: ServiceOrderEventList = await self._database.run(
            self._service_order_events, out_order_no
        )
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
        params_json = canonical(params)
        params_hash = hashlib.sha256(params_json.encode()).hexdigest()
        with transaction(self._db):
            existing = self._find_service_order(out_order_no)
            if existing is None or (existing.answer is None and not existing.pending):
                _check_transition(out_order_no, existing, journal_state)
            if existing is None:
                self._db.execute(
                    "INSERT INTO service_orders (out_order_no, params, params_hash, journal_state,"
                    " pending, risk_fund_amount, created_at, updated_at, sent_at)"
                    " VALUES (?, ?, ?, ?, 'create', ?, ?, ?, ?)",
                    (
                        out_order_no,
                        params_json,
                        params_hash,
                        journal_state,
                        risk_fund_amount,
                        now,
                        now,
                        now,
                    ),
                )
            elif existing.answer is None and not existing.pending:
                # Never answered and nothing in flight: WeChat Pay has no such order, so a
                # corrected create may reuse the number.
                self._db.execute(
                    "UPDATE service_orders SET params = ?, params_hash = ?, journal_state = ?,"
                    " pending = 'create', risk_fund_amount = ?, updated_at = ?, sent_at = ?"
                    " WHERE out_order_no = ?",
                    (
                        params_json,
                        params_hash,
                        journal_state,
                        risk_fund_amount,
                        now,
                        now,
                        out_order_no,
                    ),
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
        with transaction(self._db):
            if self._find_service_order(out_order_no) is None:
                _check_transition(out_order_no, None, journal_state)
                self._db.execute(
                    "INSERT INTO service_orders (out_order_no, params, params_hash, journal_state,"
                    " pending, risk_fund_amount, answer, created_at, updated_at)"
                    " VALUES (?, '{}', '', ?, '', ?, ?, ?, ?)",
                    (
                        out_order_no,
                        journal_state,
                        risk_fund_amount,
                        canonical(answer),
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
        sent: bool,
        now: float,
    ) -> ServiceOrderRecord:
        with transaction(self._db):
            current = self._require_service_order(out_order_no)
            _check_transition(out_order_no, current, journal_state)
            answer_json = None if answer is None else canonical(answer)
            unchanged = (
                current.journal_state == journal_state
                and current.pending == pending
                and (answer is None or current.answer == json.loads(answer_json or "null"))
            )
            if only_if_changed and unchanged and not sent:
                return current
            # Nothing pending: nothing in flight. A call still pending keeps its sent_at unless
            # a request of it may have left now.
            sent_at = "?" if sent else ("sent_at" if pending else "NULL")
            self._db.execute(
                "UPDATE service_orders SET journal_state = ?, pending = ?,"  # noqa: S608
                f" answer = COALESCE(?, answer), updated_at = ?, sent_at = {sent_at}"
                " WHERE out_order_no = ?",
                (journal_state, pending, answer_json, now, *((now,) if sent else ()), out_order_no),
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
            (out_order_no, seq, now, journal_state, kind, canonical(data)),
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

    def _settled_service_orders_in(self, journal_state: str) -> ServiceOrderList:
        rows = self._db.execute(
            f"SELECT {_SERVICE_ORDER_COLUMNS} FROM service_orders"  # noqa: S608
            " WHERE journal_state = ? AND pending = '' ORDER BY created_at, out_order_no",
            (journal_state,),
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


_SERVICE_ORDER_COLUMNS = (
    "out_order_no, params, journal_state, pending, risk_fund_amount, answer, created_at,"
    " updated_at, last_seq, sent_at"
)


def _service_order(row: tuple[Any, ...]) -> ServiceOrderRecord:
    no, params, state, pending, risk, answer, created_at, updated_at, last_seq, sent_at = row
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
        sent_at=None if sent_at is None else float(sent_at),
    )


def _check_transition(out_order_no: str, current: ServiceOrderRecord | None, wanted: str) -> None:
    """The one check of the service orders' transition table: an illegal change is refused."""
    state = JournalState(wanted)
    if current is None:
        allowed = state in JOURNAL_INITIAL
    else:
        allowed = state in JOURNAL_TRANSITIONS[JournalState(current.journal_state)]
    if not allowed:
        # A caller that asks for this has a bug: say so loudly, change nothing.
        log.error(
            "service_order_transition_refused",
            out_order_no=out_order_no,
            current=current.journal_state if current is not None else "",
            wanted=wanted,
        )
        origin = current.journal_state if current is not None else "nothing"
        raise WrongState(f"service order {out_order_no} cannot go from {origin} to {wanted}")
