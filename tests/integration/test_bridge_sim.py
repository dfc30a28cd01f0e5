"""BridgeClient over TcpTransport against the simulated terminal on real loopback sockets."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog

from facepay.bridge.v1 import bridge_pb2
from facepayd.clock import Clock, ManualClock, SystemClock
from facepayd.device.bridge import BridgeClient
from facepayd.device.framing import FrameReader, encode_frame
from facepayd.device.tcp import TcpTransport
from facepayd.errors import (
    SDK_INITIALIZING,
    SDK_NOT_INITIALIZED,
    DeviceError,
    DeviceLost,
    DeviceTimeout,
)
from facepayd.ops.logs import configure_logging
from facepayd.sim.terminal import FaceOutcome, SimLatencies, SimTerminal, SimUser
from tests.helpers import settle, until

_DEADLINE = 10.0  # generous real-time bound for anything that should happen "soon"
_CALL_TIMEOUT = 10.0
_AUTHINFO = "authinfo-SECRET-3f9a1c"

FACE_PARAMS = {
    "appid": "wx2421b1c4370ec43b",
    "mch_id": "1900000109",
    "store_id": "STORE-1",
    "face_authtype": "FACEPAY",
    "authinfo": _AUTHINFO,
    "face_code_type": "1",
    "out_trade_no": "T20240101000001",
    "total_fee": "888",
}
PAYSCORE_PARAMS = {
    "appid": "wx2421b1c4370ec43b",
    "mch_id": "1900000109",
    "out_trade_no": "PS0001",
    "authinfo": _AUTHINFO,
    "payscore_out_request_no": "REQ0001",
    "payscore_service_id": "500001",
}


@dataclass
class Rig:
    """Starts simulated terminals and connects clients to them; tears everything down."""

    sims: list[SimTerminal] = field(default_factory=list)
    clients: list[BridgeClient] = field(default_factory=list)

    async def sim(self, *, clock: Clock | None = None, **kwargs: Any) -> tuple[SimTerminal, int]:
        kwargs.setdefault("latencies", SimLatencies.instant())
        sim = SimTerminal(clock=clock or SystemClock(), **kwargs)
        port = await sim.serve_tcp()
        self.sims.append(sim)
        return sim, port

    async def client(
        self, port: int, *, clock: Clock | None = None, **kwargs: float
    ) -> BridgeClient:
        kwargs.setdefault("heartbeat_interval", 0.5)
        kwargs.setdefault("heartbeat_timeout", 5.0)
        client = BridgeClient(TcpTransport("127.0.0.1", port), clock or SystemClock(), **kwargs)
        self.clients.append(client)
        await client.connect()
        return client

    async def pair(
        self,
        *,
        sim_clock: Clock | None = None,
        client_clock: Clock | None = None,
        client_kwargs: dict[str, float] | None = None,
        **sim_kwargs: Any,
    ) -> tuple[SimTerminal, BridgeClient]:
        sim, port = await self.sim(clock=sim_clock, **sim_kwargs)
        client = await self.client(port, clock=client_clock, **(client_kwargs or {}))
        return sim, client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for sim in self.sims:
            await sim.stop()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    try:
        yield rig
    finally:
        await rig.close()


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


async def _init(client: BridgeClient) -> None:
    info = await client.call("initWxpayface", {}, timeout=_CALL_TIMEOUT)
    assert info["return_code"] == "SUCCESS"


def _collector() -> tuple[list[dict[str, str]], Callable[[dict[str, str]], None]]:
    received: list[dict[str, str]] = []
    return received, received.append


async def _face_call_started(
    sim: SimTerminal, call: Awaitable[dict[str, str]]
) -> asyncio.Task[dict[str, str]]:
    """Start a face call and wait until the simulated camera is open."""
    task = asyncio.ensure_future(call)
    await until(lambda: sim.face_ui_open or task.done())
    assert not task.done(), task.result()
    return task


# ---------------------------------------------------------------------------- connection


async def test_hello_describes_the_peripheral(rig: Rig) -> None:
    sim, client = await rig.pair(
        serial="SER123", model="P2", sdk_version="2.21.3", face_app_version="2.21.9"
    )
    assert client.connected
    assert client.hello is not None
    assert client.hello.protocol_version == "1"
    assert client.hello.sdk_version == "2.21.3"
    assert client.hello.device_serial == "SER123"
    assert client.hello.device_model == "P2"
    assert client.hello.face_app_version == "2.21.9"
    assert client.hello.bridge_version == sim.bridge_version


async def test_unreachable_port_is_device_lost() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = BridgeClient(TcpTransport("127.0.0.1", port), SystemClock())
    with pytest.raises(DeviceLost):
        await client.connect()
    assert not client.connected
    with pytest.raises(DeviceLost):
        await client.call("getWxpayfaceRawdata", {}, timeout=1.0)


async def test_frozen_peripheral_never_says_hello(rig: Rig) -> None:
    sim, port = await rig.sim()
    sim.freeze()
    client = BridgeClient(TcpTransport("127.0.0.1", port), SystemClock(), hello_timeout=0.2)
    rig.clients.append(client)
    with pytest.raises(DeviceTimeout):
        await client.connect()
    assert not client.connected


# ---------------------------------------------------------------------------- round trips


async def test_init_rawdata_code_round_trip_with_both_callbacks(rig: Rig) -> None:
    sim, client = await rig.pair()
    await _init(client)

    raw = await client.call("getWxpayfaceRawdata", {}, timeout=_CALL_TIMEOUT)
    assert raw["return_code"] == "SUCCESS"
    assert 0 < len(raw["rawdata"]) <= 2048
    base64.b64decode(raw["rawdata"], validate=True)

    updates, on_update = _collector()
    sent_ids: list[int] = []
    info = await client.call(
        "getWxpayfaceCode",
        FACE_PARAMS,
        timeout=_CALL_TIMEOUT,
        on_update_result=on_update,
        on_sent=sent_ids.append,
    )
    assert info["return_code"] == "SUCCESS"
    assert len(info["face_code"]) == 18
    assert info["face_code"].isdigit()
    assert info["face_code"] == sim.issued_face_codes[-1]
    assert info["openid"] == sim.default_user.openid
    assert info["underage_state"] == "1"
    await until(lambda: len(updates) == 1)
    assert updates[0]["return_code"] == "SUCCESS"
    assert len(sent_ids) == 1

    await until(lambda: not sim.face_ui_open)
    assert sim.timeline == [
        "initWxpayface",
        "getWxpayfaceRawdata",
        "getWxpayfaceCode",
        "camera_open",
        "result_page",
        "result_page_closed",
    ]
    assert client.methods_sent == ["initWxpayface", "getWxpayfaceRawdata", "getWxpayfaceCode"]
    assert client.calls_sent == 3


@pytest.mark.parametrize("ui_result", ["SUCCESS", "USER_QUERY_CANCEL"])
async def test_result_page_keeps_the_camera_busy_until_the_second_callback(
    rig: Rig, ui_result: str
) -> None:
    clock = ManualClock()
    latencies = SimLatencies(init=0, rawdata=0, face_capture=0, update_result=3.0, quit=0)
    sim, client = await rig.pair(sim_clock=clock, latencies=latencies)
    await _init(client)
    sim.script(FaceOutcome[ui_result])
    updates, on_update = _collector()
    info = await client.call(
        "getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT, on_update_result=on_update
    )
    assert info["return_code"] == "SUCCESS"
    await until(lambda: clock.sleepers > 0)
    # The code is out, WeChat's result page is up: the camera is still busy.
    assert sim.result_page_open
    assert sim.face_ui_open
    busy = await client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    assert busy["return_code"] == "ERROR"
    assert "already open" in busy["return_msg"]
    assert updates == []
    await clock.advance(3.0)
    await until(lambda: len(updates) == 1)
    assert updates[0]["return_code"] == ui_result
    await until(lambda: not sim.face_ui_open)


async def test_quit_closes_the_result_page_without_a_second_callback(rig: Rig) -> None:
    clock = ManualClock()
    latencies = SimLatencies(init=0, rawdata=0, face_capture=0, update_result=3.0, quit=0)
    sim, client = await rig.pair(sim_clock=clock, latencies=latencies)
    await _init(client)
    updates, on_update = _collector()
    await client.call(
        "getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT, on_update_result=on_update
    )
    await until(lambda: sim.result_page_open)
    quit_answer = await client.call("quitWxpayface", {}, timeout=_CALL_TIMEOUT)
    assert quit_answer["return_code"] == "SUCCESS"
    assert not sim.face_ui_open
    await clock.advance(3.0)
    await settle()
    assert updates == []


async def test_old_sdk_sends_update_result_only_after_the_pay_result(rig: Rig) -> None:
    _sim, client = await rig.pair(sdk_version="2.12.0")
    await _init(client)
    updates, on_update = _collector()
    info = await client.call(
        "getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT, on_update_result=on_update
    )
    assert info["return_code"] == "SUCCESS"
    # Frames arrive in order: an UPDATE_RESULT sent with the code would be here before this reply.
    await client.call("getWxpayfaceRawdata", {}, timeout=_CALL_TIMEOUT)
    assert updates == []

    pay_result = {k: FACE_PARAMS[k] for k in ("appid", "mch_id", "store_id", "authinfo")}
    done = await client.call(
        "updateWxpayfacePayResult", {**pay_result, "payresult": "SUCCESS"}, timeout=_CALL_TIMEOUT
    )
    assert done["return_code"] == "SUCCESS"
    await until(lambda: len(updates) == 1)
    assert updates[0]["return_code"] == "SUCCESS"

    # Nothing is waiting any more.
    again = await client.call(
        "updateWxpayfacePayResult", {**pay_result, "payresult": "SUCCESS"}, timeout=_CALL_TIMEOUT
    )
    assert again["return_code"] == "ERROR"


async def test_old_sdk_with_ignore_update_pay_result_sends_it_unasked(rig: Rig) -> None:
    _, client = await rig.pair(sdk_version="2.12.0")
    await _init(client)
    updates, on_update = _collector()
    await client.call(
        "getWxpayfaceCode",
        {**FACE_PARAMS, "ignore_update_pay_result": "1"},
        timeout=_CALL_TIMEOUT,
        on_update_result=on_update,
    )
    await until(lambda: len(updates) == 1)


async def test_forget_update_drops_the_update_result(rig: Rig) -> None:
    _, client = await rig.pair(sdk_version="2.12.0")
    await _init(client)
    updates, on_update = _collector()
    ids: list[int] = []
    await client.call(
        "getWxpayfaceCode",
        FACE_PARAMS,
        timeout=_CALL_TIMEOUT,
        on_update_result=on_update,
        on_sent=ids.append,
    )
    client.forget_update(ids[0])
    pay_result = {k: FACE_PARAMS[k] for k in ("appid", "mch_id", "store_id", "authinfo")}
    await client.call(
        "updateWxpayfacePayResult", {**pay_result, "payresult": "ERROR"}, timeout=_CALL_TIMEOUT
    )
    await client.call("getWxpayfaceRawdata", {}, timeout=_CALL_TIMEOUT)  # ordering barrier
    assert updates == []


async def test_concurrent_calls_are_matched_by_id(rig: Rig) -> None:
    sim_clock = ManualClock()
    sim, client = await rig.pair(
        sim_clock=sim_clock, latencies=SimLatencies(0, 0, 30.0, 0, 0, 0, 0)
    )
    await _init(client)
    face = await _face_call_started(
        sim, client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    )
    raw, bad_fw, refused, user_none = await asyncio.gather(
        client.call("getWxpayfaceRawdata", {}, timeout=_CALL_TIMEOUT),
        client.call("enableFirewall", {"subMchId": "x"}, timeout=_CALL_TIMEOUT),
        client.call("noSuchMethod", {}, timeout=_CALL_TIMEOUT),
        client.call("getWxpayfaceUserInfo", {}, timeout=_CALL_TIMEOUT),
        return_exceptions=True,
    )
    assert isinstance(raw, dict)
    assert raw["return_code"] == "SUCCESS"
    assert "rawdata" in raw
    assert isinstance(bad_fw, dict)
    assert bad_fw["return_code"] == "PARAM_ERROR"
    assert "mchId" in bad_fw["return_msg"]
    assert isinstance(refused, DeviceError)
    assert "noSuchMethod" in str(refused)
    assert isinstance(user_none, dict)
    assert user_none["return_code"] == "PARAM_ERROR"
    assert not face.done()  # the face UI is still up; everything else answered around it

    await sim_clock.advance(30.0)
    info = await asyncio.wait_for(face, _DEADLINE)
    assert info["return_code"] == "SUCCESS"
    assert "face_code" in info


async def test_instant_calls_answer_in_turn_and_waiting_ones_beside_the_stream(rig: Rig) -> None:
    sim_clock = ManualClock()
    sim, port = await rig.sim(clock=sim_clock)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames = FrameReader(reader)
    try:
        hello = await asyncio.wait_for(frames.read(), _DEADLINE)
        assert hello is not None
        assert hello.HasField("hello")

        def call(call_id: int, method: str) -> bytes:
            return encode_frame(
                bridge_pb2.Frame(call=bridge_pb2.Call(call_id=call_id, method=method))
            )

        def ping(nonce: int) -> bytes:
            return encode_frame(bridge_pb2.Frame(ping=bridge_pb2.Ping(nonce=nonce)))

        async def answers(count: int) -> list[str]:
            seen = []
            for _ in range(count):
                frame = await asyncio.wait_for(frames.read(), _DEADLINE)
                assert frame is not None
                if frame.HasField("callback"):
                    seen.append(f"callback {frame.callback.call_id}")
                else:
                    seen.append(f"{frame.WhichOneof('body')} {frame.pong.nonce}")
            return seen

        # Instant calls are answered as they are read: before the ping that followed them.
        writer.write(call(1, "initWxpayface") + call(2, "getWxpayfaceRawdata") + ping(7))
        assert await answers(3) == ["callback 1", "callback 2", "pong 7"]

        # A call that waits does so beside the stream: the ping behind it is answered first.
        sim.latencies = dataclasses.replace(sim.latencies, rawdata=5.0)
        writer.write(call(3, "getWxpayfaceRawdata") + ping(8))
        assert await answers(1) == ["pong 8"]
        await sim_clock.advance(5.0)
        assert await answers(1) == ["callback 3"]
    finally:
        writer.close()


# ---------------------------------------------------------------------------- secondary codes


async def test_calls_before_init_answer_not_initialized(rig: Rig) -> None:
    sim, client = await rig.pair()
    for method, params in (("getWxpayfaceRawdata", {}), ("getWxpayfaceCode", FACE_PARAMS)):
        info = await client.call(method, params, timeout=_CALL_TIMEOUT)
        assert info["return_code"] == "ERROR"
        assert info["err_code"] == SDK_NOT_INITIALIZED
    assert "camera_open" not in sim.timeline


async def test_init_answers_initializing_then_error_then_success(rig: Rig) -> None:
    sim, client = await rig.pair()
    sim.script_init(initializing_times=2, fail_times=1)
    answers = [await client.call("initWxpayface", {}, timeout=_CALL_TIMEOUT) for _ in range(4)]
    assert [a.get("err_code", "") for a in answers] == [SDK_INITIALIZING, SDK_INITIALIZING, "", ""]
    assert [a["return_code"] for a in answers] == ["ERROR", "ERROR", "ERROR", "SUCCESS"]
    assert sim.calls["initWxpayface"] == 4
    assert sim.initialized


async def test_sdk_restart_underneath_forgets_init(rig: Rig) -> None:
    sim, client = await rig.pair()
    await _init(client)
    assert (await client.call("getWxpayfaceRawdata", {}, timeout=_CALL_TIMEOUT))[
        "return_code"
    ] == "SUCCESS"
    sim.forget_init()
    info = await client.call("getWxpayfaceRawdata", {}, timeout=_CALL_TIMEOUT)
    assert info["err_code"] == SDK_NOT_INITIALIZED


async def test_release_uninitializes_and_is_counted(rig: Rig) -> None:
    sim, client = await rig.pair()
    await _init(client)
    info = await client.call("releaseWxpayface", {}, timeout=_CALL_TIMEOUT)
    assert info["return_code"] == "SUCCESS"
    assert not sim.initialized
    assert sim.calls["initWxpayface"] == 1
    assert sim.calls["releaseWxpayface"] == 1
    info = await client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    assert info["err_code"] == SDK_NOT_INITIALIZED


# ---------------------------------------------------------------------------- liveness


async def test_frozen_peripheral_is_detected_by_the_heartbeat(rig: Rig) -> None:
    sim_clock = ManualClock()
    sim, client = await rig.pair(
        sim_clock=sim_clock,
        latencies=SimLatencies(0, 0, 3600.0, 0, 0, 0, 0),
        client_kwargs={"heartbeat_interval": 0.05, "heartbeat_timeout": 0.2},
    )
    lost_seen: list[BaseException] = []
    client.add_lost_listener(lost_seen.append)
    await _init(client)
    # A healthy peripheral keeps answering pings and the connection stays up.
    await until(lambda: sim.pings_answered >= 3)
    assert client.connected

    face = await _face_call_started(
        sim, client.call("getWxpayfaceCode", FACE_PARAMS, timeout=3600.0)
    )
    sim.freeze()
    reason = await asyncio.wait_for(client.wait_lost(), _DEADLINE)
    assert isinstance(reason, DeviceTimeout)
    assert "stopped answering" in str(reason)
    assert not client.connected
    assert lost_seen == [reason]
    # The pending call fails at once, long before its own hour-long deadline.
    with pytest.raises(DeviceLost):
        await asyncio.wait_for(face, _DEADLINE)
    with pytest.raises(DeviceLost):
        await client.call("getWxpayfaceRawdata", {}, timeout=_CALL_TIMEOUT)
    sim.thaw()


async def test_call_without_callback_times_out_at_its_deadline(rig: Rig) -> None:
    sim_clock, client_clock = ManualClock(), ManualClock()
    sim, client = await rig.pair(
        sim_clock=sim_clock,
        client_clock=client_clock,
        latencies=SimLatencies(0, 0, 60.0, 0, 0, 0, 0),
        client_kwargs={"heartbeat_interval": 10_000.0},
    )
    await _init(client)
    updates, on_update = _collector()
    face = await _face_call_started(
        sim,
        client.call("getWxpayfaceCode", FACE_PARAMS, timeout=5.0, on_update_result=on_update),
    )
    await client_clock.advance(4.9)
    await settle()
    assert not face.done()
    await client_clock.advance(0.1)
    with pytest.raises(DeviceTimeout):
        await asyncio.wait_for(face, _DEADLINE)
    assert client.connected  # a slow call is not a dead peripheral

    # The late RESULT and UPDATE_RESULT arrive and are dropped; the next call gets its own answer.
    await sim_clock.advance(60.0)
    await until(lambda: not sim.face_ui_open)
    raw = await client.call("getWxpayfaceRawdata", {}, timeout=5.0)
    assert "rawdata" in raw
    assert "face_code" not in raw
    assert updates == []


async def test_drop_connections_fails_the_pending_call(rig: Rig) -> None:
    sim_clock = ManualClock()
    sim, client = await rig.pair(
        sim_clock=sim_clock, latencies=SimLatencies(0, 0, 3600.0, 0, 0, 0, 0)
    )
    lost_seen: list[BaseException] = []
    client.add_lost_listener(lost_seen.append)
    await _init(client)
    face = await _face_call_started(
        sim, client.call("getWxpayfaceCode", FACE_PARAMS, timeout=3600.0)
    )
    await sim.drop_connections()
    with pytest.raises(DeviceLost):
        await asyncio.wait_for(face, _DEADLINE)
    reason = await asyncio.wait_for(client.wait_lost(), _DEADLINE)
    assert isinstance(reason, DeviceLost)
    assert lost_seen == [reason]

    # The peripheral is back: a new stream, the SDK kept its state.
    hello = await client.connect()
    assert hello.device_serial == sim.serial
    assert sim.connections_served == 2
    info = await client.call("getWxpayfaceRawdata", {}, timeout=_CALL_TIMEOUT)
    assert info["return_code"] == "SUCCESS"


async def test_close_fails_pending_calls_without_notifying_lost_listeners(rig: Rig) -> None:
    sim_clock = ManualClock()
    sim, client = await rig.pair(
        sim_clock=sim_clock, latencies=SimLatencies(0, 0, 3600.0, 0, 0, 0, 0)
    )
    lost_seen: list[BaseException] = []
    client.add_lost_listener(lost_seen.append)
    await _init(client)
    face = await _face_call_started(
        sim, client.call("getWxpayfaceCode", FACE_PARAMS, timeout=3600.0)
    )
    await client.close()
    with pytest.raises(DeviceLost):
        await asyncio.wait_for(face, _DEADLINE)
    assert isinstance(await client.wait_lost(), DeviceLost)
    assert lost_seen == []
    assert not client.connected


# ---------------------------------------------------------------------------- face UI


async def test_quit_cancels_an_open_face_ui(rig: Rig) -> None:
    sim_clock = ManualClock()
    sim, client = await rig.pair(
        sim_clock=sim_clock, latencies=SimLatencies(0, 0, 3600.0, 0, 0, 0, 0)
    )
    await _init(client)
    _updates, on_update = _collector()
    face = await _face_call_started(
        sim,
        client.call(
            "getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT, on_update_result=on_update
        ),
    )
    quit_info = await client.call(
        "quitWxpayface", {"toast_text": "cashier stopped"}, timeout=_CALL_TIMEOUT
    )
    assert quit_info["return_code"] == "SUCCESS"
    assert face.done()  # the face call's answer came first
    info = face.result()
    assert info["return_code"] == "USER_CANCEL"
    assert info["return_msg"] == "cashier stopped"
    assert "face_code" not in info
    assert not sim.face_ui_open
    assert sim.issued_face_codes == []


async def test_only_one_face_ui_at_a_time(rig: Rig) -> None:
    sim_clock = ManualClock()
    sim, client = await rig.pair(
        sim_clock=sim_clock, latencies=SimLatencies(0, 0, 10.0, 0, 0, 0, 0)
    )
    await _init(client)
    first = await _face_call_started(
        sim, client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    )
    second = await client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    assert second["return_code"] == "ERROR"
    assert "already open" in second["return_msg"]
    await sim_clock.advance(10.0)
    assert (await asyncio.wait_for(first, _DEADLINE))["return_code"] == "SUCCESS"
    assert sim.timeline.count("camera_open") == 1


@pytest.mark.parametrize(
    ("outcome", "return_code", "msg_part"),
    [
        (FaceOutcome.USER_CANCEL, "USER_CANCEL", "cancel"),
        (FaceOutcome.SCAN_PAYMENT, "SCAN_PAYMENT", "scan"),
        (FaceOutcome.FACE_TIMEOUT, "ERROR", "timed out"),
        (FaceOutcome.CAMERA_ERROR, "ERROR", "camera"),
    ],
)
async def test_scripted_face_outcomes(
    rig: Rig, outcome: FaceOutcome, return_code: str, msg_part: str
) -> None:
    sim, client = await rig.pair()
    await _init(client)
    sim.script(outcome)
    info = await client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    assert info["return_code"] == return_code
    assert msg_part in info["return_msg"]
    assert "face_code" not in info
    # The script is used up: the next capture succeeds.
    again = await client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    assert again["return_code"] == "SUCCESS"


async def test_scripted_user_and_repeats(rig: Rig) -> None:
    sim, client = await rig.pair()
    await _init(client)
    alice = SimUser(openid="oAlice", sub_openid="oAliceSub", underage_state=2)
    sim.script("success", user=alice, times=2)
    for _ in range(2):
        info = await client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
        assert (info["openid"], info["sub_openid"], info["underage_state"]) == (
            "oAlice",
            "oAliceSub",
            "2",
        )
    info = await client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    assert info["openid"] == sim.default_user.openid


async def test_user_info(rig: Rig) -> None:
    sim, client = await rig.pair()
    await _init(client)
    sim.script(FaceOutcome.SUCCESS, user=SimUser(openid="oBob", nickname="Bob", unionid="uBob"))
    params = {k: FACE_PARAMS[k] for k in ("appid", "mch_id", "store_id", "face_authtype")}
    info = await client.call(
        "getWxpayfaceUserInfo",
        {**params, "authinfo": _AUTHINFO, "ask_unionid": "1"},
        timeout=_CALL_TIMEOUT,
    )
    assert info["return_code"] == "SUCCESS"
    assert (info["openid"], info["nickname"], info["unionid_code"]) == ("oBob", "Bob", "SUCCESS")
    assert info["token"]
    assert "sub_openid" in info
    assert "unionid_msg" in info
    assert sim.timeline[-1] == "camera_open"


@pytest.mark.parametrize(
    ("user", "outcome", "return_code"),
    [
        (SimUser(has_payscore=True), FaceOutcome.SUCCESS, "SUCCESS"),
        (SimUser(has_payscore=False, authorizes_payscore=True), FaceOutcome.SUCCESS, "SUCCESS"),
        (SimUser(has_payscore=False, authorizes_payscore=False), FaceOutcome.SUCCESS, "ERROR"),
        # Has PayScore, but declines to authorize this service: not a SUCCESS.
        (SimUser(has_payscore=True, authorizes_payscore=False), FaceOutcome.SUCCESS, "ERROR"),
        (SimUser(), FaceOutcome.USER_CANCEL, "USER_CANCEL"),
        (SimUser(), FaceOutcome.SCAN_PAYMENT, "SCAN_PAYMENT"),
    ],
)
async def test_payscore_status(
    rig: Rig, user: SimUser, outcome: FaceOutcome, return_code: str
) -> None:
    sim, client = await rig.pair()
    await _init(client)
    sim.script(outcome, user=user)
    info = await client.call("getUserPayScoreStatus", PAYSCORE_PARAMS, timeout=_CALL_TIMEOUT)
    assert info["return_code"] == return_code
    assert ("face_sid" in info) == (return_code == "SUCCESS")
    if return_code == "SUCCESS":
        assert info["openid"] == user.openid
    if return_code == "ERROR":
        declined = "authorize" in info["return_msg"]
        assert declined == user.has_payscore


# ---------------------------------------------------------------------------- version gates


@pytest.mark.parametrize(
    ("sdk_version", "method", "params", "available"),
    [
        ("2.12.0", "quitWxpayface", {}, False),
        ("2.21.0", "quitWxpayface", {}, False),
        ("2.22.0", "quitWxpayface", {}, True),
        ("2.20.9", "enableFirewall", {"mchId": "1900000109", "subMchId": "1"}, False),
        ("2.21.0", "enableFirewall", {"mchId": "1900000109", "subMchId": "1"}, True),
        ("2.20.9", "disableFirewall", {"mchId": "1900000109", "subMchId": "1"}, False),
        ("2.21.0", "disableFirewall", {"mchId": "1900000109", "subMchId": "1"}, True),
        ("2.13.0", "updateWxpayfacePayResult", {"payresult": "SUCCESS"}, False),
        ("2.22.0", "updateWxpayfacePayResult", {"payresult": "SUCCESS"}, False),
        ("2.12.5", "updateWxpayfacePayResult", {"payresult": "SUCCESS"}, True),
    ],
)
async def test_version_gates(
    rig: Rig, sdk_version: str, method: str, params: dict[str, str], available: bool
) -> None:
    sim, client = await rig.pair(sdk_version=sdk_version)
    await _init(client)
    if available:
        info = await client.call(method, params, timeout=_CALL_TIMEOUT)
        assert "return_code" in info
    else:
        with pytest.raises(DeviceError) as caught:
            await client.call(method, params, timeout=_CALL_TIMEOUT)
        assert not isinstance(caught.value, (DeviceLost, DeviceTimeout))
        assert f"method not available in SDK {sdk_version}" in str(caught.value)
        assert client.connected  # a refused call does not hurt the connection
    assert sim.calls[method] == 1


async def test_firewall_enable_and_disable(rig: Rig) -> None:
    sim, client = await rig.pair(sdk_version="2.21.0")
    params = {"mchId": "1900000109", "subMchId": "1230000109"}
    info = await client.call("enableFirewall", params, timeout=_CALL_TIMEOUT)
    assert info["err_code"] == SDK_NOT_INITIALIZED
    await _init(client)
    assert (await client.call("enableFirewall", params, timeout=_CALL_TIMEOUT))[
        "return_code"
    ] == "SUCCESS"
    assert sim.firewall == ("1900000109", "1230000109")
    await client.call("disableFirewall", params, timeout=_CALL_TIMEOUT)
    assert sim.firewall is None


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"appid": None}, "appid"),
        ({"mch_id": None}, "mch_id"),
        ({"store_id": ""}, "store_id"),
        ({"face_authtype": None}, "face_authtype"),
        ({"face_authtype": "SMILE"}, "face_authtype"),
        ({"authinfo": None}, "authinfo"),
        ({"face_code_type": None}, "face_code_type"),
        ({"face_code_type": "0", "out_trade_no": None}, "out_trade_no"),
        ({"face_code_type": "0", "total_fee": None}, "total_fee"),
        ({"total_fee": "12.50"}, "total_fee"),
        ({"screen_index": "5"}, "screen_index"),
        ({"overlay_option": "2"}, "overlay_option"),
    ],
)
async def test_face_code_param_validation(
    rig: Rig, change: dict[str, str | None], named: str
) -> None:
    sim, client = await rig.pair()
    await _init(client)
    params = dict(FACE_PARAMS)
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    info = await client.call("getWxpayfaceCode", params, timeout=_CALL_TIMEOUT)
    assert info["return_code"] == "PARAM_ERROR"
    assert named in info["return_msg"]
    assert "camera_open" not in sim.timeline


async def test_face_code_type_1_needs_no_order(rig: Rig) -> None:
    _, client = await rig.pair()
    await _init(client)
    params = {k: v for k, v in FACE_PARAMS.items() if k not in ("out_trade_no", "total_fee")}
    info = await client.call(
        "getWxpayfaceCode", {**params, "screen_index": "4", "overlay_option": "1"}, timeout=5.0
    )
    assert info["return_code"] == "SUCCESS"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"ip": "10.0.0.1", "port": "80a"}, "port"),
        ({"tcp_port": "x"}, "tcp_port"),
        ({"proxy_type": "4"}, "proxy_type"),
        ({"perform_mode": "FAST"}, "perform_mode"),
    ],
)
async def test_init_param_validation(rig: Rig, params: dict[str, str], named: str) -> None:
    sim, client = await rig.pair()
    info = await client.call("initWxpayface", params, timeout=_CALL_TIMEOUT)
    assert info["return_code"] == "PARAM_ERROR"
    assert named in info["return_msg"]
    assert not sim.initialized


async def test_init_with_a_proxy(rig: Rig) -> None:
    sim, client = await rig.pair()
    params = {
        "ip": "10.0.0.1",
        "port": "8888",
        "user": "proxy",
        "passwd": "proxy-pass",
        "proxy_type": "2",
        "tcp_port": "8889",
        "perform_mode": "LOW_PERFORM",
    }
    info = await client.call("initWxpayface", params, timeout=_CALL_TIMEOUT)
    assert info["return_code"] == "SUCCESS"
    assert sim.initialized


async def test_rejected_authinfo_names_authinfo(rig: Rig) -> None:
    sim, client = await rig.pair(authinfo_valid=lambda a: a == "fresh-authinfo")
    await _init(client)
    info = await client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    assert info["return_code"] == "ERROR"
    assert "authinfo" in info["return_msg"]
    assert _AUTHINFO not in info["return_msg"]
    assert "camera_open" not in sim.timeline
    ok = await client.call(
        "getWxpayfaceCode", {**FACE_PARAMS, "authinfo": "fresh-authinfo"}, timeout=_CALL_TIMEOUT
    )
    assert ok["return_code"] == "SUCCESS"


# ---------------------------------------------------------------------------- secrets


@pytest.mark.usefixtures("_restore_logging")
async def test_params_and_info_maps_never_reach_the_logs(rig: Rig) -> None:
    out = io.StringIO()
    configure_logging(json=True, level="debug", stream=out)
    sim, client = await rig.pair()
    await _init(client)
    raw = await client.call("getWxpayfaceRawdata", {}, timeout=_CALL_TIMEOUT)
    info = await client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    sim.script(FaceOutcome.CAMERA_ERROR)
    await client.call("getWxpayfaceCode", FACE_PARAMS, timeout=_CALL_TIMEOUT)
    with pytest.raises(DeviceError):
        await client.call("updateWxpayfacePayResult", FACE_PARAMS, timeout=1.0)  # refused
    text = out.getvalue()
    assert "getWxpayfaceCode" in text  # method names are logged ...
    for secret in (_AUTHINFO, info["face_code"], raw["rawdata"][:40], info["openid"]):
        assert secret not in text  # ... values are not
