"""The authinfo cache with a fake fetcher and a manual clock."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from facepayd.clock import ManualClock
from facepayd.errors import BackendUnavailable
from facepayd.face.authinfo import AuthinfoCache, AuthinfoKey
from facepayd.wxpay.models import AuthinfoGrant
from tests.helpers import until

KEY = AuthinfoKey("dev1", "wxapp", "1900000109", "", "", "store1")


class Fetcher:
    """Counts fetches; each returns a new authinfo; can be made to wait or fail."""

    def __init__(self, expires_in: int = 3600) -> None:
        self.count = 0
        self.expires_in = expires_in
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def __call__(self) -> AuthinfoGrant:
        self.count += 1
        await self.gate.wait()
        if self.fail:
            raise BackendUnavailable("simulated outage")
        return AuthinfoGrant(f"authinfo-{self.count}", self.expires_in)


def make_cache(
    tmp_path: Path, fetcher: Fetcher, clock: ManualClock, refresh_ahead: float = 60
) -> AuthinfoCache:
    return AuthinfoCache(
        key=KEY,
        fetch=fetcher,
        clock=clock,
        path=tmp_path / "authinfo.json",
        refresh_ahead=refresh_ahead,
    )


async def test_concurrent_callers_share_one_fetch(tmp_path: Path) -> None:
    fetcher, clock = Fetcher(), ManualClock()
    fetcher.gate.clear()
    cache = make_cache(tmp_path, fetcher, clock)
    waiters = [asyncio.ensure_future(cache.get()) for _ in range(10)]
    await until(lambda: fetcher.count == 1, what="the fetch to start")
    fetcher.gate.set()
    assert set(await asyncio.gather(*waiters)) == {"authinfo-1"}
    assert fetcher.count == 1
    assert await cache.get() == "authinfo-1"
    assert cache.fetches == 1


async def test_a_failed_fetch_reaches_every_waiter_and_the_next_call_retries(
    tmp_path: Path,
) -> None:
    fetcher, clock = Fetcher(), ManualClock()
    fetcher.gate.clear()
    fetcher.fail = True
    cache = make_cache(tmp_path, fetcher, clock)
    waiters = [asyncio.ensure_future(cache.get()) for _ in range(3)]
    await until(lambda: fetcher.count == 1, what="the fetch to start")
    fetcher.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    fetcher.fail = False
    assert await cache.get() == "authinfo-2"


async def test_expired_authinfo_is_fetched_again(tmp_path: Path) -> None:
    fetcher, clock = Fetcher(expires_in=100), ManualClock()
    cache = make_cache(tmp_path, fetcher, clock)
    assert await cache.get() == "authinfo-1"
    clock._now += 99
    assert await cache.get() == "authinfo-1"
    clock._now += 2
    assert await cache.get() == "authinfo-2"


async def test_kept_across_restarts_in_a_0600_file(tmp_path: Path) -> None:
    fetcher, clock = Fetcher(), ManualClock()
    cache = make_cache(tmp_path, fetcher, clock)
    await cache.get()
    path = tmp_path / "authinfo.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = make_cache(tmp_path, Fetcher(), clock)
    again.load()
    assert again.valid()
    assert await again.get() == "authinfo-1"
    assert again.fetches == 0


async def test_a_cache_file_for_another_key_or_expired_is_not_used(tmp_path: Path) -> None:
    fetcher, clock = Fetcher(expires_in=10), ManualClock()
    await make_cache(tmp_path, fetcher, clock).get()
    other = AuthinfoCache(
        key=AuthinfoKey("dev2", "wxapp", "1900000109", "", "", "store1"),
        fetch=Fetcher(),
        clock=clock,
        path=tmp_path / "authinfo.json",
        refresh_ahead=1,
    )
    other.load()
    assert not other.valid()
    clock._now += 11
    stale = make_cache(tmp_path, Fetcher(), clock)
    stale.load()
    assert not stale.valid()


async def test_rejected_authinfo_is_replaced_once(tmp_path: Path) -> None:
    fetcher, clock = Fetcher(), ManualClock()
    cache = make_cache(tmp_path, fetcher, clock)
    first = await cache.get()
    assert await cache.replace(first) == "authinfo-2"
    # A second caller holding the old value gets the new one without another fetch.
    assert await cache.replace(first) == "authinfo-2"
    assert fetcher.count == 2


async def test_refreshed_in_the_background_ahead_of_expiry(tmp_path: Path) -> None:
    fetcher, clock = Fetcher(expires_in=600), ManualClock()
    cache = make_cache(tmp_path, fetcher, clock, refresh_ahead=60)
    await cache.get()
    cache.start()
    try:
        await until(lambda: clock.sleepers >= 1, what="the refresher to sleep")
        await clock.advance(539)
        assert fetcher.count == 1
        await clock.advance(2)
        await until(lambda: fetcher.count == 2, what="the background refresh")
        assert await cache.get() == "authinfo-2"
    finally:
        await cache.stop()


@pytest.mark.parametrize("content", ["not json", '{"x": 1}', "[]"])
async def test_a_corrupt_cache_file_is_ignored(tmp_path: Path, content: str) -> None:
    (tmp_path / "authinfo.json").write_text(content)
    cache = make_cache(tmp_path, Fetcher(), ManualClock())
    cache.load()
    assert not cache.valid()
