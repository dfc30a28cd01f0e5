"""The face SDK's lifecycle: connect, init once (or per session), release, firewall, faults."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import structlog

from facepayd.clock import Clock
from facepayd.device.bridge import BridgeClient, BridgeHello
from facepayd.device.reconnect import Reconnector
from facepayd.device.sdk import Sdk, SdkVersion
from facepayd.device.transport import PeripheralInfo, Transport
from facepayd.errors import (
    SDK_INITIALIZING,
    SDK_NOT_INITIALIZED,
    DeviceError,
    DeviceLost,
    FacepayError,
    NotSupported,
    SdkError,
    SdkNotInitialized,
    SdkNotReady,
)
from facepayd.ops.config import DeviceConfig, MerchantConfig, SdkConfig, SdkMode

log = structlog.get_logger(__name__)

FACE_APP_PACKAGE = "com.tencent.wxpayface"

# SDK version gates from the reference.
UPDATE_PAY_RESULT_BELOW = (2, 13)
FIREWALL_FROM = (2, 21)
QUIT_FROM = (2, 22)


class State(enum.Enum):
    """Where the SDK lifecycle stands."""

    DISCONNECTED = "DISCONNECTED"  # no bridge connection; the reconnector is working on it
    UNINITIALIZED = "UNINITIALIZED"  # connected, SDK not initialized
    INITIALIZING = "INITIALIZING"  # initWxpayface in flight
    READY = "READY"  # initialized and idle
    IN_SESSION = "IN_SESSION"  # a face session holds the camera
    RELEASING = "RELEASING"  # releaseWxpayface in flight
    FAULT = "FAULT"  # the peripheral was lost or stopped answering; see fault
    STOPPING = "STOPPING"  # the daemon is shutting down


@dataclass(slots=True)
class Counters:
    """What the lifecycle has done, for status and tests."""

    inits: int = 0
    releases: int = 0
    reconnects: int = 0


def parse_version(text: str) -> tuple[int, ...]:
    """ "2.22.1" -> (2, 22, 1); unparseable parts count as 0."""
    parts: list[int] = []
    for piece in text.strip().split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


BridgeFactory = Callable[[Transport], BridgeClient]
T = TypeVar("T")


class Lifecycle:
    """Owns the bridge connection and the SDK's init/release policy."""

    def __init__(
        self,
        *,
        transport: Transport,
        clock: Clock,
        device: DeviceConfig,
        sdk: SdkConfig,
        merchant: MerchantConfig,
        bridge_factory: BridgeFactory | None = None,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._device = device
        self._sdk = sdk
        self._merchant = merchant
        self._bridge_factory = bridge_factory or self._default_bridge
        self._bridge: BridgeClient | None = None
        self._state = State.DISCONNECTED
        self._fault = ""
        self._hello: BridgeHello | None = None
        self._info = PeripheralInfo()
        self._init_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._listeners: list[Callable[[], None]] = []
        self._firewall = False
        self._bridge_calls_before = 0
        self._connected_once = False
        self.counters = Counters()
        self._reconnector = Reconnector(
            connect=self._connect,
            on_connected=self._on_connected,
            clock=clock,
            max_backoff=device.reconnect_max_backoff,
        )

    # ------------------------------------------------------------------ public

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def fault(self) -> str:
        """Why the lifecycle is in FAULT, without secrets."""
        return self._fault

    @property
    def hello(self) -> BridgeHello | None:
        """The bridge's hello of the current connection."""
        return self._hello

    @property
    def peripheral(self) -> PeripheralInfo:
        """What the transport found out about the peripheral."""
        return self._info

    @property
    def mode(self) -> SdkMode:
        """Aggregate or non-aggregate."""
        return self._sdk.mode

    @property
    def firewall_enabled(self) -> bool:
        """Whether enableFirewall succeeded on this connection."""
        return self._firewall

    @property
    def transport_description(self) -> str:
        """The transport, for status."""
        return self._transport.describe()

    @property
    def bridge_calls(self) -> int:
        """SDK calls sent over every connection so far."""
        current = self._bridge.calls_sent if self._bridge else 0
        return self._bridge_calls_before + current

    @property
    def sdk_version(self) -> tuple[int, ...]:
        """The connected SDK's version, (0,) when unknown."""
        return parse_version(self._hello.sdk_version) if self._hello else (0,)

    @property
    def version(self) -> SdkVersion:
        """The connected SDK's version and its gates."""
        return SdkVersion(self.sdk_version)

    async def run(self, call: Callable[[Sdk], Awaitable[T]]) -> T:
        """Run one typed SDK call; 271378620 (not initialized) → init, then the call once more."""
        sdk = self._typed_sdk()
        try:
            return await call(sdk)
        except SdkNotInitialized:
            log.info("sdk_not_initialized")
            await self._set_state(State.UNINITIALIZED)
            await self.ensure_initialized()
            return await call(self._typed_sdk())

    def supports_update_pay_result(self) -> bool:
        """updateWxpayfacePayResult exists only below SDK 2.13."""
        return self.sdk_version < UPDATE_PAY_RESULT_BELOW

    def supports_quit(self) -> bool:
        """quitWxpayface exists from SDK 2.22."""
        return self.sdk_version >= QUIT_FROM

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call back on every state change (status watchers)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling back."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    async def start(self) -> None:
        """Begin connecting; returns at once, the reconnector keeps trying in the background."""
        self._reconnector.start()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the SDK can take a session (READY, or UNINITIALIZED in aggregate mode)."""

        def usable() -> bool:
            return self._usable()

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(usable), timeout)
            except TimeoutError:
                return False
        return True

    def usable(self) -> bool:
        """Whether a face session could start now."""
        return self._usable()

    async def stop(self) -> None:
        """Stop reconnecting, release in aggregate mode, close the bridge."""
        await self._set_state(State.STOPPING)
        await self._reconnector.stop()
        if self._bridge is not None:
            await self._bridge.close()

    async def call(
        self,
        method: str,
        params: Mapping[str, str],
        *,
        timeout: float | None = None,
        on_update_result: Callable[[dict[str, str]], None] | None = None,
    ) -> dict[str, str]:
        """Call the SDK; 271378620 (not initialized) → init, then the call once more."""
        info = await self._raw_call(method, params, timeout, on_update_result)
        if info.get("err_code") == SDK_NOT_INITIALIZED:
            log.info("sdk_not_initialized", method=method)
            await self._set_state(State.UNINITIALIZED)
            await self.ensure_initialized()
            info = await self._raw_call(method, params, timeout, on_update_result)
        return info

    async def ensure_initialized(self) -> None:
        """Init the SDK unless it already is; concurrent callers share one init."""
        async with self._init_lock:
            if self._state in (State.READY, State.IN_SESSION):
                return
            await self._init_locked()

    async def reinitialize(self) -> None:
        """Release (if initialized) and init again, on operator request."""
        async with self._init_lock:
            self._require_connected()
            if self._state in (State.READY, State.IN_SESSION):
                await self._release_locked()
            await self._init_locked()

    async def release(self) -> None:
        """Release the SDK (frees the camera for other payment platforms)."""
        async with self._init_lock:
            self._require_connected()
            if self._state == State.UNINITIALIZED:
                return
            await self._release_locked()

    async def enable_firewall(self) -> None:
        """enableFirewall(mch_id, sub_mch_id), SDK 2.21 and later."""
        self._require_version(FIREWALL_FROM, "enableFirewall")
        await self.ensure_initialized()
        await self._checked("enableFirewall", self._firewall_params())
        self._firewall = True
        await self._notify()

    async def disable_firewall(self) -> None:
        """disableFirewall, SDK 2.21 and later."""
        self._require_version(FIREWALL_FROM, "disableFirewall")
        await self.ensure_initialized()
        await self._checked("disableFirewall", self._firewall_params())
        self._firewall = False
        await self._notify()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Hold the SDK for one face session: init first (aggregate: always), release after."""
        self._require_connected()
        await self.ensure_initialized()
        await self._set_state(State.IN_SESSION)
        try:
            yield
        finally:
            if self._state == State.IN_SESSION:
                if self._sdk.mode is SdkMode.AGGREGATE:
                    async with self._init_lock:
                        with contextlib.suppress(FacepayError):
                            await self._release_locked()
                else:
                    await self._set_state(State.READY)

    # ------------------------------------------------------------------ private

    def _default_bridge(self, transport: Transport) -> BridgeClient:
        return BridgeClient(
            transport,
            self._clock,
            open_timeout=self._device.call_timeout,
            hello_timeout=self._device.call_timeout,
            heartbeat_interval=self._device.heartbeat_interval,
            heartbeat_timeout=self._device.heartbeat_timeout,
        )

    def _typed_sdk(self) -> Sdk:
        self._require_connected()
        assert self._bridge is not None
        return Sdk(
            self._bridge.call,
            self.version,
            call_timeout=self._device.call_timeout,
            face_timeout=self._device.face_timeout,
        )

    def _usable(self) -> bool:
        if self._sdk.mode is SdkMode.AGGREGATE:
            return self._state in (State.READY, State.UNINITIALIZED)
        return self._state is State.READY

    async def _connect(self) -> None:
        if self._state is State.STOPPING:
            return
        bridge = self._bridge_factory(self._transport)
        try:
            hello = await bridge.connect()
        except FacepayError as exc:
            await bridge.close()
            # Status shows why the peripheral cannot be reached while the reconnector retries.
            self._fault = str(exc)
            await self._notify()
            if isinstance(exc, DeviceLost):
                # A bridge app that is installed but not running is started for the next round.
                with contextlib.suppress(FacepayError):
                    await self._transport.start_bridge(self._device.call_timeout)
            raise
        except BaseException:
            await bridge.close()
            raise
        if self._bridge is not None:
            self._bridge_calls_before += self._bridge.calls_sent
        self._bridge = bridge
        self._hello = hello
        bridge.add_lost_listener(self._on_lost)

    async def _on_connected(self) -> None:
        if self._connected_once:
            self.counters.reconnects += 1
        self._connected_once = True
        with contextlib.suppress(FacepayError):
            self._info = await self._transport.inspect(self._device.call_timeout)
        self._firewall = False
        if self._info.face_app_installed is False:
            await self._enter_fault(
                f"the WeChat face app ({FACE_APP_PACKAGE}) is not installed on the peripheral"
            )
            return
        self._fault = ""
        await self._set_state(State.UNINITIALIZED)
        if self._sdk.mode is SdkMode.NON_AGGREGATE:
            try:
                await self.ensure_initialized()
            except FacepayError as exc:
                await self._enter_fault(f"init failed: {exc}")

    def _on_lost(self, exc: BaseException) -> None:
        if self._state is State.STOPPING:
            return
        reason = f"peripheral lost: {exc}" if str(exc) else "peripheral lost"
        task = asyncio.get_running_loop().create_task(self._lost(reason))
        task.add_done_callback(lambda _t: None)

    async def _lost(self, reason: str) -> None:
        await self._enter_fault(reason)
        self._reconnector.wake()

    async def _enter_fault(self, reason: str) -> None:
        self._fault = reason
        await self._set_state(State.FAULT)
        log.warning("peripheral_fault", fault=reason)

    def _require_connected(self) -> None:
        if self._bridge is None or not self._bridge.connected:
            raise DeviceLost(self._fault or "the peripheral is not connected")
        if self._state in (State.FAULT, State.DISCONNECTED, State.STOPPING):
            raise SdkNotReady(f"the terminal is {self._state.value}: {self._fault}".rstrip(": "))

    def _require_version(self, minimum: tuple[int, ...], method: str) -> None:
        self._require_connected()
        if self.sdk_version < minimum:
            need = ".".join(map(str, minimum))
            raise NotSupported(f"{method} needs SDK {need} or later")

    async def _raw_call(
        self,
        method: str,
        params: Mapping[str, str],
        timeout: float | None,
        on_update_result: Callable[[dict[str, str]], None] | None,
    ) -> dict[str, str]:
        self._require_connected()
        assert self._bridge is not None
        return await self._bridge.call(
            method,
            params,
            timeout=timeout if timeout is not None else self._device.call_timeout,
            on_update_result=on_update_result,
        )

    async def _checked(self, method: str, params: Mapping[str, str]) -> dict[str, str]:
        info = await self.call(method, params)
        if info.get("return_code") != "SUCCESS":
            raise SdkError(
                method,
                info.get("return_code", ""),
                info.get("return_msg", ""),
                info.get("err_code", ""),
            )
        return info

    async def _init_locked(self) -> None:
        self._require_connected()
        await self._set_state(State.INITIALIZING)
        params = self._init_params()
        try:
            for attempt in range(self._sdk.init_retries + 1):
                info = await self._raw_call("initWxpayface", params, None, None)
                if info.get("return_code") == "SUCCESS":
                    break
                if info.get("err_code") == SDK_INITIALIZING and attempt < self._sdk.init_retries:
                    # The SDK asks for ~500 ms before the next init.
                    await self._clock.sleep(self._sdk.init_retry_delay)
                    continue
                raise SdkError(
                    "initWxpayface",
                    info.get("return_code", ""),
                    info.get("return_msg", ""),
                    info.get("err_code", ""),
                )
        except DeviceError:
            if self._state is State.INITIALIZING:
                await self._set_state(State.UNINITIALIZED)
            raise
        self.counters.inits += 1
        await self._set_state(State.READY)
        if self._sdk.firewall and self.sdk_version >= FIREWALL_FROM:
            await self._checked("enableFirewall", self._firewall_params())
            self._firewall = True

    async def _release_locked(self) -> None:
        await self._set_state(State.RELEASING)
        try:
            await self._raw_call("releaseWxpayface", {}, None, None)
        finally:
            self.counters.releases += 1
            if self._state is State.RELEASING:
                await self._set_state(State.UNINITIALIZED)

    def _init_params(self) -> dict[str, str]:
        proxy = self._sdk.proxy
        params = {
            "ip": proxy.ip,
            "port": proxy.port,
            "user": proxy.user,
            "passwd": proxy.passwd,
            "proxy_type": str(proxy.proxy_type) if proxy.ip else "",
            "tcp_port": proxy.tcp_port,
            "perform_mode": self._sdk.perform_mode,
        }
        return {k: v for k, v in params.items() if v}

    def _firewall_params(self) -> dict[str, str]:
        return {"mchId": self._merchant.mch_id, "subMchId": self._merchant.sub_mch_id}

    async def _set_state(self, state: State) -> None:
        if state is self._state:
            return
        log.info("lifecycle_state", old=self._state.value, new=state.value)
        self._state = state
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
        for listener in list(self._listeners):
            listener()
