"""The reconnector on a manual clock: capped backoff, one loop at a time, wake, warn once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from facepayd.clock import ManualClock
from facepayd.device.reconnect import Reconnector
from facepayd.errors import DeviceLost
from facepayd.ops.logs import configure_logging
from tests.helpers import settle, until


class FlakyPeer:
    """A connect function that fails ``failures`` times, recording when each attempt ran."""

    def __init__(self, clock: ManualClock, failures: int) -> None:
        self.clock = clock
        self.failures = failures
        self.attempts: list[float] = []
        self.connected_hooks = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: asyncio.Event | None = None

    async def connect(self) -> None:
        self.attempts.append(self.clock.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.failures > 0:
                self.failures -= 1
                raise DeviceLost("peripheral unreachable")
        finally:
            self.in_flight -= 1

    async def on_connected(self) -> None:
        self.connected_hooks += 1


def _reconnector(clock: ManualClock, peer: FlakyPeer, **kwargs: float) -> Reconnector:
    return Reconnector(connect=peer.connect, on_connected=peer.on_connected, clock=clock, **kwargs)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


async def test_backoff_doubles_up_to_the_cap_then_connects() -> None:
    clock = ManualClock()
    peer = FlakyPeer(clock, failures=5)
    rc = _reconnector(clock, peer, initial_backoff=1.0, max_backoff=4.0)
    rc.start()
    try:
        await until(lambda: clock.sleepers == 1)
        for _ in range(40):
            if rc.connected:
                break
            await clock.advance(0.5)
            await until(lambda: clock.sleepers == 1 or rc.connected)
        assert peer.attempts == [0.0, 1.0, 3.0, 7.0, 11.0, 15.0]
        assert rc.connected
        assert peer.connected_hooks == 1
        assert rc.failures == 0
    finally:
        await rc.stop()


async def test_no_attempt_before_the_backoff_expires() -> None:
    clock = ManualClock()
    peer = FlakyPeer(clock, failures=10)
    rc = _reconnector(clock, peer, initial_backoff=2.0, max_backoff=8.0)
    rc.start()
    try:
        await until(lambda: clock.sleepers == 1)
        await clock.advance(1.9)
        await settle()
        assert len(peer.attempts) == 1
        await clock.advance(0.1)
        await until(lambda: len(peer.attempts) == 2)
    finally:
        await rc.stop()


async def test_wake_retries_at_once_during_backoff() -> None:
    clock = ManualClock()
    peer = FlakyPeer(clock, failures=1)
    rc = _reconnector(clock, peer, initial_backoff=30.0, max_backoff=60.0)
    rc.start()
    try:
        await until(lambda: clock.sleepers == 1)
        rc.wake()
        await until(lambda: rc.connected)
        assert peer.attempts == [0.0, 0.0]  # the clock never moved
        assert peer.connected_hooks == 1
    finally:
        await rc.stop()


async def test_wake_after_success_starts_a_new_round() -> None:
    clock = ManualClock()
    peer = FlakyPeer(clock, failures=0)
    rc = _reconnector(clock, peer)
    rc.start()
    try:
        await until(lambda: rc.connected)
        await settle()
        assert len(peer.attempts) == 1  # idle until woken: no polling while connected
        peer.failures = 1
        rc.wake()  # the connection was lost
        assert not rc.connected
        await until(lambda: clock.sleepers == 1)
        await clock.advance(0.5)
        await until(lambda: rc.connected)
        assert len(peer.attempts) == 3
        assert peer.connected_hooks == 2
        assert rc.rounds == 2
    finally:
        await rc.stop()


async def test_only_one_attempt_runs_however_often_it_is_started_or_woken() -> None:
    clock = ManualClock()
    peer = FlakyPeer(clock, failures=0)
    peer.gate = asyncio.Event()
    rc = _reconnector(clock, peer)
    rc.start()
    try:
        await until(lambda: peer.in_flight == 1)
        for _ in range(5):
            rc.start()
            rc.wake()
        await settle()
        assert peer.max_in_flight == 1
        peer.gate.set()
        await until(lambda: rc.connected or len(peer.attempts) > 1)
        await settle()
        assert peer.max_in_flight == 1
    finally:
        await rc.stop()


async def test_failing_on_connected_hook_counts_as_a_failed_attempt() -> None:
    clock = ManualClock()
    peer = FlakyPeer(clock, failures=0)
    hook_failures = [1]

    async def on_connected() -> None:
        if hook_failures[0]:
            hook_failures[0] -= 1
            raise DeviceLost("init failed")
        peer.connected_hooks += 1

    rc = Reconnector(connect=peer.connect, on_connected=on_connected, clock=clock)
    rc.start()
    try:
        await until(lambda: clock.sleepers == 1)
        assert not rc.connected
        await clock.advance(0.5)
        await until(lambda: rc.connected)
        assert len(peer.attempts) == 2
        assert peer.connected_hooks == 1
    finally:
        await rc.stop()


async def test_stop_cancels_an_attempt_in_progress() -> None:
    clock = ManualClock()
    peer = FlakyPeer(clock, failures=0)
    peer.gate = asyncio.Event()
    rc = _reconnector(clock, peer)
    rc.start()
    await until(lambda: peer.in_flight == 1)
    await rc.stop()
    assert not rc.running
    assert peer.in_flight == 0
    assert peer.connected_hooks == 0


async def test_warns_once_per_outage_then_logs_debug() -> None:
    out = io.StringIO()
    configure_logging(json=True, level="debug", stream=out)
    clock = ManualClock()
    peer = FlakyPeer(clock, failures=4)
    rc = _reconnector(clock, peer, initial_backoff=1.0, max_backoff=1.0)
    rc.start()
    try:
        for _ in range(4):
            await until(lambda: clock.sleepers == 1)
            await clock.advance(1.0)
        await until(lambda: rc.connected)
        peer.failures = 1
        rc.wake()
        await until(lambda: clock.sleepers == 1)
    finally:
        await rc.stop()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    failed = [(e["level"], e.get("attempt")) for e in events if e["event"] == "reconnect_failed"]
    # First outage: one warning, then debug; second outage warns again.
    assert failed == [
        ("warning", None),
        ("debug", 2),
        ("debug", 3),
        ("debug", 4),
        ("warning", None),
    ]
    assert any(e["event"] == "reconnected" and e["level"] == "info" for e in events)


def test_bad_backoff_settings_are_refused() -> None:
    clock = ManualClock()
    peer = FlakyPeer(clock, failures=0)
    with pytest.raises(ValueError):
        _reconnector(clock, peer, initial_backoff=0.0)
    with pytest.raises(ValueError):
        _reconnector(clock, peer, initial_backoff=5.0, max_backoff=1.0)


async def test_stop_returns_even_when_a_connect_swallows_its_cancel() -> None:
    # asyncio.wait_for(shield(...)) in 3.11 can return a result that lands together with the
    # cancel: the attempt then "succeeds" after stop() asked it to end.
    clock = ManualClock()
    started = asyncio.Event()

    async def stubborn_connect() -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()

    async def on_connected() -> None:
        pass

    reconnector = Reconnector(connect=stubborn_connect, on_connected=on_connected, clock=clock)
    reconnector.start()
    await until(started.is_set, 5, "the attempt under way")
    stopping = asyncio.ensure_future(reconnector.stop())
    # A deadline, not a wait: stop() must end; asyncio.wait leaves it uncancelled to look at.
    done, _ = await asyncio.wait({stopping}, timeout=5)
    stopping.cancel()
    assert stopping in done, "stop() hung on a round that ignored its cancel"
    assert not reconnector.running
