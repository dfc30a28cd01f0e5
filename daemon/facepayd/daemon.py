"""The composition root: builds every layer from the config and runs them in order."""

from __future__ import annotations

import fcntl
import gc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from facepayd.clock import Clock, SystemClock
from facepayd.device.adb import AdbSettings, AdbTransport
from facepayd.device.tcp import TcpTransport
from facepayd.device.transport import Transport
from facepayd.errors import ConfigError
from facepayd.face.authinfo import AuthinfoCache, AuthinfoKey
from facepayd.face.flows import FaceFlows
from facepayd.face.lifecycle import Lifecycle, State
from facepayd.face.sessions import FaceSessions
from facepayd.journal import Journal, JournalHealth, Retention
from facepayd.ops import logs, secrets
from facepayd.ops.config import Config
from facepayd.ops.diagnose import Diagnostics
from facepayd.ops.metrics import Metrics, TextfileWriter
from facepayd.ops.systemd import Notifier, watchdog_loop
from facepayd.payments.machine import PaymentTimings
from facepayd.payments.refunds import RefundService, RefundTimings
from facepayd.payments.service import PaymentService
from facepayd.payscore.service import PayScoreService
from facepayd.rpc.server import RpcServer
from facepayd.rpc.service import Domain, TerminalService
from facepayd.tasks import TaskOwner
from facepayd.wxpay.http import ClientCert, WxPayHttpClients, build_http_clients
from facepayd.wxpay.models import AuthinfoGrant, Merchant
from facepayd.wxpay.v2 import WxPayV2Client
from facepayd.wxpay.v3 import PayScoreClient, platform_key_from_certificate

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Outside:
    """Connections to the outside world, injectable for tests."""

    clock: Clock
    transport: Transport
    http: WxPayHttpClients
    api_key: str
    payscore_keys: PayScoreKeys | None = None
    # The merchant certificate's public part, for `facepay doctor` (expiry); None: none set.
    client_certificate: x509.Certificate | None = None


@dataclass(frozen=True, slots=True)
class PayScoreKeys:
    """The v3 merchant signing key and the WeChat Pay keys answers are verified with."""

    merchant_key: RSAPrivateKey = field(repr=False)
    merchant_serial_no: str
    platform_keys: dict[str, RSAPublicKey]


def build_outside(config: Config, clock: Clock | None = None) -> Outside:
    """The real outside connections described by the config."""
    api_key = secrets.read_secret_text(config.merchant.api_key) if config.merchant.api_key else ""
    if not api_key:
        raise ConfigError("merchant.api_key: is required (a credential name or a 0600 file)")
    logs.register_secret(api_key)
    timeout = httpx.Timeout(config.wxpay.read_timeout, connect=config.wxpay.connect_timeout)
    cert = load_merchant_cert(config)
    http = build_http_clients(config.wxpay.ca_file or None, cert, timeout)
    return Outside(
        clock=clock or SystemClock(),
        transport=build_transport(config),
        http=http,
        api_key=api_key,
        payscore_keys=load_payscore_keys(config),
        client_certificate=cert.certificate if cert is not None else None,
    )


def load_merchant_cert(config: Config) -> ClientCert | None:
    """The merchant certificate the config names (PKCS#12 by suffix, else PEM), or None."""
    try:
        return _client_cert(config)
    except ConfigError as exc:
        # The loaders say "client certificate"; the operator needs the key to fix.
        raise ConfigError(f"merchant.cert: {exc}") from None


def load_payscore_keys(config: Config) -> PayScoreKeys | None:
    """The PayScore keys named by the config, or None when PayScore is not configured."""
    p = config.payscore
    if not p.enabled:
        return None
    # Checked now so a wrong key fails at start, not at the first encrypted resource.
    if p.api_v3_key and len(secrets.read_secret_text(p.api_v3_key).encode()) != 32:
        raise ConfigError("payscore.api_v3_key: must be 32 bytes")
    try:
        key = serialization.load_pem_private_key(secrets.read_secret_bytes(p.private_key), None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("payscore.private_key: not an unencrypted PEM private key") from exc
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError("payscore.private_key: must be an RSA key")
    platform: dict[str, RSAPublicKey] = {}
    for path in p.platform_certs:
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"payscore.platform_certs: cannot read {path}") from exc
        except ValueError as exc:
            raise ConfigError(f"payscore.platform_certs: {path} is not a PEM certificate") from exc
        serial, public = platform_key_from_certificate(cert)
        platform[serial] = public
    if p.public_key:
        try:
            public_key = serialization.load_pem_public_key(Path(p.public_key).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError("payscore.public_key: cannot read a PEM public key") from exc
        if not isinstance(public_key, RSAPublicKey):
            raise ConfigError("payscore.public_key: must be an RSA key")
        platform[p.public_key_id] = public_key
    return PayScoreKeys(key, p.serial_no, platform)


def under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a service manager started this process ($INVOCATION_ID or $NOTIFY_SOCKET)."""
    env = os.environ if environ is None else environ
    return bool(env.get("INVOCATION_ID") or env.get("NOTIFY_SOCKET"))


def build_transport(config: Config, environ: Mapping[str, str] | None = None) -> Transport:
    """TCP or ADB, as configured; under systemd the adb server is adb.service's, never ours."""
    device = config.device
    if device.transport == "tcp":
        host, _, port = device.tcp_address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError("device.tcp_address: must be host:port")
        return TcpTransport(host, int(port))
    server_host, _, server_port = device.adb_server.rpartition(":")
    if not server_host or not server_port.isdigit():
        raise ConfigError("device.adb_server: must be host:port")
    return AdbTransport(
        AdbSettings(
            adb_path=device.adb_path,
            server_host=server_host,
            server_port=int(server_port),
            serial=device.serial,
            address=device.address,
            bridge_socket=device.bridge_socket,
            op_timeout=device.call_timeout,
            reconnect_backoff_cap=device.reconnect_max_backoff,
            may_start_server=not under_systemd(environ),
        )
    )


def _client_cert(config: Config) -> ClientCert | None:
    ref = config.merchant.cert
    if not ref:
        return None
    password = (
        secrets.read_secret_bytes(config.merchant.cert_password)
        if config.merchant.cert_password
        else None
    )
    if password:
        logs.register_secret(password)
    path = secrets.locate_secret(ref)
    if path.suffix.lower() in (".p12", ".pfx"):
        return ClientCert.load_pkcs12_file(path, password)
    return ClientCert.load_pem_files(path, path, password)


class InstanceLock:
    """An flock in the state directory, so a second daemon cannot steal the socket."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or fail at once naming the holder's lock file."""
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another facepayd is running (it holds {self._path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ServingHealth:
    """SERVING while recovered, the terminal usable (or in a session) and the journal writable."""

    def __init__(
        self, server: RpcServer, lifecycle: Lifecycle, journal: JournalHealth, tasks: TaskOwner
    ) -> None:
        self._server = server
        self._lifecycle = lifecycle
        self._journal = journal
        self._tasks = tasks
        self.recovered = False
        self._closed = False
        self._reported: bool | None = None
        journal.add_listener(self.update)

    @property
    def serving(self) -> bool:
        """What health should say now."""
        lifecycle = self._lifecycle
        usable = lifecycle.usable() or lifecycle.in_session
        return self.recovered and usable and self._journal.writable

    def update(self) -> None:
        """Report a change of serving (called on every lifecycle or journal change)."""
        serving = self.serving
        if self._closed or serving == self._reported:
            return
        self._reported = serving
        self._tasks.spawn(self._server.set_serving(serving), name="health")

    def close(self) -> None:
        """Report nothing more (the daemon is stopping: it says NOT_SERVING itself)."""
        self._closed = True
        self._journal.remove_listener(self.update)


class Daemon:
    """Owns every layer; start() recovers before reporting ready, stop() unwinds in order."""

    def __init__(self, config: Config, outside: Outside, notifier: Notifier | None = None) -> None:
        self.config = config
        self._outside = outside
        self._notifier = notifier or Notifier()
        clock = outside.clock
        state_dir = config.state_dir
        merchant = config.merchant
        self._lock = InstanceLock(state_dir / "facepayd.lock")
        self.metrics = Metrics()
        self._metrics_writer = (
            TextfileWriter(
                self.metrics,
                Path(config.metrics.textfile),
                interval=config.metrics.interval,
                clock=clock,
            )
            if config.metrics.enabled
            else None
        )
        self.wxpay = WxPayV2Client(
            Merchant(merchant.appid, merchant.mch_id, merchant.sub_appid, merchant.sub_mch_id),
            outside.api_key,
            merchant.sign_type,
            api_base_url=config.wxpay.api_base_url,
            authinfo_url=config.wxpay.authinfo_url,
            http=outside.http.api,
            secapi_http=outside.http.secapi,
            clock=clock,
            max_response_bytes=config.wxpay.max_response_bytes,
            # Shorter than payments.in_flight_after by a margin (checked at config load): past
            # the bound no request of ours can still arrive, so ORDERNOTEXIST/REFUNDNOTEXIST
            # mean never.
            total_timeout=config.wxpay.request_timeout,
        )
        self.lifecycle = Lifecycle(
            transport=outside.transport,
            clock=clock,
            device=config.device,
            sdk=config.sdk,
            merchant=merchant,
            bridge_observer=self.metrics,
        )
        self.authinfo = AuthinfoCache(
            key=AuthinfoKey(
                merchant.device_id,
                merchant.appid,
                merchant.mch_id,
                merchant.sub_appid,
                merchant.sub_mch_id,
                merchant.store_id,
            ),
            fetch=self._fetch_authinfo,
            clock=clock,
            path=state_dir / "authinfo.json",
            refresh_ahead=config.authinfo.refresh_ahead,
            can_refresh=lambda: self.lifecycle.state is State.READY,
        )
        self.sessions = FaceSessions(
            lifecycle=self.lifecycle,
            authinfo=self.authinfo,
            merchant=merchant,
            device=config.device,
            clock=clock,
        )
        self.sessions.add_end_listener(self.metrics.session_ended)
        keys = outside.payscore_keys
        self.payscore_client = (
            None
            if keys is None
            else PayScoreClient(
                merchant.mch_id,
                merchant.appid,
                config.payscore.service_id,
                keys.merchant_key,
                keys.merchant_serial_no,
                keys.platform_keys,
                base_url=config.wxpay.api_base_url,
                http=outside.http.api,
                clock=clock,
                max_attempts=config.payscore.max_attempts,
                backoff_initial=config.payscore.backoff_initial,
                backoff_max=config.payscore.backoff_max,
                public_key_id=config.payscore.public_key_id if config.payscore.public_key else "",
                sub_mchid=merchant.sub_mch_id,
                sub_appid=merchant.sub_appid,
            )
        )
        self._journal: Journal | None = None
        self.payments: PaymentService | None = None
        self.refunds: RefundService | None = None
        self.payscore: PayScoreService | None = None
        self.flows: FaceFlows | None = None
        self._server: RpcServer | None = None
        self._health: ServingHealth | None = None
        self._recovered = False
        self._tasks = TaskOwner("daemon")

    async def start(self) -> None:
        """Lock, open the journal, resume payments, serve, connect; READY after recovery."""
        self._lock.acquire()
        config = self.config
        clock = self._outside.clock
        self._journal = await Journal.open(config.state_dir / "journal.sqlite3", clock=clock)
        self._journal.payments.add_listener(self.metrics.payment_event)
        p = config.payments
        self.payments = PaymentService(
            self._journal.payments,
            self.wxpay,
            clock,
            PaymentTimings(
                poll_interval=p.poll_interval,
                reverse_after=p.reverse_after,
                give_up_after=p.give_up_after,
                reverse_backoff=p.reverse_backoff,
                reverse_backoff_max=p.reverse_backoff_max,
                in_flight_after=p.in_flight_after,
                attention_after=p.attention_after,
                attention_retry=p.attention_retry,
                attention_retry_max=p.attention_retry_max,
            ),
            merchant_spbill_ip=config.merchant.spbill_create_ip,
            device_info=config.merchant.device_id,
        )
        # Refunds keep the payments' timers: the same backend, the same in-flight bound.
        self.refunds = RefundService(
            self._journal.refunds,
            self.wxpay,
            clock,
            RefundTimings(
                poll_interval=p.poll_interval,
                poll_max=p.attention_retry_max,
                retry_backoff=p.reverse_backoff,
                retry_backoff_max=p.reverse_backoff_max,
                # The slow cadence is a minute by default, what FREQUENCY_LIMITED asks for.
                throttled_wait=p.attention_retry,
                in_flight_after=p.in_flight_after,
                attention_after=p.attention_after,
                attention_retry=p.attention_retry,
                attention_retry_max=p.attention_retry_max,
                processing_attention_after=config.refunds.processing_attention_days * 86_400.0,
                processing_attention_answers=config.refunds.processing_attention_answers,
            ),
            available=self._outside.http.secapi is not None,
        )
        self.metrics.sample(
            needs_attention=self.payments.needs_attention_count,
            journal_size=self._journal.database.size_bytes,
            reconnects=lambda: self.lifecycle.counters.reconnects,
            refunds_needs_attention=self.refunds.needs_attention_count,
        )
        self.flows = FaceFlows(
            sessions=self.sessions, payments=self.payments, lifecycle=self.lifecycle, clock=clock
        )
        self.payscore = PayScoreService(
            journal=self._journal.service_orders,
            client=self.payscore_client,
            clock=clock,
            service_id=config.payscore.service_id,
            notify_url=config.payscore.notify_url,
            resolve_backoff=config.payscore.resolve_backoff,
            resolve_backoff_max=config.payscore.resolve_backoff_max,
            in_flight_after=config.payscore.in_flight_after,
            service_risk_cap=config.payscore.service_risk_cap or None,
        )
        diagnostics = Diagnostics(
            config=config,
            clock=clock,
            lifecycle=self.lifecycle,
            authinfo=self.authinfo,
            payments=self.payments,
            serving=lambda: self._health is not None and self._health.serving,
            http=self._outside.http.api,
            client_certificate=self._outside.client_certificate,
            sessions=self.sessions,
            under_systemd=under_systemd(),
            refunds=self.refunds,
        )
        domain = Domain(
            config=config,
            lifecycle=self.lifecycle,
            authinfo=self.authinfo,
            sessions=self.sessions,
            flows=self.flows,
            payments=self.payments,
            payscore=self.payscore,
            diagnostics=diagnostics,
            refunds=self.refunds,
        )
        self._server = RpcServer(
            TerminalService(domain),
            Path(config.server.socket),
            reflection_on=config.server.reflection,
        )
        self._health = ServingHealth(
            self._server, self.lifecycle, self._journal.health, self._tasks
        )
        resumed = await self.payments.resume_unfinished()
        log.info("payments_resumed", count=resumed)
        resumed = await self.refunds.resume_unfinished()
        log.info("refunds_resumed", count=resumed)
        unresolved = await self.payscore.recover(config.payscore.resolve_wait)
        log.info("service_orders_recovered", count=unresolved)
        self._recovered = True
        self._health.recovered = True
        self.authinfo.load()
        await self._server.start()
        self.lifecycle.add_listener(self._on_lifecycle_change)
        await self.lifecycle.start()
        self.authinfo.start()
        self._tasks.spawn(
            watchdog_loop(self._notifier, clock, lambda: self._recovered), name="watchdog"
        )
        retention = Retention(
            self._journal.payments,
            clock,
            retention_days=config.state.retention_days,
            refunds=self._journal.refunds,
        )
        self._tasks.spawn(retention.run(), name="retention")
        self._health.update()
        if self._metrics_writer is not None:
            self._metrics_writer.start()
        # Everything built so far (modules, descriptors, the layers) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks it mid-RPC.
        gc.collect()
        gc.freeze()
        self._notifier.ready(status="serving")
        log.info("daemon_ready", socket=config.server.socket)

    async def stop(self) -> None:
        """NOT_SERVING → no new sessions → stop the server → persist → close everything."""
        self._notifier.stopping()
        log.info("daemon_stopping")
        grace = self.config.server.stop_grace
        if self._health is not None:
            self._health.close()
        if self._server is not None:
            await self._server.set_serving(False)
            # A face UI left open would hold the stop for the whole grace period.
            await self.sessions.quit_for_shutdown()
            await self._server.stop(grace)
        if self.flows is not None:
            await self.flows.close()
        if self.payments is not None:
            await self.payments.close(grace)
        if self.refunds is not None:
            await self.refunds.close(grace)
        if self.payscore is not None:
            await self.payscore.close(grace)
        await self.authinfo.stop()
        await self.lifecycle.stop()
        await self._outside.transport.close()
        await self._outside.http.aclose()
        await self._tasks.close()
        if self._metrics_writer is not None:
            # The last values stay in the file (node_exporter's mtime metric shows they are old).
            await self._metrics_writer.stop()
        if self._journal is not None:
            await self._journal.close()
        self._lock.release()
        log.info("daemon_stopped")

    def _on_lifecycle_change(self) -> None:
        if self._health is None:
            return
        # Serving while a session could start or one is under way (and the journal writes);
        # INIT_FAILED, FAULT and the rest are not serving.
        self._health.update()
        if self.lifecycle.state is State.READY:
            self.authinfo.poke()

    async def _fetch_authinfo(self) -> AuthinfoGrant:
        try:
            rawdata = await self.lifecycle.run(lambda sdk: sdk.rawdata())
            merchant = self.config.merchant
            grant = await self.wxpay.get_authinfo(
                rawdata=rawdata,
                store_id=merchant.store_id,
                store_name=merchant.store_name,
                device_id=merchant.device_id,
            )
        except Exception:
            self.metrics.authinfo_refreshed(ok=False)
            raise
        self.metrics.authinfo_refreshed(ok=True)
        return grant
