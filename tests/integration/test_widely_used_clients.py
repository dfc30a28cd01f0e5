"""The simulators as widely used clients see them: wechatpayv3 (v3 PayScore) and wechatpy (v2).

Neither client can be given a base URL, so each reaches the simulator as it would reach WeChat
Pay: through an HTTPS proxy (a CONNECT tunnel to the simulator), trusting the simulator's test
CA, both set through the environment that requests reads (HTTPS_PROXY, REQUESTS_CA_BUNDLE).
Their code is used as shipped: nothing in them is patched. Each call runs in a thread, since
both are synchronous and the simulators answer on this event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import wechatpayv3
import wechatpy.pay
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from facepayd.clock import SystemClock
from facepayd.sim.payscore import PayScoreSimulator
from facepayd.sim.tls import TestPki, generate_test_pki
from facepayd.sim.wxpay import WxPaySimulator
from facepayd.wxpay.models import Merchant
from facepayd.wxpay.v3 import certificate_serial
from tests.helpers import settle

T = TypeVar("T")

# The host both clients have built in.
WECHAT_HOST = "api.mch.weixin.qq.com"
MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
SERVICE_ID = "500001"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
MERCHANT_SERIAL = "3775B6A45ACD588826D15E583A95F5DD00000001"
PUBLIC_KEY_ID = "PUB_KEY_ID_0119000001092025010100000000"
API_KEY = "k" * 32
# A face code the v2 simulator accepts as a payer's code (18 digits starting 10-15).
AUTH_CODE = "134567890123456789"


async def _tunnel(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    port: int,
    tunnels: set[asyncio.Task[Any]],
) -> None:
    """One CONNECT tunnel to the simulator, whatever host the client named."""
    task = asyncio.current_task()
    assert task is not None
    tunnels.add(task)
    writers = [writer]
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(f"CONNECT {WECHAT_HOST}:443 ".encode()):
            writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(up_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            if dst.can_write_eof():
                with contextlib.suppress(OSError):
                    dst.write_eof()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        # Cancelled at teardown: a client's keep-alive connection is still open.
        pass
    finally:
        tunnels.discard(task)
        for w in writers:
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()


@dataclass
class World:
    server: WxPaySimulator
    payscore: PayScoreSimulator
    pki: TestPki
    merchant_pem: str
    public_key_pem: str
    api_v3_key: str

    def v3(self, *, public_key_mode: bool) -> wechatpayv3.WeChatPay:
        """wechatpayv3 as a merchant configures it (its constructor fetches /v3/certificates)."""
        keys: dict[str, Any] = (
            {"public_key": self.public_key_pem, "public_key_id": PUBLIC_KEY_ID}
            if public_key_mode
            else {}
        )
        return wechatpayv3.WeChatPay(
            wechatpay_type=wechatpayv3.WeChatPayType.NATIVE,
            mchid=MCHID,
            private_key=self.merchant_pem,
            cert_serial_no=MERCHANT_SERIAL,
            appid=APPID,
            apiv3_key=self.api_v3_key,
            notify_url="https://pos.example.com/notify",
            **keys,
        )

    def v2(self) -> wechatpy.pay.WeChatPay:
        """wechatpy's v2 client with the merchant certificate for /secapi."""
        return wechatpy.pay.WeChatPay(
            appid=APPID,
            api_key=API_KEY,
            mch_id=MCHID,
            mch_cert=str(self.pki.client_cert),
            mch_key=str(self.pki.client_key),
            timeout=10,
        )


def _certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Simulated WeChat Pay platform")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    # Both clients sign with the real time: the simulators run on it too.
    clock = SystemClock()
    pki = generate_test_pki(tmp_path, server_names=(WECHAT_HOST,))
    merchant_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    platform_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    platform_cert = _certificate(platform_key)
    api_v3_key = secrets.token_hex(16)
    server = WxPaySimulator(
        merchant=Merchant(appid=APPID, mch_id=MCHID), api_key=API_KEY, pki=pki, clock=clock
    )
    payscore = PayScoreSimulator(
        clock,
        {MERCHANT_SERIAL: merchant_key.public_key()},
        platform_key,
        certificate_serial(platform_cert),
        platform_certificate=platform_cert,
        api_v3_key=api_v3_key.encode(),
        public_key=(PUBLIC_KEY_ID, public_key),
    )
    payscore.install(server)
    payscore.add_user(OPENID)
    await server.start()
    port = int(server.base_url.rsplit(":", 1)[1])
    tunnels: set[asyncio.Task[Any]] = set()
    proxy = await asyncio.start_server(lambda r, w: _tunnel(r, w, port, tunnels), "127.0.0.1", 0)
    proxy_port = proxy.sockets[0].getsockname()[1]
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_cert))
    try:
        yield World(
            server,
            payscore,
            pki,
            merchant_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            public_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
            api_v3_key,
        )
    finally:
        proxy.close()
        for task in list(tunnels):
            task.cancel()
        await asyncio.gather(*tunnels, return_exceptions=True)
        await proxy.wait_closed()
        await settle()  # the simulator reads the end of each tunnelled connection
        await server.stop()


async def call(work: Callable[[], T]) -> T:
    """Run one synchronous client call off the loop the simulators answer on."""
    return await asyncio.to_thread(work)


def ok(answer: tuple[int, Any]) -> dict[str, Any]:
    """A wechatpayv3 answer that it accepted (it raises on a signature it cannot verify)."""
    status, text = answer
    assert 200 <= status < 300, text
    body: dict[str, Any] = json.loads(text) if text else {}
    return body


TIME_RANGE = {"start_time": "20091225091010", "end_time": "20091225121010"}
RISK_FUND = {"name": "ESTIMATE_ORDER_COST", "amount": 10000, "description": "就餐的预估费用"}
POST_PAYMENTS = [{"name": "就餐费用服务费", "amount": 4000, "description": "100/小时", "count": 1}]
DISCOUNTS = [{"name": "满20减1元", "description": "不与其他优惠叠加", "amount": 100}]


@pytest.mark.parametrize("public_key_mode", [False, True], ids=["certificate", "public-key"])
async def test_wechatpayv3_accepts_every_payscore_and_unionid_answer(
    world: World, public_key_mode: bool
) -> None:
    pay = await call(lambda: world.v3(public_key_mode=public_key_mode))
    assert world.payscore.calls["certificates"] == (0 if public_key_mode else 1)
    no, other = ("PSV3-PK-1", "PSV3-PK-2") if public_key_mode else ("PSV3-1", "PSV3-2")

    created = ok(
        await call(
            lambda: pay.payscore_create(
                out_order_no=no,
                service_id=SERVICE_ID,
                service_introduction="某某酒店",
                time_range=TIME_RANGE,
                risk_fund=RISK_FUND,
                attach="table%3D7",
                openid=OPENID,
                post_payments=POST_PAYMENTS,
                need_user_confirm=False,
            )
        )
    )
    assert (created["state"], created["state_description"]) == ("DOING", "USER_CONFIRM")
    assert created["attach"] == "table%3D7"
    queried = ok(await call(lambda: pay.payscore_query(service_id=SERVICE_ID, out_order_no=no)))
    assert queried["order_id"] == created["order_id"]

    world.payscore.auto_charge = False  # sync reports the payment instead
    completed = ok(
        await call(
            lambda: pay.payscore_complete(
                out_order_no=no,
                service_id=SERVICE_ID,
                post_payments=POST_PAYMENTS,
                post_discounts=DISCOUNTS,
                total_amount=3900,
                time_range=TIME_RANGE,
            )
        )
    )
    assert (completed["state"], completed["state_description"]) == ("DOING", "MCH_COMPLETE")
    synced = ok(
        await call(
            lambda: pay.payscore_sync(
                out_order_no=no, service_id=SERVICE_ID, detail={"paid_time": "20091225121210"}
            )
        )
    )
    assert synced["state"] == "DONE"
    assert synced["collection"]["paid_amount"] == 3900

    ok(
        await call(
            lambda: pay.payscore_create(
                out_order_no=other,
                service_id=SERVICE_ID,
                service_introduction="某某酒店",
                time_range=TIME_RANGE,
                risk_fund=RISK_FUND,
                openid=OPENID,
                need_user_confirm=False,
            )
        )
    )
    cancelled = ok(
        await call(
            lambda: pay.payscore_cancel(
                out_order_no=other, service_id=SERVICE_ID, reason="用户投诉"
            )
        )
    )
    assert cancelled["out_order_no"] == other
    assert world.payscore.orders[other].state == "REVOKED"

    # wechatpayv3 has no method for this API: its core request, which every method uses.
    world.payscore.register_face_sid("aabbccdd12345", "o6_bmasdasdsad6_2sgVt7hMZOPfL")
    path = f"/v3/facemch/users/aabbccdd12345?info_type=ASK_UNIONID&appid={APPID}"
    union = ok(await call(lambda: pay._core.request(path)))
    assert union == {"union_id": "o6_bmasdasdsad6_2sgVt7hMZOPfL"}

    endpoints = ("create", "query", "complete", "sync", "cancel", "unionid")
    assert all(world.payscore.calls[e] >= 1 for e in endpoints)
    assert all(status < 300 for _, status, _ in world.payscore.answers)


async def test_wechatpayv3_pays_a_completed_order(world: World) -> None:
    pay = await call(lambda: world.v3(public_key_mode=False))
    world.payscore.auto_charge = False
    ok(
        await call(
            lambda: pay.payscore_create(
                out_order_no="PSV3-PAY",
                service_id=SERVICE_ID,
                service_introduction="某某酒店",
                time_range=TIME_RANGE,
                risk_fund=RISK_FUND,
                openid=OPENID,
                need_user_confirm=False,
            )
        )
    )
    ok(
        await call(
            lambda: pay.payscore_complete(
                out_order_no="PSV3-PAY",
                service_id=SERVICE_ID,
                post_payments=POST_PAYMENTS,
                total_amount=4000,
            )
        )
    )
    world.payscore.auto_charge = True
    paid = ok(await call(lambda: pay.payscore_pay(out_order_no="PSV3-PAY", service_id=SERVICE_ID)))
    assert paid["out_order_no"] == "PSV3-PAY"
    queried = ok(
        await call(lambda: pay.payscore_query(service_id=SERVICE_ID, out_order_no="PSV3-PAY"))
    )
    assert queried["state"] == "DONE"


@pytest.mark.parametrize("by", ["out_trade_no", "transaction_id"])
async def test_wechatpy_micropay_orderquery_and_reverse(world: World, by: str) -> None:
    pay = world.v2()
    no = f"WXPY{by[:3].upper()}0001"
    paid = await call(
        lambda: pay.micropay.create(
            body="Simulated store",
            total_fee=1,
            auth_code=AUTH_CODE,
            client_ip="127.0.0.1",
            out_trade_no=no,
        )
    )
    assert paid["result_code"] == "SUCCESS"
    assert paid["out_trade_no"] == no
    number = {by: paid[by]}
    queried = await call(lambda: pay.order.query(**number))
    assert (queried["trade_state"], queried["transaction_id"]) == (
        "SUCCESS",
        paid["transaction_id"],
    )
    reversed_ = await call(lambda: pay.order.reverse(**number))
    assert reversed_["result_code"] == "SUCCESS"
    assert reversed_["recall"] == "N"
    after = await call(lambda: pay.micropay.query(**number))
    assert after["trade_state"] == "REVOKED"
