"""Round trip of one bridge call (Call frame → SDK callback) over the adb path vs plain TCP.

Run: make bench   (or PYTHONPATH=daemon:clients python tests/bench/bench_bridge_rtt.py [--count N])
Both paths use the daemon's BridgeClient against the simulated terminal with instant SDK
latencies, so what differs is the transport alone. Plain TCP is the baseline, measured in the
same run. The adb path is the daemon's: adbutils → a private real adb server → the fake adbd →
the simulated terminal on localabstract:facepay-bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from facepayd.clock import SystemClock
from facepayd.device.adb import AdbSettings, AdbTransport, bundled_adb_path
from facepayd.device.bridge import BridgeClient
from facepayd.device.tcp import TcpTransport
from facepayd.device.transport import Transport
from facepayd.ops import logs
from facepayd.sim.adbd import AdbServer, FakeAdbd
from facepayd.sim.terminal import SimLatencies, SimTerminal

WARMUP = 50


async def measure(transport: Transport, count: int) -> tuple[list[float], float]:
    """Bridge call round trips in ms, and the time to open the stream and get the hello."""
    client = BridgeClient(transport, SystemClock(), heartbeat_interval=60.0)
    start = time.perf_counter()
    await client.connect()
    opened = (time.perf_counter() - start) * 1000
    try:
        await client.call("initWxpayface", {}, timeout=5.0)
        samples: list[float] = []
        for i in range(count + WARMUP):
            start = time.perf_counter()
            await client.call("getWxpayfaceRawdata", {}, timeout=5.0)
            if i >= WARMUP:
                samples.append((time.perf_counter() - start) * 1000)
        return samples, opened
    finally:
        await client.close()


def summary(name: str, samples: list[float], opened: float) -> float:
    """Print one line of figures; return the median."""
    median = statistics.median(samples)
    p95 = statistics.quantiles(samples, n=20)[-1]
    print(
        f"{name:<22} median {median:7.3f} ms   p95 {p95:7.3f} ms   "
        f"open {opened:6.1f} ms   (n={len(samples)})"
    )
    return median


async def main(count: int) -> None:
    """Measure both paths in one run and compare."""
    logs.configure_logging(level="warning")  # per-call debug lines would dominate the figures
    terminal = SimTerminal(clock=SystemClock(), latencies=SimLatencies.instant())
    port = await terminal.serve_tcp()
    tcp_samples, tcp_open = await measure(TcpTransport("127.0.0.1", port), count)

    adbd = FakeAdbd({"localabstract:facepay-bridge": terminal.handle_stream})
    async with adbd, AdbServer(bundled_adb_path()) as server:
        await server.connect(adbd.address)
        transport = AdbTransport(AdbSettings(server_port=server.port, address=adbd.address))
        try:
            adb_samples, adb_open = await measure(transport, count)
        finally:
            await transport.close()
    await terminal.stop()

    base = summary("plain TCP (baseline)", tcp_samples, tcp_open)
    adb = summary("adb server + adbd", adb_samples, adb_open)
    print(f"adb / TCP median ratio: {adb / base:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.count))
