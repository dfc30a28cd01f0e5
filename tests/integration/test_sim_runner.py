"""`python -m facepayd.sim` on its own: the config it prints runs the real daemon, which pays."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
import tempfile
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd.clock import SystemClock
from facepayd.daemon import build_outside
from facepayd.ops import config as config_module
from facepayd.sim.__main__ import END_OF_CONFIG
from facepayd.sim.daemon_process import DaemonProcess, child_env
from facepayd.wxpay.models import Merchant
from facepayd.wxpay.v2 import WxPayV2Client

pytestmark = pytest.mark.adb

START_TIMEOUT = 60.0
SECRET_KEYS = (
    ("merchant", "api_key"),
    ("merchant", "cert_password"),
    ("payscore", "api_v3_key"),
    ("payscore", "private_key"),
)


@dataclass
class SimRunner:
    """The runner child process and what it printed."""

    process: asyncio.subprocess.Process
    stdout: str = ""
    stderr: list[str] = field(default_factory=list)
    announcement: str = ""  # the stderr line saying how to start the daemon

    @property
    def settings(self) -> dict[str, Any]:
        return tomllib.loads(self.stdout)

    def listening(self) -> list[tuple[str, int]]:
        """The simulators' TCP endpoints named by the config."""
        settings = self.settings
        wxpay = settings["wxpay"]["api_base_url"].removeprefix("https://")
        device = settings["device"]
        named = [wxpay, device.get("adb_server", ""), device.get("address", "")]
        named.append(device.get("tcp_address", ""))
        return [(host, int(port)) for host, _, port in (n.rpartition(":") for n in named if n)]


async def read_until(
    stream: asyncio.StreamReader, done: Callable[[str], bool], lines: list[str]
) -> None:
    """Collect lines from stream until done(line) holds."""
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError("the simulator runner closed its output early:\n" + "".join(lines))
        line = raw.decode()
        lines.append(line)
        if done(line):
            return


@asynccontextmanager
async def sim_runner(*args: str) -> AsyncIterator[SimRunner]:
    """`python -m facepayd.sim ARGS` until its config is printed; stopped with SIGTERM after."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "facepayd.sim",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    runner = SimRunner(process)
    assert process.stdout is not None
    assert process.stderr is not None
    out: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            await read_until(process.stdout, lambda line: line.strip() == END_OF_CONFIG, out)
            await read_until(
                process.stderr, lambda line: "facepayd --config" in line, runner.stderr
            )
        runner.stdout = "".join(out)
        runner.announcement = runner.stderr[-1]
        # Keep reading stderr so the child never blocks on a full pipe.
        drain = asyncio.ensure_future(read_until(process.stderr, lambda _: False, runner.stderr))
        yield runner
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)


async def stop(runner: SimRunner) -> None:
    """SIGTERM the runner; it exits 0 and leaves nothing listening."""
    endpoints = runner.listening()
    runner.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(runner.process.wait(), 30)
    assert code == 0, "".join(runner.stderr)
    for host, port in endpoints:
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect((host, port))


async def reverse_unknown_order(config_path: Path) -> tuple[bool, str]:
    """A reverse of a number never used, with the merchant credentials the config names."""
    config = config_module.load(config_path)
    outside = build_outside(config)
    client = WxPayV2Client(
        Merchant(appid=config.merchant.appid, mch_id=config.merchant.mch_id),
        outside.api_key,
        config.merchant.sign_type,
        api_base_url=config.wxpay.api_base_url,
        authinfo_url=config.wxpay.authinfo_url,
        http=outside.http.api,
        secapi_http=outside.http.secapi,
        clock=SystemClock(),
    )
    try:
        result = await client.reverse(out_trade_no="SIMRUN-NEVER")
    finally:
        await outside.http.aclose()
    return result.succeeded, result.err_code


async def test_the_printed_config_runs_the_daemon_and_a_face_payment_succeeds(
    tmp_path: Path,
) -> None:
    # Unix socket paths are limited to 108 bytes; tmp_path can be longer.
    folder = Path(tempfile.mkdtemp(prefix="fsim", dir="/tmp"))
    async with sim_runner("--dir", str(folder)) as runner:
        config_path = folder / "facepayd.toml"
        assert f"facepayd --config {config_path}" in runner.announcement
        assert config_path.read_text().strip() in runner.stdout
        settings = runner.settings
        for section, key in SECRET_KEYS:
            secret = Path(settings[section][key])
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
            assert secret.read_text().strip() not in runner.stdout
        # WeChat's timers: the config leaves every timer at the daemon's default.
        config = config_module.load(config_path)
        assert config.payments == config_module.PaymentsConfig()
        assert config.device.face_timeout == config_module.DeviceConfig().face_timeout
        assert config.wxpay.read_timeout == config_module.WxPayConfig().read_timeout
        assert config.device.transport == "adb"

        daemon = DaemonProcess.for_config(config_path, tmp_path / "daemon")
        try:
            await daemon.start()
            async with daemon.client() as client:
                events = [e async for e in client.start_face_pay("SIMRUN1", 1, "runner test")]
                payment = await client.get_payment("SIMRUN1")
            assert events[-1].state == pb.PAYMENT_STATE_SUCCEEDED, events
            assert events[-1].HasField("succeeded")
            assert payment.state == pb.PAYMENT_STATE_SUCCEEDED
        finally:
            code = await daemon.stop()
        assert code == 0, daemon.log()
        # The strict default: a reverse of an order WeChat Pay never saw is refused.
        assert await reverse_unknown_order(config_path) == (False, "TRADE_ERROR")
        await stop(runner)
    assert config_path.exists(), "a folder given with --dir is kept"


async def test_fast_timers_a_temporary_folder_and_a_kind_unknown_reverse_on_request() -> None:
    async with sim_runner("--fast", "--device", "tcp", "--unknown-reverse", "SUCCESS") as runner:
        config_path = Path(runner.announcement.split("facepayd --config ", 1)[1].split()[0])
        config = config_module.load(config_path)
        assert config.payments.poll_interval < config_module.PaymentsConfig().poll_interval
        assert config.payments.reverse_after < config_module.PaymentsConfig().reverse_after
        assert config.device.transport == "tcp"
        assert "removed when they stop" in runner.announcement
        assert await reverse_unknown_order(config_path) == (True, "")
        await stop(runner)
    assert not config_path.parent.exists(), "the temporary folder is removed"
    assert not os.path.exists(config_path)
