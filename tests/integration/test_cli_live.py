"""The `facepay` command as people run it: a child process against the real daemon and simulators.

The simulated WeChat Pay keeps amount 101 in USERPAYING for userpaying_seconds while the daemon
queries it every poll_interval. The Ctrl-C test holds it there until it has pressed Ctrl-C and
checked the message, then confirms the payment (confirm_now): no race with the machine's load.
The progress lines through a 40 s USERPAYING are tested in simulated time
(tests/unit/test_cli_progress.py).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence

import pytest

import facepayd
from facepayd.sim.daemon_process import DaemonProcess, child_env
from facepayd.sim.stack import SimStack
from tests.integration.conftest import DaemonFactory, StackFactory

_USERPAYING_SECONDS = 3.0
# The Ctrl-C test's payment waits for the test to confirm it, however loaded the machine is.
_HELD_SECONDS = 600.0
# Long enough that the daemon never gives up on the payer within these tests.
_PAYMENTS = {"poll_interval": 0.5, "give_up_after": 30.0}
_DEADLINE = 60.0


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "facepay_client.cli", *argv]


async def _run(argv: Sequence[str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env()
    )
    out, err = await asyncio.wait_for(process.communicate(), _DEADLINE)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _userpaying_daemon(
    make_stack: StackFactory, make_daemon: DaemonFactory, seconds: float = _USERPAYING_SECONDS
) -> tuple[SimStack, DaemonProcess]:
    sims = await make_stack(userpaying_seconds=seconds)
    return sims, await make_daemon(sims, payments=_PAYMENTS)


async def test_ctrl_c_during_pay_prints_how_to_follow_the_payment(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    sims, daemon = await _userpaying_daemon(make_stack, make_daemon, _HELD_SECONDS)
    process = await asyncio.create_subprocess_exec(
        *_cli("--socket", str(daemon.socket), "pay", "--amount", "101", "--body", "goods"),
        "--out-trade-no",
        "LIVE2",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        # As a terminal's foreground job has it: a test run started in the background (`make
        # test &`) inherits SIGINT ignored, and the CLI would rightly keep ignoring it.
        preexec_fn=_default_sigint,
    )
    assert process.stdout is not None
    seen: list[str] = []
    while not any(" PENDING " in line for line in seen):
        line = await asyncio.wait_for(process.stdout.readline(), _DEADLINE)
        assert line, f"pay ended before PENDING: {seen}"
        seen.append(line.decode())
    pending_seq = int(seen[-1].split()[0].removeprefix("#"))
    process.send_signal(signal.SIGINT)
    _, err_bytes = await asyncio.wait_for(process.communicate(), _DEADLINE)
    err = err_bytes.decode()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "payment LIVE2 goes on in facepayd" in err
    follow = f"facepay --socket {daemon.socket} payment watch LIVE2 --after-seq {pending_seq}"
    assert f"follow it with: {follow}" in err

    # The printed command does follow it: the payment was not cancelled, it succeeds.
    assert sims.wxpay is not None
    sims.wxpay.confirm_now("LIVE2")
    code, out, err = await _run(_cli(*shlex.split(follow)[1:]))
    assert code == 0, err
    assert [line.split()[2] for line in out.splitlines()] == ["SUCCEEDED"]


async def test_status_into_a_pipe_closed_early_exits_0_without_traceback(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(await make_stack())
    status = shlex.join(_cli("--socket", str(daemon.socket), "status"))
    code, out, err = await _run(["bash", "-c", f"set -o pipefail; {status} | head -1"])
    assert (code, len(out.splitlines()), err) == (0, 1, "")

    # A reader gone before the first line, every time: the first write meets a closed pipe.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = await asyncio.create_subprocess_exec(
            *_cli("--socket", str(daemon.socket), "status"),
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
    finally:
        os.close(write_end)
    _, err_bytes = await asyncio.wait_for(process.communicate(), _DEADLINE)
    assert (process.returncode, err_bytes.decode()) == (0, "")


@pytest.mark.parametrize(
    ("module", "program"), [("facepayd", "facepayd"), ("facepay_client.cli", "facepay")]
)
async def test_version_of_both_programs(module: str, program: str) -> None:
    code, out, err = await _run([sys.executable, "-m", module, "--version"])
    assert (code, out.strip(), err) == (0, f"{program} {facepayd.__version__}", "")
