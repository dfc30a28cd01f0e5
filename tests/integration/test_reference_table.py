"""The reference table (tests/reference_table.py), row by row, against the wire and the API.

The sales below go through the real gRPC server, the journal, the payment machine, the bridge and
the v2 client to the simulated terminal and WeChat Pay (service-provider mode, so sub_* fields
travel too). A request row holds when its parameter reached the wire (the simulators' recorded
requests), with the value the API was given where the test gave one; a reply row holds when every
API field it names was seen set (streams, GetPayment, GetUserInfo, error metadata); a row that is
left out must say why. README.md's "Reference coverage" section must be the table itself.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import message

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import BackendError, FaceSessionEndedError, TerminalClient
from facepayd.ops.config import MerchantConfig
from facepayd.sim.terminal import FaceOutcome, SimUser
from facepayd.sim.tls import TestPki, generate_test_pki
from facepayd.sim.wxpay import MICROPAY_PATH, ORDERQUERY_PATH, REVERSE_PATH, Scenario
from tests.helpers import until
from tests.integration.test_code_pay import CODE, EXPIRED, paying_world
from tests.reference_table import ROWS, Row, markdown
from tests.unit.face_world import UPDATE_RESULT, World, face_world, world_server

MERCHANT = MerchantConfig(
    appid="wxsim",
    mch_id="1900000001",
    sub_appid="wxsubapp",
    sub_mch_id="1900000002",
    store_id="S1",
    device_id="D1",
)
ORDER = {
    "attach": "lane 3",
    "detail": '{"goods_detail":[{"goods_id":"g1","quantity":1,"price":703}]}',
    "fee_type": "CNY",
    "goods_tag": "TAG1",
    "limit_pay": "no_credit",
    "time_start": "20300101115900",
    "time_expire": "20300101130000",
    "scene_info": '{"store_info":{"id":"S1","name":"till"}}',
    "receipt": "Y",
}
FACE = pb.FaceOptions(
    openid="oSim0000UserOpenid000000001",
    telephone="13800138000",
    ask_face_permit="1",
    ask_ret_page="1",
    screen_index="0",
    overlay_option="0",
    face_authtype="FACEPAY",
)
# What the API was given, as each parameter must arrive ("" = anything non-empty).
SENT: dict[tuple[str, str], str] = {
    **{("micropay", name): value for name, value in ORDER.items()},
    ("micropay", "body"): "goods",
    ("micropay", "device_info"): "D1",
    ("getWxpayfaceCode", "telephone"): "13800138000",
    ("getWxpayfaceCode", "ask_face_permit"): "1",
    ("getWxpayfaceCode", "ask_ret_page"): "1",
    ("getWxpayfaceCode", "openid"): FACE.openid,
    ("getWxpayfaceCode", "sub_appid"): "wxsubapp",
    ("getWxpayfaceUserInfo", "ask_unionid"): "1",
    ("getWxpayfaceUserInfo", "screen_index"): "1",
}
_PATHS = {MICROPAY_PATH: "micropay", ORDERQUERY_PATH: "orderquery", REVERSE_PATH: "reverse"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return generate_test_pki(tmp_path_factory.mktemp("pki"))


class Seen:
    """What reached the wire, and what the API returned, over every sale of the test."""

    def __init__(self) -> None:
        self.wire: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
        self.api: dict[str, list[Any]] = collections.defaultdict(list)

    def record_wire(self, call: str, params: Mapping[str, str]) -> None:
        self.wire[call].append(dict(params))

    def add(self, msg: message.Message) -> None:
        """msg and every message inside it, by type name."""
        self.api[msg.DESCRIPTOR.name].append(msg)
        for field, value in msg.ListFields():
            if field.type != field.TYPE_MESSAGE:
                continue
            for item in value if field.is_repeated else [value]:
                self.add(item)

    def add_error(self, error: Exception) -> None:
        self.api["ErrorInfo.metadata"].append(getattr(error, "metadata", {}))

    def api_has(self, path: str) -> bool:
        """Some seen message of the path's type has the (nested) field set."""
        if path.startswith("ErrorInfo.metadata."):
            key = path.removeprefix("ErrorInfo.metadata.")
            return any(meta.get(key) for meta in self.api["ErrorInfo.metadata"])
        kind, *fields = path.split(".")
        return any(_set(msg, fields) for msg in self.api[kind])


def _set(msg: Any, fields: list[str]) -> bool:
    if not fields:
        return True
    value = getattr(msg, fields[0])
    if isinstance(value, message.Message):
        return msg.HasField(fields[0]) and _set(value, fields[1:])
    if hasattr(value, "__len__") and not isinstance(value, str):
        return any(_set(item, fields[1:]) for item in value) if len(fields) > 1 else len(value) > 0
    return bool(value)


def _paths(api: str) -> list[str]:
    """The message paths a row names (its notes in parentheses dropped)."""
    return [part.split(" (")[0].strip() for part in api.split(" or ")]


async def _advance_until(world: World, done: asyncio.Future[Any], horizon: float = 60.0) -> None:
    """Move the clock to each payment timer due within horizon (not the far ones), until done."""
    clock = world.clock

    def due() -> float | None:
        soon = [d for d, _, f in clock._sleepers if not f.done() and d <= clock.time() + horizon]
        return min(soon, default=None)

    for _ in range(50):
        await until(lambda: done.done() or due() is not None, 10, "a payment timer or the end")
        deadline = due()
        if done.done() or deadline is None:
            return
        await clock.advance(max(0.0, deadline - clock.time()))
    raise AssertionError("the call never ended")


async def _collect(seen: Seen, stream: AsyncIterator[message.Message]) -> list[Any]:
    items = []
    async for item in stream:
        seen.add(item)
        items.append(item)
    return items


async def _sales(seen: Seen, world: World, wxpay: Any, client: TerminalClient) -> None:
    """Every sale the rows need, on SDK 2.22 in service-provider mode."""
    # In service-provider mode the customer also has an openid under the sub appid.
    world.sim.default_user = SimUser(sub_openid="oSubUser0000000000000001")
    # getWxpayfaceUserInfo: an answer, and a cancel (its return_code in the error's metadata).
    info = asyncio.ensure_future(
        client.get_user_info(pb.FaceOptions(screen_index="1", ask_unionid=True))
    )
    await world.show_face()
    seen.add(await info)
    world.sim.script(FaceOutcome.USER_CANCEL)
    info = asyncio.ensure_future(client.get_user_info())
    await world.show_face()
    with pytest.raises(FaceSessionEndedError) as cancelled:
        await info
    seen.add_error(cancelled.value)

    # A face payment with every option and order field; paid with a promotion (703).
    face = asyncio.ensure_future(
        _collect(seen, client.start_face_pay_stream("F1", 703, "goods", face=FACE, **ORDER))
    )
    await world.show_face()
    await world.result_page_shown()
    await world.clock.advance(UPDATE_RESULT)
    await until(face.done, 10, "F1's stream")
    face.result()

    # The customer chooses to scan; the same sale goes on by code (702: a no-cash coupon). The
    # micropay answer is lost on its way, so the paid answer comes from orderquery.
    world.sim.script(FaceOutcome.SCAN_PAYMENT)
    scan = asyncio.ensure_future(_collect(seen, client.start_face_pay_stream("F2", 702, "goods")))
    await world.show_face()
    await until(scan.done, 10, "F2's face stream")
    wxpay.script("F2", Scenario.DROP_CONNECTION)
    await _collect(seen, client.start_code_pay("F2", 702, "goods", CODE))

    # A capture-only session: the code and the SDK's own confirmation.
    capture = asyncio.ensure_future(_collect(seen, client.capture_face_code("C1", 1)))
    await world.show_face()
    await world.result_page_shown()
    await world.clock.advance(UPDATE_RESULT)
    await until(capture.done, 10, "C1's stream")

    # Refusals: an expired code, and a request WeChat Pay refuses as a whole (601).
    await _collect(seen, client.start_code_pay("F3", 100, "goods", EXPIRED))
    await _collect(seen, client.start_code_pay("F4", 601, "goods", "134000000000000004"))

    # A reverse WeChat Pay refuses (the paid order stays paid), and one that goes through.
    wxpay.script("F2", Scenario.REVERSE_TRADE_ERROR)
    refused = asyncio.ensure_future(client.reverse_payment("F2"))
    await _advance_until(world, refused)
    with pytest.raises(BackendError) as rejected:
        refused.result()
    seen.add_error(rejected.value)
    done = asyncio.ensure_future(client.reverse_payment("F1"))
    await _advance_until(world, done)
    seen.add(done.result())
    for no in ("F1", "F2", "F3", "F4"):
        seen.add(await client.get_payment(no))
        await _collect(seen, client.watch_payment(no))


async def _old_sdk_capture(seen: Seen, tmp_path: Path) -> None:
    """Below SDK 2.13: face_code_type 0 and ignore_update_pay_result reach the wire."""
    async with face_world(tmp_path, sdk_version="2.12.0") as world, world_server(world) as socket:
        async with TerminalClient(socket, timeout=10, face_timeout=10) as client:
            events: list[pb.CaptureEvent] = []

            async def run() -> None:
                async for event in client.capture_face_code("OLD1", 5, face_code_type="0"):
                    events.append(event)
                    if event.HasField("face_captured"):
                        session = events[0].session_started.session_id
                        await client.report_pay_result(session, True)

            task = asyncio.ensure_future(run())
            await world.show_face()
            await until(task.done, 10, "the old SDK's capture")
            task.result()
        for method, params in world.sim.requests:
            seen.record_wire(method, params)


async def test_every_reference_row_reaches_the_wire_or_the_api_or_says_why(
    tmp_path: Path, pki: TestPki
) -> None:
    seen = Seen()
    async with paying_world(tmp_path / "new", pki, MERCHANT) as (world, wxpay):
        wxpay.observers.append(
            lambda path, fields: seen.record_wire(_PATHS.get(path, path), fields)
        )
        async with (
            world_server(world) as socket,
            TerminalClient(socket, timeout=10, face_timeout=10) as client,
        ):
            await _sales(seen, world, wxpay, client)
        for method, params in world.sim.requests:
            seen.record_wire(method, params)
    await _old_sdk_capture(seen, tmp_path / "old")

    missing: list[str] = []
    for row in ROWS:
        what = f"{row.call} {row.direction} {row.name}"
        if row.left_out:
            assert not row.api, f"{what}: left out, yet it names an API field"
            continue
        assert row.api, f"{what}: neither an API field nor a reason"
        if row.direction == "request":
            name = row.name
            values = [p[name] for p in seen.wire[row.call] if p.get(name)]
            expected = SENT.get((row.call, name), "")
            if not values or (expected and expected not in values):
                missing.append(f"{what}: not on the wire as {expected or 'any value'}")
        else:
            for path in _paths(row.api):
                if not seen.api_has(path):
                    missing.append(f"{what}: {path} never came back set")
    assert missing == []
    # The auth code reached micropay as sent, the face codes did too.
    assert CODE in [p.get("auth_code") for p in seen.wire["micropay"]]


def test_every_api_path_the_table_names_exists_in_the_proto() -> None:
    for row in ROWS:
        if not row.api or row.api.startswith(("config:", "daemon:")):
            continue
        for path in _paths(row.api):
            if path.startswith("ErrorInfo.metadata."):
                continue
            kind, *fields = path.split(".")
            descriptor = pb.DESCRIPTOR.message_types_by_name[kind]
            for name in fields:
                field = descriptor.fields_by_name[name]
                descriptor = field.message_type or descriptor


def test_the_table_has_every_documented_parameter_once() -> None:
    keys = [(row.call, row.direction, row.name) for row in ROWS]
    assert len(keys) == len(set(keys))
    # The reference's micropay request table, in its order (wxpayface-android-sdk.md section 7).
    micropay = [row.name for row in ROWS if (row.call, row.direction) == ("micropay", "request")]
    assert micropay == _MICROPAY_REQUEST


_MICROPAY_REQUEST = [
    "appid", "mch_id", "device_info", "nonce_str", "sign", "sign_type", "body", "detail",
    "attach", "out_trade_no", "total_fee", "fee_type", "spbill_create_ip", "goods_tag",
    "limit_pay", "time_start", "time_expire", "receipt", "auth_code", "scene_info",
]  # fmt: skip


def test_the_readme_mirrors_the_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert markdown(_mine(ROWS)) in readme


def _mine(rows: Iterable[Row]) -> tuple[Row, ...]:
    """The rows of the SDK and v2 calls (the PayScore/UnionID rows have their own section)."""
    calls = {
        "getWxpayfaceCode",
        "updateResultWxpayfaceCallBack",
        "getWxpayfaceUserInfo",
        "micropay",
        "orderquery",
        "reverse",
    }
    return tuple(row for row in rows if row.call in calls)
