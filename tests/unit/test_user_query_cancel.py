"""updateWxpayfacePayResult's USER_QUERY_CANCEL (SDK below 2.13) reaches the POS as such."""

from __future__ import annotations

import asyncio
from pathlib import Path

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import TerminalClient
from facepayd.face.sessions import EndReason
from facepayd.sim.terminal import FaceOutcome
from tests.helpers import until
from tests.unit.face_world import face_world, world_server


async def test_below_2_13_a_user_who_leaves_the_result_page_is_reported_user_query_cancel(
    tmp_path: Path,
) -> None:
    async with face_world(tmp_path, sdk_version="2.12.0") as world, world_server(world) as socket:
        world.sim.script(FaceOutcome.USER_QUERY_CANCEL)
        events: list[pb.CaptureEvent] = []
        async with TerminalClient(socket, timeout=10, face_timeout=10) as client:

            async def run() -> None:
                async for event in client.capture_face_code():
                    events.append(event)
                    if event.HasField("face_captured"):
                        session = events[0].session_started.session_id
                        await client.report_pay_result(session, True)

            task = asyncio.ensure_future(run())
            await world.show_face()
            await until(task.done, 10, "the capture's end")
            task.result()
        kinds = [e.WhichOneof("kind") for e in events]
        assert kinds == [
            "session_started",
            "face_captured",
            "pay_result_confirmed",
            "session_ended",
        ]
        assert events[2].pay_result_confirmed.return_code == "USER_QUERY_CANCEL"
        assert events[3].session_ended.reason == EndReason.USER_QUERY_CANCEL.value
        assert world.sim.calls["updateWxpayfacePayResult"] == 1
