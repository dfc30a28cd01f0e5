"""Secret files: systemd credentials by name or private files by path; values never in messages."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from facepayd.errors import ConfigError
from facepayd.ops.logs import register_secret

__all__ = ["check_readable_file", "locate_secret", "read_secret_bytes", "read_secret_text"]

# Keys, passwords and certificate bundles are small; anything bigger is the wrong file.
MAX_SECRET_BYTES = 1 << 20

_PRIVATE_RULE = "must not be readable by group or others (chmod 0600, or use a systemd credential)"


def read_secret_bytes(ref: str, *, environ: Mapping[str, str] | None = None) -> bytes:
    """Read a secret given as a systemd credential name or a path to a private file."""
    path, check_mode = _resolve(ref, environ)
    return _read(path, check_mode=check_mode)


def read_secret_text(ref: str, *, environ: Mapping[str, str] | None = None) -> str:
    """Read a UTF-8 secret, trimmed of surrounding whitespace, and register it for log redaction."""
    path, check_mode = _resolve(ref, environ)
    data = _read(path, check_mode=check_mode)
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        # Not chained: the decode error quotes the offending byte of the secret.
        raise ConfigError(f"secret file {path}: is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"secret file {path}: is empty")
    register_secret(text)
    return text


def locate_secret(ref: str, *, environ: Mapping[str, str] | None = None) -> Path:
    """The checked path of a secret, for libraries that insist on opening the file themselves."""
    path, check_mode = _resolve(ref, environ)
    fd = _open(path)
    try:
        _check(path, os.fstat(fd), check_mode=check_mode)
    finally:
        os.close(fd)
    return path


def check_readable_file(path: Path) -> None:
    """A regular file this process can open (no mode rule: for certificates and binaries)."""
    fd = _open(path, what="file")
    try:
        _check(path, os.fstat(fd), check_mode=False, what="file")
    finally:
        os.close(fd)


def _resolve(ref: str, environ: Mapping[str, str] | None) -> tuple[Path, bool]:
    """Map a reference to a path, and whether its mode must be checked."""
    if not ref:
        raise ConfigError("secret reference is empty: give a credential name or a file path")
    if "/" in ref:
        return Path(ref), True
    if ref in {".", ".."}:
        raise ConfigError(f"secret reference {ref!r}: is not a credential name")
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        raise ConfigError(
            f"secret {ref!r}: a name without '/' is a systemd credential, but "
            "$CREDENTIALS_DIRECTORY is not set (add LoadCredential= or give an absolute path)"
        )
    # systemd owns this directory and makes it private to the service, so modes are its business.
    return Path(directory) / ref, False


def _read(path: Path, *, check_mode: bool) -> bytes:
    fd = _open(path)
    try:
        info = os.fstat(fd)
        _check(path, info, check_mode=check_mode)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"secret file {path}: cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"secret file {path}: larger than {MAX_SECRET_BYTES} bytes")
    return data


def _open(path: Path, *, what: str = "secret file") -> int:
    try:
        # O_NONBLOCK so a FIFO in its place cannot hang start-up; fstat then rejects it.
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot open: {exc.strerror}") from exc


def _check(
    path: Path, info: os.stat_result, *, check_mode: bool, what: str = "secret file"
) -> None:
    # Checked on the open descriptor, so a swap between check and read cannot slip through.
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {path}: is not a regular file")
    if check_mode and info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(f"secret file {path}: mode {mode:04o} {_PRIVATE_RULE}")
