"""`facepayd`: run the daemon from a config file, or wired to the simulators with --simulate."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import structlog

from facepayd import __version__
from facepayd.daemon import Daemon, build_outside
from facepayd.errors import FacepayError
from facepayd.ops import config as config_module
from facepayd.ops import logs
from facepayd.ops.config import Config

log = structlog.get_logger(__name__)

# A refused config or start: the unit's RestartPreventExitStatus= keeps systemd from looping.
EXIT_CONFIG = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="facepayd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="the TOML config file")
    source.add_argument(
        "--simulate",
        action="store_true",
        help="run against the embedded simulators (no hardware, no WeChat account)",
    )
    parser.add_argument("--socket", type=Path, help="gRPC Unix socket (overrides the config)")
    parser.add_argument("--state-dir", type=Path, help="state directory (overrides the config)")
    parser.add_argument("--log-level", help="debug, info, warning or error")
    parser.add_argument("--json-logs", action="store_true", default=None, help="JSON log lines")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, cfg: Config | None = None) -> int:
    """Start, wait for SIGTERM/SIGINT, stop; cfg is the checked config (None: --simulate)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stack = None
    try:
        if cfg is None:
            from facepayd.sim.stack import SimOptions, SimStack

            state_dir = args.state_dir or Path("facepayd-sim-state")
            # WeChat's own pace (5 s polls, 15 s earliest reverse, 30 s give-up): what a till sees.
            stack = SimStack(state_dir / "sim", SimOptions.wechat_timers())
            await stack.start()
            cfg = stack.daemon_config(
                socket=args.socket or state_dir / "facepayd.sock", state_dir=state_dir
            )
            config_module.check_paths(cfg)
        await serve(args, cfg, stop)
    finally:
        if stack is not None:
            await stack.stop()
    return 0


async def serve(args: argparse.Namespace, cfg: Config, stop: asyncio.Event) -> None:
    """Run the daemon on a checked config until stop is set."""
    logs.configure_logging(
        json=args.json_logs or cfg.log.json, level=args.log_level or cfg.log.level
    )
    daemon = Daemon(cfg, build_outside(cfg))
    try:
        await daemon.start()
        await stop.wait()
    finally:
        await daemon.stop()


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = parse_args(argv)
    try:
        # Every config rule is checked before anything starts: no lock, journal, socket or adb.
        cfg = (
            None
            if args.simulate
            else config_module.load_checked(
                args.config, socket=args.socket, state_dir=args.state_dir
            )
        )
        return asyncio.run(run(args, cfg))
    except FacepayError as exc:
        # One line, so journald and a supervisor show the whole reason.
        print(f"facepayd: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
