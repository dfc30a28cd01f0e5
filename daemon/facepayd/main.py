"""`facepayd`: run the daemon from a config file, or wired to the simulators with --simulate."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import structlog

from facepayd import __version__
from facepayd.daemon import Daemon, build_outside, load_merchant_cert, load_payscore_keys
from facepayd.errors import ConfigError, FacepayError
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
    source.add_argument(
        "--check-config",
        type=Path,
        metavar="FILE",
        help="check FILE as a start would (every key, path, secret, the merchant certificate"
        " and PayScore keys), print a summary without secrets, exit 0 (good) or 2 (not)",
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


def check_config(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Everything a start checks before it touches anything; the summary, without secrets."""
    cfg = config_module.load_checked(
        args.check_config, socket=args.socket, state_dir=args.state_dir
    )
    m, w, d = cfg.merchant, cfg.wxpay, cfg.device
    summary = [
        ("config", str(args.check_config)),
        ("merchant.appid", m.appid),
        ("merchant.mch_id", m.mch_id),
        ("merchant.sub_appid", m.sub_appid or "-"),
        ("merchant.sub_mch_id", m.sub_mch_id or "-"),
        ("merchant.store_id", m.store_id),
        ("merchant.device_id", m.device_id),
        ("merchant.api_key", f"{m.api_key} (readable)"),
        ("merchant.sign_type", m.sign_type),
    ]
    cert = load_merchant_cert(cfg)
    if cert is None:
        summary.append(("merchant.cert", "none (reverse needs one)"))
    else:
        certificate = cert.certificate
        expires = certificate.not_valid_after_utc
        if expires <= datetime.now(UTC):
            raise ConfigError(f"merchant.cert: the certificate expired on {expires:%Y-%m-%d}")
        kind = "PKCS#12" if Path(m.cert).suffix.lower() in (".p12", ".pfx") else "PEM"
        summary += [
            ("merchant.cert", f"{m.cert} ({kind})"),
            ("merchant.cert subject", certificate.subject.rfc4514_string()),
            ("merchant.cert expires", f"{expires:%Y-%m-%d %H:%M:%S} UTC"),
        ]
    summary += [
        ("wxpay.api_base_url", w.api_base_url),
        ("wxpay.authinfo_url", w.authinfo_url),
        ("wxpay.ca_file", w.ca_file or "certifi's bundle"),
    ]
    if d.transport == "tcp":
        summary.append(("device.transport", f"tcp {d.tcp_address}"))
    else:
        where = ", ".join(
            part
            for part in (
                f"adb server {d.adb_server}",
                f"serial {d.serial}" if d.serial else "",
                f"address {d.address}" if d.address else "",
                f"adb {d.adb_path}" if d.adb_path else "",
            )
            if part
        )
        summary.append(("device.transport", f"adb ({where})"))
    summary += [
        ("sdk.mode", str(cfg.sdk.mode)),
        ("server.socket", cfg.server.socket),
        ("state.dir", cfg.state.dir),
    ]
    keys = load_payscore_keys(cfg)
    if keys is None:
        summary.append(("payscore", "not configured"))
    else:
        summary += [
            ("payscore.service_id", cfg.payscore.service_id),
            ("payscore.serial_no", keys.merchant_serial_no),
            ("payscore platform keys", ", ".join(sorted(keys.platform_keys)) or "-"),
        ]
    return summary


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = parse_args(argv)
    if args.check_config is not None:
        try:
            summary = check_config(args)
        except FacepayError as exc:
            print(f"facepayd: {' '.join(str(exc).splitlines())}", file=sys.stderr)
            return EXIT_CONFIG
        width = max(len(key) for key, _ in summary) + 1
        for key, value in summary:
            print(f"{key + ':':<{width}} {value}")
        print("facepayd: config OK")
        return 0
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
