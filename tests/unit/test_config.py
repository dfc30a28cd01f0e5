"""Config: typed, loaded once, unknown keys and wrong types refused with the key named."""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from facepayd.errors import ConfigError
from facepayd.ops import config
from facepayd.ops.config import SdkMode

# The merchant identity has no defaults: everything else does.
IDENTITY: dict[str, Any] = {
    "merchant": {
        "appid": "wx0000000000000001",
        "mch_id": "1900000109",
        "store_id": "S1",
        "store_name": "门店 1",
        "device_id": "D1",
        "api_key": "wxpay-api-key",
    }
}


def with_identity(**sections: dict[str, Any]) -> dict[str, Any]:
    """IDENTITY plus sections, merged per key."""
    raw = copy.deepcopy(IDENTITY)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def test_defaults_and_the_merchant_identity_are_a_valid_config() -> None:
    loaded = config.from_mapping(with_identity())
    assert loaded.sdk.mode is SdkMode.NON_AGGREGATE
    assert loaded.payments.poll_interval == 5.0


def test_the_merchant_identity_is_required() -> None:
    with pytest.raises(ConfigError, match=r"^merchant\.appid: must not be empty$"):
        config.from_mapping({})


def leaf_keys(cls: type[Any] = config.Config, prefix: str = "") -> list[tuple[str, Any]]:
    """Every dotted key of the config with its type hint."""
    keys: list[tuple[str, Any]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            keys += leaf_keys(hint, f"{prefix}{f.name}.")
        else:
            keys.append((f"{prefix}{f.name}", hint))
    return keys


def test_every_string_and_integer_key_has_a_rule() -> None:
    strings = {k for k, h in leaf_keys() if h is str or h == tuple[str, ...]}
    integers = {k for k, h in leaf_keys() if h is int}
    assert strings == set(config._STRING_RULES)
    assert integers == set(config._INT_RANGES)


def test_init_retry_backoff_defaults_and_values() -> None:
    defaults = config.from_mapping(with_identity()).sdk
    assert 0 < defaults.init_retry_backoff <= defaults.init_retry_backoff_max
    loaded = config.from_mapping(
        with_identity(sdk={"init_retry_backoff": 1, "init_retry_backoff_max": 8})
    )
    assert (loaded.sdk.init_retry_backoff, loaded.sdk.init_retry_backoff_max) == (1.0, 8.0)


def test_example_config_sets_every_sdk_key() -> None:
    example = Path(__file__).parents[2] / "systemd" / "facepayd.example.toml"
    raw = tomllib.loads(example.read_text())
    loaded = config.from_mapping(raw)
    assert set(raw["sdk"]) >= {"init_retry_backoff", "init_retry_backoff_max"}
    assert loaded.sdk.init_retry_backoff == raw["sdk"]["init_retry_backoff"]


def test_values_are_typed() -> None:
    loaded = config.from_mapping(
        with_identity(
            sdk={"mode": "aggregate", "proxy": {"ip": "10.0.0.1", "proxy_type": 2}},
            payments={"poll_interval": 1},
        )
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
        ({"sdk": {"init_retries": -1}}, "sdk.init_retries: must be an integer from 0 to 1000"),
        ({"sdk": {"init_retry_delay": 0}}, "sdk.init_retry_delay: must be a finite number"),
        ({"sdk": {"init_retry_backoff": 0}}, "sdk.init_retry_backoff: must be a finite number"),
        (
            {"sdk": {"init_retry_backoff": 10, "init_retry_backoff_max": 5}},
            "sdk.init_retry_backoff_max: must not be less than init_retry_backoff",
        ),
        ({"sdk": {"proxy": {"proxy_type": 4}}}, "sdk.proxy.proxy_type: must be an integer"),
        ({"sdk": {"proxy": {"port": "80a"}}}, "sdk.proxy.port: must be a port"),
        ({"device": {"call_timeout": "10"}}, "device.call_timeout: must be a number of seconds"),
        ({"device": {"call_timeout": True}}, "device.call_timeout: must be a number of seconds"),
        ({"device": {"call_timeout": math.nan}}, "device.call_timeout: must be a finite number"),
        ({"device": {"call_timeout": math.inf}}, "device.call_timeout: must be a finite number"),
        ({"device": {"call_timeout": 1e9}}, "device.call_timeout: must be a finite number"),
        ({"device": {"transport": "usb"}}, "device.transport: must be one of adb, tcp"),
        ({"device": {"adb_server": "5037"}}, "device.adb_server: must be host:port"),
        ({"device": {"tcp_address": "h:70000"}}, "device.tcp_address: must be host:port with"),
        ({"device": {"heartbeat_interval": 0}}, "device.heartbeat_interval: must be a finite"),
        ({"merchant": {"sign_type": "SHA1"}}, "merchant.sign_type: must be one of"),
        ({"merchant": {"appid": "wx 1"}}, "merchant.appid: must be printable ASCII"),
        ({"merchant": {"mch_id": "1" * 33}}, "merchant.mch_id: must be at most 32 bytes"),
        ({"merchant": {"store_name": "a\nb"}}, "merchant.store_name: must not contain control"),
        ({"merchant": {"store_name": "店" * 43}}, "merchant.store_name: must be at most 128 bytes"),
        ({"merchant": {"spbill_create_ip": "localhost"}}, "merchant.spbill_create_ip: must be"),
        ({"merchant": {"api_key": ""}}, "merchant.api_key: must not be empty"),
        ({"wxpay": {"api_base_url": "http://api.mch.weixin.qq.com"}}, "wxpay.api_base_url: "),
        ({"wxpay": {"authinfo_url": "HTTP://payapp.weixin.qq.com/x"}}, "wxpay.authinfo_url: "),
        ({"wxpay": {"api_base_url": "https://"}}, "wxpay.api_base_url: must be an https:// URL"),
        ({"wxpay": {"api_base_url": "https://u:p@h"}}, "wxpay.api_base_url: must not carry"),
        ({"wxpay": {"api_base_url": "https://h:99999"}}, "wxpay.api_base_url: must be a valid"),
        ({"wxpay": {"max_response_bytes": 0}}, "wxpay.max_response_bytes: must be an integer"),
        ({"log": {"level": "verbose"}}, "log.level: must be one of"),
        ({"payments": {"give_up_after": 5.0, "reverse_after": 15.0}}, "payments.give_up_after"),
        ({"payments": {"max_amount": 0}}, "payments.max_amount: must be an integer from 1"),
        # No margin past the client's whole-request timeout: a resend could overtake the first.
        (
            {"wxpay": {"request_timeout": 30.0}},
            "payments.in_flight_after: must be at least wxpay.request_timeout (30 s) plus a"
            " margin of 7.5 s",
        ),
        (
            {"wxpay": {"request_timeout": 2.5}, "payments": {"in_flight_after": 3.0}},
            "payments.in_flight_after: must be at least wxpay.request_timeout (2.5 s) plus a"
            " margin of 1 s, i.e. 3.5 s",
        ),
        ({"refunds": {"processing_attention_days": 0}}, "refunds.processing_attention_days: must"),
        ({"payscore": {"service_id": "5"}}, "payscore.private_key: is required"),
        ({"payscore": {"notify_url": "http://h/n"}}, "payscore.notify_url: must be an https://"),
        ({"server": "x"}, "server: must be a table"),
        ({"server": {"socket": "/" + "s" * 107}}, "server.socket: must be at most 107 bytes"),
        ({"server": {"stop_grace": -1}}, "server.stop_grace: must be a finite number"),
        ({"state": {"dir": ""}}, "state.dir: must not be empty"),
    ],
)
def test_bad_config_is_refused_naming_the_key(raw: dict[str, Any], message: str) -> None:
    merged = copy.deepcopy(IDENTITY)
    for name, values in raw.items():
        if isinstance(values, dict) and isinstance(merged.get(name), dict):
            merged[name].update(values)
        else:
            merged[name] = values
    with pytest.raises(ConfigError) as caught:
        config.from_mapping(merged)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_socket_path_at_the_unix_limit_is_accepted() -> None:
    at_limit = "/" + "s" * (config.UNIX_PATH_MAX - 1)
    assert config.from_mapping(with_identity(server={"socket": at_limit})).server.socket
    too_long = Path(at_limit + "s")
    with pytest.raises(ConfigError, match=r"^server\.socket: must be at most 107 bytes"):
        config.override(config.from_mapping(with_identity()), socket=too_long)


def test_load_reports_the_file_on_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(path)


def test_overrides_from_the_command_line(tmp_path: Path) -> None:
    loaded = config.override(
        config.from_mapping(with_identity()), socket=tmp_path / "s.sock", state_dir=tmp_path
    )
    assert loaded.server.socket == str(tmp_path / "s.sock")
    assert loaded.state_dir == tmp_path


def test_the_in_flight_bound_leaves_a_margin_past_the_client_timeout() -> None:
    loaded = config.from_mapping(
        {**IDENTITY, "wxpay": {"request_timeout": 2.0}, "payments": {"in_flight_after": 3.0}}
    )
    assert loaded.payments.in_flight_after >= loaded.wxpay.request_timeout + 1.0
    defaults = config.from_mapping(IDENTITY)
    margin = config.in_flight_margin(defaults.wxpay.request_timeout)
    assert defaults.payments.in_flight_after >= defaults.wxpay.request_timeout + margin
