"""Fuzz every TerminalService RPC over real gRPC on a Unix socket, over the real domain objects.

The domain is tests/unit/face_world.py's: the simulated terminal on TCP, a real journal file, one
ManualClock. PayScore is served twice, configured (a v3 client against the simulator over HTTPS)
and not. Every example must get a status a POS can act on: never UNKNOWN or INTERNAL, every
INVALID_ARGUMENT naming a field (the method, for bytes that do not decode), and an
INVALID_ARGUMENT request must neither open the face UI nor write to the journal.

FACEPAY_FUZZ_EXAMPLES sets the total number of examples (`make fuzz` runs 20,000).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import math
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import descriptor, message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd.face.lifecycle import State
from facepayd.ops.config import Config
from facepayd.payments.refunds import RefundService, RefundTimings
from facepayd.payscore.service import PayScoreService
from facepayd.rpc.server import MAX_REQUEST_BYTES, SERVICE_NAME, RpcServer
from facepayd.rpc.service import Domain, TerminalService
from facepayd.rpc.status import DOMAIN
from facepayd.sim.payscore import PayScoreSimulator
from facepayd.sim.tls import generate_test_pki
from facepayd.sim.wxpay import WxPaySimulator
from facepayd.wxpay.models import (
    Merchant,
    RefundOrder,
    RefundOutcome,
    RefundQueryResult,
    RefundResult,
    RefundStatus,
)
from facepayd.wxpay.v3 import PayScoreClient
from tests.unit.face_world import CAPTURE, MERCHANT, World, face_world

METHODS = {m.name: m for m in pb.DESCRIPTOR.services_by_name["TerminalService"].methods}
PAYSCORE_RPCS = (
    "CheckPayScoreStatus",
    "CreateServiceOrder",
    "CompleteServiceOrder",
    "SyncServiceOrder",
    "GetServiceOrder",
    "CancelServiceOrder",
    "GetUnionId",
)
# (rpc, PayScore configured): PayScore's RPCs run against both servers.
CASES = [(name, True) for name in METHODS] + [(name, False) for name in PAYSCORE_RPCS]
TOTAL = int(os.environ.get("FACEPAY_FUZZ_EXAMPLES", "2200"))
RAW_SHARE = 4  # the raw-bytes test counts as this many cases: it spreads over every RPC
PER_CASE = max(1, math.ceil(TOTAL / (len(CASES) + RAW_SHARE)))
FACE_CALLS = ("getWxpayfaceCode", "getWxpayfaceUserInfo", "getUserPayScoreStatus")
FORBIDDEN = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED)
CALL_DEADLINE = 20.0  # seconds of real time; a call this slow is a hang, reported as such
DRIVE_STEPS = 400

PAYSCORE_SERIAL = "3775B6A45ACD588826D15E583A95F5DD00000001"
PLATFORM_SERIAL = "PUB_KEY_ID_0119000001092025010100000000"
OPENID = "o-user"

FUZZ_SETTINGS = settings(
    max_examples=PER_CASE,
    deadline=None,
    database=None,
    # Reproducible in `make test`; `make fuzz` explores (FACEPAY_FUZZ_EXAMPLES set).
    derandomize="FACEPAY_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=list(HealthCheck),
)

# ---------------------------------------------------------------------- generated requests

HOSTILE_TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\nb",
            "tab\there",
            "\x7f",
            "\u0085",
            "\u202e",
            "\ufeff",
            "x" * 7000,
            "测" * 100,
            "9" * 320,
            "\U0001d518" * 40,  # outside the BMP
            "../../etc/passwd",
            "%00",
            "fs_0123456789ABCDEF",
        ]
    ),
    st.text(max_size=40),
)
_ORDER_NOS = st.sampled_from(["FZ1", "FZ2", "FZ3", "FZ-4"])
_TIME14 = st.sampled_from(["20300101120000", "20250229120000", "99991231235959", "00000000000000"])
# Values that pass the rules, so generated requests also reach the domain.
GOOD_TEXT: dict[str, st.SearchStrategy[str]] = {
    "out_trade_no": _ORDER_NOS | st.from_regex(r"[0-9A-Za-z_\-|*]{1,32}", fullmatch=True),
    "out_order_no": _ORDER_NOS,
    "session_id": st.just("fs_0123456789abcdef"),
    "body": st.just("goods"),
    "openid": st.just(OPENID),
    "screen_index": st.sampled_from(["0", "1", "2", "3", "4"]),
    "overlay_option": st.sampled_from(["0", "1"]),
    "face_authtype": st.sampled_from(["FACEPAY", "FACEPAY_DELAY", "FACE_AUTH"]),
    "fee_type": st.just("CNY"),
    "limit_pay": st.just("no_credit"),
    "receipt": st.just("Y"),
    "time_expire": _TIME14,
    "paid_time": _TIME14,
    "end_time": _TIME14,
    "start_time": st.just("OnAccept") | _TIME14,
    "type": st.just("Order_Paid"),
    "name": st.sampled_from(["DEPOSIT", "ESTIMATE_ORDER_COST", "fee"]),
    "notify_url": st.just("https://api.test.com/notify"),
    "face_sid": st.from_regex(r"[A-Za-z0-9_.~\-]{1,40}", fullmatch=True),
    "reason": st.just("cashier cancelled"),
    "service_introduction": st.just("hotel"),
    "service_id": st.just("500001"),
    "payscore_service_id": st.just("500001"),
    "toast_text": st.just("商家已停止刷脸"),
    "auth_code": st.sampled_from(["134000000000000001", "149901000000000001"]),
    "time_start": st.sampled_from(["", "20250101120000"]),
    "detail": st.sampled_from(["", "{}"]),
    "scene_info": st.sampled_from(["", '{"store_info":{"id":"S1"}}']),
    "telephone": st.just("13800138000"),
    "ask_face_permit": st.sampled_from(["0", "1"]),
    "ask_ret_page": st.sampled_from(["0", "1"]),
    "ignore_update_pay_result": st.just("0"),
    "face_code_type": st.sampled_from(["0", "1"]),
}
GOOD_INT: dict[str, st.SearchStrategy[int]] = {
    "total_fee": st.integers(1, 1000),
    "page_size": st.integers(0, 200),
    "amount": st.integers(0, 10_000),
    "total_amount": st.integers(0, 10_000),
    "count": st.integers(0, 10),
    "after_seq": st.integers(0, 5),
    "seconds": st.integers(0, 2_000_000_000),
    "nanos": st.integers(0, 999_999_999),
}
_T = descriptor.FieldDescriptor
_INT_RANGES = {
    _T.TYPE_INT64: (-(2**63), 2**63 - 1),
    _T.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _T.TYPE_INT32: (-(2**31), 2**31 - 1),
    _T.TYPE_ENUM: (-(2**31), 2**31 - 1),
    _T.TYPE_UINT64: (0, 2**64 - 1),
    _T.TYPE_UINT32: (0, 2**32 - 1),
}
_EDGE_INTS = (0, 1, -1, 200, 201, 10**12 + 1, 253_402_300_800, -62_135_596_801, 2**31, 2**63 - 1)


def _integers(field: descriptor.FieldDescriptor, tame: bool) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[field.type]
    good = GOOD_INT.get(field.name)
    if field.type == _T.TYPE_ENUM:
        good = st.sampled_from([v.number for v in field.enum_type.values if v.number])
    if tame:
        return good if good is not None else st.integers(0, 3)
    edges = st.sampled_from([n for n in (*_EDGE_INTS, low, high) if low <= n <= high])
    return st.one_of(*(s for s in (good, edges, st.integers(low, high)) if s is not None))


def _scalar(field: descriptor.FieldDescriptor, tame: bool) -> st.SearchStrategy[Any]:
    if field.type == _T.TYPE_STRING:
        good = GOOD_TEXT.get(field.name)
        if tame:
            return good if good is not None else st.sampled_from(["", "x"])
        return HOSTILE_TEXT if good is None else st.one_of(good, good, HOSTILE_TEXT)
    if field.type == _T.TYPE_BOOL:
        return st.booleans()
    if field.type == _T.TYPE_MESSAGE:
        return messages(field.message_type._concrete_class, tame)
    return _integers(field, tame)


@st.composite
def messages(draw: st.DrawFn, cls: type[message.Message], tame: bool) -> message.Message:
    """A message of cls: tame (values the rules accept) or wild (edge values, anything)."""
    msg = cls()
    for field in cls.DESCRIPTOR.fields:
        value = _scalar(field, tame)
        if field.is_repeated:
            sizes = st.lists(value, min_size=1, max_size=2)
            if not tame:
                sizes = st.one_of(
                    st.lists(value, max_size=3),
                    st.builds(lambda v, n: [v] * n, value, st.sampled_from([11, 101, 201])),
                )
            items = draw(sizes)
            target = getattr(msg, field.name)
            if field.type == _T.TYPE_MESSAGE:
                for item in items:
                    target.add().CopyFrom(item)
            else:
                target.extend(items)
        elif field.type == _T.TYPE_MESSAGE:
            if tame or draw(st.booleans()):
                getattr(msg, field.name).CopyFrom(draw(value))
        else:
            setattr(msg, field.name, draw(value))
    return msg


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@st.composite
def tails(draw: st.DrawFn, cls: type[message.Message]) -> bytes:
    """Bytes appended to a serialized request: nothing, unknown fields or invalid UTF-8."""
    strings = [f.number for f in cls.DESCRIPTOR.fields if f.type == _T.TYPE_STRING]
    kinds = ["none", "unknown_varint", "unknown_bytes"] + (["bad_utf8"] if strings else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "unknown_varint":
        return _varint(draw(st.integers(100, 536_870_911)) << 3) + _varint(
            draw(st.integers(0, 2**64 - 1))
        )
    if kind == "unknown_bytes":
        return _length_delimited(draw(st.integers(100, 536_870_911)), draw(st.binary(max_size=64)))
    if kind == "bad_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\xe2\x82"]))
        return _length_delimited(draw(st.sampled_from(strings)), bad)
    return b""


def request_cls(rpc: str) -> type[message.Message]:
    cls: type[message.Message] = METHODS[rpc].input_type._concrete_class
    return cls


def wire_requests(rpc: str) -> st.SearchStrategy[bytes]:
    """A generated request of rpc, serialized, with a tail of unknown or undecodable fields."""
    cls = request_cls(rpc)
    generated = st.one_of(messages(cls, tame=False), messages(cls, tame=True))
    return st.builds(lambda m, t: m.SerializeToString() + t, generated, tails(cls))


# ---------------------------------------------------------------------- the served domain


@dataclass
class Outcome:
    """What one call answered."""

    code: grpc.StatusCode
    message: str
    details: list[Any]
    responses: int


@dataclass
class Harness:
    """One world served twice (PayScore configured and not), driven from a sync test."""

    runner: asyncio.Runner
    world: World
    channels: dict[bool, grpc.aio.Channel]
    tables: tuple[str, ...]
    answered: collections.Counter[tuple[str, bool, str]] = dataclasses.field(
        default_factory=collections.Counter
    )

    def run(self, coroutine: Any) -> Any:
        """Run coroutine on the harness's event loop."""
        return self.runner.run(coroutine)

    def face_calls(self) -> int:
        return sum(self.world.sim.calls[name] for name in FACE_CALLS)

    async def rows(self) -> int:
        db = self.world.journal.database

        def count() -> int:
            return sum(
                db.connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in self.tables
            )

        total: int = await db.run(count)
        return total

    async def call(self, rpc: str, data: bytes, payscore: bool) -> Outcome:
        """Send data to rpc; drive the simulated user and clock until the call has answered."""
        task = asyncio.ensure_future(self._send(rpc, data, payscore))
        await self._drive(task.done, "the call's answer")
        outcome = await task
        await self._drive(self._idle, "the face UI to close")
        if self.world.lifecycle.state is State.UNINITIALIZED:
            await self.world.lifecycle.reinitialize()  # after a fuzzed Release
        return outcome

    async def _send(self, rpc: str, data: bytes, payscore: bool) -> Outcome:
        channel = self.channels[payscore]
        path = f"/{SERVICE_NAME}/{rpc}"
        responses = 0
        try:
            if METHODS[rpc].server_streaming:
                call = channel.unary_stream(path)(data, timeout=CALL_DEADLINE)
                async for _ in call:
                    # A valid request started its stream: hang up, as a POS may at any time.
                    responses += 1
                    call.cancel()
                    break
            else:
                await channel.unary_unary(path)(data, timeout=CALL_DEADLINE)
                responses = 1
        except grpc.aio.AioRpcError as error:
            return Outcome(error.code(), error.details() or "", _details(error), responses)
        return Outcome(grpc.StatusCode.OK, "", [], responses)

    def _idle(self) -> bool:
        return self.world.sessions.active is None and not self.world.sim.face_ui_open

    async def _drive(self, done: Callable[[], bool], what: str) -> None:
        """Until done: let real I/O run; while the face UI waits for a user, show a face."""
        for _ in range(DRIVE_STEPS):
            for _ in range(20):
                if done():
                    return
                await asyncio.sleep(0.005)
            if self.world.sim.face_ui_open:
                await self.world.clock.advance(CAPTURE)
        raise AssertionError(f"gave up waiting for {what}")


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            found: list[Any] = []
            for packed in status.details:
                for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
                    if packed.Is(cls.DESCRIPTOR):
                        item = cls()
                        packed.Unpack(item)
                        found.append(item)
            return found
    return []


@contextlib.asynccontextmanager
async def _served(world: World, directory: Path) -> AsyncIterator[dict[bool, grpc.aio.Channel]]:
    merchant_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    platform_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki = generate_test_pki(directory)
    wechat = WxPaySimulator(
        merchant=Merchant(appid=MERCHANT.appid, mch_id=MERCHANT.mch_id),
        api_key="k" * 32,
        pki=pki,
        clock=world.clock,
    )
    payscore_sim = PayScoreSimulator(
        world.clock, {PAYSCORE_SERIAL: merchant_key.public_key()}, platform_key, PLATFORM_SERIAL
    )
    payscore_sim.install(wechat)
    payscore_sim.add_user(OPENID)
    await wechat.start()
    http = httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(pki.ca_cert)))
    client = PayScoreClient(
        MERCHANT.mch_id,
        MERCHANT.appid,
        "500001",
        merchant_key,
        PAYSCORE_SERIAL,
        {PLATFORM_SERIAL: platform_key.public_key()},
        base_url=wechat.base_url,
        http=http,
        clock=world.clock,
        max_attempts=1,  # a retry would sleep on the manual clock
    )
    services = {
        True: PayScoreService(
            journal=world.journal.service_orders,
            client=client,
            clock=world.clock,
            service_id="500001",
        ),
        False: PayScoreService(
            journal=world.journal.service_orders, client=None, clock=world.clock, service_id=""
        ),
    }
    # Every refund fails at once, so a refund's stream ends without the manual clock moving.
    refunds = RefundService(world.journal.refunds, _RefusingRefunds(), world.clock, RefundTimings())
    servers: list[RpcServer] = []
    channels: dict[bool, grpc.aio.Channel] = {}
    try:
        for configured, payscore in services.items():
            socket = directory / f"{'on' if configured else 'off'}.sock"
            domain = Domain(
                config=Config(device=world.device),
                lifecycle=world.lifecycle,
                authinfo=world.authinfo,
                sessions=world.sessions,
                flows=world.flows,
                payments=world.payments,
                payscore=payscore,
                refunds=refunds,
            )
            server = RpcServer(TerminalService(domain), socket, reflection_on=False)
            await server.start()
            await server.set_serving(True)
            servers.append(server)
            channels[configured] = grpc.aio.insecure_channel(f"unix:{socket}")
        yield channels
    finally:
        for channel in channels.values():
            await channel.close()
        for server in servers:
            await server.stop(0)
        for service in services.values():
            await service.close(0)
        await refunds.close(0)
        await http.aclose()
        await wechat.stop()


class _RefusingRefunds:
    """A RefundBackend whose every refund is a definite NOTENOUGH."""

    async def refund(self, order: RefundOrder) -> RefundResult:
        return RefundResult(RefundOutcome.FAILED, err_code="NOTENOUGH", err_code_des="fuzz")

    async def refundquery(self, *, out_refund_no: str) -> RefundQueryResult:
        return RefundQueryResult(RefundStatus.NOT_EXIST)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    world_dir = tmp_path_factory.mktemp("fuzz")
    with (
        tempfile.TemporaryDirectory(dir="/tmp") as short,  # Unix socket paths are short
        asyncio.Runner() as runner,
    ):
        stack = contextlib.AsyncExitStack()
        world = runner.run(stack.enter_async_context(face_world(world_dir)))
        try:
            channels = runner.run(stack.enter_async_context(_served(world, Path(short))))
            db = world.journal.database
            names = runner.run(
                db.run(
                    lambda: [
                        row[0]
                        for row in db.connection.execute(
                            "SELECT name FROM sqlite_master WHERE type = 'table'"
                        )
                    ]
                )
            )
            yield Harness(runner, world, channels, tuple(names))
        finally:
            runner.run(stack.aclose())


# ---------------------------------------------------------------------- the properties


def check(harness: Harness, rpc: str, data: bytes, payscore: bool) -> None:
    """Send one request and assert the answer is one a POS can act on, with no side effects."""
    rows = harness.run(harness.rows())
    face_calls = harness.face_calls()
    outcome = harness.run(harness.call(rpc, data, payscore))
    harness.answered[rpc, payscore, outcome.code.name] += 1
    assert outcome.code not in FORBIDDEN, (rpc, data, outcome)
    if len(data) > MAX_REQUEST_BYTES:
        # gRPC itself refuses it before any handler runs: nothing opened, nothing written.
        assert outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED, (rpc, len(data), outcome)
        assert harness.run(harness.rows()) == rows
        assert harness.face_calls() == face_calls
        return
    try:
        request_cls(rpc).FromString(data)
        decodes = True
    except message.DecodeError:
        decodes = False
    if not decodes:
        assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (rpc, data, outcome)
        assert rpc in outcome.message, outcome
    infos = [d for d in outcome.details if isinstance(d, error_details_pb2.ErrorInfo)]
    # Every refusal is a rich status (our own hang-up of a started stream aside).
    if outcome.code is not grpc.StatusCode.OK and not (
        outcome.code is grpc.StatusCode.CANCELLED and outcome.responses
    ):
        assert [i.domain for i in infos] == [DOMAIN], (rpc, data, outcome)
    if outcome.code is grpc.StatusCode.INVALID_ARGUMENT:
        assert [i.reason for i in infos] == ["INVALID_FIELD"], (rpc, outcome)
        bad = [d for d in outcome.details if isinstance(d, error_details_pb2.BadRequest)]
        assert bad, (rpc, outcome)
        assert bad[0].field_violations, (rpc, outcome)
        assert all(v.field and v.description for v in bad[0].field_violations), outcome
        assert harness.face_calls() == face_calls, f"{rpc} opened the face UI for {data!r}"
        assert harness.run(harness.rows()) == rows, f"{rpc} wrote to the journal for {data!r}"
    assert "Traceback" not in outcome.message


def assert_still_answering(harness: Harness) -> None:
    """GetStatus answers OK after everything the test sent."""
    outcome = harness.run(harness.call("GetStatus", b"", True))
    assert outcome.code is grpc.StatusCode.OK, outcome


@pytest.mark.parametrize(
    ("rpc", "payscore"),
    CASES,
    ids=[f"{rpc}-{'payscore' if on else 'no-payscore'}" for rpc, on in CASES],
)
def test_generated_requests_get_an_actionable_status(
    harness: Harness, rpc: str, payscore: bool
) -> None:
    @FUZZ_SETTINGS
    @given(data=wire_requests(rpc))
    def fuzz(data: bytes) -> None:
        check(harness, rpc, data, payscore)

    fuzz()
    assert_still_answering(harness)
    answered = {c: n for (r, p, c), n in harness.answered.items() if (r, p) == (rpc, payscore)}
    print(rpc, "PayScore" if payscore else "no PayScore", answered)
    # Not only the rules were fuzzed: generated requests also reached the domain behind them.
    assert set(answered) - {"INVALID_ARGUMENT"}, answered


def _truncated(cls: type[message.Message]) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda m, cut: m.SerializeToString()[: max(0, len(m.SerializeToString()) - cut)],
        messages(cls, tame=False),
        st.integers(1, 8),
    )


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """Any RPC with raw bytes: random, truncated serializations, bad tags and lengths."""
    rpc = draw(st.sampled_from(sorted(METHODS)))
    data = draw(
        st.one_of(
            st.binary(max_size=96),
            _truncated(request_cls(rpc)),
            st.sampled_from(
                [
                    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
                    b"\x0a\x05ab",  # a length past the end
                    b"\x07",  # wire type 7 does not exist
                    b"\x00\x01",  # field number 0
                    b"\x08" + b"\xff" * 11,  # a varint longer than 10 bytes
                    b"\x0b\x0c",  # a group: deprecated wire types
                ]
            ),
        )
    )
    return rpc, data


def test_raw_bytes_get_an_actionable_status(harness: Harness) -> None:
    @settings(FUZZ_SETTINGS, max_examples=PER_CASE * RAW_SHARE)
    @given(request=raw_requests())
    def fuzz(request: tuple[str, bytes]) -> None:
        rpc, data = request
        check(harness, rpc, data, payscore=data[:1] != b"\x00")

    fuzz()
    assert_still_answering(harness)


def test_enough_examples_run_in_make_test() -> None:
    assert PER_CASE * (len(CASES) + RAW_SHARE) >= min(TOTAL, 2000)
    assert {rpc for rpc, _ in CASES} == set(METHODS)
    assert len(METHODS) == 28
