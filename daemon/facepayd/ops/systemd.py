"""The sd_notify protocol spoken directly over $NOTIFY_SOCKET, and the event-loop watchdog."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

from facepayd.clock import Clock
from facepayd.ops.logs import get_logger

__all__ = ["Notifier", "watchdog_loop"]

_log = get_logger(__name__)

# systemd reads notifications without delay; a send that blocks this long means it is gone.
_SEND_TIMEOUT = 2.0


class Notifier:
    """Sends READY/STATUS/STOPPING/WATCHDOG datagrams to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._pid = os.getpid() if pid is None else pid
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening."""
        return self._address is not None

    def ready(self, status: str = "") -> bool:
        """Tell systemd start-up (including recovery) is complete."""
        return self._send("READY=1", status=status)

    def status(self, text: str) -> bool:
        """Set the one-line status `systemctl status` shows."""
        return self._send(status=text)

    def stopping(self, status: str = "") -> bool:
        """Tell systemd a graceful shutdown has begun."""
        return self._send("STOPPING=1", status=status)

    def watchdog(self) -> bool:
        """Ping the service watchdog."""
        return self._send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds, or None when the watchdog is not meant for us."""
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != self._pid:
                    return None
            except ValueError:
                return None
        return usec / 1_000_000

    def close(self) -> None:
        """Release the datagram socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, assignment: str = "", *, status: str = "") -> bool:
        if self._address is None:
            return False
        lines = [assignment] if assignment else []
        if status:
            # A newline would start a new assignment, so status text is kept on one line.
            lines.append("STATUS=" + " ".join(status.splitlines()))
        if not lines:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(_SEND_TIMEOUT)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            # Notification is advisory; a lost datagram must not take the daemon down.
            _log.warning("sd_notify failed", message=lines[0], error=str(exc))
            self.close()
            return False
        return True


async def watchdog_loop(notifier: Notifier, clock: Clock, healthy: Callable[[], bool]) -> None:
    """Ping the watchdog at half its interval from the event loop while ``healthy()`` holds."""
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    was_healthy = True
    while True:
        is_healthy = healthy()
        if is_healthy:
            notifier.watchdog()
        if is_healthy != was_healthy:
            # Skipping pings lets systemd restart us after WatchdogSec; log the turn once.
            if is_healthy:
                _log.info("watchdog pings resumed")
            else:
                _log.warning("health check failing, withholding watchdog pings")
            was_healthy = is_healthy
        await clock.sleep(interval / 2)


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        # Abstract namespace: a leading NUL instead of the @.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # Any other form (e.g. vsock:) is not ours to speak.
    return None
