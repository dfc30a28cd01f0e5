"""Lifecycle on a manual clock over the simulated terminal on real TCP, through the real bridge.

The transition table is walked twice: every pair through the setter (allowed ones taken, the rest
refused and logged at error), and every allowed pair taken by a scenario of the real machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import structlog

from facepayd.clock import ManualClock
from facepayd.device.sdk import FaceCodeRequest, FaceMerchant
from facepayd.device.tcp import TcpTransport
from facepayd.device.transport import PeripheralInfo
from facepayd.errors import DeviceLost, NotSupported, SdkError, SdkNotReady, Unavailable
from facepayd.face.lifecycle import TRANSITIONS, Lifecycle, State
from facepayd.ops.config import DeviceConfig, MerchantConfig, SdkConfig, SdkMode
from facepayd.sim.terminal import SimLatencies, SimTerminal
from tests.helpers import settle, until

S = State
# The heartbeat sleeps on the manual clock; this far away it never fires unless a test wants it.
NO_HEARTBEAT = 1e6
BACKOFF = 2.0
BACKOFF_MAX = 5.0
MERCHANT = MerchantConfig(appid="wxA", mch_id="M1", store_id="S1")
FACE_REQUEST = FaceCodeRequest(merchant=FaceMerchant("wxA", "M1", "S1"), authinfo="AUTH")
Pair = tuple[State, State]


class NoFaceAppTransport(TcpTransport):
    """TCP to the simulator, but the transport reports the WeChat face app missing."""

    async def inspect(self, timeout: float) -> PeripheralInfo:
        return PeripheralInfo(face_app_installed=False)


@dataclass
class Rig:
    """A lifecycle, its simulator and its clock; records every state change it makes."""

    clock: ManualClock
    sim: SimTerminal
    lifecycle: Lifecycle
    seen: list[Pair] = field(default_factory=list)
    init_times: list[float] = field(default_factory=list)
    last: State = S.DISCONNECTED

    def record(self) -> None:
        new = self.lifecycle.state
        if new is not self.last:
            self.seen.append((self.last, new))
            if new is S.INITIALIZING:
                self.init_times.append(self.clock.monotonic())
            self.last = new

    async def reach(self, state: State, what: str = "") -> None:
        await until(lambda: self.lifecycle.state is state, 10.0, what or state.value)

    async def saw(self, old: State, new: State) -> None:
        """Wait until the transition was taken (a FAULT may be over before a poll sees it)."""
        await until(lambda: (old, new) in self.seen, 10.0, f"{old.value} -> {new.value}")

    def slow(self, **seconds: float) -> None:
        """Make the named simulator calls take that long on the manual clock."""
        self.sim.latencies = dataclasses.replace(SimLatencies.instant(), **seconds)


@contextlib.asynccontextmanager
async def rig(
    *,
    mode: SdkMode = SdkMode.NON_AGGREGATE,
    firewall: bool = False,
    sdk_version: str = "2.22.0",
    heartbeat: float = NO_HEARTBEAT,
    transport: type[TcpTransport] = TcpTransport,
    init_retries: int = 3,
) -> AsyncIterator[Rig]:
    clock = ManualClock()
    sim = SimTerminal(clock=clock, sdk_version=sdk_version, latencies=SimLatencies.instant())
    port = await sim.serve_tcp()
    lifecycle = Lifecycle(
        transport=transport("127.0.0.1", port),
        clock=clock,
        device=DeviceConfig(
            transport="tcp",
            call_timeout=5.0,
            face_timeout=30.0,
            heartbeat_interval=heartbeat,
            heartbeat_timeout=1.0,
            reconnect_max_backoff=2.0,
        ),
        sdk=SdkConfig(
            mode=mode,
            firewall=firewall,
            init_retries=init_retries,
            init_retry_delay=0.5,
            init_retry_backoff=BACKOFF,
            init_retry_backoff_max=BACKOFF_MAX,
        ),
        merchant=MERCHANT,
    )
    r = Rig(clock, sim, lifecycle)
    lifecycle.add_listener(r.record)
    try:
        yield r
    finally:
        await lifecycle.stop()
        await sim.stop()


async def started(r: Rig) -> None:
    """Start and wait for the idle state of the rig's mode."""
    await r.lifecycle.start()
    idle = S.UNINITIALIZED if r.lifecycle.mode is SdkMode.AGGREGATE else S.READY
    await r.reach(idle)


async def advance_until(r: Rig, predicate: Callable[[], bool], *, step: float = 0.5) -> None:
    """Advance the manual clock in steps (letting real I/O run) until predicate holds."""
    for _ in range(200):
        if predicate():
            return
        await r.clock.advance(step)
        await settle()
    raise AssertionError("not reached within 100 s of the manual clock")


async def session_call(r: Rig, call: Callable[[], Awaitable[object]] | None = None) -> None:
    """One face session making one SDK call (rawdata unless told)."""
    lifecycle = r.lifecycle
    async with lifecycle.session():
        if call is None:
            await lifecycle.run(lambda sdk: sdk.rawdata())
        else:
            await call()


# ------------------------------------------------------------------ the setter


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[S.STOPPING] == frozenset()


@pytest.mark.parametrize("old", list(State))
async def test_setter_takes_allowed_and_refuses_every_other_transition(old: State) -> None:
    async with rig() as r:
        lifecycle = r.lifecycle
        for new in State:
            if new is old:
                continue
            lifecycle._state = old  # the walk sets each start state directly
            changes = len(r.seen)
            r.last = old
            with structlog.testing.capture_logs() as logs:
                taken = lifecycle._set_state(new)
            allowed = new in TRANSITIONS[old]
            assert taken is allowed, (old, new)
            # A session's start and end are on the camera path: logged at debug.
            per_sale = {old, new} == {S.READY, S.IN_SESSION}
            if allowed:
                assert lifecycle.state is new
                assert r.seen[changes:] == [(old, new)]
                assert [e["log_level"] for e in logs] == ["debug" if per_sale else "info"]
            else:
                assert lifecycle.state is old
                assert len(r.seen) == changes
                refused = [e for e in logs if e["event"] == "lifecycle_transition_refused"]
                assert [(e["log_level"], e["old"], e["new"]) for e in refused] == [
                    ("error", old.value, new.value)
                ]
        lifecycle._state = S.DISCONNECTED  # let the rig stop from a plain state


# ------------------------------------------------------------------ every allowed transition taken

Scenario = Callable[[Rig], Awaitable[None]]


@dataclass(frozen=True)
class Walk:
    """A scenario, the rig it needs, and the transitions it must take."""

    run: Scenario
    pairs: frozenset[Pair]
    mode: SdkMode = SdkMode.NON_AGGREGATE
    transport: type[TcpTransport] = TcpTransport


async def connect_init_session_release_stop(r: Rig) -> None:
    await started(r)
    await session_call(r)
    assert r.lifecycle.state is S.READY
    await r.lifecycle.release()
    assert r.lifecycle.state is S.UNINITIALIZED


async def aggregate_sessions_then_drop(r: Rig) -> None:
    await started(r)
    await session_call(r)
    assert r.lifecycle.state is S.UNINITIALIZED
    await r.sim.drop_connections()
    await r.saw(S.FAULT, S.UNINITIALIZED)


async def aggregate_stop_when_idle(r: Rig) -> None:
    await started(r)


async def init_cancelled(r: Rig) -> None:
    await started(r)
    r.slow(init=1.0)
    task = asyncio.ensure_future(session_call(r))
    await r.reach(S.INITIALIZING)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert r.lifecycle.state is S.UNINITIALIZED


async def init_lost(r: Rig) -> None:
    await started(r)
    r.slow(init=1.0)
    task = asyncio.ensure_future(session_call(r))
    await r.reach(S.INITIALIZING)
    await r.sim.drop_connections()
    with pytest.raises(DeviceLost):
        await task
    assert (S.INITIALIZING, S.FAULT) in r.seen


async def init_stopped(r: Rig) -> None:
    r.slow(init=1.0)
    await r.lifecycle.start()
    await r.reach(S.INITIALIZING)
    await r.lifecycle.stop()


async def init_failed_retried_then_lost(r: Rig) -> None:
    r.sim.script_init(fail_times=2)
    await r.lifecycle.start()
    await r.reach(S.INIT_FAILED)
    await r.clock.advance(BACKOFF)
    await until(lambda: r.sim.calls["initWxpayface"] == 2)
    await r.reach(S.INIT_FAILED)
    await r.sim.drop_connections()
    await r.reach(S.READY, "re-init after the reconnect")


async def init_failed_stopped(r: Rig) -> None:
    r.sim.script_init(fail_times=1)
    await r.lifecycle.start()
    await r.reach(S.INIT_FAILED)


async def sdk_restarted_outside_a_session(r: Rig) -> None:
    await started(r)
    r.sim.forget_init()
    assert await r.lifecycle.run(lambda sdk: sdk.rawdata())
    assert r.lifecycle.state is S.READY


async def ready_lost_then_back(r: Rig) -> None:
    await started(r)
    await r.sim.drop_connections()
    await r.saw(S.FAULT, S.UNINITIALIZED)
    await r.reach(S.READY)


async def session_reinit_ok_then_stop_in_session(r: Rig) -> None:
    await started(r)

    async def restarted_underneath() -> None:
        r.sim.forget_init()
        await r.lifecycle.run(lambda sdk: sdk.rawdata())

    await session_call(r, restarted_underneath)
    hold = asyncio.Event()

    async def held() -> None:
        await hold.wait()

    task = asyncio.ensure_future(session_call(r, held))
    await r.reach(S.IN_SESSION)
    await r.lifecycle.stop()
    hold.set()
    await task


async def session_reinit_failed(r: Rig) -> None:
    await started(r)

    async def restarted_and_fails() -> None:
        r.sim.forget_init()
        r.sim.script_init(fail_times=1)
        await r.lifecycle.run(lambda sdk: sdk.rawdata())

    with pytest.raises(SdkError):
        await session_call(r, restarted_and_fails)
    assert r.lifecycle.state is S.INIT_FAILED
    await r.clock.advance(BACKOFF)
    await r.reach(S.READY, "recovered by the retry")


async def _sdk_restarted_slowly(r: Rig) -> None:
    """Inside a session the SDK forgets its init (271378620) and the re-init takes a second."""
    r.sim.forget_init()
    r.slow(init=1.0)
    await r.lifecycle.run(lambda sdk: sdk.rawdata())


async def session_reinit_lost(r: Rig) -> None:
    await started(r)

    task = asyncio.ensure_future(session_call(r, lambda: _sdk_restarted_slowly(r)))
    await r.reach(S.REINITIALIZING)
    await r.sim.drop_connections()
    with pytest.raises(DeviceLost):
        await task


async def session_reinit_stopped(r: Rig) -> None:
    await started(r)

    task = asyncio.ensure_future(session_call(r, lambda: _sdk_restarted_slowly(r)))
    await r.reach(S.REINITIALIZING)
    await r.lifecycle.stop()
    with pytest.raises(DeviceLost):
        await task


async def session_lost(r: Rig) -> None:
    await started(r)
    hold = asyncio.Event()

    async def held() -> None:
        await hold.wait()

    task = asyncio.ensure_future(session_call(r, held))
    await r.reach(S.IN_SESSION)
    await r.sim.drop_connections()
    await r.saw(S.IN_SESSION, S.FAULT)
    hold.set()
    await task


async def release_lost(r: Rig) -> None:
    await started(r)
    r.slow(release=1.0)
    task = asyncio.ensure_future(r.lifecycle.release())
    await r.reach(S.RELEASING)
    await r.sim.drop_connections()
    with pytest.raises(DeviceLost):
        await task


async def release_stopped(r: Rig) -> None:
    await started(r)
    r.slow(release=1.0)
    task = asyncio.ensure_future(r.lifecycle.release())
    await r.reach(S.RELEASING)
    await r.lifecycle.stop()
    with pytest.raises(Unavailable, match="stopping"):
        await task


async def no_face_app(r: Rig) -> None:
    await r.lifecycle.start()
    await r.reach(S.FAULT)
    assert "com.tencent.wxpayface" in r.lifecycle.fault


async def never_started(r: Rig) -> None:
    pass


def pairs(*chain: State) -> frozenset[Pair]:
    """The transitions along a chain of states."""
    return frozenset(itertools.pairwise(chain))


CONNECT = pairs(S.DISCONNECTED, S.UNINITIALIZED, S.INITIALIZING, S.READY)
WALKS: dict[str, Walk] = {
    "connect_init_session_release_stop": Walk(
        connect_init_session_release_stop,
        CONNECT | pairs(S.READY, S.IN_SESSION, S.READY, S.RELEASING, S.UNINITIALIZED, S.STOPPING),
    ),
    "aggregate_sessions_then_drop": Walk(
        aggregate_sessions_then_drop,
        pairs(S.DISCONNECTED, S.UNINITIALIZED, S.INITIALIZING, S.READY, S.IN_SESSION)
        | pairs(S.IN_SESSION, S.RELEASING, S.UNINITIALIZED, S.FAULT, S.UNINITIALIZED),
        mode=SdkMode.AGGREGATE,
    ),
    "aggregate_stop_when_idle": Walk(
        aggregate_stop_when_idle,
        pairs(S.DISCONNECTED, S.UNINITIALIZED, S.STOPPING),
        mode=SdkMode.AGGREGATE,
    ),
    "init_cancelled": Walk(
        init_cancelled,
        pairs(S.UNINITIALIZED, S.INITIALIZING, S.UNINITIALIZED),
        mode=SdkMode.AGGREGATE,
    ),
    "init_lost": Walk(
        init_lost, pairs(S.UNINITIALIZED, S.INITIALIZING, S.FAULT), mode=SdkMode.AGGREGATE
    ),
    "init_stopped": Walk(init_stopped, pairs(S.UNINITIALIZED, S.INITIALIZING, S.STOPPING)),
    "init_failed_retried_then_lost": Walk(
        init_failed_retried_then_lost,
        pairs(S.INITIALIZING, S.INIT_FAILED, S.INITIALIZING, S.INIT_FAILED, S.FAULT)
        | pairs(S.FAULT, S.UNINITIALIZED, S.INITIALIZING, S.READY),
    ),
    "init_failed_stopped": Walk(init_failed_stopped, pairs(S.INIT_FAILED, S.STOPPING)),
    "sdk_restarted_outside_a_session": Walk(
        sdk_restarted_outside_a_session,
        pairs(S.READY, S.UNINITIALIZED, S.INITIALIZING, S.READY, S.STOPPING),
    ),
    "ready_lost_then_back": Walk(
        ready_lost_then_back, pairs(S.READY, S.FAULT, S.UNINITIALIZED, S.INITIALIZING)
    ),
    "session_reinit_ok_then_stop_in_session": Walk(
        session_reinit_ok_then_stop_in_session,
        pairs(S.IN_SESSION, S.REINITIALIZING, S.IN_SESSION, S.READY)
        | pairs(S.IN_SESSION, S.STOPPING),
    ),
    "session_reinit_failed": Walk(
        session_reinit_failed,
        pairs(S.IN_SESSION, S.REINITIALIZING, S.INIT_FAILED, S.INITIALIZING, S.READY),
    ),
    "session_reinit_lost": Walk(
        session_reinit_lost, pairs(S.IN_SESSION, S.REINITIALIZING, S.FAULT)
    ),
    "session_reinit_stopped": Walk(
        session_reinit_stopped, pairs(S.IN_SESSION, S.REINITIALIZING, S.STOPPING)
    ),
    "session_lost": Walk(session_lost, pairs(S.IN_SESSION, S.FAULT)),
    "release_lost": Walk(release_lost, pairs(S.READY, S.RELEASING, S.FAULT)),
    "release_stopped": Walk(release_stopped, pairs(S.READY, S.RELEASING, S.STOPPING)),
    "no_face_app": Walk(
        no_face_app, pairs(S.DISCONNECTED, S.FAULT, S.STOPPING), transport=NoFaceAppTransport
    ),
    "never_started": Walk(never_started, pairs(S.DISCONNECTED, S.STOPPING)),
}


def test_the_walks_take_every_allowed_transition() -> None:
    allowed = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    declared = frozenset().union(*(walk.pairs for walk in WALKS.values()))
    assert declared <= allowed, declared - allowed
    assert allowed - declared == set()


@pytest.mark.parametrize("name", list(WALKS))
async def test_walk_takes_its_transitions(name: str) -> None:
    walk = WALKS[name]
    async with rig(mode=walk.mode, transport=walk.transport) as r:
        with structlog.testing.capture_logs() as logs:
            await walk.run(r)
            await r.lifecycle.stop()
    missing = walk.pairs - set(r.seen)
    assert not missing, f"not taken: {sorted((a.value, b.value) for a, b in missing)}"
    assert all(pair[1] in TRANSITIONS[pair[0]] for pair in r.seen)
    assert not [e for e in logs if e["log_level"] == "error"]


# ------------------------------------------------------------------ INIT_FAILED


async def test_failed_init_at_connect_is_init_failed_and_its_retry_recovers_it() -> None:
    async with rig() as r:
        r.sim.script_init(fail_times=1)
        await r.lifecycle.start()
        await r.reach(S.INIT_FAILED)
        lifecycle = r.lifecycle
        assert "init failed" in lifecycle.fault
        assert "failed to initialize" in lifecycle.fault
        assert not lifecycle.usable()
        with pytest.raises(SdkNotReady, match="failed to initialize") as refused:
            await session_call(r)
        assert "Reinitialize" in str(refused.value)
        with pytest.raises(SdkNotReady, match="failed to initialize"):
            await lifecycle.run(lambda sdk: sdk.rawdata())
        await r.clock.advance(BACKOFF - 0.1)
        await settle()
        assert r.sim.calls["initWxpayface"] == 1, "no retry before the backoff"
        await r.clock.advance(0.1)
        await r.reach(S.READY, "recovered by its own retry")
        assert lifecycle.fault == ""
        assert r.sim.connections_served == 1, "the bridge connection was not touched"
        assert r.sim.connections == 1
        assert (lifecycle.counters.inits, lifecycle.counters.init_failures) == (1, 1)
        await session_call(r)


async def test_init_retry_backoff_doubles_up_to_its_cap() -> None:
    async with rig() as r:
        r.sim.script_init(fail_times=5)
        await r.lifecycle.start()
        await r.reach(S.INIT_FAILED)
        await advance_until(r, lambda: r.lifecycle.state is S.READY, step=0.25)
        # The init at connect, then retries 2 and 4 s (doubling) and 5, 5, 5 s (capped) apart.
        assert r.init_times == [0.0, 2.0, 6.0, 11.0, 16.0, 21.0]
        assert r.sim.connections_served == 1


async def test_reinitialize_recovers_init_failed_at_once_with_the_bridge_untouched() -> None:
    async with rig() as r:
        r.sim.script_init(fail_times=1)
        await r.lifecycle.start()
        await r.reach(S.INIT_FAILED)
        await r.lifecycle.reinitialize()
        assert r.lifecycle.state is S.READY
        assert r.sim.connections_served == 1
        assert r.sim.calls["initWxpayface"] == 2
        # The pending retry was called off: time passing inits nothing more.
        await r.clock.advance(BACKOFF_MAX * 4)
        await settle()
        assert r.sim.calls["initWxpayface"] == 2
        assert r.clock.sleepers == 1  # only the heartbeat


async def test_a_reinitialize_whose_caller_goes_away_still_completes() -> None:
    async with rig() as r:
        await started(r)
        r.slow(init=2.0)
        caller = asyncio.ensure_future(r.lifecycle.reinitialize())
        await r.reach(S.INITIALIZING)
        caller.cancel()  # the POS hung up, or its deadline passed
        with pytest.raises(asyncio.CancelledError):
            await caller
        await r.clock.advance(2.0)
        await r.reach(S.READY, "the init went on without its caller")
        assert r.sim.initialized


async def test_reinitialize_that_fails_again_stays_init_failed_and_says_why() -> None:
    async with rig() as r:
        r.sim.script_init(fail_times=2)
        await r.lifecycle.start()
        await r.reach(S.INIT_FAILED)
        with pytest.raises(SdkError, match="failed to initialize"):
            await r.lifecycle.reinitialize()
        assert r.lifecycle.state is S.INIT_FAILED
        await r.clock.advance(BACKOFF)
        await r.reach(S.READY)


async def test_initializing_answers_are_waited_out_and_bounded() -> None:
    async with rig(init_retries=3) as r:
        r.sim.script_init(initializing_times=2)
        await r.lifecycle.start()
        await until(lambda: r.sim.calls["initWxpayface"] == 1)
        await advance_until(r, lambda: r.lifecycle.state is S.READY, step=0.5)
        assert r.sim.calls["initWxpayface"] == 3
        r.sim.script_init(initializing_times=10)
        task = asyncio.ensure_future(r.lifecycle.reinitialize())
        await advance_until(r, task.done, step=0.5)
        with pytest.raises(SdkError, match="271378621"):
            await task
        # init_retries=3: the first init and three more, 0.5 s apart, then INIT_FAILED.
        assert r.sim.calls["initWxpayface"] == 3 + 4
        assert r.lifecycle.state is S.INIT_FAILED


# ------------------------------------------------------------------ 271378620 inside a session


async def test_not_initialized_inside_a_session_reinits_and_the_session_completes() -> None:
    async with rig() as r:
        await started(r)
        lifecycle = r.lifecycle
        async with lifecycle.session():
            r.sim.forget_init()
            mark = len(r.seen)
            code = await lifecycle.run(lambda sdk: sdk.get_face_code(FACE_REQUEST))
            during = r.seen[mark:]
            assert lifecycle.state is S.IN_SESSION
        assert len(code.face_code) == 18
        assert during == [(S.IN_SESSION, S.REINITIALIZING), (S.REINITIALIZING, S.IN_SESSION)]
        assert S.READY not in [new for _, new in during]
        assert lifecycle.state is S.READY
        assert r.sim.calls["getWxpayfaceCode"] == 2
        assert (lifecycle.counters.inits, lifecycle.counters.resets) == (2, 1)


async def test_aggregate_sessions_release_every_init_they_hold() -> None:
    async with rig(mode=SdkMode.AGGREGATE) as r:
        await started(r)
        lifecycle = r.lifecycle
        for n in range(3):
            async with lifecycle.session():
                if n == 1:
                    r.sim.forget_init()
                await lifecycle.run(lambda sdk: sdk.get_face_code(FACE_REQUEST))
            assert lifecycle.state is S.UNINITIALIZED
            assert not r.sim.initialized
        counters = lifecycle.counters
        assert (counters.inits, counters.releases, counters.resets) == (4, 3, 1)
        # The init the SDK dropped needs no release; every other one was released.
        assert counters.inits == counters.releases + counters.resets
        assert r.sim.calls["initWxpayface"] == 4
        assert r.sim.calls["releaseWxpayface"] == 3


async def test_aggregate_release_is_decided_by_the_sessions_hold() -> None:
    async with rig(mode=SdkMode.AGGREGATE) as r:
        await started(r)
        lifecycle = r.lifecycle
        async with lifecycle.session():
            await lifecycle.run(lambda sdk: sdk.rawdata())
            await r.sim.drop_connections()
            await until(lambda: r.sim.connections_served == 2 and lifecycle.usable())
        # The new connection's SDK was never this session's: nothing to release.
        assert lifecycle.state is S.UNINITIALIZED
        assert r.sim.calls["releaseWxpayface"] == 0
        assert lifecycle.counters.releases == 0


async def test_a_cancelled_session_still_ends_its_hold() -> None:
    async with rig(mode=SdkMode.AGGREGATE) as r:
        await started(r)
        gate = asyncio.Event()

        async def wait_forever() -> None:
            await gate.wait()

        task = asyncio.ensure_future(session_call(r, wait_forever))
        await r.reach(S.IN_SESSION)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await r.reach(S.UNINITIALIZED, "released after the cancel")
        assert r.sim.calls["releaseWxpayface"] == 1


# ------------------------------------------------------------------ phases check their state


async def test_phases_refuse_the_wrong_state() -> None:
    async with rig() as r:
        with pytest.raises(DeviceLost):
            await r.lifecycle.reinitialize()
        with pytest.raises(DeviceLost):
            await session_call(r)
        await started(r)
        gate = asyncio.Event()

        async def held() -> None:
            await gate.wait()

        task = asyncio.ensure_future(session_call(r, held))
        await r.reach(S.IN_SESSION)
        with pytest.raises(SdkNotReady, match="a face session holds the SDK"):
            await r.lifecycle.reinitialize()
        with pytest.raises(SdkNotReady, match="a face session holds the SDK"):
            await r.lifecycle.release()
        with pytest.raises(SdkNotReady, match="a face session holds the SDK"):
            await session_call(r)
        gate.set()
        await task
        assert r.lifecycle.state is S.READY
        assert r.sim.calls["releaseWxpayface"] == 0


# ------------------------------------------------------------------ firewall


async def test_firewall_enabled_once_across_a_reconnect_and_a_reinit() -> None:
    async with rig(firewall=True) as r:
        await started(r)
        lifecycle = r.lifecycle
        assert r.sim.calls["enableFirewall"] == 1
        assert r.sim.firewall == ("M1", "")
        assert lifecycle.firewall_enabled
        await r.sim.drop_connections()
        await until(lambda: r.sim.connections_served == 2 and lifecycle.state is S.READY)
        await lifecycle.reinitialize()
        r.sim.forget_init()
        await lifecycle.run(lambda sdk: sdk.rawdata())
        assert r.sim.calls["initWxpayface"] == 4
        assert r.sim.calls["enableFirewall"] == 1
        assert lifecycle.firewall_enabled
        await lifecycle.disable_firewall()
        assert r.sim.firewall is None
        assert not lifecycle.firewall_enabled
        await lifecycle.reinitialize()
        assert r.sim.calls["enableFirewall"] == 1, "disabled on request: not enabled again"
        await lifecycle.enable_firewall()
        assert r.sim.calls["enableFirewall"] == 2
        assert lifecycle.firewall_enabled


async def test_firewall_is_enabled_again_for_another_peripheral() -> None:
    async with rig(firewall=True) as r:
        await started(r)
        r.sim.serial = "SIMFACE0002"
        await r.sim.drop_connections()
        await until(lambda: r.sim.connections_served == 2 and r.lifecycle.state is S.READY)
        assert r.sim.calls["enableFirewall"] == 2


async def test_firewall_is_not_sent_to_an_sdk_below_2_21() -> None:
    async with rig(firewall=True, sdk_version="2.20.0") as r:
        await started(r)
        await r.lifecycle.reinitialize()
        assert r.sim.calls["enableFirewall"] == 0
        assert not r.lifecycle.firewall_enabled


async def test_firewall_not_configured_is_never_sent() -> None:
    async with rig() as r:
        await started(r)
        assert r.sim.calls["enableFirewall"] == 0


# ------------------------------------------------------------------ FAULT


async def test_dropped_connection_is_fault_then_recovers_with_a_new_init() -> None:
    async with rig() as r:
        await started(r)
        await r.sim.drop_connections()
        await r.saw(S.READY, S.FAULT)
        await r.saw(S.FAULT, S.UNINITIALIZED)
        await r.reach(S.READY, "back after the reconnect")
        lifecycle = r.lifecycle
        assert (lifecycle.counters.reconnects, lifecycle.counters.inits) == (1, 2)
        assert r.sim.connections_served == 2
        assert lifecycle.fault == ""
        await session_call(r)


async def test_frozen_peripheral_is_fault_and_recovers_once_it_answers() -> None:
    async with rig(heartbeat=2.0) as r:
        await started(r)
        r.sim.freeze()
        await advance_until(r, lambda: r.lifecycle.state is S.FAULT)
        assert "stopped answering" in r.lifecycle.fault
        with pytest.raises((DeviceLost, SdkNotReady)):
            await session_call(r)
        r.sim.thaw()
        await advance_until(r, lambda: r.lifecycle.state is S.READY)
        assert r.lifecycle.counters.reconnects == 1
        await session_call(r)


async def test_a_session_over_a_lost_peripheral_fails_and_releases_nothing() -> None:
    async with rig(mode=SdkMode.AGGREGATE) as r:
        await started(r)

        async def lost_during_the_call() -> None:
            r.sim.freeze()  # nothing answers, so the reconnect cannot finish meanwhile
            call = asyncio.ensure_future(r.lifecycle.run(lambda sdk: sdk.rawdata()))
            await until(lambda: r.clock.sleepers >= 2)  # the call's deadline and the heartbeat
            await r.sim.drop_connections()
            await call

        with pytest.raises(DeviceLost):
            await session_call(r, lost_during_the_call)
        assert r.lifecycle.state is S.FAULT
        assert r.sim.calls["releaseWxpayface"] == 0
        assert r.lifecycle.counters.releases == 0


# ------------------------------------------------------------------ waiting and stopping


async def test_wait_ready_waits_on_the_injected_clock() -> None:
    async with rig() as r:
        waiter = asyncio.ensure_future(r.lifecycle.wait_ready(5.0))
        await settle()
        await r.clock.advance(4.9)
        await settle()
        assert not waiter.done()
        await r.clock.advance(0.2)
        assert await waiter is False
        waiter = asyncio.ensure_future(r.lifecycle.wait_ready(5.0))
        await r.lifecycle.start()
        assert await waiter is True


async def test_stop_ends_every_task_it_started() -> None:
    async with rig() as r:
        r.sim.script_init(fail_times=1)
        await r.lifecycle.start()
        await r.reach(S.INIT_FAILED)
        await r.lifecycle.stop()
        assert r.clock.sleepers == 0, "retry, reconnector and heartbeat all ended"
        await r.clock.advance(BACKOFF_MAX * 4)
        await settle()
        assert r.sim.calls["initWxpayface"] == 1
        assert r.lifecycle.state is S.STOPPING


async def test_listeners_hear_each_change() -> None:
    async with rig() as r:
        heard: list[State] = []
        r.lifecycle.add_listener(lambda: heard.append(r.lifecycle.state))
        await started(r)
        assert heard[-3:] == [S.UNINITIALIZED, S.INITIALIZING, S.READY]


async def test_run_refuses_a_call_the_sdk_version_lacks_before_sending_it() -> None:
    async with rig(sdk_version="2.22.0") as r:
        await started(r)
        sent = r.lifecycle.bridge_calls
        with pytest.raises(NotSupported):
            await r.lifecycle.run(
                lambda sdk: sdk.update_pay_result(FACE_REQUEST.merchant, "A", success=True)
            )
        assert r.lifecycle.bridge_calls == sent


async def test_aggregate_a_recovered_init_is_released_until_the_next_session() -> None:
    async with rig(mode=SdkMode.AGGREGATE) as r:
        await started(r)
        r.sim.script_init(fail_times=1)
        with pytest.raises(SdkError):
            async with r.lifecycle.session():
                pass
        await r.reach(S.INIT_FAILED)
        await settle()  # the retry is asleep on the clock
        await r.clock.advance(BACKOFF)
        await r.reach(S.UNINITIALIZED, "released once the retried init worked")
        assert not r.sim.initialized, "no camera held between sessions in aggregate mode"
        assert r.lifecycle.counters.inits == r.lifecycle.counters.releases
