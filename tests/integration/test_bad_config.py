"""Bad configs: one line on stderr naming the key, exit 2, nothing started.

Every row is a complete, otherwise valid config with one thing wrong. The whole table goes
through `config.load_checked`, the entry point `facepayd --config FILE` calls before anything
starts; a dozen rows (and the ones that need file modes to bite) also run the real daemon as
a child process, all at once, and check it bound no socket, took no lock, opened no journal
and started no adb server.

Root bypasses file modes (CAP_DAC_OVERRIDE), and CI runs as root: the unreadable-secret and
read-only-state-dir rows then run the child with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
dropped from its bounding set, which root's exec cannot regain, so the kernel (open, and
access(2) which the daemon's check uses) holds root to the modes like any user.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import functools
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from facepayd.device.adb import bundled_adb_path
from facepayd.errors import ConfigError
from facepayd.main import EXIT_CONFIG
from facepayd.ops import config
from facepayd.sim.adbd import AdbServer, free_port
from facepayd.sim.daemon_process import DaemonProcess, run_to_exit
from facepayd.sim.stack import to_toml
from facepayd.sim.tls import generate_test_pki
from tests.helpers import until
from tests.unit.test_config import leaf_keys

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_SETPCAP = 8

SECRETS = {
    "merchant.api_key": "api_key",
    "merchant.cert": "client.p12",
    "merchant.cert_password": "cert_password",
    "payscore.private_key": "merchant_key.pem",
    "payscore.api_v3_key": "api_v3_key",
}
FILES = {
    "wxpay.ca_file": "ca.pem",
    "payscore.public_key": "platform_public.pem",
}


@dataclass
class World:
    """A valid config's files on disk, and the settings that name them."""

    root: Path
    socket: Path
    adb_port: int
    settings: dict[str, Any]

    def path(self, key: str) -> Path:
        """The file a path key names."""
        section, name = key.split(".")
        value = self.settings[section][name]
        return Path(value[0] if isinstance(value, list) else value)

    def write(self, settings: dict[str, Any] | None = None, name: str = "facepayd.toml") -> Path:
        """The settings as a TOML file."""
        path = self.root / name
        path.write_text(to_toml(self.settings if settings is None else settings))
        return path

    def started_something(self) -> list[str]:
        """What a daemon that started would have left: socket, lock, journal, adb server."""
        left = [str(p) for p in self.root.rglob("*") if p.name.startswith(("facepayd.", "jour"))]
        left = [p for p in left if not p.endswith(".toml")]
        if self.socket.exists():
            left.append(str(self.socket))
        return left


@functools.cache
def ca_bundle() -> bytes:
    """A real PEM CA certificate, made once (check_paths loads wxpay.ca_file)."""
    with tempfile.TemporaryDirectory() as directory:
        return generate_test_pki(Path(directory)).ca_cert.read_bytes()


@contextlib.contextmanager
def world_at(tmp_path: Path) -> Iterator[World]:
    """Secrets 0600, plain files, an empty state dir, a short socket path, a free adb port."""
    for name in SECRETS.values():
        (tmp_path / name).write_bytes(b"0123456789abcdef0123456789abcdef")
        (tmp_path / name).chmod(0o600)
    for name in (*FILES.values(), "platform.pem"):
        (tmp_path / name).write_bytes(ca_bundle())
    (tmp_path / "state").mkdir(mode=0o700)
    # Unix socket paths are limited to 107 bytes; tmp_path can be longer.
    socket_dir = Path(tempfile.mkdtemp(prefix="fpd", dir="/tmp"))
    adb_port = free_port()
    settings: dict[str, Any] = {
        "server": {"socket": str(socket_dir / "facepayd.sock")},
        "state": {"dir": str(tmp_path / "state")},
        "merchant": {
            "appid": "wx0000000000000001",
            "mch_id": "1900000109",
            "store_id": "S1",
            "store_name": "Store 1",
            "device_id": "D1",
            **{key.split(".")[1]: str(tmp_path / n) for key, n in SECRETS.items() if "merc" in key},
        },
        "wxpay": {
            # Port 9 (discard): nothing here is ever contacted, the daemon must not get so far.
            "api_base_url": "https://127.0.0.1:9",
            "authinfo_url": "https://127.0.0.1:9/face/get_wxpayface_authinfo",
            "ca_file": str(tmp_path / FILES["wxpay.ca_file"]),
        },
        "device": {
            "transport": "adb",
            "adb_path": bundled_adb_path(),
            "adb_server": f"127.0.0.1:{adb_port}",
        },
        "payscore": {
            "service_id": "500001",
            "serial_no": "ABC123",
            "private_key": str(tmp_path / SECRETS["payscore.private_key"]),
            "api_v3_key": str(tmp_path / SECRETS["payscore.api_v3_key"]),
            "platform_certs": [str(tmp_path / "platform.pem")],
            "public_key": str(tmp_path / FILES["payscore.public_key"]),
            "public_key_id": "PUB_KEY_ID_1",
            "notify_url": "https://127.0.0.1:9/notify",
        },
    }
    try:
        yield World(tmp_path, socket_dir / "facepayd.sock", adb_port, settings)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A valid config's world in tmp_path."""
    with world_at(tmp_path) as w:
        yield w


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port (an adb server would)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


Mutate = Callable[[World, dict[str, Any]], None]


def setting(key: str, value: Any) -> Mutate:
    """Set one dotted key."""

    def mutate(_: World, settings: dict[str, Any]) -> None:
        *tables, name = key.split(".")
        section = settings
        for table in tables:
            section = section.setdefault(table, {})
        section[name] = value

    return mutate


def chmod(key: str, mode: int) -> Mutate:
    """Change the mode of the file (or directory) a key names."""
    return lambda world, _: world.path(key).chmod(mode)


def replace_with_directory(key: str) -> Mutate:
    """A directory where the key's file should be."""

    def mutate(world: World, _: dict[str, Any]) -> None:
        path = world.path(key)
        path.unlink()
        path.mkdir()

    return mutate


def under_a_file(key: str) -> Mutate:
    """The key names a path inside a regular file."""

    def mutate(world: World, settings: dict[str, Any]) -> None:
        (world.root / "plain").write_text("x")
        setting(key, str(world.root / "plain" / "inside"))(world, settings)

    return mutate


def not_pem(world: World, _: dict[str, Any]) -> None:
    """wxpay.ca_file is readable but holds no certificate."""
    world.path("wxpay.ca_file").write_text("not a certificate\n")


def not_executable(world: World, settings: dict[str, Any]) -> None:
    """device.adb_path names a file without any execute bit (root too needs one)."""
    (world.root / "adb").write_text("#!/bin/sh\n")
    (world.root / "adb").chmod(0o644)
    settings["device"]["adb_path"] = str(world.root / "adb")


def state_dir_is_a_file(world: World, settings: dict[str, Any]) -> None:
    """state.dir names a regular file."""
    (world.root / "state-file").write_text("x")
    settings["state"]["dir"] = str(world.root / "state-file")


def metrics_dir_is_a_file(world: World, settings: dict[str, Any]) -> None:
    """metrics.textfile is a good name, but its directory is a regular file."""
    (world.root / "plain").write_text("x")
    settings.setdefault("metrics", {})["textfile"] = str(world.root / "plain" / "facepayd.prom")


def socket_is_a_regular_file(world: World, _: dict[str, Any]) -> None:
    """A regular file where the socket goes: the daemon would have deleted it."""
    world.socket.write_text("somebody's file")


def wrong_type(hint: Any) -> Any:
    """A TOML value of another type than hint."""
    return "x" if hint in (int, float, bool, bool | None) or hint == tuple[str, ...] else 1


def _rows() -> list[Any]:
    rows: list[Any] = []

    def row(name: str, key: str, mutate: Mutate) -> None:
        rows.append(pytest.param(key, mutate, id=name))

    for key, hint in leaf_keys():
        row(f"{key}-wrong-type", key, setting(key, wrong_type(hint)))
        if hint is float:
            for label, value in [("nan", "nan"), ("inf", "inf"), ("-inf", "-inf")]:
                row(f"{key}-{label}", key, setting(key, float(value)))
            row(f"{key}-negative", key, setting(key, -1.0))
            row(f"{key}-zero", key, setting(key, 0))
            row(f"{key}-over-a-day", key, setting(key, config.MAX_SECONDS * 2))
    for key, (low, high) in config._INT_RANGES.items():
        row(f"{key}-below", key, setting(key, low - 1))
        row(f"{key}-above", key, setting(key, high + 1))
    required = [
        "server.socket",
        "state.dir",
        "log.level",
        "merchant.appid",
        "merchant.mch_id",
        "merchant.store_id",
        "merchant.store_name",
        "merchant.device_id",
        "merchant.api_key",
        "merchant.sign_type",
        "merchant.spbill_create_ip",
        "wxpay.api_base_url",
        "wxpay.authinfo_url",
        "device.transport",
        "device.tcp_address",
        "device.adb_server",
        "device.bridge_socket",
        "payscore.private_key",
        "payscore.serial_no",
    ]
    for key in required:
        row(f"{key}-empty", key, setting(key, ""))
    for key in ("wxpay.api_base_url", "wxpay.authinfo_url", "payscore.notify_url"):
        row(f"{key}-http", key, setting(key, "http://api.mch.weixin.qq.com/x"))
    for key in (*SECRETS, *FILES, "payscore.platform_certs", "device.adb_path"):
        missing = str(Path("/nonexistent") / key)
        value = [missing] if key == "payscore.platform_certs" else missing
        row(f"{key}-missing", key, setting(key, value))
    row(
        "wxpay.ca_file-not-pem",
        "wxpay.ca_file",
        lambda w, _: w.path("wxpay.ca_file").write_text("x"),
    )
    for key in SECRETS:
        row(f"{key}-world-readable", key, chmod(key, 0o644))
        row(f"{key}-group-readable", key, chmod(key, 0o640))
        row(f"{key}-a-directory", key, replace_with_directory(key))
    row("wxpay.ca_file-a-directory", "wxpay.ca_file", replace_with_directory("wxpay.ca_file"))
    row("device.adb_path-not-executable", "device.adb_path", not_executable)
    row("state.dir-a-file", "state.dir", state_dir_is_a_file)
    row("state.dir-under-a-file", "state.dir", under_a_file("state.dir"))
    row("server.socket-dir-a-file", "server.socket", under_a_file("server.socket"))
    row("server.socket-a-regular-file", "server.socket", socket_is_a_regular_file)
    row("server.socket-too-long", "server.socket", setting("server.socket", "/tmp/" + "s" * 103))
    row("metrics.textfile-dir-a-file", "metrics.textfile", metrics_dir_is_a_file)
    return rows


ROWS = _rows()


def apply(world: World, mutate: Mutate) -> Path:
    """The world's config file with one thing wrong."""
    settings = copy.deepcopy(world.settings)
    mutate(world, settings)
    return world.write(settings, "bad.toml")


def test_the_base_config_passes_every_check(world: World) -> None:
    loaded = config.load_checked(world.write())
    assert loaded.payscore.enabled
    assert loaded.device.transport == "adb"


@pytest.mark.parametrize(("key", "mutate"), ROWS)
def test_a_bad_config_is_refused_naming_the_key(world: World, key: str, mutate: Mutate) -> None:
    path = apply(world, mutate)
    with pytest.raises(ConfigError) as caught:
        config.load_checked(path)
    message = str(caught.value)
    assert message.startswith(f"{key}: "), message
    assert "\n" not in message
    assert "0123456789abcdef" not in message  # no secret's content


def _needs_modes() -> Callable[[], None] | None:
    """The child's preexec that holds root to file modes (None when not root)."""
    if os.geteuid() != 0:
        return None
    status = Path("/proc/self/status").read_text()
    effective = int(
        next(line for line in status.splitlines() if line.startswith("CapEff:"))[7:], 16
    )
    if not effective & (1 << CAP_SETPCAP):
        pytest.skip("root without CAP_SETPCAP cannot drop CAP_DAC_OVERRIDE for the child")

    def drop() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


# Through the real process: the cases, and the two that need file modes.
PROCESS_ROWS: list[tuple[str, Mutate, bool]] = [
    ("device.call_timeout", setting("device.call_timeout", float("nan")), False),
    ("wxpay.read_timeout", setting("wxpay.read_timeout", float("inf")), False),
    ("payments.poll_interval", setting("payments.poll_interval", -1.0), False),
    ("payscore.max_attempts", setting("payscore.max_attempts", "4"), False),
    ("wxpay.api_base_url", setting("wxpay.api_base_url", "http://127.0.0.1:9"), False),
    ("wxpay.authinfo_url", setting("wxpay.authinfo_url", "http://127.0.0.1:9/a"), False),
    ("merchant.appid", setting("merchant.appid", ""), False),
    ("merchant.api_key", chmod("merchant.api_key", 0o644), False),
    ("merchant.cert_password", chmod("merchant.cert_password", 0o000), True),
    ("wxpay.ca_file", setting("wxpay.ca_file", "/nonexistent/ca.pem"), False),
    ("state.dir", state_dir_is_a_file, False),
    ("state.dir", chmod("state.dir", 0o500), True),
    ("server.socket", setting("server.socket", "/tmp/" + "s" * 103), False),
]


async def test_the_real_daemon_exits_2_with_one_line_and_starts_nothing(
    tmp_path: Path,
) -> None:
    preexec = _needs_modes()
    with contextlib.ExitStack() as cleanup:
        worlds: list[World] = []
        runs = []
        for i, (_, mutate, modes) in enumerate(PROCESS_ROWS):
            root = tmp_path / f"row{i}"
            root.mkdir()
            w = cleanup.enter_context(world_at(root))
            worlds.append(w)
            runs.append(run_to_exit(apply(w, mutate), preexec_fn=preexec if modes else None))
        # All at once: each child spends its second importing, not waiting.
        results = await asyncio.gather(*runs)
        for (key, _, _), w, exited in zip(PROCESS_ROWS, worlds, results, strict=True):
            assert exited.returncode == EXIT_CONFIG, (key, exited)
            assert exited.stdout == "", (key, exited)
            lines = exited.stderr.splitlines()
            assert len(lines) == 1, (key, exited.stderr)
            assert lines[0].startswith(f"facepayd: {key}: "), lines
            assert w.started_something() == [], key
            assert not listening(w.adb_port), key


@pytest.mark.adb
async def test_control_the_same_config_made_good_binds_the_socket_and_starts_adb(
    world: World,
) -> None:
    # Proves the checks above can fail: what a started daemon leaves is what they look for.
    settings = copy.deepcopy(world.settings)
    settings["payscore"] = {}
    for key in ("cert", "cert_password"):
        del settings["merchant"][key]
    del settings["wxpay"]["ca_file"]
    (world.root / "api_key").write_text("k" * 32)
    daemon = DaemonProcess.for_config(world.write(settings), world.root / "run")
    adb = AdbServer(bundled_adb_path(), port=world.adb_port)
    try:
        await daemon.start(wait_serving=False)
        await until(world.socket.exists, timeout=30, what="the socket")
        await until(lambda: listening(world.adb_port), timeout=30, what="an adb server")
        assert world.started_something()
        assert await daemon.stop() == 0
    finally:
        await daemon.kill()
        await adb.stop()
