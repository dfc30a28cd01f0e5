"""The systemd units: verify-clean, exposure <= 2.0, consistent with sysusers and the example."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from facepayd.daemon import build_transport, under_systemd
from facepayd.device.adb import (
    AdbSettings,
    AdbTransport,
    CommandResult,
    bundled_adb_path,
)
from facepayd.errors import DeviceLost
from facepayd.main import EXIT_CONFIG
from facepayd.ops import config
from facepayd.sim.adbd import free_port

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "facepayd.service"
SYSUSERS = SYSTEMD_DIR / "facepayd.sysusers"
ADB_UNIT = SYSTEMD_DIR / "adb.service"
ADB_SYSUSERS = SYSTEMD_DIR / "adb.sysusers"
EXAMPLE = SYSTEMD_DIR / "facepayd.example.toml"
MAX_EXPOSURE = 2.0


def _settings(path: Path) -> dict[str, list[str]]:
    """Key -> every value assigned in the unit, in order (keys may repeat)."""
    settings: dict[str, list[str]] = defaultdict(list)
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings[key.strip()].append(value.strip())
    return settings


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed")
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [binary, "--no-pager", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _exec_binary(unit: Path) -> str:
    (exec_start,) = _settings(unit)["ExecStart"]
    return exec_start.split()[0]


@pytest.mark.parametrize("unit", [UNIT, ADB_UNIT], ids=lambda u: u.name)
def test_verify_reports_nothing_but_a_missing_binary(unit: Path) -> None:
    result = _systemd_analyze("verify", str(unit))
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    binary = _exec_binary(unit)
    # The one tolerated complaint: verify checks that ExecStart's binary exists, and on a
    # development or CI host the daemon is not installed at its production path. It is
    # tolerated only when the binary really is absent. verify does not resolve User=, so
    # an absent `facepay` user is no complaint (checked with systemd 252).
    tolerated = f"{unit.name}: Command {binary} is not executable: No such file or directory"
    if not os.access(binary, os.X_OK):
        complaints = [line for line in complaints if line != tolerated]
        assert result.returncode in (0, 1), result
    else:
        assert result.returncode == 0, result
    assert complaints == []


def test_security_exposure_is_at_most_two() -> None:
    result = _systemd_analyze("security", "--offline=yes", "--threshold=20", str(UNIT))
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for facepayd\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_unit_contract() -> None:
    unit = _settings(UNIT)
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "WatchdogSec": ["30"],
        "Restart": ["on-failure"],
        # facepayd's exit code for a refused config (main.EXIT_CONFIG): never restarted.
        "RestartPreventExitStatus": [str(EXIT_CONFIG)],
        "User": ["facepay"],
        "Group": ["facepay"],
        "UMask": ["0007"],
        "StateDirectory": ["facepayd"],
        "StateDirectoryMode": ["0700"],
        "RuntimeDirectory": ["facepayd"],
        "RuntimeDirectoryMode": ["0750"],
        "ConfigurationDirectory": ["facepayd"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "PrivateDevices": ["yes"],
        "NoNewPrivileges": ["yes"],
    }
    for key, values in expected.items():
        assert unit[key] == values, key
    assert "TimeoutStopSec" in unit
    assert unit["ExecStart"] == ["/opt/facepayd/bin/facepayd --config /etc/facepayd/facepayd.toml"]
    # The adb server is its own service, up before the daemon reaches for it.
    assert "adb.service" in unit["Wants"][0].split()
    assert "adb.service" in unit["After"][0].split()
    # WeChat Pay's backend has no fixed addresses; an IP deny list would cut payments off.
    assert "IPAddressDeny" not in unit


def test_adb_unit_contract() -> None:
    unit = _settings(ADB_UNIT)
    # The venv's console script execs adbutils' adb (the version the daemon's client speaks),
    # in the foreground so systemd supervises the server itself.
    assert unit["ExecStart"] == ["/opt/facepayd/bin/facepayd-adb server nodaemon"]
    assert unit["Before"] == ["facepayd.service"]
    assert unit["User"] == ["adb"]
    assert unit["SupplementaryGroups"] == ["plugdev"]
    assert "PrivateDevices" not in unit  # it owns the USB device nodes
    assert unit["DeviceAllow"] == ["char-usb_device rw"]
    assert "HOME=/var/lib/adb" in unit["Environment"]
    assert unit["StateDirectory"] == ["adb"]
    entries = [line.split() for line in ADB_SYSUSERS.read_text().splitlines() if line[:1] in "ug"]
    assert [e[:2] for e in entries] == [["g", "plugdev"], ["u", "adb"]]
    assert entries[1][-2] == "/var/lib/adb"


def test_adb_unit_exposure_is_at_most_two() -> None:
    result = _systemd_analyze("security", "--offline=yes", "--threshold=20", str(ADB_UNIT))
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for adb\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_bundled_adb_runs_the_server_in_the_foreground() -> None:
    # `server nodaemon` is what adb.service runs; the bundled adb must know it.
    result = subprocess.run(
        [bundled_adb_path(), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert "server nodaemon" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"INVOCATION_ID": "0123abcd"}, True),
        ({"NOTIFY_SOCKET": "/run/systemd/notify"}, True),
        ({"INVOCATION_ID": "", "NOTIFY_SOCKET": ""}, False),
    ],
)
def test_under_systemd_the_transport_may_not_start_adb(
    environ: dict[str, str], expected: bool
) -> None:
    assert under_systemd(environ) is expected
    loaded = config.load(EXAMPLE)
    transport = build_transport(loaded, environ)
    assert isinstance(transport, AdbTransport)
    assert transport.settings.may_start_server is not expected


class _RefusingRunner:
    """A CommandRunner the transport must not use."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def run(self, argv: Sequence[str], *, env: Mapping[str, str]) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(1, "must not run")


async def test_no_adb_server_under_systemd_is_a_device_error_naming_the_unit() -> None:
    runner = _RefusingRunner()
    port = free_port()  # nothing listens on it
    settings = AdbSettings(server_port=port, may_start_server=False)
    transport = AdbTransport(settings, runner=runner)
    with pytest.raises(
        DeviceLost, match=rf"no adb server answers at 127\.0\.0\.1:{port}.*adb\.service"
    ):
        await transport.open(3.0)
    assert runner.calls == []  # no adb spawned inside the sandbox


def test_sysusers_creates_the_unit_user() -> None:
    entries = [
        line.split()
        for line in SYSUSERS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [e[:2] for e in entries] == [["u", _settings(UNIT)["User"][0]]]


def test_example_config_loads_and_matches_the_unit() -> None:
    unit = _settings(UNIT)
    loaded = config.load(EXAMPLE)
    sources = dict(value.partition(":")[::2] for value in unit["LoadCredential"])
    merchant, payscore = loaded.merchant, loaded.payscore
    secrets = {merchant.api_key, merchant.cert, merchant.cert_password}
    secrets |= {payscore.api_v3_key, payscore.private_key}
    assert set(sources) == secrets
    for name, source in sources.items():
        # Every source sits in the credstore under the daemon's prefix; PayScore's relative
        # ones are searched there and skipped when absent (a merchant without PayScore).
        assert source.removeprefix("/etc/credstore/") == f"facepayd.{name}", name
        assert source.startswith("/") is (name not in {payscore.api_v3_key, payscore.private_key})
    assert Path(loaded.server.socket).parent == Path("/run") / unit["RuntimeDirectory"][0]
    assert Path(loaded.state.dir) == Path("/var/lib") / unit["StateDirectory"][0]
    (exec_start,) = unit["ExecStart"]
    config_path = Path(exec_start.split("--config", 1)[1].strip())
    assert config_path.parent == Path("/etc") / unit["ConfigurationDirectory"][0]
