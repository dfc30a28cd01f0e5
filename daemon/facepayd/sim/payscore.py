"""Simulated WeChat Pay PayScore v3 endpoints: service orders and face UnionIDs.

State + service + scenarios: the ledger (orders, users, face_sids, calls per endpoint) is
plain attributes tests read; `handle` speaks the v3 wire protocol (verifies the merchant's
request signature, signs every answer with the platform key); scenario methods script
faults (429, 500, INVALID_ORDER_STATE, slow or forged answers) and user behaviour.

Service-order states follow the reference: a need_user_confirm order is CREATED until the
user confirms (→ DOING/USER_CONFIRM); any other order is DOING/USER_CONFIRM at once.
complete → DOING/MCH_COMPLETE, as WeChat answers it; the charge settles it as DONE
`charge_delay` seconds later on the simulator's clock (seen by the next call; never while
auto_charge is off; at once only in the instant_charge scenario, or when nothing is owed);
`/pay` retries the charge of a MCH_COMPLETE order; sync Order_Paid settles it as DONE;
cancel → REVOKED; a CREATED order untouched for 30 days is EXPIRED.

Keys: answers are signed with the platform certificate's key, or, when the request's
Wechatpay-Serial names the WeChat Pay public key (public-key mode, as WeChat's SDKs send
it), with that key. `/v3/certificates` lists the platform certificate sealed with the
merchant's APIv3 key. Every answer carries the headers WeChat Pay sends.

Wiring: `install(wxpay_simulator)` serves every path under the v3 prefixes on the HTTPS
simulator, so an unknown order or face_sid gets a signed answer (ORDER_NOT_EXIST,
NOT_FOUND) as from WeChat Pay, not a bare 404.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from facepayd.clock import Clock
from facepayd.sim import wxpay as https
from facepayd.wxpay import payscore_models as m
from facepayd.wxpay import v3

__all__ = [
    "ENDPOINTS",
    "Answer",
    "Fault",
    "PayScoreSimulator",
    "Received",
    "SimServiceOrder",
    "SimUser",
]

Answer = tuple[int, dict[str, str], bytes]
_Handler = Callable[[str, dict[str, str], dict[str, Any]], dict[str, Any]]

ENDPOINTS = ("create", "query", "complete", "pay", "sync", "cancel", "unionid", "certificates")
EXPIRY_SECONDS = 30 * 24 * 3600
_OUT_ORDER_NO = re.compile(r"[0-9A-Za-z_\-|*]{1,32}")
SERVICE_ORDER_PATH = "/v3/payscore/serviceorder"
_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"/v3/payscore/serviceorder"), "create"),
    ("GET", re.compile(r"/v3/payscore/serviceorder"), "query"),
    ("POST", re.compile(r"/v3/payscore/serviceorder/(?P<no>[^/]+)/complete"), "complete"),
    ("POST", re.compile(r"/v3/payscore/serviceorder/(?P<no>[^/]+)/pay"), "pay"),
    ("POST", re.compile(r"/v3/payscore/serviceorder/(?P<no>[^/]+)/sync"), "sync"),
    ("POST", re.compile(r"/v3/payscore/serviceorder/(?P<no>[^/]+)/cancel"), "cancel"),
    ("GET", re.compile(r"/v3/facemch/users/(?P<no>[^/]+)"), "unionid"),
    ("GET", re.compile(r"/v3/certificates"), "certificates"),
)
# What WeChat Pay sends with every v3 answer besides the signature headers.
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
DEFAULT_CHARGE_DELAY = 2.0


@dataclass(slots=True)
class SimUser:
    """A WeChat user as PayScore sees them."""

    openid: str
    has_payscore: bool = True
    authorized: bool = True


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted answer for the next matching call (endpoint None matches any)."""

    endpoint: str | None = None
    status: int = 0  # 0: no error answer, only the delay / forgery
    code: str = ""
    message: str = ""
    delay: float = 0.0
    forge_signature: bool = False
    unsigned: bool = False


@dataclass(slots=True)
class SimServiceOrder:
    """One service order in the ledger (mutable: it is the simulator's state)."""

    out_order_no: str
    order_id: str
    mchid: str
    request: dict[str, Any]
    created_at: float
    state: str = "CREATED"
    state_description: str = ""
    openid: str = ""
    post_payments: list[dict[str, Any]] = field(default_factory=list)
    post_discounts: list[dict[str, Any]] = field(default_factory=list)
    time_range: dict[str, Any] = field(default_factory=dict)
    location: dict[str, Any] = field(default_factory=dict)
    total_amount: int | None = None
    collection: dict[str, Any] | None = None
    cancel_reason: str = ""
    completions: int = 0
    # When the deferred charge of a MCH_COMPLETE order succeeds (None: not on its own).
    charge_at: float | None = None
    pay_calls: int = 0

    @property
    def appid(self) -> str:
        """The appid the order was created with."""
        return str(self.request.get("appid", ""))

    @property
    def service_id(self) -> str:
        """The service_id the order was created with."""
        return str(self.request.get("service_id", ""))


class _Error(Exception):
    """An error answer raised inside a handler."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived (for tests: same body on retries, fresh nonce each time)."""

    endpoint: str
    method: str
    target: str
    body: bytes
    nonce: str
    timestamp: str


class PayScoreSimulator:
    """PayScore v3 service orders and UnionIDs, verified and signed like WeChat Pay."""

    def __init__(
        self,
        clock: Clock,
        merchant_public_keys_by_serial: Mapping[str, RSAPublicKey],
        platform_private_key: RSAPrivateKey,
        platform_serial: str,
        *,
        nonce: Callable[[], str] | None = None,
        auto_charge: bool = True,
        charge_delay: float = DEFAULT_CHARGE_DELAY,
        instant_charge: bool = False,
        max_skew: float = v3.MAX_CLOCK_SKEW,
        platform_certificate: x509.Certificate | None = None,
        api_v3_key: bytes = b"",
        public_key: tuple[str, RSAPrivateKey] | None = None,
        service_risk_cap: int = 100_000,
    ) -> None:
        self._clock = clock
        self._merchant_keys = {
            v3.normalize_serial(s): k for s, k in merchant_public_keys_by_serial.items()
        }
        self._platform_key = platform_private_key
        self._platform_serial = platform_serial
        # Answer keys by the serial a request may name in Wechatpay-Serial.
        self._signers = {
            v3.normalize_serial(platform_serial): (platform_serial, platform_private_key)
        }
        if public_key is not None:
            self._signers[v3.normalize_serial(public_key[0])] = public_key
        self._certificate = platform_certificate
        self._api_v3_key = api_v3_key
        self._nonce = nonce or (lambda: secrets.token_hex(16).upper())
        self._max_skew = max_skew
        self._order_ids = itertools.count(1)
        self._mchid = ""  # of the request being handled
        # Scenarios: whether (and how soon) a completed order's charge succeeds on its own.
        self.auto_charge = auto_charge
        self.charge_delay = charge_delay
        self.instant_charge = instant_charge
        # The per-service-ID cap of an ESTIMATE_ORDER_COST order (set by WeChat Pay per service).
        self.service_risk_cap = service_risk_cap
        # The ledger tests read.
        self.orders: dict[str, SimServiceOrder] = {}
        self.users: dict[str, SimUser] = {}
        self.face_sids: dict[str, str] = {}
        self.face_sid_openids: dict[str, str] = {}
        # Each unionid lookup's query as received, for tests of service-provider mode.
        self.unionid_queries: list[dict[str, str]] = []
        self.faults: list[Fault] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.answers: list[tuple[str, int, str]] = []  # (endpoint, status, code)
        self.received: list[Received] = []

    # --- scenarios ---------------------------------------------------------------------

    def add_user(self, openid: str, *, has_payscore: bool = True, authorized: bool = True) -> None:
        """Register a user who has (or lacks) PayScore and has (or has not) authorized us."""
        self.users[openid] = SimUser(openid, has_payscore, authorized)

    def register_face_sid(self, face_sid: str, unionid: str, openid: str = "") -> None:
        """Make a face_sid resolvable to a UnionID (and, when given, the user's openid)."""
        self.face_sids[face_sid] = unionid
        if openid:
            self.face_sid_openids[face_sid] = openid

    def fail_next(
        self,
        endpoint: str | None = None,
        *,
        status: int = 500,
        code: str = "SYSTEM_ERROR",
        message: str = "simulated failure",
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """Answer the next `times` matching calls with this error (without processing them)."""
        self.faults.extend(Fault(endpoint, status, code, message, delay) for _ in range(times))

    def delay_next(self, seconds: float, endpoint: str | None = None) -> None:
        """Answer the next matching call normally, after `seconds` on the simulator's clock."""
        self.faults.append(Fault(endpoint, delay=seconds))

    def forge_next(self, endpoint: str | None = None, *, unsigned: bool = False) -> None:
        """Process the next matching call but sign its answer wrongly (or not at all)."""
        self.faults.append(Fault(endpoint, forge_signature=not unsigned, unsigned=unsigned))

    def user_confirms(self, out_order_no: str, openid: str) -> None:
        """The user accepts a need_user_confirm order in WeChat."""
        order = self._order(out_order_no)
        user = self.users.get(openid)
        if order.state != "CREATED" or user is None or not user.has_payscore:
            raise ValueError("order cannot be confirmed by this user")
        user.authorized = True
        order.openid = openid
        order.state, order.state_description = "DOING", m.USER_CONFIRM

    def charge(self, out_order_no: str) -> None:
        """The deferred charge of a MCH_COMPLETE order succeeds."""
        order = self._order(out_order_no)
        if order.state != "DOING" or order.state_description != m.MCH_COMPLETE:
            raise ValueError("order is not awaiting its charge")
        self._settle(order, "NEWTON", _stamp(self._clock.time()))

    def expire(self, out_order_no: str) -> None:
        """Age a CREATED order past its 30 days."""
        self._order(out_order_no).created_at -= EXPIRY_SECONDS

    # --- the service -------------------------------------------------------------------

    async def handle(
        self, method: str, path_with_query: str, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        """Answer one HTTP request (path and query exactly as received)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        split = urlsplit(path_with_query)
        route = self._route(method.upper(), split.path)
        endpoint = route[0] if route else "unknown"
        self.calls[endpoint] += 1
        auth = v3.parse_authorization(lowered.get("authorization", ""))
        self.received.append(
            Received(
                endpoint,
                method.upper(),
                path_with_query,
                body,
                auth.nonce_str if auth else "",
                auth.timestamp if auth else "",
            )
        )
        mchid = self._verified_mchid(method.upper(), path_with_query, lowered, body)
        fault = self._take_fault(endpoint) if mchid is not None else None
        if fault is not None and fault.delay:
            await self._clock.sleep(fault.delay)
        try:
            answer = self._dispatch(mchid, fault, route, split.query, method.upper(), body)
            status = 200
        except _Error as exc:
            status, answer = exc.status, {"code": exc.code, "message": exc.message}
        self.answers.append(
            (endpoint, status, str(answer.get("code", "")) if status >= 300 else "")
        )
        return self._signed(status, answer, fault, lowered.get("wechatpay-serial", ""))

    def install(self, server: https.WxPaySimulator | https.SimHttpsServer) -> None:
        """Serve these endpoints, and a signed error for any other v3 path, on the simulator."""
        for method in ("GET", "POST"):
            server.add_prefix_route(method, "/v3/", self._serve)

    async def _serve(self, request: https.SimRequest) -> https.SimResponse:
        # The signature covers the query exactly as sent; the server split it at the first "?".
        target = f"{request.path}?{request.query}" if request.query else request.path
        status, headers, body = await self.handle(
            request.method, target, dict(request.headers), request.body
        )
        return https.SimResponse(status, tuple(headers.items()), body)

    # --- private -----------------------------------------------------------------------

    def _route(self, method: str, path: str) -> tuple[str, str, _Handler] | None:
        handlers = {
            "create": self._create,
            "query": self._query,
            "complete": self._complete,
            "sync": self._sync,
            "cancel": self._cancel,
            "unionid": self._unionid,
            "pay": self._pay,
            "certificates": self._certificates,
        }
        for route_method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if route_method == method and match:
                # The path parameter as sent is percent-encoded ("|" arrives as %7C).
                return name, unquote(match.groupdict().get("no", "")), handlers[name]
        return None

    def _dispatch(
        self,
        mchid: str | None,
        fault: Fault | None,
        route: tuple[str, str, _Handler] | None,
        query_string: str,
        method: str,
        body: bytes,
    ) -> dict[str, Any]:
        if mchid is None:
            raise _Error(401, "SIGN_ERROR", "request signature does not verify")
        if fault is not None and fault.status:
            raise _Error(fault.status, fault.code, fault.message)
        if route is None:
            raise _Error(404, "NOT_FOUND", "no such API")
        self._mchid = mchid
        _, param, handler = route
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        return handler(param, query, _load_body(body) if method == "POST" else {})

    def _verified_mchid(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> str | None:
        """The caller's mchid if the request's signature verifies, else None."""
        auth = v3.parse_authorization(headers.get("authorization", ""))
        if auth is None or not auth.timestamp.isdigit():
            return None
        key = self._merchant_keys.get(v3.normalize_serial(auth.serial_no))
        if key is None or abs(self._clock.time() - int(auth.timestamp)) > self._max_skew:
            return None
        message = v3.request_message(method, target, auth.timestamp, auth.nonce_str, body)
        return auth.mchid if v3.rsa_verify(key, message, auth.signature) else None

    def _take_fault(self, endpoint: str) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.endpoint in (None, endpoint):
                return self.faults.pop(i)
        return None

    def _signed(
        self, status: int, answer: Mapping[str, Any], fault: Fault | None, wanted_serial: str
    ) -> Answer:
        body = v3.dump_json(answer)
        headers = {"Content-Type": JSON_CONTENT_TYPE, "Request-ID": secrets.token_hex(8)}
        if fault is not None and fault.unsigned:
            return status, headers, body
        # The key the request asked for (public-key mode), else the platform certificate's.
        serial, key = self._signers.get(
            v3.normalize_serial(wanted_serial), (self._platform_serial, self._platform_key)
        )
        timestamp = str(int(self._clock.time()))
        nonce = self._nonce()
        signature = v3.rsa_sign(key, v3.response_message(timestamp, nonce, body))
        if fault is not None and fault.forge_signature:
            signature = v3.rsa_sign(key, v3.response_message(timestamp, nonce, body + b" "))
        headers.update(
            {
                "Wechatpay-Timestamp": timestamp,
                "Wechatpay-Nonce": nonce,
                "Wechatpay-Signature": signature,
                "Wechatpay-Signature-Type": v3.SCHEME,
                "Wechatpay-Serial": serial,
            }
        )
        return status, headers, body

    def _order(self, out_order_no: str) -> SimServiceOrder:
        order = self.orders.get(out_order_no)
        if order is None:
            raise _Error(404, "ORDER_NOT_EXIST", "order does not exist")
        now = self._clock.time()
        if order.state == "CREATED" and now - order.created_at >= EXPIRY_SECONDS:
            order.state = "EXPIRED"
        if order.charge_at is not None and now >= order.charge_at:
            self._settle(order, "NEWTON", _stamp(order.charge_at))
        return order

    def _owned(self, out_order_no: str, payload: Mapping[str, Any]) -> SimServiceOrder:
        order = self._order(out_order_no)
        if payload.get("appid") != order.appid or payload.get("service_id") != order.service_id:
            raise _Error(400, "INVALID_REQUEST", "appid or service_id differs from the order's")
        return order

    def _create(self, _: str, __: dict[str, str], p: dict[str, Any]) -> dict[str, Any]:
        no = p.get("out_order_no")
        if not isinstance(no, str) or not _OUT_ORDER_NO.fullmatch(no):
            raise _Error(400, "PARAM_ERROR", "out_order_no is malformed")
        existing = self.orders.get(no)
        if existing is not None:
            if existing.request != p:
                raise _Error(400, "INVALID_REQUEST", "same out_order_no, different parameters")
            return self._render(existing)
        _check_create(p)
        confirm = p.get("need_user_confirm") is True
        openid = p.get("openid", "")
        if confirm and openid:
            raise _Error(400, "PARAM_ERROR", "openid must be empty for a need_user_confirm order")
        if not confirm:
            user = self.users.get(openid) if isinstance(openid, str) else None
            if user is None or not user.has_payscore:
                raise _Error(400, "INVALID_REQUEST", "user has not enabled PayScore")
            if not user.authorized:
                raise _Error(400, "INVALID_REQUEST", "user has not authorized this service")
        order = SimServiceOrder(
            out_order_no=no,
            order_id=f"{1000000000 + next(self._order_ids)}",
            mchid=self._mchid,
            request=p,
            created_at=self._clock.time(),
            openid=openid if isinstance(openid, str) else "",
            post_payments=list(p.get("post_payments", [])),
            post_discounts=list(p.get("post_discounts", [])),
            time_range=dict(p.get("time_range", {})),
            location=dict(p.get("location", {})),
        )
        if not confirm:
            order.state, order.state_description = "DOING", m.USER_CONFIRM
        self.orders[no] = order
        return self._render(order)

    def _query(self, _: str, q: dict[str, str], __: dict[str, Any]) -> dict[str, Any]:
        if not q.get("service_id") or not q.get("appid") or not q.get("out_order_no"):
            raise _Error(400, "PARAM_ERROR", "out_order_no, service_id and appid are required")
        order = self._order(q["out_order_no"])
        if (q["appid"], q["service_id"]) != (order.appid, order.service_id):
            raise _Error(404, "ORDER_NOT_EXIST", "order does not exist")
        return self._render(order)

    def _complete(self, no: str, _: dict[str, str], p: dict[str, Any]) -> dict[str, Any]:
        order = self._owned(no, p)
        _require_doing(order, m.USER_CONFIRM)
        payments = p.get("post_payments")
        discounts = p.get("post_discounts", [])
        total = p.get("total_amount")
        if not isinstance(payments, list) or not payments or len(payments) > 100:
            raise _Error(400, "PARAM_ERROR", "post_payments must hold 1 to 100 items")
        if not isinstance(discounts, list) or len(discounts) > 30:
            raise _Error(400, "PARAM_ERROR", "post_discounts must hold at most 30 items")
        if not isinstance(total, int) or total < 0:
            raise _Error(400, "PARAM_ERROR", "total_amount must be an integer >= 0")
        expected = _sum_amounts(payments) - _sum_amounts(discounts)
        if total != expected:
            raise _Error(400, "PARAM_ERROR", "total_amount does not match the items")
        risk = order.request["risk_fund"]
        # The cap of the order's risk-fund mode: the order's own risk fund when a user who
        # fails the assessment pays a deposit, the service ID's cap when they are refused.
        if risk.get("name") in m.DEPOSIT_RISK_FUND_NAMES and total > int(risk["amount"]):
            raise _Error(400, "PARAM_ERROR", "total_amount exceeds the risk fund")
        if risk.get("name") not in m.DEPOSIT_RISK_FUND_NAMES and total > self.service_risk_cap:
            raise _Error(400, "PARAM_ERROR", "total_amount exceeds the service's risk cap")
        time_range = p.get("time_range", {})
        if not isinstance(time_range, dict):
            raise _Error(400, "PARAM_ERROR", "time_range must be an object")
        if not order.time_range.get("end_time") and not time_range.get("end_time"):
            raise _Error(400, "PARAM_ERROR", "time_range.end_time is required: none at create")
        order.post_payments = payments
        order.post_discounts = discounts
        order.time_range.update(time_range)
        order.location.update(p.get("location", {}))
        order.total_amount = total
        order.completions += 1
        order.state_description = m.MCH_COMPLETE
        order.collection = {
            "state": "USER_PAYING",
            "total_amount": total,
            "paying_amount": total,
            "paid_amount": 0,
        }
        answer = self._render(order)
        now = self._clock.time()
        if total == 0 or self.instant_charge:
            self._settle(order, "NEWTON", _stamp(now))
            answer = self._render(order)
        elif self.auto_charge:
            order.charge_at = now + self.charge_delay
        return answer

    def _pay(self, no: str, _: dict[str, str], p: dict[str, Any]) -> dict[str, Any]:
        order = self._owned(no, p)
        _require_doing(order, m.MCH_COMPLETE)
        order.pay_calls += 1
        if self.auto_charge:
            self._settle(order, "NEWTON", _stamp(self._clock.time()))
        return {
            "appid": order.appid,
            "mchid": order.mchid,
            "out_order_no": order.out_order_no,
            "service_id": order.service_id,
            "order_id": order.order_id,
        }

    def _sync(self, no: str, _: dict[str, str], p: dict[str, Any]) -> dict[str, Any]:
        order = self._owned(no, p)
        detail = p.get("detail")
        if p.get("type") != "Order_Paid":
            raise _Error(400, "PARAM_ERROR", "type must be Order_Paid")
        if not isinstance(detail, dict) or not isinstance(detail.get("paid_time"), str):
            raise _Error(400, "PARAM_ERROR", "detail.paid_time is required")
        _require_doing(order, m.MCH_COMPLETE)
        self._settle(order, "MCH", detail["paid_time"])
        return self._render(order)

    def _cancel(self, no: str, _: dict[str, str], p: dict[str, Any]) -> dict[str, Any]:
        order = self._owned(no, p)
        reason = p.get("reason")
        if not isinstance(reason, str) or not 1 <= len(reason) <= 50:
            raise _Error(400, "PARAM_ERROR", "reason must be 1 to 50 characters")
        if order.state != "CREATED":
            _require_doing(order, m.USER_CONFIRM)
        order.state, order.state_description = "REVOKED", ""
        order.cancel_reason = reason
        return {
            "appid": order.appid,
            "mchid": order.mchid,
            "out_order_no": order.out_order_no,
            "service_id": order.service_id,
            "order_id": order.order_id,
        }

    def _unionid(self, face_sid: str, q: dict[str, str], _: dict[str, Any]) -> dict[str, Any]:
        self.unionid_queries.append(dict(q))
        if q.get("info_type") != "ASK_UNIONID" or not q.get("appid"):
            raise _Error(400, "PARAM_ERROR", "info_type=ASK_UNIONID and appid are required")
        if q.get("sub_appid") and not q.get("sub_mchid"):
            raise _Error(400, "PARAM_ERROR", "sub_appid goes with sub_mchid")
        unionid = self.face_sids.get(face_sid)
        if unionid is None:
            raise _Error(404, "NOT_FOUND", "face_sid is unknown or expired")
        answer = {"union_id": unionid}
        # Not in the reference's sample answer; sent only when the scenario registered one.
        if face_sid in self.face_sid_openids:
            answer["openid"] = self.face_sid_openids[face_sid]
        return answer

    def _certificates(self, _: str, __: dict[str, str], ___: dict[str, Any]) -> dict[str, Any]:
        if self._certificate is None or len(self._api_v3_key) != 32:
            raise _Error(404, "NOT_FOUND", "no platform certificate (public-key mode)")
        pem = self._certificate.public_bytes(serialization.Encoding.PEM)
        nonce = secrets.token_hex(6)
        return {
            "data": [
                {
                    "serial_no": v3.certificate_serial(self._certificate),
                    "effective_time": _rfc3339(self._certificate.not_valid_before_utc),
                    "expire_time": _rfc3339(self._certificate.not_valid_after_utc),
                    "encrypt_certificate": v3.encrypt_resource(
                        self._api_v3_key, nonce, "certificate", pem
                    ),
                }
            ]
        }

    def _settle(self, order: SimServiceOrder, paid_type: str, paid_time: str) -> None:
        total = order.total_amount or 0
        order.charge_at = None
        order.state, order.state_description = "DONE", ""
        order.collection = {
            "state": "USER_PAID",
            "total_amount": total,
            "paying_amount": 0,
            "paid_amount": total,
            "details": [
                {
                    "seq": 1,
                    "amount": total,
                    "paid_type": paid_type,
                    "paid_time": paid_time,
                    "transaction_id": f"4200{order.order_id}",
                }
            ]
            if total
            else [],
        }

    def _render(self, order: SimServiceOrder) -> dict[str, Any]:
        r = order.request
        out: dict[str, Any] = {
            "appid": order.appid,
            "mchid": order.mchid,
            "out_order_no": order.out_order_no,
            "service_id": order.service_id,
            "service_introduction": r.get("service_introduction", ""),
            "state": order.state,
        }
        if order.state == "DOING":
            out["state_description"] = order.state_description
        if order.post_payments:
            out["post_payments"] = order.post_payments
        if order.post_discounts:
            out["post_discounts"] = order.post_discounts
        out["risk_fund"] = r.get("risk_fund")
        out["time_range"] = order.time_range
        if order.location:
            out["location"] = order.location
        for key in ("attach", "notify_url"):
            if key in r:
                out[key] = r[key]
        if order.openid:
            out["openid"] = order.openid
        out["order_id"] = order.order_id
        if order.total_amount is not None:
            out["total_amount"] = order.total_amount
            out["need_collection"] = order.total_amount > 0
        else:
            out["package"] = f"PKG{order.order_id}"
        if order.collection is not None:
            out["collection"] = order.collection
        return out


def _check_create(p: Mapping[str, Any]) -> None:
    for key in ("appid", "service_id", "service_introduction"):
        if not isinstance(p.get(key), str) or not p[key]:
            raise _Error(400, "PARAM_ERROR", f"{key} is required")
    if len(p["service_introduction"]) > 20:
        raise _Error(400, "PARAM_ERROR", "service_introduction exceeds 20 characters")
    if len(p.get("post_payments", [])) > 100 or len(p.get("post_discounts", [])) > 30:
        raise _Error(400, "PARAM_ERROR", "too many post_payments or post_discounts")
    risk = p.get("risk_fund")
    if not isinstance(risk, dict) or not isinstance(risk.get("amount"), int):
        raise _Error(400, "PARAM_ERROR", "risk_fund with an amount is required")
    time_range = p.get("time_range")
    if not isinstance(time_range, dict) or not time_range.get("start_time"):
        raise _Error(400, "PARAM_ERROR", "time_range.start_time is required")


def _require_doing(order: SimServiceOrder, description: str) -> None:
    if order.state == "REVOKED":
        raise _Error(400, "ORDER_CANCELED", "order was cancelled")
    if order.state == "DONE":
        raise _Error(400, "ORDER_DONE", "order is already done")
    if order.state != "DOING" or order.state_description != description:
        raise _Error(400, "INVALID_ORDER_STATE", f"order is {order.state}")


def _sum_amounts(items: list[Any]) -> int:
    total = 0
    for item in items:
        amount = item.get("amount", 0) if isinstance(item, dict) else None
        if not isinstance(amount, int) or amount < 0:
            raise _Error(400, "PARAM_ERROR", "item amounts must be integers >= 0")
        total += amount
    return total


def _load_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Error(400, "PARAM_ERROR", "body is not JSON") from exc
    if not isinstance(payload, dict):
        raise _Error(400, "PARAM_ERROR", "body is not a JSON object")
    return payload


def _rfc3339(moment: datetime.datetime) -> str:
    # WeChat Pay writes Beijing time with its offset, e.g. 2018-06-08T10:34:56+08:00.
    return moment.astimezone(_BEIJING).isoformat(timespec="seconds")


_BEIJING = datetime.timezone(datetime.timedelta(hours=8))


def _stamp(now: float) -> str:
    # WeChat Pay times are Beijing time (UTC+8), yyyyMMddHHmmss.
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(now + 8 * 3600))
