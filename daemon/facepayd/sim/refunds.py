"""The simulated WeChat Pay's refunds: secapi/pay/refund and pay/refundquery over its v2 ledger.

State (one entry per out_refund_no, against the paid orders of the WeChat Pay simulator) +
answers in WeChat Pay's v2 fields + scenarios. WxPaySimulator serves it on its HTTPS server
(refund only over the client-certificate connection) and signs its answers. It is never kinder
than WeChat Pay, and follows its public v2 refund documentation:

- A refund needs a paid order (ORDERNOTEXIST; INVALID_TRANSACTIONID for an unknown
  transaction_id; ORDER_NOT_PAID, an assumption, for one that is not paid or was reversed), the
  order's own total_fee (PARAM_ERROR), 1 <= refund_fee <= total_fee (PARAM_ERROR), and the
  refunds of the order (all but REFUNDCLOSE ones) within what was paid: ERROR otherwise, as for
  a 51st refund. An order paid more than a year ago answers TRADE_OVERDUE.
- out_refund_no is the refund: the same number again with the same refund_fee answers as the
  first did and refunds nothing more (counted in `duplicate_arrivals`: a daemon that only resends
  after a REFUNDNOTEXIST never makes one); another refund_fee answers REFUND_FEE_MISMATCH.
- refundquery takes refund_id, out_refund_no, transaction_id or out_trade_no (that priority);
  REFUNDNOTEXIST when nothing matches, INVALID_TRANSACTIONID for an unknown transaction_id.

Scenarios are picked by the refund_fee (fen), see FEE_SCENARIOS, or scripted for the next refund
with `script(out_refund_no or "*", scenario)`:

  fen   scenario                  refund answers                 the refund really is
  ----  ------------------------  -----------------------------  ---------------------------------
  any   SUCCESS (default)         SUCCESS (accepted)             SUCCESS at once
  7101  PROCESSING_THEN_SUCCESS   SUCCESS                        PROCESSING processing_seconds,
                                                                 then SUCCESS
  7102  NOTENOUGH                 NOTENOUGH                      never created
  7103  SYSTEMERROR_THEN_SUCCESS  SYSTEMERROR, then SUCCESS      created by the second request
  7104  SYSTEMERROR_ACCEPTED      SYSTEMERROR                    SUCCESS (taken despite the error)
  7105  FREQUENCY_LIMITED         FREQUENCY_LIMITED, then SUCCESS  created by the second request
  7106  REFUNDCLOSE               SUCCESS                        PROCESSING, then REFUNDCLOSE
  7107  CHANGE                    SUCCESS                        PROCESSING, then CHANGE
  7108  DROP_CONNECTION           connection cut after acting    SUCCESS
  7109  USER_ACCOUNT_ABNORMAL     USER_ACCOUNT_ABNORMAL          never created
  7110  BIZERR_NEED_RETRY         BIZERR_NEED_RETRY, then SUCCESS  created by the second request
  7111  TRADE_OVERDUE             TRADE_OVERDUE                  never created
  7112  QUERY_SYSTEMERROR         SUCCESS                        SUCCESS; its first refundquery
                                                                 answers SYSTEMERROR

A "then SUCCESS" scenario answers its error to the first request of the number only.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from facepayd.clock import Clock

__all__ = [
    "FEE_SCENARIOS",
    "REFUND_WINDOW",
    "PaidOrder",
    "RefundDesk",
    "RefundRecord",
    "RefundScenario",
    "RefundStatus",
]

REFUND_WINDOW = 365 * 24 * 3600.0  # "交易时间超过一年的订单无法提交退款"
MAX_REFUNDS = 50  # "每个支付订单的部分退款次数不能超过50次"


class RefundScenario(enum.StrEnum):
    """A scripted refund outcome."""

    SUCCESS = "SUCCESS"
    PROCESSING_THEN_SUCCESS = "PROCESSING_THEN_SUCCESS"
    NOTENOUGH = "NOTENOUGH"
    SYSTEMERROR_THEN_SUCCESS = "SYSTEMERROR_THEN_SUCCESS"
    SYSTEMERROR_ACCEPTED = "SYSTEMERROR_ACCEPTED"
    FREQUENCY_LIMITED = "FREQUENCY_LIMITED"
    REFUNDCLOSE = "REFUNDCLOSE"
    CHANGE = "CHANGE"
    DROP_CONNECTION = "DROP_CONNECTION"
    USER_ACCOUNT_ABNORMAL = "USER_ACCOUNT_ABNORMAL"
    BIZERR_NEED_RETRY = "BIZERR_NEED_RETRY"
    TRADE_OVERDUE = "TRADE_OVERDUE"
    QUERY_SYSTEMERROR = "QUERY_SYSTEMERROR"


FEE_SCENARIOS: Mapping[int, RefundScenario] = MappingProxyType(
    {
        7101: RefundScenario.PROCESSING_THEN_SUCCESS,
        7102: RefundScenario.NOTENOUGH,
        7103: RefundScenario.SYSTEMERROR_THEN_SUCCESS,
        7104: RefundScenario.SYSTEMERROR_ACCEPTED,
        7105: RefundScenario.FREQUENCY_LIMITED,
        7106: RefundScenario.REFUNDCLOSE,
        7107: RefundScenario.CHANGE,
        7108: RefundScenario.DROP_CONNECTION,
        7109: RefundScenario.USER_ACCOUNT_ABNORMAL,
        7110: RefundScenario.BIZERR_NEED_RETRY,
        7111: RefundScenario.TRADE_OVERDUE,
        7112: RefundScenario.QUERY_SYSTEMERROR,
    }
)

# Definite refusals: (err_code, err_code_des); nothing is created.
_REFUSALS: Mapping[RefundScenario, tuple[str, str]] = MappingProxyType(
    {
        RefundScenario.NOTENOUGH: ("NOTENOUGH", "基本账户余额不足"),
        RefundScenario.USER_ACCOUNT_ABNORMAL: ("USER_ACCOUNT_ABNORMAL", "退款请求失败"),
        RefundScenario.TRADE_OVERDUE: ("TRADE_OVERDUE", "订单已经超过退款期限"),
    }
)
# Errors answered to the first request of a number only; nothing is created by it.
_FIRST_ERRORS: Mapping[RefundScenario, tuple[str, str]] = MappingProxyType(
    {
        RefundScenario.SYSTEMERROR_THEN_SUCCESS: ("SYSTEMERROR", "系统超时"),
        RefundScenario.FREQUENCY_LIMITED: ("FREQUENCY_LIMITED", "请降低频率后重试"),
        RefundScenario.BIZERR_NEED_RETRY: (
            "BIZERR_NEED_RETRY",
            "退款业务流程错误",
        ),
    }
)


class RefundStatus(enum.StrEnum):
    """Where a simulated refund really stands (refund_status_$n)."""

    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    REFUNDCLOSE = "REFUNDCLOSE"
    CHANGE = "CHANGE"


# Where an accepted refund ends, after processing_seconds (SUCCESS at once unless listed).
_ENDS: Mapping[RefundScenario, RefundStatus] = MappingProxyType(
    {
        RefundScenario.PROCESSING_THEN_SUCCESS: RefundStatus.SUCCESS,
        RefundScenario.REFUNDCLOSE: RefundStatus.REFUNDCLOSE,
        RefundScenario.CHANGE: RefundStatus.CHANGE,
    }
)
_RECV_ACCOUNT = {
    RefundStatus.SUCCESS: "支付用户的零钱",
    RefundStatus.CHANGE: "招商银行信用卡0403",
    RefundStatus.REFUNDCLOSE: "",
    RefundStatus.PROCESSING: "",
}


@dataclass(frozen=True, slots=True)
class PaidOrder:
    """What the refund desk needs to know of a ledger order."""

    out_trade_no: str
    transaction_id: str
    total_fee: int
    paid: bool  # money is held now (paid, not reversed)
    paid_at: float


@dataclass(frozen=True, slots=True)
class RefundRecord:
    """A snapshot of one refund, for tests and chaos checks."""

    out_refund_no: str
    out_trade_no: str
    refund_id: str
    refund_fee: int
    status: RefundStatus
    arrivals: int  # refund requests of this number that reached the simulator
    # Requests that arrived while the refund already existed: a resend the daemon should not make.
    duplicate_arrivals: int
    queries: int
    scenario: RefundScenario


@dataclass(slots=True)
class _Refund:
    out_refund_no: str
    out_trade_no: str
    transaction_id: str
    refund_id: str
    refund_fee: int
    total_fee: int
    scenario: RefundScenario
    created_at: float
    arrivals: int = 1
    duplicate_arrivals: int = 0
    queries: int = 0
    answered_error: bool = False  # SYSTEMERROR_ACCEPTED: every repeat answers it too

    def status(self, now: float, processing_seconds: float) -> RefundStatus:
        end = _ENDS.get(self.scenario)
        if end is None:
            return RefundStatus.SUCCESS
        return end if now - self.created_at >= processing_seconds else RefundStatus.PROCESSING

    def snapshot(self, now: float, processing_seconds: float) -> RefundRecord:
        return RefundRecord(
            out_refund_no=self.out_refund_no,
            out_trade_no=self.out_trade_no,
            refund_id=self.refund_id,
            refund_fee=self.refund_fee,
            status=self.status(now, processing_seconds),
            arrivals=self.arrivals,
            duplicate_arrivals=self.duplicate_arrivals,
            queries=self.queries,
            scenario=self.scenario,
        )


# A business answer: result fields, and whether the connection is cut instead of answering.
Answer = tuple[dict[str, str], bool]


class RefundDesk:
    """The refunds of the simulated WeChat Pay; answers are the fields after return_code."""

    def __init__(self, clock: Clock, *, processing_seconds: float = 2.0) -> None:
        self._clock = clock
        self.processing_seconds = processing_seconds
        self._refunds: dict[str, _Refund] = {}
        self._first_errors: dict[str, int] = {}  # out_refund_no -> requests refused so far
        self._scripts: list[tuple[str, RefundScenario]] = []

    # --- scenarios and ledger

    def script(self, target: str, scenario: RefundScenario) -> None:
        """Play scenario on the next refund whose out_refund_no is target (or "*")."""
        self._scripts.append((target, scenario))

    @property
    def ledger(self) -> dict[str, RefundRecord]:
        """Every refund by out_refund_no."""
        now = self._clock.time()
        return {k: r.snapshot(now, self.processing_seconds) for k, r in self._refunds.items()}

    def refunded_fee(self, out_trade_no: str) -> int:
        """What the order's refunds take back (all but REFUNDCLOSE ones), in fen."""
        now = self._clock.time()
        return sum(
            r.refund_fee
            for r in self._refunds.values()
            if r.out_trade_no == out_trade_no
            and r.status(now, self.processing_seconds) is not RefundStatus.REFUNDCLOSE
        )

    def has_refunds(self, out_trade_no: str) -> bool:
        """Whether any refund of the order exists (such an order can no longer be reversed)."""
        return any(r.out_trade_no == out_trade_no for r in self._refunds.values())

    # --- endpoints

    def refund(
        self, fields: Mapping[str, str], find: Callable[[str, str], PaidOrder | None]
    ) -> Answer:
        """Answer one secapi/pay/refund request; find(out_trade_no, transaction_id)."""
        out_refund_no = fields.get("out_refund_no", "")
        out_trade_no = fields.get("out_trade_no", "")
        transaction_id = fields.get("transaction_id", "")
        total_fee, refund_fee = _fen(fields.get("total_fee")), _fen(fields.get("refund_fee"))
        if not out_refund_no or (not out_trade_no and not transaction_id):
            return _fail("PARAM_ERROR", "out_refund_no and out_trade_no or transaction_id")
        if total_fee is None or refund_fee is None or not 0 < refund_fee <= total_fee:
            return _fail("PARAM_ERROR", "退款金额大于支付金额")
        order = find(out_trade_no, transaction_id)
        if order is None:
            if transaction_id:
                return _fail("INVALID_TRANSACTIONID", "无效transaction_id")
            return _fail("ORDERNOTEXIST", "订单不存在")
        existing = self._refunds.get(out_refund_no)
        if existing is not None:
            return self._repeat(existing, order, refund_fee)
        scenario = self._scenario(out_refund_no, refund_fee)
        if not order.paid:
            return _fail("ORDER_NOT_PAID", "订单未支付")
        if total_fee != order.total_fee:
            return _fail("PARAM_ERROR", "订单金额与支付金额不一致")
        if self._clock.time() - order.paid_at >= REFUND_WINDOW:
            return _fail("TRADE_OVERDUE", "订单已经超过退款期限")
        refusal = _REFUSALS.get(scenario)
        if refusal is not None:
            return _fail(*refusal)
        first_error = _FIRST_ERRORS.get(scenario)
        if first_error is not None and out_refund_no not in self._first_errors:
            self._first_errors[out_refund_no] = 1
            return _fail(*first_error)
        mine = [r for r in self._refunds.values() if r.out_trade_no == order.out_trade_no]
        if len(mine) >= MAX_REFUNDS:
            return _fail("ERROR", "退款次数超过限制")
        if self.refunded_fee(order.out_trade_no) + refund_fee > order.total_fee:
            return _fail("ERROR", "累计退款金额大于支付金额")
        refund = _Refund(
            out_refund_no=out_refund_no,
            out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id,
            refund_id="50" + "".join(secrets.choice("0123456789") for _ in range(26)),
            refund_fee=refund_fee,
            total_fee=order.total_fee,
            scenario=scenario,
            created_at=self._clock.time(),
        )
        self._refunds[out_refund_no] = refund
        if scenario is RefundScenario.SYSTEMERROR_ACCEPTED:
            refund.answered_error = True
            return _fail("SYSTEMERROR", "系统超时")
        return self._accepted(refund), scenario is RefundScenario.DROP_CONNECTION

    def refundquery(
        self, fields: Mapping[str, str], find: Callable[[str, str], PaidOrder | None]
    ) -> Answer:
        """Answer one pay/refundquery request."""
        refund_id = fields.get("refund_id", "")
        out_refund_no = fields.get("out_refund_no", "")
        transaction_id = fields.get("transaction_id", "")
        out_trade_no = fields.get("out_trade_no", "")
        if refund_id:
            rows = [r for r in self._refunds.values() if r.refund_id == refund_id]
        elif out_refund_no:
            rows = [r for r in (self._refunds.get(out_refund_no),) if r is not None]
        elif transaction_id or out_trade_no:
            order = find(out_trade_no, transaction_id)
            if order is None and transaction_id:
                return _fail("INVALID_TRANSACTIONID", "无效transaction_id")
            key = order.out_trade_no if order is not None else out_trade_no
            rows = [r for r in self._refunds.values() if r.out_trade_no == key]
        else:
            return _fail("PARAM_ERROR", "refund_id, out_refund_no, transaction_id or out_trade_no")
        if not rows:
            return _fail("REFUNDNOTEXIST", "not exist")
        for row in rows:
            row.queries += 1
        first = rows[0]
        if first.scenario is RefundScenario.QUERY_SYSTEMERROR and first.queries == 1:
            return _fail("SYSTEMERROR", "系统超时")
        now = self._clock.time()
        answer = {
            "result_code": "SUCCESS",
            "transaction_id": first.transaction_id,
            "out_trade_no": first.out_trade_no,
            "total_fee": str(first.total_fee),
            "fee_type": "CNY",
            "cash_fee": str(first.total_fee),
            "refund_count": str(len(rows)),
            "total_refund_count": str(len(rows)),
        }
        for n, row in enumerate(rows):
            status = row.status(now, self.processing_seconds)
            answer.update(
                {
                    f"out_refund_no_{n}": row.out_refund_no,
                    f"refund_id_{n}": row.refund_id,
                    f"refund_channel_{n}": "ORIGINAL",
                    f"refund_fee_{n}": str(row.refund_fee),
                    f"settlement_refund_fee_{n}": str(row.refund_fee),
                    f"refund_status_{n}": status.value,
                    f"refund_account_{n}": "REFUND_SOURCE_UNSETTLED_FUNDS",
                    f"refund_recv_accout_{n}": _RECV_ACCOUNT[status],
                }
            )
            if status is RefundStatus.SUCCESS:
                done = row.created_at + (self.processing_seconds if row.scenario in _ENDS else 0)
                # China Standard Time, "yyyy-MM-dd HH:mm:ss" as refundquery writes it.
                answer[f"refund_success_time_{n}"] = time.strftime(
                    "%Y-%m-%d %H:%M:%S", time.gmtime(done + 8 * 3600)
                )
        return answer, False

    # --- helpers

    def _repeat(self, refund: _Refund, order: PaidOrder, refund_fee: int) -> Answer:
        """The same number again: the same refund, never a second one."""
        refund.arrivals += 1
        refund.duplicate_arrivals += 1
        if refund.out_trade_no != order.out_trade_no:
            return _fail("ERROR", "退款单号已被其他订单使用")
        if refund.refund_fee != refund_fee:
            return _fail("REFUND_FEE_MISMATCH", "同一个out_refund_no退款金额要一致")
        if refund.answered_error:
            return _fail("SYSTEMERROR", "系统超时")
        return self._accepted(refund), False

    def _scenario(self, out_refund_no: str, refund_fee: int) -> RefundScenario:
        for index, (target, scenario) in enumerate(self._scripts):
            if target in ("*", out_refund_no):
                del self._scripts[index]
                return scenario
        return FEE_SCENARIOS.get(refund_fee, RefundScenario.SUCCESS)

    @staticmethod
    def _accepted(refund: _Refund) -> dict[str, str]:
        return {
            "result_code": "SUCCESS",
            "transaction_id": refund.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_fee": str(refund.refund_fee),
            "settlement_refund_fee": str(refund.refund_fee),
            "total_fee": str(refund.total_fee),
            "cash_fee": str(refund.total_fee),
            "cash_refund_fee": str(refund.refund_fee),
        }


def _fail(err_code: str, description: str) -> Answer:
    return {"result_code": "FAIL", "err_code": err_code, "err_code_des": description}, False


def _fen(text: str | None) -> int | None:
    if not text or not text.isascii() or not text.isdigit() or len(text) > 12:
        return None
    return int(text)
