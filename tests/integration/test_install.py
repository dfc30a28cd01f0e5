"""The wheel installed into a fresh venv outside the repository runs the daemon and the CLI.

Offline by construction: the wheel is built from a copy of the sources with the project
venv's own setuptools (--no-build-isolation --no-index), and installed --no-deps; its
dependencies are the project venv's, reached through a .pth file in the fresh venv (created
without pip, so the fresh venv holds nothing but the wheel). `pip check` then proves the
wheel's declared requirements are satisfied by those versions. What this does not prove is
that pip would resolve them from an index: nothing is downloaded at test time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOS = sorted(ROOT.glob("protos/facepay/*/v1/*.proto"))


def _env() -> dict[str, str]:
    """The environment of a user's shell: no repository on the path, no service manager."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    for name in ("INVOCATION_ID", "NOTIFY_SOCKET", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def _run(argv: list[str | Path], cwd: Path, timeout: float = 60) -> str:
    result = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[Path, Path]]:
    """(the wheel, the fresh venv's bin directory), under a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="fpinst-", dir="/tmp") as tmp:
        work = Path(tmp)
        # A copy of the sources, so no build/ or egg-info lands in the repository.
        source = work / "src"
        source.mkdir()
        shutil.copy2(ROOT / "pyproject.toml", source)
        for tree in ("daemon", "clients"):
            shutil.copytree(
                ROOT / tree, source / tree, ignore=shutil.ignore_patterns("__pycache__")
            )
        wheels = work / "wheels"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
              "-w", wheels, source], cwd=work, timeout=120)  # fmt: skip
        (wheel,) = wheels.glob("facepay_terminal-*.whl")

        venv = work / "venv"
        _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work)
        python = venv / "bin" / "python"
        purelib = _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work
        ).strip()
        deps = sysconfig.get_paths()["purelib"]  # the project venv's site-packages
        (Path(purelib) / "facepayd-deps.pth").write_text(deps + "\n")
        # The fresh venv has no pip of its own: the project venv's runs through the .pth,
        # installing into the fresh venv (its sys.prefix).
        _run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel], cwd=work)
        assert "No broken requirements" in _run([python, "-m", "pip", "check"], cwd=work)
        yield wheel, venv / "bin"


def test_wheel_ships_the_protos_and_the_console_scripts(installed: tuple[Path, Path]) -> None:
    wheel, bin_dir = installed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for proto in PROTOS:
            inside = proto.relative_to(ROOT / "protos").as_posix()
            assert inside in names
            assert archive.read(inside) == proto.read_bytes()
    for script in ("facepayd", "facepay", "facepayd-adb"):
        assert (bin_dir / script).is_file(), script
    # The packages come from the fresh venv, not from the repository.
    where = _run(
        [bin_dir / "python", "-c", "import facepayd, facepay_client; print(facepayd.__file__)"],
        cwd=bin_dir,
    )
    assert where.startswith(str(bin_dir.parent)), where
    # adb.service's ExecStart: the bundled adb behind a fixed path.
    assert "Android Debug Bridge" in _run([bin_dir / "facepayd-adb", "version"], cwd=bin_dir)


def test_simulated_daemon_and_status_from_the_installed_venv(
    installed: tuple[Path, Path],
) -> None:
    _, bin_dir = installed
    with tempfile.TemporaryDirectory(prefix="fprun-", dir="/tmp") as tmp:
        run = Path(tmp)
        socket = run / "facepayd.sock"
        log = (run / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [bin_dir / "facepayd", "--simulate", "--socket", socket, "--state-dir", run / "state"],
            cwd=run,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            # --wait: the CLI waits (up to --timeout) for the daemon to serve; no sleep here.
            cli = [bin_dir / "facepay", "--socket", socket, "--timeout", "30", "--wait"]
            status = json.loads(_run([*cli, "--json", "status"], cwd=run))
            assert status["state"] == "READY"  # --json uses the short enum names
            assert status["device"]["serial"] == "SIMFACE0001"
            assert status["device"]["face_app_installed"] is True
            version = _run([bin_dir / "python", "-c", _VERSION], cwd=run).strip()
            assert status["daemon_version"] == version
            text = _run([*cli, "status"], cwd=run)
            assert text.splitlines()[0].split() == ["state:", "READY"]
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=30)
            log.close()
        assert code == 0, (run / "daemon.log").read_text()[-2000:]


_VERSION = "import importlib.metadata as m; print(m.version('facepay-terminal'))"
