"""Every face flow in-process over the simulated terminal on TCP, a real journal, a manual clock."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import InvalidArgumentError, TerminalBusyError, TerminalClient
from facepayd.errors import (
    AlreadyExists,
    BackendUnavailable,
    FacepayError,
    JournalError,
    TerminalBusy,
)
from facepayd.face.flows import CaptureCancelled, FaceCode, FacePayStep, SessionStartedStep
from facepayd.face.sessions import EndReason, FaceOptions, SessionEnd
from facepayd.payments.models import Payment, PaymentEvent, PaymentOrder, PaymentState
from facepayd.payscore.service import PayScoreOutcome
from facepayd.sim.terminal import FaceOutcome, SimUser
from facepayd.wxpay.models import AuthinfoGrant
from tests.helpers import settle, until
from tests.unit.face_world import (
    CAPTURE,
    FACE_TIMEOUT,
    UPDATE_RESULT,
    World,
    face_world,
    world_server,
)

OPTIONS = FaceOptions()


def order(out_trade_no: str, fee: int = 1) -> PaymentOrder:
    return PaymentOrder(out_trade_no=out_trade_no, total_fee=fee, body="goods")


def kinds(steps: list[FacePayStep]) -> list[str]:
    return [s.kind.value if isinstance(s, PaymentEvent) else "session_ended" for s in steps]


async def collect(steps: AsyncIterator[FacePayStep], into: list[FacePayStep]) -> None:
    async for step in steps:
        into.append(step)


@contextlib.asynccontextmanager
async def served(world: World) -> AsyncIterator[TerminalClient]:
    """A typed client of the real gRPC server over the world's domain objects."""
    async with (
        world_server(world) as socket,
        TerminalClient(socket, timeout=10, face_timeout=10) as client,
    ):
        yield client


async def test_fifty_concurrent_start_face_pay_make_one_session_and_journal_one_order(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path) as world, served(world) as client:

        async def start(n: int) -> pb.PaymentEvent | TerminalBusyError:
            stream = client.start_face_pay(f"BUSY{n:02}", 1, "goods")
            try:
                return await anext(stream)
            except TerminalBusyError as busy:
                return busy
            finally:
                await stream.aclose()

        results = await asyncio.gather(*(start(n) for n in range(50)))
        started = [r for r in results if isinstance(r, pb.PaymentEvent)]
        busy = [r for r in results if isinstance(r, TerminalBusyError)]
        assert len(started) == 1
        assert len(busy) == 49
        session_id = started[0].session_started.session_id
        assert session_id
        assert {b.session_id for b in busy} == {session_id}
        listed = await client.list_payments()
        assert [p.out_trade_no for p in listed.payments] == [started[0].out_trade_no]
        assert world.sim.calls["getWxpayfaceCode"] == 1


async def test_an_invalid_capture_request_never_reaches_the_sdk(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world, served(world) as client:
        bad = [
            ("bad no!", 1, pb.FaceOptions()),
            ("OK1", -1, pb.FaceOptions()),
            ("OK1", 1, pb.FaceOptions(screen_index="9")),
            ("OK1", 1, pb.FaceOptions(telephone="+86 138")),
            ("OK1", 1, pb.FaceOptions(ignore_update_pay_result="1")),
            ("OK1", 1, pb.FaceOptions(openid="<script>")),
        ]
        for out_trade_no, fee, face in bad:
            with pytest.raises(InvalidArgumentError):
                async for _ in client.capture_face_code(out_trade_no, fee, face=face):
                    pass
        # face_code_type "0" needs both; "2" is no face_code_type at all.
        for out_trade_no, fee, code_type in (("", 1, "0"), ("OK1", 0, "0"), ("OK1", 1, "2")):
            with pytest.raises(InvalidArgumentError):
                async for _ in client.capture_face_code(
                    out_trade_no, fee, face_code_type=code_type
                ):
                    pass
        assert world.sim.calls["getWxpayfaceCode"] == 0
        assert world.sessions.active is None


async def test_start_face_pay_streams_the_payment_and_the_screen_free_on_2_13_and_later(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path) as world:
        handle = await world.flows.start_face_pay(order("P1"), OPTIONS)
        steps: list[FacePayStep] = []
        stream = asyncio.ensure_future(collect(handle.steps(), steps))
        await world.show_face()
        await until(lambda: any(isinstance(s, PaymentEvent) and s.state.final for s in steps))
        await world.result_page_shown()
        # Paid, but WeChat's result page is still up: the stream stays open.
        assert not stream.done()
        assert world.sessions.active is handle.session
        await world.clock.advance(UPDATE_RESULT)
        await until(stream.done, 10, "the stream's end")
        await stream
        assert kinds(steps) == ["session_started", "face_captured", "succeeded", "session_ended"]
        first, end = steps[0], steps[-1]
        assert isinstance(first, PaymentEvent)
        assert first.data["session_id"] == handle.session_id
        assert isinstance(end, SessionEnd)
        assert end.reason is EndReason.RESULT_SHOWN
        assert end.session_id == handle.session_id
        assert handle.face_code is not None
        assert world.sessions.active is None


async def test_user_query_cancel_reaches_the_start_face_pay_stream(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        world.sim.script(FaceOutcome.USER_QUERY_CANCEL)
        handle = await world.flows.start_face_pay(order("UQ1"), OPTIONS)
        steps: list[FacePayStep] = []
        stream = asyncio.ensure_future(collect(handle.steps(), steps))
        await world.show_face()
        await world.result_page_shown()
        await world.clock.advance(UPDATE_RESULT)
        await until(stream.done, 10, "the stream's end")
        [end] = [s for s in steps if isinstance(s, SessionEnd)]
        assert end.reason is EndReason.USER_QUERY_CANCEL
        assert sorted(kinds(steps)) == sorted(
            ["session_started", "face_captured", "succeeded", "session_ended"]
        )


async def test_below_2_13_the_pay_result_is_reported_and_ends_the_session(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path, sdk_version="2.12.0") as world:
        handle = await world.flows.start_face_pay(order("OLD1"), OPTIONS)
        steps: list[FacePayStep] = []
        stream = asyncio.ensure_future(collect(handle.steps(), steps))
        await world.show_face()
        await until(stream.done, 10, "the stream's end")
        await stream
        assert kinds(steps)[-2:] == ["succeeded", "session_ended"]
        end = steps[-1]
        assert isinstance(end, SessionEnd)
        assert end.reason is EndReason.PAY_RESULT_REPORTED
        assert world.sim.calls["updateWxpayfacePayResult"] == 1
        assert not world.sim.face_ui_open


async def test_a_busy_terminal_journals_nothing_for_the_loser(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        first = await world.flows.start_face_pay(order("B1"), OPTIONS)
        with pytest.raises(TerminalBusy) as busy:
            await world.flows.start_face_pay(order("B2"), OPTIONS)
        assert busy.value.session_id == first.session_id
        assert await world.payments.find("B2") is None


async def test_a_journal_that_refuses_the_new_order_quits_the_ui_and_ends_the_stream(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path) as world:
        await world.deny_writes()
        start = world.clock.monotonic()
        handle = await world.flows.start_face_pay(order("J0"), OPTIONS)
        with pytest.raises(JournalError) as failed:
            async for _ in handle.steps():
                pass
        assert failed.value.reason == "JOURNAL_UNAVAILABLE"
        assert world.clock.monotonic() - start <= FACE_TIMEOUT
        await until(lambda: world.sessions.active is None, 10, "the camera freed")
        assert world.sim.calls["quitWxpayface"] == 1
        await world.allow_writes()
        assert await world.payments.find("J0") is None
        assert world.backend.calls == []


async def test_a_journal_failing_mid_capture_quits_the_ui_and_leaves_no_order_capturing(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path) as world:
        start = world.clock.monotonic()
        handle = await world.flows.start_face_pay(order("J1"), OPTIONS)
        steps: list[FacePayStep] = []
        stream = asyncio.ensure_future(collect(handle.steps(), steps))
        await world.face_shown()
        await until(lambda: len(steps) == 1, 10, "session_started")
        await world.deny_writes()
        await world.clock.advance(CAPTURE)
        await until(stream.done, 10, "the stream's end")
        with pytest.raises(JournalError):
            await stream
        assert world.clock.monotonic() - start <= FACE_TIMEOUT
        assert world.sim.calls["quitWxpayface"] == 1
        assert kinds(steps) == ["session_started", "session_ended"]
        end = steps[-1]
        assert isinstance(end, SessionEnd)
        assert end.reason is EndReason.QUIT
        assert world.backend.calls == [], "a face code is never paid unrecorded"
        payment = await world.payments.get("J1")
        assert payment.state is PaymentState.CAPTURING  # the CANCELLED record could not be written
        await world.allow_writes()
        # The flow's retry records it once the journal writes again.
        for _ in range(6):
            await world.clock.advance(30.0)
            await settle()
            if (await world.payments.get("J1")).state is not PaymentState.CAPTURING:
                break
        payment = await world.payments.get("J1")
        assert payment.state is PaymentState.CANCELLED
        capturing, _ = await world.payments.list([PaymentState.CAPTURING])
        assert capturing == []
        assert world.flows.running == 0


async def test_a_capture_that_fails_after_its_order_is_journaled_cancels_the_order(
    tmp_path: Path,
) -> None:
    async def unreachable() -> AuthinfoGrant:
        raise BackendUnavailable("get_wxpayface_authinfo: WeChat Pay did not answer")

    async with face_world(tmp_path, fetch=unreachable) as world:
        handle = await world.flows.start_face_pay(order("A1"), OPTIONS)
        stream = asyncio.ensure_future(collect(handle.steps(), []))
        await until(stream.done, 10, "the stream's end")
        with contextlib.suppress(FacepayError):
            await stream
        payment = await world.payments.get("A1")
        assert payment.state is PaymentState.CANCELLED, "never left CAPTURING with no owner"
        events = await world.journal.payments.events("A1")
        assert events[-1].data["reason"] == "BACKEND_UNAVAILABLE"
        assert world.sim.calls["getWxpayfaceCode"] == 0
        assert world.backend.calls == []
        assert world.flows.running == 0


async def test_a_pos_that_hangs_up_during_a_capture_makes_the_flow_quit_the_face_ui(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path) as world:
        handle = await world.flows.start_capture(OPTIONS, out_trade_no="H1", total_fee=1)
        steps = handle.steps()
        assert isinstance(await anext(steps), SessionStartedStep)
        await world.face_shown()
        await steps.aclose()  # type: ignore[attr-defined]
        await until(lambda: handle.session.end is not None, 10, "the session's end")
        assert world.sim.calls["quitWxpayface"] == 1
        assert handle.session.end is not None
        assert handle.session.end.reason is EndReason.QUIT
        assert not world.sim.face_ui_open
        await until(lambda: world.flows.running == 0, 10, "the flow's end")


async def test_below_2_22_a_hang_up_leaves_the_capture_to_the_sdk_s_own_end(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path, sdk_version="2.21.0") as world:
        handle = await world.flows.start_capture(OPTIONS, out_trade_no="H2", total_fee=1)
        steps = handle.steps()
        await anext(steps)
        await world.face_shown()
        await steps.aclose()  # type: ignore[attr-defined]
        await settle()
        assert world.sim.calls["quitWxpayface"] == 0
        assert world.sessions.active is handle.session  # still waiting for the SDK
        await world.clock.advance(CAPTURE)
        await world.result_page_shown()
        await world.clock.advance(UPDATE_RESULT)
        await until(lambda: handle.session.end is not None, 10, "the session's end")
        assert handle.session.end is not None
        assert handle.session.end.reason is EndReason.RESULT_SHOWN


async def test_capture_only_streams_code_confirmation_and_end(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        handle = await world.flows.start_capture(OPTIONS, out_trade_no="C1", total_fee=1)
        got: list[object] = []

        async def run() -> None:
            async for step in handle.steps():
                got.append(step)

        task = asyncio.ensure_future(run())
        await world.show_face()
        await world.result_page_shown()
        await world.clock.advance(UPDATE_RESULT)
        await until(task.done, 10, "the stream's end")
        await task
        assert [type(s).__name__ for s in got] == [
            "SessionStartedStep",
            "FaceCode",
            "UiResult",
            "SessionEnd",
        ]
        assert isinstance(got[1], FaceCode)
        assert len(got[1].face_code) == 18


async def test_a_cancelled_capture_reports_why_and_ends(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        world.sim.script(FaceOutcome.USER_CANCEL)
        handle = await world.flows.start_capture(OPTIONS, out_trade_no="C2", total_fee=1)
        got: list[object] = []

        async def run() -> None:
            async for step in handle.steps():
                got.append(step)

        task = asyncio.ensure_future(run())
        await world.show_face()
        await until(task.done, 10, "the stream's end")
        cancelled, end = got[1], got[2]
        assert isinstance(cancelled, CaptureCancelled)
        assert cancelled.reason == "USER_CANCEL"
        assert isinstance(end, SessionEnd)
        assert end.reason is EndReason.NO_FACE_CODE


async def test_user_info_runs_as_a_flow_and_frees_the_camera(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        world.sim.script(FaceOutcome.SUCCESS, user=SimUser(openid="oAlice", nickname="Alice"))
        asking = asyncio.ensure_future(world.flows.user_info(OPTIONS))
        await world.show_face()
        info = await asking
        assert (info.openid, info.nickname) == ("oAlice", "Alice")
        assert world.sessions.active is None


async def test_a_caller_that_leaves_user_info_makes_the_flow_quit(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        asking = asyncio.ensure_future(world.flows.user_info(OPTIONS))
        await world.face_shown()
        asking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asking
        await until(lambda: world.sessions.active is None, 10, "the camera freed")
        assert world.sim.calls["quitWxpayface"] == 1


@pytest.mark.parametrize(
    ("user", "outcome", "expected"),
    [
        (SimUser(), FaceOutcome.SUCCESS, PayScoreOutcome.SUCCESS),
        (SimUser(authorizes_payscore=False), FaceOutcome.SUCCESS, PayScoreOutcome.ERROR),
        (SimUser(), FaceOutcome.USER_CANCEL, PayScoreOutcome.USER_CANCEL),
        (SimUser(), FaceOutcome.SCAN_PAYMENT, PayScoreOutcome.SCAN_PAYMENT),
    ],
)
async def test_payscore_status_runs_as_a_flow_with_every_documented_outcome(
    tmp_path: Path, user: SimUser, outcome: FaceOutcome, expected: PayScoreOutcome
) -> None:
    async with face_world(tmp_path) as world:
        world.sim.script(outcome, user=user)
        asking = asyncio.ensure_future(
            world.flows.check_payscore_status(OPTIONS, out_trade_no="PS1", service_id="svc1")
        )
        await world.show_face()
        status = await asking
        assert status.outcome is expected
        if expected is PayScoreOutcome.SUCCESS:
            assert status.face_sid
        assert world.sessions.active is None


async def test_a_face_timeout_on_the_clock_ends_a_flow_without_a_hang(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        world.sim.latencies = dataclasses.replace(
            world.sim.latencies, face_capture=FACE_TIMEOUT * 2
        )
        handle = await world.flows.start_face_pay(order("T1"), OPTIONS)
        steps: list[FacePayStep] = []
        stream = asyncio.ensure_future(collect(handle.steps(), steps))
        await world.face_shown()
        await until(lambda: len(steps) == 1, 10, "session_started")
        await world.clock.advance(FACE_TIMEOUT)
        await until(stream.done, 10, "the stream's end")
        await stream
        assert sorted(kinds(steps)) == ["cancelled", "session_ended", "session_started"]
        [end] = [s for s in steps if isinstance(s, SessionEnd)]
        assert end.reason is EndReason.FACE_TIMEOUT
        assert (await world.payments.get("T1")).state is PaymentState.CANCELLED


async def test_a_flow_error_before_the_journal_never_leaves_the_stream_waiting(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path) as world:
        await world.sim.stop()  # the peripheral is gone before the session starts
        await until(lambda: not world.lifecycle.usable(), 10, "the lifecycle to notice")
        try:
            handle = await world.flows.start_face_pay(order("E1"), OPTIONS)
        except FacepayError:
            return  # refused at once: nothing journaled either
        with pytest.raises(FacepayError):
            async for _ in handle.steps():
                pass
        assert await world.payments.find("E1") is None
        assert world.sessions.active is None


@pytest.mark.parametrize("other", ["code", "face"])
async def test_an_order_journaled_by_another_request_meanwhile_is_not_captured_for(
    tmp_path: Path, other: str
) -> None:
    async with face_world(tmp_path) as world:
        real_begin = world.payments.begin
        theirs = order("R1")

        async def begin(wanted: PaymentOrder, session_id: str = "") -> tuple[Payment, bool]:
            # The other request journals the same number between the lookup and our insert.
            if other == "code":
                await world.payments.start_code_pay(theirs, "134567890123456789")
            else:
                await real_begin(theirs, session_id="fs_00000000000000ff")
            return await real_begin(wanted, session_id)

        world.payments.begin = begin  # type: ignore[method-assign]
        handle = await world.flows.start_face_pay(order("R1"), OPTIONS)
        steps: list[FacePayStep] = []
        stream = asyncio.ensure_future(collect(handle.steps(), steps))
        await until(stream.done, 10, "the stream's end, without a face shown")
        with pytest.raises(AlreadyExists) as refused:
            await stream
        assert "WatchPayment" in str(refused.value)
        await until(lambda: world.sessions.active is None, 10, "the camera freed")
        assert world.sim.calls["quitWxpayface"] == 1
        assert world.sim.calls.get("getWxpayfaceCode", 0) <= 1
        events = await world.journal.payments.events("R1")
        # Only the other request's events: nothing of this capture is journaled on its order.
        mine = [e for e in events if e.kind.value in ("session_started", "face_captured")]
        if other == "code":
            assert mine == []
        else:
            assert [e.data.get("session_id") for e in mine] == ["fs_00000000000000ff"]
        assert all(e.kind.value != "cancelled" for e in events)
