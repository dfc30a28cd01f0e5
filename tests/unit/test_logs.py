"""Logging: JSON lines, bound context, secret redaction, tracebacks without locals."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from facepayd.errors import ConfigError
from facepayd.ops.logs import REDACTED, configure_logging, get_logger, register_secret
from facepayd.sim.daemon_process import child_env


class _TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _secret() -> str:
    return "sk-" + secrets.token_hex(16)


def test_json_lines_on_a_non_tty_stream() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    get_logger("facepayd.test").info("lifecycle state changed", state="READY", attempt=2)
    logging.getLogger("foreign.lib").warning("plain %s message", "stdlib")

    first, second = _lines(out)
    assert first["event"] == "lifecycle state changed"
    assert first["state"] == "READY"
    assert first["attempt"] == 2
    assert first["level"] == "info"
    assert first["logger"] == "facepayd.test"
    assert first["timestamp"].endswith("Z")
    assert second["event"] == "plain stdlib message"
    assert second["level"] == "warning"
    assert second["logger"] == "foreign.lib"


def test_level_filters_lower_levels() -> None:
    out = io.StringIO()
    configure_logging(stream=out, level="warning")
    log = get_logger("facepayd.test")
    log.info("hidden")
    log.warning("shown")
    logging.getLogger("foreign.lib").info("hidden too")
    assert [line["event"] for line in _lines(out)] == ["shown"]


def test_unknown_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"log\.level"):
        configure_logging(stream=io.StringIO(), level="loud")


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    get_logger("facepayd.test").info("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second)] == ["once"]


def test_context_vars_appear_in_every_line() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.contextvars.bind_contextvars(session_id="sess-1", out_trade_no="T20240001")
    get_logger("facepayd.face.sessions").info("face captured")
    logging.getLogger("foreign.lib").info("HTTP Request")

    for line in _lines(out):
        assert line["session_id"] == "sess-1"
        assert line["out_trade_no"] == "T20240001"


def test_registered_secret_is_masked_everywhere() -> None:
    api_key = _secret()
    register_secret(api_key)
    out = io.StringIO()
    configure_logging(stream=out)
    log = get_logger("facepayd.wxpay")
    structlog.contextvars.bind_contextvars(note=f"ctx {api_key}")

    log.info(f"signing with {api_key} now", detail={"nested": [f"x{api_key}y"]})
    log.info("stdlib-style %s args", api_key)
    logging.getLogger("foreign.lib").warning("foreign %s", api_key, extra={"url": api_key})
    try:
        raise RuntimeError(f"backend said {api_key}")
    except RuntimeError:
        log.exception("call failed")

    text = out.getvalue()
    assert api_key not in text
    lines = _lines(out)
    assert lines[0]["event"] == f"signing with {REDACTED} now"
    assert lines[0]["detail"] == {"nested": [f"x{REDACTED}y"]}
    assert lines[0]["note"] == f"ctx {REDACTED}"
    assert lines[1]["event"] == f"stdlib-style {REDACTED} args"
    assert lines[2]["event"] == f"foreign {REDACTED}"
    assert lines[2]["url"] == REDACTED
    assert lines[3]["exception"][0]["exc_value"] == f"backend said {REDACTED}"


def test_registered_bytes_secret_is_masked() -> None:
    authinfo = _secret()
    register_secret(authinfo.encode())
    out = io.StringIO()
    configure_logging(stream=out)
    get_logger("facepayd.face.authinfo").info("fetched", body=f"<authinfo>{authinfo}</authinfo>")
    assert authinfo not in out.getvalue()
    assert REDACTED in out.getvalue()


def test_secret_named_keys_are_masked_at_any_depth() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    values = {name: _secret() for name in ("a", "b", "c", "d", "e", "f", "g")}
    get_logger("facepayd.test").info(
        "params",
        API_KEY=values["a"],
        face_code=values["b"],
        request={"sign": values["c"], "rawdata": values["d"], "out_trade_no": "T1"},
        items=[{"AuthInfo": values["e"]}],
        cert_password=values["f"],
        auth_code=values["g"],
        token=None,
    )

    text = out.getvalue()
    for value in values.values():
        assert value not in text
    (line,) = _lines(out)
    assert line["API_KEY"] == REDACTED
    assert line["face_code"] == REDACTED
    assert line["request"] == {"sign": REDACTED, "rawdata": REDACTED, "out_trade_no": "T1"}
    assert line["items"] == [{"AuthInfo": REDACTED}]
    assert line["cert_password"] == REDACTED
    assert line["auth_code"] == REDACTED
    assert line["token"] is None  # an absent secret stays visibly absent


def _fail_with_a_local(marker: str) -> None:
    local_face_code = marker  # noqa: F841 - the local the traceback must not show
    raise ValueError("device refused")


def test_json_traceback_has_frames_but_no_locals() -> None:
    marker = "local-" + secrets.token_hex(8)
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        _fail_with_a_local(marker)
    except ValueError:
        get_logger("facepayd.test").exception("capture failed")

    assert marker not in out.getvalue()
    (line,) = _lines(out)
    (exc,) = line["exception"]
    assert exc["exc_type"] == "ValueError"
    assert exc["exc_value"] == "device refused"
    assert exc["frames"][-1]["name"] == "_fail_with_a_local"
    assert all("locals" not in frame or not frame["locals"] for frame in exc["frames"])


def test_console_rendering_with_traceback_and_redaction() -> None:
    api_key = _secret()
    register_secret(api_key)
    marker = "local-" + secrets.token_hex(8)
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    structlog.contextvars.bind_contextvars(session_id="sess-9")
    try:
        _fail_with_a_local(marker)
    except ValueError:
        get_logger("facepayd.test").exception("capture failed", key=api_key)

    text = out.getvalue()
    assert "capture failed" in text
    assert "session_id=sess-9" in text
    assert f"key={REDACTED}" in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: device refused" in text
    assert "\x1b[" not in text  # no colours off a terminal
    assert marker not in text
    assert api_key not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_terminal_gets_console_output_by_default() -> None:
    out = _TtyStream()
    configure_logging(stream=out)
    get_logger("facepayd.test").info("hello", state="IDLE")
    text = out.getvalue()
    assert "hello" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_json_forced_on_a_terminal() -> None:
    out = _TtyStream()
    configure_logging(json=True, stream=out)
    get_logger("facepayd.test").info("hello")
    assert _lines(out)[0]["event"] == "hello"


def test_http_client_request_lines_are_debug_detail() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("httpx").info("HTTP Request: POST https://api.mch.weixin.qq.com")
    logging.getLogger("httpcore.connection").info("connect_tcp.started")
    logging.getLogger("httpx").warning("kept")
    logging.getLogger("foreign.lib").info("also kept")
    assert [line["event"] for line in _lines(out)] == ["kept", "also kept"]

    verbose = io.StringIO()
    configure_logging(stream=verbose, level="debug")
    logging.getLogger("httpx").info("HTTP Request: POST https://api.mch.weixin.qq.com")
    (line,) = _lines(verbose)
    assert (line["logger"], line["level"]) == ("httpx", "debug")


# A child whose stderr is a file; JOURNAL_STREAM names that file (or another one).
_JOURNAL_CHILD = """
import logging, sys
from facepayd.ops.logs import configure_logging, get_logger
configure_logging(json=sys.argv[1] == "json", level="debug")
log = get_logger("facepayd.test")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e"); log.critical("c")
logging.getLogger("foreign.lib").error("stdlib error")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("with traceback")
"""


def _journal_child(tmp_path: Any, renderer: str, *, matching: bool) -> list[str]:
    log_path = tmp_path / f"stderr-{renderer}-{matching}"
    other = tmp_path / "other"
    other.write_text("")
    with log_path.open("w") as stderr:
        named = os.fstat(stderr.fileno()) if matching else os.stat(other)
        env = {**child_env(), "JOURNAL_STREAM": f"{named.st_dev}:{named.st_ino}"}
        subprocess.run(
            [sys.executable, "-c", _JOURNAL_CHILD, renderer],
            stderr=stderr,
            env=env,
            check=True,
            timeout=60,
        )
    return log_path.read_text().splitlines()


@pytest.mark.parametrize("renderer", ["json", "console"])
def test_journal_stream_lines_carry_their_syslog_priority(tmp_path: Any, renderer: str) -> None:
    lines = _journal_child(tmp_path, renderer, matching=True)
    prefixes = [line[:3] for line in lines]
    assert prefixes[:6] == ["<7>", "<6>", "<4>", "<3>", "<2>", "<3>"]
    # Every line of the traceback too, so none falls back to the unit's default priority.
    assert set(prefixes[6:]) == {"<3>"}
    assert len(lines) > 6
    if renderer == "json":
        assert json.loads(lines[3][3:])["event"] == "e"
    else:
        assert any("ValueError: boom" in line for line in lines[6:])


def test_no_priority_prefix_when_stderr_is_not_the_journal_stream(tmp_path: Any) -> None:
    lines = _journal_child(tmp_path, "json", matching=False)
    assert [json.loads(line)["event"] for line in lines[:5]] == ["d", "i", "w", "e", "c"]
