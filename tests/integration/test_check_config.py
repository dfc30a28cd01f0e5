"""`facepayd --check-config FILE`: the start's checks without a start, a summary without secrets."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from facepayd.main import EXIT_CONFIG
from facepayd.sim.daemon_process import child_env
from facepayd.sim.stack import SimStack
from facepayd.sim.tls import generate_test_pki


async def check_config(path: Path) -> tuple[int, str, str]:
    """Run `facepayd --check-config path` in a child; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "facepayd",
        "--check-config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_config(stack: SimStack, tmp_path: Path, **sections: dict[str, object]) -> Path:
    """The config a daemon against stack would start with (short socket path)."""
    socket = Path(tempfile.mkdtemp(prefix="fpd", dir="/tmp")) / "facepayd.sock"
    return stack.write_daemon_config(
        tmp_path / "facepayd.toml", socket=socket, state_dir=tmp_path / "state", **sections
    )


def secrets_of(stack: SimStack) -> list[str]:
    """Every secret value the config's files hold, as text."""
    d = stack.directory
    values = [
        stack.api_key,
        (d / "cert_password").read_text(),
        (d / "payscore_api_v3_key").read_text(),
    ]
    key_pem = (d / "payscore_merchant_key.pem").read_text()
    # A line from the middle of the PEM body: no output may carry any part of a key.
    values.append(key_pem.splitlines()[3])
    assert stack.pki is not None
    values.append(stack.pki.client_key.read_text().splitlines()[2])
    return values


async def test_a_good_config_prints_its_summary_without_secrets_and_exits_0(
    stack: SimStack, tmp_path: Path
) -> None:
    code, out, err = await check_config(write_config(stack, tmp_path))
    assert code == 0, err
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert lines["merchant.mch_id"].strip() == "1900000109"
    assert lines["wxpay.api_base_url"].strip() == stack.wxpay.base_url  # type: ignore[union-attr]
    assert "PKCS#12" in lines["merchant.cert"]
    assert "CN=facepay simulated merchant" in lines["merchant.cert subject"]
    assert lines["merchant.cert expires"].strip().endswith("UTC")
    assert lines["device.transport"].strip().startswith("adb (adb server 127.0.0.1:")
    assert lines["payscore.service_id"].strip() == "500001"
    assert out.rstrip().endswith("facepayd: config OK")
    for secret in secrets_of(stack):
        assert secret.strip() not in out + err
    # Nothing was started: no journal, no lock, no socket.
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


async def test_a_missing_secret_is_one_line_naming_the_key_and_exit_2(
    stack: SimStack, tmp_path: Path
) -> None:
    path = write_config(stack, tmp_path, merchant={"api_key": str(tmp_path / "no-such-key")})
    code, out, err = await check_config(path)
    assert code == EXIT_CONFIG
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("facepayd: merchant.api_key:")


async def test_a_wrong_certificate_password_names_merchant_cert(
    stack: SimStack, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong_password"
    wrong.write_bytes(b"not-the-password")
    wrong.chmod(0o600)
    code, _, err = await check_config(
        write_config(stack, tmp_path, merchant={"cert_password": str(wrong)})
    )
    assert code == EXIT_CONFIG
    assert err.startswith("facepayd: merchant.cert:")
    assert "not-the-password" not in err


async def test_an_expired_certificate_names_merchant_cert(stack: SimStack, tmp_path: Path) -> None:
    pki_dir = tmp_path / "expired"
    pki_dir.mkdir(mode=0o700)
    expired = generate_test_pki(pki_dir, client_expired=True)
    code, _, err = await check_config(
        write_config(stack, tmp_path, merchant={"cert": str(expired.client_p12)})
    )
    assert code == EXIT_CONFIG
    assert err.startswith("facepayd: merchant.cert: the certificate expired on ")


async def test_a_broken_payscore_key_names_it(stack: SimStack, tmp_path: Path) -> None:
    bad = tmp_path / "bad_key.pem"
    # PEM armour around a body that is not a key (built here, so no key marker sits in the source).
    armour = " ".join(("PRIVATE", "KEY"))
    bad.write_bytes(f"-----BEGIN {armour}-----\nnope\n-----END {armour}-----\n".encode())
    bad.chmod(0o600)
    code, _, err = await check_config(
        write_config(stack, tmp_path, payscore={"private_key": str(bad)})
    )
    assert code == EXIT_CONFIG
    assert err.startswith("facepayd: payscore.private_key:")
