"""The camera path: the face UI call goes out first; journal-first still holds before micropay.

The order's journal commit is held inside SQLite (an authorizer that blocks the INSERT on the
worker thread until the test lets it go), so what runs while it is pending is seen in order,
not timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from facepayd.errors import JournalError
from facepayd.face.flows import FacePayStep, SessionStartedStep
from facepayd.face.sessions import EndReason, FaceOptions, SessionEnd
from facepayd.payments.models import PaymentEvent, PaymentOrder, PaymentState
from facepayd.wxpay.models import MicropayOrder, TradeResult
from tests.helpers import settle, until
from tests.unit.face_world import CAPTURE, UPDATE_RESULT, PayingBackend, World, face_world

OPTIONS = FaceOptions()


@dataclass
class HeldCommit:
    """Holds the INSERT of a new payment inside SQLite until released (then allows or denies)."""

    world: World
    deny: bool = False
    released: threading.Event = field(default_factory=threading.Event)
    reached: threading.Event = field(default_factory=threading.Event)
    # The last bridge method written when the commit reached SQLite.
    sent_before_commit: list[str] = field(default_factory=list)

    def authorize(self, action: int, table: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_INSERT and table == "payments":
            bridge = self.world.lifecycle._bridge
            assert bridge is not None
            self.sent_before_commit.append(bridge.methods_sent[-1])
            self.reached.set()
            # Bounded, so a broken test fails instead of hanging the worker thread.
            self.released.wait(30)
            return sqlite3.SQLITE_DENY if self.deny else sqlite3.SQLITE_OK
        return sqlite3.SQLITE_OK

    async def install(self) -> None:
        db = self.world.journal.database
        await db.run(lambda: db.connection.set_authorizer(self.authorize))


@dataclass
class CheckingBackend(PayingBackend):
    """Pays, after reading the order from the journal file through its own connection."""

    path: Path = Path()
    seen_at_micropay: list[tuple[str, str] | None] = field(default_factory=list)

    async def micropay(self, order: MicropayOrder) -> TradeResult:
        with contextlib.closing(sqlite3.connect(self.path)) as other:
            row = other.execute(
                "SELECT out_trade_no, state FROM payments WHERE out_trade_no = ?",
                (order.out_trade_no,),
            ).fetchone()
        self.seen_at_micropay.append(None if row is None else (row[0], row[1]))
        return await super().micropay(order)


def journal_row(path: Path, out_trade_no: str) -> tuple[str] | None:
    """The payment as another process would see it on disk."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        row: tuple[str] | None = other.execute(
            "SELECT state FROM payments WHERE out_trade_no = ?", (out_trade_no,)
        ).fetchone()
        return row


@contextlib.contextmanager
def released_at_end(held: HeldCommit) -> Iterator[HeldCommit]:
    """Never leave the worker thread blocked, whatever the test did."""
    try:
        yield held
    finally:
        held.released.set()


async def collect(world: World, out_trade_no: str, into: list[FacePayStep]) -> asyncio.Task[None]:
    handle = await world.flows.start_face_pay(
        PaymentOrder(out_trade_no=out_trade_no, total_fee=1, body="goods"), OPTIONS
    )

    async def run() -> None:
        async for step in handle.steps():
            into.append(step)

    return asyncio.ensure_future(run())


async def test_the_camera_opens_before_the_commit_and_micropay_waits_until_it_is_durable(
    tmp_path: Path,
) -> None:
    backend = CheckingBackend(path=tmp_path / "j.sqlite3")
    async with face_world(tmp_path, backend=backend) as world:
        with released_at_end(HeldCommit(world)) as held:
            await held.install()
            steps: list[FacePayStep] = []
            stream = await collect(world, "D1", steps)
            await until(held.reached.is_set, 10, "the commit to reach SQLite")
            # The face UI call was written before the commit started, and the UI is up while
            # the commit is still held.
            assert held.sent_before_commit == ["getWxpayfaceCode"]
            await world.face_shown()
            # The user shows a face while the order is not yet durable: nothing is paid.
            await world.clock.advance(CAPTURE)
            await settle()
            assert world.sessions.captures == 1
            assert backend.calls == []
            assert steps == []
            assert journal_row(backend.path, "D1") is None
            held.released.set()
            await until(lambda: backend.calls == ["micropay"], 10, "micropay")
        # At micropay the order was already on disk, seen through another connection.
        assert backend.seen_at_micropay == [("D1", PaymentState.PAYING.value)]
        await world.result_page_shown()
        await world.clock.advance(UPDATE_RESULT)
        await until(stream.done, 10, "the stream's end")
        await stream
        events = [s for s in steps if isinstance(s, PaymentEvent)]
        assert [e.state for e in events][-1] is PaymentState.SUCCEEDED


@pytest.mark.parametrize("code_captured", [False, True], ids=["face-ui-up", "code-captured"])
async def test_a_commit_failure_after_the_camera_opened_quits_the_ui_and_pays_nothing(
    tmp_path: Path, code_captured: bool
) -> None:
    async with face_world(tmp_path) as world:
        with released_at_end(HeldCommit(world, deny=True)) as held:
            await held.install()
            steps: list[FacePayStep] = []
            stream = await collect(world, "D2", steps)
            handle_session = world.sessions.active
            assert handle_session is not None
            await world.face_shown()
            assert world.sim.calls["getWxpayfaceCode"] == 1
            if code_captured:
                # The face code is in the daemon's hands before the commit fails.
                await world.clock.advance(CAPTURE)
                await until(lambda: world.sessions.captures == 1, 10, "the face code")
            held.released.set()
            await until(stream.done, 10, "the stream's end")
        with pytest.raises(JournalError):
            await stream
        assert steps == [], "nothing was journaled, so no event reaches the POS"
        assert world.sim.calls["quitWxpayface"] == 1
        assert handle_session.end is not None
        assert handle_session.end.reason is EndReason.QUIT
        assert world.backend.calls == [], "a face code is never paid unrecorded"
        db = world.journal.database
        await db.run(lambda: db.connection.set_authorizer(None))
        assert await world.payments.find("D2") is None
        await until(lambda: world.sessions.active is None, 10, "the camera freed")


async def test_capture_only_tells_the_pos_of_its_session_after_the_face_ui_call(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path) as world:
        bridge = world.lifecycle._bridge
        assert bridge is not None
        handle = await world.flows.start_capture(OPTIONS, out_trade_no="C9", total_fee=1)
        steps = handle.steps()
        first = await anext(steps)
        assert isinstance(first, SessionStartedStep)
        assert bridge.methods_sent[-1] == "getWxpayfaceCode"
        await world.show_face()
        await world.result_page_shown()
        await world.clock.advance(UPDATE_RESULT)
        rest = [step async for step in steps]
        assert isinstance(rest[-1], SessionEnd)
