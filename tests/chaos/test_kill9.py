"""SIGKILL the daemon at each journal step and at random instants; check journal against ledger.

Every kill comes from outside the daemon: when a POS stream shows that a step was journaled,
when the simulated WeChat Pay has acted on a call but not yet answered, or at a random
instant. The daemon restarts on the same state directory each time. The simulated WeChat Pay
is the strict one: a reverse of an order it never saw is refused (TRADE_ERROR, recall=N). At
the end, the simulator's ledger (what really happened to the money) must agree with the
journal: every order final or NEEDS_ATTENTION with a reason, nothing charged twice, nothing
paid unrecorded, and no reverse sooner than reverse_after after its order's micropay.

Refunds too: each round also refunds parts of earlier paid sales (amounts that pick the
simulator's refund scenarios: PROCESSING for a while, SYSTEMERROR taken or not, a dropped answer,
NOTENOUGH...), killed when RECORDED or SENDING is journaled, when WeChat Pay has acted on a refund
or a refundquery, or at random. At the end: no refund request arrived for a refund WeChat Pay
already had (nothing refunded twice), no order refunded past what was paid, every refund at
WeChat Pay journaled, and the journal's outcome of each is WeChat Pay's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import FacepayClientError, NotFoundError, TerminalClient
from facepayd.sim.daemon_process import DaemonProcess
from facepayd.sim.refunds import RefundStatus
from facepayd.sim.stack import SimOptions, SimStack
from facepayd.sim.terminal import SimLatencies
from facepayd.sim.wxpay import (
    MICROPAY_PATH,
    ORDERQUERY_PATH,
    REFUND_PATH,
    REFUNDQUERY_PATH,
    REVERSE_PATH,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(360)]

S = pb.PaymentState
FINAL = {
    S.PAYMENT_STATE_SUCCEEDED,
    S.PAYMENT_STATE_FAILED,
    S.PAYMENT_STATE_REVERSED,
    S.PAYMENT_STATE_CANCELLED,
    S.PAYMENT_STATE_CLOSED,
}
# Settled: final, or waiting for an operator with a reason and an action.
SETTLED = FINAL | {S.PAYMENT_STATE_NEEDS_ATTENTION}
REVERSE_AFTER = 1.5  # the stack's payments.reverse_after
# The daemon's journaled pay_sent_at comes a moment before the simulator sees the micropay.
ARRIVAL_SLACK = 0.25
# success, USERPAYING then success, USERPAYING forever, reverse with recall, SYSTEMERROR (paid and
# not), BANKERROR, NOTENOUGH, slow answer, dropped connection after the request was read.
MIX = (1, 1, 101, 101, 102, 104, 201, 202, 203, 301, 501, 502, 502)
# (what to wait for, which event kind / state / backend call, an amount that surely reaches it)
TRIGGERS: tuple[tuple[str, str, int], ...] = (
    ("event", "session_started", 1),  # CAPTURING committed
    ("event", "face_captured", 1),  # PAYING committed, micropay about to go
    ("backend", MICROPAY_PATH, 1),  # WeChat Pay charged, the answer not yet read
    ("backend", MICROPAY_PATH, 502),
    ("event", "pending", 101),  # PENDING committed
    ("backend", ORDERQUERY_PATH, 201),
    ("event", "succeeded", 1),  # SUCCEEDED committed
    ("event", "failed", 301),
    ("state", "REVERSING", 102),  # REVERSING committed, reverse about to go
    ("backend", REVERSE_PATH, 102),  # reversed at WeChat Pay, not yet journaled
    ("backend", REVERSE_PATH, 104),
    ("event", "reversed", 102),
    ("random", "", 1),
    ("random", "", 101),
    ("random", "", 502),
    # Refund steps (the amount is the refund_fee of the round's first refund).
    ("refund_state", "RECORDED", 500),  # recorded, nothing sent
    ("refund_state", "SENDING", 500),  # SENDING committed, the request about to go
    ("refund_state", "SENDING", 7103),
    ("backend", REFUND_PATH, 500),  # refunded at WeChat Pay, the answer not yet read
    ("backend", REFUND_PATH, 7104),
    ("refund_state", "PROCESSING", 7101),
    ("backend", REFUNDQUERY_PATH, 7101),
)
RS = pb.RefundState
REFUND_SETTLED = {
    RS.REFUND_STATE_SUCCEEDED,
    RS.REFUND_STATE_CLOSED,
    RS.REFUND_STATE_CHANGE,
    RS.REFUND_STATE_FAILED,
    RS.REFUND_STATE_NEEDS_ATTENTION,
}
# Refund fees: plain, PROCESSING then SUCCESS, SYSTEMERROR then success, SYSTEMERROR but taken,
# a dropped answer, BIZERR_NEED_RETRY, NOTENOUGH, REFUNDCLOSE, a refundquery SYSTEMERROR.
REFUND_MIX = (500, 500, 7101, 7103, 7104, 7108, 7110, 7102, 7106, 7112)
SALE = 20_000  # each round pays one sale this big, refunded in later rounds
ROUNDS = len(TRIGGERS) + 11
PAYMENTS_PER_ROUND = 4
TRIGGER_DEADLINE = 8.0


@dataclass
class Chaos:
    """The run's bookkeeping."""

    stack: SimStack
    daemon: DaemonProcess
    rng: random.Random
    attempted: set[str] = field(default_factory=set)
    kills: dict[str, int] = field(default_factory=dict)
    armed: tuple[str, str] | None = None
    fired: asyncio.Event = field(default_factory=asyncio.Event)
    sales: list[str] = field(default_factory=list)  # paid sales this big, to refund
    refunds: set[str] = field(default_factory=set)  # out_refund_no attempted
    journaled_refunds: dict[str, pb.Refund] = field(default_factory=dict)

    def kill_now(self, label: str) -> None:
        """SIGKILL right now, synchronously, from whatever callback saw the step."""
        process = self.daemon.process
        if process is None or process.returncode is not None or self.fired.is_set():
            return
        os.kill(process.pid, signal.SIGKILL)
        self.kills[label] = self.kills.get(label, 0) + 1
        self.fired.set()

    def on_event(self, event: pb.PaymentEvent) -> None:
        if self.armed is None:
            return
        kind, what = self.armed
        if (kind == "event" and event.WhichOneof("kind") == what) or (
            kind == "state" and S.Name(event.state) == f"PAYMENT_STATE_{what}"
        ):
            self.kill_now(f"{kind}:{what}")

    def on_refund_event(self, event: pb.RefundEvent) -> None:
        if self.armed is None:
            return
        kind, what = self.armed
        if kind == "refund_state" and RS.Name(event.state) == f"REFUND_STATE_{what}":
            self.kill_now(f"{kind}:{what}")

    def on_backend(self, path: str, fields: Mapping[str, str]) -> None:
        if self.armed != ("backend", path):
            return
        if fields.get("out_trade_no") in self.attempted or fields.get("out_refund_no") in (
            self.refunds
        ):
            self.kill_now(f"backend:{path}")


async def _follow_pay(chaos: Chaos, client: TerminalClient, out_trade_no: str, amount: int) -> None:
    chaos.attempted.add(out_trade_no)
    face = pb.FaceOptions(wait_if_busy=True)
    with contextlib.suppress(FacepayClientError):
        async for event in client.start_face_pay(out_trade_no, amount, "chaos", face=face):
            chaos.on_event(event)


async def _follow_watch(chaos: Chaos, client: TerminalClient, out_trade_no: str) -> None:
    with contextlib.suppress(FacepayClientError):
        async for event in client.watch_payment(out_trade_no):
            chaos.on_event(event)


async def _follow_refund(
    chaos: Chaos, client: TerminalClient, out_trade_no: str, fee: int, out_refund_no: str
) -> None:
    chaos.refunds.add(out_refund_no)
    with contextlib.suppress(FacepayClientError):
        async for event in client.refund_payment(out_trade_no, fee, out_refund_no):
            chaos.on_refund_event(event)


async def _follow_refund_watch(chaos: Chaos, client: TerminalClient, out_refund_no: str) -> None:
    with contextlib.suppress(FacepayClientError):
        async for event in client.watch_refund(out_refund_no):
            chaos.on_refund_event(event)


async def _journal_refunds(chaos: Chaos, client: TerminalClient) -> dict[str, pb.Refund]:
    """Every refund the journal has of the sales, by out_refund_no."""
    found: dict[str, pb.Refund] = {}
    for sale in chaos.sales:
        with contextlib.suppress(NotFoundError):
            for refund in (await client.list_refunds(sale)).refunds:
                found[refund.out_refund_no] = refund
    return found


async def _unsettled_refunds(chaos: Chaos, client: TerminalClient) -> list[str]:
    refunds = await _journal_refunds(chaos, client)
    return [no for no, r in refunds.items() if r.state not in REFUND_SETTLED]


async def _paid_sales(chaos: Chaos, client: TerminalClient) -> list[str]:
    paid = []
    for sale in chaos.sales:
        with contextlib.suppress(NotFoundError):
            if (await client.get_payment(sale)).state == S.PAYMENT_STATE_SUCCEEDED:
                paid.append(sale)
    return paid


async def _unfinished(client: TerminalClient) -> list[str]:
    states = [s for s in S.values() if s not in SETTLED and s != S.PAYMENT_STATE_UNSPECIFIED]
    page = await client.list_payments(states=states, page_size=200)
    return [p.out_trade_no for p in page.payments]


async def _round(chaos: Chaos, number: int) -> None:
    kind, what, amount = TRIGGERS[number % len(TRIGGERS)]
    chaos.fired.clear()
    tasks: list[asyncio.Task[None]] = []
    async with chaos.daemon.client(timeout=10.0) as client:
        # Armed only after this call, so a resumed payment cannot kill the daemon under it.
        for out_trade_no in await _unfinished(client):
            tasks.append(asyncio.create_task(_follow_watch(chaos, client, out_trade_no)))
        for out_refund_no in await _unsettled_refunds(chaos, client):
            tasks.append(asyncio.create_task(_follow_refund_watch(chaos, client, out_refund_no)))
        paid = await _paid_sales(chaos, client)
        chaos.armed = None if kind == "random" else (kind, what)
        refunding = kind.startswith("refund") or what in (REFUND_PATH, REFUNDQUERY_PATH)
        amounts = [1 if refunding else amount]
        amounts += [chaos.rng.choice(MIX) for _ in range(PAYMENTS_PER_ROUND - 1)]
        for n, fen in enumerate(amounts):
            tasks.append(
                asyncio.create_task(_follow_pay(chaos, client, f"K{number:02d}N{n}A{fen}", fen))
            )
        sale = f"K{number:02d}SALE"
        chaos.sales.append(sale)
        tasks.append(asyncio.create_task(_follow_pay(chaos, client, sale, SALE)))
        # Two refunds of earlier sales: the first one's fee reaches this round's step.
        fees = [amount if refunding else chaos.rng.choice(REFUND_MIX)]
        fees.append(chaos.rng.choice(REFUND_MIX))
        for n, (target, fee) in enumerate(
            zip(chaos.rng.sample(paid, min(2, len(paid))), fees, strict=False)
        ):
            no = f"K{number:02d}R{n}F{fee}"
            tasks.append(asyncio.create_task(_follow_refund(chaos, client, target, fee, no)))
        if kind == "random":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(chaos.fired.wait(), chaos.rng.uniform(0.0, 3.0))
            chaos.kill_now("random")
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(chaos.fired.wait(), TRIGGER_DEADLINE)
            # The step did not come (the round's random payments died first): kill anyway.
            chaos.kill_now("deadline")
        await chaos.daemon.kill()
        chaos.armed = None
        await asyncio.gather(*tasks, return_exceptions=True)


async def _settle(chaos: Chaos, deadline: float) -> dict[str, pb.Payment]:
    """Restart once more and wait until every payment the journal knows is final."""
    await chaos.daemon.start()
    async with chaos.daemon.client() as client:
        while await _unfinished(client) or await _unsettled_refunds(chaos, client):
            unsettled = await _unfinished(client), await _unsettled_refunds(chaos, client)
            assert time.monotonic() < deadline, f"not settled: {unsettled}"
            await asyncio.sleep(0.2)
        found: dict[str, pb.Payment] = {}
        for out_trade_no in sorted(chaos.attempted):
            with contextlib.suppress(NotFoundError):
                found[out_trade_no] = await client.get_payment(out_trade_no)
        chaos.journaled_refunds = await _journal_refunds(chaos, client)
    await chaos.daemon.stop()
    return found


async def test_sigkill_at_every_step_never_loses_or_double_charges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("FACEPAY_CHAOS_SEED", "0")) or random.SystemRandom().randrange(
        1, 2**31
    )
    with capsys.disabled():  # shown in `make test`'s output, passed or failed
        print(f"\nchaos seed {seed} (FACEPAY_CHAOS_SEED={seed} replays the same choices)")
    stack = SimStack(
        tmp_path / "sim",
        SimOptions(
            device="tcp",
            latencies=SimLatencies(init=0.0, rawdata=0.0, face_capture=0.05, update_result=0.0),
            slow_seconds=3.0,
            userpaying_seconds=1.0,
        ),
    )
    await stack.start()
    daemon = DaemonProcess(
        stack,
        tmp_path / "daemon",
        wxpay={"read_timeout": 1.5, "request_timeout": 2.0},
        # A killed daemon's micropay is not in flight: 3 s after pay_sent_at it never will be.
        payments={"in_flight_after": 3.0, "attention_after": 30.0},
    )
    chaos = Chaos(stack, daemon, random.Random(seed))
    assert stack.wxpay is not None
    stack.wxpay.observers.append(chaos.on_backend)
    try:
        for number in range(ROUNDS):
            await daemon.start()
            await _round(chaos, number)
        journal = await _settle(chaos, time.monotonic() + 60)
    except BaseException:
        print(daemon.log()[-6000:])
        raise
    finally:
        await daemon.kill()
        await stack.stop()

    ledger = stack.wxpay.ledger
    problems: list[str] = []
    for out_trade_no, record in ledger.items():
        payment = journal.get(out_trade_no)
        state = S.Name(payment.state) if payment is not None else "MISSING"
        where = f"{out_trade_no}: journal {state}, ledger {record}"
        if record.charge_count > 1:
            problems.append(f"charged twice: {where}")
        if record.micropay_calls > 1:
            problems.append(f"micropay sent twice: {where}")
        if payment is None:
            # Only a reverse of an order WeChat Pay never saw may be unknown to the journal... and
            # even that must not happen: the journal is written first.
            problems.append(f"in the ledger, not in the journal: {where}")
            continue
        if record.charged and payment.state not in (
            S.PAYMENT_STATE_SUCCEEDED,
            S.PAYMENT_STATE_NEEDS_ATTENTION,
        ):
            problems.append(f"charged but not SUCCEEDED (paid unrecorded): {where}")
        if payment.state == S.PAYMENT_STATE_SUCCEEDED and not record.charged:
            problems.append(f"SUCCEEDED but not charged: {where}")
        if payment.state == S.PAYMENT_STATE_CANCELLED and record.micropay_calls:
            problems.append(f"CANCELLED after micropay was sent: {where}")
        if payment.state == S.PAYMENT_STATE_CLOSED and record.charged:
            problems.append(f"CLOSED but charged: {where}")
    for record in stack.wxpay.reverses():
        if record.age is not None and record.age < REVERSE_AFTER - ARRIVAL_SLACK:
            problems.append(f"reversed {record.age:.2f} s after micropay: {record}")
    for out_trade_no, payment in journal.items():
        if payment.state not in SETTLED:
            problems.append(f"not final: {out_trade_no} {S.Name(payment.state)}")
        if payment.state == S.PAYMENT_STATE_NEEDS_ATTENTION and not (
            payment.attention_reason and payment.attention_action
        ):
            problems.append(f"NEEDS_ATTENTION without a reason and action: {out_trade_no}")
        if payment.state == S.PAYMENT_STATE_SUCCEEDED and out_trade_no not in ledger:
            problems.append(f"SUCCEEDED without an order at WeChat Pay: {out_trade_no}")
    problems += _refund_problems(chaos, journal)
    kills = sum(chaos.kills.values())
    steps = sorted(label for label in chaos.kills if label not in ("random", "deadline"))
    outcomes: dict[str, int] = {}
    for payment in journal.values():
        name = S.Name(payment.state).removeprefix("PAYMENT_STATE_")
        outcomes[name] = outcomes.get(name, 0) + 1
    with capsys.disabled():
        print(
            f"\nchaos: {kills} SIGKILLs ({chaos.kills}), {len(chaos.attempted)} orders attempted,"
            f" {len(journal)} journaled and checked, {len(ledger)} at WeChat Pay,"
            f" {len(stack.wxpay.reverses())} reverses; outcomes {outcomes}"
        )
    assert not problems, "\n".join(problems)
    assert kills >= ROUNDS
    assert len(steps) >= 8, f"too few journal steps were hit: {steps}"
    assert len(journal) >= 50
    assert len(ledger) >= 25
    assert outcomes.get("SUCCEEDED", 0)
    assert outcomes.get("REVERSED", 0)
    assert outcomes.get("FAILED", 0)
    refund_outcomes = {RS.Name(r.state) for r in chaos.journaled_refunds.values()}
    assert "REFUND_STATE_SUCCEEDED" in refund_outcomes, refund_outcomes
    assert len(stack.wxpay.refunds) >= 10
    assert any(label.startswith("refund_state") for label in chaos.kills), chaos.kills


def _refund_problems(chaos: Chaos, payments: dict[str, pb.Payment]) -> list[str]:
    """The refunds in the journal against WeChat Pay's refund ledger."""
    wxpay = chaos.stack.wxpay
    assert wxpay is not None
    problems: list[str] = []
    ledger, journal = wxpay.refunds, chaos.journaled_refunds
    for no, record in ledger.items():
        refund = journal.get(no)
        where = f"{no}: journal {RS.Name(refund.state) if refund else 'MISSING'}, ledger {record}"
        if record.duplicate_arrivals:
            problems.append(f"refund sent again while WeChat Pay had it: {where}")
        if refund is None:
            problems.append(f"refunded at WeChat Pay, not in the journal: {where}")
            continue
        want = {
            RefundStatus.SUCCESS: RS.REFUND_STATE_SUCCEEDED,
            RefundStatus.REFUNDCLOSE: RS.REFUND_STATE_CLOSED,
            RefundStatus.CHANGE: RS.REFUND_STATE_CHANGE,
        }.get(record.status)
        if refund.state != want and refund.state != RS.REFUND_STATE_NEEDS_ATTENTION:
            problems.append(f"journal and WeChat Pay disagree: {where}")
    for no, refund in journal.items():
        if refund.state == RS.REFUND_STATE_FAILED and no in ledger:
            problems.append(f"FAILED but refunded at WeChat Pay: {no} {ledger[no]}")
        if refund.state == RS.REFUND_STATE_SUCCEEDED and no not in ledger:
            problems.append(f"SUCCEEDED without a refund at WeChat Pay: {no}")
        if refund.state == RS.REFUND_STATE_NEEDS_ATTENTION and not refund.attention_action:
            problems.append(f"refund NEEDS_ATTENTION without an action: {no}")
    for sale in chaos.sales:
        taken = wxpay.refund_desk.refunded_fee(sale)
        if taken > SALE:
            problems.append(f"{sale} refunded {taken} of {SALE} fen")
        payment = payments.get(sale)
        succeeded = sum(
            r.refund_fee
            for r in ledger.values()
            if r.out_trade_no == sale and r.status is RefundStatus.SUCCESS
        )
        if payment is not None and payment.refunded_fee != succeeded:
            problems.append(f"{sale}: refunded_fee {payment.refunded_fee}, WeChat Pay {succeeded}")
    return problems
