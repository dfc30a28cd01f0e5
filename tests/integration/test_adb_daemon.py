"""The daemon over the real adb server and the fake adbd: captures, payments, faults, recovery."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import DeviceError, TerminalClient
from facepayd.sim.stack import SimStack
from facepayd.sim.terminal import SimLatencies
from tests.helpers import until
from tests.integration.conftest import DaemonFactory, StackFactory

pytestmark = pytest.mark.adb


async def test_capture_and_payment_over_adb(stack: SimStack, make_daemon: DaemonFactory) -> None:
    assert stack.adbd is not None
    assert stack.terminal is not None
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        status = await client.get_status()
        assert status.device.transport.startswith("adb")
        assert status.device.serial == stack.terminal.serial
        assert status.device.face_app_installed
        assert status.device.face_app_version == stack.terminal.face_app_version
        events = [e async for e in client.start_face_pay("ADBPAY1", 1, "adb coffee")]
    assert events[-1].state == pb.PAYMENT_STATE_SUCCEEDED
    assert "localabstract:facepay-bridge" in stack.adbd.opened_services


async def test_killed_adbd_ends_the_session_with_device_lost_and_recovers(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    sims = await make_stack(latencies=SimLatencies(init=0.0, rawdata=0.0, face_capture=5.0))
    daemon = await make_daemon(sims)
    assert sims.adbd is not None
    async with daemon.client() as client:
        stream = client.capture_face_code("KILL1", 100)
        await anext(stream)
        await until(lambda: sims.terminal is not None and sims.terminal.face_ui_open, 10, "face UI")
        await sims.adbd.kill()
        with pytest.raises(DeviceError) as lost:
            async for _ in stream:
                pass
        assert lost.value.reason == "DEVICE_LOST"
        await sims.adbd.revive()
        await daemon.wait_serving()
        status = await client.get_status()
        assert status.state == pb.LIFECYCLE_STATE_READY
        assert status.counters.reconnects >= 1
        events = [e async for e in client.start_face_pay("KILL2", 1, "after revive")]
    assert events[-1].state == pb.PAYMENT_STATE_SUCCEEDED


async def test_frozen_adbd_is_found_by_the_heartbeat(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack, device={"heartbeat_interval": 0.3, "heartbeat_timeout": 0.3})
    assert stack.adbd is not None
    async with daemon.client() as client:
        stack.adbd.freeze()
        await until_status(
            client,
            lambda s: s.state in (pb.LIFECYCLE_STATE_FAULT, pb.LIFECYCLE_STATE_DISCONNECTED),
        )
        status = await client.get_status()
        assert "answer" in status.fault or "lost" in status.fault
        stack.adbd.thaw()
        await daemon.wait_serving()


async def test_missing_face_app_is_a_clear_fault(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    sims = await make_stack(face_app_installed=False)
    daemon = await make_daemon(sims, wait_serving=False)
    async with daemon.client(wait_for_ready=True) as client:
        await until_status(client, lambda s: s.state == pb.LIFECYCLE_STATE_FAULT)
        status = await client.get_status()
        assert "com.tencent.wxpayface" in status.fault
        assert not status.device.face_app_installed
        with pytest.raises(DeviceError) as refused:
            async for _ in client.capture_face_code("NOAPP1", 1):
                pass
        assert "com.tencent.wxpayface" in refused.value.message


async def test_no_device_is_a_clear_fault(stack: SimStack, make_daemon: DaemonFactory) -> None:
    assert stack.adb_server is not None
    assert stack.adbd is not None
    await stack.adb_server.disconnect(stack.adbd.address)
    daemon = await make_daemon(stack, wait_serving=False, device={"address": ""})
    async with daemon.client(wait_for_ready=True) as client:
        await until_status(client, lambda s: "no device" in s.fault)
        status = await client.get_status()
        assert status.state == pb.LIFECYCLE_STATE_DISCONNECTED
        assert f"127.0.0.1:{stack.adb_server.port}" in status.fault


async def test_adb_server_is_stopped_and_nothing_left_listening(make_stack: StackFactory) -> None:
    sims = await make_stack()
    assert sims.adb_server is not None
    assert sims.adbd is not None
    ports = [sims.adb_server.port, int(sims.adbd.address.rpartition(":")[2])]
    await sims.stop()
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"


async def until_status(
    client: TerminalClient, predicate: Callable[[pb.TerminalStatus], bool], timeout: float = 20.0
) -> None:
    """Poll GetStatus until predicate holds, failing after timeout seconds."""
    deadline = time.monotonic() + timeout
    status = await client.get_status()
    while not predicate(status):
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched; last: {status}")
        await asyncio.sleep(0.05)
        status = await client.get_status()
