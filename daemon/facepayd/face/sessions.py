"""Face sessions: one camera, held by one session from its claim to the end of the SDK's UI.

A session is an explicit state machine (SessionState + TRANSITIONS, one setter that logs). The
claim is synchronous, so it is atomic on the event loop: there is no gap between "is the camera
free" and "it is mine", and a caller that loses gets TerminalBusy before anything is written.
The session ends (the camera and screen are free) when the SDK's UI has closed: on SDK 2.13 and
later the updateResultWxpayfaceCallBack (SUCCESS or USER_QUERY_CANCEL), below 2.13 the
updateWxpayfacePayResult answer, or a quit, or the face timeout on the injected clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from facepayd.clock import Clock, race
from facepayd.device.sdk import (
    FaceCode,
    FaceCodeRequest,
    FaceMerchant,
    FaceUi,
    PayScoreStatus,
    PayScoreStatusRequest,
    Sdk,
    UiResult,
    UserInfo,
    UserInfoRequest,
)
from facepayd.errors import (
    AuthinfoRejected,
    DeviceError,
    DeviceLost,
    DeviceTimeout,
    FacepayError,
    FaceSessionEnded,
    NotFound,
    NotSupported,
    TerminalBusy,
    WrongState,
)
from facepayd.face.authinfo import AuthinfoCache
from facepayd.face.lifecycle import Lifecycle, State
from facepayd.ops.config import DeviceConfig, MerchantConfig

__all__ = [
    "SCAN_PAYMENT",
    "TRANSITIONS",
    "USER_CANCEL",
    "EndReason",
    "FaceOptions",
    "FaceSessions",
    "Session",
    "SessionEnd",
    "SessionState",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# return_code values with which the face UI ends without a result.
USER_CANCEL = "USER_CANCEL"
SCAN_PAYMENT = "SCAN_PAYMENT"


class SessionState(enum.Enum):
    """Where a face session stands."""

    CLAIMED = "CLAIMED"  # the camera is ours; the SDK is being prepared, no face UI yet
    FACE_UI = "FACE_UI"  # a face UI call is in flight: waiting for a face
    RESULT_PAGE = "RESULT_PAGE"  # the answer came back; the SDK's own page is still up
    QUITTING = "QUITTING"  # quitWxpayface sent; the UI is closing
    ENDED = "ENDED"  # the face UI has closed: camera and screen are free (final)


_S = SessionState
# Every state change a session may take; anything else is a bug, logged and refused.
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    # ENDED: the SDK could not be prepared, or the session was cancelled before its UI opened.
    _S.CLAIMED: frozenset({_S.FACE_UI, _S.ENDED}),
    _S.FACE_UI: frozenset({_S.RESULT_PAGE, _S.QUITTING, _S.ENDED}),
    _S.RESULT_PAGE: frozenset({_S.QUITTING, _S.ENDED}),
    _S.QUITTING: frozenset({_S.ENDED}),
    _S.ENDED: frozenset(),
}


class EndReason(enum.StrEnum):
    """Why the face UI closed; the SessionEnded.reason the POS sees."""

    RESULT_SHOWN = "RESULT_SHOWN"  # updateResultWxpayfaceCallBack SUCCESS (or the UI's answer)
    USER_QUERY_CANCEL = "USER_QUERY_CANCEL"  # the user left the result page before the outcome
    PAY_RESULT_REPORTED = "PAY_RESULT_REPORTED"  # below 2.13: updateWxpayfacePayResult answered
    QUIT = "QUIT"  # quitWxpayface closed it (POS cancel, hang-up, journal failure, stop)
    FACE_TIMEOUT = "FACE_TIMEOUT"  # the face deadline passed without the UI's end
    NO_FACE_CODE = "NO_FACE_CODE"  # the UI ended without a result (cancel, scan, error)
    DEVICE_LOST = "DEVICE_LOST"  # the peripheral went away


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """The end of a session's face UI: the screen is free for the next sale."""

    session_id: str
    reason: EndReason
    return_msg: str = ""


@dataclass(frozen=True, slots=True)
class FaceOptions:
    """How the face UI is shown (getWxpayfaceCode / getWxpayfaceUserInfo params)."""

    openid: str = ""
    screen_index: str = ""
    overlay_option: str = ""
    face_authtype: str = "FACEPAY"
    wait_if_busy: bool = False
    ask_unionid: bool = False
    # getWxpayfaceCode only (the reference lists them for no other face call).
    telephone: str = field(default="", repr=False)
    ask_face_permit: str = ""
    ask_ret_page: str = ""
    ignore_update_pay_result: str = ""
    face_code_type: str = "1"

    @property
    def ui(self) -> FaceUi:
        """The SDK's view of these options."""
        return FaceUi(self.face_authtype or "FACEPAY", self.screen_index, self.overlay_option)


class Session:
    """One face session holding the camera; its state changes only through _set."""

    def __init__(self, session_id: str, kind: str, out_trade_no: str = "") -> None:
        self.id = session_id
        self.kind = kind
        self.out_trade_no = out_trade_no
        self._state = SessionState.CLAIMED
        # Why a quit was asked (POS_CANCEL, SHUTDOWN, POS_HUNG_UP, JOURNAL_UNAVAILABLE).
        self.quit_reason = ""
        # The SDK's updateResultWxpayfaceCallBack, once it came.
        self.ui_result: UiResult | None = None
        loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[SessionEnd] = loop.create_future()
        # Resolves once the session leaves CLAIMED: its face UI call is on its way (or never
        # will be). Whatever can wait for the camera waits for this (the camera path).
        self.ui_requested: asyncio.Future[None] = loop.create_future()

    def __repr__(self) -> str:
        return f"Session({self.id!r}, {self.kind!r}, {self._state.value})"

    @property
    def state(self) -> SessionState:
        """The current state."""
        return self._state

    @property
    def end(self) -> SessionEnd | None:
        """How the UI ended, once it has."""
        return self.ended.result() if self.ended.done() else None

    def _set(self, new: SessionState) -> bool:
        """The one setter: checks the table, logs the change; an illegal change is refused."""
        old = self._state
        if new not in TRANSITIONS[old]:
            log.error(
                "session_transition_refused", session_id=self.id, old=old.value, new=new.value
            )
            return False
        self._state = new
        if old is SessionState.CLAIMED and not self.ui_requested.done():
            self.ui_requested.set_result(None)
        # Nothing is logged at info ahead of the getWxpayfaceCode frame (the camera path).
        camera_path = old is SessionState.CLAIMED and new is SessionState.FACE_UI
        emit = log.debug if camera_path else log.info
        emit("session_state", session_id=self.id, kind=self.kind, old=old.value, new=new.value)
        return True

    def _finish(self, reason: EndReason, return_msg: str = "") -> None:
        if self.ended.done():
            return
        if self._set(SessionState.ENDED):
            log.info("session_ended", session_id=self.id, kind=self.kind, reason=reason.value)
            self.ended.set_result(SessionEnd(self.id, reason, return_msg))


def _new_session_id() -> str:
    return "fs_" + secrets.token_hex(8)


class FaceSessions:
    """Grants the camera to one session at a time and runs the face UI calls on the typed SDK."""

    def __init__(
        self,
        *,
        lifecycle: Lifecycle,
        authinfo: AuthinfoCache,
        merchant: MerchantConfig,
        device: DeviceConfig,
        clock: Clock,
        new_id: Callable[[], str] = _new_session_id,
    ) -> None:
        self._lifecycle = lifecycle
        self._authinfo = authinfo
        self._merchant = FaceMerchant(
            appid=merchant.appid,
            mch_id=merchant.mch_id,
            store_id=merchant.store_id,
            sub_appid=merchant.sub_appid,
            sub_mch_id=merchant.sub_mch_id,
        )
        self._face_timeout = device.face_timeout
        self._clock = clock
        self._new_id = new_id
        self._active: Session | None = None
        self._waiters: collections.deque[tuple[asyncio.Future[Session], str, str]] = (
            collections.deque()
        )
        self.captures = 0
        self._end_listeners: list[Callable[[SessionEnd], None]] = []
        lifecycle.add_listener(self._on_lifecycle)

    @property
    def active(self) -> Session | None:
        """The session holding the camera, if any."""
        return self._active

    @property
    def face_timeout(self) -> float:
        """How long a face UI may stay up, on the injected clock."""
        return self._face_timeout

    def add_end_listener(self, listener: Callable[[SessionEnd], None]) -> None:
        """Call listener with every session's end (metrics), on the event loop."""
        self._end_listeners.append(listener)

    # ------------------------------------------------------------------ the camera

    def claim_now(self, kind: str, out_trade_no: str = "") -> Session:
        """Take the camera at once or raise TerminalBusy naming the holder (no await: atomic)."""
        holder = self._active
        if holder is not None:
            raise TerminalBusy(holder.id)
        return self._grant(kind, out_trade_no)

    async def claim(self, kind: str, *, wait: bool, out_trade_no: str = "") -> Session:
        """Take the camera; TerminalBusy unless the caller asked to wait for it (first come)."""
        if not wait or self._active is None:
            return self.claim_now(kind, out_trade_no)
        turn: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._waiters.append((turn, kind, out_trade_no))
        try:
            # _free hands the camera over directly, so nobody can take it in between.
            return await turn
        except BaseException:
            self._waiters = collections.deque(w for w in self._waiters if w[0] is not turn)
            if turn.done() and not turn.cancelled():
                self._free(turn.result())  # granted as we gave up: pass it on
            raise

    @contextlib.contextmanager
    def reserve(self, kind: str) -> Iterator[Session]:
        """Hold the camera for a short probe that opens no face UI; TerminalBusy when it is held.

        The same atomic claim as a session's, so no session starts meanwhile; nothing ends for
        it (no SessionEnd: it is not a face session).
        """
        session = self.claim_now(kind)
        try:
            yield session
        finally:
            self._free(session)

    def release_unused(self, session: Session) -> None:
        """Give back a claim that never opened a face UI (nothing was started for it)."""
        session._finish(EndReason.NO_FACE_CODE, "not used")
        self._free(session)

    @contextlib.asynccontextmanager
    async def hold(self, session: Session) -> AsyncIterator[Session]:
        """Hold the SDK for the session (init first; aggregate release only after its end)."""
        structlog.contextvars.bind_contextvars(session_id=session.id)
        try:
            async with self._lifecycle.session():
                try:
                    yield session
                finally:
                    # The UI's end comes before the lifecycle's release of the SDK.
                    self._fallback_finish(session)
        finally:
            self._fallback_finish(session)
            self._free(session)
            structlog.contextvars.unbind_contextvars("session_id")

    async def wait_end(self, session: Session, timeout: float | None = None) -> SessionEnd:
        """Wait for the UI's end, at most the face timeout on the clock; then FACE_TIMEOUT."""
        seconds = self._face_timeout if timeout is None else timeout
        if not await race(self._clock, session.ended, seconds):
            log.warning("session_end_timeout", session_id=session.id, state=session.state.value)
            session._finish(EndReason.FACE_TIMEOUT, "the face UI did not close in time")
        return session.ended.result()

    # ------------------------------------------------------------------ face UI calls

    async def capture(
        self, session: Session, options: FaceOptions, *, out_trade_no: str, total_fee: int
    ) -> FaceCode:
        """Open the face UI and return a face code (getWxpayfaceCode); ends the session on error."""

        async def call(authinfo: str, sdk: Sdk) -> FaceCode:
            request = FaceCodeRequest(
                merchant=self._merchant,
                authinfo=authinfo,
                ui=options.ui,
                out_trade_no=out_trade_no,
                total_fee=total_fee,
                openid=options.openid,
                telephone=options.telephone,
                ask_face_permit=options.ask_face_permit,
                ask_ret_page=options.ask_ret_page,
                ignore_update_pay_result=options.ignore_update_pay_result or "0",
                face_code_type=options.face_code_type or "1",
            )
            return await sdk.get_face_code(
                request,
                on_ui_result=lambda result: self._on_ui_result(session, result),
                on_listening=lambda stop: _stop_at_end(session, stop),
            )

        code = await self._face_call(session, "getWxpayfaceCode", call)
        if session.state is not SessionState.FACE_UI:
            # A quit was sent while the code was on its way: the POS no longer wants it.
            raise FaceSessionEnded("getWxpayfaceCode", session.quit_reason or "QUIT", "quit")
        session._set(SessionState.RESULT_PAGE)
        self.captures += 1
        if session.ui_result is not None:
            self._on_ui_result(session, session.ui_result)
        return code

    async def user_info(self, session: Session, options: FaceOptions) -> UserInfo:
        """Identify the user by face (getWxpayfaceUserInfo); the UI closes with the answer."""

        async def call(authinfo: str, sdk: Sdk) -> UserInfo:
            request = UserInfoRequest(
                merchant=self._merchant,
                authinfo=authinfo,
                ui=options.ui,
                ask_unionid=options.ask_unionid,
            )
            return await sdk.get_user_info(request)

        info = await self._face_call(session, "getWxpayfaceUserInfo", call)
        session._finish(EndReason.RESULT_SHOWN)
        return info

    async def payscore_status(
        self,
        session: Session,
        options: FaceOptions,
        *,
        out_trade_no: str,
        out_request_no: str,
        service_id: str,
    ) -> PayScoreStatus:
        """getUserPayScoreStatus; SUCCESS and ERROR are answers, the rest FaceSessionEnded."""

        async def call(authinfo: str, sdk: Sdk) -> PayScoreStatus:
            request = PayScoreStatusRequest(
                merchant=self._merchant,
                authinfo=authinfo,
                out_trade_no=out_trade_no,
                out_request_no=out_request_no,
                service_id=service_id,
                ask_unionid=options.ask_unionid,
            )
            return await sdk.get_payscore_status(request)

        status = await self._face_call(session, "getUserPayScoreStatus", call)
        session._finish(EndReason.RESULT_SHOWN, status.return_msg)
        return status

    async def report_pay_result(self, session: Session, success: bool) -> bool:
        """Below SDK 2.13: tell the UI the result; its answer ends the session. False from 2.13."""
        if not self._lifecycle.version.has_update_pay_result:
            return False
        if session.state is not SessionState.RESULT_PAGE:
            raise WrongState(
                f"face session {session.id} is {session.state.value}, not showing a result"
            )
        authinfo = await self._authinfo.get()
        shown = await self._lifecycle.run(
            lambda sdk: sdk.update_pay_result(self._merchant, authinfo, success=success)
        )
        # Below 2.13 this answer is the UI's result (the capture stream reports it as such).
        session.ui_result = shown
        if shown.user_query_cancel:
            session._finish(EndReason.USER_QUERY_CANCEL, shown.return_msg)
        else:
            session._finish(EndReason.PAY_RESULT_REPORTED, shown.return_msg)
        return True

    async def cancel(self, session_id: str, toast_text: str) -> str:
        """Quit the face UI of the named (or current) session (CancelSession)."""
        session = self._active
        if session is None or (session_id and session.id != session_id):
            raise NotFound(
                f"no face session {session_id}".rstrip() if session_id else "no face session"
            )
        await self.quit(session, "POS_CANCEL", toast_text)
        return session.id

    async def quit(self, session: Session, reason: str, toast_text: str = "") -> None:
        """quitWxpayface (SDK 2.22 and later) for this session; its answer ends the session."""
        if session.state is SessionState.ENDED:
            return
        if not self._lifecycle.version.has_quit:
            raise NotSupported("quitWxpayface needs SDK 2.22 or later")
        session.quit_reason = session.quit_reason or reason
        if session.state is SessionState.CLAIMED:
            # Its UI has not opened yet: the session ends before it does.
            session._finish(EndReason.QUIT, reason)
            return
        if session.state is not SessionState.QUITTING:
            session._set(SessionState.QUITTING)
        await self._lifecycle.run(lambda sdk: sdk.quit(toast_text))
        session._finish(EndReason.QUIT, reason)

    async def quit_if_open(self, session: Session, reason: str, toast_text: str = "") -> bool:
        """Quit the session's UI when the SDK can; False when it cannot (it keeps waiting)."""
        if session.state is SessionState.ENDED or not self._lifecycle.version.has_quit:
            return False
        try:
            await self.quit(session, reason, toast_text)
        except FacepayError as exc:
            log.warning("quit_failed", session_id=session.id, reason=reason, error=exc.reason)
            return False
        return True

    async def quit_for_shutdown(self) -> None:
        """Close a face UI still waiting for a face, so that stopping waits on nobody."""
        session = self._active
        if session is None or session.state is not SessionState.FACE_UI:
            return
        await self.quit_if_open(session, "SHUTDOWN")

    # ------------------------------------------------------------------ private

    def _grant(self, kind: str, out_trade_no: str) -> Session:
        session = Session(self._new_id(), kind, out_trade_no)
        session.ended.add_done_callback(self._on_end)
        self._active = session
        log.debug("session_claimed", session_id=session.id, kind=kind)
        return session

    def _free(self, session: Session) -> None:
        if self._active is not session:
            return
        self._active = None
        log.info("session_freed", session_id=session.id)
        while self._waiters:
            turn, kind, out_trade_no = self._waiters.popleft()
            if not turn.done():
                turn.set_result(self._grant(kind, out_trade_no))
                return

    def _on_end(self, ended: asyncio.Future[SessionEnd]) -> None:
        if ended.cancelled():
            return
        for listener in list(self._end_listeners):
            try:
                listener(ended.result())
            except Exception:
                log.exception("session_end_listener_failed")

    def _fallback_finish(self, session: Session) -> None:
        """End a session its flow left without an end (an error, a crash, a stop)."""
        if session.ended.done():
            return
        state = session.state
        if state is SessionState.QUITTING:
            reason = EndReason.QUIT
        elif self._lifecycle.state in (State.FAULT, State.DISCONNECTED):
            reason = EndReason.DEVICE_LOST
        elif state is SessionState.RESULT_PAGE:
            reason = EndReason.FACE_TIMEOUT
        else:
            reason = EndReason.NO_FACE_CODE
        session._finish(reason, "the face session stopped")

    def _on_ui_result(self, session: Session, result: UiResult) -> None:
        """updateResultWxpayfaceCallBack: from 2.13 the SDK's result page has closed."""
        session.ui_result = result
        if session.state not in (SessionState.RESULT_PAGE, SessionState.QUITTING):
            return  # before the code was handled; applied once it is
        if self._lifecycle.version.has_update_pay_result:
            return  # below 2.13 the updateWxpayfacePayResult answer ends the session
        if result.user_query_cancel:
            session._finish(EndReason.USER_QUERY_CANCEL, result.return_msg)
        else:
            session._finish(EndReason.RESULT_SHOWN, result.return_msg)

    def _on_lifecycle(self) -> None:
        session = self._active
        if session is None or session.ended.done():
            return
        lost = self._lifecycle.state in (State.FAULT, State.DISCONNECTED)
        # A face call in flight fails on its own; a result page cannot end any more.
        if lost and session.state is SessionState.RESULT_PAGE:
            session._finish(EndReason.DEVICE_LOST, self._lifecycle.fault)

    async def _face_call(
        self, session: Session, method: str, call: Callable[[str, Sdk], Awaitable[T]]
    ) -> T:
        _require_unopened(session, method)
        authinfo = await self._authinfo.get()
        _require_unopened(session, method)
        session._set(SessionState.FACE_UI)
        for attempt in (1, 2):
            try:
                return await self._lifecycle.run(functools.partial(call, authinfo))
            except AuthinfoRejected:
                if attempt == 2:
                    session._finish(EndReason.NO_FACE_CODE, "authinfo rejected")
                    raise
                log.info("authinfo_rejected_by_sdk", method=method)
                authinfo = await self._authinfo.replace(authinfo)
            except FaceSessionEnded as exc:
                quitting = session.state is SessionState.QUITTING
                session._finish(
                    EndReason.QUIT if quitting else EndReason.NO_FACE_CODE, exc.return_msg
                )
                if session.quit_reason:
                    raise FaceSessionEnded(
                        method, session.quit_reason, exc.return_msg, exc.err_code
                    ) from exc
                raise
            except DeviceTimeout:
                session._finish(EndReason.FACE_TIMEOUT, "no answer from the face UI in time")
                raise
            except DeviceLost:
                session._finish(EndReason.DEVICE_LOST, "the peripheral went away")
                raise
            except DeviceError as exc:
                session._finish(EndReason.NO_FACE_CODE, str(exc))
                raise
        raise AssertionError("unreachable")


def _stop_at_end(session: Session, stop: Callable[[], None]) -> None:
    """Stop listening for the SDK's result callback when the session ends, heard or not."""
    # A capture quit after its code, or whose result page times out, never gets the callback:
    # its listener (holding this session) would otherwise stay for the connection's lifetime.
    if session.ended.done():
        stop()
    else:
        session.ended.add_done_callback(lambda _: stop())


def _require_unopened(session: Session, method: str) -> None:
    """A session cancelled before its UI opened never opens it."""
    if session.state is not SessionState.CLAIMED:
        raise FaceSessionEnded(method, session.quit_reason or "QUIT", "cancelled before start")
