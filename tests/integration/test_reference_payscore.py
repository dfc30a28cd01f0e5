"""Each PayScore and UnionID field of the reference reaches the wire or the API, or says why not.

The table lists each request parameter and reply field of wxpayface-payscore.md's
getUserPayScoreStatus, create, complete, sync and the UnionID call. One daemon (a real
process, in service-provider mode so sub_mchid/sub_appid apply) runs each call against the
simulators with every field the API takes; then each request row is found in what the
simulated WeChat Pay received (body, path or query), and each reply row in the API's answer.
A row that is left out names its reason.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from google.protobuf.message import Message

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import TerminalClient
from facepayd.sim.payscore import PayScoreSimulator
from facepayd.sim.stack import SimStack
from facepayd.sim.terminal import DEFAULT_USER, FaceOutcome, SimUser
from tests.integration.conftest import DaemonFactory

SUB_MCHID = "1900000110"
SUB_APPID = "wxsubappid00000001"
NO = "PS|REF*1"  # the reference's charset, "|" and "*" included
FACE_SID = "aabbccdd12345"


@dataclass(frozen=True, slots=True)
class Row:
    """One field the reference names: where it goes, or why it goes nowhere."""

    call: str  # getUserPayScoreStatus, create, complete, sync, unionid
    direction: str  # request or reply
    name: str  # as the reference writes it
    # request: "body", "path", "query" on the wire (v3), or "sdk" (sent by the daemon's SDK
    # layer); reply: the API field that carries it.
    where: str = ""
    api: str = ""  # the API field a POS sets (request) or reads (reply)
    left_out: str = ""  # why it is not reachable, when it is not
    # A reply field the scenario here cannot make WeChat (or the SDK) send: why.
    unseen: str = ""


FROM_CONFIG = "set by the daemon from its configuration, not by the POS"
ROWS: tuple[Row, ...] = (
    # getUserPayScoreStatus (SDK): the terminal simulator requires each of these.
    Row("getUserPayScoreStatus", "request", "appid", "sdk", left_out=FROM_CONFIG),
    Row("getUserPayScoreStatus", "request", "mch_id", "sdk", left_out=FROM_CONFIG),
    Row("getUserPayScoreStatus", "request", "out_trade_no", "sdk", "out_trade_no"),
    Row(
        "getUserPayScoreStatus",
        "request",
        "authinfo",
        "sdk",
        left_out="the daemon's authinfo cache supplies it; it is a credential",
    ),
    Row(
        "getUserPayScoreStatus",
        "request",
        "payscore_out_request_no",
        "sdk",
        "payscore_out_request_no",
    ),
    Row("getUserPayScoreStatus", "request", "payscore_service_id", "sdk", "payscore_service_id"),
    Row("getUserPayScoreStatus", "request", "ask_unionid", "sdk", "face.ask_unionid"),
    Row("getUserPayScoreStatus", "reply", "return_code", api="outcome"),
    Row(
        "getUserPayScoreStatus",
        "reply",
        "err_code",
        api="err_code",
        unseen="only with an ERROR outcome, and the terminal simulator sends none",
    ),
    Row("getUserPayScoreStatus", "reply", "return_msg", api="return_msg"),
    Row("getUserPayScoreStatus", "reply", "openid", api="openid"),
    Row("getUserPayScoreStatus", "reply", "sub_openid", api="sub_openid"),
    Row("getUserPayScoreStatus", "reply", "face_sid", api="face_sid"),
    # create
    Row("create", "request", "out_order_no", "body", "out_order_no"),
    Row("create", "request", "appid", "body", left_out=FROM_CONFIG),
    Row("create", "request", "service_id", "body", "service_id"),
    Row("create", "request", "service_introduction", "body", "service_introduction"),
    Row("create", "request", "post_payments", "body", "post_payments"),
    Row("create", "request", "post_discounts", "body", "post_discounts"),
    Row("create", "request", "time_range", "body", "time_range"),
    Row("create", "request", "location", "body", "location"),
    Row("create", "request", "risk_fund", "body", "risk_fund"),
    Row("create", "request", "attach", "body", "attach"),
    Row("create", "request", "notify_url", "body", "notify_url"),
    Row("create", "request", "openid", "body", "openid"),
    Row("create", "request", "need_user_confirm", "body", "need_user_confirm"),
    *(
        Row("create", "reply", name, api=name)
        for name in (
            "appid",
            "mchid",
            "out_order_no",
            "service_id",
            "service_introduction",
            "state",
            "state_description",
            "post_payments",
            "post_discounts",
            "risk_fund",
            "time_range",
            "location",
            "attach",
            "notify_url",
            "order_id",
            "package",
        )
    ),
    # complete
    Row("complete", "request", "out_order_no", "path", "out_order_no"),
    Row("complete", "request", "appid", "body", left_out=FROM_CONFIG),
    Row("complete", "request", "service_id", "body", left_out=FROM_CONFIG + " (the order's)"),
    Row("complete", "request", "post_payments", "body", "post_payments"),
    Row("complete", "request", "post_discounts", "body", "post_discounts"),
    Row("complete", "request", "total_amount", "body", "total_amount"),
    Row("complete", "request", "time_range", "body", "time_range"),
    Row("complete", "request", "location", "body", "location"),
    Row("complete", "request", "profit_sharing", "body", "profit_sharing"),
    Row("complete", "request", "goods_tag", "body", "goods_tag"),
    *(
        Row("complete", "reply", name, api=name)
        for name in (
            "appid",
            "mchid",
            "out_order_no",
            "service_id",
            "service_introduction",
            "state",
            "state_description",
            "total_amount",
            "post_payments",
            "post_discounts",
            "risk_fund",
            "time_range",
            "location",
            "order_id",
            "need_collection",
        )
    ),
    # sync
    Row("sync", "request", "out_order_no", "path", "out_order_no"),
    Row("sync", "request", "appid", "body", left_out=FROM_CONFIG),
    Row("sync", "request", "service_id", "body", left_out=FROM_CONFIG + " (the order's)"),
    Row("sync", "request", "type", "body", "type"),
    Row("sync", "request", "detail", "body", "paid_time"),
    *(
        Row("sync", "reply", name, api=name)
        for name in (
            "appid",
            "mchid",
            "out_order_no",
            "service_id",
            "service_introduction",
            "state",
            "total_amount",
            "post_payments",
            "post_discounts",
            "risk_fund",
            "time_range",
            "location",
            "attach",
            "notify_url",
            "order_id",
            "need_collection",
            "collection",
        )
    ),
    Row(
        "sync",
        "reply",
        "state_description",
        api="state_description",
        unseen="WeChat Pay describes only DOING orders; a synced order is DONE",
    ),
    # GET /v3/facemch/users/{face_sid}
    Row("unionid", "request", "face_sid", "path", "face_sid"),
    Row("unionid", "request", "info_type", "query", left_out="always ASK_UNIONID, its one value"),
    Row("unionid", "request", "appid", "query", left_out=FROM_CONFIG),
    Row("unionid", "request", "sub_mchid", "query", left_out=FROM_CONFIG + " (service provider)"),
    Row("unionid", "request", "sub_appid", "query", left_out=FROM_CONFIG + " (service provider)"),
    Row("unionid", "reply", "union_id", api="unionid"),
)

REQUESTS = {
    "getUserPayScoreStatus": pb.CheckPayScoreStatusRequest,
    "create": pb.CreateServiceOrderRequest,
    "complete": pb.CompleteServiceOrderRequest,
    "sync": pb.SyncServiceOrderRequest,
    "unionid": pb.GetUnionIdRequest,
}
REPLIES = {
    "getUserPayScoreStatus": pb.CheckPayScoreStatusResponse,
    "create": pb.ServiceOrder,
    "complete": pb.ServiceOrder,
    "sync": pb.ServiceOrder,
    "unionid": pb.GetUnionIdResponse,
}


def _has_field(message: type[Message], path: str) -> bool:
    descriptor = message.DESCRIPTOR
    for part in path.split("."):
        field = descriptor.fields_by_name.get(part)
        if field is None:
            return False
        descriptor = field.message_type or descriptor
    return True


def markdown(rows: tuple[Row, ...] = ROWS) -> str:
    """The rows as the README's table: the API field with its message, or the reason."""
    lines = [
        "| call | direction | reference name | in the API | left out because |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        message = (REQUESTS if row.direction == "request" else REPLIES)[row.call]
        api = f"`{message.DESCRIPTOR.name}.{row.api}`" if row.api else ""
        why = row.left_out or (
            f"(not sent in the tested scenario: {row.unseen})" if row.unseen else ""
        )
        lines.append(f"| {row.call} | {row.direction} | `{row.name}` | {api} | {why} |")
    return "\n".join(lines) + "\n"


def test_the_readme_mirrors_the_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert markdown() in readme


def test_every_row_reaches_the_api_or_names_its_reason() -> None:
    for row in ROWS:
        assert row.api or row.left_out, row
        if row.api:
            message = (REQUESTS if row.direction == "request" else REPLIES)[row.call]
            assert _has_field(message, row.api), f"{row.call} {row.name}: no API field {row.api}"
    calls = {(row.call, row.direction) for row in ROWS}
    assert calls == {(call, d) for call in REQUESTS for d in ("request", "reply")}


def _sims(stack: SimStack) -> PayScoreSimulator:
    assert stack.payscore is not None
    return stack.payscore


@pytest.fixture
async def client(stack: SimStack, make_daemon: DaemonFactory) -> AsyncIterator[TerminalClient]:
    daemon = await make_daemon(stack, merchant={"sub_mch_id": SUB_MCHID, "sub_appid": SUB_APPID})
    async with daemon.client() as c:
        yield c


def _nonempty(message: Message, path: str) -> bool:
    value: Any = message
    for part in path.split("."):
        value = getattr(value, part)
    if isinstance(value, Message):
        return value.ByteSize() > 0
    if isinstance(value, str | bool | int):
        return bool(value)
    return len(value) > 0  # a repeated field


async def test_every_field_reaches_the_wire_and_every_answer_the_api(
    stack: SimStack, client: TerminalClient
) -> None:
    sim = _sims(stack)
    assert stack.terminal is not None
    # A service provider's user: the sub-merchant's openid comes back too.
    user = SimUser(openid=DEFAULT_USER.openid, sub_openid="oSubOpenid00000000000000001")
    stack.terminal.script(FaceOutcome.SUCCESS, user=user)
    status = await client.check_pay_score_status(
        NO,
        payscore_out_request_no="REQ|1*",
        face=pb.FaceOptions(ask_unionid=True),
    )
    created = await client.create_service_order(
        pb.CreateServiceOrderRequest(
            out_order_no=NO,
            service_id="500001",
            service_introduction="某某酒店",
            post_payments=[pb.PostPayment(name="就餐费用服务费", amount=4000, count=1)],
            post_discounts=[pb.PostDiscount(name="满20减1元", description="不与其他优惠叠加")],
            time_range=pb.TimeRange(start_time="20091225091010"),
            location=pb.Location(start_location="嗨客时尚主题展餐厅"),
            risk_fund=pb.RiskFund(name="ESTIMATE_ORDER_COST", amount=10000),
            attach="table=7&guests=2",
            notify_url="https://pos.example.com/notify",
            openid=DEFAULT_USER.openid,
            need_user_confirm=False,
        )
    )
    sim.auto_charge = False
    completed = await client.complete_service_order(
        pb.CompleteServiceOrderRequest(
            out_order_no=NO,
            post_payments=[pb.PostPayment(name="就餐费用服务费", amount=4000, count=1)],
            post_discounts=[pb.PostDiscount(name="满20减1元", amount=100)],
            total_amount=3900,
            time_range=pb.TimeRange(end_time="20091225121010"),
            location=pb.Location(end_location="嗨客时尚主题展餐厅"),
            profit_sharing=True,
            goods_tag="goods_tag",
        )
    )
    synced = await client.sync_service_order(NO, "20091225121210")
    sim.register_face_sid(FACE_SID, "o6_bmasdasdsad6_2sgVt7hMZOPfL", DEFAULT_USER.openid)
    union = await client.get_union_id(FACE_SID)
    replies: dict[str, Message] = {
        "getUserPayScoreStatus": status,
        "create": created,
        "complete": completed,
        "sync": synced,
        "unionid": union,
    }
    sent = {r.endpoint: r for r in sim.received}

    for row in ROWS:
        if row.direction == "reply":
            if row.unseen:
                continue
            assert _nonempty(replies[row.call], row.api), f"{row.call} reply {row.name}"
            continue
        if row.where == "sdk":
            # The terminal simulator refuses a getUserPayScoreStatus lacking any of them
            # (ask_unionid, optional, must be 0 or 1 there).
            continue
        received = sent[row.call]
        target = urlsplit(received.target)
        if row.where == "body":
            assert row.name in json.loads(received.body), f"{row.call} {row.name}"
        elif row.where == "query":
            assert parse_qs(target.query)[row.name], f"{row.call} {row.name}"
        else:
            value = NO if row.name == "out_order_no" else FACE_SID
            assert value in unquote(target.path), f"{row.call} {row.name}"

    # The values, where the API could get them wrong.
    assert json.loads(sent["create"].body)["attach"] == "table%3D7%26guests%3D2"
    assert created.attach == "table=7&guests=2"
    assert synced.collection.state == "USER_PAID"
    assert (union.unionid, union.openid) == ("o6_bmasdasdsad6_2sgVt7hMZOPfL", DEFAULT_USER.openid)
    assert sim.unionid_queries[-1]["sub_mchid"] == SUB_MCHID
    assert sim.unionid_queries[-1]["sub_appid"] == SUB_APPID
    assert status.outcome == pb.PAY_SCORE_OUTCOME_SUCCESS
