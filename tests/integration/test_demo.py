"""`make demo`, the README's first command, runs to its end in `make test` too."""

from __future__ import annotations

import subprocess
import sys


def test_the_demo_holds_every_step() -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "facepayd.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    assert demo.stdout.rstrip().endswith("demo finished: every step held"), demo.stdout[-2000:]
    # Every section the README promises shows up.
    for step in ("refund:", "chooses to scan", "expired payment code", "PayScore"):
        assert step in demo.stdout, step
