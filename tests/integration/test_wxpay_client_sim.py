"""The real v2 client against the real HTTPS WeChat Pay simulator over loopback TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from facepayd.clock import ManualClock
from facepayd.errors import (
    BackendError,
    BackendRejected,
    BackendUnavailable,
    ConfigError,
    ResponseNotTrusted,
)
from facepayd.sim.tls import TestPki, generate_test_pki
from facepayd.sim.wxpay import OrderState, Scenario, UnknownReverse, WxPaySimulator
from facepayd.wxpay.http import ClientCert, WxPayHttpClients, build_http_clients
from facepayd.wxpay.models import Merchant, MicropayOrder, TradeState
from facepayd.wxpay.sign import HMAC_SHA256, MD5
from facepayd.wxpay.v2 import WxPayV2Client

MERCHANT = Merchant(appid="wx2421b1c4370ec43b", mch_id="1900000109")
API_KEY = "SimApiKey0123456789abcdefghijklm"
AUTH_CODE = "134567890123456789"
RAWDATA = "rawdata-secret-from-the-sdk-" + "x" * 40
TIMEOUT = httpx.Timeout(5.0)

MakeClient = Callable[..., WxPayV2Client]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return generate_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(pki: TestPki, clock: ManualClock) -> AsyncIterator[WxPaySimulator]:
    simulator = WxPaySimulator(
        merchant=MERCHANT, api_key=API_KEY, pki=pki, clock=clock, authinfo_expires_in=3600
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def http(pki: TestPki, sim: WxPaySimulator) -> AsyncIterator[WxPayHttpClients]:
    cert = ClientCert.load_pkcs12_file(pki.client_p12, pki.client_p12_password)
    clients = build_http_clients(sim.ca_file, cert, TIMEOUT)
    yield clients
    await clients.aclose()


@pytest.fixture
def make_client(sim: WxPaySimulator, http: WxPayHttpClients, clock: ManualClock) -> MakeClient:
    def make(**overrides: Any) -> WxPayV2Client:
        options: dict[str, Any] = {
            "api_base_url": sim.base_url,
            "authinfo_url": sim.authinfo_url,
            "http": http.api,
            "secapi_http": http.secapi,
            "clock": clock,
        }
        options.update(overrides)
        api_key = options.pop("api_key", API_KEY)
        sign_type = options.pop("sign_type", MD5)
        return WxPayV2Client(MERCHANT, api_key, sign_type, **options)

    return make


def order(out_trade_no: str, total_fee: int) -> MicropayOrder:
    return MicropayOrder(
        out_trade_no=out_trade_no, total_fee=total_fee, body="face pay test", auth_code=AUTH_CODE
    )


def assert_no_secrets(exc: BaseException) -> None:
    text = f"{exc!s} {exc!r}"
    for secret in (API_KEY, AUTH_CODE, RAWDATA):
        assert secret not in text


# --- authinfo ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sign_type", [MD5, HMAC_SHA256])
async def test_authinfo_is_issued_verified_and_expires(
    make_client: MakeClient, sim: WxPaySimulator, clock: ManualClock, sign_type: str
) -> None:
    client = make_client(sign_type=sign_type)
    grant = await client.get_authinfo(
        rawdata=RAWDATA, store_id="S1", store_name="Store", device_id="D1"
    )
    assert grant.expires_in == 3600
    assert sim.authinfo_fetches == 1
    assert sim.is_authinfo_valid(grant.authinfo)
    assert not sim.is_authinfo_valid(grant.authinfo + "x")
    await clock.advance(3600)
    assert not sim.is_authinfo_valid(grant.authinfo)


async def test_authinfo_can_be_revoked(make_client: MakeClient, sim: WxPaySimulator) -> None:
    client = make_client()
    grant = await client.get_authinfo(rawdata=RAWDATA, store_id="S", store_name="N", device_id="D")
    other = await client.get_authinfo(rawdata=RAWDATA, store_id="S", store_name="N", device_id="D")
    sim.revoke_authinfo(grant.authinfo)
    assert not sim.is_authinfo_valid(grant.authinfo)
    assert sim.is_authinfo_valid(other.authinfo)
    sim.revoke_authinfo()
    assert not sim.is_authinfo_valid(other.authinfo)
    assert sim.issued_authinfos() == (grant.authinfo, other.authinfo)


@pytest.mark.parametrize(
    "fault",
    [
        Scenario.TAMPERED,
        Scenario.UNSIGNED,
        Scenario.WRONG_APPID,
        Scenario.MALFORMED_XML,
        Scenario.XML_BOMB,
        Scenario.DTD_ENTITY,
        Scenario.OVERSIZED,
    ],
)
async def test_untrustworthy_authinfo_answers_are_refused(
    make_client: MakeClient, sim: WxPaySimulator, fault: Scenario
) -> None:
    sim.script("*", fault)
    with pytest.raises(ResponseNotTrusted) as info:
        await make_client().get_authinfo(
            rawdata=RAWDATA, store_id="S", store_name="N", device_id="D"
        )
    assert_no_secrets(info.value)
    assert sim.authinfo_fetches == 1  # the sim issued one; the client would not take it


async def test_wrong_api_key_is_rejected_by_the_backend(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    with pytest.raises(BackendRejected) as info:
        await make_client(api_key="W" * 32).get_authinfo(
            rawdata=RAWDATA, store_id="S", store_name="N", device_id="D"
        )
    assert info.value.message == "SIGNERROR"
    assert sim.signature_failures == 1
    assert sim.authinfo_fetches == 0
    assert_no_secrets(info.value)


# --- micropay scenarios -----------------------------------------------------------------------


@pytest.mark.parametrize("sign_type", [MD5, HMAC_SHA256])
async def test_micropay_success_charges_once(
    make_client: MakeClient, sim: WxPaySimulator, sign_type: str
) -> None:
    client = make_client(sign_type=sign_type)
    result = await client.micropay(order("T-ok", 1234))
    assert result.state is TradeState.SUCCESS
    assert result.total_fee == 1234
    record = sim.order("T-ok")
    assert record is not None
    assert record.charged
    assert record.charge_count == 1
    assert result.transaction_id == record.transaction_id
    assert result.time_end

    again = await client.micropay(order("T-ok", 1234))
    assert (again.state, again.err_code) == (TradeState.UNKNOWN, "ORDERPAID")
    record = sim.order("T-ok")
    assert record is not None
    assert record.charge_count == 1
    assert record.micropay_calls == 2

    queried = await client.orderquery(out_trade_no="T-ok")
    assert queried.state is TradeState.SUCCESS
    assert queried.transaction_id == record.transaction_id


@pytest.mark.parametrize(
    ("fee", "state", "err_code", "charged", "query_state"),
    [
        (201, TradeState.UNKNOWN, "SYSTEMERROR", True, TradeState.SUCCESS),
        (202, TradeState.UNKNOWN, "SYSTEMERROR", False, TradeState.NOT_EXIST),
        (203, TradeState.UNKNOWN, "BANKERROR", False, TradeState.PAYERROR),
        (301, TradeState.FAILED, "NOTENOUGH", False, TradeState.PAYERROR),
        (302, TradeState.FAILED, "AUTHCODEEXPIRE", False, TradeState.PAYERROR),
        (102, TradeState.USERPAYING, "USERPAYING", False, TradeState.USERPAYING),
    ],
)
async def test_micropay_error_codes_map_to_trade_states(
    make_client: MakeClient,
    sim: WxPaySimulator,
    fee: int,
    state: TradeState,
    err_code: str,
    charged: bool,
    query_state: TradeState,
) -> None:
    client = make_client()
    result = await client.micropay(order(f"T-{fee}", fee))
    assert (result.state, result.err_code) == (state, err_code)
    assert result.err_code_des
    record = sim.order(f"T-{fee}")
    assert record is not None
    assert record.charged is charged
    assert (await client.orderquery(out_trade_no=f"T-{fee}")).state is query_state


async def test_userpaying_then_success_after_the_user_confirms(
    make_client: MakeClient, sim: WxPaySimulator, clock: ManualClock
) -> None:
    client = make_client()
    assert (await client.micropay(order("T-up", 101))).state is TradeState.USERPAYING
    assert (await client.orderquery(out_trade_no="T-up")).state is TradeState.USERPAYING
    await clock.advance(sim.userpaying_seconds)
    result = await client.orderquery(out_trade_no="T-up")
    assert result.state is TradeState.SUCCESS
    assert result.total_fee == 101
    by_id = await client.orderquery(transaction_id=result.transaction_id)
    assert by_id.state is TradeState.SUCCESS
    record = sim.order("T-up")
    assert record is not None
    assert record.charge_count == 1


@pytest.mark.parametrize(
    ("fee", "error"),
    [
        (401, ResponseNotTrusted),  # forged success: and nothing was charged
        (502, BackendUnavailable),
        (503, ResponseNotTrusted),
        (504, ResponseNotTrusted),
        (505, ResponseNotTrusted),
        (506, ResponseNotTrusted),
        (507, ResponseNotTrusted),
        (508, ResponseNotTrusted),
        (509, ResponseNotTrusted),
        (510, BackendUnavailable),
    ],
)
async def test_spoiled_micropay_answers_are_never_results(
    make_client: MakeClient, sim: WxPaySimulator, fee: int, error: type[BackendError]
) -> None:
    client = make_client()
    with pytest.raises(error) as info:
        await client.micropay(order(f"T-{fee}", fee))
    assert_no_secrets(info.value)
    record = sim.order(f"T-{fee}")
    assert record is not None
    # Only the forged success left the order unpaid; the rest were paid despite the bad answer,
    # which is why the payment logic must query rather than give up.
    expected = TradeState.PAYERROR if fee == 401 else TradeState.SUCCESS
    assert (await client.orderquery(out_trade_no=f"T-{fee}")).state is expected
    assert record.charged is (fee != 401)


async def test_oversized_answer_is_refused_while_reading(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    with pytest.raises(ResponseNotTrusted, match="larger than 4096"):
        await make_client(max_response_bytes=4096).micropay(order("T-big", 508))


async def test_endless_body_is_cut_off_at_the_cap(
    make_client: MakeClient, pki: TestPki, sim: WxPaySimulator
) -> None:
    # A chunked body with no length and no end: only a cap applied while reading stops it.
    sent = 0
    done = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"</xml>")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<xml>\r\n")
        chunk = b"%x\r\n%s\r\n" % (16384, b"A" * 16384)
        try:
            while sent < 64 * 1024 * 1024:  # bounded, and far beyond any cap
                writer.write(chunk)
                await writer.drain()
                sent += 16384
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()
            done.set()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server = await asyncio.start_server(endless, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        client = make_client(api_base_url=f"https://127.0.0.1:{port}", total_timeout=20.0)
        with pytest.raises(ResponseNotTrusted, match="larger than 65536"):
            await client.orderquery(out_trade_no="T-endless")
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        server.close()
        await server.wait_closed()
    assert sent < 64 * 1024 * 1024


async def test_scripted_fault_applies_to_the_named_order_only(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    sim.script("T-drop", Scenario.DROP_CONNECTION)
    assert (await client.micropay(order("T-other", 5))).state is TradeState.SUCCESS
    with pytest.raises(BackendUnavailable):
        await client.micropay(order("T-drop", 5))
    assert (await client.micropay(order("T-drop", 5))).err_code == "ORDERPAID"


async def test_scripted_outcome_overrides_the_amount(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    sim.script("*", Scenario.NOTENOUGH)
    result = await make_client().micropay(order("T-s", 1))
    assert (result.state, result.err_code) == (TradeState.FAILED, "NOTENOUGH")


# --- reverse ------------------------------------------------------------------------------------


async def test_reverse_of_a_waiting_order_takes_no_money(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    await client.micropay(order("T-r1", 102))
    result = await client.reverse(out_trade_no="T-r1")
    assert result.succeeded
    assert not result.recall
    record = sim.order("T-r1")
    assert record is not None
    assert record.state is OrderState.REVOKED
    assert record.charge_count == 0
    assert (await client.orderquery(out_trade_no="T-r1")).state is TradeState.REVOKED
    late = await client.micropay(order("T-r1", 102))
    assert (late.state, late.err_code) == (TradeState.FAILED, "ORDERREVERSED")


async def test_reverse_of_a_paid_order_refunds_it(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    await client.micropay(order("T-r2", 201))
    assert (await client.reverse(out_trade_no="T-r2")).succeeded
    record = sim.order("T-r2")
    assert record is not None
    assert record.refunded
    assert not record.charged
    assert record.charge_count == 1


async def test_reverse_recall_until_it_succeeds(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    await client.micropay(order("T-r3", 104))
    answers = [await client.reverse(out_trade_no="T-r3") for _ in range(sim.reverse_recalls + 1)]
    assert [(a.succeeded, a.recall) for a in answers[:-1]] == [(False, True)] * sim.reverse_recalls
    assert answers[0].err_code == "SYSTEMERROR"
    assert (answers[-1].succeeded, answers[-1].recall) == (True, False)
    record = sim.order("T-r3")
    assert record is not None
    assert record.reverse_calls == sim.reverse_recalls + 1


async def test_reverse_of_an_unknown_order_is_refused_and_closes_nothing(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    result = await client.reverse(out_trade_no="T-never")
    assert (result.succeeded, result.recall, result.err_code) == (False, False, "TRADE_ERROR")
    assert sim.order("T-never") is None
    assert sim.reverses("T-never")[0].age is None
    # Nothing was closed: a micropay still on its way is charged, so a refusal proves nothing.
    late = await client.micropay(order("T-never", 1))
    assert late.state is TradeState.SUCCESS


async def test_reverse_of_an_unknown_order_succeeds_only_when_asked(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    sim.unknown_reverse = UnknownReverse.SUCCESS
    client = make_client()
    assert (await client.reverse(out_trade_no="T-never")).succeeded
    late = await client.micropay(order("T-never", 1))
    assert late.err_code == "ORDERREVERSED"
    record = sim.order("T-never")
    assert record is not None
    assert record.charge_count == 0
    assert record.reverse_calls == 1


async def test_reverse_needs_the_client_certificate(
    make_client: MakeClient, sim: WxPaySimulator, http: WxPayHttpClients
) -> None:
    await make_client().micropay(order("T-r4", 102))
    no_cert = make_client(secapi_http=http.api)
    with pytest.raises(BackendRejected):
        await no_cert.reverse(out_trade_no="T-r4")
    assert sim.unverified_secapi_calls == 1
    record = sim.order("T-r4")
    assert record is not None
    assert record.state is OrderState.USERPAYING

    with pytest.raises(ConfigError):
        await make_client(secapi_http=None).reverse(out_trade_no="T-r4")


async def test_client_certificate_from_pem_files_works(
    make_client: MakeClient, sim: WxPaySimulator, pki: TestPki
) -> None:
    cert = ClientCert.load_pem_files(pki.client_cert, pki.client_key)
    clients = build_http_clients(sim.ca_file, cert, TIMEOUT)
    await make_client().micropay(order("T-pem", 102))
    try:
        result = await make_client(secapi_http=clients.secapi).reverse(out_trade_no="T-pem")
    finally:
        await clients.aclose()
    assert result.succeeded
    assert sim.unverified_secapi_calls == 0


def test_client_key_reaches_tls_only_encrypted(pki: TestPki, tmp_path: Path) -> None:
    seen: list[tuple[bytes, Any]] = []

    class SpyContext(ssl.SSLContext):
        def load_cert_chain(self, certfile: Any, keyfile: Any = None, password: Any = None) -> None:
            seen.append((Path(certfile).read_bytes(), password))
            assert password
            super().load_cert_chain(certfile, keyfile, password)

    cert = ClientCert.load_pkcs12_file(pki.client_p12, pki.client_p12_password)
    cert.apply_to(SpyContext(ssl.PROTOCOL_TLS_CLIENT))
    assert len(seen) == 1
    written, password = seen[0]
    # What touched the disk is a key that opens only with the one-time password.
    with pytest.raises(TypeError, match="encrypted"):
        serialization.load_pem_private_key(written, password=None)
    password = password() if callable(password) else password
    secret = password.encode() if isinstance(password, str) else password
    key = serialization.load_pem_private_key(written, password=secret)
    original, _, _ = pkcs12.load_key_and_certificates(
        pki.client_p12.read_bytes(), pki.client_p12_password
    )
    assert original is not None
    assert key.public_key() == original.public_key()
    assert "PrivateKey" not in repr(cert)


def test_wrong_pkcs12_password_is_a_config_error(pki: TestPki) -> None:
    with pytest.raises(ConfigError) as info:
        ClientCert.load_pkcs12_file(pki.client_p12, b"wrong")
    assert "wrong" not in str(info.value)


# --- transport ----------------------------------------------------------------------------------


async def test_slow_answer_times_out_as_unavailable(
    make_client: MakeClient, sim: WxPaySimulator, pki: TestPki
) -> None:
    clients = build_http_clients(sim.ca_file, None, httpx.Timeout(0.3))
    try:
        with pytest.raises(BackendUnavailable) as info:
            await make_client(http=clients.api).micropay(order("T-slow", 501))
    finally:
        await clients.aclose()
    assert isinstance(info.value.__cause__, httpx.TimeoutException)
    record = sim.order("T-slow")
    assert record is not None
    assert record.charged


async def test_total_deadline_bounds_a_call(make_client: MakeClient, sim: WxPaySimulator) -> None:
    sim.script("*", Scenario.SLOW)
    with pytest.raises(BackendUnavailable, match="within"):
        await make_client(total_timeout=0.3).orderquery(out_trade_no="T-any")


async def test_connection_refused_is_unavailable(make_client: MakeClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(api_base_url=f"https://127.0.0.1:{port}")
    with pytest.raises(BackendUnavailable) as info:
        await client.micropay(order("T-down", 1))
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert_no_secrets(info.value)


async def test_untrusted_server_certificate_is_refused(
    make_client: MakeClient, sim: WxPaySimulator, tmp_path: Path
) -> None:
    other = generate_test_pki(tmp_path)
    clients = build_http_clients(str(other.ca_cert), None, TIMEOUT)
    try:
        with pytest.raises(BackendUnavailable):
            await make_client(http=clients.api).orderquery(out_trade_no="T-x")
    finally:
        await clients.aclose()
    assert sim.requests_served == 0


async def test_keep_alive_reuses_one_connection(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    await client.get_authinfo(rawdata=RAWDATA, store_id="S", store_name="N", device_id="D")
    await client.micropay(order("T-ka", 102))
    for _ in range(3):
        await client.orderquery(out_trade_no="T-ka")
    assert sim.requests_served == 5
    assert sim.connections_accepted == 1
    await client.reverse(out_trade_no="T-ka")
    await client.reverse(out_trade_no="T-ka")
    assert sim.connections_accepted == 2  # one more: the mTLS client's own connection


async def test_merchant_mismatch_in_the_request_is_refused(
    sim: WxPaySimulator, http: WxPayHttpClients, clock: ManualClock
) -> None:
    client = WxPayV2Client(
        Merchant(appid="wxother", mch_id="1"),
        API_KEY,
        MD5,
        api_base_url=sim.base_url,
        authinfo_url=sim.authinfo_url,
        http=http.api,
        secapi_http=http.secapi,
        clock=clock,
    )
    with pytest.raises(BackendRejected):
        await client.micropay(order("T-mm", 1))
    assert sim.order("T-mm") is None


async def test_request_fields_are_sent_and_signed(
    sim: WxPaySimulator, http: WxPayHttpClients, clock: ManualClock
) -> None:
    # A fixed nonce and clock make the request reproducible; the sim checks the signature.
    client = WxPayV2Client(
        MERCHANT,
        API_KEY,
        HMAC_SHA256,
        api_base_url=sim.base_url + "/",
        authinfo_url=sim.authinfo_url,
        http=http.api,
        secapi_http=http.secapi,
        clock=clock,
        nonce=lambda: "N" * 32,
    )
    paid = await client.micropay(
        MicropayOrder(
            out_trade_no="T-fields",
            total_fee=7,
            body="<body> & 刷脸",
            auth_code=AUTH_CODE,
            attach="a&b",
            device_info="DEV1",
        )
    )
    assert (paid.state, paid.attach) == (TradeState.SUCCESS, "a&b")
    assert sim.signature_failures == 0
