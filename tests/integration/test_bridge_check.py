"""`facepay bridge-check` as a child process against the simulated terminal and broken bridges."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from facepay.bridge.v1 import bridge_pb2
from facepayd.clock import SystemClock
from facepayd.device.adb import bundled_adb_path
from facepayd.device.framing import read_frame, write_frame
from facepayd.device.sdk import SdkVersion
from facepayd.errors import DeviceError
from facepayd.sim.adbd import AdbServer, FakeAdbd
from facepayd.sim.terminal import FaceOutcome, SimLatencies, SimTerminal
from tests.helpers import until

BRIDGE = "localabstract:facepay-bridge"
# Fast, but not instant: a call is still running when the kit closes the stream under it.
LATENCIES = SimLatencies(
    init=0.05, rawdata=0.01, face_capture=0.05, update_result=0.05, release=0.01
)
_CLI = "import sys; from facepay_client.cli import main; sys.exit(main(sys.argv[1:]))"


async def bridge_check(*args: str) -> tuple[int, str, str]:
    """Run `facepay bridge-check args...` in a child process; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLI,
        "bridge-check",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def marks(output: str) -> dict[str, str]:
    """check name -> its mark, from `✓ name: detail` lines."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        mark, _, rest = line.partition(" ")
        if mark in ("✓", "✗", "-"):
            found[rest.partition(":")[0]] = mark
    return found


def sim_terminal(sdk_version: str = "2.22.0") -> SimTerminal:
    terminal = SimTerminal(
        clock=SystemClock(),
        sdk_version=sdk_version,
        face_app_version=sdk_version,
        latencies=LATENCIES,
    )
    # The kit's getWxpayfaceCode must succeed for UPDATE_RESULT; the user then cancels the next
    # face UI, a documented outcome the kit accepts.
    terminal.script(FaceOutcome.SUCCESS)
    terminal.script(FaceOutcome.USER_CANCEL)
    return terminal


def assert_served_everything(terminal: SimTerminal, output: str) -> None:
    """Every SDK method of the version was called, on four streams, and nothing is left open."""
    wanted = {
        "initWxpayface",
        "getWxpayfaceRawdata",
        "getWxpayfaceCode",
        "getWxpayfaceUserInfo",
        "getUserPayScoreStatus",
        "releaseWxpayface",
        "bridgeCheckNoSuchMethod",
    }
    if SdkVersion.parse(terminal.sdk_version).has_quit:
        wanted |= {"quitWxpayface", "enableFirewall"}
    else:
        wanted |= {"updateWxpayfacePayResult"}
    assert wanted <= set(terminal.calls), terminal.calls
    assert terminal.calls["getWxpayfaceRawdata"] == 3  # one alone, two concurrent
    # main, oversized, closed mid-call, the one after it
    assert terminal.connections_served == 4
    assert terminal.pings_answered == 3
    assert not terminal.initialized  # released at the end: left as found
    assert not terminal.face_ui_open
    assert "return_code USER_CANCEL" in output
    assert terminal.issued_face_codes
    assert not any(code in output for code in terminal.issued_face_codes)


@pytest.mark.parametrize("sdk_version", ["2.22.0", "2.12.0"])
async def test_simulated_terminal_passes_over_tcp(sdk_version: str) -> None:
    terminal = sim_terminal(sdk_version)
    port = await terminal.serve_tcp()
    try:
        code, out, err = await bridge_check("--tcp", f"127.0.0.1:{port}")
        await until(lambda: terminal.connections == 0, what="streams closed")
    finally:
        await terminal.stop()
    assert code == 0, out + err
    checks = marks(out)
    expected = {
        "hello",
        "ping",
        "call initWxpayface",
        "call getWxpayfaceRawdata",
        "call ids",
        "unknown method",
        "call getWxpayfaceCode",
        "ping during a face call",
        "UPDATE_RESULT callback",
        "call getWxpayfaceUserInfo",
        "call getUserPayScoreStatus",
        "call releaseWxpayface",
        "oversized frame",
        "closed stream",
    }
    assert expected <= set(checks)
    assert all(checks[name] == "✓" for name in expected), out
    if sdk_version == "2.22.0":
        assert checks["call quitWxpayface"] == "✓"
        assert checks["call enableFirewall"] == "✓"
        # The SDK refused enableFirewall without mchId, so there was nothing to undo.
        assert checks["call disableFirewall"] == "-"
        assert terminal.firewall is None
    else:
        assert "after updateWxpayfacePayResult, return_code SUCCESS" in out
        assert "call quitWxpayface" not in checks
        assert "call enableFirewall" not in checks
    assert f"SDK {sdk_version}, SimFace P1 (SIMFACE0001)" in out
    assert "bridge-check passed (tcp 127.0.0.1:" in out
    assert_served_everything(terminal, out)


@pytest.mark.adb
async def test_simulated_terminal_passes_over_the_real_adb_server() -> None:
    terminal = sim_terminal()
    device = FakeAdbd(
        {BRIDGE: terminal.handle_stream},
        props={"ro.serialno": terminal.serial, "ro.product.model": terminal.model},
        packages={"com.facepay.bridge": "1.0.0", "com.tencent.wxpayface": "2.22.0"},
    )
    server = AdbServer(bundled_adb_path())
    await device.start()
    try:
        await server.start()
        try:
            await server.connect(device.address)
            code, out, err = await bridge_check(
                "--adb-port", str(server.port), "--serial", device.address
            )
        finally:
            await server.stop()
    finally:
        await device.stop()
        await terminal.stop()
    assert code == 0, out + err
    assert "✗" not in out
    assert device.opened_services.count(BRIDGE) == 4
    assert f"bridge-check passed (adb 127.0.0.1:{server.port} {device.address}" in out
    assert_served_everything(terminal, out)


class BrokenBridge:
    """A tiny peripheral that gets one thing wrong: call ids, or pongs."""

    def __init__(self, *, wrong_call_id: bool = False, answers_ping: bool = True) -> None:
        self.wrong_call_id = wrong_call_id
        self.answers_ping = answers_ping
        self.port = 0
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> BrokenBridge:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._streams):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._streams.add(writer)
        hello = bridge_pb2.Hello(
            protocol_version="1",
            bridge_version="0.0.1",
            sdk_version="2.22.0",
            device_serial="BROKEN1",
            device_model="Broken",
        )
        try:
            await write_frame(writer, bridge_pb2.Frame(hello=hello))
            while (frame := await read_frame(reader)) is not None:
                if frame.WhichOneof("body") == "ping" and self.answers_ping:
                    pong = bridge_pb2.Pong(nonce=frame.ping.nonce)
                    await write_frame(writer, bridge_pb2.Frame(pong=pong))
                elif frame.WhichOneof("body") == "call":
                    call_id = frame.call.call_id + (1000 if self.wrong_call_id else 0)
                    info = {"return_code": "ERROR", "return_msg": "broken"}
                    callback = bridge_pb2.Callback(
                        call_id=call_id, kind=bridge_pb2.CALLBACK_KIND_RESULT, info=info
                    )
                    await write_frame(writer, bridge_pb2.Frame(callback=callback))
        except DeviceError:
            pass  # the oversized frame: drop the stream
        finally:
            self._streams.discard(writer)
            writer.close()


async def test_a_bridge_answering_the_wrong_call_id_fails_named_checks() -> None:
    async with BrokenBridge(wrong_call_id=True) as bridge:
        code, out, err = await bridge_check("--tcp", f"127.0.0.1:{bridge.port}")
    assert code == 1, out + err
    checks = marks(out)
    assert checks["hello"] == "✓"
    assert checks["ping"] == "✓"
    assert checks["ping during a face call"] == "✓"  # strays are not pongs' business
    assert checks["oversized frame"] == "✓"
    for name in ("call initWxpayface", "call ids", "unknown method", "closed stream"):
        assert checks[name] == "✗", out
    assert "instead: a RESULT callback for call id 1001, never sent" in out
    assert "bridge-check failed: call initWxpayface, call getWxpayfaceRawdata, call ids" in err


async def test_a_bridge_that_never_answers_ping_fails_the_ping_check() -> None:
    async with BrokenBridge(answers_ping=False) as bridge:
        code, out, err = await bridge_check(
            "--tcp", f"127.0.0.1:{bridge.port}", "--call-timeout", "0.5"
        )
    assert code == 1, out + err
    checks = marks(out)
    assert checks["hello"] == "✓"
    assert checks["ping"] == "✗"
    assert checks["call initWxpayface"] == "✓"  # its call ids are right
    assert checks["unknown method"] == "✗"  # a RESULT where a CallError belongs
    assert "no Pong echoing nonce" in out
    assert "was answered with a RESULT, not a CallError" in out
    assert "ping" in err.partition("bridge-check failed:")[2]


async def test_no_bridge_at_all_fails_hello_and_names_the_transport() -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    code, out, err = await bridge_check("--tcp", f"127.0.0.1:{port}")
    assert code == 1
    assert f"✗ hello: cannot open the bridge (tcp 127.0.0.1:{port})" in out
    assert "bridge-check failed: hello, remaining checks" in err


async def test_usage_error_for_a_bad_tcp_address() -> None:
    code, _out, err = await bridge_check("--tcp", "nohostport")
    assert code == 2
    assert "--tcp wants HOST:PORT" in err
