"""Metrics: what is counted, the daemon's own registry, the textfile writer, the bridge hook."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from facepayd.clock import ManualClock
from facepayd.device.bridge import BridgeClient
from facepayd.device.tcp import TcpTransport
from facepayd.errors import ConfigError, DeviceError, DeviceTimeout
from facepayd.face.sessions import EndReason, SessionEnd
from facepayd.ops import config
from facepayd.ops.metrics import Metrics, TextfileWriter
from facepayd.payments.models import EventKind, PaymentEvent, PaymentState
from facepayd.sim.terminal import SimLatencies, SimTerminal
from tests.helpers import settle, until
from tests.unit.test_config import with_identity

S = PaymentState


def event(state: PaymentState, kind: EventKind, seq: int = 1, out: str = "O1") -> PaymentEvent:
    """A journal event as the payment store hands it to listeners."""
    return PaymentEvent(out, seq, 1_700_000_000.0, state, kind)


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every rendered sample by name and labels (parsed back from the exposition text)."""
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def get(metrics: Metrics, name: str, **labels: str) -> float:
    """One rendered sample, which must exist."""
    return samples(metrics)[(name, frozenset(labels.items()))]


# ---------------------------------------------------------------------------- what is counted


def test_each_final_state_reached_is_counted_and_steps_between_are_not() -> None:
    metrics = Metrics()
    for e in (
        event(S.CAPTURING, EventKind.SESSION_STARTED, 1),
        event(S.PAYING, EventKind.FACE_CAPTURED, 2),
        event(S.PENDING, EventKind.PENDING, 3),
        event(S.SUCCEEDED, EventKind.SUCCEEDED, 4),
        # A manual reverse of the paid order: it reaches a second final state.
        event(S.REVERSING, EventKind.PENDING, 5),
        event(S.REVERSED, EventKind.REVERSED, 6),
        event(S.NEEDS_ATTENTION, EventKind.NEEDS_ATTENTION, 1, "O2"),
    ):
        metrics.payment_event(e)
    assert get(metrics, "facepayd_payments_final_total", state="SUCCEEDED") == 1
    assert get(metrics, "facepayd_payments_final_total", state="REVERSED") == 1
    assert get(metrics, "facepayd_payments_final_total", state="FAILED") == 0
    assert metrics.payments_final(S.SUCCEEDED) == 1
    states = {
        dict(labels)["state"]
        for name, labels in samples(metrics)
        if name == "facepayd_payments_final_total"
    }
    assert states == {s.value for s in S.final_states()}  # never CAPTURING, PENDING, ...


def test_every_known_label_is_exported_at_zero_before_it_happens() -> None:
    metrics = Metrics()
    for reason in EndReason:
        assert get(metrics, "facepayd_face_sessions_total", reason=reason.value) == 0
    for state in S.final_states():
        assert get(metrics, "facepayd_payments_final_total", state=state.value) == 0
    assert get(metrics, "facepayd_authinfo_refreshes_total", result="ok") == 0
    assert get(metrics, "facepayd_authinfo_refreshes_total", result="error") == 0
    assert get(metrics, "facepayd_bridge_reconnects_total") == 0


def test_sessions_authinfo_and_latencies() -> None:
    metrics = Metrics()
    metrics.session_ended(SessionEnd("fs_1", EndReason.RESULT_SHOWN))
    metrics.session_ended(SessionEnd("fs_2", EndReason.RESULT_SHOWN))
    metrics.session_ended(SessionEnd("fs_3", EndReason.QUIT, "POS_CANCEL"))
    metrics.authinfo_refreshed(ok=True)
    metrics.authinfo_refreshed(ok=False)
    metrics.sdk_call("initWxpayface", 0.25, "answered")
    metrics.sdk_call("initWxpayface", 10.0, "timeout")
    metrics.round_trip(0.002)
    assert get(metrics, "facepayd_face_sessions_total", reason="RESULT_SHOWN") == 2
    assert get(metrics, "facepayd_face_sessions_total", reason="QUIT") == 1
    assert get(metrics, "facepayd_authinfo_refreshes_total", result="ok") == 1
    assert get(metrics, "facepayd_authinfo_refreshes_total", result="error") == 1
    answered = {"method": "initWxpayface", "outcome": "answered"}
    assert get(metrics, "facepayd_sdk_call_seconds_count", **answered) == 1
    assert get(metrics, "facepayd_sdk_call_seconds_sum", **answered) == 0.25
    assert get(metrics, "facepayd_sdk_call_seconds_bucket", **answered, le="0.25") == 1
    assert get(metrics, "facepayd_sdk_call_seconds_bucket", **answered, le="0.1") == 0
    assert (
        get(metrics, "facepayd_sdk_call_seconds_count", method="initWxpayface", outcome="timeout")
        == 1
    )
    assert get(metrics, "facepayd_bridge_rtt_seconds_count") == 1


def test_sampled_values_are_read_at_each_render() -> None:
    metrics = Metrics()
    values = {"attention": 0, "journal": 0, "reconnects": 0}
    metrics.sample(
        needs_attention=lambda: values["attention"],
        journal_size=lambda: values["journal"],
        reconnects=lambda: values["reconnects"],
    )
    assert get(metrics, "facepayd_payments_needs_attention") == 0
    values.update(attention=2, journal=4096, reconnects=3)
    assert get(metrics, "facepayd_payments_needs_attention") == 2
    assert get(metrics, "facepayd_journal_size_bytes") == 4096
    assert get(metrics, "facepayd_bridge_reconnects_total") == 3


def test_two_daemons_in_one_process_keep_separate_registries() -> None:
    first, second = Metrics(), Metrics()  # the global REGISTRY would refuse the second
    first.authinfo_refreshed(ok=True)
    assert get(first, "facepayd_authinfo_refreshes_total", result="ok") == 1
    assert get(second, "facepayd_authinfo_refreshes_total", result="ok") == 0


# ---------------------------------------------------------------------------- the textfile


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_textfile_is_written_at_start_every_interval_and_at_stop(
    clock: ManualClock, tmp_path: Path
) -> None:
    metrics = Metrics()
    path = tmp_path / "facepayd.prom"
    writer = TextfileWriter(metrics, path, interval=15.0, clock=clock)
    writer.start()
    await until(path.exists, what="the first write")
    assert "facepayd_authinfo_refreshes_total" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

    metrics.authinfo_refreshed(ok=True)
    await clock.advance(14.0)
    await settle()
    assert 'facepayd_authinfo_refreshes_total{result="ok"} 0.0' in path.read_text()
    await clock.advance(1.0)
    await until(
        lambda: 'facepayd_authinfo_refreshes_total{result="ok"} 1.0' in path.read_text(),
        what="the write after one interval",
    )

    metrics.authinfo_refreshed(ok=True)
    await writer.stop()
    assert 'facepayd_authinfo_refreshes_total{result="ok"} 2.0' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["facepayd.prom"]  # no temporary file left
    assert clock.sleepers == 0  # the timer task ended


async def test_unwritable_textfile_warns_once_and_recovers(
    clock: ManualClock, tmp_path: Path
) -> None:
    directory = tmp_path / "missing"
    path = directory / "facepayd.prom"
    writer = TextfileWriter(Metrics(), path, interval=1.0, clock=clock)
    with capture_logs() as logs:
        await writer.write()
        await writer.write()
        directory.mkdir()
        await writer.write()
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [
        ("metrics_not_written", "warning"),
        ("metrics_not_written", "debug"),
        ("metrics_written_again", "info"),
    ]
    assert path.exists()


# ---------------------------------------------------------------------------- the bridge hook


class Recorder:
    """A BridgeObserver that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.seconds: list[float] = []
        self.round_trips: list[float] = []

    def sdk_call(self, method: str, seconds: float, outcome: str) -> None:
        self.calls.append((method, outcome))
        self.seconds.append(seconds)

    def round_trip(self, seconds: float) -> None:
        self.round_trips.append(seconds)


@pytest.fixture
async def observed(clock: ManualClock) -> AsyncIterator[tuple[BridgeClient, Recorder]]:
    """A bridge client with a recorder, against a simulated terminal whose init never answers."""
    # The terminal's own clock never moves: an init (0.2 s of it) waits forever.
    sim = SimTerminal(clock=ManualClock(), latencies=SimLatencies(rawdata=0.0))
    port = await sim.serve_tcp()
    recorder = Recorder()
    client = BridgeClient(
        TcpTransport("127.0.0.1", port),
        clock,
        heartbeat_interval=1.0,
        heartbeat_timeout=5.0,
        observer=recorder,
    )
    await client.connect()
    try:
        yield client, recorder
    finally:
        await client.close()
        await sim.stop()


async def test_bridge_observer_sees_each_call_with_its_outcome(
    observed: tuple[BridgeClient, Recorder], clock: ManualClock
) -> None:
    client, recorder = observed
    await client.call("getWxpayfaceRawdata", {}, timeout=5.0)
    with pytest.raises(DeviceError) as refused:
        await client.call("noSuchMethod", {}, timeout=5.0)
    assert not isinstance(refused.value, DeviceTimeout)
    init = asyncio.ensure_future(client.call("initWxpayface", {}, timeout=5.0))
    await until(lambda: clock.sleepers >= 2, what="the init waiting on its deadline")
    await clock.advance(5.0)
    with pytest.raises(DeviceTimeout):
        await init
    assert recorder.calls == [
        ("getWxpayfaceRawdata", "answered"),
        ("noSuchMethod", "refused"),
        ("initWxpayface", "timeout"),
    ]
    # Real time, not the manual clock's: positive even though that clock jumped by 5 s at once.
    assert all(0 < s < 5.0 for s in recorder.seconds)


async def test_bridge_observer_sees_heartbeat_round_trips(
    observed: tuple[BridgeClient, Recorder], clock: ManualClock
) -> None:
    _, recorder = observed
    assert recorder.round_trips == []
    await clock.advance(1.0)
    await until(lambda: len(recorder.round_trips) == 1, what="the first pong")
    assert 0 < recorder.round_trips[0] < 5.0


# ---------------------------------------------------------------------------- config


def test_metrics_are_off_by_default() -> None:
    loaded = config.from_mapping(with_identity())
    assert not loaded.metrics.enabled
    assert loaded.metrics.interval > 0


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"textfile": "facepayd.prom"}, "metrics.textfile"),
        ({"textfile": "/var/lib/prometheus/node-exporter/facepayd.txt"}, "metrics.textfile"),
        ({"textfile": "/tmp/facepayd.prom", "interval": 0}, "metrics.interval"),
        ({"port": 9464}, "unknown key"),
    ],
)
def test_bad_metrics_config_is_refused(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.from_mapping(with_identity(metrics=section))


def test_metrics_config_is_typed() -> None:
    loaded = config.from_mapping(
        with_identity(
            metrics={"textfile": "/var/lib/prometheus/node-exporter/facepayd.prom", "interval": 5}
        )
    )
    assert loaded.metrics.enabled
    assert loaded.metrics.interval == 5.0


async def test_a_writer_that_never_started_leaves_the_live_file_alone(
    tmp_path: Path, clock: ManualClock
) -> None:
    # A second facepayd that fails to start must not zero the running one's file on its way out.
    path = tmp_path / "facepayd.prom"
    path.write_text('facepayd_payments_final_total{state="SUCCEEDED"} 42.0\n')
    writer = TextfileWriter(Metrics(), path, interval=15.0, clock=clock)
    await writer.stop()
    assert "42.0" in path.read_text()
