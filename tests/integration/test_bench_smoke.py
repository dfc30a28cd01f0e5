"""The load benchmark's entry point, tiny: it completes, and no call ends in a status error."""

from __future__ import annotations

from pathlib import Path

from tests.bench.bench_load import LoadOptions, format_report, run_load


async def test_load_benchmark_runs_with_no_status_errors(tmp_path: Path) -> None:
    """8 clients (two racing face sessions) for 1 s against the real daemon."""
    report = await run_load(LoadOptions(clients=8, seconds=1.0, idle_calls=100), tmp_path)
    text = format_report(report)
    assert report.status_errors == 0, text
    assert "status errors: 0" in text
    assert "p99 ratio loaded/idle" in text
    # Every role made calls; the probe measured both phases.
    assert all(counts.ok > 0 for counts in report.rpcs.values()), text
    assert len(report.idle_before) == len(report.idle_after) == 100
    assert report.loaded, text
    # Payments went through, and what the racers saw succeed is what the journal lists.
    assert report.succeeded >= 1, text
    assert report.journal_succeeded == report.succeeded, text
    assert sum(report.payments.values()) == report.rpcs["StartFacePay"].ok, text
