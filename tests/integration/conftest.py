"""Fixtures: simulators in the test process, the daemon as a real child process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from facepayd.sim.daemon_process import DaemonProcess
from facepayd.sim.stack import SimOptions, SimStack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[SimStack]:
    """Simulated WeChat Pay and terminal, fast timings."""
    sims = SimStack(tmp_path / "sim")
    await sims.start()
    try:
        yield sims
    finally:
        await sims.stop()


StackFactory = Callable[..., Awaitable[SimStack]]


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    """Simulators with chosen options."""
    started: list[SimStack] = []

    async def make(**options: Any) -> SimStack:
        sims = SimStack(tmp_path / f"sim{len(started)}", SimOptions(**options))
        await sims.start()
        started.append(sims)
        return sims

    yield make
    for sims in started:
        await sims.stop()


DaemonFactory = Callable[..., Awaitable[DaemonProcess]]


@pytest.fixture
async def make_daemon(tmp_path: Path) -> AsyncIterator[DaemonFactory]:
    """Start daemons against a stack; every one is stopped (or killed) afterwards."""
    started: list[DaemonProcess] = []

    async def make(
        sims: SimStack, *, name: str = "d", wait_serving: bool = True, **sections: Any
    ) -> DaemonProcess:
        daemon = DaemonProcess(sims, tmp_path / name, **sections)
        started.append(daemon)
        await daemon.start(wait_serving=wait_serving)
        return daemon

    yield make
    for daemon in started:
        await daemon.kill()
