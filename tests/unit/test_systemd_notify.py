"""sd_notify over a real AF_UNIX datagram socket, and the watchdog loop on a manual clock."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from facepayd.clock import ManualClock
from facepayd.ops.systemd import Notifier, watchdog_loop

_RECV_DEADLINE = 5.0


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    # tmp_path can exceed the 108-byte sun_path limit; a short directory under /tmp cannot.
    with tempfile.TemporaryDirectory(prefix="sdn") as directory:
        path = str(Path(directory) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(_RECV_DEADLINE)
        try:
            yield sock, path
        finally:
            sock.close()


def _pending(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return False
    finally:
        sock.settimeout(_RECV_DEADLINE)
    return True


def test_path_socket_receives_each_message(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    try:
        assert notifier.enabled
        assert notifier.ready(status="recovered 2 payments")
        assert sock.recv(4096) == b"READY=1\nSTATUS=recovered 2 payments"
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.status("device lost\nreconnecting")
        assert sock.recv(4096) == b"STATUS=device lost reconnecting"
        assert notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        notifier.close()


def test_abstract_socket() -> None:
    name = "facepayd-test-" + secrets.token_hex(6)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(_RECV_DEADLINE)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        try:
            assert notifier.ready()
            assert sock.recv(4096) == b"READY=1"
        finally:
            notifier.close()


def test_no_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert notifier.watchdog_interval() is None


def test_vanished_socket_is_reported_not_raised() -> None:
    with tempfile.TemporaryDirectory(prefix="sdn") as directory:
        notifier = Notifier({"NOTIFY_SOCKET": str(Path(directory) / "gone")})
        assert not notifier.ready()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "4242"}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert Notifier(environ, pid=4242).watchdog_interval() == expected


def test_watchdog_interval_defaults_to_this_process() -> None:
    environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(environ).watchdog_interval() == 2.0


async def test_watchdog_loop_pings_at_half_interval(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    clock = ManualClock()
    healthy = True
    task = asyncio.create_task(watchdog_loop(notifier, clock, lambda: healthy))
    try:
        await _until(lambda: clock.sleepers == 1)
        assert sock.recv(4096) == b"WATCHDOG=1"  # the first ping goes out at once
        await clock.advance(4.9)
        assert not _pending(sock)
        await clock.advance(0.1)
        assert sock.recv(4096) == b"WATCHDOG=1"

        healthy = False
        await clock.advance(5.0)
        await clock.advance(5.0)
        assert not _pending(sock)

        healthy = True
        await clock.advance(5.0)
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


async def test_watchdog_loop_returns_without_a_watchdog() -> None:
    await watchdog_loop(Notifier({"NOTIFY_SOCKET": "/nonexistent"}), ManualClock(), lambda: True)


async def _until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0)
