"""Face sessions in-process over the simulated terminal on TCP, on a manual clock."""

from __future__ import annotations

import asyncio
import gc
import itertools
import weakref
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from facepayd.errors import FaceSessionEnded, TerminalBusy
from facepayd.face.lifecycle import State
from facepayd.face.sessions import (
    TRANSITIONS,
    EndReason,
    FaceOptions,
    Session,
    SessionState,
)
from facepayd.ops.config import SdkMode
from facepayd.sim.terminal import FaceOutcome
from tests.helpers import settle, until
from tests.unit.face_world import FACE_TIMEOUT, UPDATE_RESULT, World, face_world

OPTIONS = FaceOptions()


async def _capture(world: World, session: Session) -> asyncio.Task[object]:
    task = asyncio.ensure_future(
        world.sessions.capture(session, OPTIONS, out_trade_no="S1", total_fee=1)
    )
    await world.show_face()
    await until(lambda: task.done() or session.state is not SessionState.FACE_UI, 10, "code")
    return task  # type: ignore[return-value]


@pytest.mark.parametrize(("old", "new"), list(itertools.product(SessionState, SessionState)))
async def test_the_transition_table_is_walked_allowed_taken_others_refused(
    old: SessionState, new: SessionState
) -> None:
    session = Session("fs_walk", "test")
    session._state = old  # put the session where the walk starts
    with capture_logs() as logs:
        taken = session._set(new)
    allowed = new in TRANSITIONS[old]
    assert taken is allowed
    assert session.state is (new if allowed else old)
    levels = [entry["log_level"] for entry in logs]
    quiet = (old, new) == (SessionState.CLAIMED, SessionState.FACE_UI)  # the camera path
    assert levels == ([("debug" if quiet else "info")] if allowed else ["error"])


async def test_fifty_concurrent_claims_give_exactly_one_session_and_name_the_holder(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path) as world:

        async def claim(n: int) -> Session | TerminalBusy:
            try:
                return await world.sessions.claim("pay", wait=False, out_trade_no=f"C{n}")
            except TerminalBusy as busy:
                return busy

        results = await asyncio.gather(*(claim(n) for n in range(50)))
        winners = [r for r in results if isinstance(r, Session)]
        losers = [r for r in results if isinstance(r, TerminalBusy)]
        assert len(winners) == 1
        assert len(losers) == 49
        assert {busy.session_id for busy in losers} == {winners[0].id}
        assert world.sessions.active is winners[0]


async def test_a_waiting_claim_gets_the_camera_when_the_holder_ends(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        first = world.sessions.claim_now("pay")
        waiting = asyncio.ensure_future(world.sessions.claim("pay", wait=True))
        await settle()
        assert not waiting.done()
        with pytest.raises(TerminalBusy):
            world.sessions.claim_now("pay")
        world.sessions.release_unused(first)
        second = await waiting
        assert world.sessions.active is second
        assert second.id != first.id


async def test_sdk_2_13_and_later_hold_the_camera_until_the_second_callback_then_release(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path, sdk_version="2.22.0", mode=SdkMode.AGGREGATE) as world:
        session = world.sessions.claim_now("pay")
        async with world.sessions.hold(session):
            task = await _capture(world, session)
            code = await task
            assert len(code.face_code) == 18  # type: ignore[attr-defined]
            await world.result_page_shown()
            # The face code is here, but WeChat's result page is still up: still ours.
            assert session.state is SessionState.RESULT_PAGE
            assert world.sessions.active is session
            assert world.lifecycle.state is State.IN_SESSION
            assert world.sim.calls["releaseWxpayface"] == 0
            await world.clock.advance(UPDATE_RESULT)
            end = await world.sessions.wait_end(session)
            assert end.reason is EndReason.RESULT_SHOWN
            assert world.sim.calls["releaseWxpayface"] == 0
        assert world.sessions.active is None
        await until(lambda: world.sim.calls["releaseWxpayface"] == 1, 10, "release")
        timeline = world.sim.timeline
        assert timeline.index("result_page_closed") < timeline.index("releaseWxpayface")


async def test_user_query_cancel_is_reported_as_such(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        world.sim.script(FaceOutcome.USER_QUERY_CANCEL)
        session = world.sessions.claim_now("pay")
        async with world.sessions.hold(session):
            await (await _capture(world, session))
            await world.result_page_shown()
            await world.clock.advance(UPDATE_RESULT)
            end = await world.sessions.wait_end(session)
        assert end.reason is EndReason.USER_QUERY_CANCEL
        assert session.ui_result is not None
        assert session.ui_result.user_query_cancel


async def test_below_2_13_the_camera_is_held_until_the_pay_result_is_answered(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path, sdk_version="2.12.0") as world:
        session = world.sessions.claim_now("capture")
        async with world.sessions.hold(session):
            await (await _capture(world, session))
            # Long past the 2.13 result page's own end: an old SDK waits for the result.
            await world.clock.advance(UPDATE_RESULT * 5)
            await settle()
            assert session.state is SessionState.RESULT_PAGE
            assert world.sim.result_page_open
            assert await world.sessions.report_pay_result(session, True)
            end = await world.sessions.wait_end(session)
        assert end.reason is EndReason.PAY_RESULT_REPORTED
        assert world.sim.calls["updateWxpayfacePayResult"] == 1
        assert not world.sim.face_ui_open


async def test_a_result_page_that_never_closes_ends_at_the_face_timeout(tmp_path: Path) -> None:
    async with face_world(tmp_path, sdk_version="2.12.0") as world:
        session = world.sessions.claim_now("capture")
        async with world.sessions.hold(session):
            await (await _capture(world, session))
            before = world.clock.sleepers
            waiting = asyncio.ensure_future(world.sessions.wait_end(session))
            await until(lambda: world.clock.sleepers > before, 10, "the face deadline")
            await world.clock.advance(FACE_TIMEOUT - 1)
            await settle()
            assert not waiting.done()
            await world.clock.advance(1)
            end = await waiting
        assert end.reason is EndReason.FACE_TIMEOUT
        assert world.sessions.active is None


async def test_a_quit_during_capture_ends_the_session_as_quit_with_the_pos_reason(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path) as world:
        session = world.sessions.claim_now("pay")
        async with world.sessions.hold(session):
            task = asyncio.ensure_future(
                world.sessions.capture(session, OPTIONS, out_trade_no="Q1", total_fee=1)
            )
            await world.face_shown()
            assert await world.sessions.cancel("", "cancelled") == session.id
            with pytest.raises(FaceSessionEnded) as ended:
                await task
        assert ended.value.return_code == "POS_CANCEL"
        assert session.end is not None
        assert session.end.reason is EndReason.QUIT
        assert world.sim.calls["quitWxpayface"] == 1
        assert world.sessions.captures == 0


async def test_a_lost_peripheral_ends_a_result_page_as_device_lost(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        session = world.sessions.claim_now("pay")
        async with world.sessions.hold(session):
            await (await _capture(world, session))
            await world.result_page_shown()
            await world.sim.drop_connections()
            await until(session.ended.done, 10, "the session's end")
        assert session.end is not None
        assert session.end.reason is EndReason.DEVICE_LOST


async def test_captures_quit_after_their_code_leave_no_result_listener_behind(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path) as world:
        ended: list[weakref.ref[Session]] = []
        for _ in range(5):
            session = world.sessions.claim_now("pay")
            async with world.sessions.hold(session):
                await (await _capture(world, session))
                await world.result_page_shown()
                # The POS quits before the SDK's own result callback: none will come.
                assert await world.sessions.quit_if_open(session, "POS_CANCEL")
            assert session.end is not None
            ended.append(weakref.ref(session))
            del session
        await world.clock.advance(UPDATE_RESULT * 2)
        await settle()
        gc.collect()
        # Nothing (a bridge listener among them) still holds a session that ended.
        assert [ref() for ref in ended] == [None] * 5
