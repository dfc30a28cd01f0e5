"""A fake adbd on loopback TCP that the real adb server `connect`s to, and a private adb server.

The fake speaks the adb wire protocol (CNXN, OPEN/OKAY/WRTE/CLSE, one WRTE in flight per
stream), answers the shell commands the ADB transport uses (getprop, dumpsys package, pm,
am start-foreground-service) and bridges named services such as
``localabstract:facepay-bridge`` to async handlers, so the real adb server and adbutils
stay in the loop in tests and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from facepayd.ops.logs import get_logger

__all__ = ["AdbServer", "FakeAdbd", "StreamHandler", "free_port"]

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_log = get_logger(__name__)

_CNXN = 0x4E584E43
_OPEN = 0x4E45504F
_OKAY = 0x59414B4F
_WRTE = 0x45545257
_CLSE = 0x45534C43
_HEADER = struct.Struct("<6I")
# From this version on the host skips the payload checksum, so the fake sends 0.
_VERSION = 0x01000001
_MAX_PAYLOAD = 256 * 1024
# The adb server attaches anything listening here as an emulator; a fake must stay out.
_EMULATOR_PORTS = range(5555, 5586)


class _Started:
    """`async with` starts the service and stops it on the way out."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class FakeAdbd(_Started):
    """A simulated Android device reached by `adb connect 127.0.0.1:<port>`."""

    def __init__(
        self,
        stream_handlers: Mapping[str, StreamHandler] | None = None,
        *,
        props: Mapping[str, str] | None = None,
        packages: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.stream_handlers: dict[str, StreamHandler] = dict(stream_handlers or {})
        self.props: dict[str, str] = {
            "ro.serialno": "FAKE0001",
            "ro.product.model": "FacePay-Sim",
            "ro.product.name": "facepay_sim",
            "ro.product.device": "facepay_sim",
            **(props or {}),
        }
        self.packages: dict[str, str] = dict(packages or {})
        # Test hooks.
        self.refuse_streams = False
        self.delay = 0.0
        self.on_start_service: Callable[[str], None] | None = None
        self.missing_components: set[str] = set()  # installed package, no such service
        # What the host asked for, in order: services opened and components started.
        self.opened_services: list[str] = []
        self.started_components: list[str] = []
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._thawed = asyncio.Event()
        self._thawed.set()

    @property
    def port(self) -> int:
        """The TCP port the fake listens on (fixed after the first start)."""
        return self._port

    @property
    def address(self) -> str:
        """What to pass to `adb connect`; also the device's serial on the adb server."""
        return f"{self._host}:{self._port}"

    @property
    def connected(self) -> int:
        """How many adb hosts are connected right now."""
        return len(self._connections)

    async def start(self) -> None:
        """Listen; a port 0 is resolved once, so revive() reuses it."""
        for _ in range(10):
            server = await asyncio.start_server(self._serve, self._host, self._port)
            port = int(server.sockets[0].getsockname()[1])
            if port not in _EMULATOR_PORTS:
                self._server, self._port = server, port
                return
            server.close()
            await server.wait_closed()
        raise OSError("could not pick a port outside the adb emulator range")

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        await self.kill()

    async def kill(self) -> None:
        """Die like a rebooting device: close every socket and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for conn in list(self._connections):
            await conn.abort()
        self._connections.clear()

    async def revive(self) -> None:
        """Listen again on the same port after kill()."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self._host, self._port)

    def freeze(self) -> None:
        """Stop reading and answering while keeping TCP open, like a stopped process."""
        self._thawed.clear()

    def thaw(self) -> None:
        """Resume after freeze()."""
        self._thawed.set()

    async def close_mid_stream(self) -> None:
        """Close every open stream from the device side (CLSE to the host)."""
        for conn in list(self._connections):
            await conn.close_streams()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        conn.run_task = asyncio.current_task()
        self._connections.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            # asyncio's server callback chokes on a cancelled handler task, so end it normally.
            if not conn.aborted:
                raise
        finally:
            self._connections.discard(conn)
            await conn.abort()

    def _banner(self) -> bytes:
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        fields = "".join(f"{key}={self.props.get(key, '')};" for key in keys)
        return f"device::{fields}features=shell_v2,cmd".encode()

    def _shell(self, command_line: str) -> tuple[bytes, bytes, int]:
        """Run a tiny shell: commands joined by ';' or '&&', with echo and $?."""
        stdout: list[str] = []
        stderr: list[str] = []
        status = 0
        for joiner, argv in _split_commands(command_line):
            if joiner == "&&" and status != 0:
                continue
            argv = [arg.replace("$?", str(status)) for arg in argv]
            out, err, status = self._command(argv)
            stdout.append(out)
            stderr.append(err)
        return "".join(stdout).encode(), "".join(stderr).encode(), status

    def _command(self, argv: list[str]) -> tuple[str, str, int]:
        if not argv:
            return "", "", 0
        name, args = argv[0], argv[1:]
        if name == "echo":
            return " ".join(args) + "\n", "", 0
        if name == "true":
            return "", "", 0
        if name == "getprop":
            if args:
                return self.props.get(args[0], "") + "\n", "", 0
            return "".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.props.items())), "", 0
        if name == "dumpsys" and args[:1] == ["package"] and len(args) == 2:
            return self._dumpsys_package(args[1]), "", 0
        if name == "pm" and args[:2] == ["list", "packages"]:
            needle = args[2] if len(args) > 2 else ""
            listed = sorted(p for p in self.packages if needle in p)
            return "".join(f"package:{p}\n" for p in listed), "", 0
        if name == "pm" and args[:1] == ["path"] and len(args) == 2:
            if args[1] in self.packages:
                return f"package:/data/app/{args[1]}/base.apk\n", "", 0
            return "", "", 1
        if name == "am" and args[:1] in (["start-foreground-service"], ["startservice"]):
            return self._start_service(args[1:])
        return "", f"/system/bin/sh: {name}: inaccessible or not found\n", 127

    def _dumpsys_package(self, package: str) -> str:
        if package not in self.packages:
            return f"Dexopt state:\n  Unable to find package: {package}\n"
        version = self.packages[package]
        return (
            "Packages:\n"
            f"  Package [{package}] (5a1c2f0):\n"
            "    userId=10087\n"
            f"    pkg=Package{{8e0b4a1 {package}}}\n"
            "    versionCode=1 minSdk=24 targetSdk=30\n"
            f"    versionName={version}\n"
            "    flags=[ HAS_CODE ALLOW_CLEAR_USER_DATA ]\n"
        )

    def _start_service(self, args: list[str]) -> tuple[str, str, int]:
        if len(args) != 2 or args[0] != "-n" or "/" not in args[1]:
            return "", "Error: bad arguments\n", 1
        component = args[1]
        self.started_components.append(component)
        if component.split("/", 1)[0] not in self.packages or component in self.missing_components:
            return "Error: Not found; no service started.\n", "", 0
        if self.on_start_service is not None:
            self.on_start_service(component)
        return f"Starting service: Intent {{ cmp={component} }}\n", "", 0


class _Connection:
    """One adb host connected to the fake device."""

    def __init__(
        self, device: FakeAdbd, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.device = device
        self.max_payload = _MAX_PAYLOAD
        self._reader = reader
        self._writer = writer
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self.run_task: asyncio.Task[None] | None = None
        self.aborted = False

    async def run(self) -> None:
        """Read packets until the host hangs up or the device is killed."""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await self.device._thawed.wait()
                header = await self._reader.readexactly(_HEADER.size)
                command, arg0, arg1, length, _check, magic = _HEADER.unpack(header)
                if magic != command ^ 0xFFFFFFFF or length > 4 * 1024 * 1024:
                    return
                payload = await self._reader.readexactly(length) if length else b""
                await self.device._thawed.wait()
                await self._dispatch(command, arg0, arg1, payload)

    async def send(self, command: int, arg0: int, arg1: int, payload: bytes = b"") -> None:
        """Write one packet, holding it back while the device is frozen."""
        if not self.aborted:
            await self.device._thawed.wait()
        if self.aborted or self._writer.is_closing():
            raise ConnectionResetError("adb host connection closed")
        magic = command ^ 0xFFFFFFFF
        self._writer.write(_HEADER.pack(command, arg0, arg1, len(payload), 0, magic) + payload)

    async def abort(self) -> None:
        """Drop the connection and everything running on it."""
        self.aborted = True
        for stream in list(self._streams.values()):
            stream.remote_closed()
        self._streams.clear()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        if self.run_task is not None and self.run_task is not asyncio.current_task():
            tasks.append(self.run_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._writer.close()

    async def close_streams(self) -> None:
        """Close every stream from the device side."""
        for stream in list(self._streams.values()):
            await stream.close()

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run a per-stream task that dies with the connection."""
        task: asyncio.Task[None] = asyncio.ensure_future(_quietly(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, stream: _Stream) -> None:
        """Drop a closed stream; later packets for its id are ignored."""
        self._streams.pop(stream.local_id, None)

    async def _dispatch(self, command: int, arg0: int, arg1: int, payload: bytes) -> None:
        stream: _Stream | None
        if command == _CNXN:
            for open_stream in list(self._streams.values()):
                open_stream.remote_closed()
            self._streams.clear()
            self.max_payload = max(1024, min(arg1, _MAX_PAYLOAD))
            await self.send(_CNXN, _VERSION, _MAX_PAYLOAD, self.device._banner())
        elif command == _OPEN:
            service = payload.rstrip(b"\0").decode(errors="replace")
            self.spawn(self._open(arg0, service))
        elif command == _OKAY:
            stream = self._streams.get(arg1)
            if stream is not None:
                stream.acked()
        elif command == _WRTE:
            stream = self._streams.get(arg1)
            if stream is not None:
                stream.received(payload)
        elif command == _CLSE:
            stream = self._streams.pop(arg1, None)
            if stream is not None:
                stream.remote_closed()
        # AUTH, SYNC, STLS and anything else: a device that never asks for them ignores them.

    async def _open(self, remote_id: int, service: str) -> None:
        device = self.device
        device.opened_services.append(service)
        if device.delay > 0:
            await asyncio.sleep(device.delay)
        handler = device.stream_handlers.get(service)
        shell = _parse_shell_service(service)
        if device.refuse_streams or (handler is None and shell is None):
            await self.send(_CLSE, 0, remote_id)
            return
        stream = _Stream(self, self._next_id, remote_id)
        self._next_id += 1
        self._streams[stream.local_id] = stream
        await self.send(_OKAY, stream.local_id, remote_id)
        if handler is not None:
            await stream.bridge(handler)
        elif shell is not None:
            protocol, command_line = shell
            await stream.run_shell(protocol, command_line)


class _Stream:
    """One adb stream on the device side, with adb's one-write-in-flight flow control."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.closed = False
        self._ack: asyncio.Future[None] | None = None
        self._inbound: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._done = asyncio.Event()

    def acked(self) -> None:
        """The host took our last WRTE."""
        if self._ack is not None and not self._ack.done():
            self._ack.set_result(None)

    def received(self, data: bytes) -> None:
        """The host wrote data; it is acknowledged once delivered."""
        self._inbound.put_nowait(data)

    def remote_closed(self) -> None:
        """The host closed the stream (or the connection died)."""
        self.closed = True
        if self._ack is not None and not self._ack.done():
            self._ack.set_result(None)
        self._inbound.put_nowait(None)
        self._done.set()

    async def write(self, data: bytes) -> bool:
        """Send data in chunks, each after the previous one was acknowledged; False once closed."""
        view = memoryview(data)
        for start in range(0, len(view), self.conn.max_payload):
            if self.closed:
                return False
            self._ack = asyncio.get_running_loop().create_future()
            await self.conn.send(
                _WRTE,
                self.local_id,
                self.remote_id,
                bytes(view[start : start + self.conn.max_payload]),
            )
            await self._ack
        return not self.closed

    async def close(self) -> None:
        """Close from the device side."""
        if not self.closed and not self.conn.aborted:
            self.closed = True
            self.conn.forget(self)
            self._inbound.put_nowait(None)
            self._done.set()
            with contextlib.suppress(ConnectionError):
                await self.conn.send(_CLSE, self.local_id, self.remote_id)

    async def run_shell(self, protocol: str, command_line: str) -> None:
        """Answer a shell:, shell,v2: or exec: service and close."""
        stdout, stderr, status = self.conn.device._shell(command_line)
        self.conn.spawn(self._drain_inbound(None))
        if protocol == "v2":
            packets = (
                _v2_packet(1, stdout)
                + _v2_packet(2, stderr)
                + _v2_packet(3, bytes([status & 0xFF]))
            )
            await self.write(packets)
        else:
            await self.write(stdout + stderr)
        await self.close()

    async def bridge(self, handler: StreamHandler) -> None:
        """Connect the stream to a handler through a socket pair."""
        ours, theirs = socket.socketpair()
        writers: list[asyncio.StreamWriter] = []
        try:
            reader, writer = await asyncio.open_connection(sock=ours)
            writers.append(writer)
            h_reader, h_writer = await asyncio.open_connection(sock=theirs)
            writers.append(h_writer)
            self.conn.spawn(_run_handler(handler, h_reader, h_writer))
            self.conn.spawn(self._drain_inbound(writer))
            while not self.closed:
                data = await reader.read(self.conn.max_payload)
                if not data or not await self.write(data):
                    break
        except ConnectionError:
            pass
        finally:
            # Also reached when the connection dies before the tasks above ever ran.
            for unwrapped in (ours, theirs)[len(writers) :]:
                unwrapped.close()
            for stream_writer in writers:
                stream_writer.close()
            await self.close()

    async def _drain_inbound(self, writer: asyncio.StreamWriter | None) -> None:
        """Deliver host writes (to the handler, or nowhere for shells) and acknowledge each."""
        while True:
            data = await self._inbound.get()
            if data is None:
                break
            if writer is not None:
                try:
                    writer.write(data)
                    await writer.drain()
                except ConnectionError:
                    break
            if self.closed:
                break
            await self.conn.send(_OKAY, self.local_id, self.remote_id)
        if writer is not None:
            writer.close()


async def _quietly(coro: Awaitable[None]) -> None:
    """A stream task ends silently when its connection is gone."""
    with contextlib.suppress(ConnectionError):
        await coro


async def _run_handler(
    handler: StreamHandler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        await handler(reader, writer)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    except Exception:  # noqa: BLE001 - a broken handler must not take the fake device down
        _log.exception("fake adbd stream handler failed")
    finally:
        writer.close()


def _v2_packet(kind: int, data: bytes) -> bytes:
    if not data and kind != 3:
        return b""
    return struct.pack("<BI", kind, len(data)) + data


def _parse_shell_service(service: str) -> tuple[str, str] | None:
    """("v1" | "v2", command line) for shell:/shell,v2:/exec: services, else None."""
    head, sep, command_line = service.partition(":")
    if not sep:
        return None
    if head == "exec":
        return "v1", command_line
    parts = head.split(",")
    if parts[0] != "shell":
        return None
    return ("v2" if "v2" in parts[1:] else "v1"), command_line


def _split_commands(command_line: str) -> Iterator[tuple[str, list[str]]]:
    """Yield (joiner before it, argv) per command; joiners are ';' and '&&'."""
    lexer = shlex.shlex(command_line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    joiner = ";"
    argv: list[str] = []
    for token in lexer:
        if token in (";", "&&"):
            yield joiner, argv
            joiner, argv = token, []
        else:
            argv.append(token)
    yield joiner, argv


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port outside the adb emulator range and not 5037."""
    while True:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port not in _EMULATOR_PORTS and port != 5037:
            return port


@dataclass(frozen=True, slots=True)
class _Result:
    returncode: int
    output: str


class AdbServer(_Started):
    """A private real adb server on its own port, for tests, the demo and --simulate."""

    def __init__(
        self,
        adb_path: str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        command_timeout: float = 20.0,
    ) -> None:
        self.adb_path = adb_path
        self.host = host
        self.port = port or free_port(host)
        # A port we picked may be taken by another process before adb binds it: pick again.
        self._port_chosen = not port
        self.command_timeout = command_timeout
        self._started = False

    @property
    def env(self) -> dict[str, str]:
        """The environment the server runs with: no USB scan (it costs seconds), our port."""
        return {**os.environ, "ADB_LIBUSB": "0", "ANDROID_ADB_SERVER_PORT": str(self.port)}

    async def start(self) -> None:
        """Start the server; raise RuntimeError with adb's output when it does not come up."""
        for attempt in range(3):
            result = await self.run("start-server")
            self._started = True
            if result.returncode == 0 and await _port_open(self.host, self.port):
                return
            if not self._port_chosen or attempt == 2:
                break
            self.port = free_port(self.host)
        raise RuntimeError(f"adb start-server on port {self.port} failed: {result.output}")

    async def connect(self, address: str) -> None:
        """`adb connect address`; raise RuntimeError unless adb reports it connected and ready."""
        result = await self.run("connect", address)
        if "connected to" not in result.output or "unable" in result.output:
            raise RuntimeError(f"adb connect {address}: {result.output.strip()}")
        # `connect` answers before the handshake ends; callers expect a ready device.
        ready = await self.run("-s", address, "wait-for-device")
        if ready.returncode != 0:
            raise RuntimeError(f"adb wait-for-device {address}: {ready.output.strip()}")

    async def disconnect(self, address: str) -> None:
        """`adb disconnect address`."""
        await self.run("disconnect", address)

    async def stop(self) -> None:
        """kill-server, then wait until nothing listens on the port any more."""
        if not self._started and not await _port_open(self.host, self.port):
            return
        self._started = False
        await self.run("kill-server")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_timeout
        while await _port_open(self.host, self.port):
            if loop.time() > deadline:
                raise RuntimeError(
                    f"adb server on port {self.port} still listening after kill-server"
                )
            await asyncio.sleep(0.02)

    async def run(self, *args: str) -> _Result:
        """Run `adb -P port args...` against this server."""
        proc = await asyncio.create_subprocess_exec(
            self.adb_path,
            "-P",
            str(self.port),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        try:
            async with asyncio.timeout(self.command_timeout):
                out, _ = await proc.communicate()
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        return _Result(
            proc.returncode if proc.returncode is not None else -1, out.decode(errors="replace")
        )


async def _port_open(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
