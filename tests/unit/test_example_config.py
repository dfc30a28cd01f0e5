"""The example config documents every key of ops/config.py with its default, and loads."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facepayd.ops import config

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "facepayd.example.toml"

# Keys without a usable default (the merchant's identity, credential names) or shown with the
# production value; every other key must carry exactly its default.
NOT_DEFAULT = {
    "log.json",
    "merchant.appid",
    "merchant.mch_id",
    "merchant.store_id",
    "merchant.store_name",
    "merchant.device_id",
    "merchant.api_key",
    "merchant.cert",
    "merchant.cert_password",
    "payscore.api_v3_key",
    "payscore.private_key",
}


def _leaves(section: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf key of a config dataclass (instance or class) with its value."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def _raw_leaves(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            found.update(_raw_leaves(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def test_every_config_key_is_in_the_example() -> None:
    with EXAMPLE.open("rb") as f:
        written = _raw_leaves(tomllib.load(f))
    keys = [key for key, _ in _leaves(config.Config())]
    assert len(keys) > 50  # the walk found the sections, not an empty dataclass
    assert [key for key in keys if key not in written] == []
    assert sorted(set(written) - set(keys)) == []


def test_the_example_gives_the_defaults() -> None:
    defaults = dict(_leaves(config.Config()))
    loaded = dict(_leaves(config.load(EXAMPLE)))
    differ = {k for k in defaults if loaded[k] != defaults[k]}
    # Exactly the exemptions: one that now shows its default belongs in the check again.
    assert sorted(differ) == sorted(NOT_DEFAULT)


def _comment_before(key: str) -> str:
    """The comment lines right above `key = ...` in the example, lower-cased."""
    lines = EXAMPLE.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
    comment: list[str] = []
    for line in reversed(lines[:index]):
        if not line.startswith("#"):
            break
        comment.insert(0, line.lstrip("# "))
    return " ".join(comment).lower()


def test_the_trust_store_and_certificate_rules_are_stated() -> None:
    ca = _comment_before("ca_file")
    assert all(word in ca for word in ("replaces", "certifi"))
    assert not any(word in ca for word in ("adds", "extra", "in addition"))
    cert = _comment_before("cert")
    assert all(word in cert for word in (".p12", ".pfx", "pem", "suffix"))
