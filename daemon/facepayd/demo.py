"""`make demo`: the daemon end to end against the simulators, with what happened printed."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import RefundExceedsPaidError, TerminalClient
from facepayd.ops import logs
from facepayd.sim.daemon_process import DaemonProcess
from facepayd.sim.refunds import RefundScenario
from facepayd.sim.stack import SimOptions, SimStack
from facepayd.sim.terminal import FaceOutcome, SimUser

# PayScore's times are China Standard Time.
BEIJING = timezone(timedelta(hours=8))


class DemoFailed(Exception):
    """Something the demo shows did not happen."""


def say(text: str = "") -> None:
    """One line of demo output."""
    print(text, flush=True)


def check(condition: bool, what: str) -> None:
    """Fail the demo loudly when a promise is not kept."""
    if not condition:
        raise DemoFailed(what)
    say(f"    ✓ {what}")


async def capture(client: TerminalClient, out_trade_no: str) -> pb.FaceCaptured:
    """One capture-only session."""
    captured = None
    async for event in client.capture_face_code(out_trade_no, 1):
        if event.HasField("face_captured"):
            captured = event.face_captured
    if captured is None:
        raise DemoFailed("the capture returned no face code")
    return captured


def event_line(event: pb.PaymentEvent) -> str:
    """A payment event as one readable line."""
    kind = event.WhichOneof("kind") or "?"
    state = pb.PaymentState.Name(event.state).removeprefix("PAYMENT_STATE_")
    detail = getattr(event, kind)
    fields = ", ".join(f"{f.name}={v}" for f, v in detail.ListFields() if f.name != "face_code")
    return f"    #{event.seq:<2} {state:<10} {kind}" + (f"  ({fields})" if fields else "")


async def pay(client: TerminalClient, out_trade_no: str, amount: int, body: str) -> pb.PaymentEvent:
    """A face payment, printing each event; returns the last one."""
    last = None
    async for response in client.start_face_pay_stream(out_trade_no, amount, body):
        if response.HasField("session_ended"):
            ended = response.session_ended
            say(f"        screen free: {ended.reason}")
            continue
        if response.HasField("progress"):
            progress = response.progress
            say(f"        … {progress.activity.lower().replace('_', ' ')} ({progress.attempt})")
            continue
        say(event_line(response.event))
        last = response.event
    if last is None:
        raise DemoFailed(f"{out_trade_no}: no events")
    return last


def refund_line(event: pb.RefundEvent) -> str:
    """A refund event as one readable line."""
    kind = event.WhichOneof("kind") or "?"
    state = pb.RefundState.Name(event.state).removeprefix("REFUND_STATE_")
    detail = getattr(event, kind)
    fields = ", ".join(f"{f.name}={v}" for f, v in detail.ListFields())
    return f"    #{event.seq:<2} {state:<10} {kind}" + (f"  ({fields})" if fields else "")


async def refund_demo(client: TerminalClient, stack: SimStack) -> None:
    """A partial refund of a paid sale; more than is left is refused before it is sent."""
    wxpay = stack.wxpay
    assert wxpay is not None
    say("\n● refund: 30 of the 100 fen of a paid sale (WeChat Pay processes it for a moment)")
    last = await pay(client, "DEMOPAY4", 100, "demo lunch")
    check(last.state == pb.PAYMENT_STATE_SUCCEEDED, "the sale is paid")
    wxpay.refund_desk.script("DEMOREF1", RefundScenario.PROCESSING_THEN_SUCCESS)
    final = None
    async for event in client.refund_payment("DEMOPAY4", 30, "DEMOREF1", refund_desc="no salt"):
        say(refund_line(event))
        final = event
    check(final is not None and final.state == pb.REFUND_STATE_SUCCEEDED, "30 fen refunded")
    payment = await client.get_payment("DEMOPAY4")
    check(payment.refunded_fee == 30, "the payment shows refunded_fee=30")
    record = wxpay.refunds.get("DEMOREF1")
    check(
        record is not None and record.arrivals == 1,
        "WeChat's ledger has the refund, sent once",
    )
    try:
        async for _ in client.refund_payment("DEMOPAY4", 71, "DEMOREF2"):
            pass
    except RefundExceedsPaidError as exc:
        say(f"    a refund of 71 more fen: {exc.reason}")
    check("DEMOREF2" not in wxpay.refunds, "more than is left is refused before it is sent")


async def code_pay(
    client: TerminalClient, out_trade_no: str, amount: int, body: str, auth_code: str
) -> pb.PaymentEvent:
    """A barcode payment, printing each event (the code itself never); returns the last one."""
    last = None
    async for event in client.start_code_pay(out_trade_no, amount, body, auth_code):
        say(event_line(event))
        last = event
    if last is None:
        raise DemoFailed(f"{out_trade_no}: no events")
    return last


async def scan_instead_demo(client: TerminalClient, stack: SimStack) -> None:
    """A customer who chooses to scan: the same sale goes on by code; bad codes fail as WeChat's."""
    sim, wxpay = stack.terminal, stack.wxpay
    assert sim is not None
    assert wxpay is not None
    say("\n● the customer chooses to scan instead of showing a face (SCAN_PAYMENT)")
    sim.script(FaceOutcome.SCAN_PAYMENT)
    last = await pay(client, "DEMOSCAN1", 250, "demo tea")
    check(last.state == pb.PAYMENT_STATE_CANCELLED, "the face part ends CANCELLED")
    check(last.cancelled.continue_with_code_pay, "the stream says: continue with a code payment")
    check(wxpay.order("DEMOSCAN1") is None, "nothing reached WeChat Pay under that number")
    say("    the cashier scans the customer's payment code: the same out_trade_no and amount")
    last = await code_pay(client, "DEMOSCAN1", 250, "demo tea", "134567890123456789")
    check(last.state == pb.PAYMENT_STATE_SUCCEEDED, "paid by code: the same sale, seq going on")
    events = [e async for e in client.watch_payment("DEMOSCAN1")]
    check(
        [e.WhichOneof("kind") for e in events]
        == ["session_started", "cancelled", "code_received", "succeeded"],
        "WatchPayment shows the whole sale",
    )
    payment = await client.get_payment("DEMOSCAN1")
    check(payment.source == pb.PAYMENT_SOURCE_CODE, "the payment's source is CODE")
    order = wxpay.order("DEMOSCAN1")
    check(order is not None and order.charge_count == 1, "WeChat's ledger: charged once")

    say("\n● a code payment with an expired payment code")
    last = await code_pay(client, "DEMOCODE2", 100, "demo water", "149901000000000001")
    check(last.failed.err_code == "AUTHCODEEXPIRE", "FAILED with AUTHCODEEXPIRE")

    say("\n● a code payment with a 1 CNY cash coupon (the till prints the discount)")
    last = await code_pay(client, "DEMOCODE3", 701, "demo lunch", "134567890123456790")
    paid = last.succeeded
    check(
        (paid.coupon_fee, paid.cash_fee) == (100, 601),
        "coupon_fee and cash_fee come back (total 701 = coupon 100 + cash 601)",
    )


async def payscore_demo(client: TerminalClient, stack: SimStack) -> None:
    """PayScore: face → openid → service order → complete; then a user who declines."""
    sim, payscore = stack.terminal, stack.payscore
    assert sim is not None
    assert payscore is not None
    say("\n● PayScore: face → openid → service order → complete")
    status = await client.check_pay_score_status("DEMOPS1")
    outcome = pb.PayScoreOutcome.Name(status.outcome).removeprefix("PAY_SCORE_OUTCOME_")
    say(f"    getUserPayScoreStatus: {outcome} openid={status.openid}")
    check(status.outcome == pb.PAY_SCORE_OUTCOME_SUCCESS, "the user has PayScore and authorized us")
    created = await client.create_service_order(
        pb.CreateServiceOrderRequest(
            out_order_no="DEMOPS1",
            service_introduction="Demo umbrella",
            post_payments=[pb.PostPayment(name="umbrella", description="2 CNY per hour")],
            time_range=pb.TimeRange(start_time="OnAccept"),
            risk_fund=pb.RiskFund(name="DEPOSIT", amount=5000, description="one umbrella"),
            openid=status.openid,
        )
    )
    state = pb.ServiceOrderState.Name(created.state).removeprefix("SERVICE_ORDER_STATE_")
    say(f"    created order_id={created.order_id} {state}/{created.state_description}")
    check(created.state == pb.SERVICE_ORDER_STATE_DOING, "the order is in service")
    payscore.auto_charge = False  # the demo says when WeChat Pay has collected the charge
    ended = datetime.now(BEIJING).strftime("%Y%m%d%H%M%S")
    done = await client.complete_service_order(
        pb.CompleteServiceOrderRequest(
            out_order_no="DEMOPS1",
            post_payments=[pb.PostPayment(name="umbrella", amount=400, description="2 hours")],
            post_discounts=[pb.PostDiscount(name="member", amount=100)],
            total_amount=300,
            time_range=pb.TimeRange(end_time=ended),
        )
    )
    state = pb.ServiceOrderState.Name(done.state).removeprefix("SERVICE_ORDER_STATE_")
    say(f"    completed: total_amount={done.total_amount} {state}/{done.state_description}")
    check(
        (done.state_description, done.journal_state) == ("MCH_COMPLETE", "CHARGING"),
        "WeChat Pay collects the 300 fen; the daemon follows the charge (CHARGING)",
    )
    payscore.charge("DEMOPS1")
    got = await client.get_service_order("DEMOPS1")
    say(f"    charged: {pb.ServiceOrderState.Name(got.state)} journal={got.journal_state}")
    check(got.state == pb.SERVICE_ORDER_STATE_DONE, "charged 300 fen: the order is DONE")

    say("\n● PayScore: a user who declines")
    decliner = SimUser(
        openid="oDemoDecliner0000000000001", has_payscore=False, authorizes_payscore=False
    )
    sim.script(FaceOutcome.SUCCESS, user=decliner)
    declined = await client.check_pay_score_status("DEMOPS2")
    outcome = pb.PayScoreOutcome.Name(declined.outcome).removeprefix("PAY_SCORE_OUTCOME_")
    say(f"    getUserPayScoreStatus: {outcome} ({declined.return_msg})")
    check(declined.outcome == pb.PAY_SCORE_OUTCOME_ERROR, "no PayScore: offer a payment code")
    check("DEMOPS2" not in payscore.orders, "no service order was created")


async def demo(workdir: Path) -> None:
    """Run every step; raise DemoFailed when one does not hold."""
    say(
        "facepay-terminal demo: the real daemon, the real adb server,"
        " simulated peripheral and WeChat Pay"
    )
    stack = SimStack(workdir / "sim", SimOptions(userpaying_seconds=2.0))
    await stack.start()
    daemon = DaemonProcess(stack, workdir / "daemon")
    try:
        await daemon.start(log_level="info")
        sim, wxpay = stack.terminal, stack.wxpay
        assert sim is not None
        assert wxpay is not None
        async with daemon.client() as client:
            status = await client.get_status()
            device = status.device
            say(f"\n● daemon SERVING on {daemon.socket}")
            say(f"    device: {device.model} serial {device.serial} via {device.transport}")
            say(
                f"    WxPayFace SDK {device.sdk_version}, face app {device.face_app_version or '-'}"
            )

            say("\n● capture 1 (cold: the SDK was initialized at start, authinfo fetched once)")
            face = await capture(client, "DEMOCAP1")
            say(f"    face_code={face.face_code} openid={face.openid}")
            inits, fetches, rawdata = (
                sim.calls["initWxpayface"],
                wxpay.authinfo_fetches,
                sim.calls["getWxpayfaceRawdata"],
            )
            say(
                f"    simulator counts: initWxpayface={inits}"
                f" getWxpayfaceRawdata={rawdata} authinfo fetches={fetches}"
            )

            say("\n● capture 2 (warm)")
            mark = len(sim.timeline)
            face = await capture(client, "DEMOCAP2")
            say(f"    face_code={face.face_code} openid={face.openid}")
            warm = sim.timeline[mark:]
            before_camera = warm[: warm.index("camera_open")]
            say(f"    bridge calls before the camera opened: {before_camera}")
            check(sim.calls["initWxpayface"] == inits, "no init for the second capture")
            check(wxpay.authinfo_fetches == fetches, "no authinfo fetch for the second capture")
            check(
                sim.calls["getWxpayfaceRawdata"] == rawdata,
                "no rawdata call for the second capture",
            )
            check(
                before_camera == ["getWxpayfaceCode"], "exactly one bridge call before the camera"
            )

            say("\n● face payment: 1 fen, paid at once")
            last = await pay(client, "DEMOPAY1", 1, "demo coffee")
            check(last.state == pb.PAYMENT_STATE_SUCCEEDED, "paid")

            say("\n● face payment: the user confirms with a password (USERPAYING, then paid)")
            last = await pay(client, "DEMOPAY2", 101, "demo sandwich")
            check(last.state == pb.PAYMENT_STATE_SUCCEEDED, "paid after USERPAYING")

            say("\n● face payment: the user never confirms (USERPAYING until the give-up time)")
            last = await pay(client, "DEMOPAY3", 102, "demo cake")
            check(last.state == pb.PAYMENT_STATE_REVERSED, "reversed, not left open")
            order = wxpay.order("DEMOPAY3")
            check(order is not None and not order.charged, "WeChat's ledger shows nothing charged")

            await refund_demo(client, stack)

            await scan_instead_demo(client, stack)
            await payscore_demo(client, stack)
        code = await daemon.stop()
        check(code == 0, "the daemon stopped cleanly on SIGTERM")
    except BaseException:
        say(f"\n--- daemon log ({daemon.log_path}) ---\n{daemon.log()[-4000:]}")
        raise
    finally:
        await daemon.kill()
        await stack.stop()


def main() -> int:
    """Console entry point of the demo."""
    # The simulators log to this process; the demo's own lines are the story here.
    logs.configure_logging(level="warning")
    with tempfile.TemporaryDirectory(prefix="facepay-demo-") as tmp:
        try:
            asyncio.run(demo(Path(tmp)))
        except DemoFailed as exc:
            say(f"\nDEMO FAILED: {exc}")
            return 1
    say("\ndemo finished: every step held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
