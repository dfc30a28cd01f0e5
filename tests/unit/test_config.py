"""Config: typed, loaded once, unknown keys and wrong types refused with the key named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from facepayd.errors import ConfigError
from facepayd.ops import config
from facepayd.ops.config import SdkMode


def test_defaults_are_a_valid_config() -> None:
    loaded = config.from_mapping({})
    assert loaded.sdk.mode is SdkMode.NON_AGGREGATE
    assert loaded.payments.poll_interval == 5.0


def test_init_retry_backoff_defaults_and_values() -> None:
    defaults = config.from_mapping({}).sdk
    assert 0 < defaults.init_retry_backoff <= defaults.init_retry_backoff_max
    loaded = config.from_mapping({"sdk": {"init_retry_backoff": 1, "init_retry_backoff_max": 8}})
    assert (loaded.sdk.init_retry_backoff, loaded.sdk.init_retry_backoff_max) == (1.0, 8.0)


def test_example_config_sets_every_sdk_key() -> None:
    example = Path(__file__).parents[2] / "systemd" / "facepayd.example.toml"
    raw = tomllib.loads(example.read_text())
    loaded = config.from_mapping(raw)
    assert set(raw["sdk"]) >= {"init_retry_backoff", "init_retry_backoff_max"}
    assert loaded.sdk.init_retry_backoff == raw["sdk"]["init_retry_backoff"]


def test_values_are_typed() -> None:
    loaded = config.from_mapping(
        {
            "sdk": {"mode": "aggregate", "proxy": {"ip": "10.0.0.1", "proxy_type": 2}},
            "payments": {"poll_interval": 1},
        }
    )
    assert loaded.sdk.mode is SdkMode.AGGREGATE
    assert loaded.sdk.proxy.proxy_type == 2
    assert isinstance(loaded.payments.poll_interval, float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"bogus": {}}, "config: unknown key(s): bogus"),
        ({"sdk": {"nope": 1}}, "sdk: unknown key(s): nope"),
        ({"sdk": {"proxy": {"x": 1}}}, "sdk.proxy: unknown key(s): x"),
        ({"sdk": {"mode": "sometimes"}}, "sdk.mode: must be one of"),
        ({"sdk": {"firewall": "yes"}}, "sdk.firewall: must be true or false"),
        ({"sdk": {"init_retries": 1.5}}, "sdk.init_retries: must be an integer"),
        ({"sdk": {"init_retries": -1}}, "sdk.init_retries: must not be negative"),
        ({"sdk": {"init_retry_delay": 0}}, "sdk.init_retry_delay: must be greater than 0"),
        ({"sdk": {"init_retry_backoff": 0}}, "sdk.init_retry_backoff/init_retry_backoff_max"),
        (
            {"sdk": {"init_retry_backoff": 10, "init_retry_backoff_max": 5}},
            "sdk.init_retry_backoff/init_retry_backoff_max",
        ),
        ({"device": {"call_timeout": "10"}}, "device.call_timeout: must be a float"),
        ({"device": {"transport": "usb"}}, "device.transport: must be adb or tcp"),
        (
            {"device": {"heartbeat_interval": 0}},
            "device.heartbeat_interval: must be greater than 0",
        ),
        ({"merchant": {"sign_type": "SHA1"}}, "merchant.sign_type"),
        ({"payments": {"give_up_after": 5.0, "reverse_after": 15.0}}, "payments.give_up_after"),
        ({"server": "x"}, "server: must be a table"),
    ],
)
def test_bad_config_is_refused_naming_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.from_mapping(raw)


def test_load_reports_the_file_on_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(path)


def test_overrides_from_the_command_line(tmp_path: Path) -> None:
    loaded = config.override(
        config.from_mapping({}), socket=tmp_path / "s.sock", state_dir=tmp_path
    )
    assert loaded.server.socket == str(tmp_path / "s.sock")
    assert loaded.state_dir == tmp_path
