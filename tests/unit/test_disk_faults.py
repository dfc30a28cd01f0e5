"""A journal whose writes fail at each step of a face payment, served in-process over gRPC.

The face domain runs over the simulated terminal (face_world) on a ManualClock, WeChat Pay is
the payment properties' ledger fake, and the real RpcServer on a Unix socket reports health
through the daemon's own ServingHealth. The faulty authorizer, installed on the journal's
connection at one step of the payment, refuses every write (what a full or failing disk does);
each scenario checks what the POS and the health service see while the disk is down, lets writes
succeed again and checks the end: nothing stuck, nothing paid unrecorded, micropay at most once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import FacepayClientError, TerminalClient
from facepayd.daemon import ServingHealth
from facepayd.journal import Journal
from facepayd.ops.config import Config
from facepayd.payments.models import EventKind, PaymentEvent, PaymentState
from facepayd.rpc.server import RpcServer
from facepayd.rpc.service import Domain, TerminalService
from facepayd.sim.terminal import SimUser
from facepayd.tasks import TaskOwner
from facepayd.wxpay.models import MicropayOrder, TradeResult
from tests.helpers import settle, until
from tests.unit.face_world import World, face_world
from tests.unit.test_payment_properties import FakeWxPay

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_WRITES = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})


class FaultyDisk:
    """The injected faulty authorizer: while installed, the journal's every write is refused.

    Installed and removed on the journal's own thread: set_authorizer also expires the
    statements SQLite prepared before, so none of them slips past the authorizer.
    """

    def __init__(self, journal: Journal) -> None:
        self._db = journal.database
        self.failing = False
        self.refused = 0
        self._pending: set[asyncio.Task[None]] = set()

    async def fail(self) -> None:
        self.failing = True
        await self._db.run(lambda: self._db.connection.set_authorizer(self._deny))

    async def recover(self) -> None:
        self.failing = False
        await self._db.run(lambda: self._db.connection.set_authorizer(None))

    def fail_soon(self) -> None:
        """From a journal listener: queued on the journal's thread before the next call."""
        task = asyncio.ensure_future(self.fail())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def failed(self) -> None:
        """Until a fail_soon() has taken effect: the journal's thread refuses writes."""
        await until(lambda: self.failing and not self._pending, 10, "the disk to fail")

    def _deny(self, action: int, *_: object) -> int:
        if action in _WRITES:
            self.refused += 1
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


class LedgerWxPay(FakeWxPay):
    """The ledger fake of the payment properties; can fail the disk as micropay answers."""

    disk: FaultyDisk | None = None

    async def micropay(self, order: MicropayOrder) -> TradeResult:
        try:
            return await super().micropay(order)
        finally:
            # The disk fills while the request is out: the answer cannot be recorded.
            if self.disk is not None:
                await self.disk.fail()


@dataclass
class Rig:
    world: World
    disk: FaultyDisk
    wxpay: LedgerWxPay
    client: TerminalClient
    health: health_pb2_grpc.HealthStub
    serving: ServingHealth

    async def health_status(self) -> int:
        response = await self.health.Check(health_pb2.HealthCheckRequest(service=""))
        return int(response.status)

    async def run_clock_until(
        self, predicate: Callable[[], bool], what: str, step: float = 1.0, limit: int = 900
    ) -> None:
        """Advance the clock a step at a time (letting the journal's thread work) until true."""
        for _ in range(limit):
            if predicate():
                return
            await self.world.clock.advance(step)
            await settle()
            await asyncio.sleep(0.002)
        raise AssertionError(f"never happened: {what}")

    async def until_health(self, status: int) -> None:
        reported: list[int] = []

        async def poll() -> None:
            while True:
                reported[:] = [await self.health_status()]
                if reported[0] == status:
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(poll(), 10)

    def on_event(self, kind: EventKind, action: Callable[[], None]) -> None:
        """Run action right after the first committed event of kind (before the next write)."""
        done = False

        def listener(event: PaymentEvent) -> None:
            nonlocal done
            if event.kind is kind and not done:
                done = True
                action()

        self.world.journal.payments.add_listener(listener)

    async def check_books(self) -> None:
        """0 orders stuck, nothing paid unrecorded, micropay at most once per order."""
        payments, _ = await self.world.payments.list(page_size=200)
        stuck = [p.out_trade_no for p in payments if not p.final]
        assert stuck == []
        assert self.world.payments.unfinished_count() == 0
        for payment in payments:
            charged = self.wxpay.charged_by(payment.out_trade_no)
            assert charged == (payment.state is PaymentState.SUCCEEDED), payment
        for no in self.wxpay.ledger:
            assert await self.world.payments.find(no) is not None, "paid but never journaled"
        assert all(n <= 1 for n in self.wxpay.micropay_calls.values())


@contextlib.asynccontextmanager
async def disk_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """face_world + the real gRPC server and health on a Unix socket, with the faulty disk."""
    wxpay = LedgerWxPay(clock=None, payer_of=collections.defaultdict(lambda: SimUser().openid))  # type: ignore[arg-type]
    async with face_world(tmp_path, backend=wxpay) as world:
        wxpay.clock = world.clock
        disk = FaultyDisk(world.journal)
        with tempfile.TemporaryDirectory(dir="/tmp") as short:  # socket paths are short
            socket = Path(short) / "t.sock"
            domain = Domain(
                config=Config(device=world.device),
                lifecycle=world.lifecycle,
                authinfo=world.authinfo,
                sessions=world.sessions,
                flows=world.flows,
                payments=world.payments,
            )
            server = RpcServer(TerminalService(domain), socket, reflection_on=False)
            tasks = TaskOwner("test-health")
            serving = ServingHealth(server, world.lifecycle, world.journal.health, tasks)
            world.lifecycle.add_listener(serving.update)
            await server.start()
            serving.recovered = True
            serving.update()
            channel = grpc.aio.insecure_channel(f"unix:{socket}")
            try:
                async with TerminalClient(socket, timeout=10, face_timeout=10) as client:
                    rig = Rig(
                        world, disk, wxpay, client, health_pb2_grpc.HealthStub(channel), serving
                    )
                    await rig.until_health(SERVING)
                    yield rig
            finally:
                await channel.close()
                serving.close()
                await tasks.close()
                await server.stop(0)


async def _start(
    rig: Rig, out_trade_no: str
) -> tuple[list[pb.StartFacePayResponse], asyncio.Task[None]]:
    """StartFacePay as a POS: the responses so far and the task that reads the stream."""
    responses: list[pb.StartFacePayResponse] = []

    async def read() -> None:
        async for response in rig.client.start_face_pay_stream(out_trade_no, 100, "goods"):
            responses.append(response)

    return responses, asyncio.ensure_future(read())


def _journal_unavailable(error: BaseException | None) -> None:
    assert isinstance(error, FacepayClientError), error
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "JOURNAL_UNAVAILABLE"


async def test_a_full_disk_before_the_order_refuses_the_payment_and_then_the_camera(
    tmp_path: Path,
) -> None:
    async with disk_rig(tmp_path) as rig:
        world = rig.world
        await rig.disk.fail()
        # Not known yet: the camera opens, the order cannot be committed, the UI is quit.
        _, first = await _start(rig, "DISK-NEW-1")
        await until(first.done, 10, "the first stream's end")
        _journal_unavailable(first.exception())
        assert world.sim.calls["quitWxpayface"] == 1
        await until(lambda: world.sessions.active is None, 10, "the camera freed")
        assert not world.journal.health.writable
        await rig.until_health(NOT_SERVING)
        # Known now: refused before the camera, the cheap way.
        captures = world.sim.calls["getWxpayfaceCode"]
        _, second = await _start(rig, "DISK-NEW-2")
        await until(second.done, 10, "the second stream's end")
        _journal_unavailable(second.exception())
        assert world.sim.calls["getWxpayfaceCode"] == captures
        assert world.sessions.active is None
        status = await rig.client.get_status()  # reads still answer
        assert status.journal_bytes > 0
        # The disk has room again: the probe brings health back, and a payment goes through.
        await rig.disk.recover()
        await rig.run_clock_until(lambda: world.journal.health.writable, "the probe's success")
        await rig.until_health(SERVING)
        responses, third = await _start(rig, "DISK-NEW-3")
        await world.show_face()
        await rig.run_clock_until(third.done, "the third payment's end")
        assert third.exception() is None
        states = [r.event.state for r in responses if r.HasField("event")]
        assert states[-1] == pb.PAYMENT_STATE_SUCCEEDED
        assert await world.payments.find("DISK-NEW-1") is None
        assert await world.payments.find("DISK-NEW-2") is None
        assert dict(rig.wxpay.micropay_calls) == {"DISK-NEW-3": 1}
        await rig.check_books()


# (step the disk fails at, WeChat Pay's plan for the order, the state kept while down,
#  the final state once the disk recovers). FACE_CAPTURED and pay_sent_at are one commit, so
#  "face_captured" is also the failed pay-sent mark.
STEPS = {
    "face_captured": (("pay", ""), "truthful", PaymentState.CAPTURING, PaymentState.CANCELLED),
    "pending": (("pay", ""), "timeout", PaymentState.PAYING, PaymentState.SUCCEEDED),
    "reversing": (("lost", ""), "truthful", PaymentState.PENDING, PaymentState.CLOSED),
    "final": (("pay", ""), "truthful", PaymentState.PAYING, PaymentState.SUCCEEDED),
}


@pytest.mark.parametrize("step", list(STEPS))
async def test_a_disk_failing_mid_payment_keeps_the_last_state_and_finishes_after_recovery(
    tmp_path: Path, step: str
) -> None:
    plan, reply, kept, final = STEPS[step]
    no = f"DISK-{step.upper()}"
    async with disk_rig(tmp_path) as rig:
        world = rig.world
        rig.wxpay.micropay_plans[no] = (plan, reply)
        fail = rig.disk.fail_soon
        if step == "face_captured":
            rig.on_event(EventKind.SESSION_STARTED, fail)  # the capture cannot be recorded
        elif step == "reversing":
            rig.on_event(EventKind.PENDING, fail)  # REVERSING, later, cannot be recorded
        else:
            rig.wxpay.disk = rig.disk  # the micropay answer cannot be recorded
        _, stream = await _start(rig, no)
        if step == "face_captured":
            # The face comes once the disk is down: the capture's own commit is the one refused
            # (were the code back before the order's commit, the capture would commit first).
            await rig.disk.failed()
        await world.show_face()
        # Down at the step (for reversing: once give-up comes, 30 s on): health follows.
        await rig.run_clock_until(lambda: not world.journal.health.writable, "the failed write")
        await rig.until_health(NOT_SERVING)
        # While down, time passes; the payment keeps its last recorded state.
        for _ in range(60):
            await world.clock.advance(1.0)
            await settle()
            await asyncio.sleep(0.002)
        assert (await world.payments.get(no)).state is kept
        assert await rig.health_status() == NOT_SERVING
        assert not rig.wxpay.reverses, "no call is made for a state that is not recorded"
        assert rig.wxpay.micropay_calls[no] <= 1
        if step == "face_captured":
            assert rig.wxpay.micropay_calls[no] == 0, "a face code is never paid unrecorded"
        # The disk has room again: the payment finishes from its last recorded state.
        rig.wxpay.disk = None
        await rig.disk.recover()
        await rig.run_clock_until(
            lambda: world.payments.unfinished_count() == 0 and world.journal.health.writable,
            "the payment's end",
        )
        await rig.until_health(SERVING)
        assert (await world.payments.get(no)).state is final
        await rig.run_clock_until(stream.done, "the stream's end")
        if step == "face_captured":
            _journal_unavailable(stream.exception())  # the capture could not be recorded
        else:
            assert stream.exception() is None
        assert rig.disk.refused > 0
        await rig.check_books()
