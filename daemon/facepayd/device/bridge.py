"""The bridge client: SDK calls as Call frames, callbacks matched by call id, a heartbeat.

Params and info maps carry authinfo and face codes, so nothing here logs them; logs name the
method and the return_code only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, cast

from facepay.bridge.v1 import bridge_pb2
from facepayd.clock import Clock, Timer, race
from facepayd.device.framing import FrameBuffer, FrameReader, encode_frame, write_frame
from facepayd.device.transport import Transport
from facepayd.errors import DeviceError, DeviceLost, DeviceTimeout
from facepayd.ops.logs import get_logger

__all__ = ["PROTOCOL_MAJOR", "BridgeClient", "BridgeHello", "BridgeObserver", "UpdateListener"]

# The bridge protocol major version this client speaks; minor versions only add fields.
PROTOCOL_MAJOR = "1"

# methods_sent is for tests and metrics; a daemon that runs for months must not grow it forever.
_METHODS_KEPT = 1024

UpdateListener = Callable[[dict[str, str]], None]
LostListener = Callable[[BaseException], None]


log = get_logger(__name__)


class BridgeObserver(Protocol):
    """Told how long each SDK call and each heartbeat took (metrics); must not block."""

    def sdk_call(self, method: str, seconds: float, outcome: str) -> None:
        """One call ended: answered, timeout, lost, refused, cancelled or error."""

    def round_trip(self, seconds: float) -> None:
        """One heartbeat ping was answered by its pong."""


@dataclass(frozen=True, slots=True)
class BridgeHello:
    """Who answered on the bridge: protocol, bridge app and SDK versions, device identity."""

    protocol_version: str
    bridge_version: str
    sdk_version: str
    device_serial: str
    device_model: str
    face_app_version: str


@dataclass(slots=True)
class _Pending:
    method: str
    future: asyncio.Future[dict[str, str]]


@dataclass(slots=True)
class _Connection:
    """One bridge stream and everything that dies with it."""

    writer: asyncio.StreamWriter
    lost: asyncio.Future[BaseException]
    pending: dict[int, _Pending] = field(default_factory=dict)
    updates: dict[int, UpdateListener] = field(default_factory=dict)
    pongs: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class BridgeClient:
    """Speaks facepay.bridge.v1 to the companion app over one stream from ``transport``."""

    def __init__(
        self,
        transport: Transport,
        clock: Clock,
        *,
        open_timeout: float = 5.0,
        hello_timeout: float = 5.0,
        heartbeat_interval: float = 2.0,
        heartbeat_timeout: float = 1.0,
        observer: BridgeObserver | None = None,
    ) -> None:
        self._transport = transport
        self._observer = observer
        self._clock = clock
        self._open_timeout = open_timeout
        self._hello_timeout = hello_timeout
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._conn: _Connection | None = None
        self._lost_listeners: list[LostListener] = []
        # Ids stay unique across reconnects so a stale callback can never match a new call.
        self._call_ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self.hello: BridgeHello | None = None
        self.calls_sent = 0
        self.methods_sent: list[str] = []

    @property
    def connected(self) -> bool:
        """True while a stream is open and the peripheral answers."""
        return self._conn is not None and not self._conn.lost.done()

    async def connect(self) -> BridgeHello:
        """Open a stream, wait for the bridge's Hello, then start the reader and the heartbeat."""
        if self._conn is not None:
            await self._shutdown(self._conn, DeviceLost("bridge reconnecting"), notify=False)
        stream, writer = await self._transport.open(self._open_timeout)
        try:
            hello, feed = await self._await_hello(FrameReader(stream), writer)
        except BaseException:
            writer.close()
            raise
        loop = asyncio.get_running_loop()
        conn = _Connection(writer=writer, lost=loop.create_future())
        self._conn = conn
        self.hello = hello
        feed.attach(lambda frame: self._on_frame(conn, frame), lambda exc: self._lose(conn, exc))
        conn.tasks.append(loop.create_task(self._heartbeat(conn), name="bridge-heartbeat"))
        log.info(
            "bridge_connected",
            transport=self._transport.describe(),
            protocol_version=hello.protocol_version,
            bridge_version=hello.bridge_version,
            sdk_version=hello.sdk_version,
            device_model=hello.device_model,
            face_app_version=hello.face_app_version,
        )
        return hello

    async def call(
        self,
        method: str,
        params: Mapping[str, str],
        *,
        timeout: float,
        on_update_result: UpdateListener | None = None,
        on_sent: Callable[[int], None] | None = None,
    ) -> dict[str, str]:
        """Invoke an SDK method and return its RESULT callback's info map."""
        # UPDATE_RESULT callbacks go to on_update_result until one has been delivered (the SDK
        # sends one per capture), the connection closes, or forget_update(call_id); on_sent
        # learns the call id once the Call frame is written.
        conn = self._conn
        if conn is None or conn.lost.done():
            raise DeviceLost(f"{method}: the bridge is not connected")
        # Real latency, not the injected clock's: a histogram of how slow the peripheral is.
        started = time.perf_counter()
        outcome = "answered"
        try:
            return await self._exchange(conn, method, params, timeout, on_update_result, on_sent)
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            self._observe(method, time.perf_counter() - started, outcome)

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        params: Mapping[str, str],
        timeout: float,
        on_update_result: UpdateListener | None,
        on_sent: Callable[[int], None] | None,
    ) -> dict[str, str]:
        """One Call frame and its RESULT callback (call() times it)."""
        call_id = next(self._call_ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, str]] = loop.create_future()
        conn.pending[call_id] = _Pending(method, future)
        if on_update_result is not None:
            conn.updates[call_id] = on_update_result
        self.calls_sent += 1
        self.methods_sent.append(method)
        if len(self.methods_sent) > _METHODS_KEPT:
            del self.methods_sent[: _METHODS_KEPT // 2]
        answered = False
        timer: Timer | None = None
        try:
            # Filled in place: Frame(call=Call(params=...)) copies the Call and fills its map
            # through MutableMapping.update in Python.
            frame = bridge_pb2.Frame()
            call = frame.call
            call.call_id = call_id
            call.method = method
            if params:
                call.params.update(params)
            try:
                await write_frame(conn.writer, frame)
            except DeviceLost as exc:
                self._lose(conn, exc)
                raise DeviceLost(f"{method}: bridge connection lost: {exc}") from exc
            log.debug("bridge_call_sent", method=method, call_id=call_id)
            if on_sent is not None:
                on_sent(call_id)
            if not future.done():
                # The deadline fails the future itself, so the answer wakes this task directly:
                # no sleeping task and no asyncio.wait per call (≈17 µs of CPU each, measured).
                timer = self._clock.call_later(
                    timeout, lambda: self._expire(future, method, call_id, timeout)
                )
            info = await future
            # Only a call that succeeded is followed by an UPDATE_RESULT: keep its listener only
            # then, so failed captures leave nothing behind for the connection's lifetime.
            answered = info.get("return_code") == "SUCCESS"
            log.debug(
                "bridge_call_result",
                method=method,
                call_id=call_id,
                return_code=info.get("return_code", ""),
            )
            return info
        finally:
            if timer is not None:
                timer.cancel()
            conn.pending.pop(call_id, None)
            if not answered:
                # A timed-out, failed, refused or abandoned call forgets its id: late callbacks are
                # dropped.
                conn.updates.pop(call_id, None)

    def _expire(
        self, future: asyncio.Future[dict[str, str]], method: str, call_id: int, timeout: float
    ) -> None:
        """Fail one call's future with DeviceTimeout: its deadline passed on the clock."""
        if not future.done():
            log.warning("bridge_call_timeout", method=method, call_id=call_id, timeout=timeout)
            future.set_exception(
                DeviceTimeout(f"{method}: no answer from the peripheral within {timeout:g}s")
            )

    def forget_update(self, call_id: int) -> None:
        """Stop delivering UPDATE_RESULT callbacks of ``call_id``."""
        if self._conn is not None:
            self._conn.updates.pop(call_id, None)

    async def wait_lost(self) -> BaseException:
        """Wait until the current connection is lost and return why."""
        conn = self._conn
        if conn is None:
            return DeviceLost("the bridge is not connected")
        return await asyncio.shield(conn.lost)

    def add_lost_listener(self, cb: LostListener) -> None:
        """Call ``cb(reason)`` whenever a connection is lost (not on close())."""
        self._lost_listeners.append(cb)

    async def close(self) -> None:
        """Close the stream; pending calls fail with DeviceLost and lost listeners stay silent."""
        conn = self._conn
        if conn is not None:
            await self._shutdown(conn, DeviceLost("the bridge client was closed"), notify=False)

    # ------------------------------------------------------------------ private

    async def _await_hello(
        self, reader: FrameReader, writer: asyncio.StreamWriter
    ) -> tuple[BridgeHello, _FrameFeed]:
        read = asyncio.ensure_future(_read_first(reader, writer))
        try:
            if not await race(self._clock, read, self._hello_timeout):
                raise DeviceTimeout(f"no hello from the bridge within {self._hello_timeout:g}s")
            frame, feed = read.result()
        finally:
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, DeviceError):
                    await read
        if frame is None:
            raise DeviceLost("the bridge closed the stream before its hello")
        if frame.WhichOneof("body") != "hello":
            raise DeviceError("the bridge's first frame was not a hello")
        hello = frame.hello
        if hello.protocol_version.split(".", 1)[0] != PROTOCOL_MAJOR:
            raise DeviceError(
                f"bridge protocol {hello.protocol_version!r} is not supported "
                f"(this daemon speaks {PROTOCOL_MAJOR})"
            )
        assert feed is not None  # taken over with the hello
        return (
            BridgeHello(
                protocol_version=hello.protocol_version,
                bridge_version=hello.bridge_version,
                sdk_version=hello.sdk_version,
                device_serial=hello.device_serial,
                device_model=hello.device_model,
                face_app_version=hello.face_app_version,
            ),
            feed,
        )

    def _on_frame(self, conn: _Connection, frame: bridge_pb2.Frame) -> None:
        """One frame from the bridge, handled as it is parsed (no reader task in between)."""
        try:
            if frame.HasField("callback"):
                self._on_callback(conn, frame.callback)  # the common case first
            else:
                self._dispatch(conn, frame)
        except Exception as exc:
            log.exception("bridge_reader_failed")
            self._lose(conn, DeviceError(f"bridge reader failed: {type(exc).__name__}"))

    def _dispatch(self, conn: _Connection, frame: bridge_pb2.Frame) -> None:
        kind = frame.WhichOneof("body")
        if kind == "callback":
            self._on_callback(conn, frame.callback)
        elif kind == "call_error":
            pending = conn.pending.pop(frame.call_error.call_id, None)
            if pending is None or pending.future.done():
                log.debug("bridge_late_call_error", call_id=frame.call_error.call_id)
                return
            log.warning("bridge_call_refused", method=pending.method)
            pending.future.set_exception(
                DeviceError(
                    f"{pending.method}: the bridge refused the call: {frame.call_error.message}"
                )
            )
        elif kind == "ping":
            # A few bytes: written without waiting for the buffer to drain.
            if not conn.writer.is_closing():
                pong = bridge_pb2.Frame(pong=bridge_pb2.Pong(nonce=frame.ping.nonce))
                conn.writer.write(encode_frame(pong))
        elif kind == "pong":
            waiter = conn.pongs.get(frame.pong.nonce)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        else:
            log.debug("bridge_frame_ignored", kind=kind or "empty")

    def _on_callback(self, conn: _Connection, callback: bridge_pb2.Callback) -> None:
        info = dict(callback.info)
        call_id = callback.call_id
        if callback.kind == bridge_pb2.CALLBACK_KIND_RESULT:
            pending = conn.pending.pop(call_id, None)
            if pending is None or pending.future.done():
                log.debug("bridge_late_callback", call_id=call_id)
                return
            pending.future.set_result(info)
        elif callback.kind == bridge_pb2.CALLBACK_KIND_UPDATE_RESULT:
            listener = conn.updates.pop(call_id, None)
            if listener is None:
                log.debug("bridge_update_result_dropped", call_id=call_id)
                return
            log.debug(
                "bridge_update_result", call_id=call_id, return_code=info.get("return_code", "")
            )
            try:
                listener(info)
            except Exception:
                log.exception("bridge_update_listener_failed", call_id=call_id)
        else:
            log.debug("bridge_callback_kind_unknown", call_id=call_id, kind=int(callback.kind))

    async def _heartbeat(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        while not conn.lost.done():
            await self._clock.sleep(self._heartbeat_interval)
            nonce = next(self._nonces)
            waiter: asyncio.Future[None] = loop.create_future()
            conn.pongs[nonce] = waiter
            # Sending is inside the deadline too: a peer that stops reading blocks drain().
            started = time.perf_counter()
            probe = asyncio.ensure_future(self._ping(conn, nonce, waiter))
            try:
                answered = await race(self._clock, probe, self._heartbeat_timeout)
            finally:
                conn.pongs.pop(nonce, None)
                if not probe.done():
                    probe.cancel()
                    with contextlib.suppress(asyncio.CancelledError, DeviceError):
                        await probe
            if not answered:
                self._lose(conn, DeviceTimeout("peripheral stopped answering"))
                return
            error = probe.exception()
            if error is not None:
                self._lose(conn, error)
                return
            self._observe_round_trip(time.perf_counter() - started)

    async def _ping(self, conn: _Connection, nonce: int, waiter: asyncio.Future[None]) -> None:
        await write_frame(conn.writer, bridge_pb2.Frame(ping=bridge_pb2.Ping(nonce=nonce)))
        await waiter

    def _observe(self, method: str, seconds: float, outcome: str) -> None:
        if self._observer is None:
            return
        try:
            self._observer.sdk_call(method, seconds, outcome)
        except Exception:
            log.exception("bridge_observer_failed", method=method)

    def _observe_round_trip(self, seconds: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer.round_trip(seconds)
        except Exception:
            log.exception("bridge_observer_failed", method="ping")

    def _lose(self, conn: _Connection, reason: BaseException, *, notify: bool = True) -> None:
        """Declare ``conn`` dead: fail its calls at once, stop its tasks, close its stream."""
        if conn.lost.done():
            return
        conn.lost.set_result(reason)
        if notify:
            log.warning("bridge_lost", reason=str(reason), error=type(reason).__name__)
        else:
            log.info("bridge_closed", reason=str(reason))
        for pending in conn.pending.values():
            if not pending.future.done():
                pending.future.set_exception(
                    DeviceLost(f"{pending.method}: bridge connection lost: {reason}")
                )
        conn.pending.clear()
        conn.updates.clear()
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()
        conn.writer.close()
        if notify:
            for listener in list(self._lost_listeners):
                try:
                    listener(reason)
                except Exception:
                    log.exception("bridge_lost_listener_failed")

    async def _shutdown(self, conn: _Connection, reason: BaseException, *, notify: bool) -> None:
        self._lose(conn, reason, notify=notify)
        current = asyncio.current_task()
        others = [task for task in conn.tasks if task is not current]
        if others:
            await asyncio.gather(*others, return_exceptions=True)
        with contextlib.suppress(ConnectionError, OSError):
            await conn.writer.wait_closed()


async def _read_first(
    reader: FrameReader, writer: asyncio.StreamWriter
) -> tuple[bridge_pb2.Frame | None, _FrameFeed | None]:
    """The stream's first frame; with it, in the same step, the stream's reading taken over.

    The read that completed the frame emptied the StreamReader (a read takes all it holds, up
    to its chunk), and nothing runs between it and set_protocol: every later byte reaches the
    feed, and what the FrameReader read past the first frame goes with it.
    """
    frame = await reader.read()
    if frame is None:
        return None, None
    transport = writer.transport
    feed = _FrameFeed(transport.get_protocol(), reader.frames)
    transport.set_protocol(feed)
    return frame, feed


class _FrameFeed(asyncio.Protocol):
    """Reads a bridge stream once its hello is in: each frame is handled in data_received.

    The StreamReader's protocol it replaces still gets the rest (write flow control, the
    connection's end), so the StreamWriter's drain(), close() and wait_closed() keep working.
    Frames and a loss that come before attach() are held until then.
    """

    def __init__(self, inner: asyncio.BaseProtocol, frames: FrameBuffer) -> None:
        self._inner = cast(asyncio.Protocol, inner)
        self._frames = frames
        self._on_frame: Callable[[bridge_pb2.Frame], None] | None = None
        self._on_lost: Callable[[BaseException], None] | None = None
        self._held: list[bridge_pb2.Frame] = []
        self._lost: BaseException | None = None

    def attach(
        self,
        on_frame: Callable[[bridge_pb2.Frame], None],
        on_lost: Callable[[BaseException], None],
    ) -> None:
        """Deliver frames and the loss from now on, beginning with what came meanwhile."""
        self._on_frame, self._on_lost = on_frame, on_lost
        held, self._held = self._held, []
        for frame in held:
            on_frame(frame)
        self._parse()
        if self._lost is not None:
            on_lost(self._lost)

    def data_received(self, data: bytes) -> None:
        self._frames.feed(data)
        self._parse()

    def eof_received(self) -> bool | None:
        reason: BaseException = DeviceLost("the bridge closed the stream")
        if self._frames.pending:
            reason = DeviceLost("bridge stream ended inside a frame")
        self._lose(reason)
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(
            DeviceLost("the bridge closed the stream")
            if exc is None
            else DeviceLost("bridge stream broke while reading")
        )
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _parse(self) -> None:
        if self._lost is not None:
            return
        try:
            while (frame := self._frames.next()) is not None:
                if self._on_frame is None:
                    self._held.append(frame)
                else:
                    self._on_frame(frame)
        except DeviceError as exc:
            self._lose(exc)

    def _lose(self, reason: BaseException) -> None:
        if self._lost is not None:
            return
        self._lost = reason
        if self._on_lost is not None:
            self._on_lost(reason)


def _outcome(exc: BaseException) -> str:
    """How a call that raised ended, as a metrics label."""
    if isinstance(exc, DeviceTimeout):
        return "timeout"
    if isinstance(exc, DeviceLost):
        return "lost"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, DeviceError):
        return "refused"
    return "error"
