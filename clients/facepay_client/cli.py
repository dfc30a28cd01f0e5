"""The `facepay` command line: drive and inspect facepayd over its Unix socket.

Output is aligned `key: value` lines (payment events one line each) or, with --json, one JSON
object per line (proto3 JSON mapping with field names as in the proto, but int64 fields as JSON
numbers and enums by their short names as in the text output, READY not LIFECYCLE_STATE_READY;
errors as {"error": ...}). `watch` lines start with the local time they were received.

While a payment waits, stderr gets a progress line every --progress seconds: the time since the
command started and what facepayd last said it is doing, from the progress it streams
("querying WeChat Pay (3)", "waiting to reverse (12 s)"). With --json too they go to stderr only:
stdout carries the events, never progress.

stdout closed by its reader (`facepay status | head -1`) is not an error: `watch` stops with 0;
`pay` and `payment watch` follow the payment to its end silently and exit as they would have.

Exit codes (ExitCode below is the one table):

    0    ok; a payment or a refund ended SUCCEEDED; a PayScore check ended SUCCESS
    1    a payment ended FAILED, REVERSED, CANCELLED or CLOSED, a refund FAILED, CLOSED or
         CHANGE, or either needs an operator
         (NEEDS_ATTENTION: its reason and action are printed); a face session ended without a code;
         a PayScore check ended otherwise; any other error
    2    usage error
    3    terminal busy (the session holding the camera is printed)
    4    device problem: SDK_NOT_READY, DEVICE_LOST, DEVICE_TIMEOUT, SDK_ERROR,
         NOT_SUPPORTED_BY_SDK
    5    backend problem: BACKEND_UNAVAILABLE, BACKEND_RESPONSE_NOT_TRUSTED, BACKEND_REJECTED
    6    invalid argument (each field violation is printed)
    7    not found, already exists, or a PayScore order in the wrong state
    8    daemon unreachable, not answering in time, or starting/stopping
    130  interrupted (Ctrl-C). A payment goes on in the daemon: `pay` and `payment watch`
         print the `facepay payment watch OUT_TRADE_NO` line that follows it again

face_code is printed by `capture` only (the POS asked for it) and never anywhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import math
import os
import secrets
import shlex
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from importlib import metadata
from typing import Any, Protocol, TextIO

from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from facepay.terminal.v1 import terminal_pb2
from facepay_client import completion
from facepay_client.client import (
    DEFAULT_SOCKET_PATH,
    AlreadyExistsError,
    BackendError,
    DaemonUnavailableError,
    DeviceError,
    FacepayClientError,
    InvalidArgumentError,
    NotFoundError,
    OrderStateError,
    TerminalBusyError,
    TerminalClient,
)

__all__ = ["ExitCode", "ProgressClock", "main", "main_async"]


class ExitCode(IntEnum):
    """What the process exit status means; the module docstring says the same."""

    OK = 0
    FAILED = 1
    USAGE = 2
    BUSY = 3
    DEVICE = 4
    BACKEND = 5
    INVALID_ARGUMENT = 6
    CONFLICT = 7
    UNREACHABLE = 8
    INTERRUPTED = 130


_EXIT_BY_ERROR: tuple[tuple[type[FacepayClientError], ExitCode], ...] = (
    (TerminalBusyError, ExitCode.BUSY),
    (DeviceError, ExitCode.DEVICE),
    (BackendError, ExitCode.BACKEND),
    (InvalidArgumentError, ExitCode.INVALID_ARGUMENT),
    (NotFoundError, ExitCode.CONFLICT),
    (AlreadyExistsError, ExitCode.CONFLICT),
    (OrderStateError, ExitCode.CONFLICT),
    (DaemonUnavailableError, ExitCode.UNREACHABLE),
)

_EXIT_BY_FINAL_STATE: dict[int, ExitCode] = {
    terminal_pb2.PAYMENT_STATE_SUCCEEDED: ExitCode.OK,
    terminal_pb2.PAYMENT_STATE_FAILED: ExitCode.FAILED,
    terminal_pb2.PAYMENT_STATE_REVERSED: ExitCode.FAILED,
    terminal_pb2.PAYMENT_STATE_CANCELLED: ExitCode.FAILED,
    terminal_pb2.PAYMENT_STATE_CLOSED: ExitCode.FAILED,
    # Not final, but the stream ends there: an operator has to act.
    terminal_pb2.PAYMENT_STATE_NEEDS_ATTENTION: ExitCode.FAILED,
}

_EXIT_BY_REFUND_STATE: dict[int, ExitCode] = {
    terminal_pb2.REFUND_STATE_SUCCEEDED: ExitCode.OK,
    terminal_pb2.REFUND_STATE_CLOSED: ExitCode.FAILED,
    terminal_pb2.REFUND_STATE_CHANGE: ExitCode.FAILED,
    terminal_pb2.REFUND_STATE_FAILED: ExitCode.FAILED,
    terminal_pb2.REFUND_STATE_NEEDS_ATTENTION: ExitCode.FAILED,
}
# What the daemon is doing in each refund state that waits, as the progress line says it.
_REFUND_DOING: dict[int, str] = {
    terminal_pb2.REFUND_STATE_UNSPECIFIED: "waiting for facepayd",
    terminal_pb2.REFUND_STATE_RECORDED: "the refund is recorded; sending it to WeChat Pay",
    terminal_pb2.REFUND_STATE_SENDING: "waiting for WeChat Pay to take the refund (queried, never"
    " sent twice)",
    terminal_pb2.REFUND_STATE_PROCESSING: "WeChat Pay is refunding; facepayd queries it until it"
    " ends",
}

_Handler = Callable[[TerminalClient, argparse.Namespace, "_Output"], Awaitable[int]]

_DISTRIBUTION = "facepay-terminal"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one facepay command; returns the exit code."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    out = _Output(args.json, sys.stdout, sys.stderr)
    try:
        return asyncio.run(_run(args, out))
    except KeyboardInterrupt:
        _interrupted(out, args, args.following)
        return ExitCode.INTERRUPTED


async def main_async(argv: Sequence[str], *, clock: ProgressClock | None = None) -> int:
    """main() on the running event loop, its progress line timed by clock (tests, embedding)."""
    args = _parse(argv, clock)
    if isinstance(args, int):
        return args
    return await _run(args, _Output(args.json, sys.stdout, sys.stderr))


def _parse(
    argv: Sequence[str] | None, clock: ProgressClock | None = None
) -> argparse.Namespace | int:
    """The parsed command line, or the exit code when there is nothing to run."""
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as exc:
        # argparse exits 0 for --help and 2 for usage errors; main() returns instead of exiting.
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    args.following = _Following()
    args.clock = clock or _SystemClock()
    return args


def _version() -> str:
    try:
        return metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


@dataclass
class _Following:
    """The payment this command follows, for the line that follows it again after Ctrl-C."""

    out_trade_no: str = ""
    last_seq: int = 0
    captured: bool = False  # a face code was taken: the face UI no longer waits for one

    def seen(self, event: terminal_pb2.PaymentEvent) -> None:
        self.last_seq = event.seq
        if event.state not in (
            terminal_pb2.PAYMENT_STATE_UNSPECIFIED,
            terminal_pb2.PAYMENT_STATE_CAPTURING,
        ):
            self.captured = True


def _interrupted(out: _Output, args: argparse.Namespace, following: _Following) -> None:
    rerun = getattr(args, "refund_rerun", "")
    if rerun:
        out.note("interrupted; the refund may go on in facepayd (not cancelled)")
        _say_refund_rerun(out, rerun)
        return
    if not following.out_trade_no:
        out.note("interrupted")
        return
    if following.last_seq == 0 and args.command in ("pay", "code-pay"):
        # Nothing streamed yet: the daemon may or may not have taken the order.
        out.note(f"interrupted before facepayd confirmed payment {following.out_trade_no}")
        look = _command(args, "payment", "get", following.out_trade_no)
        out.note(f"if it did, it goes on; look with: {look}")
        return
    out.note(f"interrupted; payment {following.out_trade_no} goes on in facepayd (not cancelled)")
    if not following.captured and args.command == "pay":
        out.note("the face UI stays up until a face is captured or `facepay cancel` quits it")
    out.note(f"follow it with: {_watch_command(args, following.out_trade_no, following.last_seq)}")


def _watch_command(args: argparse.Namespace, out_trade_no: str, last_seq: int) -> str:
    """The command that re-attaches to a payment after its last event seen."""
    after = ["--after-seq", str(last_seq)] if last_seq else []
    return _command(args, "payment", "watch", out_trade_no, *after)


def _command(args: argparse.Namespace, *words: str) -> str:
    """A facepay command line to print, with the socket if it is not the default one."""
    socket = ["--socket", args.socket] if args.socket != _default_socket() else []
    return shlex.join(["facepay", *socket, *words])


def _default_socket() -> str:
    return os.environ.get("FACEPAY_SOCKET") or DEFAULT_SOCKET_PATH


async def _run(args: argparse.Namespace, out: _Output) -> int:
    handler: _Handler = args.handler
    client = TerminalClient(args.socket, timeout=args.timeout, wait_for_ready=args.wait)
    try:
        async with client:
            if args.wait:
                await client.wait_until_serving(args.timeout)
            return await handler(client, args, out)
    except FacepayClientError as exc:
        return out.error(exc, args.socket)


# ---------------------------------------------------------------- output


class _Output:
    """Readable or JSON-lines output; everything the CLI prints goes through here."""

    def __init__(self, json_mode: bool, out: TextIO, err: TextIO) -> None:
        self.json_mode = json_mode
        self._out = out
        self._err = err
        self.closed = False  # stdout's reader went away (`| head -1`): nothing more goes there

    def _write(self, text: str) -> None:
        if self.closed:
            return
        try:
            print(text, file=self._out, flush=True)
        except BrokenPipeError:
            self.closed = True
            _discard(self._out)

    def _write_err(self, text: str) -> None:
        # A closed stderr leaves nobody to tell: the exit code still says how it ended.
        with contextlib.suppress(BrokenPipeError):
            print(text, file=self._err, flush=True)

    def message(self, msg: Message) -> None:
        """One message: a JSON line, or aligned key: value lines."""
        if self.json_mode:
            self.record(_to_json(msg))
        else:
            self.pairs(_flatten(msg))

    def record(self, obj: dict[str, Any]) -> None:
        """One JSON line (JSON mode only)."""
        self._write(json.dumps(obj, ensure_ascii=False, sort_keys=True))

    def pairs(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Aligned key: value lines (readable mode only)."""
        width = max((len(key) for key, _ in pairs), default=0) + 1
        for key, value in pairs:
            self._write(f"{key + ':':<{width}} {value}")

    def line(self, text: str) -> None:
        """One readable line on stdout."""
        self._write(text)

    def note(self, text: str) -> None:
        """A remark for the person at the terminal, on stderr."""
        self._write_err(f"facepay: {text}")

    def error(self, exc: FacepayClientError, socket_path: str) -> int:
        """Print a failed call and return its exit code."""
        code = _exit_code_for(exc)
        if self.json_mode:
            self.record(
                {
                    "error": {
                        "code": exc.code.name,
                        "reason": exc.reason,
                        "message": exc.message,
                        "field_violations": [
                            {"field": field, "description": description}
                            for field, description in exc.field_violations
                        ],
                        "metadata": exc.metadata,
                    },
                    "exit_code": int(code),
                }
            )
            return code
        if isinstance(exc, DaemonUnavailableError) and not exc.reason:
            self.note(f"cannot reach facepayd at {socket_path}: {exc}")
        else:
            self.note(str(exc))
        for field, description in exc.field_violations:
            self._write_err(f"  - {field}: {description}")
        for key, value in sorted(exc.metadata.items()):
            self._write_err(f"  {key}: {value}")
        return code


def _discard(stream: TextIO) -> None:
    """Point a broken stream's descriptor at /dev/null, so the flush at exit cannot fail again."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (tests): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _exit_code_for(exc: FacepayClientError) -> ExitCode:
    for cls, code in _EXIT_BY_ERROR:
        if isinstance(exc, cls):
            return code
    return ExitCode.FAILED


_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _to_json(msg: Message) -> dict[str, Any]:
    """The proto3 JSON mapping, but int64 as numbers and enums by their short names."""
    converted: dict[str, Any] = json_format.MessageToDict(
        msg, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    return _plain_json(msg.DESCRIPTOR, converted)


def _plain_json(descriptor: Any, obj: dict[str, Any]) -> dict[str, Any]:
    for name, value in obj.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        if field.message_type is not None:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue  # well-known types keep their own JSON form (Timestamp: RFC 3339)
            if field.is_repeated:
                obj[name] = [_plain_json(field.message_type, item) for item in value]
            else:
                obj[name] = _plain_json(field.message_type, value)
        elif field.is_repeated:
            obj[name] = [_plain_scalar(field, item) for item in value]
        else:
            obj[name] = _plain_scalar(field, value)
    return obj


def _plain_scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.enum_type is not None and isinstance(value, str):
        number = field.enum_type.values_by_name[value].number
        return _enum_text(field.enum_type, number)
    if field.type in _INT64_TYPES:
        return int(value)
    return value


def _flatten(msg: Message, prefix: str = "") -> list[tuple[str, str]]:
    """A message as (dotted key, text) pairs; empty strings and unset messages left out."""
    pairs: list[tuple[str, str]] = []
    for field in msg.DESCRIPTOR.fields:
        key = prefix + field.name
        value = getattr(msg, field.name)
        if field.is_repeated:
            if field.message_type is not None:
                for index, item in enumerate(value):
                    pairs.extend(_flatten(item, f"{key}[{index}]."))
            elif value:
                pairs.append((key, ", ".join(_scalar_text(field, item) for item in value)))
        elif field.message_type is not None:
            if not msg.HasField(field.name):
                continue
            if field.message_type.full_name == "google.protobuf.Timestamp":
                pairs.append((key, _time_text(value)))
            else:
                pairs.extend(_flatten(value, key + "."))
        elif value != "":
            pairs.append((key, _scalar_text(field, value)))
    return pairs


def _scalar_text(field: Any, value: Any) -> str:
    if field.enum_type is not None:
        return _enum_text(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "yes" if value else "no"
    return str(value)


def _enum_text(enum: EnumDescriptor, number: int) -> str:
    """The value's name without its enum's prefix: LIFECYCLE_STATE_READY → READY."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
    return value.name.removeprefix(prefix)


def _time_text(timestamp: Any) -> str:
    moment: datetime = timestamp.ToDatetime(tzinfo=UTC)
    return moment.astimezone().isoformat(timespec="seconds")


def _inline(pairs: Sequence[tuple[str, str]]) -> str:
    return " ".join(f"{key}={json.dumps(value) if ' ' in value else value}" for key, value in pairs)


def _redacted_event(event: terminal_pb2.PaymentEvent) -> terminal_pb2.PaymentEvent:
    """The event without its face_code: only `capture` prints one."""
    if event.HasField("face_captured") and event.face_captured.face_code:
        copy = terminal_pb2.PaymentEvent()
        copy.CopyFrom(event)
        copy.face_captured.ClearField("face_code")
        return copy
    return event


def _print_event(out: _Output, event: terminal_pb2.PaymentEvent) -> None:
    event = _redacted_event(event)
    if out.json_mode:
        out.record(_to_json(event))
        return
    state = _enum_text(terminal_pb2.PaymentState.DESCRIPTOR, event.state)
    kind = event.WhichOneof("kind") or "-"
    when = _time_text(event.time) if event.HasField("time") else "-"
    detail = _flatten(getattr(event, kind)) if kind != "-" else []
    out.line(f"#{event.seq:<3} {when}  {state:<10} {kind:<16} {_inline(detail)}".rstrip())


class ProgressClock(Protocol):
    """The time the progress line is measured in (a test hands in its simulated clock)."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class _SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# What the progress line says where facepayd streams no progress of its own.
_WAITING_FOR_DAEMON = "waiting for facepayd"
_WAITING_FOR_FACE = "the face UI waits for the customer's face"
_WAITING_FOR_UI = "waiting for the face UI to close"


def _progress_text(progress: terminal_pb2.PaymentProgress, now: float) -> str:
    """What facepayd said it is doing, as the progress line says it."""
    attempt, reason = progress.attempt, progress.reason
    left = ""
    if progress.HasField("next_at"):
        left = _left_text(progress.next_at.ToNanoseconds() / 1e9 - now)
    match progress.activity:
        case "PAYING":
            return "sending the payment to WeChat Pay"
        case "QUERYING":
            return f"querying WeChat Pay ({attempt})"
        case "WAITING_TO_QUERY":
            if reason == "USERPAYING":
                why = "the payer confirms on their phone (USERPAYING)"
            else:
                why = f"no answer yet ({reason or 'unknown'})"
            return f"{why}; querying WeChat Pay ({attempt}) in {left}"
        case "REVERSING":
            return f"reversing the payment with WeChat Pay ({attempt})"
        case "WAITING_TO_REVERSE":
            return f"waiting to reverse ({left})"
        case "RETRYING":
            return f"trying again in {left} ({reason or 'no reason given'})"
    # An activity newer than this client: still say something true.
    return f"{progress.activity.lower().replace('_', ' ')} ({attempt})"


class _Progress:
    """Every `every` seconds a stderr line: time since the command started, what facepayd does.

    What it does comes from the progress facepayd streams; between a new state's event and its
    first progress notice the line names the state.
    """

    def __init__(self, out: _Output, every: float, clock: ProgressClock) -> None:
        self._out = out
        self._every = every
        self._clock = clock
        self._started = clock.monotonic()
        self._state = terminal_pb2.PAYMENT_STATE_UNSPECIFIED
        self._fixed: str | None = _WAITING_FOR_DAEMON
        self._reason = ""
        self._latest: terminal_pb2.PaymentProgress | None = None

    def event(self, event: terminal_pb2.PaymentEvent) -> None:
        """A journaled event: a new state makes older progress stale."""
        if event.state != self._state:
            self._latest = None
        self._state = event.state
        if event.state == terminal_pb2.PAYMENT_STATE_CAPTURING:
            self._fixed = _WAITING_FOR_FACE
        elif event.state in _EXIT_BY_FINAL_STATE:
            # The stream stays open for the face UI's end; nothing more to report meanwhile.
            self._fixed = _WAITING_FOR_UI
        else:
            self._fixed = None
            self._reason = _event_reason(event)

    def update(self, progress: terminal_pb2.PaymentProgress) -> None:
        """facepayd's newest word on what it is doing."""
        if self._fixed == _WAITING_FOR_UI:
            return  # the payment is over; a late notice says nothing new
        self._latest = progress
        self._fixed = None
        self._state = progress.state

    def say(self, text: str) -> None:
        """A fixed text for the line (a flow with no streamed progress, such as a refund)."""
        self._fixed = text

    def text(self) -> str:
        """The line's text, now."""
        if self._fixed is not None:
            return self._fixed
        if self._latest is not None:
            return _progress_text(self._latest, self._clock.time())
        state = _enum_text(terminal_pb2.PaymentState.DESCRIPTOR, self._state)
        return f"{state} ({self._reason})" if self._reason else state

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[_Progress]:
        """Print progress lines while the body runs."""
        if self._every <= 0:
            yield self
            return
        ticker = asyncio.create_task(self._tick())
        try:
            yield self
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _tick(self) -> None:
        while True:
            await self._clock.sleep(self._every)
            elapsed = _elapsed_text(self._clock.monotonic() - self._started)
            self._out.note(f"{elapsed}: {self.text()}…")


def _event_reason(event: terminal_pb2.PaymentEvent) -> str:
    kind = event.WhichOneof("kind")
    return str(getattr(getattr(event, kind), "reason", "")) if kind else ""


def _left_text(seconds: float) -> str:
    """A countdown in whole seconds, rounded up: "in 0 s" only once it is due."""
    whole = max(0, math.ceil(seconds))
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _elapsed_text(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


async def _follow_payment(
    out: _Output,
    args: argparse.Namespace,
    responses: AsyncGenerator[
        terminal_pb2.WatchPaymentResponse | terminal_pb2.StartCodePayResponse, None
    ],
) -> int:
    """Print events up to the final state; the exit code says how the payment ended."""
    following: _Following = args.following
    progress = _Progress(out, args.progress, args.clock)
    async with aclosing(responses), progress.running():
        async for response in responses:
            if response.HasField("progress"):
                progress.update(response.progress)
                continue
            event = response.event
            following.seen(event)
            progress.event(event)
            _print_event(out, event)
            if event.state in _EXIT_BY_FINAL_STATE:
                return _EXIT_BY_FINAL_STATE[event.state]
    return _ended_early(out, args, following)


async def _follow_face_pay(
    out: _Output,
    args: argparse.Namespace,
    responses: AsyncGenerator[terminal_pb2.StartFacePayResponse, None],
) -> int:
    """Print events and the face UI's end until the stream ends; the final state is the code."""
    following: _Following = args.following
    exit_code: int | None = None
    progress = _Progress(out, args.progress, args.clock)
    async with aclosing(responses), progress.running():
        async for response in responses:
            if response.HasField("session_ended"):
                _print_session_ended(out, response.session_ended)
                continue
            if response.HasField("progress"):
                progress.update(response.progress)
                continue
            event = response.event
            following.seen(event)
            progress.event(event)
            _print_event(out, event)
            if event.HasField("cancelled") and event.cancelled.continue_with_code_pay:
                words = ["code-pay", "--out-trade-no", event.out_trade_no, "--auth-code", "-"]
                out.note(
                    "the customer chose to scan; continue this sale with the same order fields:"
                    f" {_command(args, *words)} --amount ... --body ..."
                )
            if event.state in _EXIT_BY_FINAL_STATE:
                exit_code = _EXIT_BY_FINAL_STATE[event.state]
    if exit_code is None:
        return _ended_early(out, args, following)
    return exit_code


def _print_session_ended(out: _Output, ended: terminal_pb2.SessionEnded) -> None:
    """The face UI has closed: the screen is free for the next sale."""
    if out.json_mode:
        out.record({"session_ended": _to_json(ended)})
        return
    out.line(f"{'':<4} {'session_ended':<16} {_inline(_flatten(ended))}".rstrip())


def _ended_early(out: _Output, args: argparse.Namespace, following: _Following) -> int:
    command = _watch_command(args, following.out_trade_no, following.last_seq)
    out.note(f"stream ended before a final state; re-attach with: {command}")
    return ExitCode.FAILED


# ---------------------------------------------------------------- commands


async def _cmd_status(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    out.message(await client.get_status())
    return ExitCode.OK


_WATCH_FIELDS = (
    "state",
    "mode",
    "active_session_id",
    "fault",
    "firewall_enabled",
    "unfinished_payments",
)


async def _cmd_watch(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    async with aclosing(client.watch_status()) as statuses:
        async for status in statuses:
            received = datetime.now().astimezone().isoformat(timespec="seconds")
            if out.json_mode:
                out.record({"received_at": received, **_to_json(status)})
            else:
                pairs = dict(_flatten(status))
                shown = [(name, pairs[name]) for name in _WATCH_FIELDS if name in pairs]
                out.line(f"{received}  {_inline(shown)}")
            if out.closed:
                break  # the reader has gone (`| head`): nobody to follow for
    return ExitCode.OK


async def _cmd_lifecycle(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    calls = {
        "reinit": client.reinitialize,
        "release": client.release,
        "on": client.enable_firewall,
        "off": client.disable_firewall,
    }
    out.message(await calls[args.action]())
    return ExitCode.OK


async def _cmd_capture(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    captured = False
    events = client.capture_face_code(args.out_trade_no, args.amount, face=_face_options(args))
    try:
        async with aclosing(events), asyncio.timeout(None) as deadline:
            captured = await _follow_capture(client, args, out, events, deadline)
    except TimeoutError:
        # The report was accepted; newer SDKs may never confirm it on the stream.
        out.note("the terminal did not confirm the reported result")
        return ExitCode.OK
    if not captured:
        out.note("capture ended without a face code")
        return ExitCode.FAILED
    return ExitCode.OK


async def _follow_capture(
    client: TerminalClient,
    args: argparse.Namespace,
    out: _Output,
    events: AsyncGenerator[terminal_pb2.CaptureEvent, None],
    deadline: asyncio.Timeout,
) -> bool:
    """Print capture events; report the result if asked; True once a face code came."""
    session_id = ""
    captured = False
    async for event in events:
        kind = event.WhichOneof("kind")
        if out.json_mode:
            out.record(_to_json(event))
        elif kind is not None:
            out.pairs(_flatten(getattr(event, kind)))
        if kind == "session_started":
            session_id = event.session_started.session_id
        elif kind == "cancelled":
            break
        elif kind == "face_captured":
            captured = True
            if args.report is None:
                break
            await client.report_pay_result(session_id, args.report == "success")
            _print_reported(out, session_id, args.report)
            # Wait a bounded time for the SDK's confirmation, which old SDKs send on the stream.
            deadline.reschedule(asyncio.get_running_loop().time() + args.timeout)
        elif kind == "session_ended":
            break
    return captured


def _print_reported(out: _Output, session_id: str, result: str) -> None:
    if out.json_mode:
        out.record({"reported": {"session_id": session_id, "result": result}})
    else:
        out.pairs([("reported", result)])


async def _cmd_cancel(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    session_id = await client.cancel_session(args.session, args.toast)
    if out.json_mode:
        out.record({"session_id": session_id})
    else:
        out.pairs([("cancelled", session_id)])
    return ExitCode.OK


async def _cmd_userinfo(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    out.message(await client.get_user_info(_face_options(args)))
    return ExitCode.OK


async def _cmd_pay(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    out_trade_no = args.out_trade_no or _new_out_trade_no()
    args.following.out_trade_no = out_trade_no
    # Printed before anything can fail, so the order can always be looked up afterwards.
    if out.json_mode:
        out.record({"out_trade_no": out_trade_no})
    else:
        out.pairs([("out_trade_no", out_trade_no)])
    responses = client.start_face_pay_stream(
        out_trade_no, args.amount, args.body, face=_face_options(args), **_order_fields(args)
    )
    return await _follow_face_pay(out, args, responses)


async def _cmd_code_pay(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    auth_code = _read_auth_code()
    out_trade_no = args.out_trade_no or _new_out_trade_no()
    args.following.out_trade_no = out_trade_no
    if out.json_mode:
        out.record({"out_trade_no": out_trade_no})
    else:
        out.pairs([("out_trade_no", out_trade_no)])
    responses = client.start_code_pay_stream(
        out_trade_no, args.amount, args.body, auth_code, **_order_fields(args)
    )
    return await _follow_payment(out, args, _code_part(out, args.following, responses))


def _stdin_only(value: str) -> str:
    """--auth-code's one accepted value: "-" (a literal code is refused, and never echoed)."""
    if value != "-":
        raise argparse.ArgumentTypeError(
            "must be - (the code is then read from stdin): a code on the command line is"
            " visible to other users in ps and kept in the shell's history"
        )
    return value


def _read_auth_code() -> str:
    """The scanned code from stdin: unechoed on a terminal, one line when piped."""
    if sys.stdin.isatty():
        # A scanner that types into the terminal: the code must not show on the screen.
        return getpass.getpass("scan the payment code: ").strip()
    return sys.stdin.readline().strip()


async def _code_part(
    out: _Output,
    following: _Following,
    responses: AsyncGenerator[terminal_pb2.StartCodePayResponse, None],
) -> AsyncGenerator[terminal_pb2.StartCodePayResponse, None]:
    """The code payment's events; a continued face sale's earlier ones are only printed.

    Its CANCELLED(SCAN_PAYMENT) event is final for the face part only: the exit code comes
    from what follows code_received.
    """
    async with aclosing(responses):
        coded = False
        async for response in responses:
            if response.HasField("progress"):
                yield response
                continue
            event = response.event
            coded = coded or event.HasField("code_received")
            if coded:
                yield response
            else:
                following.seen(event)
                _print_event(out, event)


_ORDER_FIELDS = (
    "attach",
    "detail",
    "goods_tag",
    "limit_pay",
    "time_start",
    "time_expire",
    "scene_info",
    "receipt",
    "fee_type",
)


def _order_fields(args: argparse.Namespace) -> dict[str, str]:
    """The optional order fields given on the command line (pay and code-pay share them)."""
    values = {name: getattr(args, name) for name in _ORDER_FIELDS}
    return {name: value for name, value in values.items() if value is not None}


def _order_arguments(sub: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The order's arguments, shared by pay and code-pay; returns the required group."""
    needed = _required_group(sub)
    needed.add_argument(
        "--amount", type=_fen, required=True, metavar="FEN", help=f"what to charge, {_AMOUNT_HELP}"
    )
    needed.add_argument(
        "--body", required=True, metavar="TEXT", help="what is sold, as the payer's bill shows it"
    )
    sub.add_argument(
        "--out-trade-no",
        metavar="ID",
        help="the order number, unique per merchant (default: generated and printed first)",
    )
    sub.add_argument("--attach", metavar="TEXT", help="merchant data returned as is")
    sub.add_argument("--detail", metavar="JSON", help="goods detail (WeChat Pay's JSON object)")
    sub.add_argument("--goods-tag", metavar="TAG", help="coupon/discount tag")
    sub.add_argument("--limit-pay", choices=["no_credit"], help="no_credit: no credit cards")
    sub.add_argument(
        "--time-start", metavar="yyyyMMddHHmmss", help="when the order was made, Beijing time"
    )
    sub.add_argument(
        "--time-expire",
        metavar="yyyyMMddHHmmss",
        help="the order's expiry, Beijing time, more than a minute away",
    )
    sub.add_argument("--scene-info", metavar="JSON", help="store scene info (WeChat Pay's JSON)")
    sub.add_argument("--receipt", choices=["Y"], help="Y: offer an electronic invoice")
    sub.add_argument("--fee-type", metavar="CUR", help="ISO 4217 currency (default CNY)")
    return needed


def _new_out_trade_no() -> str:
    """FP + local time + 10 random hex digits: 26 characters, unique without coordination."""
    return f"FP{datetime.now().astimezone():%Y%m%d%H%M%S}{secrets.token_hex(5)}"


async def _cmd_payment_get(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    out.message(await client.get_payment(args.out_trade_no))
    return ExitCode.OK


async def _cmd_payment_list(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    page = await client.list_payments(
        page_size=args.limit, page_token=args.page_token, states=args.state
    )
    if out.json_mode:
        out.record(_to_json(page))
        return ExitCode.OK
    for payment in page.payments:
        state = _enum_text(terminal_pb2.PaymentState.DESCRIPTOR, payment.state)
        created = _time_text(payment.created_at) if payment.HasField("created_at") else "-"
        out.line(
            f"{payment.out_trade_no:<32} {state:<10} {payment.total_fee:>9} "
            f"{created}  {payment.transaction_id or '-'}"
        )
        if payment.state == terminal_pb2.PAYMENT_STATE_NEEDS_ATTENTION:
            out.line(f"    reason: {payment.attention_reason}  action: {payment.attention_action}")
    if page.next_page_token:
        out.pairs([("next_page_token", page.next_page_token)])
    return ExitCode.OK


async def _cmd_payment_watch(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    args.following.out_trade_no = args.out_trade_no
    args.following.last_seq = args.after_seq
    responses = client.watch_payment_stream(args.out_trade_no, args.after_seq)
    return await _follow_payment(out, args, responses)


async def _cmd_payment_reverse(
    client: TerminalClient, args: argparse.Namespace, out: _Output
) -> int:
    out.message(await client.reverse_payment(args.out_trade_no))
    return ExitCode.OK


async def _cmd_payment_refund(
    client: TerminalClient, args: argparse.Namespace, out: _Output
) -> int:
    out_refund_no = args.out_refund_no or _new_out_refund_no()
    # Printed before anything can fail, so the refund can always be looked up afterwards.
    if out.json_mode:
        out.record({"out_refund_no": out_refund_no})
    else:
        out.pairs([("out_refund_no", out_refund_no)])
    # A fresh number on a re-run would be a second refund: after any failure or Ctrl-C the
    # exact command with this number is printed (it re-attaches, never refunds twice).
    args.refund_rerun = _refund_rerun_command(args, out_refund_no)
    try:
        return await _follow_refund(client, args, out, out_refund_no)
    except FacepayClientError:
        _say_refund_rerun(out, args.refund_rerun)
        raise


async def _follow_refund(
    client: TerminalClient, args: argparse.Namespace, out: _Output, out_refund_no: str
) -> int:
    events = client.refund_payment(
        args.out_trade_no,
        args.fee,
        out_refund_no,
        refund_desc=args.reason or "",
        refund_account=args.account or "",
        retry_failed=args.retry_failed,
    )
    progress = _Progress(out, args.progress, args.clock)
    progress.say(_REFUND_DOING[terminal_pb2.REFUND_STATE_UNSPECIFIED])
    async with aclosing(events), progress.running():
        async for event in events:
            if event.state in _REFUND_DOING:
                progress.say(_REFUND_DOING[event.state])
            _print_refund_event(out, event)
            if event.state in _EXIT_BY_REFUND_STATE:
                if event.state == terminal_pb2.REFUND_STATE_NEEDS_ATTENTION:
                    out.note(f"needs an operator: {event.needs_attention.action}")
                elif event.state == terminal_pb2.REFUND_STATE_CHANGE:
                    out.note(f"needs an operator: {event.change.action}")
                return _EXIT_BY_REFUND_STATE[event.state]
    out.note(
        f"stream ended before the refund's end; look it up with facepay payment refunds"
        f" {shlex.quote(args.out_trade_no)}"
    )
    _say_refund_rerun(out, args.refund_rerun)
    return ExitCode.FAILED


def _refund_rerun_command(args: argparse.Namespace, out_refund_no: str) -> str:
    """The refund command with its number: running it again re-attaches to the same refund."""
    words = ["payment", "refund", args.out_trade_no, "--fee", str(args.fee)]
    words += ["--out-refund-no", out_refund_no]
    if args.reason:
        words += ["--reason", args.reason]
    if args.account:
        words += ["--account", args.account]
    if args.retry_failed:
        words.append("--retry-failed")
    return _command(args, *words)


def _say_refund_rerun(out: _Output, rerun: str) -> None:
    out.note("to try again without refunding twice, re-run exactly (same --out-refund-no):")
    out.note(f"  {rerun}")


def _print_refund_event(out: _Output, event: terminal_pb2.RefundEvent) -> None:
    if out.json_mode:
        out.record(_to_json(event))
        return
    state = _enum_text(terminal_pb2.RefundState.DESCRIPTOR, event.state)
    kind = event.WhichOneof("kind") or "-"
    when = _time_text(event.time) if event.HasField("time") else "-"
    detail = _flatten(getattr(event, kind)) if kind != "-" else []
    out.line(f"#{event.seq:<3} {when}  {state:<15} {kind:<16} {_inline(detail)}".rstrip())


async def _cmd_payment_refunds(
    client: TerminalClient, args: argparse.Namespace, out: _Output
) -> int:
    page = await client.list_refunds(
        args.out_trade_no, page_size=args.limit, page_token=args.page_token
    )
    if out.json_mode:
        out.record(_to_json(page))
        return ExitCode.OK
    for refund in page.refunds:
        state = _enum_text(terminal_pb2.RefundState.DESCRIPTOR, refund.state)
        created = _time_text(refund.created_at) if refund.HasField("created_at") else "-"
        out.line(
            f"{refund.out_refund_no:<32} {state:<15} {refund.refund_fee:>9} "
            f"{created}  {refund.refund_id or '-'}"
        )
        if refund.err_code:
            out.line(f"    err_code: {refund.err_code}  {refund.err_code_des}")
        if refund.attention_reason:
            out.line(f"    reason: {refund.attention_reason}  action: {refund.attention_action}")
    if page.next_page_token:
        out.pairs([("next_page_token", page.next_page_token)])
    return ExitCode.OK


def _new_out_refund_no() -> str:
    """RF + local time + 10 random hex digits: unique without coordination."""
    return f"RF{datetime.now().astimezone():%Y%m%d%H%M%S}{secrets.token_hex(5)}"


async def _cmd_payscore_check(
    client: TerminalClient, args: argparse.Namespace, out: _Output
) -> int:
    response = await client.check_pay_score_status(
        args.out_order_no,
        payscore_out_request_no=args.out_request_no,
        payscore_service_id=args.service_id,
        face=_face_options(args),
    )
    out.message(response)
    ok = response.outcome == terminal_pb2.PAY_SCORE_OUTCOME_SUCCESS
    return ExitCode.OK if ok else ExitCode.FAILED


async def _cmd_payscore_create(
    client: TerminalClient, args: argparse.Namespace, out: _Output
) -> int:
    request = terminal_pb2.CreateServiceOrderRequest(
        out_order_no=args.out_order_no,
        service_id=args.service_id,
        service_introduction=args.introduction,
        post_payments=args.post_payment,
        post_discounts=args.post_discount,
        time_range=_time_range(args),
        location=_location(args),
        risk_fund=args.risk_fund,
        attach=args.attach,
        notify_url=args.notify_url,
        openid=args.openid,
        need_user_confirm=args.need_user_confirm,
    )
    out.message(await client.create_service_order(request))
    return ExitCode.OK


async def _cmd_payscore_complete(
    client: TerminalClient, args: argparse.Namespace, out: _Output
) -> int:
    total = args.total_amount
    if total is None:
        total = sum(p.amount for p in args.post_payment) - sum(d.amount for d in args.post_discount)
    request = terminal_pb2.CompleteServiceOrderRequest(
        out_order_no=args.out_order_no,
        post_payments=args.post_payment,
        post_discounts=args.post_discount,
        total_amount=total,
        time_range=_time_range(args),
        location=_location(args),
        profit_sharing=args.profit_sharing,
        goods_tag=args.goods_tag,
    )
    out.message(await client.complete_service_order(request))
    return ExitCode.OK


async def _cmd_payscore_sync(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    out.message(await client.sync_service_order(args.out_order_no, args.paid_time, args.type))
    return ExitCode.OK


async def _cmd_payscore_get(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    out.message(await client.get_service_order(args.out_order_no))
    return ExitCode.OK


async def _cmd_payscore_cancel(
    client: TerminalClient, args: argparse.Namespace, out: _Output
) -> int:
    out.message(await client.cancel_service_order(args.out_order_no, args.reason))
    return ExitCode.OK


async def _cmd_unionid(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    out.message(await client.get_union_id(args.face_sid))
    return ExitCode.OK


def _face_options(args: argparse.Namespace) -> terminal_pb2.FaceOptions:
    return terminal_pb2.FaceOptions(
        openid=args.face_openid,
        screen_index=args.screen_index,
        overlay_option=args.overlay_option,
        face_authtype=args.face_authtype,
        wait_if_busy=args.wait_if_busy,
        ask_unionid=args.ask_unionid,
    )


def _time_range(args: argparse.Namespace) -> terminal_pb2.TimeRange | None:
    fields = {
        "start_time": args.start_time,
        "start_time_remark": args.start_time_remark,
        "end_time": args.end_time,
        "end_time_remark": args.end_time_remark,
    }
    present = {name: value for name, value in fields.items() if value}
    return terminal_pb2.TimeRange(**present) if present else None


def _location(args: argparse.Namespace) -> terminal_pb2.Location | None:
    if not (args.start_location or args.end_location):
        return None
    return terminal_pb2.Location(start_location=args.start_location, end_location=args.end_location)


# ---------------------------------------------------------------- argument types


def _fen(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an amount in fen: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"amount must not be negative: {text}")
    return value


def _name_amount(text: str) -> tuple[str, int, list[str]]:
    name, sep, rest = text.partition(":")
    if not name or not sep:
        raise argparse.ArgumentTypeError(f"expected NAME:AMOUNT..., got {text!r}")
    amount, *extra = rest.split(":")
    return name, _fen(amount), extra


def _post_payment(text: str) -> terminal_pb2.PostPayment:
    name, amount, extra = _name_amount(text)
    if len(extra) > 1:
        raise argparse.ArgumentTypeError(f"expected NAME:AMOUNT[:COUNT], got {text!r}")
    count = _fen(extra[0]) if extra else 0
    return terminal_pb2.PostPayment(name=name, amount=amount, count=count)


def _post_discount(text: str) -> terminal_pb2.PostDiscount:
    name, amount, extra = _name_amount(text)
    if extra:
        raise argparse.ArgumentTypeError(f"expected NAME:AMOUNT, got {text!r}")
    return terminal_pb2.PostDiscount(name=name, amount=amount)


def _risk_fund(text: str) -> terminal_pb2.RiskFund:
    name, amount, extra = _name_amount(text)
    if extra:
        raise argparse.ArgumentTypeError(f"expected NAME:AMOUNT, got {text!r}")
    return terminal_pb2.RiskFund(name=name, amount=amount)


_PAYMENT_STATES = {
    _enum_text(terminal_pb2.PaymentState.DESCRIPTOR, value.number): value.number
    for value in terminal_pb2.PaymentState.DESCRIPTOR.values
    if value.number != 0
}


def _payment_state(text: str) -> int:
    name = text.upper().removeprefix("PAYMENT_STATE_")
    if name not in _PAYMENT_STATES:
        raise argparse.ArgumentTypeError(
            f"unknown state {text!r}; one of {', '.join(_PAYMENT_STATES)}"
        )
    return _PAYMENT_STATES[name]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text}")
    return value


# ---------------------------------------------------------------- parser

_AMOUNT_HELP = "in fen (1 fen = 0.01 CNY)"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facepay",
        description="Drive and inspect the facepayd face-payment daemon.",
        epilog="Amounts are in fen: 1 fen = 0.01 CNY, so --amount 150 is 1.50 CNY. "
        "Exit codes: 0 ok, 1 payment not successful or other error, 2 usage, "
        "3 terminal busy, 4 device, 5 backend, 6 invalid argument, "
        "7 not found/already exists/order state, 8 daemon unreachable, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--socket",
        default=_default_socket(),
        metavar="PATH",
        help="facepayd's socket (default: $FACEPAY_SOCKET or %(default)s)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line on stdout: int64 as numbers, enums by short name",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="deadline for quick calls and for --wait (default %(default)g); calls that wait "
        "for a face allow 120 s, streams have none",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait (up to --timeout) for a starting daemon to serve instead of failing",
    )
    parser.add_argument(
        "--progress",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="while a payment waits, print elapsed time and what facepayd is doing to stderr "
        "this often (default %(default)g; 0: never)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    face = argparse.ArgumentParser(add_help=False)
    group = face.add_argument_group("face UI options")
    group.add_argument(
        "--face-openid", default="", metavar="OPENID", help="quick mode: the known user's openid"
    )
    group.add_argument(
        "--screen-index",
        default="",
        choices=["", "0", "1", "2", "3", "4"],
        help="where the face UI runs: 0 main screen, 1 second screen, 2 both, "
        "3 second screen as a presentation, 4 second screen with a guide on the main one",
    )
    group.add_argument(
        "--overlay-option",
        default="",
        choices=["", "0", "1"],
        help="1: the face UI's presentation above other apps; 0: no forced layer (default)",
    )
    group.add_argument(
        "--face-authtype",
        default="",
        choices=["", "FACEPAY", "FACEPAY_DELAY", "FACE_AUTH"],
        help="what the face code is for (default FACEPAY; the others need WeChat Pay's approval)",
    )
    group.add_argument(
        "--wait-if-busy", action="store_true", help="wait for the camera instead of exit 3"
    )
    group.add_argument(
        "--ask-unionid",
        action="store_true",
        help="ask for the user's UnionID (later read with `facepay unionid`)",
    )

    def command(
        name: str,
        handler: _Handler | None,
        help_text: str,
        parents: Sequence[argparse.ArgumentParser] = (),
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=parents)
        if handler is not None:
            sub.set_defaults(handler=handler)
        return sub

    command("status", _cmd_status, "terminal status")
    command("watch", _cmd_watch, "follow terminal status changes, one timestamped line each")
    command("reinit", _cmd_lifecycle, "re-initialize the SDK").set_defaults(action="reinit")
    command("release", _cmd_lifecycle, "release the SDK").set_defaults(action="release")
    firewall = command("firewall", _cmd_lifecycle, "turn the SDK firewall on or off")
    firewall.add_argument("action", choices=["on", "off"], help="on or off")

    capture = command("capture", _cmd_capture, "capture-only: print face_code and openid", [face])
    capture.add_argument(
        "--out-trade-no", default="", metavar="ID", help="the POS's order number, for the SDK"
    )
    capture.add_argument(
        "--amount", type=_fen, default=0, metavar="FEN", help=f"the amount shown, {_AMOUNT_HELP}"
    )
    capture.add_argument(
        "--report",
        choices=["success", "error"],
        help="after the capture, report the POS's payment result",
    )

    cancel = command("cancel", _cmd_cancel, "quit the face UI")
    cancel.add_argument("--session", default="", metavar="ID", help="default: whichever holds it")
    cancel.add_argument("--toast", default="", metavar="TEXT", help="shown by the face UI")

    command("userinfo", _cmd_userinfo, "identify the user by face", [face])

    pay = command("pay", _cmd_pay, "capture a face and pay; follows the payment", [face])
    _order_arguments(pay)
    code_pay = command(
        "code-pay",
        _cmd_code_pay,
        "pay with a scanned WeChat payment code; follows the payment (also continues a face"
        " sale whose customer chose to scan: the same --out-trade-no and order fields)",
    )
    _order_arguments(code_pay).add_argument(
        "--auth-code",
        required=True,
        type=_stdin_only,
        metavar="-",
        help="must be -: the scanned code (18 digits) is read from stdin, unechoed on a"
        " terminal (a code on the command line would be visible in ps and shell history)",
    )

    payment = command("payment", None, "payments in the journal")
    payment_commands = payment.add_subparsers(
        dest="payment_command", required=True, metavar="COMMAND"
    )
    get = payment_commands.add_parser("get", help="one payment", description="one payment")
    get.add_argument("out_trade_no", metavar="ID", help="the payment's out_trade_no")
    get.set_defaults(handler=_cmd_payment_get)
    listing = payment_commands.add_parser(
        "list", help="one page of payments", description="one page of payments, newest first"
    )
    listing.add_argument(
        "--state",
        type=_payment_state,
        action="append",
        default=[],
        metavar="S",
        help=f"only this state (repeatable): {', '.join(_PAYMENT_STATES)}",
    )
    listing.add_argument(
        "--limit", type=int, default=0, metavar="N", help="page size (default 50, at most 200)"
    )
    listing.add_argument(
        "--page-token", default="", metavar="T", help="next_page_token of the page before"
    )
    listing.set_defaults(handler=_cmd_payment_list)
    watch = payment_commands.add_parser(
        "watch",
        help="replay and follow a payment's events",
        description="replay and follow a payment's events to its final state",
    )
    watch.add_argument("out_trade_no", metavar="ID", help="the payment's out_trade_no")
    watch.add_argument(
        "--after-seq", type=int, default=0, metavar="N", help="replay only events after number N"
    )
    watch.set_defaults(handler=_cmd_payment_watch)
    reverse = payment_commands.add_parser(
        "reverse",
        help="reverse (refund or close) a payment",
        description="reverse (refund or close) a payment",
    )
    reverse.add_argument("out_trade_no", metavar="ID", help="the payment's out_trade_no")
    reverse.set_defaults(handler=_cmd_payment_reverse)
    refund = payment_commands.add_parser(
        "refund",
        help="refund (part of) a paid payment; follows the refund to its end",
        description="refund (part of) a paid payment and follow the refund to its end; the same"
        " --out-refund-no and parameters re-attach to it",
    )
    refund.add_argument("out_trade_no", metavar="ID", help="the payment's out_trade_no")
    _required_group(refund).add_argument(
        "--fee", type=_fen, required=True, metavar="FEN", help=f"how much to refund, {_AMOUNT_HELP}"
    )
    refund.add_argument(
        "--out-refund-no", metavar="NO", help="the refund's number (default: a new RF... one)"
    )
    refund.add_argument("--reason", metavar="TEXT", help="refund_desc, shown to the payer")
    refund.add_argument(
        "--account",
        choices=("REFUND_SOURCE_UNSETTLED_FUNDS", "REFUND_SOURCE_RECHARGE_FUNDS"),
        help="which funds pay the refund (default: WeChat Pay's, unsettled funds)",
    )
    refund.add_argument(
        "--retry-failed",
        action="store_true",
        help="send a FAILED refund with the same --out-refund-no again",
    )
    refund.set_defaults(handler=_cmd_payment_refund)
    refunds = payment_commands.add_parser(
        "refunds", help="a payment's refunds", description="a payment's refunds, oldest first"
    )
    refunds.add_argument("out_trade_no", metavar="ID", help="the payment's out_trade_no")
    refunds.add_argument(
        "--limit", type=int, default=0, metavar="N", help="page size (default and at most 50)"
    )
    refunds.add_argument(
        "--page-token", default="", metavar="T", help="next_page_token of the page before"
    )
    refunds.set_defaults(handler=_cmd_payment_refunds)

    _add_payscore(command("payscore", None, "PayScore service orders"), face)

    unionid = command("unionid", _cmd_unionid, "the user's UnionID from a face_sid")
    unionid.add_argument("face_sid", metavar="FACE_SID", help="from a face session")
    _add_bridge_check(command)
    _add_doctor(command)
    shell = command(
        "completion",
        _cmd_completion,
        'print a shell completion script: eval "$(facepay completion bash)" in ~/.bashrc,'
        " or `facepay completion zsh > ~/.zfunc/_facepay` (no daemon needed)",
    )
    shell.add_argument("shell", choices=completion.SHELLS, help="bash or zsh")
    return parser


async def _cmd_completion(_client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    out.line(completion.script(_build_parser(), args.shell).rstrip("\n"))
    return ExitCode.OK


def _add_bridge_check(command: Callable[..., argparse.ArgumentParser]) -> None:
    check = command(
        "bridge-check",
        _cmd_bridge_check,
        "run the bridge protocol's conformance checks against a bridge (no daemon needed;"
        " stop facepayd first: the bridge serves one SDK)",
    )
    check.add_argument(
        "--tcp", default="", metavar="HOST:PORT", help="a bridge on TCP instead of over adb"
    )
    check.add_argument("--adb-host", default="127.0.0.1", metavar="HOST", help="adb server host")
    check.add_argument(
        "--adb-port", type=int, default=5037, metavar="PORT", help="adb server port (5037)"
    )
    check.add_argument("--serial", default="", help="device serial (default: the only device)")
    check.add_argument("--address", default="", metavar="HOST:PORT", help="`adb connect` this")
    check.add_argument(
        "--bridge-socket",
        default="facepay-bridge",
        metavar="NAME",
        help="the bridge's localabstract socket on the device (default %(default)s)",
    )
    check.add_argument(
        "--call-timeout",
        type=_positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="deadline for a hello, a pong, a CallError and non-face calls (default %(default)g)",
    )
    check.add_argument(
        "--face-timeout",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="deadline for face calls: show a face, or cancel (default %(default)g)",
    )


async def _cmd_bridge_check(_client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    # The kit needs the daemon's transports and framing; imported here so other commands
    # never load the daemon package.
    from facepayd.device import conformance
    from facepayd.ops.logs import configure_logging

    configure_logging(level="warning")
    try:
        transport = conformance.transport_for(
            tcp=args.tcp,
            adb_host=args.adb_host,
            adb_port=args.adb_port,
            serial=args.serial,
            address=args.address,
            bridge_socket=args.bridge_socket,
        )
    except ValueError as exc:
        out.note(f"bridge-check: {exc}")
        return ExitCode.USAGE
    options = conformance.CheckOptions(
        call_timeout=args.call_timeout, face_timeout=args.face_timeout
    )
    try:
        checks = await conformance.run_checks(transport, options)
    finally:
        await transport.close()
    failed = [check.name for check in checks if check.passed is False]
    for check in checks:
        if out.json_mode:
            out.record({"check": check.name, "passed": check.passed, "detail": check.detail})
        else:
            out.line(f"{conformance.mark(check)} {check.name}: {check.detail}")
    if failed:
        out.note(f"bridge-check failed: {', '.join(failed)}")
        return ExitCode.FAILED
    if not out.json_mode:
        out.line(f"bridge-check passed ({transport.describe()})")
    return ExitCode.OK


def _required_group(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Where a command's required options go, so its help lists them as required."""
    return parser.add_argument_group("required options")


def _add_doctor(command: Callable[..., argparse.ArgumentParser]) -> None:
    command(
        "doctor",
        _cmd_doctor,
        "check the till: daemon, adb server, device, apps, bridge, SDK, authinfo age, clock,"
        " certificate, journal, payments needing an operator, recent errors; each failure with"
        " its fix"
        " (exit 0 all passed, 1 some failed, 8 daemon unreachable)",
    )


async def _cmd_doctor(client: TerminalClient, args: argparse.Namespace, out: _Output) -> int:
    def show(name: str, ok: bool, detail: str, fix: str = "") -> None:
        if out.json_mode:
            out.record({"name": name, "ok": ok, "detail": detail, "fix": fix})
            return
        out.line(f"{'✓' if ok else '✗'} {name}: {detail}")
        if not ok and fix:
            out.line(f"    fix: {fix}")

    path = client.socket_path
    unreachable = _socket_problem(path)
    if unreachable is None:
        try:
            checks = await client.diagnose()
        except DaemonUnavailableError as exc:
            unreachable = (
                f"facepayd at {path} is not answering: {exc}",
                "`systemctl status facepayd` and `journalctl -u facepayd -e`; it may be"
                " starting (try again with --wait) or stuck",
            )
    if unreachable is not None:
        show("daemon", False, *unreachable)
        return ExitCode.UNREACHABLE
    show("daemon", True, f"facepayd answering on {path}")
    for check in checks:
        show(check.name, check.ok, check.detail, check.fix)
    failed = [check.name for check in checks if not check.ok]
    if failed:
        out.note(f"doctor: {len(failed)} check(s) failed: {', '.join(failed)}")
        return ExitCode.FAILED
    return ExitCode.OK


def _socket_problem(path: str) -> tuple[str, str] | None:
    """Why this user cannot talk to the socket at path (detail, fix), or None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return (
            f"no socket at {path}",
            "start facepayd (`systemctl status facepayd`, `journalctl -u facepayd -e`), or"
            " point --socket / $FACEPAY_SOCKET at its socket",
        )
    except OSError as exc:
        return (f"cannot reach {path}: {exc.strerror}", "check the directory's permissions")
    if os.access(path, os.R_OK | os.W_OK):
        return None
    import grp  # POSIX only, like the Unix socket itself

    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return (
        f"permission denied on {path} (group {group}, mode {info.st_mode & 0o777:04o})",
        f"add this user to the group {group}: `sudo usermod -aG {group} $USER`, then log in again",
    )


def _add_payscore(payscore: argparse.ArgumentParser, face: argparse.ArgumentParser) -> None:
    sub = payscore.add_subparsers(dest="payscore_command", required=True, metavar="COMMAND")

    def order(
        name: str, handler: _Handler, help_text: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text, parents=parents)
        parser.add_argument(
            "out_order_no", metavar="OUT_ORDER_NO", help="the service order's number"
        )
        parser.set_defaults(handler=handler)
        return parser

    def amounts(
        parser: argparse.ArgumentParser, needed: argparse._ArgumentGroup, *, create: bool
    ) -> None:
        # Create needs a start time; complete needs at least one payment item.
        (needed if not create else parser).add_argument(
            "--post-payment",
            type=_post_payment,
            action="append",
            default=[],
            required=not create,
            metavar="NAME:AMOUNT[:COUNT]",
            help=f"a charge item, amount {_AMOUNT_HELP} (repeatable)",
        )
        parser.add_argument(
            "--post-discount",
            type=_post_discount,
            action="append",
            default=[],
            metavar="NAME:AMOUNT",
            help=f"a discount item, amount {_AMOUNT_HELP} (repeatable)",
        )
        (needed if create else parser).add_argument(
            "--start-time",
            default="",
            required=create,
            metavar="yyyyMMddHHmmss|OnAccept",
            help="when the service starts (OnAccept: when the user accepts)",
        )
        parser.add_argument("--start-time-remark", default="", metavar="TEXT", help="shown to user")
        parser.add_argument(
            "--end-time", default="", metavar="yyyyMMddHHmmss", help="when the service ends"
        )
        parser.add_argument("--end-time-remark", default="", metavar="TEXT", help="shown to user")
        parser.add_argument(
            "--start-location", default="", metavar="TEXT", help="where the service starts"
        )
        parser.add_argument(
            "--end-location", default="", metavar="TEXT", help="where the service ends"
        )

    check = order("check", _cmd_payscore_check, "recognise the user, check PayScore", face)
    check.add_argument(
        "--out-request-no", default="", metavar="ID", help="this check's request number"
    )
    check.add_argument("--service-id", default="", metavar="ID", help="default: the configured one")

    create = order("create", _cmd_payscore_create, "create a service order")
    needed = _required_group(create)
    needed.add_argument(
        "--introduction", required=True, metavar="TEXT", help="the service, as the user sees it"
    )
    needed.add_argument(
        "--risk-fund",
        type=_risk_fund,
        required=True,
        metavar="NAME:AMOUNT",
        help=f"the deposit waived by PayScore, e.g. DEPOSIT:5000, amount {_AMOUNT_HELP}",
    )
    amounts(create, needed, create=True)
    create.add_argument(
        "--service-id", default="", metavar="ID", help="default: the configured one"
    )
    create.add_argument("--attach", default="", metavar="TEXT", help="merchant data returned as is")
    create.add_argument(
        "--notify-url", default="", metavar="URL", help="default: the configured one"
    )
    create.add_argument("--openid", default="", metavar="OPENID", help="the user, if known")
    create.add_argument(
        "--need-user-confirm", action="store_true", help="the user confirms the order first"
    )

    complete = order("complete", _cmd_payscore_complete, "complete a service order")
    amounts(complete, _required_group(complete), create=False)
    complete.add_argument(
        "--total-amount",
        type=_fen,
        metavar="FEN",
        help=f"what to charge, {_AMOUNT_HELP} (default: payments minus discounts)",
    )
    complete.add_argument(
        "--profit-sharing", action="store_true", help="the payment is shared with others later"
    )
    complete.add_argument("--goods-tag", default="", metavar="TAG", help="coupon/discount tag")

    sync = order("sync", _cmd_payscore_sync, "report a service order paid elsewhere")
    _required_group(sync).add_argument(
        "--paid-time", required=True, metavar="yyyyMMddHHmmss", help="when it was paid"
    )
    sync.add_argument(
        "--type", default="Order_Paid", metavar="TYPE", help="default and only: %(default)s"
    )

    order("get", _cmd_payscore_get, "one service order")

    cancel = order("cancel", _cmd_payscore_cancel, "cancel a service order")
    _required_group(cancel).add_argument(
        "--reason", required=True, metavar="TEXT", help="at most 50 characters"
    )


if __name__ == "__main__":
    sys.exit(main())
