"""Prometheus metrics on a registry the daemon owns, written for node_exporter's textfile collector.

The domain never imports this module: the daemon feeds it from the listeners the domain offers
(journal events, session ends) and the bridge's observer hook. No label carries an order number,
a session id or anything a customer gave: only states, reasons and SDK method names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from facepayd.clock import Clock
from facepayd.face.sessions import EndReason, SessionEnd
from facepayd.ops.logs import get_logger
from facepayd.payments.models import FINAL_STATES, PaymentEvent, PaymentState
from facepayd.tasks import TaskOwner

__all__ = ["Metrics", "TextfileWriter"]

log = get_logger(__name__)

# A face UI call (getWxpayfaceCode) lasts as long as the customer takes, up to face_timeout.
_SDK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """Every facepayd metric; also the bridge's observer (sdk_call, round_trip)."""

    def __init__(self) -> None:
        # Not prometheus_client's global REGISTRY: several daemons (tests) in one process.
        self.registry = CollectorRegistry()
        r = self.registry
        self._payments = Counter(
            "facepayd_payments_final",
            "Payments that reached a final state, by state.",
            ["state"],
            registry=r,
        )
        self._needs_attention = Gauge(
            "facepayd_payments_needs_attention",
            "Payments now waiting for an operator (NEEDS_ATTENTION).",
            registry=r,
        )
        self._refunds_needs_attention = Gauge(
            "facepayd_refunds_needs_attention",
            "Refunds now waiting for an operator (NEEDS_ATTENTION).",
            registry=r,
        )
        self._sessions = Counter(
            "facepayd_face_sessions",
            "Face sessions that ended, by why their face UI closed.",
            ["reason"],
            registry=r,
        )
        self._sdk_calls = Histogram(
            "facepayd_sdk_call_seconds",
            "SDK calls over the bridge, from the Call frame to the RESULT callback.",
            ["method", "outcome"],
            buckets=_SDK_BUCKETS,
            registry=r,
        )
        self._rtt = Histogram(
            "facepayd_bridge_rtt_seconds",
            "Bridge heartbeat round trips (ping to pong).",
            buckets=_RTT_BUCKETS,
            registry=r,
        )
        self._authinfo = Counter(
            "facepayd_authinfo_refreshes",
            "authinfo fetches from WeChat Pay, by result (ok or error).",
            ["result"],
            registry=r,
        )
        self._journal = Gauge(
            "facepayd_journal_size_bytes",
            "Size of the journal's SQLite files (database, -wal and -shm).",
            registry=r,
        )
        self._reconnects = _SampledCounter(
            "facepayd_bridge_reconnects", "Bridge connections after the first."
        )
        r.register(self._reconnects)
        # Every label value known up front is exported at 0, so rate() sees the first one.
        for state in sorted(FINAL_STATES):
            self._payments.labels(state.value)
        for reason in EndReason:
            self._sessions.labels(reason.value)
        for result in ("ok", "error"):
            self._authinfo.labels(result)

    def payment_event(self, event: PaymentEvent) -> None:
        """Journal listener: count a payment entering a final state (once per state reached)."""
        if event.state in FINAL_STATES:
            self._payments.labels(event.state.value).inc()

    def session_ended(self, end: SessionEnd) -> None:
        """Session end listener: count it by reason."""
        self._sessions.labels(end.reason.value).inc()

    def sdk_call(self, method: str, seconds: float, outcome: str) -> None:
        """Bridge observer: one SDK call's latency."""
        self._sdk_calls.labels(method, outcome).observe(seconds)

    def round_trip(self, seconds: float) -> None:
        """Bridge observer: one heartbeat's round trip."""
        self._rtt.observe(seconds)

    def authinfo_refreshed(self, *, ok: bool) -> None:
        """Count one authinfo fetch."""
        self._authinfo.labels("ok" if ok else "error").inc()

    def sample(
        self,
        *,
        needs_attention: Callable[[], int],
        journal_size: Callable[[], int],
        reconnects: Callable[[], int],
        refunds_needs_attention: Callable[[], int] = lambda: 0,
    ) -> None:
        """Read these values at every render (they live in the domain already)."""
        self._needs_attention.set_function(needs_attention)
        self._refunds_needs_attention.set_function(refunds_needs_attention)
        self._journal.set_function(journal_size)
        self._reconnects.read = reconnects

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def payments_final(self, state: PaymentState) -> float:
        """How many payments reached state (tests, diagnostics)."""
        value = self.registry.get_sample_value(
            "facepayd_payments_final_total", {"state": state.value}
        )
        return value or 0.0


class TextfileWriter:
    """Rewrites the metrics file every interval on the injected clock, and once more at stop."""

    def __init__(self, metrics: Metrics, path: Path, *, interval: float, clock: Clock) -> None:
        self._metrics = metrics
        self._path = path
        self._interval = interval
        self._clock = clock
        self._tasks = TaskOwner("metrics")
        self._failing = False
        self._started = False

    def start(self) -> None:
        """Write now, then every interval, in a task this writer owns."""
        self._started = True
        self._tasks.spawn(self._loop(), name="metrics-textfile")

    async def stop(self) -> None:
        """Stop the timer and leave the final values in the file (only if it ever started)."""
        await self._tasks.close()
        if self._started:
            # A daemon that failed to start (a second instance) must not zero the live file.
            await self.write()

    async def write(self) -> None:
        """Render and replace the file atomically; a failure is logged, never raised."""
        data = self._metrics.render()
        try:
            await asyncio.to_thread(_replace_file, self._path, data)
        except OSError as exc:
            # Warn once, then quietly keep trying: a full or read-only disk must not flood logs.
            emit = log.debug if self._failing else log.warning
            emit("metrics_not_written", path=str(self._path), error=exc.strerror or str(exc))
            self._failing = True
            return
        if self._failing:
            log.info("metrics_written_again", path=str(self._path))
        self._failing = False

    async def _loop(self) -> None:
        while True:
            await self.write()
            await self._clock.sleep(self._interval)


class _SampledCounter(Collector):
    """A counter the domain keeps already (a plain int), read at every render."""

    def __init__(self, name: str, documentation: str) -> None:
        self._name = name
        self._documentation = documentation
        self.read: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One sample: the current value."""
        yield CounterMetricFamily(self._name, self._documentation, value=self.read())


def _replace_file(path: Path, data: bytes) -> None:
    # node_exporter reads only *.prom: the temporary name is skipped, and the rename is atomic,
    # so a scrape never sees half a file. No fsync: a snapshot lost at a power cut is rewritten
    # within one interval, and flash storage should not be synced every few seconds.
    # Unique per write: a cancelled write's thread may still be finishing its own file.
    tmp = path.with_name(
        f".{path.name}.{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}.tmp"
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            # Readable by node_exporter's user whatever the service's UMask (0007) made of it.
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
