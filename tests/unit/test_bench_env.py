"""The bench's daemon imports as a production install: only dev-only modules are made absent."""

from __future__ import annotations

import importlib.util

import pytest

from tests.bench.run import dev_only_modules, production_env, runtime_distributions


def test_runtime_closure_has_the_daemons_dependencies_and_no_dev_tools() -> None:
    runtime = runtime_distributions()
    assert {"grpcio", "httpx", "structlog", "adbutils", "protobuf", "cryptography"} <= runtime
    assert not {"pytest", "rich", "click", "pygments", "hypothesis", "mypy"} & runtime


def test_absent_modules_are_dev_only_and_never_what_the_daemon_imports() -> None:
    absent = set(dev_only_modules())
    for needed in ("grpc", "httpx", "structlog", "adbutils", "google", "cryptography", "facepayd"):
        assert needed not in absent
    for dev in ("pytest", "rich", "click", "pygments"):
        if importlib.util.find_spec(dev) is None:
            pytest.skip(f"{dev} is not installed here")
        assert dev in absent
    assert production_env()["FACEPAY_BENCH_ABSENT"].split(",") == sorted(absent)
