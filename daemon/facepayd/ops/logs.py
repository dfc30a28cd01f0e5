"""Logging: structlog over the stdlib, JSON off a terminal, readable on one, secrets redacted.

Under systemd (stderr is the journal's stream, $JOURNAL_STREAM) every line starts with its
sd-daemon(3) priority, `<3>` for error, so `journalctl -p err` works. httpx's and httpcore's
per-request INFO lines are logged at debug.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from facepayd.errors import ConfigError

__all__ = [
    "REDACTED",
    "configure_logging",
    "get_logger",
    "is_journal_stream",
    "priority",
    "recent_errors",
    "redact_event",
    "register_secret",
    "replace_secret",
    "secret_count",
    "unregister_secret",
]

REDACTED = "[redacted]"

# Keys whose values are secret wherever they appear, compared case-insensitively.
SECRET_KEYS = frozenset(
    {
        "api_key",
        "key",
        "authinfo",
        "face_code",
        "auth_code",
        "rawdata",
        "sign",
        "passwd",
        "password",
        "token",
        "cert",
        "private_key",
    }
)
# Compound names such as cert_password or access_token are secret too.
_SECRET_KEY_SUFFIXES = ("_api_key", "_private_key", "_password", "_passwd", "_token", "_secret")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# sd-daemon(3) priorities (syslog levels) by stdlib level; anything between rounds down.
_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_DEBUG_PRIORITY = 7

# Libraries that log every request at INFO: their lines are debug detail for us.
_CHATTY_LOGGERS = ("httpx", "httpcore")

# Marks the handler this module installs, so reconfiguring replaces it and leaves others alone.
_HANDLER_MARK = "_facepayd_handler"


def register_secret(value: str | bytes) -> None:
    """Mask every later occurrence of ``value`` in log output (keys, passwords: held for life)."""
    _SECRETS.add(value)


def replace_secret(slot: str, value: str | bytes) -> None:
    """Mask ``value`` as the live secret of ``slot`` (e.g. one authinfo cache); older ones go."""
    _SECRETS.replace(slot, value)


def unregister_secret(value: str | bytes) -> None:
    """Stop masking ``value`` (a secret this process will never hold again)."""
    _SECRETS.remove(value)


def secret_count() -> int:
    """How many values are masked now (doctor, and the memory benchmark)."""
    return len(_SECRETS.live())


def configure_logging(
    *, json: bool | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to one handler on ``stream`` (stderr by default)."""
    numeric_level = _LEVELS.get(level.lower())
    if numeric_level is None:
        raise ConfigError(f"log.level: must be one of {', '.join(_LEVELS)}, got {level!r}")
    out = sys.stderr if stream is None else stream
    as_json = not _is_tty(out) if json is None else json

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            _FILTER,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=_BoundLogger,
        cache_logger_on_first_use=True,
    )

    # Exceptions become plain data before redaction, so the redactor sees their text;
    # neither path renders frame locals (they would carry keys and face codes).
    render: list[Processor]
    if as_json:
        render = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False, use_rich=False)
            ),
            redact_event,
            _remember_error,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        render = [
            structlog.processors.format_exc_info,
            redact_event,
            _remember_error,
            structlog.dev.ConsoleRenderer(
                colors=_is_tty(out), exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.StackInfoRenderer(),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    )

    handler = logging.StreamHandler(out)
    handler.setFormatter(_JournalFormatter(formatter) if is_journal_stream(out) else formatter)
    handler.addFilter(_ChatterFilter(numeric_level))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)


class _BoundLogger(structlog.stdlib.BoundLogger):
    """The stdlib BoundLogger, returning at once from debug and info below the level.

    filter_by_level drops such a call only after the processor chain has begun (≈2.5 µs; the
    bridge and the payment path make several per call); this asks the stdlib logger first.
    While structlog.testing.capture_logs has swapped the processors, everything is processed.
    """

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        """Process event and call `logging.Logger.debug`, unless debug is off."""
        if _filtering(self) and not self._logger.isEnabledFor(logging.DEBUG):
            return None
        return self._proxy_to_logger("debug", event, *args, **kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        """Process event and call `logging.Logger.info`, unless info is off."""
        if _filtering(self) and not self._logger.isEnabledFor(logging.INFO):
            return None
        return self._proxy_to_logger("info", event, *args, **kw)


_FILTER = structlog.stdlib.filter_by_level


def _filtering(logger: structlog.stdlib.BoundLogger) -> bool:
    """Whether the configured chain still starts with the level filter (capture_logs swaps it)."""
    processors = logger._processors
    return isinstance(processors, list) and bool(processors) and processors[0] is _FILTER


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger that goes through the stdlib logger ``name``."""
    return structlog.stdlib.get_logger(name)


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: mask secret-named keys and registered secret values anywhere in the event."""
    pattern = _SECRETS.pattern()
    return {key: _redact_item(key, value, pattern) for key, value in event_dict.items()}


# A registry this size is a caller registering per request: the oldest held-for-life value goes.
MAX_SECRETS = 256
# A slot keeps its previous value too: a line about a call that used it may still be on its way.
_SLOT_DEPTH = 2


class _SecretRegistry:
    """Live secret values and one regex that finds any of them, rebuilt lazily on change.

    Held-for-life values (api keys) and slots (one per rotating secret, such as an authinfo
    cache's current value) are both bounded, so a year of refreshes neither grows memory nor
    makes a registration recompile a regex of every authinfo ever fetched.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first
        self._slots: dict[str, tuple[str, ...]] = {}
        self._pattern: re.Pattern[str] | None = None
        self._dirty = False

    def add(self, value: str | bytes) -> None:
        text = _secret_text(value)
        if text is None:
            return
        with self._lock:
            if text in self._values:
                return
            self._values[text] = None
            if len(self._values) > MAX_SECRETS:
                del self._values[next(iter(self._values))]
            self._dirty = True

    def replace(self, slot: str, value: str | bytes) -> None:
        text = _secret_text(value)
        if text is None:
            return
        with self._lock:
            held = self._slots.get(slot, ())
            if held and held[0] == text:
                return
            self._slots[slot] = (text, *(v for v in held if v != text))[:_SLOT_DEPTH]
            if len(self._slots) > MAX_SECRETS:
                del self._slots[next(iter(self._slots))]
            self._dirty = True

    def remove(self, value: str | bytes) -> None:
        text = _secret_text(value)
        if text is None:
            return
        with self._lock:
            self._values.pop(text, None)
            for slot, held in list(self._slots.items()):
                if text in held:
                    kept = tuple(v for v in held if v != text)
                    if kept:
                        self._slots[slot] = kept
                    else:
                        del self._slots[slot]
            self._dirty = True

    def live(self) -> frozenset[str]:
        """Every value masked now."""
        with self._lock:
            return frozenset(self._values).union(*self._slots.values())

    def pattern(self) -> re.Pattern[str] | None:
        if not self._dirty:
            return self._pattern
        with self._lock:
            if self._dirty:
                values = set(self._values).union(*self._slots.values())
                # Longest first, so a secret containing another is masked whole.
                ordered = sorted(values, key=len, reverse=True)
                self._pattern = (
                    re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None
                )
                self._dirty = False
            return self._pattern


def _secret_text(value: str | bytes) -> str | None:
    """The text form a secret would be logged in; None when there is nothing to match."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            # Binary secrets (PKCS#12) are never rendered as text, so nothing to match.
            return None
    value = value.strip()
    return value or None


_SECRETS = _SecretRegistry()


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return lowered in SECRET_KEYS or lowered.endswith(_SECRET_KEY_SUFFIXES)


def _redact_item(key: object, value: Any, pattern: re.Pattern[str] | None) -> Any:
    if _is_secret_key(key) and value is not None and value != "":
        return REDACTED
    return _redact_value(value, pattern)


def _redact_value(value: Any, pattern: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        return value if pattern is None else pattern.sub(REDACTED, value)
    if isinstance(value, Mapping):
        return {k: _redact_item(k, v, pattern) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, pattern) for v in value]
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "replace")
        return text if pattern is None else pattern.sub(REDACTED, text)
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else is rendered with str() by the renderer; do it here so it is checked.
    return _redact_value(str(value), pattern)


def is_journal_stream(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal's: $JOURNAL_STREAM names its device and inode."""
    device, sep, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        stat = os.fstat(stream.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        # No file descriptor (a StringIO) or a malformed variable: not the journal.
        return False


def priority(levelno: int) -> int:
    """The syslog priority journald files a record of this stdlib level under."""
    for threshold, value in _PRIORITIES:
        if levelno >= threshold:
            return value
    return _DEBUG_PRIORITY


class _JournalFormatter(logging.Formatter):
    """Prefixes every line with ``<N>``: journald reads it as the line's priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        # A traceback's continuation lines are journal entries of their own: same priority.
        return "\n".join(prefix + line for line in self._inner.format(record).split("\n"))


class _ChatterFilter(logging.Filter):
    """Logs third-party per-request INFO lines at debug, so they show only at level debug."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.partition(".")[0] in _CHATTY_LOGGERS:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self._level <= logging.DEBUG
        return True


@dataclass(frozen=True, slots=True)
class RecentError:
    """One error-level log event: when, where and its event name (no values: they may be long)."""

    timestamp: str
    logger: str
    event: str


# Bounded: `facepay doctor` shows the last few, journald keeps the rest.
_RECENT_ERRORS: deque[RecentError] = deque(maxlen=20)


def recent_errors() -> list[RecentError]:
    """The last error-level events this process logged, oldest first."""
    return list(_RECENT_ERRORS)


def _remember_error(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor (after redaction): keep error and critical events in the ring."""
    if event_dict.get("level") in ("error", "critical"):
        _RECENT_ERRORS.append(
            RecentError(
                str(event_dict.get("timestamp", "")),
                str(event_dict.get("logger", "")),
                str(event_dict.get("event", ""))[:200],
            )
        )
    return event_dict


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
