"""Nothing per payment stays behind in the payment service or the flows once a payment is over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from facepayd.face.flows import FacePayStep
from facepayd.face.sessions import FaceOptions
from facepayd.payments.models import PaymentOrder
from tests.helpers import until
from tests.unit.face_world import UPDATE_RESULT, face_world


async def collect(steps: AsyncIterator[FacePayStep], into: list[FacePayStep]) -> None:
    async for step in steps:
        into.append(step)


async def test_watched_payments_leave_no_watcher_event_task_or_flow_entry(tmp_path: Path) -> None:
    async with face_world(tmp_path) as world:
        for index in range(30):
            handle = await world.flows.start_face_pay(
                PaymentOrder(out_trade_no=f"M{index}", total_fee=1, body="goods"), FaceOptions()
            )
            steps: list[FacePayStep] = []
            stream = asyncio.ensure_future(collect(handle.steps(), steps))
            await world.show_face()
            await world.result_page_shown()
            await world.clock.advance(UPDATE_RESULT)
            await until(stream.done, 10, "the stream's end")
            await stream
            # A second watcher, re-attached after the end (a POS that crashed), replays and leaves.
            replay = [event async for event in world.payments.watch(f"M{index}", 0)]
            assert replay[-1].state.final
        payments = world.payments
        assert payments._owned.watchers == {}
        assert payments._owned.tasks == {}
        assert payments._reverse_requests == {}
        assert world.flows._paying == {}
        assert world.flows.running == 0
