"""Reconnection as its own object: one loop, capped exponential backoff, warn once then debug."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from facepayd.clock import Clock
from facepayd.ops.logs import get_logger

__all__ = ["Reconnector"]

log = get_logger(__name__)


class Reconnector:
    """Calls ``connect`` until it succeeds, then ``on_connected``; wake() starts a new round."""

    # No jitter: there is one peripheral per daemon, so there is no herd to spread out, and
    # fixed delays keep the schedule testable on a manual clock.

    def __init__(
        self,
        *,
        connect: Callable[[], Awaitable[object]],
        on_connected: Callable[[], Awaitable[None]],
        clock: Clock,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        factor: float = 2.0,
        name: str = "bridge",
    ) -> None:
        if initial_backoff <= 0 or max_backoff < initial_backoff or factor < 1:
            raise ValueError("backoff needs 0 < initial_backoff <= max_backoff and factor >= 1")
        self._connect = connect
        self._on_connected = on_connected
        self._clock = clock
        self._initial = initial_backoff
        self._max = max_backoff
        self._factor = factor
        self._name = name
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        # Set by stop(): the loop ends on it even if the cancel is swallowed by a connect.
        self._stopped = False
        self.failures = 0  # consecutive failed attempts of the current round
        self.rounds = 0  # completed rounds (successful connects)

    @property
    def running(self) -> bool:
        """True while the loop task is alive (connecting, backing off or idle until woken)."""
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        """True between a successful round and the next wake()."""
        return self._connected

    def start(self) -> None:
        """Start the loop; its first round begins at once. A second start() is a no-op."""
        if self.running:
            return
        self._stopped = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"reconnect-{self._name}"
        )

    def wake(self) -> None:
        """Connection lost or retry wanted: start a round now, or cut the current backoff short."""
        self._connected = False
        self._wake.set()

    async def stop(self) -> None:
        """Stop the loop and wait for it; an attempt in progress is cancelled."""
        self._stopped = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # ------------------------------------------------------------------ private

    async def _run(self) -> None:
        while not self._stopped:
            async with self._lock:
                await self._round()
            if not self._stopped:
                await self._wake.wait()

    async def _round(self) -> None:
        delay = self._initial
        warned = False
        self.failures = 0
        while not self._stopped:
            # A wake() that came before this attempt is answered by it.
            self._wake.clear()
            try:
                await self._connect()
                await self._on_connected()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means "try again later"
                self.failures += 1
                if not warned:
                    log.warning(
                        "reconnect_failed",
                        target=self._name,
                        error=type(exc).__name__,
                        reason=str(exc),
                        retry_in=delay,
                    )
                    warned = True
                else:
                    log.debug(
                        "reconnect_failed",
                        target=self._name,
                        attempt=self.failures,
                        error=type(exc).__name__,
                        reason=str(exc),
                        retry_in=delay,
                    )
                await self._backoff(delay)
                delay = min(delay * self._factor, self._max)
                continue
            self._connected = True
            self.rounds += 1
            if self.failures:
                log.info("reconnected", target=self._name, failed_attempts=self.failures)
            else:
                log.debug("connected", target=self._name)
            self.failures = 0
            return

    async def _backoff(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            woken.cancel()
