"""The daemon as a real process against the simulators: lifecycle, authinfo and face capture."""

from __future__ import annotations

import asyncio

import pytest

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import (
    BackendError,
    DeviceError,
    InvalidArgumentError,
    TerminalBusyError,
    TerminalClient,
)
from facepayd.sim.stack import SimStack
from facepayd.sim.terminal import SimLatencies
from facepayd.sim.wxpay import Scenario
from tests.helpers import until
from tests.integration.conftest import DaemonFactory, StackFactory


async def capture(
    client: TerminalClient, out_trade_no: str = "CAP1", **face: object
) -> pb.FaceCaptured:
    """Run one capture-only session to its end and return the captured face."""
    captured = None
    last = None
    async for event in client.capture_face_code(out_trade_no, 100, face=pb.FaceOptions(**face)):
        if event.HasField("face_captured"):
            captured = event.face_captured
        last = event
    assert captured is not None
    # The stream's last event says the screen is free: the SDK's result page closed.
    assert last is not None
    assert last.session_ended.reason == "RESULT_SHOWN"
    return captured


async def test_non_aggregate_inits_once_and_never_releases(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        for n in range(3):
            face = await capture(client, f"NA{n}")
            assert len(face.face_code) == 18
            assert face.openid
        status = await client.get_status()
    assert stack.terminal is not None
    assert stack.terminal.calls["initWxpayface"] == 1
    assert stack.terminal.calls["releaseWxpayface"] == 0
    assert stack.terminal.calls["getWxpayfaceCode"] == 3
    assert status.state == pb.LIFECYCLE_STATE_READY
    assert status.counters.inits == 1
    assert status.counters.captures == 3


async def test_aggregate_inits_and_releases_around_each_session(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack, sdk={"mode": "aggregate"})
    async with daemon.client() as client:
        for n in range(3):
            await capture(client, f"AG{n}")
    assert stack.terminal is not None
    assert stack.terminal.calls["initWxpayface"] == 3
    assert stack.terminal.calls["releaseWxpayface"] == 3


async def test_warm_capture_makes_one_bridge_call_before_the_camera_opens(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    sim, wxpay = stack.terminal, stack.wxpay
    assert sim is not None
    assert wxpay is not None
    async with daemon.client() as client:
        await capture(client, "WARM1")
        fetches = wxpay.authinfo_fetches
        requests = wxpay.requests_served
        mark = len(sim.timeline)
        await capture(client, "WARM2")
    warm = sim.timeline[mark:]
    assert warm[: warm.index("camera_open")] == ["getWxpayfaceCode"]
    assert wxpay.authinfo_fetches == fetches
    assert wxpay.requests_served == requests


async def test_init_retried_while_sdk_is_initializing(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    assert stack.terminal is not None
    stack.terminal.script_init(initializing_times=2)
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        await capture(client)
    assert stack.terminal.calls["initWxpayface"] == 3


async def test_not_initialized_answer_inits_then_retries_the_call(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    sim = stack.terminal
    assert sim is not None
    async with daemon.client() as client:
        await capture(client, "NI1")
        sim.forget_init()
        face = await capture(client, "NI2")
    assert face.face_code
    assert sim.calls["initWxpayface"] == 2
    assert sim.calls["getWxpayfaceCode"] == 3  # one refused with 271378620, then retried


async def test_concurrent_captures_share_one_authinfo_fetch(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        faces = await asyncio.gather(
            *(capture(client, f"CC{n}", wait_if_busy=True) for n in range(4))
        )
    assert len({f.face_code for f in faces}) == 4
    assert stack.wxpay is not None
    assert stack.wxpay.authinfo_fetches == 1


async def test_authinfo_refreshed_ahead_of_expiry_without_a_session(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    sims = await make_stack(authinfo_expires_in=4)
    await make_daemon(sims, authinfo={"refresh_ahead": 3.0})
    assert sims.wxpay is not None
    await until(
        lambda: sims.wxpay is not None and sims.wxpay.authinfo_fetches >= 2, 15, "a refresh"
    )


async def test_authinfo_cache_survives_a_restart(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        await capture(client, "R1")
    await daemon.stop()
    assert stack.wxpay is not None
    assert stack.wxpay.authinfo_fetches == 1
    await daemon.start()
    async with daemon.client() as client:
        await capture(client, "R2")
    assert stack.wxpay.authinfo_fetches == 1


async def test_rejected_authinfo_is_refreshed_and_retried_once(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    sim, wxpay = stack.terminal, stack.wxpay
    assert sim is not None
    assert wxpay is not None
    async with daemon.client() as client:
        await capture(client, "RJ1")
        wxpay.revoke_authinfo()
        face = await capture(client, "RJ2")
    assert face.face_code
    assert wxpay.authinfo_fetches == 2
    assert sim.calls["getWxpayfaceCode"] == 3


async def test_second_concurrent_session_gets_terminal_busy(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    sims = await make_stack(latencies=SimLatencies(init=0.0, rawdata=0.0, face_capture=3.0))
    daemon = await make_daemon(sims)
    async with daemon.client() as client:
        first = client.capture_face_code("BUSY1", 100)
        started = await anext(first)
        session_id = started.session_started.session_id
        with pytest.raises(TerminalBusyError) as busy:
            await anext(client.capture_face_code("BUSY2", 100))
        assert busy.value.session_id == session_id
        assert busy.value.reason == "TERMINAL_BUSY"
        await first.aclose()


async def test_frozen_peripheral_fails_the_session_and_shows_the_fault(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    sims = await make_stack(latencies=SimLatencies(init=0.0, rawdata=0.0, face_capture=5.0))
    daemon = await make_daemon(sims)
    assert sims.terminal is not None
    async with daemon.client() as client:
        stream = client.capture_face_code("FRZ1", 100)
        await anext(stream)
        sims.terminal.freeze()
        with pytest.raises(DeviceError) as failed:
            async for _ in stream:
                pass
        assert failed.value.reason in ("DEVICE_LOST", "DEVICE_TIMEOUT")
        status = await client.get_status()
        assert status.state in (pb.LIFECYCLE_STATE_FAULT, pb.LIFECYCLE_STATE_DISCONNECTED)
        assert status.fault
        sims.terminal.thaw()
        await sims.terminal.drop_connections()
        await daemon.wait_serving()
        face = await capture(client, "FRZ2")
    assert face.face_code


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"out_trade_no": "bad no!", "total_fee": 1, "body": "x"}, "out_trade_no"),
        ({"out_trade_no": "A" * 33, "total_fee": 1, "body": "x"}, "out_trade_no"),
        ({"out_trade_no": "OK1", "total_fee": 0, "body": "x"}, "total_fee"),
        ({"out_trade_no": "OK1", "total_fee": -5, "body": "x"}, "total_fee"),
        ({"out_trade_no": "OK1", "total_fee": 100_001, "body": "x"}, "total_fee"),
        ({"out_trade_no": "OK1", "total_fee": 1, "body": ""}, "body"),
        ({"out_trade_no": "OK1", "total_fee": 1, "body": "汉" * 43}, "body"),
        ({"out_trade_no": "OK1", "total_fee": 1, "body": "x", "attach": "a" * 128}, "attach"),
        ({"out_trade_no": "OK1", "total_fee": 1, "body": "x", "fee_type": "cny"}, "fee_type"),
        (
            {"out_trade_no": "OK1", "total_fee": 1, "body": "x", "time_expire": "2026"},
            "time_expire",
        ),
        ({"out_trade_no": "OK1", "total_fee": 1, "body": "x", "limit_pay": "credit"}, "limit_pay"),
        (
            {
                "out_trade_no": "OK1",
                "total_fee": 1,
                "body": "x",
                "face": pb.FaceOptions(screen_index="9"),
            },
            "face.screen_index",
        ),
        (
            {
                "out_trade_no": "OK1",
                "total_fee": 1,
                "body": "x",
                "face": pb.FaceOptions(openid="<script>"),
            },
            "face.openid",
        ),
    ],
)
async def test_invalid_fields_are_refused_naming_the_field(
    stack: SimStack, make_daemon: DaemonFactory, request_fields: dict[str, object], field: str
) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        fields = dict(request_fields)
        face = fields.pop("face", None)
        stream = client.start_face_pay(
            str(fields.pop("out_trade_no")),
            int(fields.pop("total_fee")),
            str(fields.pop("body")),
            face=face,
            **{k: str(v) for k, v in fields.items()},
        )
        with pytest.raises(InvalidArgumentError) as bad:
            _ = [event async for event in stream]
        assert field in [f for f, _ in bad.value.field_violations]
        with pytest.raises(Exception):  # noqa: B017 - nothing was journaled
            await client.get_payment("OK1")
    assert stack.wxpay is not None
    assert stack.wxpay.ledger == {}


async def test_forged_or_unsigned_authinfo_answers_are_refused(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    assert stack.wxpay is not None
    stack.wxpay.script("*", Scenario.TAMPERED, times=100)
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        with pytest.raises(BackendError) as refused:
            await capture(client, "FG1")
        assert refused.value.reason == "BACKEND_RESPONSE_NOT_TRUSTED"
        stack.wxpay.clear_scripts()
        stack.wxpay.script("*", Scenario.UNSIGNED, times=100)
        with pytest.raises(BackendError) as unsigned:
            await capture(client, "FG2")
        assert unsigned.value.reason == "BACKEND_RESPONSE_NOT_TRUSTED"
        stack.wxpay.clear_scripts()
        face = await capture(client, "FG3")
    assert face.face_code


async def test_api_key_and_authinfo_never_reach_the_logs(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        face = await capture(client, "SEC1")
        stack.wxpay.revoke_authinfo()  # type: ignore[union-attr]
        await capture(client, "SEC2")
    await daemon.stop()
    text = daemon.log()
    assert "daemon_ready" in text
    assert stack.api_key not in text
    assert face.face_code not in text
    for authinfo in stack.wxpay.issued_authinfos():  # type: ignore[union-attr]
        assert authinfo not in text
