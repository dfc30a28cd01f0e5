"""Benchmarks: run by `make bench`, not by `make test` (bench_load has a smoke test there)."""
