"""PayScoreClient against PayScoreSimulator on the WeChat Pay simulator (loopback HTTPS)."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from facepayd.clock import ManualClock
from facepayd.errors import (
    BackendRejected,
    BackendUnavailable,
    InvalidArgument,
    NotFound,
    ResponseNotTrusted,
)
from facepayd.sim.payscore import DEFAULT_CHARGE_DELAY, PayScoreSimulator
from facepayd.sim.tls import generate_test_pki
from facepayd.sim.wxpay import WxPaySimulator
from facepayd.wxpay import payscore_models as m
from facepayd.wxpay import v3
from facepayd.wxpay.models import Merchant
from facepayd.wxpay.v3 import OrderStateError, PayScoreClient

MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
SERVICE_ID = "500001"
MERCHANT_SERIAL = "3775B6A45ACD588826D15E583A95F5DD00000001"
PLATFORM_SERIAL = "PUB_KEY_ID_0119000001092025010100000000"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


class InstantClock(ManualClock):
    """A manual clock whose sleep moves time at once and remembers how long it slept."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await self.advance(seconds)


@pytest.fixture(scope="module")
def merchant_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def platform_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class World:
    clock: InstantClock
    sim: PayScoreSimulator
    server: WxPaySimulator
    http: httpx.AsyncClient
    client: PayScoreClient
    platform_public: rsa.RSAPublicKey
    merchant_key: rsa.RSAPrivateKey | None = None

    def with_key(self, key: rsa.RSAPrivateKey, **kwargs: object) -> PayScoreClient:
        return PayScoreClient(
            MCHID,
            APPID,
            SERVICE_ID,
            key,
            MERCHANT_SERIAL,
            {PLATFORM_SERIAL: self.platform_public},
            base_url=self.server.base_url,
            http=self.http,
            clock=self.clock,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
async def world(
    tmp_path: Path, merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> AsyncIterator[World]:
    clock = InstantClock()
    pki = generate_test_pki(tmp_path)
    server = WxPaySimulator(
        merchant=Merchant(appid=APPID, mch_id=MCHID), api_key="k" * 32, pki=pki, clock=clock
    )
    sim = PayScoreSimulator(
        clock, {MERCHANT_SERIAL: merchant_key.public_key()}, platform_key, PLATFORM_SERIAL
    )
    sim.install(server)
    sim.add_user(OPENID)
    await server.start()
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    http = httpx.AsyncClient(verify=context, timeout=10.0)
    client = PayScoreClient(
        MCHID,
        APPID,
        SERVICE_ID,
        merchant_key,
        MERCHANT_SERIAL,
        {PLATFORM_SERIAL: platform_key.public_key()},
        base_url=server.base_url,
        http=http,
        clock=clock,
    )
    try:
        yield World(clock, sim, server, http, client, platform_key.public_key(), merchant_key)
    finally:
        await http.aclose()
        await server.stop()


PAY_BODY = json.dumps({"appid": APPID, "service_id": SERVICE_ID}).encode()


def sign_by_hand(
    world: World,
    method: str,
    target: str,
    body: bytes = PAY_BODY,
    *,
    merchant: rsa.RSAPrivateKey | None = None,
) -> str:
    """An Authorization header for a request built without PayScoreClient."""
    key = merchant or world.merchant_key
    timestamp = str(int(world.clock.time()))
    nonce = "N" * 32
    message = v3.request_message(method, target, timestamp, nonce, body if method != "GET" else b"")
    return v3.authorization_header(
        MCHID, MERCHANT_SERIAL, timestamp, nonce, v3.rsa_sign(key, message)
    )


def new_order(no: str = "PS-0001", **overrides: object) -> m.NewServiceOrder:
    fields: dict[str, object] = {
        "out_order_no": no,
        "service_introduction": "某某酒店",
        "risk_fund": m.RiskFund("ESTIMATE_ORDER_COST", 10000, "就餐的预估费用"),
        "time_range": m.TimeRange(start_time="20091225091010"),
        "post_payments": (m.PostPayment("就餐费用服务费", 4000, "100/小时", 1),),
        "location": m.Location("嗨客时尚主题展餐厅", "嗨客时尚主题展餐厅"),
        "openid": OPENID,
    }
    fields.update(overrides)
    return m.NewServiceOrder(**fields)  # type: ignore[arg-type]


COMPLETION = m.ServiceOrderCompletion(
    post_payments=(m.PostPayment("就餐费用服务费", 4000, "100/小时", 1),),
    post_discounts=(m.PostDiscount("满20减1元", "不与其他优惠叠加", 100),),
    total_amount=3900,
    time_range=m.TimeRange(start_time="20091225091010", end_time="20091225121010"),
)


async def test_create_complete_get(world: World) -> None:
    created = await world.client.create_service_order(new_order())
    assert (created.state, created.state_description) == (m.ServiceOrderState.DOING, m.USER_CONFIRM)
    assert created.risk_fund == m.RiskFund("ESTIMATE_ORDER_COST", 10000, "就餐的预估费用")
    assert (created.mchid, created.appid, created.openid) == (MCHID, APPID, OPENID)

    completed = await world.client.complete_service_order(
        "PS-0001", COMPLETION, limits=v3.CompletionLimits(risk_fund=created.risk_fund)
    )
    # As WeChat answers complete: collecting until the charge succeeds.
    assert (completed.state, completed.state_description) == (
        m.ServiceOrderState.DOING,
        m.MCH_COMPLETE,
    )
    assert completed.total_amount == 3900
    assert completed.collection is not None
    assert (completed.collection.state, completed.collection.paying_amount) == ("USER_PAYING", 3900)
    before = await world.client.get_service_order("PS-0001")
    assert before.state_description == m.MCH_COMPLETE

    await world.clock.advance(DEFAULT_CHARGE_DELAY)
    got = await world.client.get_service_order("PS-0001")
    assert got.order_id == created.order_id
    assert got.state is m.ServiceOrderState.DONE
    assert got.collection is not None
    assert (got.collection.state, got.collection.paid_amount) == ("USER_PAID", 3900)
    assert world.sim.orders["PS-0001"].total_amount == 3900
    assert dict(world.sim.calls) == {"create": 1, "complete": 1, "query": 2}
    # One keep-alive connection carried the whole conversation.
    assert world.server.connections_accepted == 1


async def test_create_is_idempotent_and_refuses_changed_parameters(world: World) -> None:
    first = await world.client.create_service_order(new_order())
    again = await world.client.create_service_order(new_order())
    assert again.order_id == first.order_id
    assert len(world.sim.orders) == 1
    with pytest.raises(BackendRejected) as caught:
        await world.client.create_service_order(new_order(service_introduction="另一家酒店"))
    assert not isinstance(caught.value, OrderStateError)
    assert caught.value.code == "INVALID_REQUEST"


async def test_need_user_confirm_waits_for_the_user(world: World) -> None:
    order = new_order("PS-CONFIRM", openid="", need_user_confirm=True)
    created = await world.client.create_service_order(order)
    assert created.state is m.ServiceOrderState.CREATED
    assert created.package
    with pytest.raises(OrderStateError) as caught:
        await world.client.complete_service_order("PS-CONFIRM", COMPLETION)
    assert caught.value.code == "INVALID_ORDER_STATE"

    world.sim.user_confirms("PS-CONFIRM", OPENID)
    got = await world.client.get_service_order("PS-CONFIRM")
    assert (got.state, got.state_description, got.openid) == (
        m.ServiceOrderState.DOING,
        m.USER_CONFIRM,
        OPENID,
    )
    done = await world.client.complete_service_order("PS-CONFIRM", COMPLETION)
    assert done.state_description == m.MCH_COMPLETE


async def test_an_unconfirmed_order_expires(world: World) -> None:
    await world.client.create_service_order(new_order("PS-OLD", openid="", need_user_confirm=True))
    world.sim.expire("PS-OLD")
    got = await world.client.get_service_order("PS-OLD")
    assert got.state is m.ServiceOrderState.EXPIRED


async def test_cancel_then_every_action_reports_order_canceled(world: World) -> None:
    await world.client.create_service_order(new_order("PS-CANCEL"))
    cancelled = await world.client.cancel_service_order("PS-CANCEL", "用户投诉")
    assert cancelled.state is m.ServiceOrderState.REVOKED
    assert world.sim.orders["PS-CANCEL"].cancel_reason == "用户投诉"
    for action in (
        world.client.complete_service_order("PS-CANCEL", COMPLETION),
        world.client.cancel_service_order("PS-CANCEL", "again"),
    ):
        with pytest.raises(OrderStateError) as caught:
            await action
        assert caught.value.code == "ORDER_CANCELED"
    got = await world.client.get_service_order("PS-CANCEL")
    assert got.state is m.ServiceOrderState.REVOKED


async def test_sync_order_paid_settles_a_merchant_completed_order(world: World) -> None:
    world.sim.auto_charge = False
    await world.client.create_service_order(new_order("PS-SYNC"))
    completed = await world.client.complete_service_order("PS-SYNC", COMPLETION)
    assert (completed.state, completed.state_description) == (
        m.ServiceOrderState.DOING,
        m.MCH_COMPLETE,
    )
    synced = await world.client.sync_service_order("PS-SYNC", "Order_Paid", "20091225091210")
    assert synced.state is m.ServiceOrderState.DONE
    assert synced.collection is not None
    assert synced.collection.details[0].paid_type == "MCH"
    assert synced.collection.details[0].paid_time == "20091225091210"
    with pytest.raises(OrderStateError) as caught:
        await world.client.sync_service_order("PS-SYNC", "Order_Paid", "20091225091210")
    assert caught.value.code == "ORDER_DONE"


async def test_429_is_retried_with_the_same_body_and_fresh_signatures(world: World) -> None:
    world.sim.fail_next("create", status=429, code="FREQUENCY_LIMITED", times=2)
    created = await world.client.create_service_order(new_order())
    assert created.state is m.ServiceOrderState.DOING
    attempts = [r for r in world.sim.received if r.endpoint == "create"]
    assert len(attempts) == 3
    assert len({r.body for r in attempts}) == 1
    assert len({r.nonce for r in attempts}) == 3
    assert [a[1] for a in world.sim.answers] == [429, 429, 200]
    assert world.clock.slept == [0.5, 1.0]
    # Each attempt was signed at its own moment, after the backoff moved time on.
    assert int(attempts[-1].timestamp) > int(attempts[0].timestamp)


async def test_500_is_retried_then_the_call_succeeds(world: World) -> None:
    await world.client.create_service_order(new_order())
    world.sim.fail_next("complete", status=500, code="SYSTEM_ERROR")
    done = await world.client.complete_service_order("PS-0001", COMPLETION)
    assert done.state_description == m.MCH_COMPLETE
    assert world.sim.calls["complete"] == 2
    assert world.sim.orders["PS-0001"].completions == 1


async def test_persistent_5xx_gives_up_with_capped_backoff(
    world: World, merchant_key: rsa.RSAPrivateKey
) -> None:
    client = world.with_key(merchant_key, max_attempts=6, backoff_initial=1.0, backoff_max=3.0)
    world.sim.fail_next("query", status=503, code="SYSTEM_ERROR", times=10)
    with pytest.raises(BackendUnavailable, match="6 attempts"):
        await client.get_service_order("PS-0001")
    assert world.sim.calls["query"] == 6
    assert world.clock.slept == [1.0, 2.0, 3.0, 3.0, 3.0]


async def test_completing_twice_reports_order_done_distinctly(world: World) -> None:
    # The scenario where the charge is settled at once, in complete's own answer.
    world.sim.instant_charge = True
    await world.client.create_service_order(new_order())
    done = await world.client.complete_service_order("PS-0001", COMPLETION)
    assert done.state is m.ServiceOrderState.DONE
    with pytest.raises(OrderStateError) as caught:
        await world.client.complete_service_order("PS-0001", COMPLETION)
    assert caught.value.code == "ORDER_DONE"
    assert caught.value.reason == "ORDER_STATE"
    assert isinstance(caught.value, BackendRejected)


async def test_scripted_invalid_order_state_is_not_retried(world: World) -> None:
    await world.client.create_service_order(new_order())
    world.sim.fail_next("cancel", status=400, code="INVALID_ORDER_STATE", message="单据状态错误")
    with pytest.raises(OrderStateError) as caught:
        await world.client.cancel_service_order("PS-0001", "用户投诉")
    assert (caught.value.code, caught.value.message) == ("INVALID_ORDER_STATE", "单据状态错误")
    assert world.sim.calls["cancel"] == 1


async def test_unknown_order_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        await world.client.get_service_order("NO-SUCH-ORDER")
    # Actions on an unknown order and an unknown face_sid get WeChat's signed answer too.
    with pytest.raises(NotFound):
        await world.client.cancel_service_order("NO-SUCH-ORDER", "用户投诉")
    with pytest.raises(NotFound):
        await world.client.get_user_unionid("NO-SUCH-FACE-SID")
    assert world.sim.calls["cancel"] == 1
    assert world.sim.calls["unionid"] == 1


async def test_other_rejections_keep_their_code(world: World) -> None:
    world.sim.add_user("o-no-payscore", has_payscore=False)
    with pytest.raises(BackendRejected) as caught:
        await world.client.create_service_order(new_order("PS-X", openid="o-no-payscore"))
    assert type(caught.value) is BackendRejected
    assert caught.value.code == "INVALID_REQUEST"
    assert "PS-X" not in world.sim.orders


async def test_amounts_that_do_not_add_up_are_refused_before_sending(world: World) -> None:
    await world.client.create_service_order(new_order())
    wrong = m.ServiceOrderCompletion(COMPLETION.post_payments, 4000, COMPLETION.post_discounts)
    with pytest.raises(InvalidArgument) as caught:
        await world.client.complete_service_order("PS-0001", wrong)
    assert caught.value.field == "total_amount"
    over = m.ServiceOrderCompletion((m.PostPayment("服务费", 20000),), 20000)
    with pytest.raises(InvalidArgument, match="risk fund"):
        await world.client.complete_service_order(
            "PS-0001",
            over,
            limits=v3.CompletionLimits(risk_fund=m.RiskFund("DEPOSIT", 10000)),
        )
    assert world.sim.calls["complete"] == 0


async def test_the_simulator_refuses_amounts_over_the_cap_of_the_orders_risk_fund_mode(
    world: World,
) -> None:
    ended = m.TimeRange(end_time="20091225121010")
    over = m.ServiceOrderCompletion((m.PostPayment("服务费", 20000),), 20000, time_range=ended)
    # 评估不通过:交押金 — at most the order's risk fund.
    deposit = m.RiskFund("DEPOSIT", 10000)
    await world.client.create_service_order(new_order("PS-DEP", risk_fund=deposit))
    with pytest.raises(BackendRejected) as caught:
        await world.client.complete_service_order("PS-DEP", over)
    assert (caught.value.code, caught.value.message) == (
        "PARAM_ERROR",
        "total_amount exceeds the risk fund",
    )
    # 评估不通过:拒绝 — past its own risk fund, up to the service ID's cap.
    await world.client.create_service_order(new_order("PS-EST"))
    world.sim.service_risk_cap = 19999
    with pytest.raises(BackendRejected, match="service's risk cap"):
        await world.client.complete_service_order("PS-EST", over)
    world.sim.service_risk_cap = 20000
    done = await world.client.complete_service_order("PS-EST", over)
    assert done.total_amount == 20000


async def test_an_order_created_without_an_end_time_needs_one_at_complete(world: World) -> None:
    await world.client.create_service_order(new_order())
    no_end = m.ServiceOrderCompletion(COMPLETION.post_payments, 4000)
    with pytest.raises(BackendRejected, match="end_time is required"):
        await world.client.complete_service_order("PS-0001", no_end)
    with pytest.raises(InvalidArgument) as caught:
        await world.client.complete_service_order(
            "PS-0001", no_end, limits=v3.CompletionLimits(end_time_at_create="")
        )
    assert caught.value.field == "time_range.end_time"
    await world.client.create_service_order(
        new_order("PS-END", time_range=m.TimeRange("20091225091010", end_time="20091225121010"))
    )
    done = await world.client.complete_service_order("PS-END", no_end)
    assert done.state_description == m.MCH_COMPLETE


async def test_out_order_no_with_bar_and_star_reaches_the_simulator_decoded(world: World) -> None:
    created = await world.client.create_service_order(new_order("PS|7*A"))
    assert created.out_order_no == "PS|7*A"
    await world.client.complete_service_order("PS|7*A", COMPLETION)
    got = await world.client.get_service_order("PS|7*A")
    assert got.state_description == m.MCH_COMPLETE
    targets = [r.target for r in world.sim.received]
    assert "/v3/payscore/serviceorder/PS%7C7%2AA/complete" in targets


async def test_pay_retries_the_charge_of_a_completed_order(world: World) -> None:
    world.sim.auto_charge = False
    await world.client.create_service_order(new_order())
    await world.client.complete_service_order("PS-0001", COMPLETION)
    await world.clock.advance(3600)
    assert world.sim.orders["PS-0001"].state_description == m.MCH_COMPLETE
    world.sim.auto_charge = True
    status, _, body = await world.sim.handle(
        "POST",
        "/v3/payscore/serviceorder/PS-0001/pay",
        {"Authorization": sign_by_hand(world, "POST", "/v3/payscore/serviceorder/PS-0001/pay")},
        PAY_BODY,
    )
    assert status == 200, body
    assert json.loads(body)["out_order_no"] == "PS-0001"
    assert world.sim.orders["PS-0001"].state == "DONE"
    assert world.sim.orders["PS-0001"].pay_calls == 1


async def test_every_answer_carries_the_headers_wechat_pay_sends(world: World) -> None:
    status, headers, _ = await world.sim.handle(
        "POST",
        "/v3/payscore/serviceorder",
        {"Authorization": sign_by_hand(world, "POST", "/v3/payscore/serviceorder", b"{}")},
        b"{}",
    )
    assert status == 400
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"
    for name in ("Wechatpay-Serial", "Wechatpay-Nonce", "Wechatpay-Timestamp"):
        assert headers[name]


async def test_wechatpay_serial_chooses_the_public_key_that_signs_the_answer(
    tmp_path: Path, merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    clock = InstantClock()
    public_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sim = PayScoreSimulator(
        clock,
        {MERCHANT_SERIAL: merchant_key.public_key()},
        platform_key,
        "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        public_key=(PLATFORM_SERIAL, public_key),
    )
    target = "/v3/payscore/serviceorder?out_order_no=X&service_id=500001&appid=" + APPID
    for asked, key in ((PLATFORM_SERIAL, public_key), ("", platform_key)):
        world = World(clock, sim, None, None, None, platform_key.public_key())  # type: ignore[arg-type]
        headers = {"Authorization": sign_by_hand(world, "GET", target, merchant=merchant_key)}
        if asked:
            headers["Wechatpay-Serial"] = asked
        _, answer_headers, body = await sim.handle("GET", target, headers, b"")
        verifier = v3.ResponseVerifier(
            {answer_headers["Wechatpay-Serial"]: key.public_key()}, clock
        )
        verifier.verify({k.lower(): v for k, v in answer_headers.items()}, body)
        assert (answer_headers["Wechatpay-Serial"] == PLATFORM_SERIAL) is bool(asked)


async def test_unionid_by_face_sid(world: World) -> None:
    world.sim.register_face_sid("aabbccdd12345", "o6_bmasdasdsad6_2sgVt7hMZOPfL")
    unionid = await world.client.get_user_unionid("aabbccdd12345")
    assert unionid == m.UnionIdResult("o6_bmasdasdsad6_2sgVt7hMZOPfL")
    (received,) = [r for r in world.sim.received if r.endpoint == "unionid"]
    assert received.target == f"/v3/facemch/users/aabbccdd12345?info_type=ASK_UNIONID&appid={APPID}"


async def test_a_forged_answer_is_not_trusted(world: World) -> None:
    world.sim.forge_next("create")
    with pytest.raises(ResponseNotTrusted, match="does not verify"):
        await world.client.create_service_order(new_order())
    # The simulator did create it: the caller must query, which answers honestly.
    got = await world.client.get_service_order("PS-0001")
    assert got.state is m.ServiceOrderState.DOING


async def test_an_unsigned_rejection_is_not_believed(world: World) -> None:
    world.sim.fail_next("query", status=404, code="ORDER_NOT_EXIST")
    world.sim.faults[-1] = type(world.sim.faults[-1])(
        "query", 404, "ORDER_NOT_EXIST", "forged", unsigned=True
    )
    with pytest.raises(ResponseNotTrusted, match="unsigned HTTP 404"):
        await world.client.get_service_order("PS-0001")


async def test_an_answer_signed_by_an_unknown_platform_key_is_not_trusted(
    world: World, merchant_key: rsa.RSAPrivateKey
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client = PayScoreClient(
        MCHID,
        APPID,
        SERVICE_ID,
        merchant_key,
        MERCHANT_SERIAL,
        {PLATFORM_SERIAL: stranger.public_key()},
        base_url=world.server.base_url,
        http=world.http,
        clock=world.clock,
    )
    with pytest.raises(ResponseNotTrusted):
        await client.create_service_order(new_order())


async def test_a_request_signed_with_the_wrong_merchant_key_is_refused(world: World) -> None:
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(BackendRejected) as caught:
        await world.with_key(impostor).create_service_order(new_order())
    assert caught.value.code == "SIGN_ERROR"
    assert world.sim.orders == {}


async def test_a_slow_answer_waits_on_the_simulator_clock(world: World) -> None:
    world.sim.delay_next(30.0, "create")
    before = world.clock.time()
    created = await world.client.create_service_order(new_order())
    assert created.state is m.ServiceOrderState.DOING
    assert world.clock.slept == [30.0]
    assert world.clock.time() == before + 30.0
