"""The face SDK's lifecycle as a state machine: connect, init, sessions, release, faults.

Every state change goes through ``Lifecycle._set_state``, which checks TRANSITIONS, logs the
change and refuses (logging at error) any transition the table does not list. Every phase checks
the state it starts from before it calls the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from facepayd.clock import Clock, wait_event
from facepayd.device.bridge import BridgeClient, BridgeHello, BridgeObserver
from facepayd.device.reconnect import Reconnector
from facepayd.device.sdk import InitOptions, Sdk, SdkVersion
from facepayd.device.transport import PeripheralInfo, Transport
from facepayd.errors import (
    DeviceLost,
    FacepayError,
    SdkInitializing,
    SdkNotInitialized,
    SdkNotReady,
    Unavailable,
    WrongState,
)
from facepayd.ops.config import DeviceConfig, MerchantConfig, SdkConfig, SdkMode
from facepayd.tasks import TaskOwner

log = structlog.get_logger(__name__)

FACE_APP_PACKAGE = "com.tencent.wxpayface"


class State(enum.Enum):
    """Where the SDK lifecycle stands."""

    # No bridge connection yet; the reconnector is working on it.
    DISCONNECTED = "DISCONNECTED"
    # Connected, SDK not initialized: aggregate mode between sessions, or after Release.
    UNINITIALIZED = "UNINITIALIZED"
    # initWxpayface in flight, no face session open.
    INITIALIZING = "INITIALIZING"
    # Connected, but the last init failed (reason in fault): retried with capped backoff,
    # Reinitialize accepted, sessions refused. The bridge is fine; this is not a FAULT.
    INIT_FAILED = "INIT_FAILED"
    # Initialized and idle: a session can start at once.
    READY = "READY"
    # A face session holds the SDK (the camera) until the SDK's UI has ended.
    IN_SESSION = "IN_SESSION"
    # 271378620 inside a face session: initWxpayface in flight, the session keeps the SDK.
    REINITIALIZING = "REINITIALIZING"
    # releaseWxpayface in flight.
    RELEASING = "RELEASING"
    # The transport's: peripheral lost, frozen, or its face app missing; ends only when the
    # reconnector has the peripheral back.
    FAULT = "FAULT"
    # The daemon is shutting down; nothing follows.
    STOPPING = "STOPPING"


S = State
# Allowed transitions, checked in Lifecycle._set_state. Setting the current state again is no
# change. FAULT and STOPPING can follow every live state: the peripheral can vanish and the
# daemon can stop at any moment.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    S.DISCONNECTED: frozenset({S.UNINITIALIZED, S.FAULT, S.STOPPING}),
    S.UNINITIALIZED: frozenset({S.INITIALIZING, S.FAULT, S.STOPPING}),
    # UNINITIALIZED: the init was cancelled before the SDK answered.
    S.INITIALIZING: frozenset({S.READY, S.INIT_FAILED, S.UNINITIALIZED, S.FAULT, S.STOPPING}),
    # INITIALIZING: its own retry, Reinitialize, or a session's init.
    S.INIT_FAILED: frozenset({S.INITIALIZING, S.FAULT, S.STOPPING}),
    # UNINITIALIZED: the SDK answered 271378620 outside a session (it restarted underneath).
    S.READY: frozenset({S.IN_SESSION, S.RELEASING, S.UNINITIALIZED, S.FAULT, S.STOPPING}),
    # READY: non-aggregate session end; RELEASING: aggregate session end.
    S.IN_SESSION: frozenset({S.READY, S.RELEASING, S.REINITIALIZING, S.FAULT, S.STOPPING}),
    # IN_SESSION: re-init done (or cancelled), the session goes on; INIT_FAILED: it failed.
    S.REINITIALIZING: frozenset({S.IN_SESSION, S.INIT_FAILED, S.FAULT, S.STOPPING}),
    S.RELEASING: frozenset({S.UNINITIALIZED, S.FAULT, S.STOPPING}),
    S.FAULT: frozenset({S.UNINITIALIZED, S.STOPPING}),
    S.STOPPING: frozenset(),
}

# States in which a face session is under way (the terminal is serving it).
SESSION_STATES = frozenset({S.IN_SESSION, S.REINITIALIZING})
# States in which an SDK call may be sent (an init may be under way: run() waits for it).
_CALLABLE = frozenset(
    {S.UNINITIALIZED, S.INITIALIZING, S.READY, S.IN_SESSION, S.REINITIALIZING, S.RELEASING}
)
_INIT_IN_FLIGHT = frozenset({S.INITIALIZING, S.REINITIALIZING, S.RELEASING})
# READY <-> IN_SESSION: taken twice per sale, so quieter than the other changes.
_SESSION_EDGES = frozenset({S.READY, S.IN_SESSION})


@dataclass(slots=True)
class Counters:
    """What the lifecycle has done, for status and tests."""

    inits: int = 0  # initWxpayface answered SUCCESS
    releases: int = 0  # releaseWxpayface answered SUCCESS
    reconnects: int = 0  # connections after the first
    init_failures: int = 0  # inits that ended in INIT_FAILED
    # 271378620 while the daemon held an init: the SDK dropped it (restarted underneath), so
    # that init needs no release. In aggregate mode inits == releases + resets.
    resets: int = 0


@dataclass(slots=True, eq=False)
class _Hold:
    """One face session's hold on the SDK of one connection."""

    connection: int
    valid: bool = True  # False once the SDK it held is gone (peripheral lost, re-init failed)


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
        bridge_observer: BridgeObserver | None = None,
    ) -> None:
        self._transport = transport
        self._bridge_observer = bridge_observer
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
        # Serializes init, release and a session's start and end.
        self._init_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._connection = 0  # bumped on every new bridge connection
        self._init_generation = 0  # bumped on every successful init
        self._hold: _Hold | None = None
        # Per device serial: True once enableFirewall succeeded, False after disableFirewall.
        # The SDK keeps the firewall across its restarts, so neither is repeated per init.
        self._firewall: dict[str, bool] = {}
        self._firewall_gate_logged = False
        self._bridge_calls_before = 0
        self._connected_once = False
        self._tasks = TaskOwner("lifecycle")
        self._retry_task: asyncio.Task[None] | None = None
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
        """Why the lifecycle is in FAULT or INIT_FAILED (or cannot connect), without secrets."""
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
        """Whether enableFirewall succeeded on the connected peripheral (and was not undone)."""
        return self._firewall.get(self._device_key(), False)

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
    def version(self) -> SdkVersion:
        """The connected SDK's version and its gates; (0,) when unknown."""
        return SdkVersion.parse(self._hello.sdk_version) if self._hello else SdkVersion()

    @property
    def in_session(self) -> bool:
        """Whether a face session holds the SDK (IN_SESSION or re-initializing inside one)."""
        return self._state in SESSION_STATES

    async def run(self, call: Callable[[Sdk], Awaitable[T]]) -> T:
        """Run one typed SDK call; 271378620 (not initialized) → init, then the call once more."""
        await self._wait_init_settled()
        self._require_callable()
        generation = self._init_generation
        try:
            return await call(self._typed_sdk())
        except SdkNotInitialized:
            log.info("sdk_not_initialized")
            await self._init_after_loss(generation)
            return await call(self._typed_sdk())

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
        """Wait on the injected clock until a session could start (see usable())."""
        deadline = self._clock.monotonic() + timeout
        while not self._usable():
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return False
            await wait_event(self._clock, self._changed, remaining)
        return True

    def usable(self) -> bool:
        """Whether a face session could start now."""
        return self._usable()

    async def stop(self) -> None:
        """Stop reconnecting and retrying, close the bridge."""
        self._set_state(State.STOPPING)
        await self._reconnector.stop()
        await self._tasks.close()
        if self._bridge is not None:
            await self._bridge.close()

    async def reinitialize(self) -> None:
        """Release (if initialized) and init again, on operator request; also from INIT_FAILED."""
        await self._owned(self._reinitialize(), "reinitialize")

    async def release(self) -> None:
        """Release the SDK (frees the camera for other payment platforms)."""
        await self._owned(self._release(), "release")

    async def _owned(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run work as a task the lifecycle owns: a caller that goes away cuts nothing in half."""
        task = self._tasks.spawn(work, name=name)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current is not None and current.cancelling()):
                raise Unavailable(f"{name}: the daemon is stopping") from None
            raise

    async def _reinitialize(self) -> None:
        async with self._init_lock:
            self._require(
                State.READY, State.UNINITIALIZED, State.INIT_FAILED, action="reinitialize"
            )
            if self._state is State.READY:
                await self._release_locked()
            await self._init_locked(State.INITIALIZING)

    async def _release(self) -> None:
        async with self._init_lock:
            self._require(State.READY, State.UNINITIALIZED, State.INIT_FAILED, action="release")
            if self._state is State.READY:
                await self._release_locked()

    async def enable_firewall(self) -> None:
        """enableFirewall(mch_id, sub_mch_id), SDK 2.21 and later; remembered for this device."""
        m = self._merchant
        await self.run(lambda sdk: sdk.enable_firewall(m.mch_id, m.sub_mch_id))
        self._firewall[self._device_key()] = True
        self._notify()

    async def disable_firewall(self) -> None:
        """disableFirewall, SDK 2.21 and later; later inits do not enable it again."""
        m = self._merchant
        await self.run(lambda sdk: sdk.disable_firewall(m.mch_id, m.sub_mch_id))
        self._firewall[self._device_key()] = False
        self._notify()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Hold the SDK for one face session: init first, release (aggregate) or READY after."""
        # Aggregate mode releases between sessions, so each session inits; an idle init (after
        # Reinitialize or a retry) is taken instead. The release on exit is this session's
        # because it holds the SDK, whatever the state says meanwhile.
        hold = await self._begin_session()
        try:
            yield
        finally:
            if self._state is State.STOPPING:
                self._drop_hold(hold)
            else:
                # Shielded and owned: a cancelled session must still end its hold, or the
                # lifecycle would stay IN_SESSION.
                end = self._tasks.spawn(self._end_session(hold), name="lifecycle-session-end")
                await asyncio.shield(end)

    # ------------------------------------------------------------------ phases

    async def _begin_session(self) -> _Hold:
        async with self._init_lock:
            self._require(State.READY, State.UNINITIALIZED, action="start a face session")
            if self._state is State.UNINITIALIZED:
                # Aggregate mode between sessions, or non-aggregate after a Release.
                await self._init_locked(State.INITIALIZING)
            self._move(State.IN_SESSION)
            hold = _Hold(self._connection)
            self._hold = hold
            return hold

    async def _end_session(self, hold: _Hold) -> None:
        # Under the lock: a re-init inside the session finishes first.
        async with self._init_lock:
            self._drop_hold(hold)
            if not hold.valid or hold.connection != self._connection:
                # The SDK this session held is gone; the state already says why.
                return
            if self._state is not State.IN_SESSION:
                log.error("session_end_in_wrong_state", state=self._state.value)
                return
            if self._sdk.mode is SdkMode.AGGREGATE:
                # This session initialized the SDK (or took the idle init): it releases it.
                try:
                    await self._release_locked()
                except FacepayError as exc:
                    log.warning("sdk_release_failed", error=str(exc))
            else:
                self._move(State.READY)

    async def _init_after_loss(self, generation: int) -> None:
        """The SDK answered 271378620: init again, keeping a session that holds the SDK."""
        async with self._init_lock:
            if self._init_generation != generation and self._state in (
                State.READY,
                State.IN_SESSION,
            ):
                return  # another caller's init came after our call was answered
            self._require_callable()
            if self._state is State.IN_SESSION:
                self.counters.resets += 1
                await self._init_locked(State.REINITIALIZING)
            elif self._state is State.READY:
                self.counters.resets += 1
                self._move(State.UNINITIALIZED)
                await self._init_locked(State.INITIALIZING)
            elif self._state is State.UNINITIALIZED:
                await self._init_locked(State.INITIALIZING)
            else:
                raise SdkNotReady(f"the SDK cannot be initialized while {self._state.value}")

    async def _init_locked(self, phase: State) -> None:
        """initWxpayface under the init lock; phase is INITIALIZING or REINITIALIZING."""
        after = State.IN_SESSION if phase is State.REINITIALIZING else State.READY
        self._move(phase)
        try:
            sdk = self._typed_sdk()
            options = self._init_options()
            for attempt in range(self._sdk.init_retries + 1):
                try:
                    await sdk.init(options)
                    break
                except SdkInitializing:
                    if attempt >= self._sdk.init_retries:
                        raise
                    # The SDK asks for ~500 ms before the next init.
                    await self._clock.sleep(self._sdk.init_retry_delay)
        except asyncio.CancelledError:
            if self._state is phase:
                # Unknown whether the SDK took the init; a later call's 271378620 says so.
                self._set_state(after if phase is State.REINITIALIZING else State.UNINITIALIZED)
            raise
        except FacepayError as exc:
            self._init_failed(phase, exc)
            raise
        if self._state is not phase:
            # The peripheral went away between the answer and now.
            raise DeviceLost(self._fault or "the peripheral was lost during init")
        self._init_generation += 1
        self.counters.inits += 1
        self._fault = ""
        self._move(after)
        retry = self._retry_task
        if retry is not None and retry is not asyncio.current_task():
            retry.cancel()
        await self._firewall_after_init(sdk)

    def _init_failed(self, phase: State, exc: FacepayError) -> None:
        if self._state is not phase:
            return  # lost meanwhile: FAULT says why
        self.counters.init_failures += 1
        self._fault = f"init failed: {exc}"
        if phase is State.REINITIALIZING and self._hold is not None:
            self._hold.valid = False  # the session holds no initialized SDK any more
        retrying = self._retry_task is not None and self._retry_task is asyncio.current_task()
        (log.debug if retrying else log.warning)("sdk_init_failed", error=str(exc))
        self._move(State.INIT_FAILED)
        if not retrying and (self._retry_task is None or self._retry_task.done()):
            self._retry_task = self._tasks.spawn(self._retry_init(), name="sdk-init-retry")

    async def _retry_init(self) -> None:
        """While INIT_FAILED: init again after a capped, doubling backoff on the clock."""
        delay = self._sdk.init_retry_backoff
        while self._state is State.INIT_FAILED:
            log.info("sdk_init_retry_scheduled", retry_in=delay)
            await self._clock.sleep(delay)
            delay = min(delay * 2, self._sdk.init_retry_backoff_max)
            async with self._init_lock:
                if self._state is not State.INIT_FAILED:
                    return
                with contextlib.suppress(FacepayError):
                    await self._init_locked(State.INITIALIZING)
                    log.info("sdk_init_recovered")
                    if self._sdk.mode is SdkMode.AGGREGATE and self.state is State.READY:
                        # The SDK works again; between sessions aggregate mode holds no camera.
                        await self._release_locked()

    async def _release_locked(self) -> None:
        self._move(State.RELEASING)
        try:
            await self._typed_sdk().release()
            self.counters.releases += 1
        finally:
            if self._state is State.RELEASING:
                self._move(State.UNINITIALIZED)

    async def _firewall_after_init(self, sdk: Sdk) -> None:
        """enableFirewall once per device after its first successful init, when configured."""
        key = self._device_key()
        if not self._sdk.firewall or key in self._firewall:
            return
        if not sdk.version.has_firewall:
            if not self._firewall_gate_logged:
                log.warning("firewall_not_supported", sdk_version=str(sdk.version))
                self._firewall_gate_logged = True
            return
        try:
            await sdk.enable_firewall(self._merchant.mch_id, self._merchant.sub_mch_id)
        except FacepayError as exc:
            # Not remembered, so the next init tries again; the SDK works without it.
            log.warning("firewall_enable_failed", error=str(exc))
            return
        self._firewall[key] = True
        log.info("firewall_enabled")
        self._notify()

    # ------------------------------------------------------------------ connection

    def _default_bridge(self, transport: Transport) -> BridgeClient:
        return BridgeClient(
            transport,
            self._clock,
            open_timeout=self._device.call_timeout,
            hello_timeout=self._device.call_timeout,
            heartbeat_interval=self._device.heartbeat_interval,
            heartbeat_timeout=self._device.heartbeat_timeout,
            observer=self._bridge_observer,
        )

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
            self._notify()
            if isinstance(exc, DeviceLost):
                # A bridge app that is installed but not running is started for the next round.
                with contextlib.suppress(FacepayError):
                    await self._transport.start_bridge(self._device.call_timeout)
            raise
        except BaseException:
            await bridge.close()
            raise
        if self.state is State.STOPPING:
            # The stop came while the stream opened (a swallowed cancel): never install it.
            await bridge.close()
            return
        if self._bridge is not None:
            self._bridge_calls_before += self._bridge.calls_sent
        self._bridge = bridge
        self._hello = hello
        self._connection += 1
        bridge.add_lost_listener(functools.partial(self._on_lost, bridge))

    async def _on_connected(self) -> None:
        if self._state is State.STOPPING:
            return
        if self._connected_once:
            self.counters.reconnects += 1
        self._connected_once = True
        with contextlib.suppress(FacepayError):
            self._info = await self._transport.inspect(self._device.call_timeout)
        if self._info.face_app_installed is False:
            self._enter_fault(
                f"the WeChat face app ({FACE_APP_PACKAGE}) is not installed on the peripheral"
            )
            return
        self._fault = ""
        self._move(State.UNINITIALIZED)
        if self._sdk.mode is SdkMode.NON_AGGREGATE:
            async with self._init_lock:
                if self._state is State.UNINITIALIZED:
                    # A failed init is INIT_FAILED (retried there), not a failed connection:
                    # the bridge stays up.
                    with contextlib.suppress(FacepayError):
                        await self._init_locked(State.INITIALIZING)

    def _on_lost(self, bridge: BridgeClient, exc: BaseException) -> None:
        if self._state is State.STOPPING or bridge is not self._bridge:
            return
        reason = f"peripheral lost: {exc}" if str(exc) else "peripheral lost"
        self._enter_fault(reason)
        self._reconnector.wake()

    def _enter_fault(self, reason: str) -> None:
        self._fault = reason
        if self._hold is not None:
            self._hold.valid = False
        self._set_state(State.FAULT)
        log.warning("peripheral_fault", fault=reason)

    # ------------------------------------------------------------------ checks

    def _usable(self) -> bool:
        if self._sdk.mode is SdkMode.AGGREGATE:
            return self._state in (State.READY, State.UNINITIALIZED)
        return self._state is State.READY

    def _require(self, *allowed: State, action: str) -> None:
        """Raise the clearest error unless connected and in one of ``allowed``."""
        self._require_connected()
        if self._state in allowed:
            return
        if self._state is State.INIT_FAILED:
            raise SdkNotReady(
                f"cannot {action}: the face SDK failed to initialize ({self._fault}); "
                "it is retried, or call Reinitialize"
            )
        if self._state in SESSION_STATES:
            raise SdkNotReady(f"cannot {action}: a face session holds the SDK")
        raise SdkNotReady(f"cannot {action}: the terminal is {self._state.value}")

    def _require_connected(self) -> None:
        if self._bridge is None or not self._bridge.connected:
            raise DeviceLost(self._fault or "the peripheral is not connected")
        if self._state in (State.FAULT, State.DISCONNECTED, State.STOPPING):
            raise SdkNotReady(f"the terminal is {self._state.value}: {self._fault}".rstrip(": "))

    def _require_callable(self) -> None:
        self._require(*_CALLABLE, action="call the face SDK")

    async def _wait_init_settled(self) -> None:
        # A call sent while an init is in flight would only get "initializing" back.
        if self._state in _INIT_IN_FLIGHT:
            async with self._init_lock:
                pass

    # ------------------------------------------------------------------ plumbing

    def _typed_sdk(self) -> Sdk:
        self._require_connected()
        assert self._bridge is not None
        return Sdk(
            self._bridge.call,
            self.version,
            call_timeout=self._device.call_timeout,
            face_timeout=self._device.face_timeout,
            forget_update=self._bridge.forget_update,
        )

    def _init_options(self) -> InitOptions:
        proxy = self._sdk.proxy
        return InitOptions(
            ip=proxy.ip,
            port=proxy.port,
            user=proxy.user,
            passwd=proxy.passwd,
            proxy_type=proxy.proxy_type,
            tcp_port=proxy.tcp_port,
            perform_mode=self._sdk.perform_mode,
        )

    def _device_key(self) -> str:
        """Which peripheral the firewall memory is for."""
        if self._hello is not None and self._hello.device_serial:
            return self._hello.device_serial
        return self._info.serial

    def _drop_hold(self, hold: _Hold) -> None:
        if self._hold is hold:
            self._hold = None

    def _move(self, state: State) -> None:
        """A phase's transition: refused means a bug in the phase, so the phase stops."""
        if not self._set_state(state):
            raise WrongState(f"lifecycle cannot go from {self._state.value} to {state.value}")

    def _set_state(self, state: State) -> bool:
        """The one setter: checks TRANSITIONS, logs the change; an illegal one is refused."""
        old = self._state
        if state is old:
            return True
        if state not in TRANSITIONS[old]:
            log.error("lifecycle_transition_refused", old=old.value, new=state.value)
            return False
        self._state = state
        if state in (State.FAULT, State.INIT_FAILED):
            log.info("lifecycle_state", old=old.value, new=state.value, fault=self._fault)
        elif {old, state} == _SESSION_EDGES:
            # Per sale, on the camera path: the session's own lines tell it at info.
            log.debug("lifecycle_state", old=old.value, new=state.value)
        else:
            log.info("lifecycle_state", old=old.value, new=state.value)
        self._notify()
        return True

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in list(self._listeners):
            listener()
