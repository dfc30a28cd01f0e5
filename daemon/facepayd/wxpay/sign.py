"""WeChat Pay v2 request and response signatures (MD5 or HMAC-SHA256 over sorted k=v pairs)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from facepayd.errors import ConfigError

MD5 = "MD5"
HMAC_SHA256 = "HMAC-SHA256"
SIGN_TYPES = frozenset({MD5, HMAC_SHA256})

Params = Mapping[str, "str | int | None"]


def signing_string(params: Params, api_key: str) -> str:
    """The exact text that is hashed: sorted non-empty `k=v` pairs joined by `&`, then the key."""
    pairs = [
        f"{name}={value}"
        for name, value in sorted(params.items())
        if name != "sign" and value is not None and value != ""
    ]
    pairs.append(f"key={api_key}")
    return "&".join(pairs)


def sign(params: Params, api_key: str, sign_type: str) -> str:
    """The upper-hex signature of params; `sign` itself and None/"" values are left out."""
    text = signing_string(params, api_key).encode("utf-8")
    if sign_type == MD5:
        # MD5 is what the v2 protocol mandates for this sign_type; it is not our choice.
        return hashlib.md5(text, usedforsecurity=False).hexdigest().upper()
    if sign_type == HMAC_SHA256:
        return hmac.new(api_key.encode("utf-8"), text, hashlib.sha256).hexdigest().upper()
    raise ConfigError(f"unsupported sign_type {sign_type!r}; use MD5 or HMAC-SHA256")


def verify(params: Mapping[str, str], api_key: str, sign_type: str) -> bool:
    """Whether params carry a valid `sign`; a missing or empty one never verifies."""
    given = params.get("sign", "")
    if not given:
        return False
    expected = sign(params, api_key, sign_type)
    # Bytes, because compare_digest refuses non-ASCII str and a forged sign may contain any.
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8"))
