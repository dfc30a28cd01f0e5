"""The bridge conformance kit: facepay.bridge.v1's contract, checked against any bridge.

`facepay bridge-check` runs it. It speaks raw frames rather than going through BridgeClient,
because it must see exactly what the bridge sends: a callback for the wrong call id, a
CallError where a callback belongs, a Pong that never comes. Every face call it makes
charges nobody: face codes are thrown away, never printed, never sent to WeChat Pay.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from facepay.bridge.v1 import bridge_pb2
from facepayd.device.adb import AdbSettings, AdbTransport
from facepayd.device.bridge import PROTOCOL_MAJOR
from facepayd.device.framing import MAX_FRAME_SIZE, encode_varint, read_frame, write_frame
from facepayd.device.sdk import SdkVersion
from facepayd.device.tcp import TcpTransport
from facepayd.device.transport import Transport
from facepayd.errors import FacepayError

__all__ = [
    "DOCUMENTED_RETURN_CODES",
    "Check",
    "CheckOptions",
    "mark",
    "run_checks",
    "transport_for",
]

# The reference's public return codes plus those with which a face UI ends.
DOCUMENTED_RETURN_CODES = frozenset(
    {
        "SUCCESS",
        "ERROR",
        "PARAM_ERROR",
        "SYSTEMERROR",
        "USER_CANCEL",
        "SCAN_PAYMENT",
        "USER_QUERY_CANCEL",
    }
)
# updateResultWxpayfaceCallBack's only two answers.
_UPDATE_RESULT_CODES = frozenset({"SUCCESS", "USER_QUERY_CANCEL"})
_UNKNOWN_METHOD = "bridgeCheckNoSuchMethod"
# Far past MAX_FRAME_SIZE: a bridge that honours it would wait for 16 MiB that never come.
_OVERSIZED_LENGTH = MAX_FRAME_SIZE * 16
_OVERSIZED_SENT = 4096


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome: passed True/False, or None when it was skipped on purpose."""

    name: str
    passed: bool | None
    detail: str


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """Deadlines and the harmless params the kit's SDK calls carry."""

    call_timeout: float = 5.0  # hello, pong, CallError, non-face calls, a close
    face_timeout: float = 60.0  # face calls: someone may have to show a face or cancel
    appid: str = "wx0000000000000000"
    mch_id: str = "0000000000"
    store_id: str = "BRIDGECHECK"
    authinfo: str = field(default="bridge-check", repr=False)  # secret when real


class _Violation(Exception):
    """The bridge broke the contract; the message says how."""


class _Skip(Exception):
    """The check was not run on purpose; the message says why."""


class _Stream:
    """One bridge stream: frames read by a pump, claimed by the check waiting for them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self.writer = writer
        self.hello: bridge_pb2.Hello | None = None
        self.ended = ""  # why the bridge ended the stream, "" while open
        self.strays: list[str] = []
        self._issued: set[int] = set()
        self._strays_before: dict[int, int] = {}  # call id -> strays seen when it was sent
        self._next_id = 1
        self._frames: list[bridge_pb2.Frame] = []
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    async def read_hello(self, timeout: float) -> bridge_pb2.Hello:
        """The first frame, which must be a Hello; then frames are pumped in the background."""
        try:
            async with asyncio.timeout(timeout):
                frame = await read_frame(self._reader)
        except TimeoutError as exc:
            raise _Violation(f"no hello within {timeout:g}s of opening the stream") from exc
        except FacepayError as exc:
            raise _Violation(f"the stream failed before a hello: {exc}") from exc
        if frame is None:
            raise _Violation("the bridge closed the stream without a hello")
        kind = frame.WhichOneof("body")
        if kind != "hello":
            raise _Violation(f"the first frame was {kind or 'empty'}, not a hello")
        self.hello = frame.hello
        self._pump = asyncio.get_running_loop().create_task(self._run_pump(), name="check-pump")
        return frame.hello

    async def send(self, frame: bridge_pb2.Frame, timeout: float) -> None:
        """Write one frame within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await write_frame(self.writer, frame)
        except TimeoutError as exc:
            raise _Violation(f"the bridge stopped reading (write blocked {timeout:g}s)") from exc
        except FacepayError as exc:
            raise _Violation(f"the stream failed while writing: {exc}") from exc

    async def call(self, method: str, params: Mapping[str, str], timeout: float) -> int:
        """Send a Call; return its call id."""
        call_id = self._next_id
        self._next_id += 1
        self._issued.add(call_id)
        self._strays_before[call_id] = len(self.strays)
        call = bridge_pb2.Call(call_id=call_id, method=method, params=dict(params))
        await self.send(bridge_pb2.Frame(call=call), timeout)
        return call_id

    async def answer(self, call_id: int, timeout: float) -> bridge_pb2.Frame:
        """The RESULT callback or CallError for ``call_id``."""
        # A stray that came after the call was sent may have been meant as its answer.
        return await self.wait(
            lambda f: _answers(f, call_id),
            timeout,
            f"no RESULT or CallError for call {call_id}",
            strays_since=self._strays_before.get(call_id, 0),
        )

    def answered(self, call_id: int) -> bool:
        """True when the answer to ``call_id`` has arrived and is not claimed yet."""
        return any(_answers(frame, call_id) for frame in self._frames)

    async def wait(
        self,
        match: Callable[[bridge_pb2.Frame], bool],
        timeout: float,
        missing: str,
        *,
        strays_since: int | None = None,
    ) -> bridge_pb2.Frame:
        """Claim the first frame ``match`` accepts; the stream's end fails, and so does a stray
        answer from strays_since on (None: strays are not this wait's business)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for index, frame in enumerate(self._frames):
                if match(frame):
                    del self._frames[index]
                    return frame
            if strays_since is not None and len(self.strays) > strays_since:
                raise _Violation(f"{missing}; instead: {'; '.join(self.strays[strays_since:])}")
            if self.ended:
                raise _Violation(f"{missing}: {self.ended}")
            self._changed.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._changed.wait()
            except TimeoutError as exc:
                raise _Violation(f"{missing} within {timeout:g}s") from exc

    async def wait_closed(self, timeout: float) -> bool:
        """True when the bridge ends the stream within ``timeout``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.ended:
                    self._changed.clear()
                    await self._changed.wait()
        return bool(self.ended)

    async def close(self) -> None:
        """Close our side and stop the pump."""
        self.writer.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def _run_pump(self) -> None:
        try:
            while (frame := await read_frame(self._reader)) is not None:
                kind = frame.WhichOneof("body")
                if kind == "ping":
                    # Either side may probe; answering keeps a bridge with a heartbeat happy.
                    pong = bridge_pb2.Frame(pong=bridge_pb2.Pong(nonce=frame.ping.nonce))
                    with contextlib.suppress(FacepayError):
                        await write_frame(self.writer, pong)
                    continue
                answered = _call_id_of(frame)
                if answered is not None and answered not in self._issued:
                    self.strays.append(f"a {_describe(frame)} for call id {answered}, never sent")
                else:
                    self._frames.append(frame)
                self._changed.set()
            self.ended = "the bridge closed the stream"
        except FacepayError as exc:
            self.ended = f"the stream failed: {exc}"
        finally:
            if not self.ended:
                self.ended = "the stream was closed"
            self._changed.set()


def _call_id_of(frame: bridge_pb2.Frame) -> int | None:
    kind = frame.WhichOneof("body")
    if kind == "callback":
        return int(frame.callback.call_id)
    if kind == "call_error":
        return int(frame.call_error.call_id)
    return None


def _answers(frame: bridge_pb2.Frame, call_id: int) -> bool:
    if frame.WhichOneof("body") == "call_error":
        return frame.call_error.call_id == call_id
    return (
        frame.WhichOneof("body") == "callback"
        and frame.callback.call_id == call_id
        and frame.callback.kind == bridge_pb2.CALLBACK_KIND_RESULT
    )


def _describe(frame: bridge_pb2.Frame) -> str:
    kind = frame.WhichOneof("body")
    if kind == "callback":
        kind_name = bridge_pb2.CallbackKind.Name(frame.callback.kind)
        return f"{kind_name.removeprefix('CALLBACK_KIND_')} callback"
    if kind == "call_error":
        return "CallError"
    return kind or "empty frame"


def _result_info(frame: bridge_pb2.Frame, method: str) -> dict[str, str]:
    """The info map of a RESULT callback with a documented return_code and a return_msg."""
    if frame.WhichOneof("body") == "call_error":
        raise _Violation(f"{method} refused with a CallError: {frame.call_error.message!r}")
    info = dict(frame.callback.info)
    code = info.get("return_code")
    if code is None:
        raise _Violation("the RESULT info map has no return_code")
    if code not in DOCUMENTED_RETURN_CODES:
        raise _Violation(f"undocumented return_code {code!r}")
    if "return_msg" not in info:
        raise _Violation(f"return_code {code} without the required return_msg")
    return info


class _Kit:
    """Runs the checks in order and records each outcome."""

    def __init__(self, transport: Transport, options: CheckOptions) -> None:
        self.transport = transport
        self.options = options
        self.results: list[Check] = []
        self.sdk = SdkVersion()
        self.face_call: tuple[int, str] | None = None  # getWxpayfaceCode's call id, return_code
        self.firewall_enabled = False

    async def check(self, name: str, run: Callable[[], Awaitable[str]]) -> bool:
        """Run one check; its returned string says what passed."""
        try:
            detail = await run()
        except _Skip as exc:
            self.results.append(Check(name, None, str(exc)))
            return True
        except _Violation as exc:
            self.results.append(Check(name, False, str(exc)))
            return False
        self.results.append(Check(name, True, detail))
        return True

    async def open(self) -> _Stream:
        """A new bridge stream with its hello read."""
        timeout = self.options.call_timeout
        try:
            reader, writer = await self.transport.open(timeout)
        except FacepayError as exc:
            raise _Violation(
                f"cannot open the bridge ({self.transport.describe()}): {exc}"
            ) from exc
        stream = _Stream(reader, writer)
        try:
            await stream.read_hello(timeout)
        except BaseException:
            await stream.close()
            raise
        return stream

    async def run(self) -> list[Check]:
        """Every check, in order; a bridge without a hello fails the rest as not run."""
        streams: list[_Stream] = []

        async def hello() -> str:
            stream = await self.open()
            streams.append(stream)
            return self._judge_hello(stream)

        if not await self.check("hello", hello):
            self.results.append(Check("remaining checks", False, "not run: no usable hello"))
            return self.results
        stream = streams[0]
        try:
            await self._main_checks(stream)
        finally:
            await stream.close()
        await self.check("oversized frame", self._oversized)
        await self.check("closed stream", self._closed_stream)
        return self.results

    def _judge_hello(self, stream: _Stream) -> str:
        hello = stream.hello
        assert hello is not None
        major = hello.protocol_version.split(".", 1)[0]
        if major != PROTOCOL_MAJOR:
            raise _Violation(
                f"protocol_version {hello.protocol_version!r}: major {PROTOCOL_MAJOR} is required"
            )
        missing = [
            name
            for name in ("bridge_version", "sdk_version", "device_serial", "device_model")
            if not getattr(hello, name)
        ]
        if missing:
            raise _Violation(f"hello lacks {', '.join(missing)}")
        self.sdk = SdkVersion.parse(hello.sdk_version)
        if self.sdk.parts[0] < 1:
            raise _Violation(f"sdk_version {hello.sdk_version!r} is not a version")
        face_app = hello.face_app_version or "not installed"
        return (
            f"protocol {hello.protocol_version}, bridge app {hello.bridge_version},"
            f" SDK {hello.sdk_version}, {hello.device_model} ({hello.device_serial}),"
            f" face app {face_app}"
        )

    async def _main_checks(self, stream: _Stream) -> None:
        o = self.options
        merchant = {"appid": o.appid, "mch_id": o.mch_id, "store_id": o.store_id}
        face = {**merchant, "face_authtype": "FACEPAY", "authinfo": o.authinfo}
        await self.check("ping", lambda: self._ping(stream))
        await self.check("call initWxpayface", lambda: self._call(stream, "initWxpayface", {}))
        await self.check("call getWxpayfaceRawdata", lambda: self._rawdata(stream))
        await self.check("call ids", lambda: self._call_ids(stream))
        await self.check("unknown method", lambda: self._unknown_method(stream))
        # face_code_type 1 names no order and no amount: the code pays for nothing.
        code_params = {**face, "face_code_type": "1", "ignore_update_pay_result": "0"}
        await self.check("call getWxpayfaceCode", lambda: self._face_code(stream, code_params))
        await self.check("UPDATE_RESULT callback", lambda: self._update_result(stream, face))
        await self.check(
            "call getWxpayfaceUserInfo",
            lambda: self._call(stream, "getWxpayfaceUserInfo", face, face_ui=True),
        )
        payscore = {
            **face,
            "out_trade_no": f"bridgecheck{secrets.token_hex(8)}",
            "payscore_out_request_no": f"bridgecheck{secrets.token_hex(8)}",
            "payscore_service_id": "0",
        }
        await self.check(
            "call getUserPayScoreStatus",
            lambda: self._call(stream, "getUserPayScoreStatus", payscore, face_ui=True),
        )
        if self.sdk.has_quit:
            await self.check("call quitWxpayface", lambda: self._call(stream, "quitWxpayface", {}))
        if self.sdk.has_firewall:
            await self.check("call enableFirewall", lambda: self._enable_firewall(stream))
            await self.check("call disableFirewall", lambda: self._disable_firewall(stream))
        await self.check(
            "call releaseWxpayface", lambda: self._call(stream, "releaseWxpayface", {})
        )

    async def _ping(self, stream: _Stream) -> str:
        timeout = self.options.call_timeout
        nonce = secrets.randbits(63) | 1
        started = time.monotonic()
        await stream.send(bridge_pb2.Frame(ping=bridge_pb2.Ping(nonce=nonce)), timeout)
        await stream.wait(
            lambda f: f.WhichOneof("body") == "pong" and f.pong.nonce == nonce,
            timeout,
            f"no Pong echoing nonce {nonce}",
        )
        return f"nonce echoed in {(time.monotonic() - started) * 1000:.1f} ms"

    async def _ping_during(self, stream: _Stream, call_id: int) -> str:
        pong = await self._ping(stream)
        if stream.answered(call_id):
            return f"{pong} (getWxpayfaceCode had already answered)"
        return f"{pong} while getWxpayfaceCode was running"

    async def _call(
        self, stream: _Stream, method: str, params: Mapping[str, str], *, face_ui: bool = False
    ) -> str:
        info = await self._result(stream, method, params, face_ui=face_ui)
        return f"RESULT for its call id, return_code {info['return_code']}"

    async def _result(
        self, stream: _Stream, method: str, params: Mapping[str, str], *, face_ui: bool = False
    ) -> dict[str, str]:
        timeout = self.options.face_timeout if face_ui else self.options.call_timeout
        call_id = await stream.call(method, params, self.options.call_timeout)
        return _result_info(await stream.answer(call_id, timeout), method)

    async def _rawdata(self, stream: _Stream) -> str:
        info = await self._result(stream, "getWxpayfaceRawdata", {})
        if info["return_code"] == "SUCCESS" and not info.get("rawdata"):
            raise _Violation("return_code SUCCESS without rawdata")
        size = f", rawdata of {len(info['rawdata'])} chars" if info.get("rawdata") else ""
        return f"RESULT for its call id, return_code {info['return_code']}{size}"

    async def _call_ids(self, stream: _Stream) -> str:
        timeout = self.options.call_timeout
        first = await stream.call("getWxpayfaceRawdata", {}, timeout)
        second = await stream.call("getWxpayfaceRawdata", {}, timeout)
        answers = await asyncio.gather(
            stream.answer(first, timeout), stream.answer(second, timeout), return_exceptions=True
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        for answer in answers:
            assert isinstance(answer, bridge_pb2.Frame)
            _result_info(answer, "getWxpayfaceRawdata")
        return f"two concurrent calls ({first}, {second}) answered to their own ids"

    async def _unknown_method(self, stream: _Stream) -> str:
        timeout = self.options.call_timeout
        call_id = await stream.call(_UNKNOWN_METHOD, {}, timeout)
        frame = await stream.answer(call_id, timeout)
        if frame.WhichOneof("body") != "call_error":
            raise _Violation(f"{_UNKNOWN_METHOD} was answered with a RESULT, not a CallError")
        message = frame.call_error.message or "(no message)"
        return f"CallError for its call id: {message}"

    async def _face_code(self, stream: _Stream, params: Mapping[str, str]) -> str:
        timeout = self.options.call_timeout
        call_id = await stream.call("getWxpayfaceCode", params, timeout)
        # A bridge that blocks on the SDK while a face UI waits for a user misses the daemon's
        # heartbeat and is taken for lost.
        await self.check("ping during a face call", lambda: self._ping_during(stream, call_id))
        info = _result_info(
            await stream.answer(call_id, self.options.face_timeout), "getWxpayfaceCode"
        )
        code = info["return_code"]
        self.face_call = (call_id, code)
        if code == "SUCCESS":
            missing = [name for name in ("face_code", "openid") if not info.get(name)]
            if missing:
                raise _Violation(f"return_code SUCCESS without {', '.join(missing)}")
            # The face code itself is never printed nor used: nobody is charged.
            return "RESULT for its call id with a face code and openid (thrown away)"
        return f"RESULT for its call id, return_code {code}"

    async def _update_result(self, stream: _Stream, face: Mapping[str, str]) -> str:
        if self.face_call is None:
            raise _Violation("not checked: getWxpayfaceCode did not answer")
        call_id, code = self.face_call
        timeout = self.options.face_timeout
        if self.sdk.has_update_pay_result:
            # Before 2.13 the second callback follows updateWxpayfacePayResult; ERROR is true:
            # nothing was paid.
            params = {**face, "payresult": "ERROR"}
            info = await self._result(stream, "updateWxpayfacePayResult", params)
            if code != "SUCCESS":
                raise _Violation(
                    f"not seen: getWxpayfaceCode ended {code} (updateWxpayfacePayResult answered"
                    f" {info['return_code']}); show a face to the camera, nobody is charged"
                )
        elif code != "SUCCESS":
            raise _Violation(
                f"not seen: getWxpayfaceCode ended {code}, and only a recognised face is"
                " followed by UPDATE_RESULT; show a face to the camera, nobody is charged"
            )
        frame = await stream.wait(
            lambda f: (
                f.WhichOneof("body") == "callback"
                and f.callback.call_id == call_id
                and f.callback.kind == bridge_pb2.CALLBACK_KIND_UPDATE_RESULT
            ),
            timeout,
            f"no UPDATE_RESULT callback for getWxpayfaceCode's call {call_id}",
            strays_since=len(stream.strays),
        )
        update_code = frame.callback.info.get("return_code", "")
        if update_code not in _UPDATE_RESULT_CODES:
            raise _Violation(f"UPDATE_RESULT with return_code {update_code!r}")
        after = " after updateWxpayfacePayResult" if self.sdk.has_update_pay_result else ""
        return f"UPDATE_RESULT for getWxpayfaceCode's call id{after}, return_code {update_code}"

    async def _enable_firewall(self, stream: _Stream) -> str:
        # Without its required mchId the SDK must refuse, so the firewall setting (which
        # survives reboots) is left as it was.
        info = await self._result(stream, "enableFirewall", {})
        self.firewall_enabled = info["return_code"] == "SUCCESS"
        return f"RESULT for its call id without mchId, return_code {info['return_code']}"

    async def _disable_firewall(self, stream: _Stream) -> str:
        if not self.firewall_enabled:
            raise _Skip("not called: it would remove a firewall the merchant configured")
        return await self._call(stream, "disableFirewall", {})

    async def _oversized(self) -> str:
        timeout = self.options.call_timeout
        stream = await self.open()
        try:
            data = encode_varint(_OVERSIZED_LENGTH) + bytes(_OVERSIZED_SENT)
            try:
                async with asyncio.timeout(timeout):
                    stream.writer.write(data)
                    await stream.writer.drain()
            except (TimeoutError, ConnectionError, OSError):
                pass  # a bridge that stops reading or resets at once is what we want to see
            if not await stream.wait_closed(timeout):
                raise _Violation(
                    f"stream still open {timeout:g}s after a {_OVERSIZED_LENGTH}-byte length"
                    f" prefix (limit {MAX_FRAME_SIZE}); the bridge must close it"
                )
        finally:
            await stream.close()
        return f"the bridge closed the stream after a {_OVERSIZED_LENGTH}-byte length prefix"

    async def _closed_stream(self) -> str:
        timeout = self.options.call_timeout
        left = await self.open()
        try:
            await left.call("initWxpayface", {}, timeout)
        finally:
            await left.close()
        again = await self.open()
        try:
            await self._ping(again)
            info = await self._result(again, "initWxpayface", {})
            await self._result(again, "releaseWxpayface", {})
        finally:
            await again.close()
        return (
            "after we closed a stream mid-initWxpayface, a new stream got a hello, a Pong and"
            f" initWxpayface {info['return_code']}"
        )


async def run_checks(transport: Transport, options: CheckOptions | None = None) -> list[Check]:
    """Run the whole contract against the bridge behind ``transport``."""
    return await _Kit(transport, options or CheckOptions()).run()


def transport_for(
    *,
    tcp: str = "",
    adb_host: str = "127.0.0.1",
    adb_port: int = 5037,
    serial: str = "",
    address: str = "",
    bridge_socket: str = "facepay-bridge",
) -> Transport:
    """TCP to ``tcp`` ("host:port") when given, else adb's localabstract:<bridge_socket>."""
    if tcp:
        host, _, port = tcp.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--tcp wants HOST:PORT, got {tcp!r}")
        return TcpTransport(host.strip("[]"), int(port))
    settings = AdbSettings(
        server_host=adb_host,
        server_port=adb_port,
        serial=serial,
        address=address,
        bridge_socket=bridge_socket,
    )
    return AdbTransport(settings)


def mark(check: Check) -> str:
    """✓ passed, ✗ failed, - skipped on purpose."""
    if check.passed is None:
        return "-"
    return "✓" if check.passed else "✗"
