"""The ADB transport against the real adb server, which is connected to the fake adbd."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest
from adbutils import AdbClient

from facepayd.device.adb import (
    AdbSettings,
    AdbTransport,
    AppMissing,
    CommandResult,
    bundled_adb_path,
)
from facepayd.errors import ConfigError, DeviceLost
from facepayd.sim.adbd import AdbServer, FakeAdbd, free_port
from tests.helpers import until

pytestmark = pytest.mark.adb

BRIDGE = "localabstract:facepay-bridge"
FACE_APP = "com.tencent.wxpayface"
BRIDGE_APP = "com.facepay.bridge"
PACKAGES = {FACE_APP: "2.24.1", BRIDGE_APP: "1.3.0"}
PROPS = {"ro.serialno": "SN-TEST-42", "ro.product.model": "Qingwa-Pro"}


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back every byte received until EOF."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class RecordingRunner:
    """A CommandRunner that must not be used: it records and refuses."""

    def __init__(self) -> None:
        self.calls: list[Sequence[str]] = []

    async def run(self, argv: Sequence[str], *, env: Mapping[str, str]) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(1, "refused by test")


@pytest.fixture
async def adb_server() -> AsyncIterator[AdbServer]:
    server = AdbServer(bundled_adb_path())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        assert not listening(server.port), "adb server still listening after stop()"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAdbd]:
    async with FakeAdbd({BRIDGE: echo}, props=PROPS, packages=PACKAGES) as device:
        yield device


@pytest.fixture
async def connected(adb_server: AdbServer, fake: FakeAdbd) -> FakeAdbd:
    await adb_server.connect(fake.address)
    return fake


def transport_for(
    server: AdbServer, *, runner: RecordingRunner | None = None, **overrides: str
) -> AdbTransport:
    settings = AdbSettings(server_port=server.port, **overrides)  # type: ignore[arg-type]
    return AdbTransport(settings, runner=runner)


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> bytes:
    writer.write(payload)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(payload)), 10)


async def test_open_echoes_small_and_large_writes(
    adb_server: AdbServer, connected: FakeAdbd
) -> None:
    transport = transport_for(adb_server, address=connected.address)
    reader, writer = await transport.open(5.0)
    try:
        assert await roundtrip(reader, writer, b"ping") == b"ping"
        # Larger than the 256 KiB max payload, so adb's per-stream flow control is exercised.
        big = bytes(range(256)) * 3000
        assert await roundtrip(reader, writer, big) == big
    finally:
        writer.close()
    assert connected.opened_services.count(BRIDGE) == 1


async def test_open_picks_the_only_device_without_serial_or_address(
    adb_server: AdbServer, connected: FakeAdbd
) -> None:
    reader, writer = await transport_for(adb_server).open(5.0)
    try:
        assert await roundtrip(reader, writer, b"only") == b"only"
    finally:
        writer.close()


async def test_inspect_reports_props_and_app_versions(
    adb_server: AdbServer, connected: FakeAdbd
) -> None:
    info = await transport_for(adb_server, address=connected.address).inspect(5.0)
    assert info.serial == "SN-TEST-42"
    assert info.model == "Qingwa-Pro"
    assert info.face_app_installed is True
    assert info.face_app_version == "2.24.1"
    assert info.bridge_app_installed is True
    assert info.bridge_app_version == "1.3.0"
    assert info.extra["adb_serial"] == connected.address


async def test_kill_mid_stream_gives_eof_and_revive_reopens_on_the_same_server(
    adb_server: AdbServer, connected: FakeAdbd
) -> None:
    runner = RecordingRunner()
    transport = transport_for(adb_server, runner=runner, address=connected.address)
    reader, writer = await transport.open(5.0)
    assert await roundtrip(reader, writer, b"before") == b"before"

    await connected.kill()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()

    await connected.revive()
    reader, writer = await transport.open(5.0)
    try:
        assert await roundtrip(reader, writer, b"after") == b"after"
    finally:
        writer.close()
    assert runner.calls == []  # the adb server was never restarted
    assert listening(adb_server.port)


async def test_open_while_killed_is_device_lost(adb_server: AdbServer, connected: FakeAdbd) -> None:
    transport = transport_for(adb_server, address=connected.address)
    await connected.kill()
    with pytest.raises(DeviceLost, match=re.escape(connected.address)):
        await transport.open(3.0)


async def test_close_mid_stream_gives_reader_eof(
    adb_server: AdbServer, connected: FakeAdbd
) -> None:
    reader, writer = await transport_for(adb_server, address=connected.address).open(5.0)
    assert await roundtrip(reader, writer, b"x") == b"x"
    await connected.close_mid_stream()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_refused_stream_is_device_lost_naming_the_bridge(
    adb_server: AdbServer, connected: FakeAdbd
) -> None:
    connected.refuse_streams = True
    with pytest.raises(DeviceLost, match=r"localabstract:facepay-bridge.*refused") as caught:
        await transport_for(adb_server, address=connected.address).open(5.0)
    assert BRIDGE_APP in str(caught.value)


async def test_frozen_device_open_is_bounded(adb_server: AdbServer, connected: FakeAdbd) -> None:
    transport = transport_for(adb_server, address=connected.address)
    connected.freeze()
    try:
        with pytest.raises(DeviceLost, match="did not answer"):
            await transport.open(0.5)
    finally:
        connected.thaw()


async def test_no_device_is_device_lost(adb_server: AdbServer) -> None:
    with pytest.raises(DeviceLost, match="no device"):
        await transport_for(adb_server).open(3.0)


async def test_unknown_serial_is_device_lost(adb_server: AdbServer, connected: FakeAdbd) -> None:
    with pytest.raises(DeviceLost, match="device NOPE is not attached"):
        await transport_for(adb_server, serial="NOPE").open(3.0)


async def test_several_devices_need_a_serial(adb_server: AdbServer, connected: FakeAdbd) -> None:
    async with FakeAdbd({BRIDGE: echo}, packages=PACKAGES) as second:
        await adb_server.connect(second.address)
        with pytest.raises(ConfigError, match="several devices") as caught:
            await transport_for(adb_server).open(3.0)
        assert connected.address in str(caught.value)
        assert second.address in str(caught.value)

        reader, writer = await transport_for(adb_server, serial=second.address).open(5.0)
        try:
            assert await roundtrip(reader, writer, b"two") == b"two"
        finally:
            writer.close()
        assert BRIDGE in second.opened_services
        assert BRIDGE not in connected.opened_services


async def test_missing_bridge_app_is_reported(adb_server: AdbServer, connected: FakeAdbd) -> None:
    del connected.packages[BRIDGE_APP]
    transport = transport_for(adb_server, address=connected.address)
    info = await transport.inspect(5.0)
    assert info.bridge_app_installed is False
    assert info.bridge_app_version == ""
    assert info.face_app_installed is True
    with pytest.raises(AppMissing, match=BRIDGE_APP) as caught:
        await transport.require_apps(5.0)
    assert caught.value.packages == (BRIDGE_APP,)
    with pytest.raises(AppMissing, match=BRIDGE_APP):
        await transport.start_bridge(5.0)


async def test_start_bridge_runs_the_service_and_the_bridge_answers(
    adb_server: AdbServer, fake: FakeAdbd
) -> None:
    del fake.stream_handlers[BRIDGE]
    fake.on_start_service = lambda _component: fake.stream_handlers.update({BRIDGE: echo})
    await adb_server.connect(fake.address)
    transport = transport_for(
        adb_server, address=fake.address, bridge_start_component=f"{BRIDGE_APP}/.Svc"
    )
    with pytest.raises(DeviceLost, match="refused"):
        await transport.open(5.0)

    await transport.start_bridge(5.0)
    assert fake.started_components == [f"{BRIDGE_APP}/.Svc"]
    reader, writer = await transport.open(5.0)
    try:
        assert await roundtrip(reader, writer, b"up") == b"up"
    finally:
        writer.close()


async def test_start_bridge_with_a_wrong_component_is_config_error(
    adb_server: AdbServer, connected: FakeAdbd
) -> None:
    component = f"{BRIDGE_APP}/.Nope"
    connected.missing_components.add(component)
    transport = transport_for(
        adb_server, address=connected.address, bridge_start_component=component
    )
    with pytest.raises(ConfigError, match=r"\.Nope not found.*1\.3\.0 is installed"):
        await transport.start_bridge(5.0)


async def test_no_adb_binary_is_config_error() -> None:
    port = free_port()
    settings = AdbSettings(adb_path="/nonexistent/adb", server_port=port)
    with pytest.raises(ConfigError, match="/nonexistent/adb"):
        await AdbTransport(settings).open(3.0)
    assert not listening(port)


async def test_remote_server_unreachable_is_device_lost() -> None:
    # Nothing listens there, and a server that is not local cannot be started by us.
    settings = AdbSettings(server_host="192.0.2.1", server_port=free_port())
    transport = AdbTransport(settings, runner=RecordingRunner())
    with pytest.raises(DeviceLost, match="unreachable"):
        await transport.open(1.0)


async def test_failed_server_start_is_device_lost() -> None:
    runner = RecordingRunner()
    port = free_port()
    transport = AdbTransport(AdbSettings(server_port=port), runner=runner)
    with pytest.raises(DeviceLost, match=r"did not start.*refused by test"):
        await transport.open(3.0)
    assert runner.calls == [[bundled_adb_path(), "-P", str(port), "start-server"]]


async def test_open_starts_the_adb_server_when_needed(fake: FakeAdbd) -> None:
    server = AdbServer(bundled_adb_path())  # not started: the transport must do it
    try:
        transport = transport_for(server, address=fake.address)
        reader, writer = await transport.open(10.0)
        try:
            assert await roundtrip(reader, writer, b"fresh") == b"fresh"
        finally:
            writer.close()
        assert listening(server.port)
    finally:
        await server.stop()
    assert not listening(server.port)


async def test_track_follows_the_device_state(adb_server: AdbServer, connected: FakeAdbd) -> None:
    states: list[str] = []
    transport = transport_for(adb_server, address=connected.address)
    transport.track(states.append)
    try:
        await until(lambda: transport.device_state == "device")
        await connected.kill()
        await until(lambda: transport.device_state != "device")
        assert states[0] == "device"
        assert states[-1] in ("offline", "absent")
    finally:
        await transport.close()


async def test_fake_answers_shell_v2_and_exec(adb_server: AdbServer, connected: FakeAdbd) -> None:
    def run() -> tuple[int, str, str, bytes]:
        device = AdbClient("127.0.0.1", adb_server.port).device(connected.address)
        v2 = device.shell2("getprop ro.product.model; nosuchcmd", v2=True)
        conn = device.open_transport(timeout=5)
        conn.send_command("exec:pm list packages wxpay")
        conn.check_okay()
        exec_out: bytes = conn.read_until_close(encoding=None)
        conn.close()
        return v2.returncode, v2.stdout, v2.stderr, exec_out

    code, stdout, stderr, exec_out = await asyncio.to_thread(run)
    assert (code, stdout.strip()) == (127, "Qingwa-Pro")
    assert "nosuchcmd" in stderr
    assert exec_out == f"package:{FACE_APP}\n".encode()


async def test_fake_delay_holds_the_answer_back(adb_server: AdbServer, connected: FakeAdbd) -> None:
    transport = transport_for(adb_server, address=connected.address)
    connected.delay = 30.0
    with pytest.raises(DeviceLost, match="did not answer"):
        await transport.open(0.3)
    connected.delay = 0.0
    reader, writer = await transport.open(5.0)
    try:
        assert await roundtrip(reader, writer, b"late") == b"late"
    finally:
        writer.close()
