"""The real v2 client against the real HTTPS WeChat Pay simulator over loopback TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import zlib
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
from facepayd.sim.wxpay import (
    MICROPAY_PATH,
    REVERSE_PATH,
    REVERSE_WINDOW,
    OrderState,
    Scenario,
    UnknownReverse,
    WxPaySimulator,
)
from facepayd.wxpay.http import ClientCert, WxPayHttpClients, build_http_clients
from facepayd.wxpay.models import Merchant, MicropayOrder, TradeState
from facepayd.wxpay.sign import HMAC_SHA256, MD5, sign
from facepayd.wxpay.v2 import WxPayV2Client
from facepayd.wxpay.xml import build_xml, parse_xml

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


def code_for(out_trade_no: str) -> str:
    """A valid payment code of this order alone (WeChat Pay takes each code once)."""
    return "13" + f"{zlib.crc32(out_trade_no.encode()):016d}"


def order(out_trade_no: str, total_fee: int) -> MicropayOrder:
    return MicropayOrder(
        out_trade_no=out_trade_no,
        total_fee=total_fee,
        body="face pay test",
        auth_code=code_for(out_trade_no),
    )


def assert_no_secrets(exc: BaseException, *codes: str) -> None:
    text = f"{exc!s} {exc!r}"
    for secret in (API_KEY, AUTH_CODE, RAWDATA, *codes):
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
    assert_no_secrets(info.value, code_for(f"T-{fee}"))
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
    assert_no_secrets(info.value, code_for("T-down"))


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
    refused = await client.micropay(order("T-mm", 1))
    assert (refused.state, refused.err_code_des) == (TradeState.REJECTED, "APPID_MCHID_NOT_MATCH")
    assert sim.order("T-mm") is None
    with pytest.raises(BackendRejected):
        await client.orderquery(out_trade_no="T-mm")


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


# --- the strict simulator: answers WeChat Pay may give, which a kind simulator never did --------


async def raw_call(
    http: WxPayHttpClients, sim: WxPaySimulator, path: str, **params: str
) -> dict[str, str]:
    """One signed v2 call without the client, for what its answer carries on the wire."""
    request = {"appid": MERCHANT.appid, "mch_id": MERCHANT.mch_id, "nonce_str": "n" * 32}
    request.update(params)
    request["sign"] = sign(request, API_KEY, MD5)
    client = http.secapi if path.startswith("/secapi/") else http.api
    response = await client.post(sim.base_url + path, content=build_xml(request))
    assert response.status_code == 200
    return parse_xml(response.content, 65536)


async def test_unknown_reverse_can_answer_an_unlisted_code(
    make_client: MakeClient, sim: WxPaySimulator, http: WxPayHttpClients
) -> None:
    sim.unknown_reverse = UnknownReverse.NOT_EXIST
    result = await make_client().reverse(out_trade_no="T-nx")
    assert (result.succeeded, result.err_code) == (False, "ORDERNOTEXIST")
    # The answer's recall=N decides, even for a code the reverse table does not list.
    assert not result.recall
    raw = await raw_call(http, sim, REVERSE_PATH, out_trade_no="T-nx2")
    assert (raw["result_code"], raw["err_code"], raw["recall"]) == ("FAIL", "ORDERNOTEXIST", "N")
    assert sim.order("T-nx") is None


async def test_reverse_of_an_order_lost_inside_wechat_is_refused(
    make_client: MakeClient, sim: WxPaySimulator, clock: ManualClock
) -> None:
    client = make_client()
    await client.micropay(order("T-lost", 202))
    assert (await client.orderquery(out_trade_no="T-lost")).state is TradeState.NOT_EXIST
    await clock.advance(16)
    result = await client.reverse(out_trade_no="T-lost")
    assert (result.succeeded, result.recall, result.err_code) == (False, False, "TRADE_ERROR")
    (record,) = sim.reverses("T-lost")
    assert (record.age, record.answered, record.recall) == (16.0, "TRADE_ERROR", False)


@pytest.mark.parametrize(
    ("scenario", "err_code"),
    [
        (Scenario.REVERSE_TRADE_ERROR, "TRADE_ERROR"),
        (Scenario.REVERSE_EXPIRE, "REVERSE_EXPIRE"),
        (Scenario.REVERSE_INVALID_REQUEST, "INVALID_REQUEST"),
        (Scenario.REVERSE_PARAM_ERROR, "PARAM_ERROR"),
        (Scenario.REVERSE_INVALID_TRANSACTIONID, "INVALID_TRANSACTIONID"),
        (Scenario.REVERSE_SIGNERROR, "SIGNERROR"),
    ],
)
async def test_scripted_reverse_refusals_are_definite_and_change_nothing(
    make_client: MakeClient,
    sim: WxPaySimulator,
    http: WxPayHttpClients,
    scenario: Scenario,
    err_code: str,
) -> None:
    client = make_client()
    await client.micropay(order("T-rf", 102))
    await client.micropay(order("T-rf-raw", 102))
    sim.script("T-rf", scenario)
    sim.script("T-rf-raw", scenario)
    sim.script("T-rf", Scenario.NOTENOUGH)  # an outcome is for micropay: reverse leaves it
    result = await client.reverse(out_trade_no="T-rf")
    assert (result.succeeded, result.recall, result.err_code) == (False, False, err_code)
    raw = await raw_call(http, sim, REVERSE_PATH, out_trade_no="T-rf-raw")
    assert (raw["err_code"], raw["recall"]) == (err_code, "N")
    record = sim.order("T-rf")
    assert record is not None
    assert record.state is OrderState.USERPAYING
    # Scripted: the next reverse only.
    assert (await client.reverse(out_trade_no="T-rf")).succeeded
    assert [r.answered for r in sim.reverses("T-rf")] == [err_code, "SUCCESS"]


@pytest.mark.parametrize(("fee", "err_code"), [(105, "TRADE_ERROR"), (106, "REVERSE_EXPIRE")])
async def test_amount_reverse_refusals_refuse_every_reverse(
    make_client: MakeClient, sim: WxPaySimulator, fee: int, err_code: str
) -> None:
    client = make_client()
    assert (await client.micropay(order(f"T-{fee}", fee))).state is TradeState.USERPAYING
    for _ in range(3):
        result = await client.reverse(out_trade_no=f"T-{fee}")
        assert (result.succeeded, result.recall, result.err_code) == (False, False, err_code)
    assert (await client.orderquery(out_trade_no=f"T-{fee}")).state is TradeState.USERPAYING


async def test_reverse_expires_seven_days_after_the_order(
    make_client: MakeClient, sim: WxPaySimulator, clock: ManualClock
) -> None:
    client = make_client()
    await client.micropay(order("T-old1", 10))
    await client.micropay(order("T-old2", 10))
    await clock.advance(REVERSE_WINDOW - 1)
    assert (await client.reverse(out_trade_no="T-old1")).succeeded
    await clock.advance(1)
    result = await client.reverse(out_trade_no="T-old2")
    assert (result.succeeded, result.recall, result.err_code) == (False, False, "REVERSE_EXPIRE")
    record = sim.order("T-old2")
    assert record is not None
    assert record.charged  # still paid: a refund is the only way back
    assert [r.age for r in sim.reverses()] == [REVERSE_WINDOW - 1, REVERSE_WINDOW]


async def test_reverse_of_an_order_the_user_is_paying_says_userpaying(
    make_client: MakeClient, sim: WxPaySimulator, clock: ManualClock
) -> None:
    client = make_client()
    await client.micropay(order("T-107", 107))
    waiting = await client.reverse(out_trade_no="T-107")
    assert (waiting.succeeded, waiting.recall, waiting.err_code) == (False, True, "USERPAYING")
    await clock.advance(sim.userpaying_seconds)
    assert (await client.orderquery(out_trade_no="T-107")).state is TradeState.PAYERROR
    assert (await client.reverse(out_trade_no="T-107")).succeeded
    assert (await client.orderquery(out_trade_no="T-107")).state is TradeState.REVOKED

    # Scripted, it acts only while the order is USERPAYING, as the reference's reason says.
    await client.micropay(order("T-up2", 102))
    await client.micropay(order("T-paid", 10))
    sim.script("*", Scenario.REVERSE_USERPAYING, times=2)
    assert (await client.reverse(out_trade_no="T-up2")).err_code == "USERPAYING"
    assert (await client.reverse(out_trade_no="T-paid")).succeeded


async def test_notpay_and_closed_are_trade_states_of_orderquery(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    for fee, state in ((204, TradeState.NOTPAY), (205, TradeState.CLOSED)):
        paid = await client.micropay(order(f"T-{fee}", fee))
        assert (paid.state, paid.err_code) == (TradeState.UNKNOWN, "SYSTEMERROR")
        queried = await client.orderquery(out_trade_no=f"T-{fee}")
        assert queried.state is state
        assert not queried.transaction_id  # only out_trade_no and attach when not SUCCESS
        record = sim.order(f"T-{fee}")
        assert record is not None
        assert record.charge_count == 0
    late = await client.micropay(order("T-205", 205))
    assert (late.state, late.err_code) == (TradeState.FAILED, "ORDERCLOSED")
    assert (await client.reverse(out_trade_no="T-205")).succeeded
    assert (await client.orderquery(out_trade_no="T-205")).state is TradeState.CLOSED
    assert (await client.reverse(out_trade_no="T-204")).succeeded
    assert (await client.orderquery(out_trade_no="T-204")).state is TradeState.REVOKED

    sim.script("T-s-np", Scenario.NOTPAY)
    await client.micropay(order("T-s-np", 1))
    assert (await client.orderquery(out_trade_no="T-s-np")).state is TradeState.NOTPAY


@pytest.mark.parametrize(
    "auth_code",
    [
        "13456789012345678",  # 17 digits
        "1345678901234567890",  # 19 digits
        "164567890123456789",  # starts 16
        "094567890123456789",  # starts 09
        "13456789012345678a",
        # Full-width digits, which str.isdigit() takes for digits.
        "".join(chr(0xFF10 + int(d)) for d in "134567890123456789"),
        "wxface-token-not-a-payment-code",
    ],
)
async def test_micropay_refuses_an_auth_code_that_is_not_a_payment_code(
    make_client: MakeClient, sim: WxPaySimulator, auth_code: str
) -> None:
    client = make_client()
    result = await client.micropay(
        MicropayOrder(out_trade_no="T-ac", total_fee=1, body="b", auth_code=auth_code)
    )
    assert (result.state, result.err_code) == (TradeState.FAILED, "AUTH_CODE_INVALID")
    assert sim.order("T-ac") is None
    assert (await client.orderquery(out_trade_no="T-ac")).state is TradeState.NOT_EXIST


async def test_a_payment_code_pays_once_and_another_order_with_it_is_auth_code_error(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    first = MicropayOrder(out_trade_no="T-once", total_fee=5, body="b", auth_code=AUTH_CODE)
    assert (await client.micropay(first)).state is TradeState.SUCCESS
    again = dataclasses.replace(first, out_trade_no="T-twice")
    result = await client.micropay(again)
    assert (result.state, result.err_code) == (TradeState.FAILED, "AUTH_CODE_ERROR")
    assert sim.order("T-twice") is None
    # The same order's repeat is still the documented one, not a code error.
    repeat = await client.micropay(first)
    assert repeat.err_code == "ORDERPAID"
    record = sim.order("T-once")
    assert record is not None
    assert record.charge_count == 1


@pytest.mark.parametrize("prefix", ["10", "11", "12", "13", "14", "15"])
async def test_micropay_takes_every_payment_code_prefix(
    make_client: MakeClient, prefix: str
) -> None:
    # The simulated terminal's face codes are "13" and 16 digits.
    auth_code = prefix + "0123456789012345"
    result = await make_client().micropay(
        MicropayOrder(out_trade_no=f"T-p{prefix}", total_fee=1, body="b", auth_code=auth_code)
    )
    assert result.state is TradeState.SUCCESS


@pytest.mark.parametrize(
    ("fee", "message"), [(601, "SIGNERROR"), (602, "XML_FORMAT_ERROR"), (603, "PARAM_ERROR")]
)
async def test_micropay_return_code_fail_creates_nothing(
    make_client: MakeClient,
    sim: WxPaySimulator,
    http: WxPayHttpClients,
    fee: int,
    message: str,
) -> None:
    client = make_client()
    refused = await client.micropay(order(f"T-{fee}", fee))
    assert refused.state is TradeState.REJECTED
    assert message in (refused.err_code, refused.err_code_des)
    assert sim.order(f"T-{fee}") is None
    assert (await client.orderquery(out_trade_no=f"T-{fee}")).state is TradeState.NOT_EXIST
    # As WeChat's: return_code and return_msg only, no result fields and no sign.
    raw = await raw_call(
        http,
        sim,
        MICROPAY_PATH,
        out_trade_no=f"T-{fee}-raw",
        total_fee=str(fee),
        body="b",
        auth_code=AUTH_CODE,
        spbill_create_ip="127.0.0.1",
    )
    assert raw == {"return_code": "FAIL", "return_msg": message}
    # Every attempt is refused the same way: none ever created the order.
    assert (await client.micropay(order(f"T-{fee}", fee))).state is TradeState.REJECTED
    assert sim.order(f"T-{fee}") is None


async def test_scripted_return_code_fail_refuses_any_call_and_changes_nothing(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    await client.micropay(order("T-rcf", 102))
    sim.script("T-rcf", Scenario.RETURN_FAIL_SIGNERROR, times=2)
    with pytest.raises(BackendRejected):
        await client.orderquery(out_trade_no="T-rcf")
    with pytest.raises(BackendRejected):
        await client.reverse(out_trade_no="T-rcf")
    record = sim.order("T-rcf")
    assert record is not None
    assert (record.state, record.query_calls, record.reverse_calls) == (OrderState.USERPAYING, 0, 0)
    assert [(r.answered, r.recall) for r in sim.reverses("T-rcf")] == [("FAIL", False)]


async def test_a_foreign_paid_order_answers_orderpaid_and_is_what_orderquery_shows(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    seeded = sim.seed_paid_order("T-f", total_fee=500, openid="oSomeoneElse")
    sim.seed_paid_order("T-f2", total_fee=500)
    client = make_client()
    same = await client.micropay(order("T-f", 500))
    assert (same.state, same.err_code) == (TradeState.UNKNOWN, "ORDERPAID")
    other = await client.micropay(order("T-f2", 800))
    assert (other.state, other.err_code) == (TradeState.UNKNOWN, "OUT_TRADE_NO_USED")
    queried = await client.orderquery(out_trade_no="T-f2")
    assert queried.state is TradeState.SUCCESS
    assert queried.total_fee == 500
    assert queried.openid.startswith("oForeign")
    queried = await client.orderquery(out_trade_no="T-f")
    assert (queried.openid, queried.transaction_id) == ("oSomeoneElse", seeded.transaction_id)
    record = sim.order("T-f")
    assert record is not None
    assert (record.foreign, record.charge_count, record.micropay_calls) == (True, 1, 1)
    with pytest.raises(ValueError, match="already"):
        sim.seed_paid_order("T-f", total_fee=1)


async def test_a_repeated_micropay_with_another_amount_is_out_trade_no_used(
    make_client: MakeClient,
) -> None:
    client = make_client()
    assert (await client.micropay(order("T-twice", 100))).state is TradeState.SUCCESS
    again = await client.micropay(order("T-twice", 101))
    assert again.err_code == "OUT_TRADE_NO_USED"


async def test_every_reverse_is_recorded_with_its_age(
    make_client: MakeClient, sim: WxPaySimulator, clock: ManualClock, http: WxPayHttpClients
) -> None:
    client = make_client()
    await client.micropay(order("T-age", 104))  # two SYSTEMERROR recall=Y, then SUCCESS
    await clock.advance(15)
    for _ in range(3):
        await client.reverse(out_trade_no="T-age")
        await clock.advance(2.5)
    with pytest.raises(BackendRejected):
        await make_client(secapi_http=http.api).reverse(out_trade_no="T-age")  # no certificate
    sim.seed_paid_order("T-age-f", total_fee=3, age=600)
    await client.reverse(out_trade_no="T-age-f")
    records = sim.reverses()
    assert [(r.out_trade_no, r.age, r.answered, r.recall) for r in records] == [
        ("T-age", 15.0, "SYSTEMERROR", True),
        ("T-age", 17.5, "SYSTEMERROR", True),
        ("T-age", 20.0, "SUCCESS", False),
        ("T-age", 22.5, "FAIL", False),
        ("T-age-f", 600.0, "SUCCESS", False),
    ]
    assert records[0].arrived_at == clock.time() - 7.5
    assert sim.reverses("T-age-f") == records[-1:]
    sim.clear_reverses()
    assert sim.reverses() == ()


async def test_a_reply_fault_on_a_reverse_is_recorded_with_it(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    await client.micropay(order("T-rvf", 102))
    sim.script("T-rvf", Scenario.DROP_CONNECTION)
    with pytest.raises(BackendUnavailable):
        await client.reverse(out_trade_no="T-rvf")
    (record,) = sim.reverses()
    assert (record.answered, record.fault) == ("SUCCESS", Scenario.DROP_CONNECTION)


async def test_the_reverse_record_is_bounded(
    pki: TestPki, clock: ManualClock, http: WxPayHttpClients
) -> None:
    small = WxPaySimulator(
        merchant=MERCHANT, api_key=API_KEY, pki=pki, clock=clock, reverse_log_size=2
    )
    await small.start()
    try:
        for n in range(3):
            await raw_call(http, small, REVERSE_PATH, out_trade_no=f"T-b{n}")
    finally:
        await small.stop()
    assert [r.out_trade_no for r in small.reverses()] == ["T-b1", "T-b2"]


async def test_reverse_by_transaction_id_takes_priority(
    make_client: MakeClient, sim: WxPaySimulator
) -> None:
    client = make_client()
    paid = await client.micropay(order("T-tid", 9))
    await client.micropay(order("T-tid-other", 102))
    result = await client.reverse(out_trade_no="T-tid-other", transaction_id=paid.transaction_id)
    assert result.succeeded
    record = sim.order("T-tid")
    assert record is not None
    assert record.refunded
    other = sim.order("T-tid-other")
    assert other is not None
    assert other.state is OrderState.USERPAYING
    unknown = await client.reverse(out_trade_no="T-tid", transaction_id="4200" + "0" * 24)
    assert (unknown.succeeded, unknown.recall) == (False, False)
    assert unknown.err_code == "INVALID_TRANSACTIONID"
