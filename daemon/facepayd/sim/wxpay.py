"""A simulated WeChat Pay backend: a real HTTPS server on loopback speaking the v2 XML protocol.

State (an order ledger, issued authinfos) + service (TLS, HTTP/1.1 keep-alive via h11, signed
XML; /secapi only with a client certificate signed by the sim CA) + scenarios. It is never kinder
than WeChat Pay: where the reference leaves an answer open, it gives the less helpful one.

Scenarios are picked by the micropay amount (total_fee, in fen), see AMOUNT_SCENARIOS, or
scripted for the next call with `script(out_trade_no or "*", scenario)`:

  fen  scenario                  micropay answers            the order really is
  ---  ------------------------  --------------------------  -----------------------------------
  any  SUCCESS (default)         SUCCESS                     paid
  101  USERPAYING_THEN_SUCCESS   USERPAYING                  paid after userpaying_seconds
  102  USERPAYING_FOREVER        USERPAYING                  USERPAYING until reversed
  103  USERPAYING_THEN_PAYERROR  USERPAYING                  PAYERROR after userpaying_seconds
  104  REVERSE_RECALL            USERPAYING                  USERPAYING; reverse answers
                                                             SYSTEMERROR recall=Y reverse_recalls
                                                             times before it succeeds
  105  REVERSE_TRADE_ERROR       USERPAYING                  USERPAYING; every reverse refused:
                                                             TRADE_ERROR recall=N
  106  REVERSE_EXPIRE            USERPAYING                  USERPAYING; every reverse refused:
                                                             REVERSE_EXPIRE recall=N
  107  REVERSE_USERPAYING        USERPAYING                  PAYERROR after userpaying_seconds;
                                                             until then reverse answers
                                                             USERPAYING recall=Y
  201  SYSTEMERROR_PAID          SYSTEMERROR                 paid (query shows SUCCESS)
  202  SYSTEMERROR_NOT_PAID      SYSTEMERROR                 never created (ORDERNOTEXIST)
  203  BANKERROR                 BANKERROR                   PAYERROR, nothing taken
  204  NOTPAY                    SYSTEMERROR                 NOTPAY (query), nothing taken
  205  CLOSED                    SYSTEMERROR                 CLOSED (query), nothing taken; a
                                                             late micropay answers ORDERCLOSED
  301  NOTENOUGH                 NOTENOUGH                   PAYERROR, nothing taken
  302  AUTHCODEEXPIRE            AUTHCODEEXPIRE              PAYERROR, nothing taken
  401  FORGED_SUCCESS            SUCCESS signed with a       PAYERROR, nothing taken
                                 key that is not ours
  501  SLOW                      answer after slow_seconds   paid
  502  DROP_CONNECTION           connection cut after the    paid
                                 request was read
  503  MALFORMED_XML             truncated XML               paid
  504  TAMPERED                  field changed after signing paid
  505  UNSIGNED                  no sign                     paid
  506  XML_BOMB                  billion-laughs DTD          paid
  507  DTD_ENTITY                external entity             paid
  508  OVERSIZED                 signed, oversized_bytes big paid
  509  WRONG_APPID               signed, another appid       paid
  510  HTTP_500                  HTTP 500                    paid
  601  RETURN_FAIL_SIGNERROR     return_code FAIL, unsigned  never created (ORDERNOTEXIST)
  602  RETURN_FAIL_XML_FORMAT_ERROR  as 601                  never created (ORDERNOTEXIST)
  603  RETURN_FAIL_PARAM_ERROR   return_code FAIL, unsigned  never created (ORDERNOTEXIST)
  701  COUPON_CASH               SUCCESS, coupon_fee 100     paid: cash_fee = total_fee - 100; the
                                                             query adds coupon_count 1 and
                                                             coupon_type_0 CASH, coupon_id_0,
                                                             coupon_fee_0
  702  COUPON_NO_CASH            SUCCESS, coupon_fee 100,    paid as 701, coupon_type_0 NO_CASH,
                                 settlement_total_fee        and settlement_total_fee = total_fee
                                 total_fee - 100             - 100 (免充值: not settled to the
                                                             merchant)
  703  PROMOTION_DETAIL          SUCCESS with a              paid as 702 plus promotion_detail
                                 promotion_detail JSON       (a single-product discount)

Scanned payment codes (StartCodePay) pick their own scenario by their digits: a code of 18
digits starting 10-15 (the reference's rule) whose first six digits are one of these plays it on
its order's first micropay, whatever the amount; any other valid code follows the amount.

  code starts  scenario                  micropay answers            the order really is
  -----------  ------------------------  --------------------------  ----------------------------
  149901       AUTHCODEEXPIRE            AUTHCODEEXPIRE              PAYERROR, nothing taken
  149902       AUTH_CODE_INVALID         AUTH_CODE_INVALID           never created (ORDERNOTEXIST)
  149903       AUTH_CODE_ERROR           AUTH_CODE_ERROR             never created (ORDERNOTEXIST)
  149904       USERPAYING_THEN_SUCCESS   USERPAYING (the customer    paid after userpaying_seconds
                                         types the password)

Scripted only (they act on the next matching reverse): REVERSE_TRADE_ERROR, REVERSE_EXPIRE,
REVERSE_INVALID_REQUEST, REVERSE_PARAM_ERROR, REVERSE_INVALID_TRANSACTIONID, REVERSE_SIGNERROR
(definite refusals, recall=N, the order unchanged) and REVERSE_USERPAYING (USERPAYING recall=Y,
only while the order is USERPAYING).

Amount scenarios act on an order's first micropay only; a RETURN_FAIL amount refuses every
micropay (nothing is created, so each one is a first). A scripted reply fault (SLOW ... HTTP_500)
or RETURN_FAIL_* acts on the next matching call of any endpoint, authinfo included (a
RETURN_FAIL call changes nothing); a scripted outcome (SUCCESS ... CLOSED) on the next matching
micropay; a scripted REVERSE_* on the next matching reverse.

Rules that hold whatever the scenario:
- The same out_trade_no is never charged twice: a repeated micropay of a paid order answers
  ORDERPAID, one with another total_fee OUT_TRADE_NO_USED.
- An auth_code is taken once: micropay of another out_trade_no with a code that created an order
  answers AUTH_CODE_ERROR (nothing created); the same order's repeat answers as above.
- micropay answers AUTH_CODE_INVALID (nothing created) for an auth_code that is not 18 digits
  starting 10-15, WeChat's payment-code rule; the simulated terminal's face codes ("13" and 16
  digits) pass.
- A reverse of an order WeChat Pay never saw (no micropay arrived, or it was lost: ORDERNOTEXIST)
  is refused by default, TRADE_ERROR recall=N, and closes nothing; `unknown_reverse` picks another
  answer (UnknownReverse.SUCCESS: SUCCESS recall=N, and the number is closed).
- A reverse more than 7 days (REVERSE_WINDOW) after the order's first micropay answers
  REVERSE_EXPIRE recall=N; a refund is the only way back.
- `seed_paid_order()` puts an earlier, unrelated paid order (another payer) under a number.
- `reverses()` records every reverse with its age: seconds from the order's first micropay
  arriving to the reverse arriving, on the simulator's clock.
- Refunds (`/secapi/pay/refund`, `/pay/refundquery`) are the RefundDesk's (sim/refunds.py: its
  rules and its scenarios, picked by refund_fee); `refunds` is their ledger. A reverse of an
  order with a refund is refused (TRADE_ERROR, recall=N): its money is already going back.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import enum
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import h11

from facepayd.clock import Clock
from facepayd.errors import ResponseNotTrusted
from facepayd.ops.logs import get_logger
from facepayd.sim.refunds import PaidOrder, RefundDesk, RefundRecord
from facepayd.sim.tls import TestPki
from facepayd.wxpay.models import Merchant
from facepayd.wxpay.sign import MD5, SIGN_TYPES, sign, verify
from facepayd.wxpay.xml import build_xml, parse_xml

__all__ = [
    "AMOUNT_SCENARIOS",
    "AUTHINFO_PATH",
    "CODE_SCENARIOS",
    "COUPON_FEE",
    "MICROPAY_PATH",
    "ORDERQUERY_PATH",
    "REFUNDQUERY_PATH",
    "REFUND_PATH",
    "REVERSE_PATH",
    "REVERSE_WINDOW",
    "OrderRecord",
    "ReverseRecord",
    "Scenario",
    "SimHttpsServer",
    "SimRequest",
    "SimResponse",
    "UnknownReverse",
    "WxPaySimulator",
]

_log = get_logger(__name__)

AUTHINFO_PATH = "/face/get_wxpayface_authinfo"
MICROPAY_PATH = "/pay/micropay"
ORDERQUERY_PATH = "/pay/orderquery"
REVERSE_PATH = "/secapi/pay/reverse"
REFUND_PATH = "/secapi/pay/refund"
REFUNDQUERY_PATH = "/pay/refundquery"


class Scenario(enum.StrEnum):
    """A scripted behaviour: an outcome of micropay, or a fault in the reply of any call."""

    SUCCESS = "SUCCESS"
    USERPAYING_THEN_SUCCESS = "USERPAYING_THEN_SUCCESS"
    USERPAYING_FOREVER = "USERPAYING_FOREVER"
    USERPAYING_THEN_PAYERROR = "USERPAYING_THEN_PAYERROR"
    REVERSE_RECALL = "REVERSE_RECALL"
    SYSTEMERROR_PAID = "SYSTEMERROR_PAID"
    SYSTEMERROR_NOT_PAID = "SYSTEMERROR_NOT_PAID"
    BANKERROR = "BANKERROR"
    NOTENOUGH = "NOTENOUGH"
    AUTHCODEEXPIRE = "AUTHCODEEXPIRE"
    # Refusals of a payment code (by its digits, see CODE_SCENARIOS): nothing is created.
    AUTH_CODE_INVALID = "AUTH_CODE_INVALID"
    AUTH_CODE_ERROR = "AUTH_CODE_ERROR"
    FORGED_SUCCESS = "FORGED_SUCCESS"
    # Paid with coupons (see the table): the answer's coupon and settlement fields.
    COUPON_CASH = "COUPON_CASH"
    COUPON_NO_CASH = "COUPON_NO_CASH"
    PROMOTION_DETAIL = "PROMOTION_DETAIL"
    # Reply faults: the call is processed as usual, only its answer is spoiled.
    SLOW = "SLOW"
    DROP_CONNECTION = "DROP_CONNECTION"
    MALFORMED_XML = "MALFORMED_XML"
    TAMPERED = "TAMPERED"
    UNSIGNED = "UNSIGNED"
    XML_BOMB = "XML_BOMB"
    DTD_ENTITY = "DTD_ENTITY"
    OVERSIZED = "OVERSIZED"
    WRONG_APPID = "WRONG_APPID"
    HTTP_500 = "HTTP_500"
    # Outcomes of micropay that leave the order in a state only orderquery shows.
    NOTPAY = "NOTPAY"
    CLOSED = "CLOSED"
    # Request refusals: return_code FAIL, nothing processed (any endpoint when scripted).
    RETURN_FAIL_SIGNERROR = "RETURN_FAIL_SIGNERROR"
    RETURN_FAIL_XML_FORMAT_ERROR = "RETURN_FAIL_XML_FORMAT_ERROR"
    RETURN_FAIL_PARAM_ERROR = "RETURN_FAIL_PARAM_ERROR"
    # Answers of reverse (scripted: the next reverse; by amount: every reverse of the order).
    REVERSE_TRADE_ERROR = "REVERSE_TRADE_ERROR"
    REVERSE_EXPIRE = "REVERSE_EXPIRE"
    REVERSE_INVALID_REQUEST = "REVERSE_INVALID_REQUEST"
    REVERSE_PARAM_ERROR = "REVERSE_PARAM_ERROR"
    REVERSE_INVALID_TRANSACTIONID = "REVERSE_INVALID_TRANSACTIONID"
    REVERSE_SIGNERROR = "REVERSE_SIGNERROR"
    REVERSE_USERPAYING = "REVERSE_USERPAYING"


class UnknownReverse(enum.StrEnum):
    """How a reverse of an order WeChat Pay never saw is answered."""

    # The reference's reverse section does not say. Its error table has no "order does not
    # exist" code (ORDERNOTEXIST is orderquery's); INVALID_TRANSACTIONID is about a bad
    # transaction_id parameter; TRADE_ERROR, "订单错误", is the one order-level refusal it lists.
    # A cautious reading is therefore a definite refusal, TRADE_ERROR with recall=N, that closes
    # nothing: a micropay still on its way would be charged, so a daemon may not take the
    # refusal as proof that the order is dead (only a query after its own in-flight window is).
    REFUSE = "REFUSE"
    # ORDERNOTEXIST recall=N: a code the reverse table does not list, for the daemon's handling
    # of unlisted codes that still say recall=N.
    NOT_EXIST = "NOT_EXIST"
    # SUCCESS recall=N, and the number is closed (a late micropay answers ORDERREVERSED): the
    # kind reading, which the simulator used to give and which hid orders that never ended.
    SUCCESS = "SUCCESS"


REVERSE_WINDOW = 7 * 24 * 3600.0  # "订单有7天的撤销有效期"; after it reverse says REVERSE_EXPIRE

# Scenario -> (return_msg); like the sim's own signature and XML checks, return_msg carries the
# code's name so a test can tell them apart.
RETURN_FAILS: Mapping[Scenario, str] = MappingProxyType(
    {
        Scenario.RETURN_FAIL_SIGNERROR: "SIGNERROR",
        Scenario.RETURN_FAIL_XML_FORMAT_ERROR: "XML_FORMAT_ERROR",
        Scenario.RETURN_FAIL_PARAM_ERROR: "PARAM_ERROR",
    }
)

# Scenario -> (err_code, err_code_des) of a definite reverse refusal, sent with recall=N.
REVERSE_REFUSALS: Mapping[Scenario, tuple[str, str]] = MappingProxyType(
    {
        Scenario.REVERSE_TRADE_ERROR: ("TRADE_ERROR", "订单错误"),
        Scenario.REVERSE_EXPIRE: ("REVERSE_EXPIRE", "订单无法撤销"),
        Scenario.REVERSE_INVALID_REQUEST: ("INVALID_REQUEST", "无效请求"),
        Scenario.REVERSE_PARAM_ERROR: ("PARAM_ERROR", "参数错误"),
        Scenario.REVERSE_INVALID_TRANSACTIONID: ("INVALID_TRANSACTIONID", "无效transaction_id"),
        Scenario.REVERSE_SIGNERROR: ("SIGNERROR", "签名错误"),
    }
)
REVERSE_ANSWERS = frozenset({*REVERSE_REFUSALS, Scenario.REVERSE_USERPAYING})

# WeChat's payment-code rule: 18 digits starting 10-15.
_AUTH_CODE = re.compile(r"1[0-5][0-9]{16}")


REPLY_FAULTS = frozenset(
    {
        Scenario.SLOW,
        Scenario.DROP_CONNECTION,
        Scenario.MALFORMED_XML,
        Scenario.TAMPERED,
        Scenario.UNSIGNED,
        Scenario.XML_BOMB,
        Scenario.DTD_ENTITY,
        Scenario.OVERSIZED,
        Scenario.WRONG_APPID,
        Scenario.HTTP_500,
    }
)

AMOUNT_SCENARIOS: Mapping[int, Scenario] = MappingProxyType(
    {
        101: Scenario.USERPAYING_THEN_SUCCESS,
        102: Scenario.USERPAYING_FOREVER,
        103: Scenario.USERPAYING_THEN_PAYERROR,
        104: Scenario.REVERSE_RECALL,
        105: Scenario.REVERSE_TRADE_ERROR,
        106: Scenario.REVERSE_EXPIRE,
        107: Scenario.REVERSE_USERPAYING,
        201: Scenario.SYSTEMERROR_PAID,
        202: Scenario.SYSTEMERROR_NOT_PAID,
        203: Scenario.BANKERROR,
        204: Scenario.NOTPAY,
        205: Scenario.CLOSED,
        301: Scenario.NOTENOUGH,
        302: Scenario.AUTHCODEEXPIRE,
        401: Scenario.FORGED_SUCCESS,
        501: Scenario.SLOW,
        502: Scenario.DROP_CONNECTION,
        503: Scenario.MALFORMED_XML,
        504: Scenario.TAMPERED,
        505: Scenario.UNSIGNED,
        506: Scenario.XML_BOMB,
        507: Scenario.DTD_ENTITY,
        508: Scenario.OVERSIZED,
        509: Scenario.WRONG_APPID,
        510: Scenario.HTTP_500,
        601: Scenario.RETURN_FAIL_SIGNERROR,
        602: Scenario.RETURN_FAIL_XML_FORMAT_ERROR,
        603: Scenario.RETURN_FAIL_PARAM_ERROR,
        701: Scenario.COUPON_CASH,
        702: Scenario.COUPON_NO_CASH,
        703: Scenario.PROMOTION_DETAIL,
    }
)

# A payment code's first six digits -> the scenario its first micropay plays.
CODE_SCENARIOS: Mapping[str, Scenario] = MappingProxyType(
    {
        "149901": Scenario.AUTHCODEEXPIRE,
        "149902": Scenario.AUTH_CODE_INVALID,
        "149903": Scenario.AUTH_CODE_ERROR,
        "149904": Scenario.USERPAYING_THEN_SUCCESS,
    }
)
# Refusals of the code itself: answered before an order exists, so nothing is created.
_CODE_REFUSALS: Mapping[Scenario, str] = MappingProxyType(
    {
        Scenario.AUTH_CODE_INVALID: "付款码检验错误",
        Scenario.AUTH_CODE_ERROR: "付款码参数错误",
    }
)
_COUPONS = frozenset({Scenario.COUPON_CASH, Scenario.COUPON_NO_CASH, Scenario.PROMOTION_DETAIL})
COUPON_FEE = 100  # fen, of every coupon scenario
PROMOTION_DETAIL = (
    '{"promotion_detail":[{"promotion_id":"109519","name":"单品惠-6","scope":"SINGLE",'
    '"type":"DISCOUNT","amount":100,"activity_id":"931386","wxpay_contribute":0,'
    '"merchant_contribute":100,"other_contribute":0,"goods_detail":[{"goods_id":"a_goods1",'
    '"goods_remark":"商品备注","quantity":1,"price":100,"discount_amount":100}]}]}'
)

_XML_BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
    b'<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">'
    b'<!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;"><!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">]>'
    b"<xml><return_code>SUCCESS</return_code><return_msg>&g;</return_msg></xml>"
)
_DTD_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<xml><return_code>SUCCESS</return_code><return_msg>&x;</return_msg></xml>"
)


# --- the generic HTTPS service ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One HTTP request as a route handler sees it."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    client_cert: bool  # the peer presented a certificate the sim CA verified

    def header(self, name: str) -> str:
        """The first value of header name (case-insensitive), or ""."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), "")


@dataclass(frozen=True, slots=True)
class SimResponse:
    """What a handler answers; delay and drop let it play a slow or vanishing backend."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    delay_seconds: float = 0.0  # on the simulator's clock, before anything is sent
    drop_connection: bool = False  # cut the connection instead of answering


Handler = Callable[[SimRequest], Awaitable[SimResponse]]


class SimHttpsServer:
    """A small HTTPS/1.1 server on loopback (asyncio + ssl + h11) with a method+path router."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_request_bytes: int = 1024 * 1024,
    ) -> None:
        self._ssl_context = ssl_context
        self._clock = clock
        self._host = host
        self._port = port
        self._max_request_bytes = max_request_bytes
        self._routes: dict[tuple[str, str], Handler] = {}
        self._prefix_routes: dict[tuple[str, str], Handler] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_accepted = 0  # completed TLS handshakes
        self.requests_served = 0

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve method+path (exact path, query ignored) with handler."""
        self._routes[(method.upper(), path)] = handler

    def add_prefix_route(self, method: str, prefix: str, handler: Handler) -> None:
        """Serve method and every path under prefix with handler (exact routes win)."""
        self._prefix_routes[(method.upper(), prefix)] = handler

    @property
    def port(self) -> int:
        """The bound port; valid after start()."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; returns once the socket is bound."""
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._port, ssl=self._ssl_context
        )

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections_accepted += 1
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        except (ConnectionError, ssl.SSLError, OSError):
            writer.transport.abort()
        else:
            await _close(writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        has_cert = bool(writer.get_extra_info("peercert"))
        conn = h11.Connection(h11.SERVER)
        while True:
            try:
                request = await self._read_request(conn, reader, has_cert)
            except h11.RemoteProtocolError:
                await _send(conn, writer, SimResponse(400, body=b"bad request"), self._clock)
                return
            except _TooLarge:
                await _send(conn, writer, SimResponse(413, body=b"request too large"), self._clock)
                return
            if request is None:
                return
            response = await self._dispatch(request)
            if response.delay_seconds > 0:
                await self._clock.sleep(response.delay_seconds)
            if response.drop_connection:
                writer.transport.abort()
                return
            await _send(conn, writer, response, self._clock)
            self.requests_served += 1
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, has_cert: bool
    ) -> SimRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_request_bytes:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode("ascii", "replace")
                path, _, query = target.partition("?")
                return SimRequest(
                    method=head.method.decode("ascii", "replace"),
                    path=path,
                    query=query,
                    headers=tuple(
                        (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in head.headers
                    ),
                    body=bytes(body),
                    client_cert=has_cert,
                )
            else:  # ConnectionClosed, or PAUSED which cannot happen before a full request
                return None

    async def _dispatch(self, request: SimRequest) -> SimResponse:
        handler = self._routes.get((request.method, request.path)) or self._prefix_handler(request)
        if handler is None:
            known = any(path == request.path for _, path in self._routes)
            return SimResponse(405 if known else 404, body=b"no such route")
        try:
            return await handler(request)
        except Exception:  # noqa: BLE001 - a broken handler answers 500, the server goes on
            _log.exception("simulator handler failed", path=request.path)
            return SimResponse(500, body=b"simulator handler failed")

    def _prefix_handler(self, request: SimRequest) -> Handler | None:
        matches = [
            (len(prefix), handler)
            for (method, prefix), handler in self._prefix_routes.items()
            if method == request.method and request.path.startswith(prefix)
        ]
        return max(matches, key=lambda match: match[0])[1] if matches else None


class _TooLarge(Exception):
    pass


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, response: SimResponse, clock: Clock
) -> None:
    headers = [
        *response.headers,
        # As WeChat Pay's servers do (RFC 9110 requires it); `facepay doctor` reads clock skew.
        ("Date", email.utils.formatdate(clock.time(), usegmt=True)),
        ("Content-Length", str(len(response.body))),
        ("Server", "facepay-wxpay-sim"),
    ]
    data = conn.send(h11.Response(status_code=response.status, headers=headers))
    data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
    data += conn.send(h11.EndOfMessage()) or b""
    writer.write(data)
    await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        # A peer that never answers the TLS close_notify must not hold the task.
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
        writer.transport.abort()


# --- WeChat Pay state and service ------------------------------------------------------------


class OrderState(enum.StrEnum):
    """Where a simulated order really stands (not what its last answer claimed)."""

    SUCCESS = "SUCCESS"
    USERPAYING = "USERPAYING"
    PAYERROR = "PAYERROR"
    REVOKED = "REVOKED"
    NOTPAY = "NOTPAY"
    CLOSED = "CLOSED"
    NOT_EXIST = "NOT_EXIST"  # the micropay was lost inside WeChat Pay: queries say ORDERNOTEXIST


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """A snapshot of one ledger entry, for tests and chaos checks."""

    out_trade_no: str
    total_fee: int
    state: OrderState
    charged: bool  # money is held now (paid, not refunded)
    charge_count: int  # times money was taken; more than 1 is a double charge
    refunded: bool
    micropay_calls: int
    query_calls: int
    reverse_calls: int
    transaction_id: str
    scenario: Scenario | None
    openid: str = ""
    foreign: bool = False  # seeded with seed_paid_order(): someone else's earlier order
    first_micropay_at: float | None = None  # simulator clock; None if no micropay ever arrived


@dataclass(frozen=True, slots=True)
class ReverseRecord:
    """One reverse as it arrived and what it was answered (see WxPaySimulator.reverses)."""

    out_trade_no: str
    transaction_id: str
    arrived_at: float  # on the simulator's clock
    # Seconds from the order's first micropay arriving to this reverse arriving; None when no
    # micropay of the order ever arrived (a foreign seeded order counts from its seeding).
    age: float | None
    # "SUCCESS", the err_code of a result_code FAIL, or "FAIL" for a return_code FAIL (the
    # request itself refused: bad signature, no client certificate, ...).
    answered: str
    recall: bool  # the answer said recall=Y
    fault: Scenario | None = None  # a scripted reply fault spoiled the answer on its way


@dataclass(slots=True)
class _Order:
    out_trade_no: str
    total_fee: int
    transaction_id: str
    openid: str
    attach: str = ""
    device_info: str = ""
    first_micropay_at: float | None = None
    foreign: bool = False
    state: OrderState = OrderState.NOT_EXIST
    charge_count: int = 0
    refunded: bool = False
    paid_at: float = 0.0
    settle_at: float | None = None
    settle_to: OrderState = OrderState.SUCCESS
    reverse_recalls_left: int = 0
    micropay_calls: int = 0
    query_calls: int = 0
    reverse_calls: int = 0
    scenario: Scenario | None = None
    coupons: Scenario | None = None  # a COUPON_* / PROMOTION_DETAIL scenario paid it
    sub_openid: str = ""

    def snapshot(self) -> OrderRecord:
        return OrderRecord(
            out_trade_no=self.out_trade_no,
            total_fee=self.total_fee,
            state=self.state,
            charged=self.charge_count > 0 and not self.refunded,
            charge_count=self.charge_count,
            refunded=self.refunded,
            micropay_calls=self.micropay_calls,
            query_calls=self.query_calls,
            reverse_calls=self.reverse_calls,
            transaction_id=self.transaction_id,
            scenario=self.scenario,
            openid=self.openid,
            foreign=self.foreign,
            first_micropay_at=self.first_micropay_at,
        )


@dataclass(slots=True)
class _Script:
    target: str
    scenario: Scenario
    times: int


@dataclass(slots=True)
class _Answer:
    """Business fields of a reply plus how to spoil it."""

    fields: dict[str, str] = field(default_factory=dict)
    fault: Scenario | None = None
    forged: bool = False  # sign with a key that is not the merchant's


class WxPaySimulator:
    """Simulated WeChat Pay v2: authinfo, micropay, orderquery and reverse over real HTTPS."""

    def __init__(
        self,
        *,
        merchant: Merchant,
        api_key: str,
        pki: TestPki,
        clock: Clock,
        host: str = "127.0.0.1",
        port: int = 0,
        authinfo_expires_in: int = 7200,
        userpaying_seconds: float = 10.0,
        slow_seconds: float = 60.0,
        reverse_recalls: int = 2,
        oversized_bytes: int = 256 * 1024,
        unknown_reverse: UnknownReverse = UnknownReverse.REFUSE,
        reverse_log_size: int = 10_000,
        refund_processing_seconds: float = 2.0,
    ) -> None:
        self._merchant = merchant
        self._api_key = api_key
        self._pki = pki
        self._clock = clock
        self._host = host
        self.authinfo_expires_in = authinfo_expires_in
        self.userpaying_seconds = userpaying_seconds
        self.slow_seconds = slow_seconds
        self.reverse_recalls = reverse_recalls
        self.oversized_bytes = oversized_bytes
        # How a reverse of an order never seen is answered; tests may change it at any time.
        self.unknown_reverse = unknown_reverse
        self._reverses: collections.deque[ReverseRecord] = collections.deque(
            maxlen=reverse_log_size
        )
        self._orders: dict[str, _Order] = {}
        # Each auth_code (scanned or face) and the order it paid: WeChat takes a code once.
        self._used_codes: dict[str, str] = {}
        self._authinfos: dict[str, float] = {}
        self._issued: list[str] = []
        self._authinfo_fetches = 0
        self._scripts: list[_Script] = []
        self.signature_failures = 0
        self.unverified_secapi_calls = 0
        # Called with (path, request fields) once a call has acted on the ledger and before its
        # answer leaves: chaos tests kill the daemon right there.
        self.observers: list[Callable[[str, Mapping[str, str]], None]] = []
        # Who a face_code belongs to, when a simulated terminal issued it: paid as that user.
        self.openid_of_face_code: Callable[[str], str | None] = lambda _face_code: None
        self.refund_desk = RefundDesk(clock, processing_seconds=refund_processing_seconds)
        self._server = SimHttpsServer(_server_context(pki), clock, host=host, port=port)
        for path, endpoint in (
            (AUTHINFO_PATH, self._authinfo),
            (MICROPAY_PATH, self._micropay),
            (ORDERQUERY_PATH, self._orderquery),
            (REVERSE_PATH, self._reverse),
            (REFUND_PATH, self._refund),
            (REFUNDQUERY_PATH, self._refundquery),
        ):
            self._server.add_route("POST", path, self._v2(path, endpoint))

    # --- lifecycle and wiring

    async def start(self) -> None:
        """Start serving HTTPS on the configured host and port."""
        await self._server.start()

    async def stop(self) -> None:
        """Stop serving and cut open connections."""
        await self._server.stop()

    @property
    def base_url(self) -> str:
        """https://127.0.0.1:PORT, the api_base_url for the client."""
        return f"https://{self._host}:{self._server.port}"

    @property
    def authinfo_url(self) -> str:
        """The full get_wxpayface_authinfo URL."""
        return self.base_url + AUTHINFO_PATH

    @property
    def ca_file(self) -> str:
        """The CA that signed the server certificate, for the client's trust store."""
        return str(self._pki.ca_cert)

    @property
    def connections_accepted(self) -> int:
        """TLS handshakes completed; stays low when clients keep connections alive."""
        return self._server.connections_accepted

    @property
    def requests_served(self) -> int:
        """HTTP answers sent."""
        return self._server.requests_served

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Register another endpoint (e.g. v3 JSON) on the same HTTPS server."""
        self._server.add_route(method, path, handler)

    def add_prefix_route(self, method: str, prefix: str, handler: Handler) -> None:
        """Register endpoints under a path prefix on the same HTTPS server."""
        self._server.add_prefix_route(method, prefix, handler)

    # --- scenarios

    def script(self, target: str, scenario: Scenario, *, times: int = 1) -> None:
        """Play scenario on the next `times` matching calls; target is an out_trade_no or "*"."""
        self._scripts.append(_Script(target, scenario, times))

    def clear_scripts(self, target: str | None = None) -> None:
        """Forget every pending script, or only those aimed at target."""
        if target is None:
            self._scripts.clear()
        else:
            self._scripts[:] = [s for s in self._scripts if s.target != target]

    # --- authinfo state, for the simulated terminal

    @property
    def authinfo_fetches(self) -> int:
        """How many authinfos were issued."""
        return self._authinfo_fetches

    def is_authinfo_valid(self, authinfo: str) -> bool:
        """Whether authinfo was issued here, is not revoked and has not expired."""
        expires_at = self._authinfos.get(authinfo)
        return expires_at is not None and self._clock.time() < expires_at

    def issued_authinfos(self) -> tuple[str, ...]:
        """Every authinfo ever issued here, revoked and expired ones included (leak checks)."""
        return tuple(self._issued)

    def revoke_authinfo(self, authinfo: str | None = None) -> None:
        """Invalidate one issued authinfo, or all of them."""
        if authinfo is None:
            self._authinfos.clear()
        else:
            self._authinfos.pop(authinfo, None)

    # --- ledger

    @property
    def ledger(self) -> dict[str, OrderRecord]:
        """Every order by out_trade_no, settled to the current time."""
        for order in self._orders.values():
            self._settle(order)
        return {k: o.snapshot() for k, o in self._orders.items()}

    def order(self, out_trade_no: str) -> OrderRecord | None:
        """One order's ledger entry, or None."""
        order = self._orders.get(out_trade_no)
        if order is None:
            return None
        self._settle(order)
        return order.snapshot()

    def confirm_now(self, out_trade_no: str) -> None:
        """The customer confirms now: a USERPAYING order settles as scripted at once."""
        order = self._orders.get(out_trade_no)
        if order is None or order.state is not OrderState.USERPAYING or order.settle_at is None:
            raise KeyError(f"{out_trade_no}: no USERPAYING order waiting to settle")
        order.settle_at = self._clock.time()
        self._settle(order)

    def seed_paid_order(
        self,
        out_trade_no: str,
        *,
        total_fee: int,
        openid: str | None = None,
        age: float = 3600.0,
        attach: str = "",
    ) -> OrderRecord:
        """Put an earlier, unrelated paid order (another payer) under out_trade_no."""
        if out_trade_no in self._orders:
            raise ValueError(f"{out_trade_no} is already in the ledger")
        if total_fee <= 0:
            raise ValueError("total_fee must be a positive number of fen")
        paid_at = self._clock.time() - age
        order = _Order(
            out_trade_no=out_trade_no,
            total_fee=total_fee,
            transaction_id=_transaction_id(),
            openid=openid or "oForeign" + secrets.token_hex(10),
            attach=attach,
            first_micropay_at=paid_at,
            foreign=True,
        )
        self._charge(order, paid_at)
        self._orders[out_trade_no] = order
        return order.snapshot()

    @property
    def refunds(self) -> dict[str, RefundRecord]:
        """Every refund by out_refund_no (see sim/refunds.py)."""
        return self.refund_desk.ledger

    def reverses(self, out_trade_no: str | None = None) -> tuple[ReverseRecord, ...]:
        """Every reverse recorded (oldest first, at most reverse_log_size), or one order's."""
        return tuple(r for r in self._reverses if out_trade_no in (None, r.out_trade_no))

    def clear_reverses(self) -> None:
        """Forget the recorded reverses."""
        self._reverses.clear()

    # --- service

    def _v2(
        self, path: str, endpoint: Callable[[dict[str, str], Scenario | None], _Answer]
    ) -> Handler:
        async def handle(request: SimRequest) -> SimResponse:
            fields: dict[str, str] = {}
            arrived_at = self._clock.time()
            answer = self._refusal(path, request, fields)
            # Measured before the call acts: a reverse may create a ledger entry.
            age = self._age(fields, arrived_at) if path == REVERSE_PATH else None
            if answer is None:
                scripted = self._take_script(path, fields.get("out_trade_no", ""))
                refused = RETURN_FAILS.get(scripted) if scripted is not None else None
                if refused is not None:
                    answer = _return_fail(refused)
                else:
                    answer = endpoint(fields, scripted)
                    for observer in list(self.observers):
                        observer(path, fields)
                    if scripted in REPLY_FAULTS:
                        answer.fault = scripted
            if path == REVERSE_PATH:
                self._record_reverse(fields, arrived_at, age, answer)
            return self._reply(fields, answer, fields.get("sign_type") or MD5)

        return handle

    def _refusal(self, path: str, request: SimRequest, fields: dict[str, str]) -> _Answer | None:
        """A return_code FAIL for a request WeChat Pay would not process; fills fields."""
        try:
            parsed: dict[str, str] | None = parse_xml(request.body, len(request.body))
        except ResponseNotTrusted:
            parsed = None
        fields.update(parsed or {})  # for the reverse record, even of a refused request
        if path.startswith("/secapi/") and not request.client_cert:
            self.unverified_secapi_calls += 1
            return _return_fail("certificate required: no verified client certificate")
        if parsed is None:
            return _return_fail("XML_FORMAT_ERROR")
        sign_type = fields.get("sign_type") or MD5
        if sign_type not in SIGN_TYPES or not verify(fields, self._api_key, sign_type):
            self.signature_failures += 1
            return _return_fail("SIGNERROR")
        if (fields.get("appid"), fields.get("mch_id")) != (
            self._merchant.appid,
            self._merchant.mch_id,
        ):
            return _return_fail("APPID_MCHID_NOT_MATCH")
        return None

    def _take_script(self, path: str, out_trade_no: str) -> Scenario | None:
        for script in self._scripts:
            if script.target not in ("*", out_trade_no):
                continue
            if not _script_applies(script.scenario, path):
                continue
            script.times -= 1
            if script.times <= 0:
                self._scripts.remove(script)
            return script.scenario
        return None

    def _authinfo(self, fields: dict[str, str], _scripted: Scenario | None) -> _Answer:
        required = ("store_id", "store_name", "device_id", "rawdata", "now", "version", "nonce_str")
        if any(not fields.get(name) for name in required) or fields.get("version") != "1":
            return _Answer({"return_code": "FAIL", "return_msg": "PARAM_ERROR"})
        token = secrets.token_urlsafe(48)
        self._authinfos[token] = self._clock.time() + self.authinfo_expires_in
        self._issued.append(token)
        self._authinfo_fetches += 1
        return _Answer({"authinfo": token, "expires_in": str(self.authinfo_expires_in)})

    def _micropay(self, fields: dict[str, str], scripted: Scenario | None) -> _Answer:
        out_trade_no = fields.get("out_trade_no", "")
        total_fee = fields.get("total_fee", "")
        for name in ("out_trade_no", "total_fee", "body", "auth_code", "spbill_create_ip"):
            if not fields.get(name):
                return _result_fail("LACK_PARAMS", f"missing {name}")
        if not total_fee.isdigit() or int(total_fee) <= 0:
            return _result_fail("PARAM_ERROR", "total_fee must be a positive integer")
        fee = int(total_fee)
        if not _AUTH_CODE.fullmatch(fields["auth_code"]):
            # Checked before the order exists, as the code is: nothing is created.
            return _result_fail("AUTH_CODE_INVALID", "付款码检验错误")
        by_code = CODE_SCENARIOS.get(fields["auth_code"][:6])
        order = self._orders.get(out_trade_no)
        used_by = self._used_codes.get(fields["auth_code"])
        if used_by is not None and used_by != out_trade_no:
            # WeChat: each payment code pays once; the customer must show a fresh one.
            return _result_fail("AUTH_CODE_ERROR", "每个付款码只能使用一次")
        refusal_des = _CODE_REFUSALS.get(by_code) if by_code is not None else None
        if order is None and refusal_des is not None:
            return _result_fail(str(by_code), refusal_des)
        if order is None:
            by_amount = scripted is None or scripted in REPLY_FAULTS
            refusal = RETURN_FAILS.get(AMOUNT_SCENARIOS.get(fee, Scenario.SUCCESS))
            if by_amount and refusal is not None:
                return _return_fail(refusal)
            order = _Order(
                out_trade_no=out_trade_no,
                total_fee=fee,
                transaction_id=_transaction_id(),
                openid=self.openid_of_face_code(fields["auth_code"])
                or "oSim" + secrets.token_hex(12),
                attach=fields.get("attach", ""),
                device_info=fields.get("device_info", ""),
                # Service-provider mode: the payer also has an openid under the sub appid.
                sub_openid="oSub" + secrets.token_hex(12) if fields.get("sub_appid") else "",
            )
            self._orders[out_trade_no] = order
            self._used_codes[fields["auth_code"]] = out_trade_no
        if order.first_micropay_at is None:
            order.first_micropay_at = self._clock.time()
        order.micropay_calls += 1
        # A scripted reply fault spoils the answer only (see _v2); the amount still decides.
        scenario = None if scripted in REPLY_FAULTS else scripted
        if scenario is None and order.micropay_calls == 1:
            scenario = by_code or AMOUNT_SCENARIOS.get(fee, Scenario.SUCCESS)
        if order.scenario is None and not order.foreign:  # another's order keeps its own way
            order.scenario = scenario
        self._settle(order)
        # A number already used for another amount is another order (an order closed by an
        # unknown-order reverse has no amount yet, and answers ORDERREVERSED below).
        if order.total_fee and order.total_fee != fee:
            return _result_fail("OUT_TRADE_NO_USED", "same out_trade_no, different order")
        repeated = {
            OrderState.SUCCESS: ("ORDERPAID", "order already paid"),
            OrderState.REVOKED: ("ORDERREVERSED", "order reversed"),
            OrderState.CLOSED: ("ORDERCLOSED", "order closed"),
            OrderState.USERPAYING: ("USERPAYING", "waiting for the user to confirm"),
        }.get(order.state)
        if repeated is not None:
            return _result_fail(*repeated)
        return self._play(order, scenario or Scenario.SUCCESS)

    def _play(self, order: _Order, scenario: Scenario) -> _Answer:
        """Run a micropay outcome on an order that holds no money yet."""
        now = self._clock.time()
        outcome = Scenario.SUCCESS if scenario in REPLY_FAULTS else scenario
        fault = scenario if scenario in REPLY_FAULTS else None
        if outcome in _COUPONS:
            order.coupons = outcome
            outcome = Scenario.SUCCESS
        if outcome is Scenario.SUCCESS:
            self._charge(order, now)
            return _Answer(self._paid_fields(order), fault=fault)
        if outcome in (
            Scenario.USERPAYING_THEN_SUCCESS,
            Scenario.USERPAYING_FOREVER,
            Scenario.USERPAYING_THEN_PAYERROR,
            Scenario.REVERSE_RECALL,
            *REVERSE_ANSWERS,
        ):
            order.state = OrderState.USERPAYING
            order.settle_at = None
            if outcome is Scenario.USERPAYING_THEN_SUCCESS:
                order.settle_at, order.settle_to = now + self.userpaying_seconds, OrderState.SUCCESS
            elif outcome in (Scenario.USERPAYING_THEN_PAYERROR, Scenario.REVERSE_USERPAYING):
                order.settle_at, order.settle_to = (
                    now + self.userpaying_seconds,
                    OrderState.PAYERROR,
                )
            elif outcome is Scenario.REVERSE_RECALL:
                order.reverse_recalls_left = self.reverse_recalls
            return _result_fail("USERPAYING", "waiting for the user to confirm")
        if outcome is Scenario.SYSTEMERROR_PAID:
            self._charge(order, now)
            return _result_fail("SYSTEMERROR", "system error")
        if outcome is Scenario.SYSTEMERROR_NOT_PAID:
            order.state = OrderState.NOT_EXIST
            return _result_fail("SYSTEMERROR", "system error")
        if outcome in (Scenario.NOTPAY, Scenario.CLOSED):
            order.state = OrderState(str(outcome))
            return _result_fail("SYSTEMERROR", "system error")
        if outcome is Scenario.FORGED_SUCCESS:
            order.state = OrderState.PAYERROR
            fake = _Order(order.out_trade_no, order.total_fee, order.transaction_id, order.openid)
            fake.paid_at = now
            return _Answer(self._paid_fields(fake), forged=True)
        order.state = OrderState.PAYERROR
        descriptions = {
            Scenario.BANKERROR: "bank system error",
            Scenario.NOTENOUGH: "balance not enough",
            Scenario.AUTHCODEEXPIRE: "auth code expired",
        }
        return _result_fail(str(outcome), descriptions.get(outcome, "failed"))

    def _orderquery(self, fields: dict[str, str], _scripted: Scenario | None) -> _Answer:
        out_trade_no = fields.get("out_trade_no", "")
        transaction_id = fields.get("transaction_id", "")
        if not out_trade_no and not transaction_id:
            return _result_fail("PARAM_ERROR", "out_trade_no or transaction_id required")
        order = self._orders.get(out_trade_no) if out_trade_no else None
        if order is None and transaction_id:
            order = next(
                (o for o in self._orders.values() if o.transaction_id == transaction_id), None
            )
        if order is None or order.state is OrderState.NOT_EXIST:
            if order is not None:
                order.query_calls += 1
            return _result_fail("ORDERNOTEXIST", "order does not exist")
        order.query_calls += 1
        self._settle(order)
        answer = {
            "result_code": "SUCCESS",
            "trade_state": str(order.state),
            "trade_state_desc": _TRADE_STATE_DESC[order.state],
            "out_trade_no": order.out_trade_no,
            "attach": order.attach,
        }
        if order.state is OrderState.SUCCESS:
            answer.update(self._paid_fields(order, query=True))
        return _Answer(answer)

    def _reverse(self, fields: dict[str, str], scripted: Scenario | None) -> _Answer:
        out_trade_no = fields.get("out_trade_no", "")
        transaction_id = fields.get("transaction_id", "")
        if not out_trade_no and not transaction_id:
            return _reverse_answer("PARAM_ERROR", "out_trade_no or transaction_id required")
        order = self._find(out_trade_no, transaction_id)
        if order is None and transaction_id:
            return _reverse_answer("INVALID_TRANSACTIONID", "无效transaction_id")
        if order is not None:
            order.reverse_calls += 1
            self._settle(order)
        if order is None or order.state is OrderState.NOT_EXIST:
            return self._reverse_unknown(out_trade_no, order)
        planned = scripted or (order.scenario if order.scenario in REVERSE_ANSWERS else None)
        refusal = REVERSE_REFUSALS.get(planned) if planned is not None else None
        if refusal is not None:
            return _reverse_answer(*refusal)
        if self.refund_desk.has_refunds(order.out_trade_no):
            return _reverse_answer("TRADE_ERROR", "订单已退款")
        # The reference: "用户正在支付中的订单不允许撤销". Only in this scenario: WeChat does let
        # an order waiting for a password be reversed, which is how a stalled USERPAYING ends.
        if planned is Scenario.REVERSE_USERPAYING and order.state is OrderState.USERPAYING:
            return _reverse_answer("USERPAYING", "用户支付中", recall=True)
        first = order.first_micropay_at
        if first is not None and self._clock.time() - first >= REVERSE_WINDOW:
            return _reverse_answer(*REVERSE_REFUSALS[Scenario.REVERSE_EXPIRE])
        if order.reverse_recalls_left > 0:
            order.reverse_recalls_left -= 1
            return _reverse_answer("SYSTEMERROR", "system error, call again", recall=True)
        if order.state is OrderState.SUCCESS:
            order.refunded = True
        # A closed order holds nothing and stays closed; any other becomes REVOKED.
        if order.state is not OrderState.CLOSED:
            order.state = OrderState.REVOKED
        order.settle_at = None
        return _Answer({"result_code": "SUCCESS", "recall": "N"})

    def _refund(self, fields: dict[str, str], _scripted: Scenario | None) -> _Answer:
        answer, dropped = self.refund_desk.refund(fields, self._paid_order)
        return _Answer(answer, fault=Scenario.DROP_CONNECTION if dropped else None)

    def _refundquery(self, fields: dict[str, str], _scripted: Scenario | None) -> _Answer:
        answer, _ = self.refund_desk.refundquery(fields, self._paid_order)
        return _Answer(answer)

    def _paid_order(self, out_trade_no: str, transaction_id: str) -> PaidOrder | None:
        """The refund desk's view of a ledger order (transaction_id takes priority)."""
        order = self._find(out_trade_no, transaction_id)
        if order is None or order.state is OrderState.NOT_EXIST:
            return None
        self._settle(order)
        paid = order.state is OrderState.SUCCESS and not order.refunded
        return PaidOrder(
            order.out_trade_no, order.transaction_id, order.total_fee, paid, order.paid_at
        )

    def _reverse_unknown(self, out_trade_no: str, order: _Order | None) -> _Answer:
        """Answer a reverse of an order WeChat Pay has no record of, as unknown_reverse says."""
        if self.unknown_reverse is UnknownReverse.NOT_EXIST:
            return _reverse_answer("ORDERNOTEXIST", "order does not exist")
        if self.unknown_reverse is UnknownReverse.REFUSE:
            return _reverse_answer("TRADE_ERROR", "订单错误")
        if order is None:
            # Reversing an order never seen closes its number: a late micropay is refused.
            order = _Order(out_trade_no, 0, "", "", state=OrderState.REVOKED, reverse_calls=1)
            self._orders[out_trade_no] = order
        order.state = OrderState.REVOKED
        return _Answer({"result_code": "SUCCESS", "recall": "N"})

    def _find(self, out_trade_no: str, transaction_id: str) -> _Order | None:
        """The order a reverse names: by transaction_id when given (it takes priority)."""
        if transaction_id:
            return next(
                (o for o in self._orders.values() if o.transaction_id == transaction_id), None
            )
        return self._orders.get(out_trade_no)

    def _age(self, fields: Mapping[str, str], arrived_at: float) -> float | None:
        order = self._find(fields.get("out_trade_no", ""), fields.get("transaction_id", ""))
        if order is None or order.first_micropay_at is None:
            return None
        return arrived_at - order.first_micropay_at

    def _record_reverse(
        self, fields: Mapping[str, str], arrived_at: float, age: float | None, answer: _Answer
    ) -> None:
        reply = answer.fields
        if reply.get("return_code") == "FAIL":
            answered = "FAIL"
        elif reply.get("result_code") == "SUCCESS":
            answered = "SUCCESS"
        else:
            answered = reply.get("err_code", "")
        self._reverses.append(
            ReverseRecord(
                out_trade_no=fields.get("out_trade_no", ""),
                transaction_id=fields.get("transaction_id", ""),
                arrived_at=arrived_at,
                age=age,
                answered=answered,
                recall=reply.get("recall") == "Y",
                fault=answer.fault,
            )
        )

    # --- helpers

    def _settle(self, order: _Order) -> None:
        """Apply a pending USERPAYING outcome whose time has come."""
        due = order.settle_at
        if order.state is OrderState.USERPAYING and due is not None and self._clock.time() >= due:
            order.settle_at = None
            if order.settle_to is OrderState.SUCCESS:
                self._charge(order, self._clock.time())
            else:
                order.state = order.settle_to

    @staticmethod
    def _charge(order: _Order, now: float) -> None:
        if order.charge_count:
            raise AssertionError(f"simulator bug: {order.out_trade_no} charged twice")
        order.state = OrderState.SUCCESS
        order.charge_count += 1
        order.paid_at = now

    @staticmethod
    def _paid_fields(order: _Order, *, query: bool = False) -> dict[str, str]:
        """A paid answer; coupon rows only in orderquery's (micropay's table has none)."""
        coupon = min(COUPON_FEE, order.total_fee) if order.coupons else 0
        fields = {
            "result_code": "SUCCESS",
            "openid": order.openid,
            "sub_openid": order.sub_openid,
            "is_subscribe": "N",
            "trade_type": "MICROPAY",
            "bank_type": "OTHERS",
            "total_fee": str(order.total_fee),
            "fee_type": "CNY",
            "cash_fee": str(order.total_fee - coupon),
            "cash_fee_type": "CNY",
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no,
            "attach": order.attach,
            "device_info": order.device_info,
            # WeChat Pay reports times in China Standard Time (UTC+8).
            "time_end": time.strftime("%Y%m%d%H%M%S", time.gmtime(order.paid_at + 8 * 3600)),
        }
        if order.coupons is None:
            return fields
        no_cash = order.coupons is not Scenario.COUPON_CASH
        fields["coupon_fee"] = str(coupon)
        if no_cash:
            fields["settlement_total_fee"] = str(order.total_fee - coupon)
        if order.coupons is Scenario.PROMOTION_DETAIL:
            fields["promotion_detail"] = PROMOTION_DETAIL
        if query:
            fields.update(
                coupon_count="1",
                coupon_type_0="NO_CASH" if no_cash else "CASH",
                coupon_id_0="2000000000" + order.transaction_id[-10:],
                coupon_fee_0=str(coupon),
            )
        return fields

    def _reply(self, request: Mapping[str, str], answer: _Answer, sign_type: str) -> SimResponse:
        if answer.fields.get("return_code") == "FAIL":
            return _fail(answer.fields.get("return_msg", "FAIL"))
        fields = {
            "return_code": "SUCCESS",
            "return_msg": "OK",
            "appid": request.get("appid", ""),
            "mch_id": request.get("mch_id", ""),
            "sub_appid": request.get("sub_appid", ""),
            "sub_mch_id": request.get("sub_mch_id", ""),
            "nonce_str": secrets.token_hex(16),
            **answer.fields,
        }
        fault = answer.fault
        if fault is Scenario.WRONG_APPID:
            fields["appid"] = "wx00000000forgedapp"
        if fault is Scenario.OVERSIZED:
            fields["attach"] = "A" * self.oversized_bytes
        fields = {k: v for k, v in fields.items() if v}
        key = secrets.token_hex(16) if answer.forged else self._api_key
        if fault is not Scenario.UNSIGNED:
            fields["sign"] = sign(fields, key, sign_type)
        if fault is Scenario.TAMPERED:
            fields["return_msg"] = "OK."
            if "authinfo" in fields:
                fields["authinfo"] = secrets.token_urlsafe(48)
            if "total_fee" in fields:
                fields["total_fee"] = str(int(fields["total_fee"]) + 1)
        body = build_xml(fields)
        headers = (("Content-Type", "text/xml; charset=utf-8"),)
        if fault is Scenario.SLOW:
            return SimResponse(headers=headers, body=body, delay_seconds=self.slow_seconds)
        if fault is Scenario.DROP_CONNECTION:
            return SimResponse(drop_connection=True)
        if fault is Scenario.HTTP_500:
            return SimResponse(500, body=b"internal server error")
        if fault is Scenario.MALFORMED_XML:
            body = body[: len(body) // 2]
        elif fault is Scenario.XML_BOMB:
            body = _XML_BOMB
        elif fault is Scenario.DTD_ENTITY:
            body = _DTD_ENTITY
        return SimResponse(headers=headers, body=body)


_TRADE_STATE_DESC: Mapping[OrderState, str] = MappingProxyType(
    {
        OrderState.SUCCESS: "支付成功",
        OrderState.USERPAYING: "用户支付中",
        OrderState.PAYERROR: "支付失败",
        OrderState.REVOKED: "已撤销",
        OrderState.NOTPAY: "未支付",
        OrderState.CLOSED: "已关闭",
        OrderState.NOT_EXIST: "订单不存在",
    }
)


def _fail(message: str) -> SimResponse:
    """A return_code FAIL answer; like WeChat Pay's, it is not signed."""
    body = build_xml({"return_code": "FAIL", "return_msg": message})
    return SimResponse(headers=(("Content-Type", "text/xml; charset=utf-8"),), body=body)


def _return_fail(message: str) -> _Answer:
    """A request refused as a whole: return_code FAIL, return_msg, no result fields, no sign."""
    return _Answer({"return_code": "FAIL", "return_msg": message})


def _result_fail(err_code: str, description: str) -> _Answer:
    return _Answer({"result_code": "FAIL", "err_code": err_code, "err_code_des": description})


def _reverse_answer(err_code: str, description: str, *, recall: bool = False) -> _Answer:
    answer = _result_fail(err_code, description)
    answer.fields["recall"] = "Y" if recall else "N"
    return answer


def _transaction_id() -> str:
    return "4200" + "".join(secrets.choice("0123456789") for _ in range(24))


def _script_applies(scenario: Scenario, path: str) -> bool:
    """Which calls a scripted scenario acts on (see the module docstring)."""
    if scenario in REPLY_FAULTS or scenario in RETURN_FAILS:
        return True
    if scenario in REVERSE_ANSWERS:
        return path == REVERSE_PATH
    return path == MICROPAY_PATH


def _server_context(pki: TestPki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.server_cert, pki.server_key)
    # Optional so /pay/* works without a certificate; /secapi/* checks that one was verified.
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cafile=pki.ca_cert)
    return context
