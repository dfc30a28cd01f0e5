"""The authinfo cache: keyed, shared between callers, refreshed ahead of expiry, kept on disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from facepayd.clock import Clock
from facepayd.errors import FacepayError
from facepayd.ops import logs
from facepayd.wxpay.models import AuthinfoGrant

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AuthinfoKey:
    """What an authinfo is valid for: one device, one merchant identity, one store."""

    device_id: str
    appid: str
    mch_id: str
    sub_appid: str
    sub_mch_id: str
    store_id: str

    def as_text(self) -> str:
        """A stable string form, the key in the cache file."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True, slots=True)
class CachedAuthinfo:
    """One authinfo, when it stops being valid and when it was fetched (unix seconds)."""

    authinfo: str
    expires_at: float
    fetched_at: float | None = None  # None: read from a file written before it was recorded


# Fetches rawdata from the SDK, then exchanges it with WeChat Pay for an authinfo.
Fetcher = Callable[[], Awaitable[AuthinfoGrant]]


class AuthinfoCache:
    """Hands out a valid authinfo without a fetch whenever one is cached."""

    def __init__(
        self,
        *,
        key: AuthinfoKey,
        fetch: Fetcher,
        clock: Clock,
        path: Path,
        refresh_ahead: float,
        can_refresh: Callable[[], bool] = lambda: True,
    ) -> None:
        self._key = key
        # Only this cache's live authinfo is masked in logs, not every one ever fetched.
        self._secret_slot = "authinfo " + key.as_text()
        self._fetch = fetch
        self._clock = clock
        self._path = path
        self._refresh_ahead = refresh_ahead
        self._can_refresh = can_refresh
        self._current: CachedAuthinfo | None = None
        self._inflight: asyncio.Future[CachedAuthinfo] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.fetches = 0
        # Why the last fetch failed ("" once one succeeds), for `facepay doctor`; no secrets.
        self._refresh_error = ""

    @property
    def fetched_at(self) -> float | None:
        """When the cached authinfo was fetched (None: nothing cached, or not recorded)."""
        return self._current.fetched_at if self._current else None

    @property
    def refresh_error(self) -> str:
        """Why the newest fetch failed, or "" when it did not."""
        return self._refresh_error

    @property
    def expires_at(self) -> float | None:
        """When the cached authinfo expires, None when nothing is cached."""
        return self._current.expires_at if self._current else None

    def load(self) -> None:
        """Read the cache file kept across restarts; a bad file is ignored and replaced."""
        try:
            raw = json.loads(self._path.read_text())
            entry = raw[self._key.as_text()]
            fetched = entry.get("fetched_at")
            cached = CachedAuthinfo(
                str(entry["authinfo"]),
                float(entry["expires_at"]),
                None if fetched is None else float(fetched),
            )
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("authinfo_cache_unreadable", path=str(self._path))
            return
        if cached.expires_at > self._clock.time():
            logs.replace_secret(self._secret_slot, cached.authinfo)
            self._current = cached
            log.info(
                "authinfo_cache_loaded", expires_in=int(cached.expires_at - self._clock.time())
            )

    def valid(self) -> bool:
        """Whether the cached authinfo can be used now."""
        return self._current is not None and self._current.expires_at > self._clock.time()

    async def get(self) -> str:
        """A valid authinfo: the cached one, or one fetch shared by every concurrent caller."""
        if self._current is not None and self._current.expires_at > self._clock.time():
            return self._current.authinfo
        return (await self._refresh()).authinfo

    async def replace(self, rejected: str) -> str:
        """The SDK refused `rejected`: drop it and fetch a new one (shared with other callers)."""
        if self._current is not None and self._current.authinfo == rejected:
            self._current = None
        return await self.get()

    def start(self) -> None:
        """Start refreshing ahead of expiry in the background."""
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    def poke(self) -> None:
        """Re-check the refresh deadline now (after a reconnect or init)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the background refresher."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    async def _refresh(self) -> CachedAuthinfo:
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_future()
            inflight = self._inflight
            try:
                cached = await self._fetch_once()
            except BaseException as exc:
                if isinstance(exc, FacepayError):
                    self._refresh_error = str(exc)
                self._inflight = None
                inflight.set_exception(exc)
                # Every caller saw the error through the future; mark it retrieved.
                inflight.exception()
                raise
            self._inflight = None
            inflight.set_result(cached)
            return cached
        return await asyncio.shield(self._inflight)

    async def _fetch_once(self) -> CachedAuthinfo:
        grant = await self._fetch()
        logs.replace_secret(self._secret_slot, grant.authinfo)
        self.fetches += 1
        now = self._clock.time()
        cached = CachedAuthinfo(grant.authinfo, now + max(grant.expires_in, 0), now)
        self._current = cached
        self._refresh_error = ""
        try:
            self._save(cached)
        except OSError as exc:
            # The cache in memory still serves; only a restart would fetch again.
            log.warning("authinfo_not_persisted", error=type(exc).__name__)
        log.info("authinfo_refreshed", expires_in=grant.expires_in)
        self._wake.set()
        return cached

    def _save(self, cached: CachedAuthinfo) -> None:
        # Written whole to a 0600 temporary file, then renamed, so a power cut leaves the old file.
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        entry = {
            "authinfo": cached.authinfo,
            "expires_at": cached.expires_at,
            "fetched_at": cached.fetched_at,
        }
        data = {self._key.as_text(): entry}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)

    async def _refresh_loop(self) -> None:
        while True:
            self._wake.clear()
            delay = self._seconds_until_refresh()
            if delay <= 0 and self._can_refresh():
                try:
                    await self._refresh()
                except FacepayError as exc:
                    log.warning("authinfo_refresh_failed", error=str(exc))
                    delay = 5.0
                else:
                    continue
            sleep = asyncio.ensure_future(self._clock.sleep(max(delay, 1.0)))
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleep, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                wake.cancel()

    def _seconds_until_refresh(self) -> float:
        if self._current is None:
            return 0.0
        return self._current.expires_at - self._refresh_ahead - self._clock.time()
