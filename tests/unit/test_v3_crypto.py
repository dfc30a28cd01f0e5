"""Known-answer tests of the v3 signatures, answer verification, AEAD resources and validation."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from facepayd.clock import ManualClock
from facepayd.errors import (
    BackendRejected,
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    ResponseNotTrusted,
)
from facepayd.wxpay import payscore_models as m
from facepayd.wxpay import v3

NOW = 1_700_000_000
MCHID = "1900000109"
MERCHANT_SERIAL = "3775B6A45ACD588826D15E583A95F5DD********"
PUB_KEY_ID = "PUB_KEY_ID_0114232134912410000000000000"

# A WeChat-style resource sealed once with this module's encrypt_resource and pinned here.
APIV3_KEY = b"facepay-terminal-apiv3-key-32byt"
RESOURCE = {
    "algorithm": "AEAD_AES_256_GCM",
    "ciphertext": (
        "uOjEI6Y9grqjIUsSKYcpz7TriuDStZ5XgygFK2BbVLN5LK1K"
        "+3iRjdmLckcNUSkEOIbLGeXjUj+6a0nb8eUHbGeeYPmPCrds"
    ),
    "nonce": "n0nce-12byte",
    "associated_data": "certificate",
}
RESOURCE_PLAINTEXT = b'{"serial_no":"5157F09EFDC096DE15EBE81A47057A7232F1B8E1"}'

# DER DigestInfo prefix for SHA-256 (RFC 8017, section 9.2, note 1).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


@pytest.fixture(scope="module")
def merchant_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def platform_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pkcs1_v15_sha256_by_hand(public: rsa.RSAPublicKey, message: bytes, signature: bytes) -> bool:
    """A second, textbook implementation: s^e mod n must be the EMSA-PKCS1-v1_5 encoding."""
    numbers = public.public_numbers()
    k = (numbers.n.bit_length() + 7) // 8
    recovered = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n).to_bytes(k, "big")
    t = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return recovered == expected


# --- canonical messages ------------------------------------------------------------------


def test_request_message_bytes_are_exact() -> None:
    message = v3.request_message(
        "post",
        "/v3/payscore/serviceorder?a=1",
        "1554208460",
        "593BEC0C930BF1AFEB40B4A08C8FB242",
        '{"appid":"wx1","service_introduction":"某某酒店"}'.encode(),
    )
    assert message == (
        b"POST\n/v3/payscore/serviceorder?a=1\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n"
        + '{"appid":"wx1","service_introduction":"某某酒店"}'.encode()
        + b"\n"
    )


def test_get_request_message_has_an_empty_body_line() -> None:
    assert (
        v3.request_message("GET", "/v3/facemch/users/abc?info_type=ASK_UNIONID", "1", "N", b"")
        == b"GET\n/v3/facemch/users/abc?info_type=ASK_UNIONID\n1\nN\n\n"
    )


def test_response_message_bytes_are_exact() -> None:
    assert v3.response_message("1554209980", "c5ac7061fccab6bf3e254dcf98995b8c", b"{}") == (
        b"1554209980\nc5ac7061fccab6bf3e254dcf98995b8c\n{}\n"
    )


def test_authorization_header_layout() -> None:
    header = v3.authorization_header(MCHID, "SERIAL1", "1554208460", "NONCE1", "c2ln")
    assert header == (
        'WECHATPAY2-SHA256-RSA2048 mchid="1900000109",nonce_str="NONCE1",signature="c2ln",'
        'timestamp="1554208460",serial_no="SERIAL1"'
    )
    parsed = v3.parse_authorization(header)
    assert parsed == v3.Authorization(MCHID, "NONCE1", "c2ln", "1554208460", "SERIAL1")
    assert v3.parse_authorization(header.replace("RSA2048", "RSA4096")) is None


# --- RSA signatures ----------------------------------------------------------------------


def test_signature_is_pkcs1_v15_sha256_checked_independently(
    merchant_key: rsa.RSAPrivateKey,
) -> None:
    message = v3.request_message("GET", "/v3/certificates", "1554208460", "NONCE", b"")
    signature = v3.rsa_sign(merchant_key, message)
    raw = base64.b64decode(signature)
    assert len(raw) == 256
    assert pkcs1_v15_sha256_by_hand(merchant_key.public_key(), message, raw)
    merchant_key.public_key().verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    # PKCS#1 v1.5 is deterministic: the same message always gives the same bytes.
    assert v3.rsa_sign(merchant_key, message) == signature
    assert not pkcs1_v15_sha256_by_hand(merchant_key.public_key(), message + b"x", raw)


def test_rsa_verify_refuses_garbage_and_the_signtest_probe(
    platform_key: rsa.RSAPrivateKey,
) -> None:
    public = platform_key.public_key()
    message = b"1\nn\n{}\n"
    good = v3.rsa_sign(platform_key, message)
    assert v3.rsa_verify(public, message, good)
    assert not v3.rsa_verify(public, message + b" ", good)
    assert not v3.rsa_verify(public, message, "not base64!!")
    assert not v3.rsa_verify(public, message, v3.SIGNTEST_PREFIX + good)


# --- answer verification -----------------------------------------------------------------


def signed_headers(
    key: rsa.RSAPrivateKey,
    body: bytes,
    *,
    serial: str = PUB_KEY_ID,
    timestamp: int = NOW,
    nonce: str = "c5ac7061fccab6bf3e254dcf98995b8c",
) -> dict[str, str]:
    ts = str(timestamp)
    raw = key.sign(f"{ts}\n{nonce}\n".encode() + body + b"\n", padding.PKCS1v15(), hashes.SHA256())
    return {
        "wechatpay-serial": serial,
        "wechatpay-timestamp": ts,
        "wechatpay-nonce": nonce,
        "wechatpay-signature": base64.b64encode(raw).decode(),
    }


def test_verifier_accepts_a_fresh_answer_signed_by_the_public_key_id(
    platform_key: rsa.RSAPrivateKey,
) -> None:
    verifier = v3.ResponseVerifier({PUB_KEY_ID: platform_key.public_key()}, ManualClock(NOW))
    body = b'{"state":"CREATED"}'
    verifier.verify(signed_headers(platform_key, body, timestamp=NOW - 299), body)


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (lambda h, b: (h, b + b" "), "does not verify"),
        (lambda h, b: ({**h, "wechatpay-serial": "PUB_KEY_ID_OTHER"}, b), "unknown"),
        (lambda h, b: ({**h, "wechatpay-nonce": "other"}, b), "does not verify"),
        (
            lambda h, b: ({**h, "wechatpay-signature": v3.SIGNTEST_PREFIX + "abc"}, b),
            "does not verify",
        ),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != "wechatpay-signature"}, b),
            "not signed",
        ),
        (lambda h, b: ({**h, "wechatpay-timestamp": "17e8"}, b), "not a number"),
    ],
)
def test_verifier_refuses_tampered_answers(
    platform_key: rsa.RSAPrivateKey,
    tamper: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]],
    why: str,
) -> None:
    verifier = v3.ResponseVerifier({PUB_KEY_ID: platform_key.public_key()}, ManualClock(NOW))
    body = b'{"state":"CREATED"}'
    headers, sent = tamper(signed_headers(platform_key, body), body)
    with pytest.raises(ResponseNotTrusted, match=why):
        verifier.verify(headers, sent)


@pytest.mark.parametrize("skew", [301, -301])
def test_verifier_refuses_a_stale_or_future_timestamp(
    platform_key: rsa.RSAPrivateKey, skew: int
) -> None:
    verifier = v3.ResponseVerifier({PUB_KEY_ID: platform_key.public_key()}, ManualClock(NOW))
    body = b"{}"
    with pytest.raises(ResponseNotTrusted, match="too far"):
        verifier.verify(signed_headers(platform_key, body, timestamp=NOW - skew), body)


def test_verifier_refuses_an_answer_signed_by_another_key_under_a_known_serial(
    platform_key: rsa.RSAPrivateKey, merchant_key: rsa.RSAPrivateKey
) -> None:
    verifier = v3.ResponseVerifier({PUB_KEY_ID: platform_key.public_key()}, ManualClock(NOW))
    body = b"{}"
    with pytest.raises(ResponseNotTrusted, match="does not verify"):
        verifier.verify(signed_headers(merchant_key, body), body)


def test_verifier_picks_a_platform_certificate_by_its_hex_serial(
    platform_key: rsa.RSAPrivateKey, merchant_key: rsa.RSAPrivateKey
) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    now = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(platform_key.public_key())
        .serial_number(0x05157F09EFDC096DE15EBE81A47057A7232F1B8E)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(platform_key, hashes.SHA256())
    )
    serial, key = v3.platform_key_from_certificate(cert)
    assert serial == "5157F09EFDC096DE15EBE81A47057A7232F1B8E"
    verifier = v3.ResponseVerifier(
        {serial: key, PUB_KEY_ID: merchant_key.public_key()}, ManualClock(NOW)
    )
    body = b'{"ok":true}'
    # WeChat writes serials upper-case hex, sometimes zero-padded; both must select the cert.
    for written in ("05157F09EFDC096DE15EBE81A47057A7232F1B8E", serial.lower()):
        verifier.verify(signed_headers(platform_key, body, serial=written), body)
    with pytest.raises(ResponseNotTrusted):
        verifier.verify(signed_headers(platform_key, body, serial=PUB_KEY_ID), body)


# --- AEAD_AES_256_GCM ----------------------------------------------------------------------


def test_decrypt_resource_known_answer() -> None:
    assert v3.decrypt_resource(APIV3_KEY, RESOURCE) == RESOURCE_PLAINTEXT


def test_pinned_ciphertext_is_aes_ctr_from_counter_two_independently() -> None:
    # GCM encrypts with AES-CTR starting at J0+1 = nonce || 00000002 (96-bit nonce).
    sealed = base64.b64decode(RESOURCE["ciphertext"])
    ciphertext, tag = sealed[:-16], sealed[-16:]
    counter = RESOURCE["nonce"].encode() + (2).to_bytes(4, "big")
    ctr = Cipher(algorithms.AES(APIV3_KEY), modes.CTR(counter)).decryptor()
    assert ctr.update(ciphertext) + ctr.finalize() == RESOURCE_PLAINTEXT
    assert len(tag) == 16


def test_aes_256_gcm_primitive_matches_the_published_gcm_test_case_16() -> None:
    # McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16.
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308" * 2)
    iv = bytes.fromhex("cafebabefacedbaddecaf888")
    aad = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    plaintext = bytes.fromhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    )
    sealed = AESGCM(key).encrypt(iv, plaintext, aad)
    assert sealed[-16:].hex() == "76fc6ece0f4e1768cddf8853bb2d551b"
    assert sealed[:16].hex() == "522dc1f099567d07f47f37a32a84427d"


def test_decrypt_resource_roundtrips_with_encrypt_resource() -> None:
    sealed = v3.encrypt_resource(APIV3_KEY, "abcdefghijkl", "", b"payload")
    assert v3.decrypt_resource(APIV3_KEY, sealed) == b"payload"


@pytest.mark.parametrize(
    "change",
    [
        {"associated_data": "transaction"},
        {"nonce": "n0nce-12bytf"},
        {"ciphertext": "AAAA" + RESOURCE["ciphertext"][4:]},
    ],
)
def test_decrypt_resource_refuses_a_bad_tag(change: dict[str, str]) -> None:
    with pytest.raises(ResponseNotTrusted, match="failed authentication"):
        v3.decrypt_resource(APIV3_KEY, {**RESOURCE, **change})


def test_decrypt_resource_refuses_a_wrong_key_algorithm_or_encoding() -> None:
    with pytest.raises(ResponseNotTrusted, match="failed authentication"):
        v3.decrypt_resource(b"x" * 32, RESOURCE)
    with pytest.raises(ResponseNotTrusted, match="unsupported algorithm"):
        v3.decrypt_resource(APIV3_KEY, {**RESOURCE, "algorithm": "AEAD_AES_128_GCM"})
    with pytest.raises(ResponseNotTrusted, match="not base64"):
        v3.decrypt_resource(APIV3_KEY, {**RESOURCE, "ciphertext": "@@@"})
    with pytest.raises(InvalidArgument):
        v3.decrypt_resource(APIV3_KEY[:16], RESOURCE)


def test_decrypt_error_never_echoes_the_key() -> None:
    with pytest.raises(ResponseNotTrusted) as caught:
        v3.decrypt_resource(APIV3_KEY, {**RESOURCE, "associated_data": "x"})
    assert APIV3_KEY.decode() not in str(caught.value)


# --- the client's signing over the exact bytes sent -----------------------------------------


class Recorder:
    """An httpx transport that records requests and answers with a signed JSON body."""

    def __init__(self, platform_key: rsa.RSAPrivateKey, answer: dict[str, object]) -> None:
        self.requests: list[httpx.Request] = []
        self._key = platform_key
        self._answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.dumps(self._answer).encode()
        return httpx.Response(200, headers=signed_headers(self._key, body), content=body)


def make_client(
    merchant_key: rsa.RSAPrivateKey,
    platform_key: rsa.RSAPrivateKey,
    handler: Callable[[httpx.Request], httpx.Response],
    clock: ManualClock | None = None,
    **options: Any,
) -> tuple[v3.PayScoreClient, httpx.AsyncClient]:
    """A client over a mock transport, with deterministic nonces and a fixed clock."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    nonces = iter(f"NONCE{i:027d}" for i in range(100))
    client = v3.PayScoreClient(
        MCHID,
        "wxd678efh567hg6787",
        "500001",
        merchant_key,
        MERCHANT_SERIAL,
        {PUB_KEY_ID: platform_key.public_key()},
        base_url="https://api.mch.weixin.qq.com/",
        http=http,
        clock=clock or ManualClock(NOW),
        nonce=lambda: next(nonces),
        **options,
    )
    return client, http


def new_order(**overrides: object) -> m.NewServiceOrder:
    fields: dict[str, object] = {
        "out_order_no": "ORDER-0001",
        "service_introduction": "某某酒店",
        "risk_fund": m.RiskFund("ESTIMATE_ORDER_COST", 10000, "就餐的预估费用"),
        "time_range": m.TimeRange(start_time="OnAccept"),
        "post_payments": (m.PostPayment("就餐费用服务费", 4000, "100/小时", 1),),
        "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    }
    fields.update(overrides)
    return m.NewServiceOrder(**fields)  # type: ignore[arg-type]


def order_answer(no: str = "ORDER-0001") -> dict[str, object]:
    return {"out_order_no": no, "service_id": "500001", "state": "CREATED", "order_id": "1"}


async def test_client_signs_the_exact_body_and_path_it_sends(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    recorder = Recorder(platform_key, order_answer())
    client, http = make_client(merchant_key, platform_key, recorder)
    async with http:
        result = await client.create_service_order(new_order())
    assert result.state is m.ServiceOrderState.CREATED
    (request,) = recorder.requests
    auth = v3.parse_authorization(request.headers["authorization"])
    assert auth is not None
    assert (auth.mchid, auth.serial_no, auth.timestamp) == (MCHID, MERCHANT_SERIAL, str(NOW))
    assert auth.nonce_str == "NONCE000000000000000000000000000"
    message = (
        f"POST\n{request.url.raw_path.decode()}\n{auth.timestamp}\n{auth.nonce_str}\n".encode()
        + request.content
        + b"\n"
    )
    assert request.url.raw_path == b"/v3/payscore/serviceorder"
    assert pkcs1_v15_sha256_by_hand(
        merchant_key.public_key(), message, base64.b64decode(auth.signature)
    )
    sent = json.loads(request.content)
    assert sent["service_introduction"] == "某某酒店"
    assert sent["appid"] == "wxd678efh567hg6787"
    assert sent["need_user_confirm"] is False
    assert "location" not in sent  # optional fields are omitted, never sent empty


async def test_client_signs_the_query_string_of_a_get(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    recorder = Recorder(platform_key, order_answer("A-1"))
    client, http = make_client(merchant_key, platform_key, recorder)
    async with http:
        await client.get_service_order("A-1")
    (request,) = recorder.requests
    assert request.url.raw_path == (
        b"/v3/payscore/serviceorder?out_order_no=A-1&service_id=500001&appid=wxd678efh567hg6787"
    )
    auth = v3.parse_authorization(request.headers["authorization"])
    assert auth is not None
    message = f"GET\n{request.url.raw_path.decode()}\n{auth.timestamp}\n{auth.nonce_str}\n\n"
    assert pkcs1_v15_sha256_by_hand(
        merchant_key.public_key(), message.encode(), base64.b64decode(auth.signature)
    )
    assert request.content == b""


async def test_answer_for_another_order_is_not_trusted(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    recorder = Recorder(platform_key, order_answer("SOMEONE-ELSE"))
    client, http = make_client(merchant_key, platform_key, recorder)
    async with http:
        with pytest.raises(ResponseNotTrusted, match="different out_order_no"):
            await client.get_service_order("A-1")


# --- validation before sending -------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "field"),
    [
        (new_order(out_order_no="A@B"), "out_order_no"),
        (new_order(out_order_no="x" * 33), "out_order_no"),
        (new_order(service_introduction=""), "service_introduction"),
        (new_order(service_introduction="酒" * 21), "service_introduction"),
        (new_order(post_payments=(m.PostPayment("p", 1),) * 101), "post_payments"),
        (new_order(post_discounts=(m.PostDiscount("d", "", 1),) * 31), "post_discounts"),
        (new_order(risk_fund=m.RiskFund("BAIL", 1)), "risk_fund.name"),
        (new_order(time_range=m.TimeRange()), "time_range.start_time"),
        (new_order(openid=""), "openid"),
        (new_order(need_user_confirm=True), "openid"),
        (new_order(attach="a" * 257), "attach"),
        # 256 counts the url-encoded form: 86 characters that each become %XX are too many.
        (new_order(attach="&" * 86), "attach"),
    ],
)
async def test_create_refuses_bad_fields_before_sending(
    merchant_key: rsa.RSAPrivateKey,
    platform_key: rsa.RSAPrivateKey,
    order: m.NewServiceOrder,
    field: str,
) -> None:
    recorder = Recorder(platform_key, order_answer())
    client, http = make_client(merchant_key, platform_key, recorder)
    async with http:
        with pytest.raises(InvalidArgument) as caught:
            await client.create_service_order(order)
    assert caught.value.field == field
    assert recorder.requests == []


def test_create_accepts_the_limits_exactly() -> None:
    v3.validate_new_order(
        new_order(
            service_introduction="酒" * 20,
            post_payments=(m.PostPayment("p", 1),) * 100,
            post_discounts=(m.PostDiscount("d", "", 1),) * 30,
            out_order_no="a" * 32,
        )
    )


COMPLETION = m.ServiceOrderCompletion(
    post_payments=(m.PostPayment("服务费", 4000, count=2), m.PostPayment("押金", 100)),
    post_discounts=(m.PostDiscount("满20减1元", "", 100),),
    total_amount=4000,
)


def deposit(amount: int) -> v3.CompletionLimits:
    return v3.CompletionLimits(risk_fund=m.RiskFund("DEPOSIT", amount))


def estimate(amount: int, cap: int | None) -> v3.CompletionLimits:
    return v3.CompletionLimits(
        risk_fund=m.RiskFund("ESTIMATE_ORDER_COST", amount), service_risk_cap=cap
    )


@pytest.mark.parametrize(
    ("completion", "limits", "rule"),
    [
        (m.ServiceOrderCompletion(COMPLETION.post_payments, 4000), None, "sum"),
        (COMPLETION, deposit(3999), "the risk fund: 3999 fen for a DEPOSIT order"),
        # 评估不通过:拒绝 — the service ID's cap, not the order's own risk fund, bounds it.
        (COMPLETION, estimate(100, 3999), "the service's risk cap: 3999 fen"),
        # Created without an end time: complete must give one.
        (COMPLETION, v3.CompletionLimits(end_time_at_create=""), "time_range.end_time"),
        (m.ServiceOrderCompletion((), 0), None, "at least one"),
        (m.ServiceOrderCompletion((m.PostPayment("p", -1),), -1), None, ">= 0"),
    ],
)
async def test_complete_refuses_amounts_that_do_not_add_up_before_sending(
    merchant_key: rsa.RSAPrivateKey,
    platform_key: rsa.RSAPrivateKey,
    completion: m.ServiceOrderCompletion,
    limits: v3.CompletionLimits | None,
    rule: str,
) -> None:
    recorder = Recorder(platform_key, order_answer())
    client, http = make_client(merchant_key, platform_key, recorder)
    async with http:
        with pytest.raises(InvalidArgument, match=re.escape(rule)):
            await client.complete_service_order("ORDER-0001", completion, limits=limits)
    assert recorder.requests == []


def test_completion_total_is_item_totals_minus_discounts() -> None:
    # amount is each item's total, so count does not multiply it.
    assert v3.completion_total(COMPLETION) == 4000
    v3.validate_completion(COMPLETION, deposit(4000))
    # An ESTIMATE_ORDER_COST order may charge past its own risk fund, up to the service's cap,
    # and a cap the daemon was not told is left to WeChat Pay.
    v3.validate_completion(COMPLETION, estimate(100, 4000))
    v3.validate_completion(COMPLETION, estimate(100, None))
    ended = m.ServiceOrderCompletion(
        COMPLETION.post_payments,
        4000,
        COMPLETION.post_discounts,
        time_range=m.TimeRange(end_time="20091225121010"),
    )
    v3.validate_completion(ended, v3.CompletionLimits(end_time_at_create=""))
    v3.validate_completion(COMPLETION, v3.CompletionLimits(end_time_at_create="20091225121010"))


async def test_out_order_no_with_bar_and_star_is_percent_encoded_in_the_signed_path(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    recorder = Recorder(platform_key, order_answer("A|B*C"))
    client, http = make_client(merchant_key, platform_key, recorder)
    async with http:
        await client.cancel_service_order("A|B*C", "用户投诉")
        await client.get_service_order("A|B*C")
    cancel, query = recorder.requests
    assert cancel.url.raw_path == b"/v3/payscore/serviceorder/A%7CB%2AC/cancel"
    assert b"out_order_no=A%7CB%2AC" in query.url.raw_path
    for request in (cancel, query):
        auth = v3.parse_authorization(request.headers["authorization"])
        assert auth is not None
        message = v3.request_message(
            request.method,
            request.url.raw_path.decode(),
            auth.timestamp,
            auth.nonce_str,
            request.content,
        )
        assert v3.rsa_verify(merchant_key.public_key(), message, auth.signature)


async def test_attach_is_url_encoded_on_the_wire_and_decoded_in_the_answer(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    attach = "table=7&guests=2 人"
    wire = "table%3D7%26guests%3D2%20%E4%BA%BA"
    recorder = Recorder(platform_key, {**order_answer(), "attach": wire})
    client, http = make_client(merchant_key, platform_key, recorder)
    async with http:
        result = await client.create_service_order(new_order(attach=attach))
    assert json.loads(recorder.requests[0].content)["attach"] == wire
    assert result.attach == attach


async def test_public_key_mode_names_the_key_in_wechatpay_serial(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    recorder = Recorder(platform_key, order_answer())
    client, http = make_client(merchant_key, platform_key, recorder, public_key_id=PUB_KEY_ID)
    plain, plain_http = make_client(merchant_key, platform_key, recorder)
    async with http, plain_http:
        await client.get_service_order("ORDER-0001")
        await plain.get_service_order("ORDER-0001")
    named, unnamed = recorder.requests
    assert named.headers["wechatpay-serial"] == PUB_KEY_ID
    assert "wechatpay-serial" not in unnamed.headers
    with pytest.raises(ConfigError):
        make_client(merchant_key, platform_key, recorder, public_key_id="PUB_KEY_ID_UNKNOWN")


async def test_unionid_in_service_provider_mode_sends_the_sub_merchant(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    recorder = Recorder(platform_key, {"union_id": "oUnion1", "openid": "oOpen1"})
    client, http = make_client(
        merchant_key, platform_key, recorder, sub_mchid="1900000110", sub_appid="wxsub000001"
    )
    async with http:
        result = await client.get_user_unionid("aabbccdd12345")
    assert result == m.UnionIdResult(unionid="oUnion1", openid="oOpen1")
    assert recorder.requests[0].url.raw_path == (
        b"/v3/facemch/users/aabbccdd12345?info_type=ASK_UNIONID&appid=wxd678efh567hg6787"
        b"&sub_mchid=1900000110&sub_appid=wxsub000001"
    )


@pytest.mark.parametrize("face_sid", ["", "a/b", "a b", "a?b", "a%2Fb", "面"])
async def test_path_parameters_must_survive_url_encoding(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey, face_sid: str
) -> None:
    recorder = Recorder(platform_key, {"union_id": "u"})
    client, http = make_client(merchant_key, platform_key, recorder)
    async with http:
        with pytest.raises(InvalidArgument) as caught:
            await client.get_user_unionid(face_sid)
    assert caught.value.field == "face_sid"
    assert face_sid not in str(caught.value) or not face_sid
    assert recorder.requests == []


async def test_sync_and_cancel_validate_their_fields(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    recorder = Recorder(platform_key, order_answer())
    client, http = make_client(merchant_key, platform_key, recorder)
    async with http:
        with pytest.raises(InvalidArgument, match="type"):
            await client.sync_service_order("ORDER-0001", "Order_Refund", "20091225091210")
        with pytest.raises(InvalidArgument, match="paid_time"):
            await client.sync_service_order("ORDER-0001", "Order_Paid", "2009-12-25")
        with pytest.raises(InvalidArgument, match="reason"):
            await client.cancel_service_order("ORDER-0001", "x" * 51)
    assert recorder.requests == []


# --- transport outcomes --------------------------------------------------------------------


class SleepCounter(ManualClock):
    """Sleeping moves time at once; the test counts the sleeps."""

    def __init__(self) -> None:
        super().__init__(NOW)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await self.advance(seconds)


async def test_an_unsigned_success_is_not_trusted(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=order_answer())

    client, http = make_client(merchant_key, platform_key, handler, max_attempts=3)
    async with http:
        with pytest.raises(ResponseNotTrusted, match="not signed"):
            await client.get_service_order("ORDER-0001")


async def test_an_oversized_answer_is_not_trusted(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        body = b" " * (v3.MAX_RESPONSE_BYTES + 1)
        return httpx.Response(200, headers=signed_headers(platform_key, body), content=body)

    client, http = make_client(merchant_key, platform_key, handler, max_attempts=3)
    async with http:
        with pytest.raises(ResponseNotTrusted, match="size limit"):
            await client.get_service_order("ORDER-0001")


async def test_connect_errors_are_retried_then_unavailable(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("refused", request=request)

    clock = SleepCounter()
    client, http = make_client(merchant_key, platform_key, handler, clock, max_attempts=3)
    async with http:
        with pytest.raises(BackendUnavailable, match="cannot connect"):
            await client.get_service_order("ORDER-0001")
    assert len(seen) == 3
    assert clock.slept == [0.5, 1.0]


async def test_a_read_timeout_is_not_retried_because_the_outcome_is_unknown(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    client, http = make_client(merchant_key, platform_key, handler, SleepCounter(), max_attempts=3)
    async with http:
        with pytest.raises(BackendUnavailable, match="outcome unknown"):
            await client.complete_service_order("ORDER-0001", COMPLETION)
    assert len(seen) == 1


async def test_a_signed_error_with_a_bad_signature_is_not_trusted_even_if_retryable(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        body = b'{"code":"SYSTEM_ERROR","message":"x"}'
        return httpx.Response(500, headers=signed_headers(merchant_key, body), content=body)

    client, http = make_client(merchant_key, platform_key, handler, SleepCounter(), max_attempts=3)
    async with http:
        with pytest.raises(ResponseNotTrusted):
            await client.get_service_order("ORDER-0001")


async def test_error_messages_are_bounded_to_one_line(
    merchant_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        body = json.dumps({"code": "PARAM_ERROR", "message": "line\nbreak " + "x" * 1000}).encode()
        return httpx.Response(400, headers=signed_headers(platform_key, body), content=body)

    client, http = make_client(merchant_key, platform_key, handler, SleepCounter(), max_attempts=3)
    async with http:
        with pytest.raises(BackendRejected) as caught:
            await client.get_service_order("ORDER-0001")
    assert caught.value.code == "PARAM_ERROR"
    assert "\n" not in caught.value.message
    assert len(caught.value.message) <= 256
