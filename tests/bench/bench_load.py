"""GetStatus latency idle and under 50 concurrent clients, and every error status, in one run.

Run: make bench   (or python tests/bench/bench_load.py [--clients 50] [--seconds 10])
The real daemon runs as a child process (DaemonProcess) against the simulators (SimStack) living
in this process. The load clients each hold their own channel and do one thing in a closed loop:
GetStatus, WatchStatus (held open), ListPayments, or racing face sessions (StartFacePay with a
fresh out_trade_no; the losers get TERMINAL_BUSY, which is expected and counted apart).

GetStatus latency is measured by a probe in its own process, so that the load generator's busy
event loop does not add to what it sees: the same probe, one call at a time, idle (A), under load
(B), idle again (A). The ratio compares the loaded p99 with the p99 of both idle runs together;
it is a figure to read, not a pass mark. Anything but OK and TERMINAL_BUSY is a status error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import FacepayClientError, TerminalBusyError, TerminalClient
from facepayd.ops import logs
from facepayd.sim.daemon_process import DaemonProcess, child_env
from facepayd.sim.stack import SimStack

PROBE_WARMUP = 20
ROLES = ("GetStatus", "WatchStatus", "ListPayments", "StartFacePay")
SUCCEEDED = pb.PAYMENT_STATE_SUCCEEDED
# A racer's payment still running when the window closes is let finish, within this bound.
DRAIN_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How hard and how long."""

    clients: int = 50
    seconds: float = 10.0  # the loaded probe's window; the load runs while it measures
    idle_calls: int = 2000  # per idle run (there are two)


@dataclass(slots=True)
class RpcCounts:
    """Outcomes of one RPC: OK, the expected TERMINAL_BUSY, and errors by code/reason."""

    ok: int = 0
    busy: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def error(self, exc: BaseException) -> None:
        """Count one failed call by its status code and reason (or its exception type)."""
        if isinstance(exc, FacepayClientError):
            self.errors[f"{exc.code.name}/{exc.reason or '-'}"] += 1
        else:
            self.errors[type(exc).__name__] += 1


@dataclass(slots=True)
class LoadReport:
    """Everything one run measured."""

    options: LoadOptions
    idle_before: list[float]
    loaded: list[float]
    idle_after: list[float]
    rpcs: dict[str, RpcCounts]
    payments: Counter[str]  # client-seen final states of the racers' payments
    journal_succeeded: int  # SUCCEEDED payments the daemon lists afterwards
    watch_updates: int
    load_seconds: float

    @property
    def status_errors(self) -> int:
        """Calls that ended in anything but OK or TERMINAL_BUSY."""
        return sum(sum(counts.errors.values()) for counts in self.rpcs.values())

    @property
    def succeeded(self) -> int:
        """Racers' payments that ended SUCCEEDED."""
        return self.payments[pb.PaymentState.Name(SUCCEEDED)]

    @property
    def idle(self) -> list[float]:
        """Both idle runs together."""
        return self.idle_before + self.idle_after


def percentile(samples: list[float], q: int) -> float:
    """The q-th percentile (1..99) by statistics' exclusive method; the one sample if alone."""
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=100)[q - 1]


# ---------------------------------------------------------------- the probe (its own process)


async def probe(socket: str, *, count: int = 0, seconds: float = 0.0) -> dict[str, object]:
    """Sequential GetStatus round trips in ms: `count` calls, or as many as fit in `seconds`."""
    samples: list[float] = []
    counts = RpcCounts()
    async with TerminalClient(socket) as client:
        for _ in range(PROBE_WARMUP):
            await client.get_status()
        deadline = time.perf_counter() + seconds
        while (len(samples) < count) if count else (time.perf_counter() < deadline):
            start = time.perf_counter()
            try:
                await client.get_status()
            except FacepayClientError as exc:
                counts.error(exc)
                continue
            samples.append((time.perf_counter() - start) * 1000)
            counts.ok += 1
    return {"samples_ms": samples, "ok": counts.ok, "errors": dict(counts.errors)}


async def run_probe(
    socket: Path, rpcs: dict[str, RpcCounts], name: str, *, count: int = 0, seconds: float = 0.0
) -> list[float]:
    """Run the probe as a child process; its calls are counted under `name`."""
    what = ["--count", str(count)] if count else ["--seconds", repr(seconds)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--probe",
        str(socket),
        *what,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"probe exited with {process.returncode}:\n{err.decode()}")
    result = json.loads(out)
    counts = rpcs.setdefault(name, RpcCounts())
    counts.ok += result["ok"]
    counts.errors.update(result["errors"])
    samples: list[float] = result["samples_ms"]
    return samples


# ---------------------------------------------------------------- the load


class Load:
    """The load clients: each one role, one call at a time, until stopped."""

    def __init__(self, socket: Path, clients: int) -> None:
        self.socket = socket
        self.clients = clients
        self.rpcs: dict[str, RpcCounts] = {role: RpcCounts() for role in ROLES}
        self.payments: Counter[str] = Counter()
        self.watch_updates = 0
        self.stopping = asyncio.Event()
        self._run = secrets.token_hex(3).upper()  # keeps out_trade_no unique across runs
        self._sequence = 0
        self._started = 0
        self._all_started = asyncio.Event()

    async def run(self) -> None:
        """Every client until stop(); a racer's payment in progress is let finish."""
        workers: dict[str, Callable[[TerminalClient], Awaitable[None]]] = {
            "GetStatus": self._status,
            "WatchStatus": self._watch,
            "ListPayments": self._list,
            "StartFacePay": self._face,
        }
        async with asyncio.TaskGroup() as group:
            for index in range(self.clients):
                group.create_task(self._client(workers[ROLES[index % len(ROLES)]]))

    async def started(self) -> None:
        """Until every client has made its first call."""
        await self._all_started.wait()

    def stop(self) -> None:
        """Let each client finish what it is doing and leave."""
        self.stopping.set()

    async def _client(self, work: Callable[[TerminalClient], Awaitable[None]]) -> None:
        async with TerminalClient(self.socket) as client:
            await work(client)

    def _first_call_done(self) -> None:
        self._started += 1
        if self._started == self.clients:
            self._all_started.set()

    async def _loop(self, rpc: str, call: Callable[[], Awaitable[object]]) -> None:
        counts = self.rpcs[rpc]
        first = True
        while not self.stopping.is_set():
            try:
                await call()
                counts.ok += 1
            except TerminalBusyError:
                counts.busy += 1
            except Exception as exc:
                counts.error(exc)
            if first:
                first = False
                self._first_call_done()

    async def _status(self, client: TerminalClient) -> None:
        await self._loop("GetStatus", client.get_status)

    async def _list(self, client: TerminalClient) -> None:
        await self._loop("ListPayments", lambda: client.list_payments(page_size=20))

    async def _face(self, client: TerminalClient) -> None:
        await self._loop("StartFacePay", lambda: self._pay(client))

    async def _pay(self, client: TerminalClient) -> None:
        """One face payment to the end of its stream; its final state is counted."""
        self._sequence += 1
        out_trade_no = f"LOAD{self._run}{self._sequence:06d}"
        final = "no final state"
        stream = client.start_face_pay_stream(out_trade_no, 1, "load test")
        async with aclosing(stream):
            async for response in stream:
                if response.HasField("event"):
                    final = pb.PaymentState.Name(response.event.state)
        self.payments[final] += 1

    async def _watch(self, client: TerminalClient) -> None:
        """One WatchStatus held open until stop; an error ends it and a new one is opened."""
        counts = self.rpcs["WatchStatus"]
        first = asyncio.get_running_loop().create_future()  # this client's first update
        while not self.stopping.is_set():
            follow = asyncio.ensure_future(self._follow(client, first))
            stopped = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait({follow, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopped.done() and not follow.done():
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follow
                counts.ok += 1  # held open to the end: a successful watch
                continue
            stopped.cancel()
            try:
                follow.result()
                counts.error(RuntimeError("watch ended by the daemon"))
            except Exception as exc:
                counts.error(exc)
            if not first.done():  # failed before any update: it has made its first call
                first.set_result(None)
                self._first_call_done()

    async def _follow(self, client: TerminalClient, first: asyncio.Future[None]) -> None:
        async with aclosing(client.watch_status()) as statuses:
            async for _ in statuses:
                self.watch_updates += 1
                if not first.done():
                    first.set_result(None)
                    self._first_call_done()


def role_counts(clients: int) -> dict[str, int]:
    """How many clients take each role (round robin)."""
    return {role: len(range(i, clients, len(ROLES))) for i, role in enumerate(ROLES)}


async def journal_succeeded(client: TerminalClient) -> int:
    """SUCCEEDED payments in the daemon's journal, every page."""
    total, token = 0, ""
    while True:
        page = await client.list_payments(page_size=100, page_token=token, states=[SUCCEEDED])
        total += len(page.payments)
        token = page.next_page_token
        if not token:
            return total


# ---------------------------------------------------------------- one run


async def run_load(options: LoadOptions, workdir: Path) -> LoadReport:
    """Start simulators and daemon, measure idle, loaded, idle; stop everything."""
    sims = SimStack(workdir / "sim")
    await sims.start()
    daemon = DaemonProcess(sims, workdir / "daemon")
    try:
        # info, as in production: per-call debug lines would be most of the daemon's work.
        await daemon.start(log_level="info")
        return await _measure(daemon.socket, options)
    finally:
        try:
            await daemon.stop()
        finally:
            await sims.stop()


async def _measure(socket: Path, options: LoadOptions) -> LoadReport:
    rpcs: dict[str, RpcCounts] = {}
    probe_name = "GetStatus (probe)"
    idle_before = await run_probe(socket, rpcs, probe_name, count=options.idle_calls)

    load = Load(socket, options.clients)
    running = asyncio.ensure_future(load.run())
    started = time.perf_counter()
    try:
        await asyncio.wait_for(load.started(), 30.0)
        loaded = await run_probe(socket, rpcs, probe_name, seconds=options.seconds)
    finally:
        load.stop()
        await asyncio.wait_for(running, DRAIN_SECONDS)
    load_seconds = time.perf_counter() - started

    idle_after = await run_probe(socket, rpcs, probe_name, count=options.idle_calls)
    async with TerminalClient(socket) as client:
        in_journal = await journal_succeeded(client)
    return LoadReport(
        options=options,
        idle_before=idle_before,
        loaded=loaded,
        idle_after=idle_after,
        rpcs={**load.rpcs, **rpcs},
        payments=load.payments,
        journal_succeeded=in_journal,
        watch_updates=load.watch_updates,
        load_seconds=load_seconds,
    )


def format_report(report: LoadReport) -> str:
    """The readable tables."""
    o = report.options
    roles = ", ".join(f"{n} {role}" for role, n in role_counts(o.clients).items())
    lines = [
        f"facepayd under load: {o.clients} clients ({roles}), load for {report.load_seconds:.1f} s",
        "",
        f"{'GetStatus latency (probe)':<28}{'calls':>8}{'p50 ms':>10}{'p99 ms':>10}",
    ]
    for name, samples in (
        ("idle, before (A)", report.idle_before),
        (f"{o.clients} clients (B)", report.loaded),
        ("idle, after (A)", report.idle_after),
        ("idle, both", report.idle),
    ):
        lines.append(
            f"{name:<28}{len(samples):>8}"
            f"{percentile(samples, 50):>10.2f}{percentile(samples, 99):>10.2f}"
        )
    idle_p99 = percentile(report.idle, 99)
    ratio = percentile(report.loaded, 99) / idle_p99 if idle_p99 else float("nan")
    lines += [
        f"p99 ratio loaded/idle: {ratio:.1f}x",
        "",
        f"{'RPC':<20}{'ok':>9}{'busy':>9}{'errors':>8}  error kinds",
    ]
    for name, counts in report.rpcs.items():
        kinds = ", ".join(f"{kind} x{n}" for kind, n in counts.errors.most_common()) or "-"
        lines.append(
            f"{name:<20}{counts.ok:>9}{counts.busy:>9}{sum(counts.errors.values()):>8}  {kinds}"
        )
    payments = ", ".join(f"{state} {n}" for state, n in report.payments.most_common()) or "none"
    lines += [
        f"status errors: {report.status_errors}",
        "",
        f"payments (racers' final states): {payments}",
        f"payments succeeded: {report.succeeded} (journal lists {report.journal_succeeded})",
        f"WatchStatus updates received: {report.watch_updates}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the load benchmark (or, with --probe, be the latency probe)."""
    defaults = LoadOptions()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--idle-calls", type=int, default=defaults.idle_calls)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="SOCKET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        result = asyncio.run(probe(args.probe, count=args.count, seconds=args.seconds))
        print(json.dumps(result))
        return 0
    logs.configure_logging(level="warning")  # the simulators' per-call lines, in this process
    options = LoadOptions(clients=args.clients, seconds=args.seconds, idle_calls=args.idle_calls)
    with tempfile.TemporaryDirectory(prefix="fpd-load") as directory:
        report = asyncio.run(run_load(options, Path(directory)))
    print(format_report(report))
    return 0 if report.status_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
