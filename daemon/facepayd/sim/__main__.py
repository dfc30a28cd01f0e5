"""`python -m facepayd.sim`: the simulators on their own, and a config `facepayd --config` can use.

Starts SimStack (the simulated terminal behind a fake adbd and the real adb server, simulated
WeChat Pay and PayScore over HTTPS with a test CA made now), writes the daemon config and the
0600 secret files it names under --dir, prints the config to stdout (its last line is the comment
"# end of facepayd config"), one line on stderr saying how to start the daemon, and runs until
Ctrl-C or SIGTERM. Timers are WeChat's unless --fast is given.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from facepayd.errors import FacepayError
from facepayd.ops import logs
from facepayd.sim.stack import SimOptions, SimStack
from facepayd.sim.wxpay import UnknownReverse

# The printed config's last line (a TOML comment): a reader of stdout knows it has it all.
END_OF_CONFIG = "# end of facepayd config"
CONFIG_FILE = "facepayd.toml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m facepayd.sim", description=__doc__)
    parser.add_argument(
        "--dir",
        type=Path,
        help="folder for the keys, certificates, secret files, config and daemon state "
        "(default: a new temporary folder, removed when the simulators stop)",
    )
    parser.add_argument(
        "--socket", type=Path, help="the daemon's socket (default: DIR/facepayd.sock)"
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="short timers, as the tests and the demo use (default: WeChat's own)",
    )
    parser.add_argument(
        "--device",
        choices=("adb", "tcp"),
        default="adb",
        help="reach the terminal through the real adb server and a fake adbd, or plain TCP",
    )
    parser.add_argument(
        "--unknown-reverse",
        choices=[m.value for m in UnknownReverse],
        default=UnknownReverse.REFUSE.value,
        help="how a reverse of an order WeChat Pay never saw is answered (default: REFUSE)",
    )
    parser.add_argument("--sdk-version", default="2.22.0", help="the simulated SDK's version")
    parser.add_argument("--log-level", default="warning", help="debug, info, warning or error")
    return parser.parse_args(argv)


def options_for(args: argparse.Namespace) -> SimOptions:
    """The simulated world the command line asks for."""
    chosen = {
        "device": args.device,
        "unknown_reverse": UnknownReverse(args.unknown_reverse),
        "sdk_version": args.sdk_version,
    }
    return SimOptions(**chosen) if args.fast else SimOptions.wechat_timers(**chosen)


async def run(args: argparse.Namespace, directory: Path, *, temporary: bool) -> int:
    """Start the simulators, print the config, wait for SIGTERM/SIGINT, stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stack = SimStack(directory / "sim", options_for(args))
    try:
        await stack.start()
        config_path = stack.write_daemon_config(
            directory / CONFIG_FILE,
            socket=args.socket or directory / "facepayd.sock",
            state_dir=directory / "state",
        )
        sys.stdout.write(config_path.read_text().rstrip("\n") + "\n" + END_OF_CONFIG + "\n")
        sys.stdout.flush()
        removed = " (this folder is removed when they stop)" if temporary else ""
        print(
            f"facepay-sim: simulators running{removed}; start the daemon with: "
            f"facepayd --config {config_path}   (Ctrl-C stops the simulators)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        await stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    temporary = args.dir is None
    directory: Path = (
        Path(tempfile.mkdtemp(prefix="facepay-sim-")) if temporary else args.dir.resolve()
    )
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        logs.configure_logging(level=args.log_level)
        return asyncio.run(run(args, directory, temporary=temporary))
    except FacepayError as exc:
        print(f"facepay-sim: {exc}", file=sys.stderr)
        return 2
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
