"""The doctor's checks that need no full daemon: authinfo age, the adb server, the bridge probe."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from facepayd.errors import BackendUnavailable, TerminalBusy
from facepayd.face.authinfo import AuthinfoCache
from facepayd.ops.config import Config, DeviceConfig, SdkMode
from facepayd.ops.diagnose import Check, Diagnostics
from facepayd.payments.refund_models import Refund, RefundRequest, RefundState
from facepayd.wxpay.models import AuthinfoGrant
from tests.helpers import settle
from tests.unit.face_world import World, face_world

MakeDiagnostics = Callable[..., Diagnostics]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def diagnostics(
    world: World,
    http: httpx.AsyncClient,
    *,
    device: DeviceConfig | None = None,
    under_systemd: bool = False,
    authinfo: AuthinfoCache | None = None,
    refunds: object = None,
) -> Diagnostics:
    """The daemon's checks over the world's live objects."""
    return Diagnostics(
        config=Config(device=device or world.device),
        clock=world.clock,
        lifecycle=world.lifecycle,
        authinfo=authinfo or world.authinfo,
        payments=world.payments,
        serving=lambda: True,
        http=http,
        client_certificate=None,
        sessions=world.sessions,
        under_systemd=under_systemd,
        refunds=refunds,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- authinfo


class Grants:
    """WeChat Pay's authinfo answers: a grant, or an error once failing is set."""

    def __init__(self, expires_in: int = 7200) -> None:
        self.expires_in = expires_in
        self.failing = False

    async def __call__(self) -> AuthinfoGrant:
        if self.failing:
            raise BackendUnavailable("authinfo: WeChat Pay did not answer")
        return AuthinfoGrant("authinfo-secret-4711", self.expires_in)


def cache(world: World, path: Path, fetch: Callable[[], Awaitable[AuthinfoGrant]]) -> AuthinfoCache:
    return AuthinfoCache(
        key=world.authinfo._key,
        fetch=fetch,
        clock=world.clock,
        path=path,
        refresh_ahead=300.0,
    )


async def test_authinfo_says_how_old_it_is_and_when_it_expires(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    async with face_world(tmp_path) as world:
        grants = Grants(expires_in=2 * 3600)
        authinfo = cache(world, tmp_path / "a.json", grants)
        check = diagnostics(world, http, authinfo=authinfo).authinfo()
        assert (check.ok, check.detail) == (False, "none cached")
        assert "fix the sdk and clock_skew checks" in check.fix

        await authinfo.get()
        await world.clock.advance(72 * 60)
        check = diagnostics(world, http, authinfo=authinfo).authinfo()
        assert check.ok, check
        assert check.detail.startswith("fetched 1 h 12 min ago, expires in 48 min (")
        assert "authinfo-secret" not in check.detail

        # Refreshing ahead of expiry fails while the cached one still serves: ✗, why, the fix.
        grants.failing = True
        authinfo.start()
        try:
            await settle()
            await world.clock.advance(7000 - 72 * 60)
            check = diagnostics(world, http, authinfo=authinfo).authinfo()
        finally:
            await authinfo.stop()
        assert authinfo.valid()
        assert not check.ok
        assert check.detail.startswith("fetched 1 h 56 min ago, expires in 3 min (")
        assert check.detail.endswith("; refreshing it fails: authinfo: WeChat Pay did not answer")
        assert "fix the sdk and clock_skew checks" in check.fix


async def test_authinfo_expired_and_failing_to_refresh_is_a_failure(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    async with face_world(tmp_path) as world:
        grants = Grants(expires_in=600)
        authinfo = cache(world, tmp_path / "a.json", grants)
        await authinfo.get()
        await world.clock.advance(600 + 5 * 60)
        check = diagnostics(world, http, authinfo=authinfo).authinfo()
        assert not check.ok
        assert check.detail == "fetched 15 min ago, expired 5 min ago"
        grants.failing = True
        with pytest.raises(BackendUnavailable):
            await authinfo.get()
        check = diagnostics(world, http, authinfo=authinfo).authinfo()
        assert check.detail.endswith("; refreshing it fails: authinfo: WeChat Pay did not answer")
        # The next fetch that works clears it.
        grants.failing = False
        await authinfo.get()
        assert diagnostics(world, http, authinfo=authinfo).authinfo().ok


async def test_fetched_at_is_kept_in_the_cache_file_and_old_files_still_load(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    async with face_world(tmp_path) as world:
        path = tmp_path / "a.json"
        await cache(world, path, Grants()).get()
        fetched = world.clock.time()
        await world.clock.advance(90)
        # A restart: the file is read back with its fetch time.
        reloaded = cache(world, path, Grants())
        reloaded.load()
        assert reloaded.fetched_at == fetched
        check = diagnostics(world, http, authinfo=reloaded).authinfo()
        assert check.detail.startswith("fetched 90 s ago, expires in ")

        # A file written before fetched_at was recorded: it still serves.
        raw = json.loads(path.read_text())
        for entry in raw.values():
            del entry["fetched_at"]
        path.write_text(json.dumps(raw))
        old = cache(world, path, Grants())
        old.load()
        assert old.valid()
        assert old.fetched_at is None
        check = diagnostics(world, http, authinfo=old).authinfo()
        assert check.ok
        assert check.detail.startswith("fetched at an unknown time, expires in ")


# ---------------------------------------------------------------- the adb server


@pytest.fixture
async def adb_server() -> AsyncIterator[int]:
    """A stand-in adb server that answers host:version with 41 (0x29), as adb 1.0.41 does."""
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = int(await reader.readexactly(4), 16)
        requests.append(await reader.readexactly(length))
        writer.write(b"OKAY00040029")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
    assert set(requests) <= {b"host:version"}


async def _closed_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


async def test_adb_server_answering_shows_its_version(
    tmp_path: Path, http: httpx.AsyncClient, adb_server: int
) -> None:
    async with face_world(tmp_path) as world:
        device = dataclasses.replace(
            world.device, transport="adb", adb_server=f"127.0.0.1:{adb_server}"
        )
        check = await diagnostics(world, http, device=device, under_systemd=True).adb_server()
        assert check == Check(
            "adb_server", True, f"127.0.0.1:{adb_server} answering, version 41; adb.service"
        )


@pytest.mark.parametrize("systemd", [True, False])
async def test_no_adb_server_fails_with_the_unit_under_systemd(
    tmp_path: Path, http: httpx.AsyncClient, systemd: bool
) -> None:
    port = await _closed_port()
    async with face_world(tmp_path) as world:
        device = dataclasses.replace(world.device, transport="adb", adb_server=f"127.0.0.1:{port}")
        check = await diagnostics(world, http, device=device, under_systemd=systemd).adb_server()
    assert not check.ok
    assert check.detail == f"127.0.0.1:{port}: connection refused (nothing listens there)"
    if systemd:
        assert "systemctl enable --now adb.service" in check.fix
        assert "journalctl -u adb.service" in check.fix
    else:
        assert f"adb -P {port} start-server" in check.fix
        assert "adb.service" not in check.fix


async def test_a_tcp_device_needs_no_adb_server(tmp_path: Path, http: httpx.AsyncClient) -> None:
    async with face_world(tmp_path) as world:
        check = await diagnostics(world, http).adb_server()
    assert check == Check("adb_server", True, "not used (device.transport = tcp)")


# ---------------------------------------------------------------- the bridge probe


async def test_an_idle_aggregate_till_passes_the_bridge_check(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    async with face_world(tmp_path, mode=SdkMode.AGGREGATE) as world:
        check = await diagnostics(world, http).bridge()
        assert check.ok, check
        assert check.detail.startswith("released between sessions (aggregate mode)")
        assert world.sim.calls["getWxpayfaceRawdata"] == 0


async def test_the_bridge_probe_skips_a_claimed_camera(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    async with face_world(tmp_path) as world:
        session = world.sessions.claim_now("pay", "T1")
        check = await diagnostics(world, http).bridge()
        assert check == Check("bridge", True, "skipped: a session is running (it uses the bridge)")
        assert world.sim.calls["getWxpayfaceRawdata"] == 0
        world.sessions.release_unused(session)


async def test_no_session_starts_while_the_bridge_probe_runs(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    async with face_world(tmp_path) as world:
        probe = asyncio.ensure_future(diagnostics(world, http).bridge())
        await asyncio.sleep(0)  # the probe has taken the camera and sent its call
        assert world.sessions.active is not None
        with pytest.raises(TerminalBusy):
            world.sessions.claim_now("pay", "T1")
        # A session that asked to wait gets the camera right after the probe.
        waiting = asyncio.ensure_future(world.sessions.claim("pay", wait=True, out_trade_no="T2"))
        check = await probe
        assert check.ok, check
        assert check.detail.startswith("getWxpayfaceRawdata answered in ")
        assert world.sim.calls["getWxpayfaceRawdata"] == 1
        session = await waiting
        assert world.sessions.active is session
        world.sessions.release_unused(session)
        await settle()
        assert world.sessions.active is None


# ---------------------------------------------------------------- needs attention


class AttentionRefunds:
    """The refund service's view of refunds waiting for an operator."""

    def __init__(self, *refunds: Refund) -> None:
        self.refunds = list(refunds)

    async def needing_attention(self) -> list[Refund]:
        return self.refunds


async def test_a_refund_needing_an_operator_is_a_failure_with_its_action(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    async with face_world(tmp_path) as world:
        check = await diagnostics(world, http, refunds=AttentionRefunds()).needs_attention()
        assert (check.ok, check.detail) == (True, "no payment or refund needs an operator")
        stuck = Refund(
            request=RefundRequest(out_refund_no="RF1", out_trade_no="T1", refund_fee=10),
            state=RefundState.NEEDS_ATTENTION,
            total_fee=100,
            created_at=0.0,
            updated_at=0.0,
            last_seq=3,
            attention_reason="UNRESOLVED",
            attention_action="check the refund in the merchant platform",
        )
        check = await diagnostics(world, http, refunds=AttentionRefunds(stuck)).needs_attention()
        assert not check.ok
        assert check.detail == (
            "1 refund(s): RF1 (payment T1): UNRESOLVED: check the refund in the merchant platform"
        )
        assert "facepay payment refunds" in check.fix
