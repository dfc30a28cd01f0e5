"""WeChat Pay API v3: RSA request signatures, answer verification, AEAD resources, PayScore.

Every request is signed over the exact bytes httpx sends (method, raw path and query, body);
every answer is trusted only after its Wechatpay-Signature verifies against a configured
platform certificate or WeChat Pay public key and its timestamp is within five minutes of
the injected clock. Definite rejections are believed only when signed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509 import Certificate

from facepayd.clock import Clock
from facepayd.errors import (
    BackendRejected,
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    NotFound,
    OrderStateError,
    ResponseNotTrusted,
)
from facepayd.ops.logs import get_logger
from facepayd.wxpay import payscore_models as m

SCHEME: Final = "WECHATPAY2-SHA256-RSA2048"
SERVICE_ORDER_PATH: Final = "/v3/payscore/serviceorder"
SIGNTEST_PREFIX: Final = "WECHATPAY/SIGNTEST/"
PUBLIC_KEY_ID_PREFIX: Final = "PUB_KEY_ID_"
AEAD_ALGORITHM: Final = "AEAD_AES_256_GCM"
MAX_CLOCK_SKEW: Final = 300.0
MAX_RESPONSE_BYTES: Final = 1 << 20
_MAX_CODE = 64
_MAX_MESSAGE = 256

# Answers that mean "try again later with the same parameters" (5xx are added by range).
RETRYABLE_STATUSES: Final = frozenset({429})
# Definite answers about the order's state: the caller should query, not retry.
ORDER_STATE_CODES: Final = frozenset({"INVALID_ORDER_STATE", "ORDER_DONE", "ORDER_CANCELED"})
NOT_FOUND_CODES: Final = frozenset({"ORDER_NOT_EXIST", "NOT_FOUND", "RESOURCE_NOT_EXISTS"})

# Path parameters other than out_order_no must survive URL encoding unchanged; out_order_no
# is percent-encoded into the path (its "|" and "*"), and the signature covers the encoded path.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")
_DIGITS = re.compile(r"[0-9]+")
_PAID_TIME = re.compile(r"[0-9]{14}")
_AUTH_PARAM = re.compile(r'([a-z_]+)="([^"]*)"')

_log = get_logger(__name__)
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


# --- signatures -------------------------------------------------------------------------


def request_message(
    method: str, canonical_url: str, timestamp: str, nonce: str, body: bytes
) -> bytes:
    """The bytes a v3 request signature covers."""
    head = f"{method.upper()}\n{canonical_url}\n{timestamp}\n{nonce}\n".encode()
    return head + body + b"\n"


def response_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes a v3 answer signature covers."""
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def rsa_sign(private_key: RSAPrivateKey, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), base64."""
    return base64.b64encode(private_key.sign(message, _PKCS1, _SHA256)).decode("ascii")


def rsa_verify(public_key: RSAPublicKey, message: bytes, signature: str) -> bool:
    """Whether a base64 SHA256withRSA signature is valid; never raises."""
    if signature.startswith(SIGNTEST_PREFIX):
        # WeChat Pay's probe: a client that accepts this skips verification.
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, message, _PKCS1, _SHA256)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def authorization_header(
    mchid: str, serial_no: str, timestamp: str, nonce: str, signature: str
) -> str:
    """The Authorization header value of a signed request."""
    return (
        f'{SCHEME} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}"'
    )


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parsed Authorization header of a v3 request."""

    mchid: str
    nonce_str: str
    signature: str
    timestamp: str
    serial_no: str


def parse_authorization(value: str) -> Authorization | None:
    """Parse a WECHATPAY2-SHA256-RSA2048 Authorization header, or None if malformed."""
    scheme, _, params = value.partition(" ")
    if scheme != SCHEME:
        return None
    fields = dict(_AUTH_PARAM.findall(params))
    try:
        return Authorization(
            mchid=fields["mchid"],
            nonce_str=fields["nonce_str"],
            signature=fields["signature"],
            timestamp=fields["timestamp"],
            serial_no=fields["serial_no"],
        )
    except KeyError:
        return None


def normalize_serial(serial: str) -> str:
    """Canonical form of a certificate serial (hex, upper, no leading zeros) or public key id."""
    serial = serial.strip()
    if serial.startswith(PUBLIC_KEY_ID_PREFIX):
        return serial
    return serial.upper().lstrip("0") or "0"


def certificate_serial(certificate: Certificate) -> str:
    """A certificate's serial as WeChat Pay writes it in Wechatpay-Serial."""
    return f"{certificate.serial_number:X}"


def platform_key_from_certificate(certificate: Certificate) -> tuple[str, RSAPublicKey]:
    """The (serial, public key) entry of a platform certificate for PayScoreClient."""
    key = certificate.public_key()
    if not isinstance(key, RSAPublicKey):
        raise ConfigError("the platform certificate does not hold an RSA public key")
    return certificate_serial(certificate), key


class ResponseVerifier:
    """Checks Wechatpay-* headers of an answer against the configured platform keys."""

    def __init__(
        self,
        platform_keys: Mapping[str, RSAPublicKey],
        clock: Clock,
        *,
        max_skew: float = MAX_CLOCK_SKEW,
    ) -> None:
        self._keys = {normalize_serial(serial): key for serial, key in platform_keys.items()}
        self._clock = clock
        self._max_skew = max_skew

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise ResponseNotTrusted unless the answer is signed, fresh and verifies."""
        serial = headers.get("wechatpay-serial", "")
        timestamp = headers.get("wechatpay-timestamp", "")
        nonce = headers.get("wechatpay-nonce", "")
        signature = headers.get("wechatpay-signature", "")
        if not (serial and timestamp and nonce and signature):
            raise ResponseNotTrusted("answer is not signed")
        key = self._keys.get(normalize_serial(serial))
        if key is None:
            raise ResponseNotTrusted("answer signed with an unknown platform key serial")
        if not _DIGITS.fullmatch(timestamp):
            raise ResponseNotTrusted("answer timestamp is not a number")
        if abs(self._clock.time() - int(timestamp)) > self._max_skew:
            raise ResponseNotTrusted("answer timestamp is too far from the local clock")
        if not rsa_verify(key, response_message(timestamp, nonce, body), signature):
            raise ResponseNotTrusted("answer signature does not verify")


def is_signed(headers: Mapping[str, str]) -> bool:
    """Whether an answer carries any signature header at all."""
    return any(
        h in headers for h in ("wechatpay-signature", "wechatpay-serial", "wechatpay-timestamp")
    )


# --- encrypted resources ----------------------------------------------------------------


def decrypt_resource(api_v3_key: bytes, resource: Mapping[str, Any]) -> bytes:
    """Open an AEAD_AES_256_GCM `resource` object (notifications, certificates)."""
    if len(api_v3_key) != 32:
        raise InvalidArgument("api_v3_key", "must be 32 bytes")
    if resource.get("algorithm") != AEAD_ALGORITHM:
        raise ResponseNotTrusted("encrypted resource uses an unsupported algorithm")
    ciphertext = resource.get("ciphertext")
    nonce = resource.get("nonce")
    associated = resource.get("associated_data") or ""
    if not isinstance(ciphertext, str) or not isinstance(nonce, str):
        raise ResponseNotTrusted("encrypted resource lacks ciphertext or nonce")
    if not isinstance(associated, str):
        raise ResponseNotTrusted("encrypted resource has malformed associated_data")
    try:
        sealed = base64.b64decode(ciphertext, validate=True)
        return AESGCM(api_v3_key).decrypt(nonce.encode(), sealed, associated.encode())
    except binascii.Error as exc:
        raise ResponseNotTrusted("encrypted resource ciphertext is not base64") from exc
    except (InvalidTag, ValueError) as exc:
        raise ResponseNotTrusted("encrypted resource failed authentication") from exc


def encrypt_resource(
    api_v3_key: bytes, nonce: str, associated_data: str, plaintext: bytes
) -> dict[str, str]:
    """Seal plaintext as a `resource` object (the simulator's side of decrypt_resource)."""
    sealed = AESGCM(api_v3_key).encrypt(nonce.encode(), plaintext, associated_data.encode())
    return {
        "algorithm": AEAD_ALGORITHM,
        "ciphertext": base64.b64encode(sealed).decode("ascii"),
        "nonce": nonce,
        "associated_data": associated_data,
    }


# --- validation -------------------------------------------------------------------------


def check_path_param(field: str, value: str, *, max_len: int = 64) -> None:
    """Refuse a path parameter that URL encoding would change."""
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > max_len:
        raise InvalidArgument(field, f"must be at most {max_len} characters")
    if not _UNRESERVED.fullmatch(value):
        raise InvalidArgument(field, "only letters, digits and _ - . ~ are allowed")


def check_out_order_no(value: str) -> None:
    """out_order_no as the reference allows it: [0-9A-Za-z_-|*]{1,32}."""
    if not m.OUT_ORDER_NO.fullmatch(value):
        raise InvalidArgument("out_order_no", "must match [0-9A-Za-z_-|*]{1,32}")


def order_path(out_order_no: str, action: str) -> str:
    """The path of an action on one order, out_order_no percent-encoded as a path segment."""
    check_out_order_no(out_order_no)
    return f"{SERVICE_ORDER_PATH}/{quote(out_order_no, safe='')}/{action}"


def _check_len(field: str, value: str, low: int, high: int) -> None:
    if not low <= len(value) <= high:
        raise InvalidArgument(field, f"must be {low} to {high} characters")


def _check_amount(field: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise InvalidArgument(field, "must be >= 0 fen")


def _check_items(payments: Sequence[m.PostPayment], discounts: Sequence[m.PostDiscount]) -> None:
    if len(payments) > m.MAX_POST_PAYMENTS:
        raise InvalidArgument("post_payments", f"at most {m.MAX_POST_PAYMENTS} items")
    if len(discounts) > m.MAX_POST_DISCOUNTS:
        raise InvalidArgument("post_discounts", f"at most {m.MAX_POST_DISCOUNTS} items")
    for i, p in enumerate(payments):
        _check_len(f"post_payments[{i}].name", p.name, 1, 20)
        _check_amount(f"post_payments[{i}].amount", p.amount)
        _check_amount(f"post_payments[{i}].count", p.count)
    for i, d in enumerate(discounts):
        _check_len(f"post_discounts[{i}].name", d.name, 1, 20)
        _check_amount(f"post_discounts[{i}].amount", d.amount)
        _check_amount(f"post_discounts[{i}].count", d.count)


def validate_new_order(order: m.NewServiceOrder) -> None:
    """Check a create call against the reference's rules before anything is sent."""
    check_out_order_no(order.out_order_no)
    _check_len("service_introduction", order.service_introduction, 1, m.MAX_SERVICE_INTRODUCTION)
    _check_items(order.post_payments, order.post_discounts)
    if order.risk_fund.name not in m.RISK_FUND_NAMES:
        raise InvalidArgument("risk_fund.name", "one of " + ", ".join(sorted(m.RISK_FUND_NAMES)))
    _check_amount("risk_fund.amount", order.risk_fund.amount)
    if not order.time_range.start_time:
        raise InvalidArgument("time_range.start_time", "required")
    if len(m.attach_on_wire(order.attach)) > m.MAX_ATTACH:
        raise InvalidArgument("attach", f"at most {m.MAX_ATTACH} characters once url-encoded")
    if len(order.notify_url) > m.MAX_NOTIFY_URL:
        raise InvalidArgument("notify_url", f"at most {m.MAX_NOTIFY_URL} characters")
    if order.need_user_confirm and order.openid:
        raise InvalidArgument("openid", "must be empty when need_user_confirm is set")
    if not order.need_user_confirm and not order.openid:
        raise InvalidArgument("openid", "required when need_user_confirm is not set")


def completion_total(completion: m.ServiceOrderCompletion) -> int:
    """Sum of post_payments amounts minus sum of post_discounts amounts (each an item total)."""
    paid = sum(p.amount or 0 for p in completion.post_payments)
    return paid - sum(d.amount or 0 for d in completion.post_discounts)


@dataclass(frozen=True, slots=True)
class CompletionLimits:
    """What the created order fixes for its completion (None: not known here)."""

    risk_fund: m.RiskFund | None = None
    # The end_time given at create: "" means none, so complete must give one.
    end_time_at_create: str | None = None
    # The service ID's risk cap (WeChat Pay's, per service), for ESTIMATE_ORDER_COST orders.
    service_risk_cap: int | None = None


def completion_cap(limits: CompletionLimits) -> int | None:
    """The most a completion may charge in the order's risk-fund mode, if known."""
    risk = limits.risk_fund
    if risk is None:
        return None
    if risk.name in m.DEPOSIT_RISK_FUND_NAMES:
        # 评估不通过:交押金 — at most the order's risk fund.
        return risk.amount
    # 评估不通过:拒绝 — at most the service ID's risk cap.
    return limits.service_risk_cap


def validate_completion(
    completion: m.ServiceOrderCompletion, limits: CompletionLimits | None = None
) -> None:
    """Check a complete call's items, amounts and time range before anything is sent."""
    if not completion.post_payments:
        raise InvalidArgument("post_payments", "at least one item is required to complete")
    _check_items(completion.post_payments, completion.post_discounts)
    if completion.total_amount < 0:
        raise InvalidArgument("total_amount", "must be >= 0 fen")
    expected = completion_total(completion)
    if completion.total_amount != expected:
        raise InvalidArgument(
            "total_amount",
            f"must equal sum(post_payments.amount) - sum(post_discounts.amount) = {expected}",
        )
    limits = limits or CompletionLimits()
    cap = completion_cap(limits)
    if cap is not None and limits.risk_fund is not None and completion.total_amount > cap:
        source = (
            "the risk fund"
            if limits.risk_fund.name in m.DEPOSIT_RISK_FUND_NAMES
            else "the service's risk cap"
        )
        raise InvalidArgument(
            "total_amount",
            f"must not exceed {source}: {cap} fen for a {limits.risk_fund.name} order",
        )
    end_time = completion.time_range.end_time if completion.time_range is not None else ""
    if limits.end_time_at_create == "" and not end_time:
        raise InvalidArgument(
            "time_range.end_time", "is required: the order was created without an end time"
        )
    if len(completion.goods_tag) > 32:
        raise InvalidArgument("goods_tag", "at most 32 characters")


# --- JSON <-> models --------------------------------------------------------------------


def _drop_empty(obj: dict[str, Any]) -> dict[str, Any]:
    # Optional fields are omitted rather than sent empty: WeChat Pay rejects "" for most.
    return {k: v for k, v in obj.items() if v is not None and v != ""}


def _payment_json(p: m.PostPayment) -> dict[str, Any]:
    return _drop_empty(
        {"name": p.name, "amount": p.amount, "description": p.description, "count": p.count}
    )


def _discount_json(d: m.PostDiscount) -> dict[str, Any]:
    return _drop_empty(
        {"name": d.name, "description": d.description, "amount": d.amount, "count": d.count}
    )


def _time_range_json(t: m.TimeRange) -> dict[str, Any]:
    return _drop_empty(
        {
            "start_time": t.start_time,
            "start_time_remark": t.start_time_remark,
            "end_time": t.end_time,
            "end_time_remark": t.end_time_remark,
        }
    )


def _location_json(loc: m.Location) -> dict[str, Any]:
    return _drop_empty({"start_location": loc.start_location, "end_location": loc.end_location})


def new_order_json(appid: str, service_id: str, order: m.NewServiceOrder) -> dict[str, Any]:
    """The JSON body of a create call."""
    body: dict[str, Any] = {
        "out_order_no": order.out_order_no,
        "appid": appid,
        "service_id": order.service_id or service_id,
        "service_introduction": order.service_introduction,
    }
    if order.post_payments:
        body["post_payments"] = [_payment_json(p) for p in order.post_payments]
    if order.post_discounts:
        body["post_discounts"] = [_discount_json(d) for d in order.post_discounts]
    body["time_range"] = _time_range_json(order.time_range)
    if order.location is not None:
        body["location"] = _location_json(order.location)
    body["risk_fund"] = _drop_empty(
        {
            "name": order.risk_fund.name,
            "amount": order.risk_fund.amount,
            "description": order.risk_fund.description,
        }
    )
    body.update(
        _drop_empty({"attach": m.attach_on_wire(order.attach), "notify_url": order.notify_url})
    )
    if order.openid:
        body["openid"] = order.openid
    body["need_user_confirm"] = order.need_user_confirm
    return body


def completion_json(
    appid: str, service_id: str, completion: m.ServiceOrderCompletion
) -> dict[str, Any]:
    """The JSON body of a complete call."""
    body: dict[str, Any] = {
        "appid": appid,
        "service_id": service_id,
        "post_payments": [_payment_json(p) for p in completion.post_payments],
    }
    if completion.post_discounts:
        body["post_discounts"] = [_discount_json(d) for d in completion.post_discounts]
    body["total_amount"] = completion.total_amount
    if completion.time_range is not None:
        body["time_range"] = _time_range_json(completion.time_range)
    if completion.location is not None:
        body["location"] = _location_json(completion.location)
    body["profit_sharing"] = completion.profit_sharing
    if completion.goods_tag:
        body["goods_tag"] = completion.goods_tag
    return body


class _Reader:
    """Typed access to an untrusted JSON object; any surprise is ResponseNotTrusted."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise ResponseNotTrusted(f"{where} is not a JSON object")
        self._obj: dict[str, Any] = obj
        self._where = where

    def text(self, key: str) -> str:
        value = self._obj.get(key, "")
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ResponseNotTrusted(f"{self._where}.{key} is not a string")
        return value

    def number(self, key: str) -> int | None:
        value = self._obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ResponseNotTrusted(f"{self._where}.{key} is not an integer")
        return value

    def flag(self, key: str) -> bool:
        value = self._obj.get(key, False)
        if not isinstance(value, bool):
            raise ResponseNotTrusted(f"{self._where}.{key} is not a boolean")
        return value

    def child(self, key: str) -> _Reader | None:
        value = self._obj.get(key)
        return None if value is None else _Reader(value, f"{self._where}.{key}")

    def items(self, key: str) -> list[_Reader]:
        value = self._obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ResponseNotTrusted(f"{self._where}.{key} is not a list")
        return [_Reader(v, f"{self._where}.{key}[{i}]") for i, v in enumerate(value)]


def parse_service_order(obj: Any) -> m.ServiceOrderResult:
    """A service-order answer as a domain result."""
    r = _Reader(obj, "service order")
    try:
        state = m.ServiceOrderState(r.text("state"))
    except ValueError as exc:
        raise ResponseNotTrusted("service order has an unknown state") from exc
    risk = r.child("risk_fund")
    time_range = r.child("time_range")
    location = r.child("location")
    collection = r.child("collection")
    return m.ServiceOrderResult(
        out_order_no=r.text("out_order_no"),
        service_id=r.text("service_id"),
        state=state,
        appid=r.text("appid"),
        mchid=r.text("mchid"),
        order_id=r.text("order_id"),
        state_description=r.text("state_description"),
        service_introduction=r.text("service_introduction"),
        post_payments=tuple(
            m.PostPayment(
                name=p.text("name"),
                amount=p.number("amount"),
                description=p.text("description"),
                count=p.number("count"),
            )
            for p in r.items("post_payments")
        ),
        post_discounts=tuple(
            m.PostDiscount(
                name=d.text("name"),
                description=d.text("description"),
                amount=d.number("amount"),
                count=d.number("count"),
            )
            for d in r.items("post_discounts")
        ),
        risk_fund=None
        if risk is None
        else m.RiskFund(
            name=risk.text("name").strip(),
            amount=risk.number("amount") or 0,
            description=risk.text("description"),
        ),
        time_range=None
        if time_range is None
        else m.TimeRange(
            start_time=time_range.text("start_time"),
            start_time_remark=time_range.text("start_time_remark"),
            end_time=time_range.text("end_time"),
            end_time_remark=time_range.text("end_time_remark"),
        ),
        location=None
        if location is None
        else m.Location(
            start_location=location.text("start_location"),
            end_location=location.text("end_location"),
        ),
        total_amount=r.number("total_amount"),
        attach=m.attach_from_wire(r.text("attach")),
        notify_url=r.text("notify_url"),
        openid=r.text("openid"),
        need_collection=r.flag("need_collection"),
        package=r.text("package").strip(),
        collection=None if collection is None else _parse_collection(collection),
    )


def _parse_collection(c: _Reader) -> m.Collection:
    return m.Collection(
        state=c.text("state"),
        total_amount=c.number("total_amount") or 0,
        paying_amount=c.number("paying_amount") or 0,
        paid_amount=c.number("paid_amount") or 0,
        details=tuple(
            m.CollectionDetail(
                amount=d.number("amount") or 0,
                paid_type=d.text("paid_type"),
                paid_time=d.text("paid_time"),
                transaction_id=d.text("transaction_id"),
            )
            for d in c.items("details")
        ),
    )


def dump_json(obj: Mapping[str, Any]) -> bytes:
    """Serialize a body once; these bytes are both signed and sent."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- the client -------------------------------------------------------------------------


def _default_nonce() -> str:
    return secrets.token_hex(16).upper()


class PayScoreClient:
    """PayScore service orders and face UnionIDs over WeChat Pay API v3."""

    def __init__(
        self,
        mchid: str,
        appid: str,
        service_id: str,
        merchant_private_key: RSAPrivateKey,
        merchant_serial_no: str,
        platform_keys: Mapping[str, RSAPublicKey],
        *,
        base_url: str,
        http: httpx.AsyncClient,
        clock: Clock,
        nonce: Callable[[], str] | None = None,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 5.0,
        user_agent: str = "facepay-terminal",
        public_key_id: str = "",
        sub_mchid: str = "",
        sub_appid: str = "",
    ) -> None:
        if not platform_keys:
            raise ConfigError("at least one WeChat Pay platform key is required")
        if public_key_id and public_key_id not in platform_keys:
            raise ConfigError("public_key_id must name one of the platform keys")
        if max_attempts < 1:
            raise ConfigError("max_attempts must be >= 1")
        self._mchid = mchid
        self._appid = appid
        self._service_id = service_id
        self._key = merchant_private_key
        self._serial_no = merchant_serial_no
        self._verifier = ResponseVerifier(platform_keys, clock)
        self._base_url = base_url.rstrip("/")
        self._http = http
        self._clock = clock
        self._nonce = nonce or _default_nonce
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._user_agent = user_agent
        # Public-key mode: every request names the key, so answers are signed with it.
        self._public_key_id = public_key_id
        # Service-provider mode (the UnionID lookup takes the sub-merchant's ids).
        self._sub_mchid = sub_mchid
        self._sub_appid = sub_appid

    async def create_service_order(self, order: m.NewServiceOrder) -> m.ServiceOrderResult:
        """Create (or, with identical fields, re-fetch) a service order."""
        validate_new_order(order)
        body = new_order_json(self._appid, self._service_id, order)
        answer = await self._call("create", "POST", "/v3/payscore/serviceorder", body=body)
        return self._order(answer, order.out_order_no)

    async def complete_service_order(
        self,
        out_order_no: str,
        completion: m.ServiceOrderCompletion,
        *,
        limits: CompletionLimits | None = None,
    ) -> m.ServiceOrderResult:
        """Complete an order: WeChat Pay then charges total_amount (MCH_COMPLETE till then)."""
        path = order_path(out_order_no, "complete")
        validate_completion(completion, limits)
        body = completion_json(self._appid, self._service_id, completion)
        answer = await self._call("complete", "POST", path, body=body)
        return self._order(answer, out_order_no)

    async def sync_service_order(
        self, out_order_no: str, type: str, paid_time: str
    ) -> m.ServiceOrderResult:
        """Tell WeChat Pay the order was paid through another channel (type Order_Paid)."""
        path = order_path(out_order_no, "sync")
        if type != m.SYNC_ORDER_PAID:
            raise InvalidArgument("type", f"must be {m.SYNC_ORDER_PAID}")
        if not _PAID_TIME.fullmatch(paid_time):
            raise InvalidArgument("paid_time", "must be yyyyMMddHHmmss")
        body = {
            "appid": self._appid,
            "service_id": self._service_id,
            "type": type,
            "detail": {"paid_time": paid_time},
        }
        answer = await self._call("sync", "POST", path, body=body)
        return self._order(answer, out_order_no)

    async def get_service_order(self, out_order_no: str) -> m.ServiceOrderResult:
        """Query an order by out_order_no."""
        check_out_order_no(out_order_no)
        query = [
            ("out_order_no", out_order_no),
            ("service_id", self._service_id),
            ("appid", self._appid),
        ]
        answer = await self._call("query", "GET", SERVICE_ORDER_PATH, query=query)
        return self._order(answer, out_order_no)

    async def cancel_service_order(self, out_order_no: str, reason: str) -> m.ServiceOrderResult:
        """Cancel (revoke) an order that has not been completed."""
        path = order_path(out_order_no, "cancel")
        _check_len("reason", reason, 1, m.MAX_CANCEL_REASON)
        body = {"appid": self._appid, "service_id": self._service_id, "reason": reason}
        answer = await self._call("cancel", "POST", path, body=body)
        # The cancel answer carries only identifiers; the order is REVOKED by definition.
        r = _Reader(answer, "cancel answer")
        if r.text("out_order_no") != out_order_no:
            raise ResponseNotTrusted("answer names a different out_order_no")
        if "state" in answer:
            return parse_service_order(answer)
        return m.ServiceOrderResult(
            out_order_no=out_order_no,
            service_id=r.text("service_id"),
            state=m.ServiceOrderState.REVOKED,
            appid=r.text("appid"),
            mchid=r.text("mchid"),
            order_id=r.text("order_id"),
        )

    async def get_user_unionid(self, face_sid: str) -> m.UnionIdResult:
        """The UnionID of the user a face session identified (face_sid from the SDK)."""
        check_path_param("face_sid", face_sid, max_len=256)
        query = [("info_type", "ASK_UNIONID"), ("appid", self._appid)]
        if self._sub_mchid:
            # Service-provider mode: required there, per the reference.
            query.append(("sub_mchid", self._sub_mchid))
            if self._sub_appid:
                query.append(("sub_appid", self._sub_appid))
        answer = await self._call("unionid", "GET", f"/v3/facemch/users/{face_sid}", query=query)
        r = _Reader(answer, "unionid answer")
        unionid = r.text("union_id")
        if not unionid:
            raise ResponseNotTrusted("unionid answer lacks union_id")
        return m.UnionIdResult(unionid=unionid, openid=r.text("openid"))

    # --- private ---------------------------------------------------------------------

    def _order(self, answer: Any, out_order_no: str) -> m.ServiceOrderResult:
        order = parse_service_order(answer)
        if order.out_order_no != out_order_no:
            raise ResponseNotTrusted("answer names a different out_order_no")
        return order

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one signed request, retrying 429/5xx with the same body; the verified JSON."""
        content = b"" if body is None else dump_json(body)
        url = self._base_url + path
        if query:
            url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
        delay = self._backoff_initial
        last = "no attempt"
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                await self._clock.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
            request = self._signed_request(method, url, content)
            try:
                status, headers, raw = await self._exchange(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing reached WeChat Pay: safe to try again.
                last = type(exc).__name__
                _log.warning("wxpay v3 retry", endpoint=endpoint, attempt=attempt, cause=last)
                if attempt == self._max_attempts:
                    raise BackendUnavailable(f"{endpoint}: cannot connect ({last})") from exc
                continue
            except httpx.HTTPError as exc:
                raise BackendUnavailable(
                    f"{endpoint}: no answer ({type(exc).__name__}); outcome unknown"
                ) from exc
            signed = is_signed(headers)
            if signed:
                self._verifier.verify(headers, raw)
            if 200 <= status < 300:
                if not signed:
                    raise ResponseNotTrusted(f"{endpoint}: answer is not signed")
                return _load_json(raw, endpoint) if raw else {}
            if status in RETRYABLE_STATUSES or status >= 500:
                last = f"HTTP {status}"
                _log.warning("wxpay v3 retry", endpoint=endpoint, attempt=attempt, cause=last)
                continue
            if not signed:
                raise ResponseNotTrusted(f"{endpoint}: unsigned HTTP {status} answer")
            raise _rejection(status, raw, endpoint)
        raise BackendUnavailable(
            f"{endpoint}: no usable answer after {self._max_attempts} attempts (last: {last})"
        )

    def _signed_request(self, method: str, url: str, content: bytes) -> httpx.Request:
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        if method != "GET":
            headers["Content-Type"] = "application/json"
        if self._public_key_id:
            headers["Wechatpay-Serial"] = self._public_key_id
        request = self._http.build_request(
            method, url, content=content if method != "GET" else None, headers=headers
        )
        # Sign what httpx will put on the wire, not what we think we asked for.
        canonical = request.url.raw_path.decode("ascii")
        timestamp = str(int(self._clock.time()))
        nonce = self._nonce()
        message = request_message(method, canonical, timestamp, nonce, content)
        request.headers["Authorization"] = authorization_header(
            self._mchid, self._serial_no, timestamp, nonce, rsa_sign(self._key, message)
        )
        return request

    async def _exchange(self, request: httpx.Request) -> tuple[int, Mapping[str, str], bytes]:
        response = await self._http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise ResponseNotTrusted("answer exceeds the size limit")
                chunks.append(chunk)
        finally:
            await response.aclose()
        return response.status_code, response.headers, b"".join(chunks)


def _load_json(raw: bytes, endpoint: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResponseNotTrusted(f"{endpoint}: answer is not JSON") from exc


def _rejection(status: int, raw: bytes, endpoint: str) -> BackendRejected | NotFound:
    r = _Reader(_load_json(raw, endpoint), f"{endpoint} error")
    # The reference prints "ORDER_NOT_ EXIST"; tolerate the stray space.
    code = r.text("code").replace(" ", "")[:_MAX_CODE] or f"HTTP_{status}"
    # A peer-supplied message: one line, bounded, so it is safe to log.
    message = " ".join(r.text("message").split())[:_MAX_MESSAGE]
    if code in NOT_FOUND_CODES:
        return NotFound(f"{endpoint}: {code}")
    if code in ORDER_STATE_CODES:
        return OrderStateError(code, message)
    return BackendRejected(code, message)
