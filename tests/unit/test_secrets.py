"""Secret files: private modes enforced, credentials looked up, values kept out of errors."""

from __future__ import annotations

import io
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from facepayd.errors import ConfigError
from facepayd.ops.logs import configure_logging, get_logger
from facepayd.ops.secrets import locate_secret, read_secret_bytes, read_secret_text


def _write(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _value() -> str:
    return secrets.token_hex(16)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    value = _value()
    path = _write(tmp_path / "api-key", value.encode(), mode)
    for read in (read_secret_text, read_secret_bytes, locate_secret):
        with pytest.raises(ConfigError) as info:
            read(str(path))
        message = str(info.value)
        assert str(path) in message
        assert f"{mode:04o}" in message
        assert "must not be readable by group or others" in message
        assert value not in message


def test_private_file_is_accepted(tmp_path: Path) -> None:
    value = _value()
    path = _write(tmp_path / "api-key", f"{value}\n".encode(), 0o600)
    assert read_secret_text(str(path)) == value
    assert read_secret_bytes(str(path)) == f"{value}\n".encode()
    assert locate_secret(str(path)) == path


def test_owner_read_only_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path / "cert.p12", b"\x30\x82\x01\xff", 0o400)
    assert read_secret_bytes(str(path)) == b"\x30\x82\x01\xff"


def test_credential_name_is_looked_up_regardless_of_mode(tmp_path: Path) -> None:
    value = _value()
    _write(tmp_path / "wxpay-api-key", value.encode(), 0o644)
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert read_secret_text("wxpay-api-key", environ=environ) == value
    assert locate_secret("wxpay-api-key", environ=environ) == tmp_path / "wxpay-api-key"


def test_credential_name_without_credentials_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"CREDENTIALS_DIRECTORY.*not set"):
        read_secret_text("wxpay-api-key", environ={})


def test_missing_credential_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_secret_text("absent", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert str(tmp_path / "absent") in str(info.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open") as info:
        read_secret_bytes(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(info.value)


def test_directory_and_fifo_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    for path in (tmp_path, fifo):
        with pytest.raises(ConfigError, match="not a regular file"):
            read_secret_bytes(str(path))


def test_empty_and_bad_references(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        read_secret_text("")
    with pytest.raises(ConfigError, match="not a credential name"):
        read_secret_text("..", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    empty = _write(tmp_path / "empty", b" \n", 0o600)
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_text(str(empty))


def test_non_utf8_text_error_hides_the_bytes(tmp_path: Path) -> None:
    path = _write(tmp_path / "key", b"ab\xfe\xedcd", 0o600)
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        read_secret_text(str(path))
    assert "fe" not in str(info.value).replace(str(path), "")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging(stream=out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_text_secret_is_redacted_from_logs(tmp_path: Path, log_output: io.StringIO) -> None:
    value = _value()
    path = _write(tmp_path / "api-key", value.encode(), 0o600)
    read_secret_text(str(path))
    get_logger("facepayd.test").info("loaded", preview=f"...{value}...")
    assert value not in log_output.getvalue()
    assert "[redacted]" in log_output.getvalue()
