"""Typed configuration, loaded once from one TOML file; unknown keys are an error."""

from __future__ import annotations

import dataclasses
import enum
import functools
import ipaddress
import math
import os
import ssl
import stat
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facepayd.errors import ConfigError
from facepayd.ops import secrets
from facepayd.ops.logs import _LEVELS


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
    # The v2 client gives up on a whole request (connect, send, every read) after this long.
    # payments.in_flight_after must leave a margin past it (see in_flight_margin).
    request_timeout: float = 20.0
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
    # No micropay or refund can still reach WeChat Pay this long after it was sent: at least
    # wxpay.request_timeout plus a margin (checked at load): only then is ORDERNOTEXIST "never
    # reached" and REFUNDNOTEXIST a reason to send a refund again.
    in_flight_after: float = 30.0
    # Not settled this long after micropay: NEEDS_ATTENTION, retried every attention_retry
    # seconds, doubling up to attention_retry_max.
    attention_after: float = 120.0
    attention_retry: float = 60.0
    attention_retry_max: float = 900.0


@dataclass(frozen=True, slots=True)
class RefundsConfig:
    """Refunds accepted by WeChat Pay (PROCESSING) that do not end: when an operator is asked."""

    # Refunds to a bank card take days: NEEDS_ATTENTION only this many days after the first send.
    processing_attention_days: int = 3
    # Or after this many answers in a row that cannot settle it (REFUNDNOTEXIST, another amount,
    # a definite query error). Either way it is still queried, slowly, and never sent again.
    processing_attention_answers: int = 10


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
    # A query says a call whose outcome is unknown did NOT land (a create answered 404, say) only
    # this long after its last request may have left; at a restart, counted from the start.
    in_flight_after: float = 30.0
    # The service ID's own risk cap in fen (from the merchant platform), which bounds what an
    # ESTIMATE_ORDER_COST order may charge; 0: unknown here, so only WeChat Pay enforces it.
    service_risk_cap: int = 0

    @property
    def enabled(self) -> bool:
        """Whether service orders are configured."""
        return bool(self.service_id)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics written for node_exporter's textfile collector; off while empty."""

    textfile: str = ""  # absolute path ending in .prom, rewritten atomically every interval
    interval: float = 15.0

    @property
    def enabled(self) -> bool:
        """Whether the metrics file is written."""
        return bool(self.textfile)


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
    refunds: RefundsConfig = field(default_factory=RefundsConfig)
    payscore: PayScoreConfig = field(default_factory=PayScoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    @property
    def state_dir(self) -> Path:
        """The state directory as a path."""
        return Path(self.state.dir)


# sun_path holds 108 bytes including the terminating NUL; grpc raises RuntimeError past it.
UNIX_PATH_MAX = 107
# Every duration is in seconds. Longer than a day is a mistake, and huge values overflow the
# C timeval that socket timeouts become.
MAX_SECONDS = 86_400.0

# Inclusive bounds of every integer key: a new integer key without bounds fails every load.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "state.retention_days": (1, MAX_RETENTION_DAYS),
    "sdk.init_retries": (0, 1000),
    "sdk.proxy.proxy_type": (0, 3),
    "wxpay.max_response_bytes": (1024, 16 << 20),
    "payments.max_amount": (1, 2**31 - 1),
    "payscore.max_attempts": (1, 20),
    "payscore.service_risk_cap": (0, 2**31 - 1),
    "refunds.processing_attention_days": (1, 60),
    "refunds.processing_attention_answers": (1, 1000),
}

Rule = typing.Callable[[str], str | None]


def load(path: str | Path) -> Config:
    """Read, type-check and validate one TOML file (values only; see check_paths)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return from_mapping(raw)


def load_checked(
    path: str | Path, *, socket: Path | None = None, state_dir: Path | None = None
) -> Config:
    """The config the daemon starts with: loaded, overridden, and its paths checked."""
    config = override(load(path), socket=socket, state_dir=state_dir)
    check_paths(config)
    return config


def from_mapping(raw: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML, refusing unknown keys, wrong types and unsafe values."""
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
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: must be a number of seconds")
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: must be an integer")
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string")
    return value


# String rules: each returns what is wrong (naming the rule, never echoing the value) or None.


def _required(rule: Rule) -> Rule:
    def check(value: str) -> str | None:
        return "must not be empty" if not value else rule(value)

    return check


def _optional(rule: Rule) -> Rule:
    return lambda value: None if not value else rule(value)


def _text(max_bytes: int) -> Rule:
    def check(value: str) -> str | None:
        if not value.isprintable():
            return "must not contain control characters"
        if len(value.encode()) > max_bytes:
            return f"must be at most {max_bytes} bytes"
        return None

    return check


def _token(max_bytes: int) -> Rule:
    """Printable ASCII without spaces: identifiers WeChat Pay and the SDK compare byte-wise."""

    def check(value: str) -> str | None:
        if not all("!" <= c <= "~" for c in value):
            return "must be printable ASCII without spaces"
        if len(value) > max_bytes:
            return f"must be at most {max_bytes} bytes"
        return None

    return check


def _choice(*allowed: str) -> Rule:
    return lambda value: None if value in allowed else f"must be one of {', '.join(allowed)}"


def _https(value: str) -> str | None:
    # Signed requests carry auth codes and face data: never in clear, whatever the host.
    if not value.isprintable() or " " in value:
        return "must be an https:// URL without spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        return "must be a valid https:// URL"
    if parts.scheme != "https":
        return "must be an https:// URL (plain http would send signed payment data in clear)"
    if not parts.hostname or port == 0:
        return "must be an https:// URL naming a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials in the URL"
    return None


def _host_port(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if not host or not value.isprintable() or " " in value:
        return "must be host:port"
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return "must be host:port with a port from 1 to 65535"
    return None


def _ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be an IPv4 or IPv6 address"
    return None


def _port(value: str) -> str | None:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        return "must be a port from 1 to 65535"
    return None


def _socket_path(value: str) -> str | None:
    if not value.isprintable():
        return "must not contain control characters"
    if len(os.fsencode(value)) > UNIX_PATH_MAX:
        return f"must be at most {UNIX_PATH_MAX} bytes (the Unix socket path limit)"
    return None


_PATH = _text(4096)
# Credential names or paths of 0600 files; checked (and read) by check_paths.
_SECRET = _PATH


def _prom_file(value: str) -> str | None:
    # node_exporter reads only *.prom files, so anything else would be written for nobody.
    if not Path(value).is_absolute() or Path(value).suffix != ".prom":
        return "must be an absolute path ending in .prom"
    return _PATH(value)


# The rule of every string key (a tuple key's rule applies to each item); a new string key
# without a rule fails every load.
_STRING_RULES: dict[str, Rule] = {
    "server.socket": _required(_socket_path),
    "state.dir": _required(_PATH),
    "log.level": _choice(*_LEVELS),
    "merchant.appid": _required(_token(32)),
    "merchant.mch_id": _required(_token(32)),
    "merchant.sub_appid": _optional(_token(32)),
    "merchant.sub_mch_id": _optional(_token(32)),
    "merchant.store_id": _required(_token(32)),
    "merchant.store_name": _required(_text(128)),
    "merchant.device_id": _required(_token(32)),
    "merchant.api_key": _required(_SECRET),
    "merchant.sign_type": _choice("MD5", "HMAC-SHA256"),
    "merchant.cert": _optional(_SECRET),
    "merchant.cert_password": _optional(_SECRET),
    "merchant.spbill_create_ip": _required(_ip),
    "wxpay.api_base_url": _required(_https),
    "wxpay.authinfo_url": _required(_https),
    "wxpay.ca_file": _optional(_PATH),
    "device.transport": _choice("adb", "tcp"),
    "device.tcp_address": _required(_host_port),
    "device.adb_path": _optional(_PATH),
    "device.adb_server": _required(_host_port),
    "device.serial": _optional(_token(64)),
    "device.address": _optional(_host_port),
    "device.bridge_socket": _required(_token(100)),
    "sdk.perform_mode": _optional(_choice("NORMAL_PRFORM", "LOW_PERFORM")),
    "sdk.proxy.ip": _optional(_token(255)),
    "sdk.proxy.port": _optional(_port),
    "sdk.proxy.user": _optional(_text(255)),
    "sdk.proxy.passwd": _optional(_text(255)),
    "sdk.proxy.tcp_port": _optional(_port),
    "payscore.service_id": _optional(_token(32)),
    "payscore.api_v3_key": _optional(_SECRET),
    "payscore.private_key": _optional(_SECRET),
    "payscore.serial_no": _optional(_token(64)),
    "payscore.platform_certs": _required(_PATH),
    "payscore.public_key": _optional(_PATH),
    "payscore.public_key_id": _optional(_token(64)),
    "payscore.notify_url": _optional(_https),
    "metrics.textfile": _optional(_prom_file),
}


def _validate(config: Config) -> None:
    _check_values(config, "")
    _validate_sdk(config.sdk)
    _validate_payments(config.payments)
    _validate_in_flight(config)
    _validate_payscore(config.payscore)


def _check_values(section: Any, prefix: str) -> None:
    """Every key against its rule: numbers finite and bounded, strings by _STRING_RULES."""
    for f in dataclasses.fields(section):
        key = f"{prefix}{f.name}"
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _check_values(value, f"{key}.")
        elif value is None or isinstance(value, bool | enum.Enum):
            continue
        elif isinstance(value, float):
            # NaN compares false with everything, so test finiteness first.
            if not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
                raise ConfigError(
                    f"{key}: must be a finite number of seconds, more than 0 and at most"
                    f" {MAX_SECONDS:g}"
                )
        elif isinstance(value, int):
            low, high = _INT_RANGES[key]
            if not low <= value <= high:
                raise ConfigError(f"{key}: must be an integer from {low} to {high}")
        elif isinstance(value, str):
            _check_string(key, value)
        else:
            for item in value:
                _check_string(key, item)


def _check_string(key: str, value: str) -> None:
    problem = _STRING_RULES[key](value)
    if problem is not None:
        raise ConfigError(f"{key}: {problem}")


def _validate_sdk(sdk: SdkConfig) -> None:
    if sdk.init_retry_backoff_max < sdk.init_retry_backoff:
        raise ConfigError("sdk.init_retry_backoff_max: must not be less than init_retry_backoff")


def in_flight_margin(request_timeout: float) -> float:
    """How far past the client's request timeout a request may still be worked on at WeChat Pay.

    Our client gives up at request_timeout, but a request that reached WeChat Pay may still be
    processed after that: a quarter of the timeout, at least one second.
    """
    return max(1.0, request_timeout / 4)


def _validate_in_flight(config: Config) -> None:
    timeout = config.wxpay.request_timeout
    needed = timeout + in_flight_margin(timeout)
    if config.payments.in_flight_after < needed:
        raise ConfigError(
            f"payments.in_flight_after: must be at least wxpay.request_timeout ({timeout:g} s)"
            f" plus a margin of {in_flight_margin(timeout):g} s, i.e. {needed:g} s: a refund or a"
            " micropay may still arrive at WeChat Pay until then"
        )


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
        raise ConfigError("payscore.platform_certs: give platform_certs or public_key")
    if bool(payscore.public_key) != bool(payscore.public_key_id):
        raise ConfigError("payscore.public_key_id: goes together with payscore.public_key")
    if payscore.backoff_max < payscore.backoff_initial:
        raise ConfigError("payscore.backoff_max: must not be less than backoff_initial")
    if payscore.resolve_backoff_max < payscore.resolve_backoff:
        raise ConfigError("payscore.resolve_backoff_max: must not be less than resolve_backoff")


def override(
    config: Config, *, socket: Path | None = None, state_dir: Path | None = None
) -> Config:
    """The config with command-line overrides applied, held to the same rules."""
    if socket is not None:
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, socket=str(socket))
        )
    if state_dir is not None:
        config = dataclasses.replace(
            config, state=dataclasses.replace(config.state, dir=str(state_dir))
        )
    _validate(config)
    return config


def check_paths(config: Config) -> None:
    """Every path the config names, as the daemon will use it; secret files are read."""
    _check_dir("state.dir", Path(config.state.dir))
    _check_socket(Path(config.server.socket))
    if config.metrics.textfile:
        # The file is replaced in its directory: node_exporter's, which must let us write.
        _check_dir("metrics.textfile", Path(config.metrics.textfile).parent)
    merchant = config.merchant
    _named("merchant.api_key", lambda: secrets.read_secret_text(merchant.api_key))
    if merchant.cert:
        _named("merchant.cert", lambda: secrets.locate_secret(merchant.cert))
    if merchant.cert_password:
        _named("merchant.cert_password", lambda: secrets.read_secret_bytes(merchant.cert_password))
    if config.wxpay.ca_file:
        _named("wxpay.ca_file", lambda: secrets.check_readable_file(Path(config.wxpay.ca_file)))
        try:
            ssl.create_default_context(cafile=config.wxpay.ca_file)
        except (ssl.SSLError, OSError):
            raise ConfigError("wxpay.ca_file: is not a PEM CA bundle") from None
    device = config.device
    if device.transport == "adb" and device.adb_path:
        _named("device.adb_path", lambda: secrets.check_readable_file(Path(device.adb_path)))
        if not os.access(device.adb_path, os.X_OK):
            raise ConfigError("device.adb_path: must be executable")
    payscore = config.payscore
    if not payscore.enabled:
        return
    if payscore.api_v3_key:
        _named("payscore.api_v3_key", lambda: secrets.read_secret_text(payscore.api_v3_key))
    _named("payscore.private_key", lambda: secrets.read_secret_bytes(payscore.private_key))
    for cert in payscore.platform_certs:
        check = functools.partial(secrets.check_readable_file, Path(cert))
        _named("payscore.platform_certs", check)
    if payscore.public_key:
        public_key = Path(payscore.public_key)
        _named("payscore.public_key", lambda: secrets.check_readable_file(public_key))


def _named(key: str, check: typing.Callable[[], object]) -> None:
    """Run a check whose ConfigError does not know the key, prefixing the key."""
    try:
        check()
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _check_dir(key: str, path: Path) -> None:
    """A directory the daemon writes in: present and writable, or creatable in its parent."""
    probe = path
    # Path.exists() is False for a path under a regular file (ENOTDIR); the walk finds the file.
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}: {probe} is not a directory")
    # os.access asks the kernel with this process's credentials and mounts (a read-only
    # filesystem refuses even root), which is what mkdir and open will meet.
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "directory" if probe == path else f"parent directory {probe} (to create it in)"
        raise ConfigError(f"{key}: the {what} must be writable by this user")


def _check_socket(path: Path) -> None:
    _check_dir("server.socket", path.parent)
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"server.socket: cannot inspect {path}: {exc.strerror}") from None
    # A stale socket is replaced at start; anything else there is somebody's file.
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(f"server.socket: {path} exists and is not a socket")
