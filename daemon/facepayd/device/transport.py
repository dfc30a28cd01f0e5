"""The abstract byte-stream transport to the peripheral's bridge; TCP and ADB implement it."""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PeripheralInfo:
    """What the transport can tell about the peripheral without the bridge."""

    serial: str = ""
    model: str = ""
    face_app_version: str = ""  # com.tencent.wxpayface versionName, "" when unknown or missing
    bridge_app_version: str = ""
    face_app_installed: bool | None = None  # None: this transport cannot tell
    bridge_app_installed: bool | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Transport(abc.ABC):
    """Opens the one long-lived byte stream to the bridge on the peripheral."""

    @abc.abstractmethod
    async def open(self, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a new bridge stream; raise DeviceLost when it cannot be opened in time."""

    @abc.abstractmethod
    async def inspect(self, timeout: float) -> PeripheralInfo:
        """Describe the peripheral (model, serial, installed apps) as far as this transport can."""

    async def start_bridge(self, timeout: float) -> None:  # noqa: B027 - optional hook
        """Ask the peripheral to start its bridge service; a no-op where that is impossible."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the transport holds (adb forwards, clients)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human description for status and logs, with no secrets."""
