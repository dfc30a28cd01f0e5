"""The benchmarks' entry points, tiny: they complete, the table has its shape, no status errors."""

from __future__ import annotations

from pathlib import Path

from tests.bench.bench_load import LoadOptions, format_report, run_load
from tests.bench.run import HEADER, BenchOptions, format_table, run


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


async def test_make_bench_prints_every_figure_in_one_table(tmp_path: Path) -> None:
    """`make bench`'s runner, tiny: every row, A and B from the same rounds; never timings."""
    rows = await run(BenchOptions.tiny(), tmp_path, log=lambda _what: None)
    assert [row.figure for row in rows] == [
        "P1", "P1", "P1", "P2", "P3", "P3", "P4", "P5", "P5", "P7", "P6", "RTT"
    ]  # fmt: skip
    for row in rows:
        assert row.a, row
        assert len(row.a) == len(row.b), row
        assert all(value > 0 for value in row.a + row.b), row
        assert len(row.ratios) == len(row.a), row
    table = format_table(rows).splitlines()
    assert table[0].startswith("| figure |")
    assert "| met |" in table[0]
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == len(HEADER) + 1 for line in table[2:]), table
    assert all(line.rstrip(" |").split("| ")[-1].split()[0] in ("yes", "no") for line in table[2:])
