"""PayScoreService against a fake v3 backend: refusals, the charge watcher, the in-flight bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog

from facepayd.clock import ManualClock
from facepayd.errors import (
    BackendRejected,
    BackendUnavailable,
    InvalidArgument,
    NotFound,
)
from facepayd.journal import Journal
from facepayd.payscore.models import JournalState
from facepayd.payscore.service import PayScoreService
from facepayd.wxpay import payscore_models as m
from facepayd.wxpay.v3 import CompletionLimits
from tests.helpers import settle
from tests.unit.manual_time import run_timers

J = JournalState
SERVICE_ID = "00000000000000000000000000000001"
BACKOFF = 1.0
IN_FLIGHT = 30.0
Answer = m.ServiceOrderResult | BaseException


def result(
    state: m.ServiceOrderState = m.ServiceOrderState.CREATED, description: str = ""
) -> m.ServiceOrderResult:
    return m.ServiceOrderResult(
        out_order_no="PS1", service_id=SERVICE_ID, state=state, state_description=description
    )


CREATED = result()
CHARGING = result(m.ServiceOrderState.DOING, m.MCH_COMPLETE)
DONE = result(m.ServiceOrderState.DONE)
NEW_ORDER = m.NewServiceOrder(
    out_order_no="PS1",
    service_introduction="charging bank",
    risk_fund=m.RiskFund("DEPOSIT", 10_000),
    time_range=m.TimeRange(start_time="OnAccept"),
    post_payments=(m.PostPayment("hire", 100),),
    openid="o1",
)
COMPLETION = m.ServiceOrderCompletion(
    post_payments=(m.PostPayment("hire", 100),),
    total_amount=100,
    time_range=m.TimeRange(end_time="20300101120000"),
)


@dataclass
class FakePayScore:
    """A PayScoreBackend playing scripted answers; each call is recorded with its time."""

    clock: ManualClock
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    query_default: Answer = CREATED
    calls: list[tuple[str, float]] = field(default_factory=list)
    # Set to hold a call until the test lets it go.
    gate: asyncio.Event | None = None

    async def _answer(self, name: str, default: Answer) -> m.ServiceOrderResult:
        self.calls.append((name, self.clock.time()))
        if self.gate is not None:
            await self.gate.wait()
        queue = self.answers.get(name, [])
        answer = queue.pop(0) if queue else default
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def create_service_order(self, order: m.NewServiceOrder) -> m.ServiceOrderResult:
        return await self._answer("create", CREATED)

    async def complete_service_order(
        self,
        out_order_no: str,
        completion: m.ServiceOrderCompletion,
        *,
        limits: CompletionLimits | None = None,
    ) -> m.ServiceOrderResult:
        return await self._answer("complete", CHARGING)

    async def sync_service_order(
        self, out_order_no: str, sync_type: str, paid_time: str, /
    ) -> m.ServiceOrderResult:
        return await self._answer("sync", DONE)

    async def get_service_order(self, out_order_no: str) -> m.ServiceOrderResult:
        return await self._answer("query", self.query_default)

    async def cancel_service_order(self, out_order_no: str, reason: str) -> m.ServiceOrderResult:
        return await self._answer("cancel", result(m.ServiceOrderState.REVOKED))

    async def get_user_unionid(self, face_sid: str) -> m.UnionIdResult:
        return m.UnionIdResult("u")

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@dataclass
class Rig:
    clock: ManualClock
    backend: FakePayScore
    journal: Journal
    service: PayScoreService
    path: Path

    def make_service(self) -> PayScoreService:
        return PayScoreService(
            journal=self.journal.service_orders,
            client=self.backend,
            clock=self.clock,
            service_id=SERVICE_ID,
            resolve_backoff=BACKOFF,
            resolve_backoff_max=8.0,
            in_flight_after=IN_FLIGHT,
        )

    async def state(self) -> str:
        record = await self.journal.service_orders.find_service_order("PS1")
        assert record is not None
        return record.journal_state

    async def pending(self) -> str:
        record = await self.journal.service_orders.find_service_order("PS1")
        assert record is not None
        return record.pending

    async def run(self, seconds: float) -> None:
        """Move the clock timer by timer up to seconds from now, letting every task run."""
        await run_timers(self.clock, seconds, _quiet)

    async def restart(self) -> None:
        await self.service.close(0)
        await self.journal.close()
        self.journal = await Journal.open(self.path, clock=self.clock)
        self.service = self.make_service()


async def _quiet() -> None:
    """Let the journal's worker thread answer and the woken tasks run."""
    for _ in range(20):
        await settle()
        await asyncio.sleep(0.001)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = ManualClock()
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path, clock=clock)
    r = Rig(clock, FakePayScore(clock), journal, None, path)  # type: ignore[arg-type]
    r.service = r.make_service()
    yield r
    await r.service.close(0)
    await r.journal.close()


async def charging(rig: Rig) -> None:
    """PS1 created, completed, and awaiting its charge (CHARGING)."""
    await rig.service.create(NEW_ORDER)
    view = await rig.service.complete("PS1", COMPLETION)
    assert view.journal_state is J.CHARGING


# ---------------------------------------------------------------- refusals keep the order watched


@pytest.mark.parametrize(
    ("op", "failure"),
    [
        ("sync", BackendRejected("INVALID_ORDER_STATE", "the order is being charged")),
        ("cancel", BackendRejected("ORDER_CANCELED_FAIL", "cannot cancel a completed order")),
        ("complete", BackendRejected("INVALID_ORDER_STATE", "already completed")),
        ("sync", NotFound("no such order")),
        ("sync", InvalidArgument("paid_time", "must be yyyyMMddHHmmss")),
    ],
)
async def test_a_refused_call_on_a_charging_order_leaves_it_charging_and_watched(
    rig: Rig, op: str, failure: Exception
) -> None:
    await charging(rig)
    rig.backend.answers[op] = [failure]
    rig.backend.query_default = CHARGING
    calls = {
        "sync": lambda: rig.service.sync("PS1", "20300101120000"),
        "cancel": lambda: rig.service.cancel("PS1", "changed my mind"),
        "complete": lambda: rig.service.complete("PS1", COMPLETION),
    }
    with pytest.raises(type(failure)):
        await calls[op]()
    assert await rig.state() == J.CHARGING, "a refused call changed nothing at WeChat Pay"
    assert await rig.pending() == ""
    # The resolver follows the charge to its end.
    rig.backend.query_default = DONE
    await rig.run(4 * BACKOFF)
    assert await rig.state() == J.RECORDED
    events = await rig.journal.service_orders.service_order_events("PS1")
    assert events[-1].kind == "charge_settled"


async def test_a_refused_create_is_not_created_and_a_refused_complete_stays_recorded(
    rig: Rig,
) -> None:
    rig.backend.answers["create"] = [BackendRejected("NO_AUTH", "not authorized")]
    with pytest.raises(BackendRejected):
        await rig.service.create(NEW_ORDER)
    assert await rig.state() == J.NOT_CREATED
    await rig.service.create(NEW_ORDER)
    assert await rig.state() == J.RECORDED
    rig.backend.answers["complete"] = [BackendRejected("INVALID_ORDER_STATE", "not yet")]
    with pytest.raises(BackendRejected):
        await rig.service.complete("PS1", COMPLETION)
    assert await rig.state() == J.RECORDED


# ---------------------------------------------------------------- the resolver's owner


async def test_a_resolver_pass_that_fails_unexpectedly_is_logged_and_the_watch_goes_on(
    rig: Rig,
) -> None:
    await charging(rig)
    rig.backend.answers["query"] = [RuntimeError("a bug in a pass")]
    rig.backend.query_default = CHARGING
    with structlog.testing.capture_logs() as logs:
        await rig.run(2 * BACKOFF)
    assert rig.backend.names().count("query") >= 2, "the loop went on after the failed pass"
    failed = [e for e in logs if e["event"] == "payscore_resolve_pass_failed"]
    assert failed
    assert failed[0]["log_level"] == "error"
    rig.backend.query_default = DONE
    await rig.run(16)
    assert await rig.state() == J.RECORDED
    # Stopping is not broken by what happened in the resolver.
    await rig.service.close(0)


# ---------------------------------------------------------------- the in-flight bound


def queries_after(rig: Rig, start: float) -> list[float]:
    return [t - start for name, t in rig.backend.calls if name == "query" and t >= start]


async def test_a_create_with_an_unknown_outcome_is_not_taken_as_absent_while_it_may_land(
    rig: Rig,
) -> None:
    rig.backend.answers["create"] = [BackendUnavailable("timed out")]
    rig.backend.query_default = NotFound("no such order")
    with pytest.raises(BackendUnavailable):
        await rig.service.create(NEW_ORDER)
    sent = rig.clock.time()
    await rig.run(IN_FLIGHT - 1)
    assert queries_after(rig, sent), "the unknown outcome is queried"
    assert await rig.state() == J.CREATING, "a 404 while the create may still land is no proof"
    assert await rig.pending() == "create"
    # A POS asking meanwhile is told to come back, and nothing is sent again.
    with pytest.raises(BackendUnavailable):
        await rig.service.create(NEW_ORDER)
    assert rig.backend.names().count("create") == 1
    await rig.run(2)
    assert await rig.state() == J.NOT_CREATED
    assert all(t >= IN_FLIGHT for t in queries_after(rig, sent)[-1:])


async def test_a_create_that_lands_late_is_found_not_orphaned(rig: Rig) -> None:
    rig.backend.answers["create"] = [BackendUnavailable("timed out")]
    rig.backend.answers["query"] = [NotFound("not yet"), NotFound("not yet")]
    rig.backend.query_default = CREATED
    with pytest.raises(BackendUnavailable):
        await rig.service.create(NEW_ORDER)
    await rig.run(IN_FLIGHT + 5)
    assert await rig.state() == J.RECORDED
    assert await rig.pending() == ""


async def test_a_complete_in_flight_is_kept_pending_until_it_lands_then_watched(
    rig: Rig,
) -> None:
    await rig.service.create(NEW_ORDER)
    rig.backend.answers["complete"] = [BackendUnavailable("timed out")]
    # Still plain DOING (the user's service), as before the complete.
    rig.backend.query_default = result(m.ServiceOrderState.DOING, m.USER_CONFIRM)
    with pytest.raises(BackendUnavailable):
        await rig.service.complete("PS1", COMPLETION)
    await rig.run(IN_FLIGHT / 2)
    assert (await rig.state(), await rig.pending()) == (J.COMPLETING, "complete")
    # The complete lands: WeChat Pay starts the charge.
    rig.backend.query_default = CHARGING
    await rig.run(4 * BACKOFF + 8)
    assert (await rig.state(), await rig.pending()) == (J.CHARGING, "")
    rig.backend.query_default = DONE
    await rig.run(16)
    assert await rig.state() == J.RECORDED


async def test_a_complete_not_seen_past_the_bound_is_settled_as_not_landed(rig: Rig) -> None:
    await rig.service.create(NEW_ORDER)
    rig.backend.answers["complete"] = [BackendUnavailable("timed out")]
    rig.backend.query_default = result(m.ServiceOrderState.DOING, m.USER_CONFIRM)
    with pytest.raises(BackendUnavailable):
        await rig.service.complete("PS1", COMPLETION)
    await rig.run(IN_FLIGHT + 9)
    assert (await rig.state(), await rig.pending()) == (J.RECORDED, "")


async def test_a_create_pending_from_an_earlier_run_waits_for_the_bound_from_the_start(
    rig: Rig,
) -> None:
    # Journaled, then the daemon died: the create may have left (or be retried) up to the end.
    await rig.journal.service_orders.begin_service_order(
        "PS1", {"out_order_no": "PS1"}, 10_000, journal_state=J.CREATING
    )
    await rig.clock.advance(3600)
    await rig.restart()
    rig.backend.query_default = NotFound("not yet")
    await rig.service.recover(wait=5)
    assert rig.backend.names() == ["query"], "queried at once: a found order resolves it"
    assert await rig.state() == J.CREATING
    await rig.run(IN_FLIGHT - 1)
    assert await rig.state() == J.CREATING
    await rig.run(2)
    assert await rig.state() == J.NOT_CREATED


async def test_a_create_pending_from_an_earlier_run_that_landed_resolves_at_start(
    rig: Rig,
) -> None:
    await rig.journal.service_orders.begin_service_order(
        "PS1", {"out_order_no": "PS1"}, 10_000, journal_state=J.CREATING
    )
    await rig.restart()
    rig.backend.query_default = CREATED
    await rig.service.recover(wait=5)
    assert (await rig.state(), await rig.pending()) == (J.RECORDED, "")
