"""Retention on the injected clock: old final payments leave the journal, nothing else does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest
import structlog

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import FacepayClientError
from facepayd.clock import ManualClock
from facepayd.errors import ConfigError
from facepayd.journal import Journal, Retention
from facepayd.journal.retention import DAY
from facepayd.ops import config
from facepayd.payments.models import EventKind, PaymentOrder, PaymentState
from facepayd.tasks import TaskOwner
from tests.helpers import until
from tests.unit.test_config import with_identity
from tests.unit.test_disk_faults import disk_rig

S = PaymentState
# The shortest way into each state the retention test needs.
PATHS: dict[PaymentState, list[tuple[PaymentState, EventKind]]] = {
    S.SUCCEEDED: [(S.PAYING, EventKind.FACE_CAPTURED), (S.SUCCEEDED, EventKind.SUCCEEDED)],
    S.FAILED: [(S.PAYING, EventKind.FACE_CAPTURED), (S.FAILED, EventKind.FAILED)],
    S.REVERSED: [
        (S.PAYING, EventKind.FACE_CAPTURED),
        (S.REVERSING, EventKind.PENDING),
        (S.REVERSED, EventKind.REVERSED),
    ],
    S.CLOSED: [
        (S.PAYING, EventKind.FACE_CAPTURED),
        (S.REVERSING, EventKind.PENDING),
        (S.CLOSED, EventKind.CLOSED),
    ],
    S.CANCELLED: [(S.CANCELLED, EventKind.CANCELLED)],
    S.CAPTURING: [],
    S.PAYING: [(S.PAYING, EventKind.FACE_CAPTURED)],
    S.PENDING: [(S.PAYING, EventKind.FACE_CAPTURED), (S.PENDING, EventKind.PENDING)],
    S.REVERSING: [(S.PAYING, EventKind.FACE_CAPTURED), (S.REVERSING, EventKind.PENDING)],
    S.NEEDS_ATTENTION: [
        (S.PAYING, EventKind.FACE_CAPTURED),
        (S.PENDING, EventKind.PENDING),
        (S.NEEDS_ATTENTION, EventKind.NEEDS_ATTENTION),
    ],
}


async def _journal_in(journal: Journal, out_trade_no: str, state: PaymentState) -> None:
    await journal.payments.create_payment(PaymentOrder(out_trade_no, 100, "goods"))
    for step, kind in PATHS[state]:
        attention = (
            {"attention_reason": "UNRESOLVED", "attention_action": "check it"}
            if step is S.NEEDS_ATTENTION
            else {}
        )
        await journal.payments.append(out_trade_no, step, kind, **attention)


def _deny_writes(action: int, *_: object) -> int:
    writes = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
    return sqlite3.SQLITE_DENY if action in writes else sqlite3.SQLITE_OK


async def test_old_final_payments_are_pruned_in_batches_recent_and_unsettled_ones_kept(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    journal = await Journal.open(tmp_path / "j.sqlite3", clock=clock)
    owner = TaskOwner("test-retention")
    try:
        for state in PaymentState:
            for n in range(2):  # two of each: more than one batch of final ones
                await _journal_in(journal, f"OLD-{state.value}-{n}", state)
        await clock.advance(80 * DAY)
        for state in PaymentState.final_states():
            await _journal_in(journal, f"RECENT-{state.value}", state)
        await clock.advance(11 * DAY)  # the old ones are 91 days old, the recent 11
        db = journal.database
        await db.run(lambda: db.connection.set_authorizer(_deny_writes))
        retention = Retention(journal.payments, clock, retention_days=90, batch=3, pause=1.0)
        with structlog.testing.capture_logs() as logs:
            owner.spawn(retention.run(), name="retention")
            # A full disk: the pass gives up, the task waits for the next interval.
            await until(lambda: any(e["event"] == "retention_failed" for e in logs), 5, "failure")
        await db.run(lambda: db.connection.set_authorizer(None))
        # Retention waits for its next pass, the journal's probe for its next try.
        await until(lambda: clock.sleepers == 2, 5, "retention and the probe asleep")
        await clock.advance(3600.0)
        await until(lambda: journal.health.writable, 5, "the probe's success")
        expected = {
            f"OLD-{state.value}-{n}" for state in PaymentState if not state.final for n in range(2)
        } | {f"RECENT-{state.value}" for state in PaymentState.final_states()}

        async def left() -> set[str]:
            payments, _ = await journal.payments.list(page_size=200)
            return {p.out_trade_no for p in payments}

        # Ten old final payments, three a batch: four batches, a pause on the clock between.
        for _ in range(10):
            if await left() == expected:
                break
            await until(lambda: clock.sleepers == 1, 5, "retention asleep")
            await clock.advance(1.0)
        assert await left() == expected
        for state in PaymentState.final_states():
            assert await journal.payments.find(f"OLD-{state.value}-0") is None
            assert await journal.payments.events(f"OLD-{state.value}-1") == []
        attention = await journal.payments.get(f"OLD-{S.NEEDS_ATTENTION.value}-0")
        assert attention.attention_reason == "UNRESOLVED"
        assert len(await journal.payments.events(f"OLD-{S.NEEDS_ATTENTION.value}-0")) == 4
        assert len(await journal.payments.events(f"RECENT-{S.REVERSED.value}")) == 4
    finally:
        await owner.close()
        await journal.close()


async def test_a_pruned_payment_answers_not_found_to_get_and_watch(tmp_path: Path) -> None:
    async with disk_rig(tmp_path) as rig:
        world = rig.world
        await _journal_in(world.journal, "GONE", S.SUCCEEDED)
        await _journal_in(world.journal, "WAITS", S.NEEDS_ATTENTION)
        assert (await rig.client.get_payment("GONE")).out_trade_no == "GONE"
        await world.clock.advance(1.5 * DAY)
        await _journal_in(world.journal, "STAYS", S.FAILED)
        await world.clock.advance(0.5 * DAY)
        retention = Retention(world.journal.payments, world.clock, retention_days=1)
        assert await retention.prune() == 1
        with pytest.raises(FacepayClientError) as got:
            await rig.client.get_payment("GONE")
        assert got.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(FacepayClientError) as watched:
            async for _ in rig.client.watch_payment("GONE"):
                pass
        assert watched.value.code == grpc.StatusCode.NOT_FOUND
        assert (await rig.client.get_payment("STAYS")).state == pb.PAYMENT_STATE_FAILED
        assert (await rig.client.get_payment("WAITS")).attention_reason == "UNRESOLVED"
        assert (await rig.client.get_status()).journal_bytes == world.payments.journal_bytes()


@pytest.mark.parametrize("days", [0, -1, 36_501, 1.5, "90", True])
def test_retention_days_outside_the_rule_is_refused_naming_the_key(days: object) -> None:
    with pytest.raises(ConfigError, match=r"^state\.retention_days: "):
        config.from_mapping(with_identity(state={"retention_days": days}))


def test_retention_days_defaults_to_90_and_survives_a_state_dir_override(tmp_path: Path) -> None:
    assert config.from_mapping(with_identity()).state.retention_days == 90
    loaded = config.from_mapping(with_identity(state={"retention_days": 30}))
    assert config.override(loaded, state_dir=tmp_path).state.retention_days == 30
