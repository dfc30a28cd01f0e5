"""The order and face-option rules of StartFacePay / StartCodePay / GetUserInfo, as documented."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import InvalidArgumentError, TerminalClient
from tests.unit.face_world import World, face_world, world_server

CODE = "134000000000000001"
_BEIJING = datetime.timezone(datetime.timedelta(hours=8))


@contextlib.asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[World, TerminalClient]]:
    async with (
        face_world(tmp_path) as world,
        world_server(world) as socket,
        TerminalClient(socket, timeout=10, face_timeout=10) as client,
    ):
        yield world, client


def beijing(world: World, seconds_from_now: float) -> str:
    """A yyyyMMddHHmmss in Beijing time, seconds_from_now after the world's clock."""
    moment = datetime.datetime.fromtimestamp(world.clock.time() + seconds_from_now, _BEIJING)
    return moment.strftime("%Y%m%d%H%M%S")


async def refused(client: TerminalClient, **fields: str) -> list[tuple[str, str]]:
    """The field violations of a StartCodePay with fields; it must be refused."""
    with pytest.raises(InvalidArgumentError) as caught:
        async for _ in client.start_code_pay("R1", 100, "goods", CODE, **fields):
            pass
    return caught.value.field_violations


async def test_order_fields_follow_the_reference(tmp_path: Path) -> None:
    async with served(tmp_path) as (world, client):
        cases = {
            "detail": ("not json", "must be a JSON object"),
            "scene_info": ('["store_info"]', "must be a JSON object"),
            "time_start": ("2025-01-01", "yyyyMMddHHmmss"),
        }
        for name, (value, rule) in cases.items():
            violations = await refused(client, **{name: value})
            assert [f for f, _ in violations] == [name], name
            assert rule in violations[0][1]
        # time_expire: more than a minute after time_start, and after now.
        start = beijing(world, 0)
        soon = await refused(client, time_start=start, time_expire=beijing(world, 60))
        assert soon == [
            ("time_expire", "must be more than 60 seconds after time_start (Beijing time)")
        ]
        late = await refused(client, time_expire=beijing(world, 30))
        assert late[0][0] == "time_expire"
        assert "after now" in late[0][1]
        assert await world.payments.find("R1") is None
        # Within the rules, the same fields are accepted (and paid by the fake backend).
        ok = [
            e
            async for e in client.start_code_pay(
                "R2",
                100,
                "goods",
                CODE,
                detail='{"goods_detail":[]}',
                scene_info='{"store_info":{"id":"S1"}}',
                time_start=start,
                time_expire=beijing(world, 61),
            )
        ]
        assert ok[-1].state == pb.PAYMENT_STATE_SUCCEEDED
        payment = await client.get_payment("R2")
        assert (payment.time_start, payment.time_expire) == (start, beijing(world, 61))


async def test_start_face_pay_takes_facepay_only_and_user_info_no_face_code_options(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as (world, client):
        for authtype in ("FACEPAY_DELAY", "FACE_AUTH"):
            face = pb.FaceOptions(face_authtype=authtype)
            with pytest.raises(InvalidArgumentError) as caught:
                async for _ in client.start_face_pay("F1", 1, "goods", face=face):
                    pass
            [(field, rule)] = caught.value.field_violations
            assert field == "face.face_authtype"
            assert "CaptureFaceCode" in rule
        with pytest.raises(InvalidArgumentError) as caught:
            await client.get_user_info(pb.FaceOptions(telephone="13800138000"))
        assert [f for f, _ in caught.value.field_violations] == ["face.telephone"]
        assert world.sim.calls["getWxpayfaceCode"] == world.sim.calls["getWxpayfaceUserInfo"] == 0
        assert await world.payments.find("F1") is None
