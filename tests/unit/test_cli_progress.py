"""`facepay pay` through a 40 s USERPAYING in simulated time: the progress lines facepayd streams.

In-process: the face domain on a ManualClock (face_world) served over a real Unix socket, the
real v2 client against the real HTTPS WeChat Pay simulator on the same clock, and the CLI's
main_async on the same event loop with its progress ticker on the same clock. The test moves the
clock one second at a time, and only while the payment machine sleeps until its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from facepay.terminal.v1 import terminal_pb2
from facepay_client import TerminalClient
from facepay_client.cli import ExitCode, main_async
from facepayd.clock import ManualClock
from facepayd.payments.machine import PaymentTimings
from facepayd.payments.progress import Activity, Progress, ProgressFeed
from facepayd.sim.tls import generate_test_pki
from facepayd.sim.wxpay import WxPaySimulator
from facepayd.wxpay.http import ClientCert, build_http_clients
from facepayd.wxpay.models import Merchant
from facepayd.wxpay.v2 import WxPayV2Client
from tests.helpers import settle, until
from tests.unit.face_world import CAPTURE, MERCHANT, World, face_world, world_server

_MERCHANT = Merchant(appid=MERCHANT.appid, mch_id=MERCHANT.mch_id)
_API_KEY = "SimApiKey0123456789abcdefghijklm"
_USERPAYING_SECONDS = 40.0
_POLL = 5.0
# WeChat's 5 s polls; the give-up far enough out that the payer's 40 s are waited for.
_TIMINGS = PaymentTimings(
    poll_interval=_POLL, give_up_after=90.0, in_flight_after=90.0, attention_after=300.0
)
_LINE = re.compile(r"^facepay: (?P<elapsed>[\d.]+|\d+ min \d\d) s: (?P<doing>.*)…$")
_WAITING = re.compile(
    r"the payer confirms on their phone \(USERPAYING\); "
    r"querying WeChat Pay \((?P<attempt>\d+)\) in (?P<left>\d+) s"
)
_NO = "LONGUSERPAYING1"


@contextlib.asynccontextmanager
async def _userpaying_world(tmp_path: Path) -> AsyncIterator[World]:
    """A face world whose WeChat Pay is the HTTPS simulator, on the world's ManualClock."""
    clock = ManualClock()
    (tmp_path / "pki").mkdir()
    pki = generate_test_pki(tmp_path / "pki")
    sim = WxPaySimulator(
        merchant=_MERCHANT,
        api_key=_API_KEY,
        pki=pki,
        clock=clock,
        userpaying_seconds=_USERPAYING_SECONDS,
    )
    await sim.start()
    cert = ClientCert.load_pkcs12_file(pki.client_p12, pki.client_p12_password)
    http = build_http_clients(sim.ca_file, cert, httpx.Timeout(10.0))
    backend = WxPayV2Client(
        _MERCHANT,
        _API_KEY,
        "MD5",
        api_base_url=sim.base_url,
        authinfo_url=sim.authinfo_url,
        http=http.api,
        secapi_http=http.secapi,
        clock=clock,
    )
    try:
        async with face_world(tmp_path, clock=clock, backend=backend, timings=_TIMINGS) as world:
            # Paid as the user whose face the simulated terminal captured.
            sim.openid_of_face_code = world.sim.face_code_openids.get
            yield world
    finally:
        await http.aclose()
        await sim.stop()


async def _journaled(world: World) -> None:
    """Wait until the new order is in the journal (its commit runs beside the face UI)."""
    for _ in range(1000):
        if await world.payments.find(_NO) is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{_NO} never journaled")


async def _collect(feed: ProgressFeed, notices: list[Progress]) -> None:
    while True:
        notices.append(await feed.get())


def _sleeping_until_a_poll(world: World, notices: list[Progress]) -> bool:
    """The machine sleeps until its next query: no WeChat Pay call is under way."""
    if not notices:
        return False
    last = notices[-1]
    return (
        last.activity is Activity.WAITING_TO_QUERY
        and last.next_at is not None
        and world.clock.time() < last.next_at
    )


async def _drive(
    world: World,
    notices: list[Progress],
    task: asyncio.Future[object],
    caught_up: Callable[[], bool] = lambda: True,
) -> None:
    """Move the clock a second at a time, each time once the machine sleeps, until task ends."""
    while not task.done():
        if not (await world.payments.get(_NO)).final:
            await until(
                lambda: (_sleeping_until_a_poll(world, notices) and caught_up()) or task.done(),
                what="the machine asleep until its next poll",
            )
        await world.clock.advance(1.0)
        await settle()
        assert world.clock.monotonic() < 200, "the payment never ended"


def _seconds(elapsed: str) -> float:
    """The progress line's elapsed text ("12.5" or "1 min 04") in seconds."""
    minutes, _, rest = elapsed.rpartition(" min ")
    return 60 * int(minutes or 0) + float(rest)


async def test_pay_through_a_40_s_userpaying_shows_the_queries_counting_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with _userpaying_world(tmp_path) as world, world_server(world) as socket:
        notices: list[Progress] = []
        # The test watches the machine too, to move the clock only while it sleeps.
        with world.payments.progress.follow(_NO) as feed:
            collector = asyncio.ensure_future(_collect(feed, notices))
            argv = ["--socket", str(socket), "--progress", "1", "pay"]
            argv += ["--amount", "101", "--body", "goods", "--out-trade-no", _NO]
            cli = asyncio.ensure_future(main_async(argv, clock=world.clock))
            async with TerminalClient(socket) as client:
                # A second client on the same socket: the clock moves on only once a notice has
                # crossed the socket, so a busy machine cannot leave the CLI's stream behind.
                received: list[terminal_pb2.PaymentProgress] = []
                replayed: list[terminal_pb2.PaymentEvent] = []

                async def watch() -> None:
                    async for response in client.watch_payment_stream(_NO):
                        if response.HasField("progress"):
                            received.append(response.progress)
                        else:
                            replayed.append(response.event)

                def delivered() -> bool:
                    return bool(received) and received[-1].attempt == notices[-1].attempt

                watcher: asyncio.Future[None] | None = None
                try:
                    await world.face_shown()
                    await _journaled(world)
                    watcher = asyncio.ensure_future(watch())
                    # Its first event comes after its progress feed is attached.
                    await until(lambda: bool(replayed), what="the watch attached")
                    await world.clock.advance(CAPTURE)
                    await _drive(world, notices, cli, delivered)
                    code = await cli
                    await watcher
                finally:
                    collector.cancel()
                    cli.cancel()
                    if watcher is not None:
                        watcher.cancel()
    out, err = capsys.readouterr()
    assert code == ExitCode.OK, err
    rows = [line.split() for line in out.splitlines() if line.startswith("#")]
    assert [row[2] for row in rows][-2:] == ["PENDING", "SUCCEEDED"]

    lines = [m for line in err.splitlines() if (m := _LINE.match(line))]
    waiting = [w for m in lines if (w := _WAITING.fullmatch(m["doing"]))]
    attempts = [int(w["attempt"]) for w in waiting]
    # A poll every 5 s through the payer's 40 s: the 8th query finds it paid.
    assert attempts == sorted(attempts)
    # The clock waits for the second watcher, not for this process's stream, so a busy machine
    # may let the CLI skip a wait; most of the eight, counting up to the last ones, must show.
    assert len(set(attempts)) >= 5, err
    assert set(attempts) <= set(range(1, 9)), err
    assert max(attempts) >= 7, err
    # Each wait shown counts down to its query (a tick may still show the wait before, if this
    # process's stream is slower than the watcher the clock waits for; a skipped one has none).
    for attempt in sorted(set(attempts) - {1}):
        left = [int(w["left"]) for w in waiting if int(w["attempt"]) == attempt]
        assert left == sorted(left, reverse=True), (attempt, left)
        assert max(left) <= _POLL, (attempt, left)
    # The elapsed time is the CLI's on the same clock: past the payer's 40 s at the end.
    assert _seconds(lines[-1]["elapsed"]) >= _USERPAYING_SECONDS
    # Progress goes to stderr only; every notice while waiting named the payer's USERPAYING.
    assert "querying WeChat Pay" not in out
    assert all(n.reason == "USERPAYING" for n in notices if n.activity is Activity.WAITING_TO_QUERY)


async def test_watch_payment_streams_the_progress_and_the_event_view_leaves_it_out(
    tmp_path: Path,
) -> None:
    async with _userpaying_world(tmp_path) as world, world_server(world) as socket:
        notices: list[Progress] = []
        with world.payments.progress.follow(_NO) as feed:
            collector = asyncio.ensure_future(_collect(feed, notices))
            argv = ["--socket", str(socket), "--progress", "0", "pay"]
            argv += ["--amount", "101", "--body", "goods", "--out-trade-no", _NO]
            cli = asyncio.ensure_future(main_async(argv, clock=world.clock))
            async with TerminalClient(socket) as client:
                watched: list[terminal_pb2.WatchPaymentResponse] = []
                events: list[terminal_pb2.PaymentEvent] = []

                async def watch() -> None:
                    async for response in client.watch_payment_stream(_NO):
                        watched.append(response)

                async def watch_events() -> None:
                    async for event in client.watch_payment(_NO):
                        events.append(event)

                def caught_up() -> bool:
                    """The watcher has the machine's newest notice."""
                    latest = [r.progress for r in watched if r.HasField("progress")]
                    return bool(latest) and latest[-1].attempt == notices[-1].attempt

                # Attached while the face UI is up, before anything is sent to WeChat Pay.
                await world.face_shown()
                await _journaled(world)
                watchers = asyncio.gather(watch(), watch_events())
                await until(lambda: bool(watched) and bool(events), what="both watching")
                await world.clock.advance(CAPTURE)
                try:
                    await _drive(world, notices, cli, caught_up)
                    await watchers
                finally:
                    collector.cancel()
                    cli.cancel()
                    watchers.cancel()
    assert await cli == ExitCode.OK
    kinds = [response.WhichOneof("kind") for response in watched]
    assert kinds[-1] == "event"
    progress = [r.progress for r in watched if r.HasField("progress")]
    waits = [p for p in progress if p.activity == "WAITING_TO_QUERY"]
    # Every wait for a poll, in order: the 8th query finds the order paid.
    assert [p.attempt for p in waits] == list(range(1, 9))
    for p in waits:
        assert p.out_trade_no == _NO
        assert p.state == terminal_pb2.PAYMENT_STATE_PENDING
        assert p.reason == "USERPAYING"
        assert p.HasField("since")
        assert p.HasField("next_at")
    assert all(p.state != terminal_pb2.PAYMENT_STATE_CAPTURING for p in progress)
    # The events-only view: the journaled events, each with its seq, no progress in between.
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert events[-1].state == terminal_pb2.PAYMENT_STATE_SUCCEEDED
