"""The face domain in-process: SimTerminal on TCP, the real bridge, Lifecycle, sessions, flows.

Everything runs on one ManualClock; the journal is a real SQLite file; WeChat Pay is a fake
PaymentBackend (the Protocol the payments domain owns) that pays every order.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facepayd.clock import ManualClock
from facepayd.device.tcp import TcpTransport
from facepayd.face.authinfo import AuthinfoCache, AuthinfoKey
from facepayd.face.flows import FaceFlows
from facepayd.face.lifecycle import Lifecycle, State
from facepayd.face.sessions import FaceSessions
from facepayd.journal import Journal
from facepayd.ops.config import Config, DeviceConfig, MerchantConfig, SdkConfig, SdkMode
from facepayd.payments.machine import PaymentTimings
from facepayd.payments.ports import PaymentBackend
from facepayd.payments.service import PaymentService
from facepayd.rpc.handlers import Domain
from facepayd.rpc.server import RpcServer
from facepayd.rpc.service import TerminalService
from facepayd.sim.terminal import SimLatencies, SimTerminal
from facepayd.wxpay.models import (
    AuthinfoGrant,
    MicropayOrder,
    ReverseResult,
    TradeResult,
    TradeState,
)
from tests.helpers import until

FACE_TIMEOUT = 30.0
CAPTURE = 5.0  # seconds of the clock until the simulated user shows a face
UPDATE_RESULT = 2.0  # seconds until the SDK's own result page closes (2.13 and later)
MERCHANT = MerchantConfig(appid="wxsim", mch_id="1900000001", store_id="S1", device_id="D1")


@dataclass
class PayingBackend:
    """WeChat Pay that pays every micropay at once; counts the calls."""

    calls: list[str] = field(default_factory=list)

    async def micropay(self, order: MicropayOrder) -> TradeResult:
        self.calls.append("micropay")
        return TradeResult(
            TradeState.SUCCESS,
            out_trade_no=order.out_trade_no,
            transaction_id="42" + order.out_trade_no,
            openid="o-user",
            total_fee=order.total_fee,
            cash_fee=order.total_fee,
            fee_type="CNY",
            time_end="20250101120000",
        )

    async def orderquery(self, *, out_trade_no: str = "", transaction_id: str = "") -> TradeResult:
        self.calls.append("orderquery")
        return TradeResult(TradeState.NOTPAY, out_trade_no=out_trade_no)

    async def reverse(self, *, out_trade_no: str, transaction_id: str = "") -> ReverseResult:
        self.calls.append("reverse")
        return ReverseResult(succeeded=True, recall=False)


@dataclass
class World:
    """One terminal's face domain, wired as the daemon wires it."""

    clock: ManualClock
    sim: SimTerminal
    lifecycle: Lifecycle
    authinfo: AuthinfoCache
    sessions: FaceSessions
    flows: FaceFlows
    journal: Journal
    payments: PaymentService
    backend: Any  # PayingBackend unless the test brought its own PaymentBackend
    device: DeviceConfig
    extra: dict[str, Any] = field(default_factory=dict)

    async def deny_writes(self) -> None:
        """Make the journal's database refuse every write (a full disk)."""

        def deny(action: int, *_: object) -> int:
            writes = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
            return sqlite3.SQLITE_DENY if action in writes else sqlite3.SQLITE_OK

        db = self.journal.database
        await db.run(lambda: db.connection.set_authorizer(deny))

    async def allow_writes(self) -> None:
        """The disk has room again."""
        db = self.journal.database
        await db.run(lambda: db.connection.set_authorizer(None))

    async def face_shown(self) -> None:
        """Wait until the simulated face UI is up (its capture timer is running)."""
        await until(lambda: self.sim.face_ui_open and self.clock.sleepers > 0, 10, "face UI")

    async def show_face(self) -> None:
        """The user shows a face: the SDK returns the code."""
        await self.face_shown()
        await self.clock.advance(CAPTURE)

    async def result_page_shown(self) -> None:
        """Wait until the SDK's own result page is up."""
        await until(lambda: self.sim.result_page_open, 10, "result page")


@contextlib.asynccontextmanager
async def face_world(
    tmp_path: Path,
    *,
    sdk_version: str = "2.22.0",
    mode: SdkMode = SdkMode.NON_AGGREGATE,
    fetch: Callable[[], Awaitable[AuthinfoGrant]] | None = None,
    backend: PaymentBackend | None = None,
    timings: PaymentTimings | None = None,
    clock: ManualClock | None = None,
    merchant: MerchantConfig = MERCHANT,
) -> AsyncIterator[World]:
    """Start the simulated terminal and the face domain over it; stop everything afterwards."""
    clock = clock or ManualClock()
    latencies = SimLatencies(
        init=0.0,
        rawdata=0.0,
        face_capture=CAPTURE,
        update_result=UPDATE_RESULT,
        release=0.0,
        quit=0.0,
        other=0.0,
    )
    sim = SimTerminal(clock=clock, sdk_version=sdk_version, latencies=latencies)
    port = await sim.serve_tcp()
    # Heartbeats far beyond any advance: a ping's real-socket round trip never races the clock.
    device = DeviceConfig(
        transport="tcp",
        tcp_address=f"127.0.0.1:{port}",
        call_timeout=5.0,
        face_timeout=FACE_TIMEOUT,
        heartbeat_interval=1e6,
        heartbeat_timeout=1e6,
    )
    lifecycle = Lifecycle(
        transport=TcpTransport("127.0.0.1", port),
        clock=clock,
        device=device,
        sdk=SdkConfig(mode=mode),
        merchant=merchant,
    )

    async def grant() -> AuthinfoGrant:
        return AuthinfoGrant("authinfo-sim-secret", 3600)

    authinfo = AuthinfoCache(
        key=AuthinfoKey("D1", "wxsim", "1900000001", "", "", "S1"),
        fetch=fetch or grant,
        clock=clock,
        path=tmp_path / "authinfo.json",
        refresh_ahead=300.0,
    )
    sessions = FaceSessions(
        lifecycle=lifecycle, authinfo=authinfo, merchant=merchant, device=device, clock=clock
    )
    journal = await Journal.open(tmp_path / "j.sqlite3", clock=clock)
    backend = backend or PayingBackend()
    payments = PaymentService(
        journal.payments,
        backend,
        clock,
        timings or PaymentTimings(),
        device_info=merchant.device_id,
    )
    flows = FaceFlows(sessions=sessions, payments=payments, lifecycle=lifecycle, clock=clock)
    world = World(
        clock, sim, lifecycle, authinfo, sessions, flows, journal, payments, backend, device
    )
    await lifecycle.start()
    ready = State.UNINITIALIZED if mode is SdkMode.AGGREGATE else State.READY
    await until(lambda: lifecycle.state is ready, 10, f"lifecycle {ready.value}")
    try:
        yield world
    finally:
        await flows.close()
        await payments.close(0)
        await lifecycle.stop()
        await sim.stop()
        await journal.close()


@contextlib.asynccontextmanager
async def world_server(world: World, *, reflection_on: bool = False) -> AsyncIterator[Path]:
    """The real gRPC server over the world's domain objects on a Unix socket; yields its path."""
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # socket paths are short
        socket = Path(short) / "t.sock"
        domain = Domain(
            config=Config(device=world.device),
            lifecycle=world.lifecycle,
            authinfo=world.authinfo,
            sessions=world.sessions,
            flows=world.flows,
            payments=world.payments,
        )
        server = RpcServer(TerminalService(domain), socket, reflection_on=reflection_on)
        await server.start()
        await server.set_serving(True)
        try:
            yield socket
        finally:
            await server.stop(0)
