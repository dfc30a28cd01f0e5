"""The simulated terminal: the bridge protocol's peripheral side with the WxPayFace SDK's semantics.

State (initialized, face UI, firewall, scripted outcomes) + service (``handle_stream`` speaks
facepay.bridge.v1 on any stream: TCP, or a fake adbd's localabstract service) + scenarios
(``script``, ``script_init``, ``forget_init``, ``freeze``, ``drop_connections``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import enum
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from facepay.bridge.v1 import bridge_pb2
from facepayd.clock import Clock
from facepayd.device.framing import FrameReader, write_frame
from facepayd.errors import SDK_INITIALIZING, SDK_NOT_INITIALIZED, DeviceError
from facepayd.ops.logs import get_logger

__all__ = ["DEFAULT_USER", "FaceOutcome", "SimLatencies", "SimTerminal", "SimUser"]

log = get_logger(__name__)

PROTOCOL_VERSION = "1"

# The SDK reference's version gates.
_NO_UPDATE_PAY_RESULT_FROM = (2, 13)
_FIREWALL_FROM = (2, 21)
_QUIT_FROM = (2, 22)

_PERFORM_MODES = frozenset({"NORMAL_PRFORM", "LOW_PERFORM"})  # sic: the SDK's own spelling
_FACE_AUTHTYPES = frozenset({"FACEPAY", "FACEPAY_DELAY", "FACE_AUTH"})


class FaceOutcome(enum.Enum):
    """How a scripted face capture ends."""

    SUCCESS = "SUCCESS"  # a face code (or user info / PayScore status) comes back
    # A face code comes back, but the user leaves the result page before it knows the outcome:
    # the second callback (updateResultWxpayfaceCallBack) says USER_QUERY_CANCEL.
    USER_QUERY_CANCEL = "USER_QUERY_CANCEL"
    USER_CANCEL = "USER_CANCEL"  # the user closed the face UI
    SCAN_PAYMENT = "SCAN_PAYMENT"  # the user chose to scan a payment code instead
    FACE_TIMEOUT = "FACE_TIMEOUT"  # no face recognised in time
    CAMERA_ERROR = "CAMERA_ERROR"  # the camera could not be opened


@dataclass(frozen=True, slots=True)
class SimUser:
    """A simulated WeChat user standing in front of the camera."""

    openid: str = "oSim0000UserOpenid000000001"
    sub_openid: str = ""
    nickname: str = "Sim User"
    unionid: str = ""
    has_payscore: bool = True  # PayScore already enabled
    # Whether the user agrees when the UI asks (to enable PayScore and to authorize the service).
    authorizes_payscore: bool = True
    underage_state: int = 1  # 0 unknown, 1 adult, 2 minor


DEFAULT_USER = SimUser()


@dataclass(frozen=True, slots=True)
class SimLatencies:
    """How long the simulated SDK takes, in seconds of the injected clock (0 = answer at once)."""

    init: float = 0.2
    rawdata: float = 0.02
    face_capture: float = 1.0
    update_result: float = 0.3
    release: float = 0.05
    quit: float = 0.02
    other: float = 0.01

    @classmethod
    def instant(cls) -> SimLatencies:
        """Every call answers without waiting."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


class _Refused(Exception):
    """The bridge cannot dispatch the call: answered with CallError, no SDK callback."""


@dataclass(slots=True, eq=False)  # identity: peers live in a set
class _Peer:
    """One bridge stream and the call tasks it started."""

    writer: asyncio.StreamWriter
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def close(self) -> None:
        self.closed.set()
        self.writer.close()
        current = asyncio.current_task()
        tasks = [task for task in self.tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@dataclass(slots=True, eq=False)
class _FaceUi:
    method: str
    quit: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    quit_msg: str = ""
    # The result page after a face code: up (camera busy) until the second callback.
    result_page: bool = False


_Info = dict[str, str]
_Handler = Callable[[_Peer, int, Mapping[str, str]], Awaitable[_Info | None]]


@dataclass(frozen=True, slots=True)
class _Method:
    handler: _Handler
    since: tuple[int, ...] = ()
    before: tuple[int, ...] | None = None
    # The SimLatencies field that is all the handler ever waits for ("" when it also waits for
    # the face UI or a quit): at zero the call is answered without a task of its own.
    latency: str = ""


class SimTerminal:
    """A face peripheral with the WxPayFace SDK behind the bridge protocol."""

    def __init__(
        self,
        *,
        clock: Clock,
        sdk_version: str = "2.22.0",
        serial: str = "SIMFACE0001",
        model: str = "SimFace P1",
        face_app_version: str = "2.22.0",
        bridge_version: str = "1.0.0",
        latencies: SimLatencies = SimLatencies(),
        authinfo_valid: Callable[[str], bool] | None = None,
        default_user: SimUser = DEFAULT_USER,
    ) -> None:
        self._clock = clock
        self.sdk_version = sdk_version
        self._version = _parse_version(sdk_version)
        self.serial = serial
        self.model = model
        self.face_app_version = face_app_version
        self.bridge_version = bridge_version
        self.latencies = latencies
        self.authinfo_valid = authinfo_valid  # None: any non-empty authinfo is accepted
        self.default_user = default_user

        self.calls: collections.Counter[str] = collections.Counter()
        self.timeline: list[str] = []
        # Every call's params as they arrived (authinfo included: this is a test double), so
        # tests can check what reached the wire; bounded like a log.
        self.requests: collections.deque[tuple[str, dict[str, str]]] = collections.deque(
            maxlen=1000
        )
        # Called with each Call's method and params as the frame is read, before it is served:
        # the moment the call reached the peripheral (the benchmark's camera stamp).
        self.call_observers: list[Callable[[str, Mapping[str, str]], None]] = []
        self.initialized = False
        self.firewall: tuple[str, str] | None = None  # (mchId, subMchId) while enabled
        self.issued_face_codes: list[str] = []
        self.face_code_openids: dict[str, str] = {}  # so simulated WeChat Pay pays as this user
        self.connections_served = 0
        self.pings_answered = 0

        self._scripts: collections.deque[tuple[FaceOutcome, SimUser | None]] = collections.deque()
        self._init_initializing = 0
        self._init_failures = 0
        self._face_ui: _FaceUi | None = None
        # getWxpayfaceCode calls whose result page (and UPDATE_RESULT) waits for the pay result.
        self._awaiting_pay_result: collections.deque[tuple[_Peer, int, _FaceUi, str]] = (
            collections.deque()
        )
        self._frozen = False
        self._unfrozen = asyncio.Event()
        self._unfrozen.set()
        self._peers: set[_Peer] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._rng = random.Random()
        self._methods: dict[str, _Method] = {
            "initWxpayface": _Method(self._init, latency="init"),
            "getWxpayfaceRawdata": _Method(self._rawdata, latency="rawdata"),
            "getWxpayfaceCode": _Method(self._face_code),
            "getWxpayfaceUserInfo": _Method(self._user_info),
            "getUserPayScoreStatus": _Method(self._payscore_status),
            "updateWxpayfacePayResult": _Method(
                self._update_pay_result, before=_NO_UPDATE_PAY_RESULT_FROM, latency="other"
            ),
            "quitWxpayface": _Method(self._quit, since=_QUIT_FROM),
            "enableFirewall": _Method(self._enable_firewall, since=_FIREWALL_FROM, latency="other"),
            "disableFirewall": _Method(
                self._disable_firewall, since=_FIREWALL_FROM, latency="other"
            ),
            "releaseWxpayface": _Method(self._release, latency="release"),
        }

    # ------------------------------------------------------------------ scenarios

    def script(
        self, outcome: FaceOutcome | str, *, user: SimUser | None = None, times: int = 1
    ) -> None:
        """Queue how the next ``times`` face captures end (default afterwards: SUCCESS)."""
        chosen = outcome if isinstance(outcome, FaceOutcome) else FaceOutcome[outcome.upper()]
        for _ in range(times):
            self._scripts.append((chosen, user))

    def script_init(self, *, initializing_times: int = 0, fail_times: int = 0) -> None:
        """Next inits: 271378621 ``initializing_times`` times, then ERROR ``fail_times`` times."""
        self._init_initializing = initializing_times
        self._init_failures = fail_times

    def forget_init(self) -> None:
        """The SDK restarted underneath the daemon: later calls answer 271378620."""
        self.initialized = False

    def freeze(self) -> None:
        """Stop answering anything, pings included, while keeping every socket open."""
        self._frozen = True
        self._unfrozen.clear()

    def thaw(self) -> None:
        """Answer again, starting with whatever arrived while frozen."""
        self._frozen = False
        self._unfrozen.set()

    @property
    def face_ui_open(self) -> bool:
        """True while a face UI (camera) is up, its result page included."""
        return self._face_ui is not None

    @property
    def result_page_open(self) -> bool:
        """True while the result page after a face code is up (before the second callback)."""
        return self._face_ui is not None and self._face_ui.result_page

    @property
    def connections(self) -> int:
        """Bridge streams currently open."""
        return len(self._peers)

    async def drop_connections(self) -> None:
        """Close every bridge stream, as when the peripheral is unplugged or the bridge app dies."""
        peers = list(self._peers)
        self._peers.clear()
        for peer in peers:
            await peer.close()
        # Handlers (including ones already closing on their own) finish once their stream is
        # closed; wait for them so none outlives the simulator.
        current = asyncio.current_task()
        handlers = [task for task in self._handlers if task is not current]
        await asyncio.gather(*handlers, return_exceptions=True)

    # ------------------------------------------------------------------ service

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen for bridge connections on TCP; return the bound port."""
        self._server = await asyncio.start_server(self.handle_stream, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        """Stop listening and close every bridge stream."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self.drop_connections()
        if server is not None:
            await server.wait_closed()

    async def handle_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one bridge connection until either side closes it."""
        peer = _Peer(writer)
        self._peers.add(peer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        self.connections_served += 1
        frames = FrameReader(reader)
        try:
            await self._send(peer, bridge_pb2.Frame(hello=self._hello()))
            while not peer.closed.is_set():
                frame = await frames.read()
                if frame is None or not await self._gate(peer):
                    break
                kind = frame.WhichOneof("body")
                if kind == "ping":
                    self.pings_answered += 1
                    await self._send(
                        peer, bridge_pb2.Frame(pong=bridge_pb2.Pong(nonce=frame.ping.nonce))
                    )
                elif kind == "call":
                    call = frame.call
                    for observe in self.call_observers:
                        observe(call.method, call.params)
                    if self._answers_at_once(call.method):
                        # As the SDK answers it: in this turn, with no task to schedule first.
                        await self._serve_call(peer, call)
                    else:
                        task = asyncio.get_running_loop().create_task(self._serve_call(peer, call))
                        peer.tasks.add(task)
                        task.add_done_callback(peer.tasks.discard)
        except DeviceError:
            pass  # the daemon left mid-frame or sent garbage: drop the stream as the app would
        finally:
            self._peers.discard(peer)
            try:
                await peer.close()
            finally:
                self._handlers.discard(handler)

    # ------------------------------------------------------------------ plumbing

    def _hello(self) -> bridge_pb2.Hello:
        return bridge_pb2.Hello(
            protocol_version=PROTOCOL_VERSION,
            bridge_version=self.bridge_version,
            sdk_version=self.sdk_version,
            device_serial=self.serial,
            device_model=self.model,
            face_app_version=self.face_app_version,
        )

    def _answers_at_once(self, method: str) -> bool:
        """Whether a call waits for nothing (an instant latency, or a refusal)."""
        entry = self._methods.get(method)
        if entry is None:
            return True
        return bool(entry.latency) and getattr(self.latencies, entry.latency) <= 0

    async def _gate(self, peer: _Peer) -> bool:
        """Wait while frozen; False when the peer closed meanwhile."""
        if self._frozen:
            thawed = asyncio.ensure_future(self._unfrozen.wait())
            closed = asyncio.ensure_future(peer.closed.wait())
            try:
                await asyncio.wait((thawed, closed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                thawed.cancel()
                closed.cancel()
        return not peer.closed.is_set()

    async def _send(self, peer: _Peer, frame: bridge_pb2.Frame) -> None:
        # The gate is a coroutine and an Event check; only a frozen terminal needs to wait.
        if (self._frozen or peer.closed.is_set()) and not await self._gate(peer):
            return
        with contextlib.suppress(DeviceError):
            await write_frame(peer.writer, frame)

    async def _callback(
        self, peer: _Peer, call_id: int, info: _Info, kind: bridge_pb2.CallbackKind
    ) -> None:
        # Filled in place: Frame(callback=Callback(...)) would build the Callback twice.
        frame = bridge_pb2.Frame()
        callback = frame.callback
        callback.call_id = call_id
        callback.kind = kind
        callback.info.update(info)
        await self._send(peer, frame)

    async def _serve_call(self, peer: _Peer, call: bridge_pb2.Call) -> None:
        method = call.method
        self.calls[method] += 1
        self.timeline.append(method)
        params = dict(call.params)
        self.requests.append((method, params))
        try:
            info = await self._dispatch(peer, call.call_id, method, params)
        except _Refused as exc:
            log.debug("sim_call_refused", method=method, reason=str(exc))
            error = bridge_pb2.CallError(call_id=call.call_id, message=str(exc))
            await self._send(peer, bridge_pb2.Frame(call_error=error))
            return
        except Exception:
            log.exception("sim_call_failed", method=method)
            error = bridge_pb2.CallError(call_id=call.call_id, message="internal simulator error")
            await self._send(peer, bridge_pb2.Frame(call_error=error))
            return
        if info is not None:
            log.debug("sim_call_answered", method=method, return_code=info.get("return_code", ""))
            await self._callback(peer, call.call_id, info, bridge_pb2.CALLBACK_KIND_RESULT)

    async def _dispatch(
        self, peer: _Peer, call_id: int, method: str, params: Mapping[str, str]
    ) -> _Info | None:
        entry = self._methods.get(method)
        if entry is None:
            raise _Refused(f"unknown method {method!r}")
        too_old = self._version < entry.since
        too_new = entry.before is not None and self._version >= entry.before
        if too_old or too_new:
            raise _Refused(f"{method}: method not available in SDK {self.sdk_version}")
        return await entry.handler(peer, call_id, params)

    async def _wait(self, seconds: float) -> None:
        # ManualClock.sleep(0) would wait for the next advance(); zero means "answer now".
        if seconds > 0:
            await self._clock.sleep(seconds)

    async def _wait_or(self, seconds: float, event: asyncio.Event) -> bool:
        """Wait ``seconds`` unless ``event`` fires first; True if it fired."""
        if seconds <= 0 or event.is_set():
            return event.is_set()
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        fired = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((sleeper, fired), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            fired.cancel()
        return event.is_set()

    def _next_script(self) -> tuple[FaceOutcome, SimUser]:
        outcome, user = self._scripts.popleft() if self._scripts else (FaceOutcome.SUCCESS, None)
        return outcome, user or self.default_user

    def _authinfo_ok(self, authinfo: str) -> bool:
        if self.authinfo_valid is None:
            return bool(authinfo)
        return self.authinfo_valid(authinfo)

    async def _capture(self, method: str) -> tuple[FaceOutcome, SimUser] | _Info:
        """Open the face UI, wait the capture time; the scripted outcome or a quit answer."""
        if self._face_ui is not None:
            return _error(f"face UI already open ({self._face_ui.method})")
        ui = _FaceUi(method)
        self._face_ui = ui
        self.timeline.append("camera_open")
        try:
            if await self._wait_or(self.latencies.face_capture, ui.quit):
                return {"return_code": "USER_CANCEL", "return_msg": ui.quit_msg}
            return self._next_script()
        finally:
            self._face_ui = None
            ui.closed.set()

    # ------------------------------------------------------------------ SDK methods

    async def _init(self, _peer: _Peer, _call_id: int, params: Mapping[str, str]) -> _Info:
        for name in ("port", "tcp_port"):
            if params.get(name, "") and not _numeric(params[name]):
                return _param_error(f"{name} must be numeric")
        if params.get("proxy_type", "") not in ("", "0", "1", "2", "3"):
            return _param_error("proxy_type must be 0, 1, 2 or 3")
        if params.get("perform_mode", "") and params["perform_mode"] not in _PERFORM_MODES:
            return _param_error("perform_mode must be NORMAL_PRFORM or LOW_PERFORM")
        await self._wait(self.latencies.init)
        if self._init_initializing > 0:
            self._init_initializing -= 1
            return _error("face service is initializing, call init again", SDK_INITIALIZING)
        if self._init_failures > 0:
            self._init_failures -= 1
            return _error("face service failed to initialize")
        self.initialized = True
        return _success()

    async def _rawdata(self, _peer: _Peer, _call_id: int, _params: Mapping[str, str]) -> _Info:
        await self._wait(self.latencies.rawdata)
        if not self.initialized:
            return _not_initialized()
        rawdata = base64.b64encode(self._rng.randbytes(1200)).decode()  # 1600 chars <= 2048
        return {**_success(), "rawdata": rawdata}

    async def _face_code(
        self, peer: _Peer, call_id: int, params: Mapping[str, str]
    ) -> _Info | None:
        if not self.initialized:
            return _not_initialized()
        problem = _check_face_code_params(params)
        if problem is not None:
            return problem
        if not self._authinfo_ok(params["authinfo"]):
            return _error("authinfo invalid or expired")
        captured = await self._capture("getWxpayfaceCode")
        if isinstance(captured, dict):
            return captured
        outcome, user = captured
        if outcome not in (FaceOutcome.SUCCESS, FaceOutcome.USER_QUERY_CANCEL):
            return _face_failure(outcome)
        # The camera stays busy: the SDK's result page is up until the second callback.
        page = _FaceUi("getWxpayfaceCode", result_page=True)
        self._face_ui = page
        ui_result = outcome.value
        face_code = "13" + "".join(str(self._rng.randrange(10)) for _ in range(16))
        self.issued_face_codes.append(face_code)
        self.face_code_openids[face_code] = user.openid
        await self._callback(
            peer,
            call_id,
            {
                **_success(),
                "face_code": face_code,
                "openid": user.openid,
                "sub_openid": user.sub_openid,
                "underage_state": str(user.underage_state),
                # The JS reference: 1 when the telephone passed in was used.
                "telephone_used": "1" if params.get("telephone", "") else "0",
            },
            bridge_pb2.CALLBACK_KIND_RESULT,
        )
        self.timeline.append("result_page")
        old_sdk = self._version < _NO_UPDATE_PAY_RESULT_FROM
        if old_sdk and params.get("ignore_update_pay_result", "0") != "1":
            # Closed by updateWxpayfacePayResult (or a release).
            self._awaiting_pay_result.append((peer, call_id, page, ui_result))
            return None
        try:
            if await self._wait_or(self.latencies.update_result, page.quit):
                return None  # quit or released: the page closes without a second callback
            message = "payment result confirmed" if ui_result == "SUCCESS" else "user left"
            await self._update_callback(peer, call_id, message, ui_result)
        finally:
            self._close_page(page)
        return None

    def _close_page(self, page: _FaceUi) -> None:
        if self._face_ui is page:
            self._face_ui = None
            self.timeline.append("result_page_closed")
        page.closed.set()

    async def _user_info(self, _peer: _Peer, _call_id: int, params: Mapping[str, str]) -> _Info:
        if not self.initialized:
            return _not_initialized()
        for name in ("appid", "mch_id", "store_id", "face_authtype", "authinfo"):
            if not params.get(name, ""):
                return _param_error(f"missing required param {name}")
        if not self._authinfo_ok(params["authinfo"]):
            return _error("authinfo invalid or expired")
        captured = await self._capture("getWxpayfaceUserInfo")
        if isinstance(captured, dict):
            return captured
        outcome, user = captured
        if outcome not in (FaceOutcome.SUCCESS, FaceOutcome.USER_QUERY_CANCEL):
            return _face_failure(outcome)
        info = {
            **_success(),
            "openid": user.openid,
            "sub_openid": user.sub_openid,
            "nickname": user.nickname,
            "token": self._rng.randbytes(16).hex(),
            "unionid_code": "",
            "unionid_msg": "",
        }
        if params.get("ask_unionid", "") == "1":
            if user.unionid:
                info.update(unionid_code="SUCCESS", unionid_msg="SUCCESS")
            else:
                info.update(unionid_code="ERROR", unionid_msg="no unionid for this user")
        return info

    async def _payscore_status(
        self, _peer: _Peer, _call_id: int, params: Mapping[str, str]
    ) -> _Info:
        if not self.initialized:
            return _not_initialized()
        required = (
            "appid",
            "mch_id",
            "out_trade_no",
            "authinfo",
            "payscore_out_request_no",
            "payscore_service_id",
        )
        for name in required:
            if not params.get(name, ""):
                return _param_error(f"missing required param {name}")
        if params.get("ask_unionid", "") not in ("", "0", "1"):
            return _param_error("ask_unionid must be 0 or 1")
        if not self._authinfo_ok(params["authinfo"]):
            return _error("authinfo invalid or expired")
        captured = await self._capture("getUserPayScoreStatus")
        if isinstance(captured, dict):
            return captured
        outcome, user = captured
        if outcome not in (FaceOutcome.SUCCESS, FaceOutcome.USER_QUERY_CANCEL):
            return _face_failure(outcome)
        if not user.authorizes_payscore:
            if user.has_payscore:
                return _error("user declined to authorize the PayScore service")
            return _error("user did not enable PayScore")
        return {
            **_success(),
            "openid": user.openid,
            "sub_openid": user.sub_openid,
            "face_sid": self._rng.randbytes(16).hex(),
        }

    async def _update_pay_result(
        self, _peer: _Peer, _call_id: int, params: Mapping[str, str]
    ) -> _Info:
        if not self.initialized:
            return _not_initialized()
        for name in ("appid", "mch_id", "store_id", "authinfo", "payresult"):
            if not params.get(name, ""):
                return _param_error(f"missing required param {name}")
        if params["payresult"] not in ("SUCCESS", "ERROR"):
            return _param_error("payresult must be SUCCESS or ERROR")
        await self._wait(self.latencies.other)
        if not self._awaiting_pay_result:
            return _error("no face payment is waiting for its result")
        waiting_peer, waiting_call, page, ui_result = self._awaiting_pay_result.popleft()
        try:
            if not waiting_peer.closed.is_set():
                await self._update_callback(
                    waiting_peer, waiting_call, "payment result shown", ui_result
                )
        finally:
            self._close_page(page)
        if ui_result == FaceOutcome.USER_QUERY_CANCEL.value:
            # The reference's example: the answer itself says the user left before the result.
            return {"return_code": ui_result, "return_msg": "user left; confirm with the merchant"}
        return _success()

    async def _update_callback(
        self, peer: _Peer, call_id: int, message: str, return_code: str = "SUCCESS"
    ) -> None:
        info = {"return_code": return_code, "return_msg": message}
        await self._callback(peer, call_id, info, bridge_pb2.CALLBACK_KIND_UPDATE_RESULT)

    async def _quit(self, _peer: _Peer, _call_id: int, params: Mapping[str, str]) -> _Info:
        await self._wait(self.latencies.quit)
        ui = self._face_ui
        if ui is None:
            return {"return_code": "SUCCESS", "return_msg": "no face UI open"}
        ui.quit_msg = params.get("toast_text", "") or "merchant cancelled face recognition"
        ui.quit.set()
        self._drop_awaiting(ui)
        await ui.closed.wait()
        return _success()

    def _drop_awaiting(self, ui: _FaceUi) -> None:
        """A result page waiting for updateWxpayfacePayResult closes at once (quit, release)."""
        for entry in list(self._awaiting_pay_result):
            if entry[2] is ui:
                self._awaiting_pay_result.remove(entry)
                self._close_page(ui)

    async def _enable_firewall(
        self, _peer: _Peer, _call_id: int, params: Mapping[str, str]
    ) -> _Info:
        if not self.initialized:
            return _not_initialized()
        if not params.get("mchId", ""):
            return _param_error("missing required param mchId")
        await self._wait(self.latencies.other)
        self.firewall = (params["mchId"], params.get("subMchId", ""))
        return _success()

    async def _disable_firewall(
        self, _peer: _Peer, _call_id: int, _params: Mapping[str, str]
    ) -> _Info:
        if not self.initialized:
            return _not_initialized()
        await self._wait(self.latencies.other)
        self.firewall = None
        return _success()

    async def _release(self, _peer: _Peer, _call_id: int, _params: Mapping[str, str]) -> _Info:
        await self._wait(self.latencies.release)
        ui = self._face_ui
        if ui is not None:
            # Releasing frees the camera: an open face UI ends without a code.
            ui.quit_msg = "face service released"
            ui.quit.set()
        self.initialized = False
        for entry in list(self._awaiting_pay_result):
            self._close_page(entry[2])
        self._awaiting_pay_result.clear()
        return _success()


def _parse_version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.strip().split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _numeric(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _success() -> _Info:
    return {"return_code": "SUCCESS", "return_msg": "SUCCESS"}


def _error(message: str, err_code: str = "") -> _Info:
    info = {"return_code": "ERROR", "return_msg": message}
    if err_code:
        info["err_code"] = err_code
    return info


def _param_error(message: str) -> _Info:
    return {"return_code": "PARAM_ERROR", "return_msg": message}


def _not_initialized() -> _Info:
    return _error("face service not initialized, call initWxpayface", SDK_NOT_INITIALIZED)


def _face_failure(outcome: FaceOutcome) -> _Info:
    if outcome is FaceOutcome.USER_CANCEL:
        return {"return_code": "USER_CANCEL", "return_msg": "user cancelled face recognition"}
    if outcome is FaceOutcome.SCAN_PAYMENT:
        return {"return_code": "SCAN_PAYMENT", "return_msg": "user chose to scan a payment code"}
    if outcome is FaceOutcome.FACE_TIMEOUT:
        return _error("face recognition timed out")
    return _error("camera error: the camera could not be opened")


def _check_face_code_params(params: Mapping[str, str]) -> _Info | None:
    for name in ("appid", "mch_id", "store_id", "face_authtype", "authinfo", "face_code_type"):
        if not params.get(name, ""):
            return _param_error(f"missing required param {name}")
    if params["face_authtype"] not in _FACE_AUTHTYPES:
        return _param_error("face_authtype must be FACEPAY, FACEPAY_DELAY or FACE_AUTH")
    if params["face_code_type"] not in ("0", "1"):
        return _param_error("face_code_type must be 0 or 1")
    if params["face_code_type"] == "0":
        for name in ("out_trade_no", "total_fee"):
            if not params.get(name, ""):
                return _param_error(f"missing required param {name}")
    total_fee = params.get("total_fee", "")
    if total_fee and not _numeric(total_fee):
        return _param_error("total_fee must be numeric (fen)")
    if params.get("screen_index", "") not in ("", "0", "1", "2", "3", "4"):
        return _param_error("screen_index must be 0 to 4")
    if params.get("overlay_option", "") not in ("", "0", "1"):
        return _param_error("overlay_option must be 0 or 1")
    for name in ("ask_face_permit", "ask_ret_page", "ignore_update_pay_result"):
        if params.get(name, "") not in ("", "0", "1"):
            return _param_error(f"{name} must be 0 or 1")
    telephone = params.get("telephone", "")
    if telephone and not _numeric(telephone):
        return _param_error("telephone must be digits")
    return None
