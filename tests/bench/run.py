"""`make bench`: every performance figure of issue 10, each A/B against its baseline in one run.

Run: make bench   (or PYTHONPATH=daemon:clients:. python tests/bench/run.py [--rounds N] [--long])
Each figure's subject (A) and baseline (B) are measured in alternating order over several rounds
in the same run, so a machine that is busy for a while slows both; the table shows the median of
the per-round ratios and their spread (min-max). The daemon runs as a child process
(DaemonProcess) against the simulators living in this process; the bare gRPC server (the
baselines of P1 and P3) and P1's do-nothing server (its limit) are child processes too.
Timings are wall time (perf_counter) in this process: the simulated terminal and WeChat Pay
stamp when a frame or request reaches them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import importlib.metadata
import itertools
import os
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from facepay.bridge.v1 import bridge_pb2
from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd.clock import SystemClock
from facepayd.daemon import Daemon, build_outside
from facepayd.device.adb import AdbSettings, AdbTransport, bundled_adb_path
from facepayd.device.bridge import BridgeClient
from facepayd.device.framing import FrameReader, encode_frame
from facepayd.device.sdk import FaceCodeRequest, FaceMerchant, InitOptions, Sdk, SdkVersion
from facepayd.device.tcp import TcpTransport
from facepayd.ops import logs
from facepayd.sim.adbd import AdbServer, FakeAdbd
from facepayd.sim.daemon_process import DaemonProcess, child_env
from facepayd.sim.stack import DEVICE_ID, STORE_ID, STORE_NAME, SimOptions, SimStack
from facepayd.sim.terminal import SimLatencies, SimTerminal
from facepayd.sim.wxpay import MICROPAY_PATH
from tests.bench import bench_load

REPO = Path(__file__).resolve().parents[2]
PRODUCTION_SITE = Path(__file__).resolve().parent / "production_site"
DISTRIBUTION = "facepay-terminal"
SERVICE = "/facepay.terminal.v1.TerminalService/"
BARE_METHOD = "/bench.Bare/Empty"
STUB_METHOD = "/bench.Stub/Capture"
ECHO_SERVICE = "localabstract:facepay-echo"
ECHO_SOCKET = "facepay-echo"  # what AdbSettings.bridge_socket names it
BRIDGE_SOCKET = "facepay-bridge"
# The simulator's default SDK latencies for init and rawdata (P2 is measured at them); the face
# is shown at once so that a payment takes milliseconds, not the 1 s a person would.
LATENCIES = dataclasses.replace(SimLatencies(), face_capture=0.0, update_result=0.0, quit=0.0)


# ---------------------------------------------------------------- the table


@dataclass(slots=True)
class Row:
    """One figure: per-round subject and baseline values, and its goal on their ratio."""

    figure: str
    subject: str
    baseline: str
    unit: str
    goal: str
    meets: Callable[[float], bool]
    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ratios(self) -> list[float]:
        """A / B for each round."""
        return [a / b for a, b in zip(self.a, self.b, strict=True) if b]

    @property
    def ratio(self) -> float:
        """The median of the per-round ratios."""
        ratios = self.ratios
        return statistics.median(ratios) if ratios else float("nan")

    @property
    def met(self) -> bool:
        """Whether the median ratio meets the goal."""
        return bool(self.ratios) and self.meets(self.ratio)


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


HEADER = ("figure", "A (median)", "baseline B (median)", "ratio A/B", "spread", "goal", "met")


def format_table(rows: list[Row]) -> str:
    """The one table `make bench` prints (Markdown, so the README can hold it as is)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        ratios = row.ratios
        spread = f"{_fmt(min(ratios))}-{_fmt(max(ratios))}" if ratios else "-"
        a = f"{_fmt(statistics.median(row.a))} {row.unit}" if row.a else "-"
        b = f"{_fmt(statistics.median(row.b))} {row.unit}" if row.b else "-"
        cells = (
            f"{row.figure}: {row.subject}",
            a,
            f"{b} ({row.baseline})",
            f"{_fmt(row.ratio)}x",
            f"{spread} (n={len(ratios)})",
            row.goal,
            ("yes" if row.met else "no") + (f" ({row.note})" if row.note else ""),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def at_most(limit: float) -> Callable[[float], bool]:
    return lambda ratio: ratio <= limit


def at_least(limit: float) -> Callable[[float], bool]:
    return lambda ratio: ratio >= limit


async def interleave(
    rounds: int, a: Callable[[], Awaitable[float]], b: Callable[[], Awaitable[float]], row: Row
) -> None:
    """A then B in even rounds, B then A in odd ones."""
    for index in range(rounds):
        if index % 2 == 0:
            row.a.append(await a())
            row.b.append(await b())
        else:
            row.b.append(await b())
            row.a.append(await a())


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


# ---------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """How much of each figure; tiny() is what the smoke test in `make test` runs."""

    rounds: int = 6
    calls: int = 200  # per round, for round-trip figures
    camera_calls: int = 25  # per round, P1 and P2's warm side
    naive_calls: int = 3  # per round, P2's naive side (each ≈ 0.25 s at the default latencies)
    commits: int = 20  # per round, P4's baseline
    payments_p4: int = 8  # per round
    throughput_seconds: float = 0.6  # per round and per side, P3
    payments_p5: int = 2000
    # The journal's page cache (512 KiB) and the allocator's pools fill over the first few hundred
    # payments and then stay (measured: flat from about 1,000 on); drift is what grows after.
    p5_warmup: int = 1000
    load_clients: int = 50
    load_seconds: float = 4.0
    load_idle_calls: int = 600
    load_rounds: int = 2
    # The figures to run ("P1", ... "P7"; P6 brings the RTT row); empty: every figure.
    only: frozenset[str] = frozenset()

    def wants(self, figure: str) -> bool:
        """Whether this run measures figure."""
        return not self.only or figure in self.only

    @classmethod
    def tiny(cls) -> BenchOptions:
        """Every figure, a few samples each: seconds, for the shape of the table only."""
        return cls(
            rounds=2,
            calls=20,
            camera_calls=3,
            naive_calls=1,
            commits=3,
            payments_p4=2,
            throughput_seconds=0.1,
            payments_p5=20,
            p5_warmup=5,
            load_clients=8,
            load_seconds=0.5,
            load_idle_calls=30,
            load_rounds=1,
        )


# ---------------------------------------------------------------- stamps from the simulators


class Stamps:
    """When the simulated terminal read a getWxpayfaceCode frame and sent its code, and WeChat
    Pay a micropay, in perf_counter seconds, by out_trade_no."""

    def __init__(self, terminal: SimTerminal, wxpay: Any) -> None:
        self.camera: dict[str, float] = {}
        self.code_sent: dict[str, float] = {}
        self.micropay: dict[str, float] = {}
        self._waiters: dict[tuple[str, str], asyncio.Future[float]] = {}
        # The simulator's method table is private; a benchmark may reach in to stamp it.
        methods = terminal._methods
        entry = methods["getWxpayfaceCode"]
        original = entry.handler

        async def stamped(peer: Any, call_id: int, params: Mapping[str, str]) -> Any:
            key = params.get("out_trade_no", "")
            info = await original(peer, call_id, params)
            self._stamp(self.code_sent, "code", key)
            return info

        methods["getWxpayfaceCode"] = dataclasses.replace(entry, handler=stamped)
        # The camera's moment: the call has reached the peripheral (the simulator's own task
        # and bookkeeping before its handler runs are not the daemon's time).
        terminal.call_observers.append(self._observe_call)
        wxpay.observers.append(self._observe)

    def _observe_call(self, method: str, params: Mapping[str, str]) -> None:
        if method == "getWxpayfaceCode":
            self._stamp(self.camera, "camera", params.get("out_trade_no", ""))

    def _observe(self, path: str, fields: Mapping[str, str]) -> None:
        if path == MICROPAY_PATH:
            self._stamp(self.micropay, "micropay", fields.get("out_trade_no", ""))

    def _stamp(self, into: dict[str, float], what: str, key: str) -> None:
        now = time.perf_counter()
        into.setdefault(key, now)
        waiter = self._waiters.pop((what, key), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)

    async def wait(self, what: str, key: str, timeout: float = 10.0) -> float:
        into = {"camera": self.camera, "code": self.code_sent, "micropay": self.micropay}[what]
        if key in into:
            return into[key]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[(what, key)] = waiter
        return await asyncio.wait_for(waiter, timeout)


# ---------------------------------------------------------------- the world


class World:
    """Simulators here, the daemon and a bare gRPC server as children, raw channels to both."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.stack = SimStack(workdir / "sim", SimOptions(latencies=LATENCIES))
        self.daemon = DaemonProcess(self.stack, workdir / "daemon")
        self.daemon.extra_env = production_env()
        self.bare_socket = Path(tempfile.mkdtemp(prefix="fpb", dir="/tmp")) / "bare.sock"
        self.bare: asyncio.subprocess.Process | None = None
        self.stub: asyncio.subprocess.Process | None = None
        self.channel: grpc.aio.Channel | None = None
        self.bare_channel: grpc.aio.Channel | None = None
        self.stub_channel: grpc.aio.Channel | None = None
        self.stamps: Stamps | None = None
        self._numbers = itertools.count(1)
        self._run = secrets.token_hex(3).upper()

    async def start(self) -> None:
        await self.stack.start()
        assert self.stack.terminal is not None
        assert self.stack.adbd is not None
        self.stack.adbd.stream_handlers[ECHO_SERVICE] = echo
        self.stamps = Stamps(self.stack.terminal, self.stack.wxpay)
        # info, as in production.
        await self.daemon.start(log_level="info")
        env = child_env()
        env["PYTHONPATH"] += os.pathsep + str(REPO)  # this file imports tests.bench
        self.bare = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--bare-server", str(self.bare_socket), env=env
        )
        self.channel = grpc.aio.insecure_channel(f"unix:{self.daemon.socket}")
        self.bare_channel = grpc.aio.insecure_channel(f"unix:{self.bare_socket}")
        await asyncio.wait_for(self.bare_channel.channel_ready(), 20)
        await asyncio.wait_for(self.channel.channel_ready(), 20)

    async def start_stub(self) -> None:
        """The do-nothing server of P1's limit row, with its own stream to the terminal."""
        stack = self.stack
        assert stack.adb_server is not None
        assert stack.adbd is not None
        socket = self.bare_socket.with_name("stub.sock")
        env = child_env()
        env["PYTHONPATH"] += os.pathsep + str(REPO)
        self.stub = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--stub-camera",
            str(socket),
            str(stack.adb_server.port),
            stack.adbd.address,
            env=env,
        )
        self.stub_channel = grpc.aio.insecure_channel(f"unix:{socket}")
        await asyncio.wait_for(self.stub_channel.channel_ready(), 20)

    async def stop(self) -> None:
        for channel in (self.channel, self.bare_channel, self.stub_channel):
            if channel is not None:
                await channel.close()
        for child in (self.bare, self.stub):
            if child is not None:
                child.terminate()
                await child.wait()
        try:
            await self.daemon.stop()
        finally:
            await self.stack.stop()

    def next_number(self) -> str:
        return f"B{self._run}{next(self._numbers):07d}"

    def unary(self, method: str) -> Any:
        assert self.channel is not None
        return self.channel.unary_unary(SERVICE + method)

    def streaming(self, method: str) -> Any:
        assert self.channel is not None
        return self.channel.unary_stream(SERVICE + method)

    def bare_unary(self) -> Any:
        assert self.bare_channel is not None
        return self.bare_channel.unary_unary(BARE_METHOD)

    def daemon_rss_kb(self) -> int:
        assert self.daemon.process is not None
        status = Path(f"/proc/{self.daemon.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1])

    def adb_transport(self, socket: str) -> AdbTransport:
        stack = self.stack
        assert stack.adb_server is not None
        assert stack.adbd is not None
        return AdbTransport(
            AdbSettings(
                server_port=stack.adb_server.port, address=stack.adbd.address, bridge_socket=socket
            )
        )


def runtime_distributions(name: str = DISTRIBUTION) -> set[str]:
    """The distributions a production install of ``name`` has: its requirements without extras,
    transitively (normalised names)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        key = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            requirements = importlib.metadata.requires(key) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            if "extra ==" not in requirement:
                todo.append(re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0])
    return seen


def dev_only_modules() -> list[str]:
    """Top-level modules installed here that no runtime dependency provides (pytest, rich...)."""
    runtime = runtime_distributions()
    absent = []
    for module, distributions in importlib.metadata.packages_distributions().items():
        if module.startswith("_") or module in sys.stdlib_module_names:
            continue
        if not any(re.sub(r"[-_.]+", "-", d).lower() in runtime for d in distributions):
            absent.append(module)
    return sorted(absent)


def production_env() -> dict[str, str]:
    """The daemon child's environment: our packages importable, dev-only ones absent."""
    return {
        "PYTHONPATH": os.pathsep.join((str(PRODUCTION_SITE), child_env()["PYTHONPATH"])),
        "FACEPAY_BENCH_ABSENT": ",".join(dev_only_modules()),
    }


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A raw echo behind the fake adbd: the floor of any bridge round trip."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def echo_rtt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> float:
    """One raw round trip of size bytes, in seconds."""
    payload = b"\x00" * size
    start = time.perf_counter()
    writer.write(payload)
    await writer.drain()
    await reader.readexactly(size)
    return time.perf_counter() - start


async def unary_rtts(call: Any, request: bytes, count: int) -> list[float]:
    """count sequential unary round trips, in seconds."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call(request)
        samples.append(time.perf_counter() - start)
    return samples


# ---------------------------------------------------------------- P1, P2: the camera


def face_pay_request(out_trade_no: str) -> bytes:
    return pb.StartFacePayRequest(
        out_trade_no=out_trade_no, total_fee=1, body="bench"
    ).SerializeToString()


async def time_to_camera(world: World, rpc: str) -> float:
    """One warm session: from the POS's call to getWxpayfaceCode at the terminal, in seconds."""
    assert world.stamps is not None
    number = world.next_number()
    if rpc == "StartFacePay":
        request = face_pay_request(number)
    else:
        request = pb.CaptureFaceCodeRequest(out_trade_no=number, total_fee=1).SerializeToString()
    start = time.perf_counter()
    call = world.streaming(rpc)(request)
    async for _ in call:
        pass  # to the end of the stream: the next session starts warm on a free screen
    return await world.stamps.wait("camera", number) - start


async def camera_round(world: World, rpc: str, count: int) -> float:
    return statistics.median([await time_to_camera(world, rpc) for _ in range(count)]) * 1000


async def stub_camera_round(world: World, count: int) -> float:
    """Time-to-camera of the do-nothing server (stub_camera_server), ms."""
    assert world.stamps is not None
    assert world.stub_channel is not None
    call = world.stub_channel.unary_stream(STUB_METHOD)
    samples = []
    for _ in range(count):
        number = world.next_number()
        start = time.perf_counter()
        async for _ in call(number.encode()):
            pass
        samples.append(await world.stamps.wait("camera", number) - start)
    return median_ms(samples)


async def floor_round(world: World, count: int) -> float:
    """Bare gRPC unary RTT + bare echo RTT through the daemon's adb server and fake adbd, ms."""
    grpc_rtt = median_ms(await unary_rtts(world.bare_unary(), b"", count))
    transport = world.adb_transport(ECHO_SOCKET)
    reader, writer = await transport.open(5.0)
    try:
        size = len(
            encode_frame(
                bridge_pb2.Frame(
                    call=bridge_pb2.Call(call_id=1, method="getWxpayfaceCode", params={})
                )
            )
        )
        rtts = [await echo_rtt(reader, writer, size) for _ in range(count)]
    finally:
        writer.close()
        await transport.close()
    return grpc_rtt + median_ms(rtts)


async def naive_sale(world: World, sdk: Sdk, wxpay: Any) -> float:
    """init → rawdata → authinfo over HTTPS → getWxpayfaceCode at the terminal, in seconds."""
    assert world.stamps is not None
    from facepayd.sim.stack import MERCHANT

    number = world.next_number()
    start = time.perf_counter()
    await sdk.init(InitOptions())
    rawdata = await sdk.rawdata()
    grant = await wxpay.get_authinfo(
        rawdata=rawdata, store_id=STORE_ID, store_name=STORE_NAME, device_id=DEVICE_ID
    )
    request = FaceCodeRequest(
        merchant=FaceMerchant(appid=MERCHANT.appid, mch_id=MERCHANT.mch_id, store_id=STORE_ID),
        authinfo=grant.authinfo,
        out_trade_no=number,
        total_fee=1,
    )
    await sdk.get_face_code(request)
    return await world.stamps.wait("camera", number) - start


# ---------------------------------------------------------------- P3: throughput


async def throughput(call: Any, request: bytes, callers: int, seconds: float) -> float:
    """Calls per second by `callers` closed-loop callers on one channel."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call(request)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return done / (time.perf_counter() - start)


# ---------------------------------------------------------------- P4: face → micropay


async def pay(world: World) -> str:
    number = world.next_number()
    async for _ in world.streaming("StartFacePay")(face_pay_request(number)):
        pass
    return number


async def face_to_micropay_round(world: World, count: int) -> float:
    assert world.stamps is not None
    samples = []
    for _ in range(count):
        number = await pay(world)
        code = await world.stamps.wait("code", number)
        paid = await world.stamps.wait("micropay", number)
        samples.append(paid - code)
    return median_ms(samples)


def commit_round(path: Path, count: int) -> float:
    """One INSERT committed with synchronous=FULL in WAL, on the daemon's disk, in ms."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT)")
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO t VALUES (?, ?)", (secrets.token_hex(8), "x" * 200))
            connection.execute("COMMIT")
            samples.append(time.perf_counter() - start)
        return median_ms(samples)
    finally:
        connection.close()


# ---------------------------------------------------------------- P6 and the bridge RTT


class BridgeWorld:
    """A terminal with instant SDK latencies behind its own adb server and fake adbd, and TCP."""

    def __init__(self) -> None:
        self.terminal = SimTerminal(clock=SystemClock(), latencies=SimLatencies.instant())
        self.adbd = FakeAdbd(
            {"localabstract:facepay-bridge": self.terminal.handle_stream, ECHO_SERVICE: echo}
        )
        self.server = AdbServer(bundled_adb_path())
        self.port = 0
        self.clients: list[BridgeClient] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def __aenter__(self) -> BridgeWorld:
        self.port = await self.terminal.serve_tcp()
        await self.adbd.__aenter__()
        await self.server.__aenter__()
        await self.server.connect(self.adbd.address)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                await close()
        await self.server.__aexit__(*exc)
        await self.adbd.__aexit__(*exc)
        await self.terminal.stop()

    def adb(self, socket: str = BRIDGE_SOCKET) -> AdbTransport:
        transport = AdbTransport(
            AdbSettings(
                server_port=self.server.port, address=self.adbd.address, bridge_socket=socket
            )
        )
        self._closers.append(transport.close)
        return transport

    async def bridge(self, transport: Any) -> BridgeClient:
        client = BridgeClient(transport, SystemClock(), heartbeat_interval=60.0)
        await client.connect()
        self._closers.append(client.close)
        await client.call("initWxpayface", {}, timeout=5.0)
        return client


async def bridge_calls_ms(client: BridgeClient, count: int) -> float:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await client.call("getWxpayfaceRawdata", {}, timeout=5.0)
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


async def raw_echo_ms(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int
) -> float:
    # The sizes of a rawdata Call frame out and its Callback back, sent as one echo each way.
    size = len(
        encode_frame(
            bridge_pb2.Frame(call=bridge_pb2.Call(call_id=100, method="getWxpayfaceRawdata"))
        )
    )
    return median_ms([await echo_rtt(reader, writer, size) for _ in range(count)])


# ---------------------------------------------------------------- the run


async def run(options: BenchOptions, workdir: Path, *, log: Callable[[str], None]) -> list[Row]:
    """Every figure; returns the rows of the table."""
    rows: list[Row] = []
    o = options
    world = World(workdir)
    await world.start()
    try:
        if o.wants("P1"):
            log("P1 time-to-camera")
            for rpc in ("CaptureFaceCode", "StartFacePay"):
                row = Row(
                    "P1",
                    f"warm time-to-camera, {rpc}",
                    "bare gRPC unary RTT + bare bridge echo RTT",
                    "ms",
                    "≤ 1.0x",
                    at_most(1.0),
                )
                await camera_round(world, rpc, 2)  # warm-up
                await interleave(
                    o.rounds,
                    lambda rpc=rpc: camera_round(world, rpc, o.camera_calls),  # type: ignore[misc]
                    lambda: floor_round(world, o.calls),
                    row,
                )
                rows.append(row)
            # What the goal leaves a daemon: a server that does nothing between the call and the
            # frame, on the same UDS, adb server and terminal.
            limit = Row(
                "P1",
                "time-to-camera of a server that only frames and writes the call",
                "bare gRPC unary RTT + bare bridge echo RTT",
                "ms",
                "(a figure to read)",
                lambda _ratio: True,
            )
            await world.start_stub()
            await stub_camera_round(world, 2)  # warm-up
            await interleave(
                o.rounds,
                lambda: stub_camera_round(world, o.camera_calls),
                lambda: floor_round(world, o.calls),
                limit,
            )
            rows.append(limit)

        if o.wants("P2"):
            log("P2 naive per-sale flow")
            p2 = Row(
                "P2",
                "naive sale (init, rawdata, authinfo HTTPS, getWxpayfaceCode)",
                "warm StartFacePay time-to-camera",
                "ms",
                "≥ 20x",
                at_least(20.0),
            )
            naive_daemon = Daemon(
                world.stack.daemon_config(
                    socket=workdir / "unused.sock", state_dir=workdir / "naive"
                ),
                build_outside(
                    world.stack.daemon_config(
                        socket=workdir / "unused.sock", state_dir=workdir / "naive"
                    )
                ),
            )
            transport = world.adb_transport(BRIDGE_SOCKET)
            bridge = BridgeClient(transport, SystemClock(), heartbeat_interval=60.0)
            await bridge.connect()
            assert bridge.hello is not None
            sdk = Sdk(
                bridge.call,
                SdkVersion.parse(bridge.hello.sdk_version),
                call_timeout=10.0,
                face_timeout=10.0,
            )
            try:

                async def naive() -> float:
                    samples = [
                        await naive_sale(world, sdk, naive_daemon.wxpay)
                        for _ in range(o.naive_calls)
                    ]
                    return statistics.median(samples) * 1000

                await interleave(
                    o.rounds, naive, lambda: camera_round(world, "StartFacePay", o.camera_calls), p2
                )
            finally:
                await bridge.close()
                await transport.close()
                await naive_daemon._outside.http.aclose()
            rows.append(p2)

        if o.wants("P3"):
            log("P3 GetStatus throughput")
            for callers in (1, 32):
                row = Row(
                    "P3",
                    f"GetStatus throughput, {callers} caller{'s' if callers > 1 else ''}",
                    "bare grpc.aio empty method",
                    "calls/s",
                    "≥ 0.8x",
                    at_least(0.8),
                )
                await interleave(
                    o.rounds,
                    lambda c=callers: throughput(
                        world.unary("GetStatus"), b"", c, o.throughput_seconds
                    ),  # type: ignore[misc]
                    lambda c=callers: throughput(world.bare_unary(), b"", c, o.throughput_seconds),  # type: ignore[misc]
                    row,
                )
                rows.append(row)

        if o.wants("P4"):
            log("P4 face captured to micropay")
            p4 = Row(
                "P4",
                "face code sent by the terminal → micropay at WeChat Pay",
                "one SQLite synchronous=FULL commit",
                "ms",
                "≤ 1.5x",
                at_most(1.5),
            )
            commit_path = world.daemon.state_dir / "bench-commit.sqlite3"
            await interleave(
                o.rounds,
                lambda: face_to_micropay_round(world, o.payments_p4),
                lambda: asyncio.to_thread(commit_round, commit_path, o.commits),
                p4,
            )
            rows.append(p4)

        if o.wants("P5"):
            log(f"P5 memory over {o.payments_p5} payments")
            rows.extend(await memory_rows(world, o))

        if o.wants("P7"):
            log("P7 GetStatus p99 under load")
            p7 = Row(
                "P7",
                f"GetStatus p99 with {o.load_clients} busy clients",
                "idle p99 (before and after)",
                "ms",
                "≤ 3x",
                at_most(3.0),
            )
            load = bench_load.LoadOptions(
                clients=o.load_clients, seconds=o.load_seconds, idle_calls=o.load_idle_calls
            )
            for _ in range(o.load_rounds):
                report = await bench_load._measure(world.daemon.socket, load)
                p7.a.append(bench_load.percentile(report.loaded, 99))
                p7.b.append(bench_load.percentile(report.idle, 99))
                if report.status_errors:
                    p7.note = f"{report.status_errors} status errors"
            rows.append(p7)
    finally:
        await world.stop()

    if o.wants("P6"):
        log("P6 bridge call overhead, and the bridge RTT over adb vs TCP")
        async with BridgeWorld() as bw:
            adb_client = await bw.bridge(bw.adb())
            tcp_client = await bw.bridge(TcpTransport("127.0.0.1", bw.port))
            echo_transport = bw.adb(ECHO_SOCKET)
            reader, writer = await echo_transport.open(5.0)
            p6 = Row(
                "P6",
                "bridge call (rawdata, instant SDK)",
                "raw echo, same adb server and fake adbd",
                "ms",
                "≤ 1.25x",
                at_most(1.25),
            )
            await interleave(
                o.rounds,
                lambda: bridge_calls_ms(adb_client, o.calls),
                lambda: raw_echo_ms(reader, writer, o.calls),
                p6,
            )
            rows.append(p6)
            rtt = Row(
                "RTT",
                "bridge call over adb server + adbd",
                "the same over plain TCP",
                "ms",
                "(a figure to read)",
                lambda _ratio: True,
            )
            await interleave(
                o.rounds,
                lambda: bridge_calls_ms(adb_client, o.calls),
                lambda: bridge_calls_ms(tcp_client, o.calls),
                rtt,
            )
            rows.append(rtt)
            writer.close()
    return rows


async def memory_rows(world: World, o: BenchOptions) -> list[Row]:
    """P5: the daemon's RSS after a warm-up and after N more payments (sequential, real ones)."""
    for _ in range(o.p5_warmup):
        await pay(world)
    samples = [world.daemon_rss_kb()]
    step = max(o.payments_p5 // 4, 1)
    done = 0
    while done < o.payments_p5:
        for _ in range(min(step, o.payments_p5 - done)):
            await pay(world)
        done += min(step, o.payments_p5 - done)
        samples.append(world.daemon_rss_kb())
    start_mb, end_mb = samples[0] / 1024, samples[-1] / 1024
    per_10k = (end_mb - start_mb) * 10_000 / o.payments_p5
    drift = Row(
        "P5",
        f"RSS drift over {o.payments_p5} payments, as MB per 10,000",
        "RSS after warm-up",
        "MB",
        "drift ≤ 0.5 MB / 10,000",
        lambda _ratio: per_10k <= 0.5,
        a=[end_mb],
        b=[start_mb],
        note=f"{per_10k:+.2f} MB per 10,000; samples "
        + ", ".join(f"{s / 1024:.1f}" for s in samples),
    )
    peak = Row(
        "P5",
        "RSS at the end",
        "80 MB",
        "MB",
        "≤ 80 MB",
        at_most(1.0),
        a=[end_mb],
        b=[80.0],
    )
    return [drift, peak]


# ---------------------------------------------------------------- the bare server (child)


async def stub_camera_server(socket: str, adb_port: int, address: str) -> None:
    """A grpc.aio server whose one method frames a getWxpayfaceCode call, writes it and returns.

    Nothing between the call and the frame: no checks, no claim, no task, no SDK layer; its
    stream to the terminal is opened and its hello read before the first call.
    """
    transport = AdbTransport(
        AdbSettings(server_port=adb_port, address=address, bridge_socket=BRIDGE_SOCKET)
    )
    reader, writer = await transport.open(10.0)
    frames = FrameReader(reader)
    await frames.read()  # the hello
    call_ids = itertools.count(1)

    async def discard() -> None:
        while await frames.read() is not None:
            pass  # the terminal's answers (a PARAM_ERROR: the frame carries no order)

    draining = asyncio.get_running_loop().create_task(discard())

    async def capture(request: bytes, _context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        frame = bridge_pb2.Frame()
        frame.call.call_id = next(call_ids)
        frame.call.method = "getWxpayfaceCode"
        frame.call.params["out_trade_no"] = request.decode()
        writer.write(encode_frame(frame))
        yield b""

    try:
        await serve_one(socket, STUB_METHOD, grpc.unary_stream_rpc_method_handler(capture))
    finally:
        draining.cancel()
        writer.close()
        await transport.close()


async def bare_server(socket: str) -> None:
    """A grpc.aio server with one empty unary method: the floor every RPC is compared with."""

    async def empty(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return b""

    await serve_one(socket, BARE_METHOD, grpc.unary_unary_rpc_method_handler(empty))


async def serve_one(socket: str, path: str, handler: grpc.RpcMethodHandler) -> None:
    """A plain grpc.aio server on a Unix socket with the one method at path, until terminated."""
    service, method = path.strip("/").split("/")
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    """Run every figure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=BenchOptions().rounds)
    parser.add_argument("--long", action="store_true", help="P5 over 10,000 payments")
    parser.add_argument("--tiny", action="store_true", help="a few samples of each (smoke test)")
    parser.add_argument(
        "--only",
        metavar="FIGURES",
        default="",
        help="comma-separated figures to run, e.g. P1 or P1,P6 (default: all)",
    )
    parser.add_argument("--bare-server", metavar="SOCKET", help=argparse.SUPPRESS)
    parser.add_argument("--stub-camera", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server:
        asyncio.run(bare_server(args.bare_server))
        return 0
    if args.stub_camera:
        socket, adb_port, address = args.stub_camera
        asyncio.run(stub_camera_server(socket, int(adb_port), address))
        return 0
    logs.configure_logging(level="warning")  # the simulators' per-call lines, in this process
    options = BenchOptions.tiny() if args.tiny else BenchOptions(rounds=args.rounds)
    if args.long:
        options = dataclasses.replace(options, payments_p5=10_000)
    if args.only:
        figures = frozenset(f.strip().upper() for f in args.only.split(",") if f.strip())
        options = dataclasses.replace(options, only=figures)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fpd-bench") as directory:
        rows = asyncio.run(
            run(options, Path(directory), log=lambda what: print(f"... {what}", file=sys.stderr))
        )
    print(describe_machine())
    print(format_table(rows))
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")
    return 0


def describe_machine() -> str:
    """CPU, cores and Python, for the README beside the table."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return (
        f"machine: {model or 'unknown CPU'}, {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}, grpcio {grpc.__version__}, load average {load[0]:.1f}\n"
    )


if __name__ == "__main__":
    gc.collect()
    sys.exit(main())
