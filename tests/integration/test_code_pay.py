"""Barcode payments (StartCodePay) in-process: the real gRPC server, journal, payment machine and
v2 client against the simulated WeChat Pay over loopback HTTPS, and the simulated terminal for the
customer who chooses to scan. One ManualClock drives the daemon and the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest
import structlog

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import AlreadyExistsError, InvalidArgumentError, TerminalClient, WrongStateError
from facepay_client.cli import ExitCode, main
from facepayd.clock import ManualClock
from facepayd.ops.config import MerchantConfig
from facepayd.sim.terminal import FaceOutcome
from facepayd.sim.tls import TestPki, generate_test_pki
from facepayd.sim.wxpay import COUPON_FEE, PROMOTION_DETAIL, OrderState, WxPaySimulator
from facepayd.wxpay.http import ClientCert, build_http_clients
from facepayd.wxpay.models import Merchant
from facepayd.wxpay.sign import HMAC_SHA256
from facepayd.wxpay.v2 import WxPayV2Client
from tests.helpers import until
from tests.unit.face_world import MERCHANT, World, face_world, world_server

S = pb.PaymentState
API_KEY = "SimApiKey0123456789abcdefghijklm"
# Valid payment codes (18 digits, 10-15): one that pays, and the simulator's scenario prefixes.
CODE = "134000000000000001"
EXPIRED = "149901000000000001"
NOT_WECHAT = "149902000000000001"
USED = "149903000000000001"
PASSWORD = "149904000000000001"
POLL = 5.0  # the machine's production poll interval (PaymentTimings())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return generate_test_pki(tmp_path_factory.mktemp("pki"))


@contextlib.asynccontextmanager
async def paying_world(
    tmp_path: Path, pki: TestPki, merchant: MerchantConfig = MERCHANT
) -> AsyncIterator[tuple[World, WxPaySimulator]]:
    """The face world whose payments go to the simulated WeChat Pay through the real client."""
    world_clock = ManualClock()
    wx_merchant = Merchant(
        appid=merchant.appid,
        mch_id=merchant.mch_id,
        sub_appid=merchant.sub_appid,
        sub_mch_id=merchant.sub_mch_id,
    )
    sim = WxPaySimulator(merchant=wx_merchant, api_key=API_KEY, pki=pki, clock=world_clock)
    await sim.start()
    cert = ClientCert.load_pkcs12_file(pki.client_p12, pki.client_p12_password)
    http = build_http_clients(sim.ca_file, cert, httpx.Timeout(5.0))
    client = WxPayV2Client(
        wx_merchant,
        API_KEY,
        HMAC_SHA256,
        api_base_url=sim.base_url,
        authinfo_url=sim.authinfo_url,
        http=http.api,
        secapi_http=http.secapi,
        clock=world_clock,
    )
    try:
        async with face_world(
            tmp_path, backend=client, clock=world_clock, merchant=merchant
        ) as world:
            sim.openid_of_face_code = world.sim.face_code_openids.get
            yield world, sim
    finally:
        await http.aclose()
        await sim.stop()


@contextlib.asynccontextmanager
async def served(world: World) -> AsyncIterator[TerminalClient]:
    async with (
        world_server(world) as socket,
        TerminalClient(socket, timeout=10, face_timeout=10) as client,
    ):
        yield client


def kinds(events: Sequence[pb.PaymentEvent]) -> list[str]:
    return [e.WhichOneof("kind") or "" for e in events]


async def code_pay(
    client: TerminalClient, no: str, amount: int, code: str, **fields: str
) -> list[pb.PaymentEvent]:
    return [e async for e in client.start_code_pay(no, amount, "goods", code, **fields)]


async def test_a_scanned_code_pays_through_the_same_journal_streams_and_re_attach(
    tmp_path: Path, pki: TestPki
) -> None:
    async with paying_world(tmp_path, pki) as (world, wxpay), served(world) as client:
        with structlog.testing.capture_logs() as logs:
            events = await code_pay(client, "C1", 100, CODE, attach="till 3")
        assert kinds(events) == ["code_received", "succeeded"]
        assert [e.seq for e in events] == [1, 2]
        assert events[0].code_received.source == pb.PAYMENT_SOURCE_CODE
        assert not events[0].code_received.continued
        paid = events[-1].succeeded
        assert (paid.total_fee, paid.trade_type, paid.attach) == (100, "MICROPAY", "till 3")
        payment = await client.get_payment("C1")
        assert (payment.state, payment.source) == (
            S.PAYMENT_STATE_SUCCEEDED,
            pb.PAYMENT_SOURCE_CODE,
        )
        assert payment.transaction_id == paid.transaction_id
        record = wxpay.order("C1")
        assert record is not None
        assert (record.charge_count, record.micropay_calls) == (1, 1)
        # The same number and fields again: a re-attach that replays, and sends nothing.
        again = await code_pay(client, "C1", 100, CODE, attach="till 3")
        assert [(e.seq, e.WhichOneof("kind")) for e in again] == [
            (1, "code_received"),
            (2, "succeeded"),
        ]
        watched = [e async for e in client.watch_payment("C1")]
        assert kinds(watched) == kinds(events)
        with pytest.raises(AlreadyExistsError, match="total_fee"):
            await code_pay(client, "C1", 101, CODE, attach="till 3")
        record = wxpay.order("C1")
        assert record is not None
        assert record.micropay_calls == 1
        # The code is a secret: in no log event, no journal byte, no answer. The capture saw
        # the payment's own lines, so their lack of the code means something.
        assert [(e["kind"], e["state"]) for e in logs if e["event"] == "payment_event"] == [
            ("code_received", "PAYING"),
            ("succeeded", "SUCCEEDED"),
        ]
        assert all(CODE not in repr(event) for event in logs)
        journal_bytes = b"".join(
            p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("j.sqlite3")
        )
        assert CODE.encode() not in journal_bytes
        assert CODE not in str(payment) + "".join(str(e) for e in events + watched)


async def test_an_expired_code_fails_authcodeexpire_and_bad_codes_fail_as_documented(
    tmp_path: Path, pki: TestPki
) -> None:
    async with paying_world(tmp_path, pki) as (world, wxpay), served(world) as client:
        events = await code_pay(client, "EXP", 100, EXPIRED)
        assert kinds(events) == ["code_received", "failed"]
        assert events[-1].failed.err_code == "AUTHCODEEXPIRE"
        record = wxpay.order("EXP")
        assert record is not None
        assert (record.state, record.charged) == (OrderState.PAYERROR, False)
        for no, code, err_code in (
            ("INV", NOT_WECHAT, "AUTH_CODE_INVALID"),
            ("ERR", USED, "AUTH_CODE_ERROR"),
        ):
            events = await code_pay(client, no, 100, code)
            assert kinds(events) == ["code_received", "failed"], no
            assert events[-1].failed.err_code == err_code
            assert wxpay.order(no) is None  # refused before any order existed


async def test_invalid_auth_codes_are_refused_naming_the_rule_never_the_value(
    tmp_path: Path, pki: TestPki
) -> None:
    async with paying_world(tmp_path, pki) as (world, wxpay), served(world) as client:
        for code in ("", "1340000000000000", "164000000000000001", "13400000000000000x", "0" * 18):
            with pytest.raises(InvalidArgumentError) as caught:
                await code_pay(client, "BAD", 100, code)
            text = str(caught.value) + repr(caught.value.field_violations)
            assert "auth_code" in text
            if code:
                assert code not in text
                assert "18 digits starting with 10" in text
        # micropay's charset: "@" is orderquery's only.
        with pytest.raises(InvalidArgumentError, match="out_trade_no"):
            await code_pay(client, "A@1", 100, CODE)
        assert await world.payments.find("BAD") is None
        assert wxpay.ledger == {}


async def test_a_customer_who_chooses_to_scan_continues_the_same_sale_by_code(
    tmp_path: Path, pki: TestPki
) -> None:
    async with paying_world(tmp_path, pki) as (world, wxpay), served(world) as client:
        world.sim.script(FaceOutcome.SCAN_PAYMENT)
        responses: list[pb.StartFacePayResponse] = []

        async def face() -> None:
            async for response in client.start_face_pay_stream("SALE1", 250, "goods"):
                responses.append(response)

        task = asyncio.ensure_future(face())
        await world.show_face()
        await until(task.done, 10, "the face stream's end")
        task.result()
        face_events = [r.event for r in responses if r.HasField("event")]
        assert kinds(face_events) == ["session_started", "cancelled"]
        cancelled = face_events[-1].cancelled
        assert (cancelled.reason, cancelled.continue_with_code_pay) == ("SCAN_PAYMENT", True)
        assert wxpay.order("SALE1") is None  # nothing ever reached WeChat Pay
        # Another amount is another sale: refused, the face payment stays as it was.
        with pytest.raises(AlreadyExistsError, match="total_fee"):
            await code_pay(client, "SALE1", 251, CODE)
        events = await code_pay(client, "SALE1", 250, CODE)
        assert [(e.seq, e.WhichOneof("kind")) for e in events] == [
            (1, "session_started"),
            (2, "cancelled"),
            (3, "code_received"),
            (4, "succeeded"),
        ]
        assert events[2].code_received.continued
        watched = [e async for e in client.watch_payment("SALE1")]
        assert kinds(watched) == kinds(events)
        payment = await client.get_payment("SALE1")
        assert (payment.state, payment.source, payment.last_seq) == (
            S.PAYMENT_STATE_SUCCEEDED,
            pb.PAYMENT_SOURCE_CODE,
            4,
        )
        record = wxpay.order("SALE1")
        assert record is not None
        assert record.charge_count == 1
        # A customer who cancelled (not to scan) ended the sale: no continuation.
        world.sim.script(FaceOutcome.USER_CANCEL)
        task = asyncio.ensure_future(_drain(client.start_face_pay_stream("SALE2", 250, "goods")))
        await world.show_face()
        await until(task.done, 10, "the face stream's end")
        with pytest.raises(WrongStateError, match="SCAN_PAYMENT"):
            await code_pay(client, "SALE2", 250, CODE)
        assert wxpay.order("SALE2") is None


async def _drain(stream: AsyncIterator[object]) -> None:
    async for _ in stream:
        pass


async def test_coupons_and_settlement_amounts_reach_the_events_and_get_payment(
    tmp_path: Path, pki: TestPki
) -> None:
    async with paying_world(tmp_path, pki) as (world, _), served(world) as client:
        cash = (await code_pay(client, "CP1", 701, CODE))[-1].succeeded
        assert (cash.coupon_fee, cash.cash_fee, cash.settlement_total_fee) == (COUPON_FEE, 601, 0)
        no_cash = (await code_pay(client, "CP2", 702, "134000000000000002"))[-1].succeeded
        assert (no_cash.coupon_fee, no_cash.settlement_total_fee) == (COUPON_FEE, 602)
        promo = (await code_pay(client, "CP3", 703, "134000000000000003"))[-1].succeeded
        assert promo.promotion_detail == PROMOTION_DETAIL
        assert promo.cash_fee_type == "CNY"
        payment = await client.get_payment("CP3")
        assert (payment.coupon_fee, payment.settlement_total_fee, payment.cash_fee_type) == (
            COUPON_FEE,
            603,
            "CNY",
        )
        assert payment.promotion_detail == PROMOTION_DETAIL
        assert payment.trade_type == "MICROPAY"


async def test_cli_code_pay_continues_a_scanned_sale_and_never_prints_the_code(
    tmp_path: Path,
    pki: TestPki,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with paying_world(tmp_path, pki) as (world, wxpay), world_server(world) as socket:
        cli = ["--socket", str(socket), "--progress", "0"]
        world.sim.script(FaceOutcome.SCAN_PAYMENT)
        order = ["--out-trade-no", "CLI1", "--amount", "3", "--body", "tea"]
        face = asyncio.ensure_future(asyncio.to_thread(main, [*cli, "pay", *order]))
        await world.show_face()
        assert await face == ExitCode.FAILED  # CANCELLED: not paid (yet)
        captured = capsys.readouterr()
        assert "SCAN_PAYMENT" in captured.out
        assert "continue_with_code_pay=yes" in captured.out
        assert "code-pay --out-trade-no CLI1 --auth-code -" in captured.err
        # A scanner types the code into stdin: never on the command line, never printed.
        monkeypatch.setattr("sys.stdin", io.StringIO(CODE + "\n"))
        code = await asyncio.to_thread(main, [*cli, "code-pay", "--auth-code", "-", *order])
        captured = capsys.readouterr()
        assert code == ExitCode.OK, captured
        rows = [line.split() for line in captured.out.splitlines() if line.startswith("#")]
        # The whole sale: its face part, then the code part that decides the exit code.
        assert [(row[0], row[2], row[3]) for row in rows] == [
            ("#1", "CAPTURING", "session_started"),
            ("#2", "CANCELLED", "cancelled"),
            ("#3", "PAYING", "code_received"),
            ("#4", "SUCCEEDED", "succeeded"),
        ]
        assert CODE not in captured.out + captured.err
        record = wxpay.order("CLI1")
        assert record is not None
        assert record.charge_count == 1
