"""`facepay doctor` against the real daemon and the simulators: ✓ when healthy, ✗ with the fix."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd.sim.daemon_process import DaemonProcess
from facepayd.sim.stack import SimStack
from facepayd.sim.tls import generate_test_pki
from tests.integration.conftest import DaemonFactory, StackFactory
from tests.integration.test_adb_daemon import until_status
from tests.integration.test_payments import FAST_PAYMENTS, FAST_WXPAY, pay

_CLI = "import sys; from facepay_client.cli import main; sys.exit(main(sys.argv[1:]))"
DAEMON_CHECKS = [
    "health",
    "adb_server",
    "device",
    "face_app",
    "bridge_app",
    "bridge",
    "sdk",
    "authinfo",
    "clock_skew",
    "merchant_cert",
    "journal",
    "needs_attention",
    "recent_errors",
]


async def doctor(socket: Path, *args: str) -> tuple[int, str, str]:
    """Run `facepay --socket S [args] doctor` in a child process; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLI,
        "--socket",
        str(socket),
        *args,
        "doctor",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def doctor_json(socket: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """The checks by name from `facepay --json doctor`."""
    code, out, err = await doctor(socket, "--json")
    checks = [json.loads(line) for line in out.splitlines()]
    assert all(set(c) == {"name", "ok", "detail", "fix"} for c in checks), out + err
    return code, {c["name"]: c for c in checks}


def failed(checks: dict[str, dict[str, Any]]) -> set[str]:
    """Names of the failed checks."""
    return {name for name, c in checks.items() if not c["ok"]}


async def until_authinfo(daemon: DaemonProcess) -> None:
    """Wait until the daemon holds an authinfo (fetched once the SDK is READY)."""
    async with daemon.client() as client:
        await until_status(
            client,
            lambda s: s.state == pb.LIFECYCLE_STATE_READY and s.HasField("authinfo_expires_at"),
        )


async def test_a_healthy_terminal_passes_every_check(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    await until_authinfo(daemon)
    code, checks = await doctor_json(daemon.socket)
    assert list(checks) == ["daemon", *DAEMON_CHECKS]
    assert failed(checks) == set(), checks
    assert code == 0
    assert checks["device"]["detail"].endswith("state READY")
    assert "SDK 2.22.0: quit yes, firewall yes" in checks["face_app"]["detail"]
    assert "getWxpayfaceRawdata answered" in checks["bridge"]["detail"]
    # The real adb server the stack runs, asked for its version.
    assert " answering, version " in checks["adb_server"]["detail"]
    assert checks["authinfo"]["detail"].startswith("fetched ")
    assert "against WeChat Pay's Date header" in checks["clock_skew"]["detail"]
    assert "CN=facepay simulated merchant" in checks["merchant_cert"]["detail"]
    assert checks["journal"]["detail"].startswith("writable, ")
    # Readable output: one ✓ line per check, no fixes, nothing on stderr.
    code, out, err = await doctor(daemon.socket)
    assert code == 0, out + err
    lines = out.splitlines()
    assert len(lines) == 1 + len(DAEMON_CHECKS)
    assert all(line.startswith("✓ ") for line in lines), out
    assert err == ""


async def test_stopped_adbd_fails_the_device_check_with_the_adb_fix(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)
    assert stack.adbd is not None
    await stack.adbd.stop()
    async with daemon.client() as client:
        await until_status(client, lambda s: s.state == pb.LIFECYCLE_STATE_FAULT)
    code, checks = await doctor_json(daemon.socket)
    assert code == 1
    assert {"health", "device", "bridge", "sdk"} <= failed(checks)
    assert checks["daemon"]["ok"]
    assert checks["adb_server"]["ok"], "the adb server runs; only the device behind it is gone"
    assert "state FAULT" in checks["device"]["detail"]
    assert "adb devices" in checks["device"]["fix"]
    assert "systemctl status adb" in checks["device"]["fix"]
    code, out, _ = await doctor(daemon.socket)
    assert "✗ device: " in out
    assert "    fix: check the peripheral's power and USB cable" in out


async def test_missing_face_app_fails_the_face_app_check_with_the_install_fix(
    make_stack: StackFactory, make_daemon: DaemonFactory
) -> None:
    sims = await make_stack(face_app_installed=False)
    daemon = await make_daemon(sims, wait_serving=False)
    async with daemon.client(wait_for_ready=True) as client:
        await until_status(client, lambda s: s.state == pb.LIFECYCLE_STATE_FAULT)
    code, checks = await doctor_json(daemon.socket)
    assert code == 1
    assert {"health", "face_app", "sdk"} <= failed(checks)
    assert checks["bridge_app"]["ok"], "the bridge app is there; only the face app is missing"
    assert "com.tencent.wxpayface is not installed" in checks["face_app"]["detail"]
    assert "install the WeChat Pay face app" in checks["face_app"]["fix"]


async def test_expired_merchant_cert_fails_its_check_with_the_renew_fix(
    stack: SimStack, make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    pki_dir = tmp_path / "expired-pki"
    pki_dir.mkdir(mode=0o700)
    # The stack's cert_password file holds the same (default) PKCS#12 password.
    expired = generate_test_pki(pki_dir, client_expired=True)
    daemon = await make_daemon(stack, merchant={"cert": str(expired.client_p12)})
    await until_authinfo(daemon)
    code, checks = await doctor_json(daemon.socket)
    assert code == 1
    assert failed(checks) == {"merchant_cert"}, checks
    assert checks["merchant_cert"]["detail"].startswith("expired on ")
    assert "download a new API certificate" in checks["merchant_cert"]["fix"]


async def test_needs_attention_payment_fails_its_check_naming_the_order_and_action(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack, wxpay=FAST_WXPAY, payments=FAST_PAYMENTS)
    async with daemon.client() as client:
        # 106: USERPAYING, and every reverse answers REVERSE_EXPIRE: an operator must settle it.
        events = await pay(client, "DOC106", 106)
        assert events[-1].state == pb.PAYMENT_STATE_NEEDS_ATTENTION
        payment = await client.get_payment("DOC106")
    code, checks = await doctor_json(daemon.socket)
    assert code == 1
    assert "needs_attention" in failed(checks)
    detail = checks["needs_attention"]["detail"]
    assert detail.startswith("1 payment(s): DOC106: REVERSE_EXPIRE: ")
    assert payment.attention_action in detail
    assert "facepay payment list --state NEEDS_ATTENTION" in checks["needs_attention"]["fix"]


async def test_no_daemon_fails_the_daemon_check_and_exits_8(tmp_path: Path) -> None:
    code, out, _ = await doctor(tmp_path / "absent.sock")
    assert code == 8
    assert out.startswith(f"✗ daemon: no socket at {tmp_path / 'absent.sock'}")
    assert "    fix: start facepayd" in out
