"""Metrics after a real run: the daemon process writes node_exporter's textfile; we parse it."""

from __future__ import annotations

import stat
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import TerminalClient
from facepayd.sim.stack import SimStack
from tests.helpers import until
from tests.integration.conftest import DaemonFactory

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def read_samples(path: Path) -> Samples:
    """Every sample of the file, keyed by name and labels; empty while it does not exist."""
    if not path.exists():
        return {}
    samples: Samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; the sample must exist."""
    return samples[(name, frozenset(labels.items()))]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of name's samples whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def pay(client: TerminalClient, out_trade_no: str, amount: int) -> str:
    """One face payment to the end of its stream; the session end reason the POS was told."""
    reason = ""
    async for response in client.start_face_pay_stream(out_trade_no, amount, "goods"):
        if response.HasField("session_ended"):
            reason = response.session_ended.reason
    return reason


async def capture(client: TerminalClient, out_trade_no: str) -> str:
    """One capture-only session to its end; the session end reason."""
    reason = ""
    async for event in client.capture_face_code(out_trade_no, 100, face=pb.FaceOptions()):
        if event.HasField("session_ended"):
            reason = event.session_ended.reason
    return reason


async def test_textfile_shows_payments_sessions_latencies_authinfo_and_journal(
    stack: SimStack, make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    textfile = tmp_path / "textfile" / "facepayd.prom"
    textfile.parent.mkdir()
    daemon = await make_daemon(stack, metrics={"textfile": str(textfile), "interval": 0.2})
    async with daemon.client() as client:
        reasons = [
            await pay(client, "MET1", 100),  # SUCCEEDED
            await pay(client, "MET2", 301),  # NOTENOUGH: FAILED
            await capture(client, "MET3"),
        ]
        payments = {p.out_trade_no: p.state for p in (await client.list_payments()).payments}
    assert payments == {"MET1": pb.PAYMENT_STATE_SUCCEEDED, "MET2": pb.PAYMENT_STATE_FAILED}
    assert all(reasons), reasons

    def written() -> bool:
        samples = read_samples(textfile)
        return (
            total(samples, "facepayd_payments_final_total") == 2
            and total(samples, "facepayd_face_sessions_total") == 3
            and total(samples, "facepayd_bridge_rtt_seconds_count") > 0
        )

    # The timer, not the stop, writes these: the daemon is still running.
    await until(written, timeout=20, what="the metrics file to show the run")
    samples = read_samples(textfile)
    assert value(samples, "facepayd_payments_final_total", state="SUCCEEDED") == 1
    assert value(samples, "facepayd_payments_final_total", state="FAILED") == 1
    assert value(samples, "facepayd_payments_final_total", state="REVERSED") == 0
    assert value(samples, "facepayd_payments_needs_attention") == 0
    # Sessions counted by the very reasons the POS was told in SessionEnded.
    for reason in set(reasons):
        assert value(samples, "facepayd_face_sessions_total", reason=reason) == reasons.count(
            reason
        )
    assert (
        value(
            samples,
            "facepayd_sdk_call_seconds_count",
            method="getWxpayfaceCode",
            outcome="answered",
        )
        == 3
    )
    assert (
        value(
            samples, "facepayd_sdk_call_seconds_count", method="initWxpayface", outcome="answered"
        )
        >= 1
    )
    assert total(samples, "facepayd_sdk_call_seconds_sum") > 0
    assert value(samples, "facepayd_authinfo_refreshes_total", result="ok") >= 1
    assert value(samples, "facepayd_journal_size_bytes") > 0
    assert value(samples, "facepayd_bridge_reconnects_total") == 0
    # Readable by node_exporter's user despite the unit's UMask, and no temporary file left.
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert [p.name for p in textfile.parent.iterdir()] == ["facepayd.prom"]

    assert await daemon.stop() == 0
    after = read_samples(textfile)
    assert value(after, "facepayd_payments_final_total", state="SUCCEEDED") == 1
    assert total(after, "facepayd_face_sessions_total") == 3
