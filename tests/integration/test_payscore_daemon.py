"""PayScore end to end: the daemon as a real process, the terminal and WeChat Pay v3 simulated."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import pytest

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import (
    BackendError,
    FacepayClientError,
    InvalidArgumentError,
    NotFoundError,
    OrderStateError,
    TerminalClient,
)
from facepayd.sim.daemon_process import DaemonProcess
from facepayd.sim.payscore import SERVICE_ORDER_PATH, PayScoreSimulator
from facepayd.sim.stack import MERCHANT, PAYSCORE_SERVICE_ID, SimStack
from facepayd.sim.terminal import DEFAULT_USER, FaceOutcome, SimUser
from facepayd.sim.wxpay import SimRequest, SimResponse
from tests.helpers import until
from tests.integration.conftest import DaemonFactory

OPENID = DEFAULT_USER.openid


def sims(stack: SimStack) -> PayScoreSimulator:
    assert stack.payscore is not None
    return stack.payscore


def create_request(no: str, **fields: object) -> pb.CreateServiceOrderRequest:
    values: dict[str, object] = {
        "out_order_no": no,
        "service_introduction": "Power bank rental",
        "post_payments": [pb.PostPayment(name="rental", description="per hour 2 CNY")],
        "time_range": pb.TimeRange(start_time="OnAccept"),
        "risk_fund": pb.RiskFund(name="DEPOSIT", amount=9900, description="power bank"),
        "openid": OPENID,
    }
    values.update(fields)
    return pb.CreateServiceOrderRequest(**values)  # type: ignore[arg-type]


def complete_request(
    no: str,
    payments: list[int],
    discounts: tuple[int, ...] = (),
    total: int | None = None,
    end_time: str = "20300101120000",
) -> pb.CompleteServiceOrderRequest:
    expected = sum(payments) - sum(discounts)
    return pb.CompleteServiceOrderRequest(
        out_order_no=no,
        post_payments=[pb.PostPayment(name=f"item{i}", amount=a) for i, a in enumerate(payments)],
        post_discounts=[pb.PostDiscount(name=f"off{i}", amount=a) for i, a in enumerate(discounts)],
        total_amount=expected if total is None else total,
        # create_request gives no end time, so complete must (the reference's condition).
        time_range=pb.TimeRange(end_time=end_time) if end_time else None,
    )


# A call with an unknown outcome is settled as "never arrived" 1 s after its last attempt.
FAST_PAYSCORE = {"in_flight_after": 1.0}


@pytest.fixture
async def client(stack: SimStack, make_daemon: DaemonFactory) -> AsyncIterator[TerminalClient]:
    daemon = await make_daemon(stack, payscore=FAST_PAYSCORE)
    async with daemon.client() as c:
        yield c


# ------------------------------------------------------------------ face


async def test_the_four_face_outcomes_are_distinct_results(
    stack: SimStack, client: TerminalClient
) -> None:
    terminal = stack.terminal
    assert terminal is not None
    declines = SimUser(
        openid="oSimDeclines0000000000000001", has_payscore=False, authorizes_payscore=False
    )
    terminal.script(FaceOutcome.SUCCESS)
    terminal.script(FaceOutcome.SUCCESS, user=declines)
    terminal.script(FaceOutcome.USER_CANCEL)
    terminal.script(FaceOutcome.SCAN_PAYMENT)

    results = [
        await client.check_pay_score_status(f"PSCHECK{n}", face=pb.FaceOptions(ask_unionid=True))
        for n in range(4)
    ]

    assert [r.outcome for r in results] == [
        pb.PAY_SCORE_OUTCOME_SUCCESS,
        pb.PAY_SCORE_OUTCOME_ERROR,
        pb.PAY_SCORE_OUTCOME_USER_CANCEL,
        pb.PAY_SCORE_OUTCOME_SCAN_PAYMENT,
    ]
    assert results[0].openid == OPENID
    assert len(results[0].face_sid) == 32
    assert results[1].openid == ""
    assert results[1].return_msg
    assert terminal.calls["getUserPayScoreStatus"] == 4
    # The camera is free again after each outcome.
    assert (await client.get_status()).active_session_id == ""


async def test_userinfo_and_unionid_by_face_sid(stack: SimStack, client: TerminalClient) -> None:
    terminal = stack.terminal
    assert terminal is not None
    user = SimUser(openid="oSimUnion00000000000000001", nickname="Lin", unionid="oUnionSim0001")
    terminal.script(FaceOutcome.SUCCESS, user=user, times=2)

    info = await client.get_user_info(face=pb.FaceOptions(ask_unionid=True))
    assert (info.openid, info.nickname, info.unionid_code) == (user.openid, "Lin", "SUCCESS")
    assert info.token

    status = await client.check_pay_score_status("PSUNION1", face=pb.FaceOptions(ask_unionid=True))
    sims(stack).register_face_sid(status.face_sid, user.unionid)
    assert (await client.get_union_id(status.face_sid)).unionid == user.unionid
    assert sims(stack).calls["unionid"] == 1

    with pytest.raises(InvalidArgumentError) as bad:
        await client.get_union_id("not/a/path")
    assert bad.value.field_violations[0][0] == "face_sid"
    sims(stack).fail_next("unionid", status=404, code="NOT_FOUND", message="face_sid expired")
    with pytest.raises(NotFoundError):
        await client.get_union_id(status.face_sid)


# ------------------------------------------------------------------ service orders


async def test_create_complete_get(stack: SimStack, make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(stack)
    async with daemon.client() as client:
        await _create_complete_get(stack, daemon, client)


async def _create_complete_get(
    stack: SimStack, daemon: DaemonProcess, client: TerminalClient
) -> None:
    created = await client.create_service_order(create_request("PSORDER1"))
    assert created.state == pb.SERVICE_ORDER_STATE_DOING
    assert created.state_description == "USER_CONFIRM"
    assert created.journal_state == "RECORDED"
    assert created.order_id
    assert created.openid == OPENID
    assert created.risk_fund.amount == 9900
    assert created.package  # for the WeChat order page, until complete
    assert (created.appid, created.mchid) == (MERCHANT.appid, MERCHANT.mch_id)
    assert created.notify_url.endswith("/notify/payscore")

    sim = sims(stack)
    sim.auto_charge = False  # the charge happens when this test says so
    completed = await client.complete_service_order(
        complete_request("PSORDER1", [1500, 500], [200])
    )
    # WeChat Pay collects after complete; the journal says so until the charge settles.
    assert completed.state == pb.SERVICE_ORDER_STATE_DOING
    assert completed.state_description == "MCH_COMPLETE"
    assert completed.journal_state == "CHARGING"
    assert completed.total_amount == 1800
    assert completed.collection.state == "USER_PAYING"
    assert completed.collection.paying_amount == 1800

    # The daemon watches the charge itself: its background query finds it settled.
    assert journal_row(daemon, "PSORDER1") == ("CHARGING", "")
    polls = sim.calls["query"]
    await until(lambda: sim.calls["query"] > polls, timeout=30.0, what="a background query")
    assert journal_row(daemon, "PSORDER1") == ("CHARGING", "")
    sim.charge("PSORDER1")
    await until(lambda: journal_row(daemon, "PSORDER1") == ("RECORDED", ""), timeout=30.0)
    got = await client.get_service_order("PSORDER1")
    assert got.state == pb.SERVICE_ORDER_STATE_DONE
    assert got.total_amount == 1800
    order = sims(stack).orders["PSORDER1"]
    assert order.state == "DONE"
    assert order.collection is not None
    assert order.collection["paid_amount"] == 1800
    # Same parameters again: the existing order, asked for, not created twice.
    again = await client.create_service_order(create_request("PSORDER1"))
    assert again.order_id == created.order_id
    assert sims(stack).calls["create"] == 1
    with pytest.raises(FacepayClientError) as conflict:
        await client.create_service_order(create_request("PSORDER1", attach="other"))
    assert conflict.value.reason == "ALREADY_EXISTS"


async def test_order_needing_user_confirm_then_sync_paid_elsewhere(
    stack: SimStack, client: TerminalClient
) -> None:
    sim = sims(stack)
    created = await client.create_service_order(
        create_request("PSCONFIRM1", openid="", need_user_confirm=True)
    )
    assert created.state == pb.SERVICE_ORDER_STATE_CREATED
    # Not confirmed yet: completing is refused by WeChat Pay as an order-state error.
    with pytest.raises(OrderStateError) as early:
        await client.complete_service_order(complete_request("PSCONFIRM1", [100]))
    assert early.value.metadata["code"] == "INVALID_ORDER_STATE"

    sim.user_confirms("PSCONFIRM1", OPENID)
    assert (await client.get_service_order("PSCONFIRM1")).state_description == "USER_CONFIRM"
    sim.auto_charge = False
    completed = await client.complete_service_order(complete_request("PSCONFIRM1", [700]))
    assert completed.state == pb.SERVICE_ORDER_STATE_DOING
    assert completed.state_description == "MCH_COMPLETE"

    synced = await client.sync_service_order("PSCONFIRM1", "20250101120000")
    assert synced.state == pb.SERVICE_ORDER_STATE_DONE
    assert sim.orders["PSCONFIRM1"].collection is not None
    assert sim.orders["PSCONFIRM1"].collection["details"][0]["paid_type"] == "MCH"


async def test_cancel_then_order_state_errors_are_distinct(
    stack: SimStack, client: TerminalClient
) -> None:
    await client.create_service_order(create_request("PSCANCEL1"))
    cancelled = await client.cancel_service_order("PSCANCEL1", "user returned it at once")
    assert cancelled.state == pb.SERVICE_ORDER_STATE_REVOKED
    assert sims(stack).orders["PSCANCEL1"].state == "REVOKED"

    with pytest.raises(OrderStateError) as revoked:
        await client.complete_service_order(complete_request("PSCANCEL1", [100]))
    assert revoked.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert revoked.value.reason == "ORDER_STATE"
    assert revoked.value.metadata["code"] == "ORDER_CANCELED"

    # The scenario where the charge settles within complete's answer.
    sims(stack).instant_charge = True
    await client.create_service_order(create_request("PSDONE1"))
    await client.complete_service_order(complete_request("PSDONE1", [100]))
    with pytest.raises(OrderStateError) as done:
        await client.cancel_service_order("PSDONE1", "too late")
    assert done.value.metadata["code"] == "ORDER_DONE"


async def test_throttling_and_server_errors_are_retried_with_the_same_body(
    stack: SimStack, client: TerminalClient
) -> None:
    sim = sims(stack)
    sim.fail_next("create", status=429, code="FREQUENCY_LIMITED", message="slow down")
    sim.fail_next("create", status=500, code="SYSTEM_ERROR")
    sim.fail_next("create", status=503, code="SYSTEM_ERROR")
    created = await client.create_service_order(create_request("PSRETRY1"))
    assert created.state == pb.SERVICE_ORDER_STATE_DOING
    attempts = [r for r in sim.received if r.endpoint == "create"]
    assert len(attempts) == 4
    assert len({r.body for r in attempts}) == 1
    assert len({r.nonce for r in attempts}) == 4

    # A server that stays down: the outcome is unknown, so the order stays pending in the
    # journal and the background resolver settles it by a query.
    sim.fail_next("complete", status=500, code="SYSTEM_ERROR", times=4)
    with pytest.raises(BackendError) as down:
        await client.complete_service_order(complete_request("PSRETRY1", [300]))
    assert down.value.reason == "BACKEND_UNAVAILABLE"
    assert sim.calls["complete"] == 4
    await until(lambda: sim.calls["query"] >= 1, what="the resolver's query")
    # Pending until no request of the complete can still land, then settled by a query.
    deadline = asyncio.get_running_loop().time() + 10
    order = await client.get_service_order("PSRETRY1")
    while order.journal_state != "RECORDED":
        assert order.journal_state == "COMPLETING"
        assert asyncio.get_running_loop().time() < deadline, "never settled"
        await asyncio.sleep(0.1)
        order = await client.get_service_order("PSRETRY1")
    assert order.state_description == "USER_CONFIRM"  # WeChat Pay never got the complete


async def test_definite_rejections_and_not_found(stack: SimStack, client: TerminalClient) -> None:
    sim = sims(stack)
    with pytest.raises(NotFoundError):
        await client.get_service_order("PSNOSUCH1")
    sim.fail_next("create", status=403, code="NO_AUTH", message="merchant not allowed")
    with pytest.raises(BackendError) as rejected:
        await client.create_service_order(create_request("PSREJECT1"))
    assert rejected.value.reason == "BACKEND_REJECTED"
    assert rejected.value.metadata["code"] == "NO_AUTH"
    assert sim.calls["create"] == 1  # a definite answer is not retried
    # The refused create may be sent again once the cause is fixed.
    created = await client.create_service_order(create_request("PSREJECT1"))
    assert created.journal_state == "RECORDED"
    # A user without PayScore: WeChat Pay refuses the order.
    sim.add_user("oSimNoScore000000000000001", has_payscore=False)
    with pytest.raises(BackendError) as no_score:
        await client.create_service_order(
            create_request("PSREJECT2", openid="oSimNoScore000000000000001")
        )
    assert no_score.value.metadata["code"] == "INVALID_REQUEST"


async def test_complete_that_does_not_add_up_is_refused_before_anything_is_sent(
    stack: SimStack, client: TerminalClient
) -> None:
    sim = sims(stack)
    await client.create_service_order(create_request("PSSUM1"))
    before = sum(sim.calls.values())

    with pytest.raises(InvalidArgumentError) as wrong_total:
        await client.complete_service_order(complete_request("PSSUM1", [1000, 500], [100], 1500))
    assert wrong_total.value.field_violations[0][0] == "total_amount"
    with pytest.raises(InvalidArgumentError) as over_risk:
        await client.complete_service_order(complete_request("PSSUM1", [9000, 1000]))
    assert "risk fund" in over_risk.value.field_violations[0][1]
    with pytest.raises(InvalidArgumentError) as no_end:
        await client.complete_service_order(complete_request("PSSUM1", [100], end_time=""))
    assert no_end.value.field_violations[0][0] == "time_range.end_time"
    with pytest.raises(InvalidArgumentError) as bad_no:
        await client.complete_service_order(complete_request("PS@SUM1", [100]))
    assert bad_no.value.field_violations[0][0] == "out_order_no"

    assert sum(sim.calls.values()) == before
    assert sim.orders["PSSUM1"].completions == 0
    assert (await client.get_service_order("PSSUM1")).journal_state == "RECORDED"


async def test_an_estimate_order_completes_up_to_the_configured_service_cap_only(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    sim = sims(stack)
    daemon = await make_daemon(stack, payscore={**FAST_PAYSCORE, "service_risk_cap": 15_000})
    estimate = pb.RiskFund(name="ESTIMATE_ORDER_COST", amount=10_000, description="a meal")
    async with daemon.client() as client:
        await client.create_service_order(create_request("PSCAP1", risk_fund=estimate))
        before = sum(sim.calls.values())
        with pytest.raises(InvalidArgumentError) as over_cap:
            await client.complete_service_order(complete_request("PSCAP1", [15_001]))
        assert over_cap.value.field_violations[0][0] == "total_amount"
        assert sum(sim.calls.values()) == before, "a complete over the cap reached WeChat Pay"
        # Past the order's own estimate but within the service's cap: sent, as WeChat allows.
        done = await client.complete_service_order(complete_request("PSCAP1", [15_000]))
        assert done.total_amount == 15_000


async def test_request_fields_are_validated(client: TerminalClient) -> None:
    with pytest.raises(InvalidArgumentError) as bad:
        await client.create_service_order(
            create_request(
                "PS@1",
                service_introduction="x" * 21,
                risk_fund=pb.RiskFund(name="FREE", amount=1),
                time_range=pb.TimeRange(),
            )
        )
    fields = [f for f, _ in bad.value.field_violations]
    assert fields == [
        "out_order_no",
        "service_introduction",
        "risk_fund.name",
        "time_range.start_time",
    ]
    with pytest.raises(InvalidArgumentError) as both:
        await client.create_service_order(create_request("PSBOTH1", need_user_confirm=True))
    assert both.value.field_violations[0][0] == "openid"
    with pytest.raises(InvalidArgumentError) as sync:
        await client.sync_service_order("PSX1", "2025-01-01")
    assert sync.value.field_violations[0][0] == "paid_time"


async def test_payscore_not_configured(stack: SimStack, make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(stack, payscore={"service_id": ""})
    async with daemon.client() as c:
        with pytest.raises(FacepayClientError) as missing:
            await c.get_service_order("PSNONE1")
    assert missing.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "payscore is not configured" in missing.value.message


# ------------------------------------------------------------------ crash safety


async def test_kill_between_sending_a_create_and_recording_its_answer(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    sim = sims(stack)
    assert stack.wxpay is not None
    processed = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_answer(request: SimRequest) -> SimResponse:
        # WeChat Pay acts on the create; its answer never reaches the daemon alive.
        target = f"{request.path}?{request.query}" if request.query else request.path
        status, headers, body = await sim.handle(
            request.method, target, dict(request.headers), request.body
        )
        processed.set()
        await release.wait()
        return SimResponse(status, tuple(headers.items()), body)

    stack.wxpay.add_route("POST", SERVICE_ORDER_PATH, hold_the_answer)
    daemon = await make_daemon(stack)
    async with daemon.client() as c:
        creating = asyncio.ensure_future(c.create_service_order(create_request("PSKILL1")))
        await asyncio.wait_for(processed.wait(), 10)
        assert sim.orders["PSKILL1"].state == "DOING"
        assert journal_row(daemon, "PSKILL1") == ("CREATING", "create")
        await daemon.kill()
        with pytest.raises(FacepayClientError):
            await creating
    release.set()

    queries = sim.calls["query"]
    restarted = await make_daemon(stack)  # same state directory
    # Resolved while starting, before the daemon said SERVING.
    assert sim.calls["query"] == queries + 1
    assert journal_row(restarted, "PSKILL1") == ("RECORDED", "")
    async with restarted.client() as c:
        order = await c.get_service_order("PSKILL1")
    assert order.journal_state == "RECORDED"
    assert order.order_id == sim.orders["PSKILL1"].order_id
    assert sim.calls["create"] == 1


def journal_row(daemon: DaemonProcess, out_order_no: str) -> tuple[str, str]:
    """The journal's state for an order, read from the daemon's database as it is on disk."""
    path = daemon.state_dir / "journal.sqlite3"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT journal_state, pending FROM service_orders WHERE out_order_no = ?",
            (out_order_no,),
        ).fetchone()
    finally:
        db.close()
    assert row is not None, f"{out_order_no} is not in the journal"
    return row[0], row[1]


# ------------------------------------------------------------------ the CLI, as a real process


def _cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from facepay_client.cli import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", code, "--socket", str(daemon.socket), "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def test_cli_payscore_create_complete_get(
    stack: SimStack, make_daemon: DaemonFactory
) -> None:
    daemon = await make_daemon(stack)

    async def cli(*args: str) -> dict[str, object]:
        # In a thread: the simulators live on this event loop and must keep answering.
        done = await asyncio.to_thread(_cli, daemon, "payscore", *args)
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
        return result

    created = await cli(
        "create",
        "PSCLI1",
        "--introduction",
        "Umbrella",
        "--risk-fund",
        "DEPOSIT:5000",
        "--start-time",
        "OnAccept",
        "--openid",
        OPENID,
        "--end-time",
        "20300101120000",
        "--post-payment",
        "umbrella:0",
    )
    assert created["state"] == "DOING"  # short enum names, as in the text output
    completed = await cli(
        "complete", "PSCLI1", "--post-payment", "umbrella:300", "--post-discount", "member:50"
    )
    assert completed["total_amount"] == 250  # int64 as a JSON number
    got = await cli("get", "PSCLI1")
    assert got["state"] == "DOING"  # WeChat Pay is collecting the charge
    assert got["state_description"] == "MCH_COMPLETE"
    assert got["service_id"] == PAYSCORE_SERVICE_ID
