"""The ADB transport: the bridge stream to `localabstract:<socket>` through a real adb server.

Every adbutils call blocks, so each runs in a thread and is bounded by socket timeouts
derived from the caller's deadline. adbutils' own connection helper starts a server on the
default port when it cannot connect; this module connects without that fallback and starts
the configured server itself, so the daemon never talks to a stray adb server.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import ipaddress
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from adbutils import AdbClient, AdbConnection, AdbError, AdbTimeout

from facepayd.device.transport import PeripheralInfo, Transport
from facepayd.errors import ConfigError, DeviceError, DeviceLost
from facepayd.ops.logs import get_logger

__all__ = [
    "AdbSettings",
    "AdbTransport",
    "AppMissing",
    "CommandResult",
    "CommandRunner",
    "SubprocessRunner",
    "bundled_adb_path",
    "exec_bundled_adb",
]

_log = get_logger(__name__)

_T = TypeVar("_T")

# Device states beyond what adb reports: not listed at all, or no server to ask.
STATE_ABSENT = "absent"
STATE_NO_SERVER = "no-server"
STATE_UNKNOWN = "unknown"


class AppMissing(DeviceError):
    """A package the daemon needs is not installed on the peripheral."""

    reason = "DEVICE_APP_MISSING"

    def __init__(self, packages: Sequence[str], serial: str) -> None:
        super().__init__(f"not installed on {serial}: {', '.join(packages)}")
        self.packages = tuple(packages)
        self.serial = serial


def bundled_adb_path() -> str:
    """The adb binary shipped inside adbutils."""
    return str(importlib.resources.files("adbutils.binaries") / "adb")


def exec_bundled_adb() -> None:
    """`facepayd-adb`: exec adbutils' adb with our arguments (a stable path for adb.service)."""
    adb = bundled_adb_path()
    os.execv(adb, [adb, *sys.argv[1:]])  # noqa: S606 - replaces this process with adb


@dataclass(frozen=True, slots=True)
class AdbSettings:
    """How to reach the bridge through adb."""

    adb_path: str = ""  # "" = the adb bundled with adbutils
    server_host: str = "127.0.0.1"
    server_port: int = 5037
    serial: str = ""  # "" = the address below, else the only device present
    address: str = ""  # "host:port" to `adb connect`; "" = a USB or already known device
    bridge_socket: str = "facepay-bridge"
    face_app_package: str = "com.tencent.wxpayface"
    bridge_app_package: str = "com.facepay.bridge"
    bridge_start_component: str = "com.facepay.bridge/.BridgeService"
    op_timeout: float = 5.0  # bound for adb steps the caller gives no deadline for
    reconnect_backoff_cap: float = 10.0  # longest pause between track-devices reconnects
    server_home: str = ""  # HOME for a server we start (adb keeps its key in $HOME/.android)
    # False under systemd: a server started here would share the daemon's sandbox (no USB)
    # and die with every restart; adb.service runs it instead.
    may_start_server: bool = True

    @property
    def target(self) -> str:
        """The serial the device is known by on the adb server, "" when chosen at runtime."""
        return self.serial or self.address

    @property
    def resolved_adb_path(self) -> str:
        """The adb binary actually used."""
        return self.adb_path or bundled_adb_path()


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a finished command printed and returned."""

    returncode: int
    output: str


class CommandRunner(Protocol):
    """Runs a local command; injected so tests can stand in for the adb binary."""

    async def run(self, argv: Sequence[str], *, env: Mapping[str, str]) -> CommandResult:
        """Run argv to completion; a cancelled run kills the command."""
        ...


class SubprocessRunner:
    """Runs commands as real subprocesses, stdout and stderr merged."""

    async def run(self, argv: Sequence[str], *, env: Mapping[str, str]) -> CommandResult:
        """Run argv to completion; a cancelled run (a caller's timeout) kills it."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
        )
        try:
            out, _ = await proc.communicate()
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        code = proc.returncode if proc.returncode is not None else -1
        return CommandResult(code, out.decode(errors="replace"))


class AdbTransport(Transport):
    """Opens the bridge stream with adbutils `create_connection` semantics, bounded in time."""

    def __init__(self, settings: AdbSettings, *, runner: CommandRunner | None = None) -> None:
        self._settings = settings
        self._runner: CommandRunner = runner or SubprocessRunner()
        self._server_lock = asyncio.Lock()
        self._state = STATE_UNKNOWN
        self._tracker: _Tracker | None = None

    @property
    def settings(self) -> AdbSettings:
        """The settings this transport was built with."""
        return self._settings

    @property
    def device_state(self) -> str:
        """The device's adb state as last seen: device, offline, absent, no-server, unknown..."""
        return self._state

    def describe(self) -> str:
        s = self._settings
        target = s.target or "the only device"
        return f"adb {s.server_host}:{s.server_port} {target} localabstract:{s.bridge_socket}"

    async def open(self, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a new bridge stream; DeviceLost when the device or the bridge does not answer."""
        deadline = time.monotonic() + timeout
        await self._ensure_server(deadline)
        sock = await self._in_thread(self._open_bridge, deadline, cleanup=_close_socket)
        try:
            sock.settimeout(None)
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise

    async def inspect(self, timeout: float) -> PeripheralInfo:
        """Read serial, model and the face and bridge apps' versions over adb shell."""
        deadline = time.monotonic() + timeout
        await self._ensure_server(deadline)
        return await self._in_thread(self._inspect, deadline)

    async def require_apps(self, timeout: float) -> PeripheralInfo:
        """inspect(), raising AppMissing when the face app or the bridge app is not installed."""
        info = await self.inspect(timeout)
        missing = [
            package
            for package, installed in (
                (self._settings.face_app_package, info.face_app_installed),
                (self._settings.bridge_app_package, info.bridge_app_installed),
            )
            if not installed
        ]
        if missing:
            raise AppMissing(missing, info.serial or self._settings.target)
        return info

    async def start_bridge(self, timeout: float) -> None:
        """`am start-foreground-service -n <component>`; AppMissing when its app is missing."""
        deadline = time.monotonic() + timeout
        await self._ensure_server(deadline)
        serial, output, version = await self._in_thread(self._start_bridge, deadline)
        component = self._settings.bridge_start_component
        package = component.split("/", 1)[0]
        if "Error" not in output and "Starting service" in output:
            _log.info("bridge service started", serial=serial, component=component)
            return
        if version is None:
            raise AppMissing([package], serial)
        if "Not found" in output:
            raise ConfigError(
                f"device.bridge_start_component: {component} not found on {serial}"
                f" ({package} {version} is installed)"
            )
        raise DeviceError(f"starting {component} on {serial} failed: {output.strip()[:200]}")

    def track(self, on_change: Callable[[str], None] | None = None) -> None:
        """Follow the device's adb state in a thread; on_change runs on this loop on each change."""
        if self._tracker is not None:
            return
        loop = asyncio.get_running_loop()

        def report(state: str) -> None:
            self._state = state
            if on_change is not None:
                # A loop that already ended has nobody left to tell.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(on_change, state)

        self._tracker = _Tracker(self._settings, report)
        self._tracker.start()

    async def close(self) -> None:
        """Stop tracking; bridge streams already opened belong to their callers."""
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            await asyncio.to_thread(tracker.stop)

    # -- the adb server ------------------------------------------------------------------

    async def _ensure_server(self, deadline: float) -> None:
        """Start the configured adb server when nothing listens on its port."""
        s = self._settings
        async with self._server_lock:
            if await asyncio.to_thread(_listening, s.server_host, s.server_port, 0.5):
                return
            if not _is_loopback(s.server_host):
                raise DeviceLost(f"adb server at {s.server_host}:{s.server_port} is unreachable")
            if not s.may_start_server:
                raise DeviceLost(
                    f"no adb server answers at {s.server_host}:{s.server_port}; under systemd"
                    " facepayd does not start one in its sandbox: start adb.service"
                    " (systemctl enable --now adb.service) and check its journal"
                )
            adb = s.resolved_adb_path
            if not await asyncio.to_thread(_executable, adb):
                raise ConfigError(f"device.adb_path: no executable adb at {adb}")
            # The libusb backend delays start-up by seconds; the native one still sees USB devices.
            env = {**os.environ, "ADB_LIBUSB": "0"}
            if s.server_home:
                env["HOME"] = s.server_home
            argv = [adb, "-P", str(s.server_port), "start-server"]
            _log.info("starting adb server", port=s.server_port, adb=adb)
            try:
                async with asyncio.timeout(_remaining(deadline)):
                    result = await self._runner.run(argv, env=env)
            except TimeoutError as exc:
                raise DeviceLost(f"adb start-server on port {s.server_port} timed out") from exc
            except OSError as exc:
                raise ConfigError(f"device.adb_path: cannot run {adb}: {exc}") from exc
            if result.returncode != 0 or not await asyncio.to_thread(
                _listening, s.server_host, s.server_port, _remaining(deadline)
            ):
                detail = result.output.strip()[:300]
                raise DeviceLost(
                    f"adb server on port {s.server_port} did not start (exit {result.returncode}):"
                    f" {detail}"
                )

    async def _in_thread(
        self,
        func: Callable[[float], _T],
        deadline: float,
        *,
        cleanup: Callable[[_T], None] | None = None,
    ) -> _T:
        """Run a blocking adb step in a thread; a result that comes too late is cleaned up."""
        future = asyncio.ensure_future(asyncio.to_thread(self._translated, func, deadline))
        try:
            # Socket timeouts bound the thread; this outer bound only covers adbutils' fixed waits.
            return await asyncio.wait_for(asyncio.shield(future), _remaining(deadline) + 1.0)
        except (TimeoutError, asyncio.CancelledError) as exc:
            future.add_done_callback(lambda f: _cleanup_late(f, cleanup))
            if isinstance(exc, TimeoutError):
                raise DeviceLost(f"{self.describe()}: adb did not answer in time") from exc
            raise

    def _translated(self, func: Callable[[float], _T], deadline: float) -> _T:
        """Call func, turning adbutils' and the socket layer's errors into ours."""
        try:
            return func(deadline)
        except (ConfigError, DeviceError):
            raise
        except AdbTimeout as exc:
            raise DeviceLost(f"{self.describe()}: adb timed out: {exc}") from exc
        except (AdbError, OSError, EOFError) as exc:
            raise DeviceLost(f"{self.describe()}: {_describe_adb_error(exc)}") from exc

    # -- blocking steps, run in a thread -------------------------------------------------

    def _client(self, deadline: float) -> _Client:
        s = self._settings
        return _Client(s.server_host, s.server_port, socket_timeout=_remaining(deadline))

    def _select_device(self, deadline: float) -> tuple[_Client, str]:
        """The serial to use, connecting the configured address when it is offline or missing."""
        s = self._settings
        client = self._client(deadline)
        states = _device_states(client)
        if s.address:
            serial = s.target
            if states.get(serial) != "device":
                self._reconnect(client, serial, states.get(serial), deadline)
            return client, serial
        if s.serial:
            state = states.get(s.serial)
            if state != "device":
                self._state = state or STATE_ABSENT
                raise DeviceLost(
                    f"device {s.serial} is {state or 'not attached'} on adb server"
                    f" {s.server_host}:{s.server_port} (seen: {_listing(states)})"
                )
            return client, s.serial
        ready = sorted(serial for serial, state in states.items() if state == "device")
        if not ready:
            raise DeviceLost(
                f"no device on adb server {s.server_host}:{s.server_port}"
                f" (seen: {_listing(states)}); set device.serial or device.address"
            )
        if len(ready) > 1:
            raise ConfigError(
                f"several devices on adb server {s.server_host}:{s.server_port}"
                f" ({', '.join(ready)}); set device.serial to choose one"
            )
        return client, ready[0]

    def _reconnect(self, client: _Client, serial: str, state: str | None, deadline: float) -> None:
        """adb disconnect + connect the configured address, then wait until it is a device."""
        address = self._settings.address
        _log.info("adb reconnecting", address=address, state=state or STATE_ABSENT)
        if state is not None:
            client.disconnect(address)
        answer = str(client.connect(address, timeout=_remaining(deadline)))
        if "connected to" not in answer or "unable" in answer or "failed" in answer:
            raise DeviceLost(f"adb connect {address}: {answer.strip()}")
        # The handshake finishes after `connect` answers; wait-for blocks until it is done.
        self._client(deadline).wait_for(serial, state="device", timeout=_remaining(deadline))

    def _open_bridge(self, deadline: float) -> socket.socket:
        client, serial = self._select_device(deadline)
        service = f"localabstract:{self._settings.bridge_socket}"
        conn = _transport_to(client, serial, deadline)
        try:
            conn.send_command(service)
            conn.check_okay()
        except AdbTimeout as exc:
            conn.close()
            raise DeviceLost(f"bridge {service} on {serial} did not answer in time") from exc
        except AdbError as exc:
            conn.close()
            raise DeviceLost(
                f"bridge {service} on {serial} refused the stream ({exc});"
                f" is {self._settings.bridge_app_package} running?"
            ) from exc
        except BaseException:
            conn.close()
            raise
        sock: socket.socket = conn.conn
        return sock

    def _shell(self, client: _Client, serial: str, command: str, deadline: float) -> str:
        """`adb shell command` (v1) with both the open and the read bounded by the deadline."""
        conn = _transport_to(client, serial, deadline)
        try:
            conn.send_command(f"shell:{command}")
            conn.check_okay()
            conn.conn.settimeout(_remaining(deadline))
            return str(conn.read_until_close())
        finally:
            conn.close()

    def _inspect(self, deadline: float) -> PeripheralInfo:
        s = self._settings
        client, serial = self._select_device(deadline)
        props = self._shell(
            client, serial, "getprop ro.serialno; getprop ro.product.model", deadline
        ).splitlines()
        props += [""] * (2 - len(props))
        face = _version_name(
            self._shell(client, serial, f"dumpsys package {s.face_app_package}", deadline),
            s.face_app_package,
        )
        bridge = _version_name(
            self._shell(client, serial, f"dumpsys package {s.bridge_app_package}", deadline),
            s.bridge_app_package,
        )
        return PeripheralInfo(
            serial=props[0].strip() or serial,
            model=props[1].strip(),
            face_app_version=face or "",
            bridge_app_version=bridge or "",
            face_app_installed=face is not None,
            bridge_app_installed=bridge is not None,
            extra={"adb_serial": serial},
        )

    def _start_bridge(self, deadline: float) -> tuple[str, str, str | None]:
        """(serial, am output, versionName: None when am failed and the app is missing)."""
        component = self._settings.bridge_start_component
        client, serial = self._select_device(deadline)
        output = self._shell(
            client, serial, f"am start-foreground-service -n {component}", deadline
        )
        if "Error" not in output and "Starting service" in output:
            return serial, output, ""
        package = component.split("/", 1)[0]
        dumpsys = self._shell(client, serial, f"dumpsys package {package}", deadline)
        return serial, output, _version_name(dumpsys, package)


class _DirectConnection(AdbConnection):  # type: ignore[misc]
    """An adbutils connection that fails instead of starting an adb server of its own."""

    def _safe_connect(self) -> socket.socket:
        sock: socket.socket = self._create_socket()
        return sock


class _Client(AdbClient):  # type: ignore[misc]
    """adbutils' client over _DirectConnection."""

    def __init__(self, host: str, port: int, *, socket_timeout: float) -> None:
        super().__init__(host, port, socket_timeout=socket_timeout)
        self._timeout = socket_timeout

    def make_connection(self, timeout: float | None = None) -> AdbConnection:
        conn = _DirectConnection(self.host, self.port)
        conn.conn.settimeout(timeout or self._timeout)
        return conn


class _Tracker:
    """Follows host:track-devices in a thread and reports the configured device's state."""

    def __init__(self, settings: AdbSettings, report: Callable[[str], None]) -> None:
        self._settings = settings
        self._report = report
        self._stopped = threading.Event()
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name="adb-track", daemon=True)
        self._last = ""

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (blocking)."""
        self._stopped.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError, AdbError):
                conn.conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=self._settings.op_timeout)

    def _run(self) -> None:
        backoff = 0.1
        s = self._settings
        while not self._stopped.is_set():
            try:
                client = _Client(s.server_host, s.server_port, socket_timeout=s.op_timeout)
                self._conn = client.make_connection()
                self._conn.send_command("host:track-devices")
                self._conn.check_okay()
                self._conn.conn.settimeout(None)  # updates come only on change
                backoff = 0.1
                while not self._stopped.is_set():
                    self._emit(self._state_in(self._conn.read_string_block()))
            except (AdbError, OSError, ValueError) as exc:
                if self._stopped.is_set():
                    break
                self._emit(STATE_NO_SERVER)
                _log.debug("adb track-devices interrupted", error=str(exc))
            finally:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, s.reconnect_backoff_cap)

    def _state_in(self, listing: str) -> str:
        states: dict[str, str] = {}
        for line in listing.splitlines():
            serial, _, state = line.strip().partition("\t")
            if state:
                states[serial] = state
        target = self._settings.target
        if target:
            return states.get(target, STATE_ABSENT)
        if len(states) == 1:
            return next(iter(states.values()))
        return STATE_ABSENT if not states else STATE_UNKNOWN

    def _emit(self, state: str) -> None:
        if state != self._last:
            self._last = state
            _log.info("adb device state", target=self._settings.target, state=state)
            self._report(state)


def _transport_to(client: _Client, serial: str, deadline: float) -> Any:
    """A server connection switched to the device, closed again when that fails.

    adbutils' open_transport leaves the connection open when the switch fails.
    """
    conn = client.make_connection(timeout=_remaining(deadline))
    try:
        conn.send_command(f"host:transport:{serial}")
        conn.check_okay()
    except BaseException:
        conn.close()
        raise
    return conn


def _device_states(client: _Client) -> dict[str, str]:
    return {info.serial: info.state for info in client.list()}


def _listing(states: Mapping[str, str]) -> str:
    return ", ".join(f"{serial} {state}" for serial, state in sorted(states.items())) or "none"


def _version_name(dumpsys: str, package: str) -> str | None:
    """versionName of package in `dumpsys package` output; None when it is not installed."""
    start = dumpsys.find(f"Package [{package}]")
    if start < 0:
        return None
    section = dumpsys[start + 1 :]
    end = section.find("Package [")
    match = re.search(r"versionName=(\S*)", section if end < 0 else section[:end])
    return match.group(1) if match else ""


def _describe_adb_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError) or "Connection refused" in str(exc):
        return "adb server unreachable (connection refused)"
    if isinstance(exc, EOFError):
        return "adb closed the connection"
    return f"adb error: {exc}"


def _remaining(deadline: float) -> float:
    """Seconds left until deadline, never zero (a zero socket timeout means non-blocking)."""
    return max(deadline - time.monotonic(), 0.01)


def _listening(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 1.0)):
            return True
    except OSError:
        return False


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _close_socket(sock: socket.socket) -> None:
    sock.close()


def _cleanup_late(future: asyncio.Future[_T], cleanup: Callable[[_T], None] | None) -> None:
    """Release what a step abandoned by its caller produced, and consume its error."""
    if not future.cancelled() and future.exception() is None and cleanup is not None:
        cleanup(future.result())
