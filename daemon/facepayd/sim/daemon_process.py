"""Runs the real daemon as a child process against simulators living in the caller's process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import facepay_client
import facepayd
from facepay_client import TerminalClient
from facepayd.ops import config as config_module
from facepayd.sim.stack import SimStack

# Where the child finds our packages, installed or not.
_IMPORT_PATHS = [
    str(Path(facepayd.__file__).resolve().parents[1]),
    str(Path(facepay_client.__file__).resolve().parents[1]),
]


def child_env() -> dict[str, str]:
    """The environment for a child Python that must import our packages, installed or not."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(_IMPORT_PATHS)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("INVOCATION_ID", None)  # else the child would expect adb.service (daemon.under_systemd)
    return env


@dataclass(frozen=True, slots=True)
class Exited:
    """How a daemon that was expected to refuse its start ended."""

    returncode: int | None
    stdout: str
    stderr: str


async def run_to_exit(
    config: Path,
    *,
    timeout: float = 60.0,
    preexec_fn: Callable[[], None] | None = None,
) -> Exited:
    """Start `facepayd --config FILE`, collect stdout and stderr apart until it exits."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "facepayd",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
        preexec_fn=preexec_fn,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"facepayd did not exit within {timeout} s on {config}") from None
    return Exited(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


class DaemonProcess:
    """One facepayd child process with its own socket, state directory and log file."""

    def __init__(self, stack: SimStack | None, workdir: Path, **sections: dict[str, Any]) -> None:
        self.stack = stack  # None: the config file exists already (see for_config)
        self.workdir = workdir
        # Unix socket paths are limited to 108 bytes; tmp_path can be longer.
        self.socket = Path(tempfile.mkdtemp(prefix="fpd", dir="/tmp")) / "facepayd.sock"
        self.state_dir = workdir / "state"
        self.config_path = workdir / "facepayd.toml"
        self.log_path = workdir / "facepayd.log"
        self.sections = sections
        self.process: asyncio.subprocess.Process | None = None
        self.extra_env: dict[str, str] = {}

    @classmethod
    def for_config(cls, config_path: Path, workdir: Path) -> DaemonProcess:
        """A daemon on a config file written elsewhere (e.g. by `python -m facepayd.sim`)."""
        daemon = cls(None, workdir)
        config = config_module.load(config_path)
        daemon.config_path = config_path
        daemon.socket = Path(config.server.socket)
        daemon.state_dir = config.state_dir
        return daemon

    async def start(
        self, *, wait_serving: bool = True, timeout: float = 30.0, log_level: str = "debug"
    ) -> None:
        """Write the config, spawn the daemon, wait until health says SERVING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.stack is not None:
            self.stack.write_daemon_config(
                self.config_path, socket=self.socket, state_dir=self.state_dir, **self.sections
            )
        env = child_env()
        env.update(self.extra_env)
        log = self.log_path.open("ab")  # a local file, handed to the child for its lifetime
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "facepayd",
                "--config",
                str(self.config_path),
                "--json-logs",
                "--log-level",
                log_level,
                stdout=log,
                stderr=log,
                env=env,
            )
        finally:
            log.close()
        if wait_serving:
            await self.wait_serving(timeout)

    async def wait_serving(self, timeout: float = 30.0) -> None:
        """Wait for health SERVING, failing fast if the process died."""
        async with TerminalClient(self.socket) as client:
            waiter = asyncio.ensure_future(client.wait_until_serving(timeout))
            assert self.process is not None
            died = asyncio.ensure_future(self.process.wait())
            done, _ = await asyncio.wait({waiter, died}, return_when=asyncio.FIRST_COMPLETED)
            if died in done:
                waiter.cancel()
                raise AssertionError(f"facepayd exited with {died.result()}:\n{self.log()}")
            died.cancel()
            waiter.result()

    def client(self, **kwargs: Any) -> TerminalClient:
        """A client for this daemon's socket."""
        return TerminalClient(self.socket, **kwargs)

    def log(self) -> str:
        """Everything the daemon wrote."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.process is None:
            return 0
        if self.process.returncode is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"facepayd did not stop on SIGTERM:\n{self.log()}") from None

    async def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
