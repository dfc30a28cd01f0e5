"""The bridge over plain TCP: the simulated terminal in tests and the demo, or an `adb forward`."""

from __future__ import annotations

import asyncio

from facepayd.device.transport import PeripheralInfo, Transport
from facepayd.errors import DeviceLost

__all__ = ["TcpTransport"]


class TcpTransport(Transport):
    """Opens the bridge stream with a TCP connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    async def open(
        self,
        timeout: float,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect within ``timeout`` seconds or raise DeviceLost."""
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.open_connection(self.host, self.port)
        except TimeoutError as exc:
            raise DeviceLost(f"no TCP connection to {self.describe()} within {timeout}s") from exc
        except OSError as exc:
            raise DeviceLost(f"cannot connect to {self.describe()}: {exc.strerror or exc}") from exc

    async def inspect(
        self,
        timeout: float,
    ) -> PeripheralInfo:
        """TCP knows nothing about the peripheral beyond what the bridge's hello says."""
        return PeripheralInfo()

    def describe(self) -> str:
        """``tcp host:port``."""
        return f"tcp {self.host}:{self.port}"
