"""Round-trip time of small echo messages: plain TCP loopback versus the real adb path.

Run: PYTHONPATH=daemon:clients python tests/bench/bench_bridge_rtt.py [--count N] [--size BYTES]
The adb path is the one the daemon uses: adbutils -> a private real adb server -> the fake
adbd -> an echo handler on localabstract:facepay-bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from facepayd.device.adb import AdbSettings, AdbTransport, bundled_adb_path
from facepayd.sim.adbd import AdbServer, FakeAdbd

BRIDGE = "localabstract:facepay-bridge"


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back every byte received until EOF."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def measure(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int, size: int
) -> list[float]:
    """Round-trip times in milliseconds, after a short warm-up."""
    payload = b"x" * size
    samples: list[float] = []
    for i in range(count + 20):
        start = time.perf_counter()
        writer.write(payload)
        await reader.readexactly(size)
        if i >= 20:
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def summary(name: str, samples: list[float]) -> tuple[float, float]:
    median = statistics.median(samples)
    p95 = statistics.quantiles(samples, n=20)[-1]
    print(f"{name:<14} median {median:7.3f} ms   p95 {p95:7.3f} ms   (n={len(samples)})")
    return median, p95


async def bench_tcp(count: int, size: int) -> list[float]:
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await measure(reader, writer, count, size)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def bench_adb(count: int, size: int) -> tuple[list[float], float]:
    async with FakeAdbd({BRIDGE: echo}) as fake, AdbServer(bundled_adb_path()) as server:
        await server.connect(fake.address)
        transport = AdbTransport(AdbSettings(server_port=server.port, address=fake.address))
        start = time.perf_counter()
        reader, writer = await transport.open(10.0)
        open_ms = (time.perf_counter() - start) * 1000
        try:
            return await measure(reader, writer, count, size), open_ms
        finally:
            writer.close()
            await transport.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    tcp = await bench_tcp(args.count, args.size)
    adb, open_ms = await bench_adb(args.count, args.size)
    print(f"{args.size}-byte echo round trips")
    tcp_median, tcp_p95 = summary("tcp loopback", tcp)
    adb_median, adb_p95 = summary("adb bridge", adb)
    print(f"adb / tcp      median x{adb_median / tcp_median:.1f}   p95 x{adb_p95 / tcp_p95:.1f}")
    print(f"adb stream open took {open_ms:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
