"""facepayd as systemd runs it: notify protocol, SIGTERM, the instance lock, config errors."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

from facepayd.sim.daemon_process import run_to_exit
from facepayd.sim.stack import SimStack
from tests.integration.conftest import DaemonFactory


async def receive_until(sock: socket.socket, wanted: str, timeout: float = 30.0) -> list[str]:
    """Datagrams from the daemon until one contains wanted."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    while not any(wanted in message for message in seen):
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
        seen.append(data.decode())
    return seen


async def test_notify_ready_watchdog_and_stopping(
    stack: SimStack, make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fpnotify-{os.getpid()}-{id(tmp_path)}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    try:
        daemon = await make_daemon(stack, wait_serving=False)
        await daemon.stop()  # a first run without systemd, to reuse the same workdir below
        daemon.extra_env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
        await daemon.start(wait_serving=False)
        messages = await receive_until(sock, "READY=1")
        await daemon.wait_serving()
        messages += await receive_until(sock, "WATCHDOG=1")
        code = await daemon.stop()
        messages += await receive_until(sock, "STOPPING=1")
    finally:
        sock.close()
        path.unlink(missing_ok=True)
    assert code == 0
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
    stopping = next(i for i, m in enumerate(messages) if "STOPPING=1" in m)
    assert ready < stopping


async def test_socket_is_0660_and_a_second_instance_is_refused(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    mode = stat.S_IMODE(daemon.socket.stat().st_mode)
    assert mode & 0o117 == 0, oct(mode)  # at most 0660
    second = await run_to_exit(daemon.config_path)
    assert second.returncode == 2
    assert "another facepayd is running" in second.stderr
    async with daemon.client() as client:
        await client.get_status()  # the first one still owns its socket


async def test_a_readable_secret_file_is_refused(stack: SimStack, tmp_path: Path) -> None:
    key = stack.directory / "api_key"
    key.chmod(0o644)
    config = stack.write_daemon_config(
        tmp_path / "f.toml", socket=tmp_path / "s.sock", state_dir=tmp_path / "st"
    )
    exited = await run_to_exit(config)
    assert exited.returncode == 2
    (line,) = exited.stderr.splitlines()
    assert line.startswith("facepayd: merchant.api_key: ")
    assert str(key) in line
    assert stack.api_key not in exited.stdout + exited.stderr


async def test_unknown_config_key_is_refused_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[device]\ntransport = "adb"\nbogus_key = 1\n')
    exited = await run_to_exit(config)
    assert exited.returncode == 2
    assert exited.stderr == "facepayd: device: unknown key(s): bogus_key\n"
