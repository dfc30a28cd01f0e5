"""PayScore by face and journaled v3 service orders.

Face → PayScore status is a daemon-owned face flow (face/flows.py, getUserPayScoreStatus)
whose four documented outcomes are the results defined here, not errors. Every create,
complete, sync and cancel is committed to the journal (pending = that call) before it is
sent and its answer recorded after; an order whose call may have been sent but whose answer
was not recorded (a crash, a lost connection, an untrusted answer) is resolved by a query, at
start and in the background, so WeChat Pay never holds an order the journal does not know of.

A query decides that a pending call did NOT land (a create answered 404, a complete whose order
is still plain DOING...) only once in_flight_after has passed since a request of it may last
have left (the journaled sent_at; for a call pending from an earlier run, since this run began,
as the v3 client retries and the dead run's last attempt is not journaled). Until then an answer
that shows the call's effect resolves it, and any other answer is kept with the call pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from facepayd.clock import Clock, race, wait_event
from facepayd.errors import (
    BackendError,
    BackendRejected,
    BackendUnavailable,
    ConfigError,
    FacepayError,
    InvalidArgument,
    NotFound,
    ResponseNotTrusted,
    Unavailable,
)
from facepayd.payscore.models import JournalState, ServiceOrderRecord
from facepayd.payscore.ports import PayScoreBackend, ServiceOrderJournal
from facepayd.tasks import TaskOwner
from facepayd.wxpay import payscore_models as m
from facepayd.wxpay import v3

__all__ = [
    "JournalState",
    "PayScoreOutcome",
    "PayScoreService",
    "PayScoreStatus",
    "ServiceOrderView",
    "result_from_json",
    "result_to_json",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

NOT_CONFIGURED = "payscore is not configured (no [payscore] section with service_id and keys)"


class PayScoreOutcome(enum.StrEnum):
    """getUserPayScoreStatus's return_code: how the face check ended."""

    SUCCESS = "SUCCESS"  # PayScore enabled and the service authorized: an order may be created
    ERROR = "ERROR"  # face recognised, but enabling PayScore or authorizing failed
    USER_CANCEL = "USER_CANCEL"  # the user left the face or authorization UI
    SCAN_PAYMENT = "SCAN_PAYMENT"  # the user chose to scan a code instead


@dataclass(frozen=True, slots=True)
class PayScoreStatus:
    """The result of a face PayScore check; face_sid is a credential: never log it."""

    outcome: PayScoreOutcome
    openid: str = ""
    sub_openid: str = ""
    face_sid: str = ""
    return_msg: str = ""
    err_code: str = ""

    def __repr__(self) -> str:
        return (
            f"PayScoreStatus(outcome={self.outcome.value!r}, openid={self.openid!r},"
            " face_sid=<redacted>)"
        )


_PENDING_STATE = {
    "create": JournalState.CREATING,
    "complete": JournalState.COMPLETING,
    "sync": JournalState.SYNCING,
    "cancel": JournalState.CANCELLING,
}


@dataclass(frozen=True, slots=True)
class ServiceOrderView:
    """A service order as the journal and WeChat Pay's latest answer show it."""

    out_order_no: str
    journal_state: JournalState
    order: m.ServiceOrderResult | None


class PayScoreService:
    """Face PayScore checks, journaled service orders and UnionIDs."""

    def __init__(
        self,
        *,
        journal: ServiceOrderJournal,
        client: PayScoreBackend | None,
        clock: Clock,
        service_id: str,
        notify_url: str = "",
        service_risk_cap: int | None = None,
        resolve_backoff: float = 1.0,
        resolve_backoff_max: float = 60.0,
        in_flight_after: float = 30.0,
    ) -> None:
        self._journal = journal
        self._client = client
        self._clock = clock
        self._service_id = service_id
        self._notify_url = notify_url
        self._service_risk_cap = service_risk_cap
        self._resolve_backoff = resolve_backoff
        self._resolve_backoff_max = resolve_backoff_max
        self._locks: dict[str, _OrderLock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # The resolver's owner: a crash is logged at once, and close() never re-raises it.
        self._owner = TaskOwner("payscore")
        self._resolver: asyncio.Task[None] | None = None
        self._first_pass = asyncio.Event()
        self._rescan = False
        self._closed = False
        # No request of a pending call can still land in_flight_after past its sent_at, nor,
        # for a call pending from an earlier run, past this run's start.
        self._in_flight_after = in_flight_after
        self._started = clock.time()

    @property
    def configured(self) -> bool:
        """Whether service orders can be sent (a v3 client is configured)."""
        return self._client is not None

    # ------------------------------------------------------------------ face

    @property
    def service_id(self) -> str:
        """The configured PayScore service_id ("" when PayScore is not configured)."""
        return self._service_id

    async def unionid(self, face_sid: str) -> m.UnionIdResult:
        """The UnionID of the user a PayScore check or user-info session recognised."""
        return await self._own(self._require_client().get_user_unionid(face_sid))

    # ------------------------------------------------------------------ service orders

    async def create(self, order: m.NewServiceOrder) -> ServiceOrderView:
        """Create an order; the same parameters again return the existing order."""
        client = self._require_client()
        order = dataclasses.replace(
            order,
            service_id=order.service_id or self._service_id,
            notify_url=order.notify_url or self._notify_url,
        )
        if order.service_id != self._service_id:
            raise InvalidArgument("service_id", f"must be the configured {self._service_id}")
        v3.validate_new_order(order)
        # Through JSON once, so it compares equal to the journal's copy.
        params = json.loads(json.dumps(dataclasses.asdict(order)))
        no = order.out_order_no
        return await self._own(self._create(client, no, order, params))

    async def complete(
        self, out_order_no: str, completion: m.ServiceOrderCompletion
    ) -> ServiceOrderView:
        """Complete an order: WeChat Pay then charges total_amount."""
        client = self._require_client()
        # The amounts must add up before anything (even a query) is sent.
        v3.validate_completion(completion)

        def check(record: ServiceOrderRecord) -> None:
            v3.validate_completion(completion, self._limits(record))

        async def send(record: ServiceOrderRecord) -> m.ServiceOrderResult:
            return await client.complete_service_order(
                out_order_no, completion, limits=self._limits(record)
            )

        data = {"total_amount": completion.total_amount}
        return await self._own(self._act(out_order_no, "complete", data, send, check))

    async def sync(
        self, out_order_no: str, paid_time: str, sync_type: str = m.SYNC_ORDER_PAID
    ) -> ServiceOrderView:
        """Report an order paid through another channel (Order_Paid)."""
        client = self._require_client()

        async def send(_: ServiceOrderRecord) -> m.ServiceOrderResult:
            return await client.sync_service_order(out_order_no, sync_type, paid_time)

        data = {"type": sync_type, "paid_time": paid_time}
        return await self._own(self._act(out_order_no, "sync", data, send))

    async def cancel(self, out_order_no: str, reason: str) -> ServiceOrderView:
        """Cancel (revoke) an order that has not been completed."""
        client = self._require_client()

        async def send(_: ServiceOrderRecord) -> m.ServiceOrderResult:
            return await client.cancel_service_order(out_order_no, reason)

        return await self._own(self._act(out_order_no, "cancel", {"reason": reason}, send))

    async def get(self, out_order_no: str) -> ServiceOrderView:
        """Query WeChat Pay and record the answer (this also resolves a pending call)."""
        self._require_client()
        return await self._own(self._locked(out_order_no, self._refresh(out_order_no)))

    async def journaled(self, out_order_no: str) -> ServiceOrderView:
        """The order as the journal has it, without asking WeChat Pay."""
        record = await self._journal.find_service_order(out_order_no)
        if record is None:
            raise NotFound(f"no service order {out_order_no} in the journal")
        return _view(record)

    # ------------------------------------------------------------------ recovery

    async def recover(self, wait: float) -> int:
        """Resolve every order with a pending call; wait up to `wait` s for the first pass."""
        pending = await self._journal.pending_service_orders()
        if self._client is None:
            if pending:
                log.warning("payscore_pending_unconfigured", count=len(pending))
            return len(pending)
        if not pending:
            # Nothing unresolved; orders awaiting their charge are watched in the background.
            if await self._journal.settled_service_orders_in(JournalState.CHARGING):
                self._start_resolver(first_delay=0.0)
            return 0
        log.info("payscore_resolving", count=len(pending))
        self._first_pass.clear()
        self._start_resolver(first_delay=0.0)
        # Bounded so an unreachable WeChat Pay cannot keep the daemon from serving;
        # what is left is resolved in the background.
        await wait_event(self._clock, self._first_pass, wait)
        return len(pending)

    async def close(self, grace: float) -> None:
        """Let in-flight calls record their answers (up to grace s), then stop."""
        self._closed = True
        await self._owner.close()
        if self._tasks:
            everything = asyncio.gather(*self._tasks, return_exceptions=True)
            await race(self._clock, everything, grace)
            not_done = [task for task in self._tasks if not task.done()]
            for task in not_done:
                task.cancel()
            for task in not_done:
                with contextlib.suppress(BaseException):
                    await task

    # ------------------------------------------------------------------ private

    def _require_client(self) -> PayScoreBackend:
        if self._closed:
            raise Unavailable("the daemon is stopping")
        if self._client is None:
            raise ConfigError(NOT_CONFIGURED)
        return self._client

    async def _own(self, work: Awaitable[T]) -> T:
        """Run work as a daemon-owned task: a caller that hangs up cannot cut a call in half."""
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _locked(self, out_order_no: str, work: Awaitable[T]) -> T:
        async with self._order_lock(out_order_no):
            return await work

    @contextlib.asynccontextmanager
    async def _order_lock(self, out_order_no: str) -> AsyncIterator[None]:
        """One call per order at a time; the lock lives only while someone holds or wants it."""
        entry = self._locks.get(out_order_no)
        if entry is None:
            entry = self._locks[out_order_no] = _OrderLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[out_order_no]

    async def _create(
        self,
        client: PayScoreBackend,
        no: str,
        order: m.NewServiceOrder,
        params: dict[str, Any],
    ) -> ServiceOrderView:
        async with self._order_lock(no):
            record = await self._journal.find_service_order(no)
            sent_before = record is not None and (record.pending or record.answer is not None)
            if record is not None and record.params == params and sent_before:
                # What WeChat Pay has is the answer: a query, not a resend.
                view = await self._refresh(no)
                if view.journal_state is not JournalState.NOT_CREATED:
                    return view
            await self._journal.begin_service_order(
                no,
                params,
                order.risk_fund.amount,
                journal_state=JournalState.CREATING,
                data={"openid": order.openid, "need_user_confirm": order.need_user_confirm},
            )
            call = client.create_service_order(order)
            return await self._send(no, "create", call, before=JournalState.NOT_CREATED)

    async def _act(
        self,
        no: str,
        op: str,
        data: dict[str, Any],
        send: Callable[[ServiceOrderRecord], Awaitable[m.ServiceOrderResult]],
        check: Callable[[ServiceOrderRecord], None] | None = None,
    ) -> ServiceOrderView:
        async with self._order_lock(no):
            record = await self._known(no)
            if check is not None:
                # Before the journal marks anything pending: a refused call is never sent.
                check(record)
            await self._journal.mark_service_order(
                no, _PENDING_STATE[op], f"{op}_requested", data, pending=op, sent=True
            )
            before = JournalState(record.journal_state)
            return await self._send(no, op, send(record), before=before)

    async def _known(self, no: str) -> ServiceOrderRecord:
        """The journaled order with nothing pending; adopted or resolved by a query if needed."""
        record = await self._journal.find_service_order(no)
        if record is None or record.pending:
            await self._refresh(no)
            record = await self._journal.find_service_order(no)
        if record is None or record.journal_state == JournalState.NOT_CREATED:
            raise NotFound(f"service order {no} was not created")
        if record.pending:
            raise BackendUnavailable(f"service order {no}: its last call is still unresolved")
        return record

    async def _send(
        self,
        no: str,
        op: str,
        call: Awaitable[m.ServiceOrderResult],
        *,
        before: JournalState,
    ) -> ServiceOrderView:
        """Await a journaled call and record its answer (or leave it pending if unknown).

        A call refused (by WeChat Pay or the client's own checks) changed nothing: the order goes
        back to the state before it (NOT_CREATED for a create), so an order awaiting its charge
        (CHARGING) stays watched until the charge settles.
        """
        try:
            result = await call
        except (BackendRejected, NotFound) as exc:
            code = exc.code if isinstance(exc, BackendRejected) else "NOT_FOUND"
            await self._journal.mark_service_order(no, before, "rejected", {"op": op, "code": code})
            self._watch_if_charging(before)
            raise
        except InvalidArgument as exc:
            # Refused by the client's own checks: nothing was sent.
            await self._journal.mark_service_order(
                no, before, "refused", {"op": op, "field": exc.field}
            )
            self._watch_if_charging(before)
            raise
        except (BackendUnavailable, ResponseNotTrusted) as exc:
            await self._journal.mark_service_order(
                no,
                _PENDING_STATE[op],
                "outcome_unknown",
                {"op": op, "reason": exc.reason},
                pending=op,
                # The call's last attempt left no later than now: the in-flight bound runs
                # from here.
                sent=True,
            )
            self._start_resolver(first_delay=self._resolve_backoff)
            raise
        except Exception:
            # Unexpected: whether it was sent is unknown, so it stays pending.
            self._start_resolver(first_delay=self._resolve_backoff)
            raise
        state = _answered_state(result)
        record = await self._journal.mark_service_order(
            no,
            state,
            "answered",
            {"op": op, "state": result.state.value, "state_description": result.state_description},
            answer=result_to_json(result),
        )
        log.info(
            "service_order_answered",
            out_order_no=no,
            op=op,
            state=result.state.value,
            state_description=result.state_description,
        )
        if state is JournalState.CHARGING:
            self._start_resolver(first_delay=self._resolve_backoff)
        return _view(record)

    async def _refresh(self, no: str) -> ServiceOrderView:
        """Query the order and record what WeChat Pay says; the caller holds the order's lock."""
        if self._client is None:
            raise ConfigError(NOT_CONFIGURED)
        record = await self._journal.find_service_order(no)
        try:
            result = await self._client.get_service_order(no)
        except NotFound:
            if record is not None and record.pending and self._may_be_in_flight(record):
                # Not there yet is not "never": the call may still land.
                raise BackendUnavailable(
                    f"service order {no}: its {record.pending} may still be on its way;"
                    f" resolved within {self._in_flight_after:g} s"
                ) from None
            if record is not None and record.pending == "create":
                record = await self._journal.mark_service_order(
                    no, JournalState.NOT_CREATED, "not_found", {"op": "query"}
                )
                log.info("service_order_not_created", out_order_no=no)
                return _view(record)
            if record is not None and record.pending:
                # Nothing more to learn by asking again; the POS sees NOT_FOUND.
                await self._journal.mark_service_order(
                    no, JournalState.RECORDED, "not_found", {"op": "query"}
                )
            raise
        answer = result_to_json(result)
        state = _answered_state(result)
        if state is JournalState.CHARGING:
            self._start_resolver(first_delay=self._resolve_backoff)
        if (
            record is not None
            and record.pending
            and not _landed(record.pending, result)
            and self._may_be_in_flight(record)
        ):
            # The call may still land: the answer is kept, the call stays pending.
            record = await self._journal.mark_service_order(
                no,
                _PENDING_STATE[record.pending],
                "refreshed_in_flight",
                {"state": result.state.value, "state_description": result.state_description},
                pending=record.pending,
                answer=answer,
                only_if_changed=True,
            )
            return _view(record)
        if record is None:
            risk = result.risk_fund.amount if result.risk_fund is not None else None
            record = await self._journal.adopt_service_order(no, answer, risk, journal_state=state)
            return _view(record)
        kind = f"resolved_{record.pending}" if record.pending else "refreshed"
        if record.journal_state == JournalState.CHARGING and state is JournalState.RECORDED:
            kind = "charge_settled"
        record = await self._journal.mark_service_order(
            no,
            state,
            kind,
            {"state": result.state.value, "state_description": result.state_description},
            answer=answer,
            only_if_changed=not record.pending,
        )
        return _view(record)

    def _watch_if_charging(self, state: JournalState) -> None:
        """An order back in CHARGING is followed to its charge's end by the resolver."""
        if state is JournalState.CHARGING:
            self._start_resolver(first_delay=self._resolve_backoff)

    def _start_resolver(self, *, first_delay: float) -> None:
        if self._closed:
            return
        if self._resolver is not None and not self._resolver.done():
            # The running pass may have listed the orders before this one: go round again.
            self._rescan = True
            return
        self._resolver = self._owner.spawn(
            self._resolve_loop(first_delay), name="payscore resolver"
        )

    async def _resolve_loop(self, first_delay: float) -> None:
        delay = self._resolve_backoff
        if first_delay:
            await self._clock.sleep(first_delay)
        while True:
            self._rescan = False
            wake: float | None = None
            try:
                left, wake = await self._resolve_pass()
            except Exception:
                # A bug or a journal that cannot answer: logged, and tried again later, never
                # the end of the watch over what WeChat Pay may hold.
                log.exception("payscore_resolve_pass_failed", retry_in=delay)
                left = 1
            self._first_pass.set()
            if not left and not self._rescan:
                return
            pause = delay
            if wake is not None:
                # Ask again as soon as the in-flight bound passes, not a backoff later.
                pause = min(pause, max(wake - self._clock.time(), 0.0) + 0.001)
            await self._clock.sleep(pause)
            delay = min(delay * 2, self._resolve_backoff_max)

    async def _resolve_pass(self) -> tuple[int, float | None]:
        """Try every pending order and every charge once.

        How many are still unresolved, and the earliest in-flight bound among them (None when
        none waits for one).
        """
        left = 0
        wake: float | None = None
        for record in await self._journal.pending_service_orders():
            try:
                await self._locked(record.out_order_no, self._resolve(record.out_order_no))
            except FacepayError as exc:
                left += isinstance(exc, BackendError)
                log.warning(
                    "service_order_unresolved",
                    out_order_no=record.out_order_no,
                    reason=exc.reason,
                )
            after = await self._journal.find_service_order(record.out_order_no)
            if after is not None and after.pending:
                due = self._in_flight_due(after)
                if due > self._clock.time():
                    wake = due if wake is None else min(wake, due)
        return left + await self._watch_charges(), wake

    async def _watch_charges(self) -> int:
        """Query each order awaiting its charge once; how many still await it."""
        waiting = 0
        for record in await self._journal.settled_service_orders_in(JournalState.CHARGING):
            no = record.out_order_no
            try:
                view = await self._locked(no, self._refresh_charging(no))
            except FacepayError as exc:
                waiting += 1
                log.warning("service_order_charge_unknown", out_order_no=no, reason=exc.reason)
                continue
            if view.journal_state is JournalState.CHARGING:
                waiting += 1
            else:
                log.info("service_order_charge_settled", out_order_no=no)
        return waiting

    async def _refresh_charging(self, no: str) -> ServiceOrderView:
        """Query an order still awaiting its charge (another call may have settled it)."""
        record = await self._journal.find_service_order(no)
        if record is None or record.journal_state != JournalState.CHARGING or record.pending:
            return await self.journaled(no)
        return await self._refresh(no)

    def _limits(self, record: ServiceOrderRecord) -> v3.CompletionLimits:
        """What the created order fixes for its completion, from the journal."""
        risk_fund = _risk_fund(record)
        return v3.CompletionLimits(
            risk_fund=risk_fund,
            end_time_at_create=_end_time_at_create(record),
            service_risk_cap=self._service_risk_cap,
        )

    async def _resolve(self, no: str) -> None:
        record = await self._journal.find_service_order(no)
        if record is None or not record.pending:
            return
        view = await self._refresh(no)
        if view.journal_state is _PENDING_STATE[record.pending]:
            raise _StillInFlight(f"service order {no}: its {record.pending} may still land")
        log.info("service_order_resolved", out_order_no=no, journal_state=view.journal_state.value)

    def _in_flight_due(self, record: ServiceOrderRecord) -> float:
        """Wall time after which no request of the order's pending call can still land."""
        return max(record.sent_at or 0.0, self._started) + self._in_flight_after

    def _may_be_in_flight(self, record: ServiceOrderRecord) -> bool:
        return self._clock.time() < self._in_flight_due(record)


class _StillInFlight(BackendUnavailable):
    """A pending call is neither seen to have landed nor past its in-flight bound."""


@dataclass(slots=True)
class _OrderLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _answered_state(result: m.ServiceOrderResult) -> JournalState:
    """RECORDED, or CHARGING while WeChat Pay is still collecting a completed order."""
    if result.state is m.ServiceOrderState.DOING and result.state_description == m.MCH_COMPLETE:
        return JournalState.CHARGING
    return JournalState.RECORDED


def _landed(op: str, result: m.ServiceOrderResult) -> bool:
    """Whether an answer shows the effect of call op (then the call needs no more waiting)."""
    match op:
        case "create":
            return True  # the order exists
        case "complete":
            return result.state is m.ServiceOrderState.DONE or (
                _answered_state(result) is JournalState.CHARGING
            )
        case "sync":
            return result.state is m.ServiceOrderState.DONE
        case "cancel":
            return result.state is m.ServiceOrderState.REVOKED
    return False


def _risk_fund(record: ServiceOrderRecord) -> m.RiskFund | None:
    """The order's risk fund from its create parameters, else from WeChat Pay's answer."""
    for source in (record.params, record.answer or {}):
        risk = source.get("risk_fund")
        if isinstance(risk, dict) and isinstance(risk.get("amount"), int):
            return m.RiskFund(str(risk.get("name", "")).strip(), risk["amount"])
    return None


def _end_time_at_create(record: ServiceOrderRecord) -> str | None:
    """The end_time the order was created with ("" none), None when the journal cannot tell."""
    time_range = record.params.get("time_range")
    if isinstance(time_range, dict):
        return str(time_range.get("end_time") or "")
    # Adopted (created elsewhere): only a not-yet-completed answer still shows create's range.
    return None


def _view(record: ServiceOrderRecord) -> ServiceOrderView:
    return ServiceOrderView(
        out_order_no=record.out_order_no,
        journal_state=JournalState(record.journal_state),
        order=None if record.answer is None else result_from_json(record.answer),
    )


def result_to_json(result: m.ServiceOrderResult) -> dict[str, Any]:
    """A verified answer as the journal stores it."""
    data = dataclasses.asdict(result)
    data["state"] = result.state.value
    return data


def result_from_json(data: dict[str, Any]) -> m.ServiceOrderResult:
    """The journal's copy of an answer back as a domain result."""
    risk = data.get("risk_fund")
    time_range = data.get("time_range")
    location = data.get("location")
    collection = data.get("collection")
    return m.ServiceOrderResult(
        **{
            **data,
            "state": m.ServiceOrderState(data["state"]),
            "post_payments": tuple(m.PostPayment(**p) for p in data.get("post_payments", ())),
            "post_discounts": tuple(m.PostDiscount(**d) for d in data.get("post_discounts", ())),
            "risk_fund": None if risk is None else m.RiskFund(**risk),
            "time_range": None if time_range is None else m.TimeRange(**time_range),
            "location": None if location is None else m.Location(**location),
            "collection": None
            if collection is None
            else m.Collection(
                **{
                    **collection,
                    "details": tuple(
                        m.CollectionDetail(**d) for d in collection.get("details", ())
                    ),
                }
            ),
        }
    )
