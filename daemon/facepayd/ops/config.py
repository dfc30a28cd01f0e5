"""Typed configuration, loaded once from one TOML file; unknown keys are an error."""

from __future__ import annotations

import dataclasses
import enum
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facepayd.errors import ConfigError


class SdkMode(enum.StrEnum):
    """Release policy of the face SDK."""

    NON_AGGREGATE = "non_aggregate"  # init once, never release between sessions
    AGGREGATE = "aggregate"  # init before and release after each session


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The gRPC server on a Unix socket."""

    socket: str = "/run/facepayd/facepayd.sock"
    reflection: bool = True
    stop_grace: float = 5.0


# A hundred years: far beyond any bookkeeping rule, and still a finite cut-off.
MAX_RETENTION_DAYS = 36_500


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where the journal, the authinfo cache and the lock live, and how long payments stay."""

    dir: str = "/var/lib/facepayd"
    # Final payments (SUCCEEDED, FAILED, REVERSED, CLOSED, CANCELLED) last changed longer ago
    # than this are deleted in the background; unfinished and NEEDS_ATTENTION ones never.
    retention_days: int = 90


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Logging; json unset means JSON unless stderr is a terminal."""

    level: str = "info"
    json: bool | None = None


@dataclass(frozen=True, slots=True)
class MerchantConfig:
    """The merchant identity; api_key and cert are credential names or paths, never values."""

    appid: str = ""
    mch_id: str = ""
    sub_appid: str = ""
    sub_mch_id: str = ""
    store_id: str = ""
    store_name: str = ""
    device_id: str = ""
    api_key: str = ""
    sign_type: str = "HMAC-SHA256"
    cert: str = ""
    cert_password: str = ""
    spbill_create_ip: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class WxPayConfig:
    """WeChat Pay endpoints; the simulators stand in by changing these."""

    api_base_url: str = "https://api.mch.weixin.qq.com"
    authinfo_url: str = "https://payapp.weixin.qq.com/face/get_wxpayface_authinfo"
    ca_file: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_response_bytes: int = 65536


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """How the bridge on the peripheral is reached, and its deadlines."""

    transport: str = "adb"
    tcp_address: str = "127.0.0.1:7100"
    adb_path: str = ""
    adb_server: str = "127.0.0.1:5037"
    serial: str = ""
    address: str = ""
    bridge_socket: str = "facepay-bridge"
    call_timeout: float = 10.0
    face_timeout: float = 60.0
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 1.0
    reconnect_max_backoff: float = 10.0


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """initWxpayface proxy parameters, passed to the SDK as given."""

    ip: str = ""
    port: str = ""
    user: str = ""
    passwd: str = ""
    proxy_type: int = 0
    tcp_port: str = ""


@dataclass(frozen=True, slots=True)
class SdkConfig:
    """The face SDK's lifecycle policy."""

    mode: SdkMode = SdkMode.NON_AGGREGATE
    firewall: bool = False
    perform_mode: str = ""
    init_retries: int = 10  # 271378621 (initializing) answers taken before an init fails
    init_retry_delay: float = 0.5  # the SDK asks for ~500 ms between those inits
    init_retry_backoff: float = 2.0  # first retry of a failed init (INIT_FAILED), doubling
    init_retry_backoff_max: float = 60.0  # cap of that backoff
    proxy: ProxyConfig = field(default_factory=ProxyConfig)


@dataclass(frozen=True, slots=True)
class AuthinfoConfig:
    """authinfo cache policy."""

    refresh_ahead: float = 300.0


@dataclass(frozen=True, slots=True)
class PaymentsConfig:
    """Payment limits and the micropay state machine's timers (seconds)."""

    max_amount: int = 100_000
    poll_interval: float = 5.0
    reverse_after: float = 15.0
    # The reference's advice: still unknown 30 s after micropay, reverse.
    give_up_after: float = 30.0
    reverse_backoff: float = 1.0
    reverse_backoff_max: float = 30.0
    # No micropay can still reach WeChat Pay this long after it was sent (at least the WeChat
    # Pay client's whole-request timeout, 30 s): only then is ORDERNOTEXIST "never reached".
    in_flight_after: float = 30.0
    # Not settled this long after micropay: NEEDS_ATTENTION, retried every attention_retry
    # seconds, doubling up to attention_retry_max.
    attention_after: float = 120.0
    attention_retry: float = 60.0
    attention_retry_max: float = 900.0


@dataclass(frozen=True, slots=True)
class PayScoreConfig:
    """PayScore (v3) settings; api_v3_key and private_key are credential names or paths."""

    service_id: str = ""
    api_v3_key: str = ""
    private_key: str = ""
    serial_no: str = ""
    platform_certs: tuple[str, ...] = ()
    public_key: str = ""
    public_key_id: str = ""
    notify_url: str = ""
    # 429 and 5xx answers are retried with the same body: attempts and backoff (seconds).
    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 5.0
    # How long start-up waits for unresolved service orders before serving anyway, and the
    # backoff of the background queries that resolve them after an unknown outcome.
    resolve_wait: float = 10.0
    resolve_backoff: float = 2.0
    resolve_backoff_max: float = 60.0

    @property
    def enabled(self) -> bool:
        """Whether service orders are configured."""
        return bool(self.service_id)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole daemon configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    state: StateConfig = field(default_factory=StateConfig)
    log: LogConfig = field(default_factory=LogConfig)
    merchant: MerchantConfig = field(default_factory=MerchantConfig)
    wxpay: WxPayConfig = field(default_factory=WxPayConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    sdk: SdkConfig = field(default_factory=SdkConfig)
    authinfo: AuthinfoConfig = field(default_factory=AuthinfoConfig)
    payments: PaymentsConfig = field(default_factory=PaymentsConfig)
    payscore: PayScoreConfig = field(default_factory=PayScoreConfig)

    @property
    def state_dir(self) -> Path:
        """The state directory as a path."""
        return Path(self.state.dir)


def load(path: str | Path) -> Config:
    """Read, type-check and validate one TOML file."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return from_mapping(raw)


def from_mapping(raw: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML, refusing unknown keys and wrong types."""
    config: Config = _build(Config, raw, "")
    _validate(config)
    return config


def _build(cls: type[Any], raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where.rstrip('.') or 'config'}: unknown key(s): {', '.join(unknown)}")
    values = {name: _coerce(hints[name], raw[name], f"{where}{name}") for name in raw}
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where + ".")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in hint)
            raise ConfigError(f"{where}: must be one of {allowed}") from None
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: must be a list of strings")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: must be an integer")
    if not isinstance(value, hint):
        raise ConfigError(f"{where}: must be a {hint.__name__}")
    return value


def _validate(config: Config) -> None:
    if config.device.transport not in ("adb", "tcp"):
        raise ConfigError("device.transport: must be adb or tcp")
    if config.merchant.sign_type not in ("MD5", "HMAC-SHA256"):
        raise ConfigError("merchant.sign_type: must be MD5 or HMAC-SHA256")
    if config.sdk.perform_mode not in ("", "NORMAL_PRFORM", "LOW_PERFORM"):
        raise ConfigError("sdk.perform_mode: must be NORMAL_PRFORM or LOW_PERFORM")
    _validate_sdk(config.sdk)
    _validate_state(config.state)
    if config.payments.max_amount < 1:
        raise ConfigError("payments.max_amount: must be at least 1")
    positive = {
        "device.call_timeout": config.device.call_timeout,
        "device.face_timeout": config.device.face_timeout,
        "device.heartbeat_interval": config.device.heartbeat_interval,
        "device.heartbeat_timeout": config.device.heartbeat_timeout,
        "payments.poll_interval": config.payments.poll_interval,
        "payments.reverse_backoff": config.payments.reverse_backoff,
        "payments.in_flight_after": config.payments.in_flight_after,
        "payments.attention_retry": config.payments.attention_retry,
        "wxpay.connect_timeout": config.wxpay.connect_timeout,
        "wxpay.read_timeout": config.wxpay.read_timeout,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name}: must be greater than 0")
    _validate_payments(config.payments)
    _validate_payscore(config.payscore)


def _validate_state(state: StateConfig) -> None:
    if not 1 <= state.retention_days <= MAX_RETENTION_DAYS:
        raise ConfigError(f"state.retention_days: must be between 1 and {MAX_RETENTION_DAYS}")


def _validate_sdk(sdk: SdkConfig) -> None:
    if sdk.init_retries < 0:
        raise ConfigError("sdk.init_retries: must not be negative")
    if sdk.init_retry_delay <= 0:
        raise ConfigError("sdk.init_retry_delay: must be greater than 0")
    if sdk.init_retry_backoff <= 0 or sdk.init_retry_backoff_max < sdk.init_retry_backoff:
        raise ConfigError("sdk.init_retry_backoff/init_retry_backoff_max: need 0 < backoff <= max")


def _validate_payments(payments: PaymentsConfig) -> None:
    if payments.give_up_after < payments.reverse_after:
        raise ConfigError("payments.give_up_after: must not be less than payments.reverse_after")
    if payments.attention_after < max(payments.give_up_after, payments.in_flight_after):
        raise ConfigError(
            "payments.attention_after: must not be less than payments.give_up_after"
            " or payments.in_flight_after"
        )
    if payments.reverse_backoff_max < payments.reverse_backoff:
        raise ConfigError("payments.reverse_backoff_max: must not be less than reverse_backoff")
    if payments.attention_retry_max < payments.attention_retry:
        raise ConfigError("payments.attention_retry_max: must not be less than attention_retry")


def _validate_payscore(payscore: PayScoreConfig) -> None:
    if not payscore.enabled:
        return
    for name in ("private_key", "serial_no"):
        if not getattr(payscore, name):
            raise ConfigError(f"payscore.{name}: is required when payscore.service_id is set")
    if not payscore.platform_certs and not payscore.public_key:
        raise ConfigError("payscore: give platform_certs or public_key (with public_key_id)")
    if bool(payscore.public_key) != bool(payscore.public_key_id):
        raise ConfigError("payscore.public_key and payscore.public_key_id go together")
    if payscore.max_attempts < 1:
        raise ConfigError("payscore.max_attempts: must be at least 1")
    if payscore.backoff_initial < 0 or payscore.backoff_max < payscore.backoff_initial:
        raise ConfigError("payscore.backoff_initial/backoff_max: need 0 <= initial <= max")
    if payscore.resolve_backoff <= 0 or payscore.resolve_backoff_max < payscore.resolve_backoff:
        raise ConfigError("payscore.resolve_backoff/resolve_backoff_max: need 0 < backoff <= max")


def override(
    config: Config, *, socket: Path | None = None, state_dir: Path | None = None
) -> Config:
    """The config with command-line overrides applied."""
    if socket is not None:
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, socket=str(socket))
        )
    if state_dir is not None:
        config = dataclasses.replace(
            config, state=dataclasses.replace(config.state, dir=str(state_dir))
        )
    return config
