"""The daemon-side checks of `facepay doctor`: each says what it found and, failing, what to try."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import structlog
from cryptography import x509

from facepayd.clock import Clock
from facepayd.errors import FacepayError, TerminalBusy
from facepayd.face.authinfo import AuthinfoCache
from facepayd.face.lifecycle import FACE_APP_PACKAGE, Lifecycle, State
from facepayd.face.sessions import FaceSessions
from facepayd.ops import logs
from facepayd.ops.config import Config, SdkMode
from facepayd.payments.models import PaymentState
from facepayd.payments.refunds import RefundService
from facepayd.payments.service import PaymentService

log = structlog.get_logger(__name__)

# WeChat Pay refuses v3 requests signed more than 5 minutes off; a minute is already a warning
# sign that time sync has stopped.
MAX_CLOCK_SKEW = 60.0
# Shown (and still ✓) this long before the merchant certificate expires.
CERT_RENEW_DAYS = 30
# At most this many NEEDS_ATTENTION orders and recent errors are listed.
LISTED = 5
# How long the adb server may take to answer host:version.
ADB_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome; detail and fix never carry a secret."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


class Diagnostics:
    """Runs every daemon-side check over the daemon's live objects."""

    def __init__(
        self,
        *,
        config: Config,
        clock: Clock,
        lifecycle: Lifecycle,
        authinfo: AuthinfoCache,
        payments: PaymentService,
        serving: Callable[[], bool],
        http: httpx.AsyncClient,
        client_certificate: x509.Certificate | None,
        sessions: FaceSessions | None = None,
        under_systemd: bool = False,
        refunds: RefundService | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._lifecycle = lifecycle
        self._authinfo = authinfo
        self._payments = payments
        self._serving = serving
        self._http = http
        self._certificate = client_certificate
        # The camera's claim: the bridge probe takes it, so no face session runs meanwhile.
        self._sessions = sessions
        # Under systemd the adb server is adb.service's: its fix names the unit.
        self._under_systemd = under_systemd
        self._refunds = refunds

    async def run(self) -> list[Check]:
        """Every check, in the order an engineer works through them."""
        checks = [
            self.health(),
            await self.adb_server(),
            self.device(),
            *self.apps(),
            await self.bridge(),
            self.sdk_state(),
            self.authinfo(),
            await self.clock_skew(),
            self.merchant_cert(),
            self.journal(),
            await self.needs_attention(),
            self.recent_errors(),
        ]
        log.info("diagnose", failed=[c.name for c in checks if not c.ok])
        return checks

    def health(self) -> Check:
        """gRPC health as the POS sees it."""
        if self._serving():
            return Check("health", True, "SERVING")
        return Check(
            "health",
            False,
            "NOT_SERVING: payments are refused",
            "fix the failing checks below; health follows by itself",
        )

    async def adb_server(self) -> Check:
        """The adb server the adb transport talks to: answering, and its version."""
        device = self._config.device
        if device.transport != "adb":
            return Check("adb_server", True, f"not used (device.transport = {device.transport})")
        host, _, port = device.adb_server.rpartition(":")
        try:
            async with asyncio.timeout(ADB_TIMEOUT):
                version = await _adb_server_version(host, int(port))
        except (OSError, TimeoutError, ValueError) as exc:
            why = "no answer in time" if isinstance(exc, TimeoutError) else _oserror_text(exc)
            if self._under_systemd:
                fix = (
                    "start the adb unit: `systemctl enable --now adb.service`; if it fails,"
                    " `systemctl status adb.service` and `journalctl -u adb.service -e`"
                    f" (it must listen on {device.adb_server})"
                )
            else:
                fix = (
                    f"start one: `adb -P {port} start-server` (facepayd starts it by itself when"
                    " not under systemd: check device.adb_path), or fix device.adb_server"
                )
            return Check("adb_server", False, f"{device.adb_server}: {why}", fix)
        unit = "; adb.service" if self._under_systemd else ""
        return Check("adb_server", True, f"{device.adb_server} answering, version {version}{unit}")

    def device(self) -> Check:
        """The peripheral: reachable, with its serial and model."""
        lc = self._lifecycle
        info, hello = lc.peripheral, lc.hello
        serial = info.serial or (hello.device_serial if hello else "") or "?"
        model = info.model or (hello.device_model if hello else "") or "?"
        detail = (
            f"{lc.transport_description}; serial {serial}, model {model}, state {lc.state.name}"
        )
        if lc.state in (State.DISCONNECTED, State.FAULT) or hello is None:
            if lc.fault:
                detail += f": {lc.fault}"
            return Check("device", False, detail, self._device_fix())
        return Check("device", True, detail)

    def _device_fix(self) -> str:
        device = self._config.device
        if device.transport == "tcp":
            return (
                f"check the peripheral is powered and on the network at {device.tcp_address},"
                " and that its bridge app runs"
            )
        return (
            "check the peripheral's power and USB cable; that the adb server runs"
            f" (`systemctl status adb`, listening on {device.adb_server}) and `adb devices`"
            " lists the peripheral as `device` (not `unauthorized` or `offline`)"
        )

    def apps(self) -> list[Check]:
        """The face app and the bridge app: installed, their versions, the SDK gates."""
        lc = self._lifecycle
        info, hello = lc.peripheral, lc.hello
        face_installed = info.face_app_installed
        face_version = info.face_app_version or (hello.face_app_version if hello else "")
        if face_installed is None and hello is not None:
            face_installed = bool(hello.face_app_version)
        checks: list[Check] = []
        if face_installed is False:
            checks.append(
                Check(
                    "face_app",
                    False,
                    f"{FACE_APP_PACKAGE} is not installed on the peripheral",
                    f"install the WeChat Pay face app ({FACE_APP_PACKAGE}) from the vendor's"
                    " package, then `facepay reinit`",
                )
            )
        elif face_installed is None:
            checks.append(
                Check(
                    "face_app",
                    False,
                    "unknown: the peripheral is not connected",
                    "fix the device check first",
                )
            )
        else:
            version = lc.version
            gates = ", ".join(
                f"{name} {'yes' if on else 'no'}"
                for name, on in (
                    ("quit", version.has_quit),
                    ("firewall", version.has_firewall),
                    ("perform_mode", version.has_perform_mode),
                    ("tcp proxy", version.has_tcp_proxy),
                    ("updatePayResult", version.has_update_pay_result),
                )
            )
            checks.append(
                Check(
                    "face_app",
                    True,
                    f"{FACE_APP_PACKAGE} {face_version or '?'}; SDK {version}: {gates}",
                )
            )
        bridge_installed = info.bridge_app_installed
        if bridge_installed is None:
            bridge_installed = hello is not None or None
        bridge_version = info.bridge_app_version or (hello.bridge_version if hello else "")
        if bridge_installed is False:
            checks.append(
                Check(
                    "bridge_app",
                    False,
                    "the facepay bridge app is not installed on the peripheral",
                    "install the facepay bridge app; `facepay bridge-check` verifies it",
                )
            )
        elif bridge_installed is None:
            checks.append(
                Check(
                    "bridge_app",
                    False,
                    "unknown: the peripheral is not connected",
                    "fix the device check first",
                )
            )
        else:
            checks.append(Check("bridge_app", True, f"bridge {bridge_version or '?'}"))
        return checks

    async def bridge(self) -> Check:
        """A round trip through the bridge: one harmless SDK call (getWxpayfaceRawdata).

        The probe holds the camera's claim, taken like a session's (atomically): a face session
        is never raced, it runs instead of the probe or waits (or is busy) for its few ms.
        """
        lc = self._lifecycle
        hello = lc.hello
        if lc.in_session:
            return Check("bridge", True, "skipped: a session is running (it uses the bridge)")
        if lc.state is State.UNINITIALIZED and lc.mode is SdkMode.AGGREGATE and hello is not None:
            # Aggregate mode releases the SDK between sessions: no SDK call to probe with.
            return Check(
                "bridge",
                True,
                f"released between sessions (aggregate mode); bridge {hello.bridge_version}"
                " connected",
            )
        if lc.state is not State.READY:
            return Check(
                "bridge",
                False,
                f"no round trip: the SDK is {lc.state.name}",
                "fix the device and sdk checks first",
            )
        try:
            with contextlib.ExitStack() as claim:
                if self._sessions is not None:
                    claim.enter_context(self._sessions.reserve("doctor"))
                started = time.monotonic()
                # rawdata is a secret: it is dropped here, only the timing is kept.
                await lc.run(lambda sdk: sdk.rawdata())
                elapsed_ms = (time.monotonic() - started) * 1000
        except TerminalBusy:
            return Check("bridge", True, "skipped: a session is running (it uses the bridge)")
        except FacepayError as exc:
            return Check(
                "bridge",
                False,
                f"getWxpayfaceRawdata failed: {exc}",
                "restart the bridge app on the peripheral (or `systemctl restart facepayd`);"
                " `facepay bridge-check` names what the bridge gets wrong",
            )
        return Check("bridge", True, f"getWxpayfaceRawdata answered in {elapsed_ms:.0f} ms")

    def sdk_state(self) -> Check:
        """The SDK lifecycle: usable, or why not."""
        lc = self._lifecycle
        state = lc.state
        fine = {State.READY, State.IN_SESSION, State.REINITIALIZING, State.INITIALIZING}
        if lc.mode is SdkMode.AGGREGATE:
            fine |= {State.UNINITIALIZED, State.RELEASING}
        if state in fine:
            return Check("sdk", True, f"{state.name} ({lc.mode.value} mode)")
        detail = state.name + (f": {lc.fault}" if lc.fault else "")
        if state is State.INIT_FAILED:
            fix = (
                "check the merchant ids in [merchant] and the peripheral's network (the reason"
                " above), then `facepay reinit`; the daemon also retries by itself"
            )
        elif state in (State.FAULT, State.DISCONNECTED):
            fix = "fix the device and face_app checks first"
        else:
            fix = "`facepay reinit`"
        return Check("sdk", False, detail, fix)

    def authinfo(self) -> Check:
        """The cached authinfo: how old, when it expires, and whether refreshing it works."""
        cache = self._authinfo
        expires_at, fetched_at, error = cache.expires_at, cache.fetched_at, cache.refresh_error
        now = self._clock.time()
        fix = (
            "it is fetched while the SDK is READY: fix the sdk and clock_skew checks, check"
            " that WeChat Pay is reachable and [merchant] store_id/device_id are right"
        )
        failing = f"; refreshing it fails: {error}" if error else ""
        if expires_at is None:
            return Check("authinfo", False, f"none cached{failing}", fix)
        fetched = (
            f"fetched {_duration(now - fetched_at)} ago"
            if fetched_at is not None
            else "fetched at an unknown time"
        )
        left = expires_at - now
        if left <= 0:
            detail = f"{fetched}, expired {_duration(-left)} ago{failing}"
            return Check("authinfo", False, detail, fix)
        at = datetime.fromtimestamp(expires_at, UTC)
        detail = f"{fetched}, expires in {_duration(left)} ({at:%Y-%m-%d %H:%M} UTC)"
        if error:
            return Check("authinfo", False, detail + failing, fix)
        return Check("authinfo", True, detail)

    async def clock_skew(self) -> Check:
        """This clock against the Date header of WeChat Pay's API server."""
        url = self._config.wxpay.api_base_url.rstrip("/") + "/"
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            return Check(
                "clock_skew",
                False,
                f"cannot reach {url}: {type(exc).__name__}",
                "check the network, DNS, proxy and firewall towards WeChat Pay, and that"
                " wxpay.ca_file (if set) holds the CA that signs its certificate",
            )
        header = response.headers.get("date", "")
        try:
            server = email.utils.parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError):
            return Check(
                "clock_skew",
                False,
                f"{url} sent no usable Date header",
                "check that nothing (a proxy) rewrites WeChat Pay's answers",
            )
        skew = self._clock.time() - server
        detail = f"{skew:+.0f} s against WeChat Pay's Date header"
        if abs(skew) > MAX_CLOCK_SKEW:
            return Check(
                "clock_skew",
                False,
                detail,
                "sync the clock: `timedatectl set-ntp true`, then `timedatectl timesync-status`",
            )
        return Check("clock_skew", True, detail)

    def merchant_cert(self) -> Check:
        """The merchant API certificate's validity."""
        cert = self._certificate
        if cert is None:
            return Check(
                "merchant_cert",
                False,
                "none configured: reverse (secapi) cannot run",
                "set merchant.cert to the merchant API certificate (apiclient_cert.p12)",
            )
        now = datetime.now(UTC)
        expires, starts = cert.not_valid_after_utc, cert.not_valid_before_utc
        renew = (
            "download a new API certificate from the merchant platform (pay.weixin.qq.com:"
            " Account, API security), install it where merchant.cert points, restart facepayd"
        )
        if expires <= now:
            return Check("merchant_cert", False, f"expired on {expires:%Y-%m-%d %H:%M} UTC", renew)
        if starts > now:
            return Check(
                "merchant_cert",
                False,
                f"not valid before {starts:%Y-%m-%d %H:%M} UTC",
                "check the clock (clock_skew), or install the current certificate",
            )
        days = (expires - now).days
        note = f"; renew it: {days} day(s) left" if days < CERT_RENEW_DAYS else ""
        return Check(
            "merchant_cert",
            True,
            f"{cert.subject.rfc4514_string()}, expires {expires:%Y-%m-%d}{note}",
        )

    def journal(self) -> Check:
        """The payment journal: taking writes, and its size."""
        size = self._payments.journal_bytes()
        detail = f"{self._config.state_dir / 'journal.sqlite3'}, {size / 1_000_000:.1f} MB"
        if not self._payments.journal_writable:
            return Check(
                "journal",
                False,
                f"not writable: {detail}",
                "check the disk under state.dir: free space (`df -h`), a read-only mount,"
                " permissions; the daemon probes and recovers by itself",
            )
        return Check("journal", True, f"writable, {detail}")

    async def needs_attention(self) -> Check:
        """Payments and refunds an operator must settle by hand."""
        count = self._payments.needs_attention_count()
        if count == 0:
            return await self._refunds_needing_attention()
        try:
            page, _ = await self._payments.list([PaymentState.NEEDS_ATTENTION], page_size=LISTED)
        except FacepayError as exc:
            page, count_note = [], f" (cannot list them: {exc})"
        else:
            count_note = ""
        listed = "; ".join(
            f"{p.out_trade_no}: {p.attention_reason}: {p.attention_action}" for p in page
        )
        return Check(
            "needs_attention",
            False,
            f"{count} payment(s){count_note}: {listed}",
            "do each payment's action (`facepay payment list --state NEEDS_ATTENTION`); the"
            " daemon keeps querying them and clears them once WeChat Pay settles",
        )

    async def _refunds_needing_attention(self) -> Check:
        """Refunds an operator must settle by hand (checked once no payment needs one)."""
        refunds = [] if self._refunds is None else await self._refunds.needing_attention()
        if not refunds:
            return Check("needs_attention", True, "no payment or refund needs an operator")
        listed = "; ".join(
            f"{r.out_refund_no} (payment {r.out_trade_no}): {r.attention_reason}:"
            f" {r.attention_action}"
            for r in refunds[:LISTED]
        )
        return Check(
            "needs_attention",
            False,
            f"{len(refunds)} refund(s): {listed}",
            "do each refund's action (`facepay payment refunds OUT_TRADE_NO`); the daemon keeps"
            " querying them and clears them once WeChat Pay settles",
        )

    def recent_errors(self) -> Check:
        """Error-level log events since the daemon started (the last few)."""
        errors = logs.recent_errors()
        if not errors:
            return Check("recent_errors", True, "none logged since start")
        listed = "; ".join(f"{e.timestamp} {e.event} ({e.logger})" for e in errors[-LISTED:])
        return Check(
            "recent_errors",
            False,
            f"{len(errors)} recent: {listed}",
            "read them whole: `journalctl -u facepayd -p err`",
        )


def _duration(seconds: float) -> str:
    """A duration as an engineer reads it: 45 s, 48 min, 1 h 12 min."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


async def _adb_server_version(host: str, port: int) -> int:
    """The adb server's internal version, from its host:version service (adb's SERVICES.TXT)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = b"host:version"
        writer.write(b"%04x%s" % (len(request), request))
        await writer.drain()
        status = await reader.readexactly(4)
        if status != b"OKAY":
            raise ValueError(f"the adb server answered {status!r}")
        length = int(await reader.readexactly(4), 16)
        return int(await reader.readexactly(length), 16)
    except asyncio.IncompleteReadError as exc:
        raise ValueError("the adb server closed the connection") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _oserror_text(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)
