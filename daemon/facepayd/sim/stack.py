"""The simulators wired together: WeChat Pay over HTTPS and the terminal behind its bridge.

Used by `facepayd --simulate`, `make demo` and the integration tests. It also writes the
daemon config (and the 0600 secret files it names) that points a daemon at the simulators.
"""

from __future__ import annotations

import datetime
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from facepayd.clock import Clock, SystemClock
from facepayd.device.adb import bundled_adb_path
from facepayd.ops import config as config_module
from facepayd.ops.config import Config
from facepayd.sim.adbd import AdbServer, FakeAdbd
from facepayd.sim.payscore import PayScoreSimulator
from facepayd.sim.terminal import DEFAULT_USER, SimLatencies, SimTerminal
from facepayd.sim.tls import TestPki, generate_test_pki
from facepayd.sim.wxpay import UnknownReverse, WxPaySimulator
from facepayd.wxpay.models import Merchant
from facepayd.wxpay.v3 import certificate_serial

MERCHANT = Merchant(appid="wxsim0000000000001", mch_id="1900000109")
STORE_ID = "SIMSTORE001"
STORE_NAME = "Simulated store"
DEVICE_ID = "SIMDEVICE001"
PAYSCORE_SERVICE_ID = "500001"


@dataclass(frozen=True, slots=True)
class SimOptions:
    """How the simulated world behaves."""

    sdk_version: str = "2.22.0"
    latencies: SimLatencies = field(
        default_factory=lambda: SimLatencies(init=0.05, rawdata=0.01, face_capture=0.2)
    )
    authinfo_expires_in: int = 7200
    userpaying_seconds: float = 2.0
    slow_seconds: float = 30.0
    reverse_recalls: int = 2
    # A reverse of an order WeChat Pay never saw: refused (TRADE_ERROR recall=N) unless asked.
    unknown_reverse: UnknownReverse = UnknownReverse.REFUSE
    sign_type: str = "HMAC-SHA256"
    # "adb": the real adb server and a fake adbd in front of the terminal; "tcp": plain TCP.
    device: str = "adb"
    face_app_installed: bool = True
    # The daemon config's timers (polls, reverse delay, give-up, timeouts, heartbeats): short,
    # for tests and the demo, or else left at the daemon's production defaults.
    fast_timers: bool = True

    @classmethod
    def wechat_timers(cls, **overrides: Any) -> SimOptions:
        """WeChat's own pace instead of the tests' short one (the simulators run on their own)."""
        timers: dict[str, Any] = {
            "latencies": SimLatencies(),
            "userpaying_seconds": 10.0,
            "slow_seconds": 60.0,
            "fast_timers": False,
        }
        return cls(**{**timers, **overrides})


class SimStack:
    """Starts and stops the simulators; hands out a daemon config that points at them."""

    def __init__(
        self, directory: Path, options: SimOptions | None = None, clock: Clock | None = None
    ) -> None:
        self.directory = directory
        self.options = options or SimOptions()
        self.clock = clock or SystemClock()
        self.api_key = secrets.token_hex(16)
        self.pki: TestPki | None = None
        self.wxpay: WxPaySimulator | None = None
        self.terminal: SimTerminal | None = None
        self.bridge_port = 0
        self.adbd: FakeAdbd | None = None
        self.adb_server: AdbServer | None = None
        self.payscore: PayScoreSimulator | None = None
        self.payscore_serial_no = ""

    async def start(self) -> None:
        """Generate keys, start WeChat Pay and the terminal."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pki_dir = self.directory / "pki"
        pki_dir.mkdir(exist_ok=True, mode=0o700)
        self.pki = generate_test_pki(pki_dir)
        _write_secret(self.directory / "api_key", self.api_key.encode())
        _write_secret(self.directory / "cert_password", self.pki.client_p12_password)
        o = self.options
        self.wxpay = WxPaySimulator(
            merchant=MERCHANT,
            api_key=self.api_key,
            pki=self.pki,
            clock=self.clock,
            authinfo_expires_in=o.authinfo_expires_in,
            userpaying_seconds=o.userpaying_seconds,
            slow_seconds=o.slow_seconds,
            reverse_recalls=o.reverse_recalls,
            unknown_reverse=o.unknown_reverse,
        )
        self._start_payscore(pki_dir)
        await self.wxpay.start()
        self.terminal = SimTerminal(
            clock=self.clock,
            sdk_version=o.sdk_version,
            face_app_version=o.sdk_version,
            latencies=o.latencies,
            authinfo_valid=self.wxpay.is_authinfo_valid,
        )
        self.wxpay.openid_of_face_code = self.terminal.face_code_openids.get
        if o.device == "adb":
            await self._start_adb()
        else:
            self.bridge_port = await self.terminal.serve_tcp()

    def _start_payscore(self, pki_dir: Path) -> None:
        """Merchant v3 key and WeChat Pay platform certificate, generated now; the simulator."""
        assert self.wxpay is not None
        merchant_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        platform_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.payscore_serial_no = secrets.token_hex(20).upper()
        platform_cert = _self_signed(platform_key, "Simulated WeChat Pay platform")
        _write_secret(
            self.directory / "payscore_merchant_key.pem",
            merchant_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        api_v3_key = secrets.token_hex(16).encode()
        _write_secret(self.directory / "payscore_api_v3_key", api_v3_key)
        (pki_dir / "payscore_platform_cert.pem").write_bytes(
            platform_cert.public_bytes(serialization.Encoding.PEM)
        )
        self.payscore = PayScoreSimulator(
            self.clock,
            {self.payscore_serial_no: merchant_key.public_key()},
            platform_key,
            certificate_serial(platform_cert),
            platform_certificate=platform_cert,
            api_v3_key=api_v3_key,
        )
        self.payscore.install(self.wxpay)
        self.payscore.add_user(DEFAULT_USER.openid)

    async def _start_adb(self) -> None:
        assert self.terminal is not None
        packages = {"com.facepay.bridge": self.terminal.bridge_version}
        if self.options.face_app_installed:
            packages["com.tencent.wxpayface"] = self.terminal.face_app_version
        self.adbd = FakeAdbd(
            {"localabstract:facepay-bridge": self.terminal.handle_stream},
            props={"ro.serialno": self.terminal.serial, "ro.product.model": self.terminal.model},
            packages=packages,
        )
        await self.adbd.start()
        self.adb_server = AdbServer(bundled_adb_path())
        await self.adb_server.start()
        await self.adb_server.connect(self.adbd.address)

    async def stop(self) -> None:
        """Stop the simulators and the adb server they started; nothing is left listening."""
        if self.adb_server is not None:
            await self.adb_server.stop()
        if self.adbd is not None:
            await self.adbd.stop()
        if self.terminal is not None:
            await self.terminal.stop()
        if self.wxpay is not None:
            await self.wxpay.stop()

    def daemon_settings(
        self, *, socket: Path, state_dir: Path, **sections: dict[str, Any]
    ) -> dict[str, Any]:
        """The daemon's config as a TOML-shaped mapping; sections override per key."""
        assert self.wxpay is not None
        assert self.pki is not None
        settings: dict[str, Any] = {
            "server": {"socket": str(socket)},
            "state": {"dir": str(state_dir)},
            "merchant": {
                "appid": MERCHANT.appid,
                "mch_id": MERCHANT.mch_id,
                "store_id": STORE_ID,
                "store_name": STORE_NAME,
                "device_id": DEVICE_ID,
                "api_key": str(self.directory / "api_key"),
                "sign_type": self.options.sign_type,
                "cert": str(self.pki.client_p12),
                "cert_password": str(self.directory / "cert_password"),
            },
            "wxpay": {
                "api_base_url": self.wxpay.base_url,
                "authinfo_url": self.wxpay.authinfo_url,
                "ca_file": self.wxpay.ca_file,
                "read_timeout": 5.0,
            },
            "device": {
                **self._device_settings(),
                "call_timeout": 5.0,
                "face_timeout": 30.0,
                "heartbeat_interval": 0.5,
                "heartbeat_timeout": 0.5,
                "reconnect_max_backoff": 1.0,
            },
            "payments": {"poll_interval": 0.5, "reverse_after": 1.5, "give_up_after": 4.0},
            "payscore": {
                "service_id": PAYSCORE_SERVICE_ID,
                "private_key": str(self.directory / "payscore_merchant_key.pem"),
                "serial_no": self.payscore_serial_no,
                "platform_certs": [str(self.directory / "pki" / "payscore_platform_cert.pem")],
                "api_v3_key": str(self.directory / "payscore_api_v3_key"),
                "notify_url": f"{self.wxpay.base_url}/notify/payscore",
                "backoff_initial": 0.05,
                "backoff_max": 0.2,
                "resolve_backoff": 0.1,
                "resolve_backoff_max": 1.0,
            },
        }
        if not self.options.fast_timers:
            for name, keys in _FAST_TIMERS.items():
                for key in keys:
                    settings[name].pop(key, None)
                if not settings[name]:
                    del settings[name]
        for name, values in sections.items():
            settings.setdefault(name, {}).update(values)
        return settings

    def _device_settings(self) -> dict[str, Any]:
        if self.adb_server is not None and self.adbd is not None:
            return {
                "transport": "adb",
                "adb_path": bundled_adb_path(),
                "adb_server": f"127.0.0.1:{self.adb_server.port}",
                "address": self.adbd.address,
            }
        return {"transport": "tcp", "tcp_address": f"127.0.0.1:{self.bridge_port}"}

    def daemon_config(self, *, socket: Path, state_dir: Path, **sections: dict[str, Any]) -> Config:
        """The daemon's Config pointing at these simulators."""
        return config_module.from_mapping(
            self.daemon_settings(socket=socket, state_dir=state_dir, **sections)
        )

    def write_daemon_config(
        self, path: Path, *, socket: Path, state_dir: Path, **sections: dict[str, Any]
    ) -> Path:
        """Write the daemon's TOML config file (for a daemon in another process)."""
        path.write_text(
            to_toml(self.daemon_settings(socket=socket, state_dir=state_dir, **sections))
        )
        return path


# What daemon_settings shortens for tests and the demo; without fast_timers they are left out.
_FAST_TIMERS: dict[str, tuple[str, ...]] = {
    "wxpay": ("read_timeout",),
    "device": (
        "call_timeout",
        "face_timeout",
        "heartbeat_interval",
        "heartbeat_timeout",
        "reconnect_max_backoff",
    ),
    "payments": ("poll_interval", "reverse_after", "give_up_after"),
    "payscore": ("backoff_initial", "backoff_max", "resolve_backoff", "resolve_backoff_max"),
}


def to_toml(settings: dict[str, Any]) -> str:
    """A tiny TOML writer for two-level tables of strings, numbers and booleans."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        escaped = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'

    def table(prefix: str, mapping: dict[str, Any]) -> None:
        scalars = {k: v for k, v in mapping.items() if not isinstance(v, dict)}
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in mapping.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}", v)

    for name, section in settings.items():
        table(name, section)
    return "\n".join(lines)


def _self_signed(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
