"""The rpc layer's rules for the cases the fuzzing found, over real gRPC on a Unix socket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd.errors import InvalidArgument
from facepayd.payments.models import PaymentOrder, PaymentState
from facepayd.rpc.payments import payment_order
from facepayd.rpc.refunds import refund_request_of
from facepayd.rpc.server import SERVICE_NAME
from facepayd.rpc.validation import MAX_VIOLATIONS, Rules, existing_out_trade_no
from facepayd.wxpay.charset import NOT_XML_RULE
from tests.helpers import settle
from tests.unit.face_world import face_world, world_server

Violations = list[tuple[str, str]]


@contextlib.asynccontextmanager
async def channel(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """A raw channel to the real server over the face world (a typed client would re-encode)."""
    async with (
        face_world(tmp_path) as world,
        world_server(world) as socket,
        grpc.aio.insecure_channel(f"unix:{socket}") as ch,
    ):
        yield ch


async def _refusal(ch: grpc.aio.Channel, rpc: str, data: bytes) -> tuple[str, str, Violations]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ch.unary_unary(f"/{SERVICE_NAME}/{rpc}")(data, timeout=10)
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info)
    assert status.details[1].Unpack(bad)
    return (
        info.reason,
        error.details() or "",
        [(v.field, v.description) for v in bad.field_violations],
    )


async def test_undecodable_bytes_are_invalid_argument_naming_the_method(tmp_path: Path) -> None:
    bad_utf8 = b"\x0a\x02\xc3\x28"  # GetPaymentRequest.out_trade_no = invalid UTF-8
    async with channel(tmp_path) as ch:
        reason, message, violations = await _refusal(ch, "GetPayment", bad_utf8)
        assert reason == "INVALID_FIELD"
        assert "GetPayment" in message
        assert "DecodeError" not in message
        assert [f for f, _ in violations] == ["request"]
        # A bad wire format in a streaming RPC's request, too.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in ch.unary_stream(f"/{SERVICE_NAME}/WatchStatus")(b"\x07", timeout=10):
                pass
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "WatchStatus" in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("field", "timestamp"),
    [
        ("created_after", {"seconds": 253_402_300_800}),
        ("created_after", {"nanos": -1}),
        ("created_before", {"seconds": -62_135_596_801}),
        ("created_before", {"nanos": 1_000_000_000}),
    ],
)
async def test_list_payments_timestamps_out_of_range_name_their_field(
    tmp_path: Path, field: str, timestamp: dict[str, int]
) -> None:
    request = pb.ListPaymentsRequest(**{field: timestamp})  # type: ignore[arg-type]
    async with channel(tmp_path) as ch:
        _, _, violations = await _refusal(ch, "ListPayments", request.SerializeToString())
    assert [f for f, _ in violations] == [field]


async def test_a_320_digit_page_token_is_refused_as_page_token(tmp_path: Path) -> None:
    forged = base64.urlsafe_b64encode(("[" + "9" * 320 + ',"P1"]').encode()).decode()
    async with channel(tmp_path) as ch:
        for token in (forged.rstrip("=") + ".AAAAAAAAAAAAAAAAAAAAAA", "A" * 257, "a b"):
            request = pb.ListPaymentsRequest(page_token=token)
            _, _, violations = await _refusal(ch, "ListPayments", request.SerializeToString())
            assert [f for f, _ in violations] == ["page_token"]


@pytest.mark.parametrize(
    ("toast", "rule"),
    [
        ("line\nbreak", "must not contain control characters"),
        ("\x7f", "must not contain control characters"),
        ("测" * 65, "must be at most 192 bytes in UTF-8"),
        ("x" * 193, "must be at most 192 bytes in UTF-8"),
    ],
)
async def test_cancel_session_toast_text_is_bounded_in_bytes_without_controls(
    tmp_path: Path, toast: str, rule: str
) -> None:
    request = pb.CancelSessionRequest(toast_text=toast)
    async with channel(tmp_path) as ch:
        _, _, violations = await _refusal(ch, "CancelSession", request.SerializeToString())
    assert violations == [("toast_text", rule)]


async def test_after_seq_beyond_sqlite_and_unknown_enums_are_refused(tmp_path: Path) -> None:
    async with channel(tmp_path) as ch:
        watch = pb.WatchPaymentRequest(out_trade_no="T1", after_seq=2**64 - 1)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in ch.unary_stream(f"/{SERVICE_NAME}/WatchPayment")(
                watch.SerializeToString(), timeout=10
            ):
                pass
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        report = pb.ReportPayResultRequest(session_id="fs_0123456789abcdef", result=7)
        _, _, violations = await _refusal(ch, "ReportPayResult", report.SerializeToString())
        assert [f for f, _ in violations] == ["result"]
        states = pb.ListPaymentsRequest(states=[pb.PAYMENT_STATE_SUCCEEDED] * 11)
        _, _, violations = await _refusal(ch, "ListPayments", states.SerializeToString())
        assert [f for f, _ in violations] == ["states"]


def test_rules_cap_the_listed_violations_and_check_dates() -> None:
    rules = Rules()
    for i in range(MAX_VIOLATIONS + 5):
        rules.max_chars(f"items[{i}].name", "\x00", 20)
    rules.time14("paid_time", "20250229120000", required=True)
    with pytest.raises(InvalidArgument) as caught:
        rules.check()
    violations = caught.value.violations
    assert len(violations) == MAX_VIOLATIONS + 1
    assert violations[-1] == ("request", "and 6 more violations")
    dates = Rules()
    dates.time14("paid_time", "20240229120000", required=True)
    dates.time14("start", "OnAccept", required=True, also=("OnAccept",))
    dates.check()


# Characters XML 1.0 cannot carry; a v2 request holding one is refused by the XML builder on
# every send, so the API refuses it first.
NOT_XML_TEXT = ("ok\uffff", "ok\ufffe")


@pytest.mark.parametrize("text", NOT_XML_TEXT)
def test_free_text_that_xml_cannot_carry_is_refused_by_every_text_rule(text: str) -> None:
    rules = Rules()
    rules.max_bytes("a", text, 80)
    rules.max_chars("b", text, 80)
    rules.json_object("c", json.dumps({"k": text}, ensure_ascii=False), 600)
    with pytest.raises(InvalidArgument) as caught:
        rules.check()
    assert caught.value.violations == [(name, NOT_XML_RULE) for name in ("a", "b", "c")]
    # The same characters as JSON escapes are plain ASCII, which XML carries.
    fine = Rules()
    fine.json_object("c", json.dumps({"k": text}), 600)
    fine.check()


@pytest.mark.parametrize("text", NOT_XML_TEXT)
def test_every_free_text_field_of_micropay_and_refund_refuses_what_xml_cannot_carry(
    text: str,
) -> None:
    detail = json.dumps({"goods_detail": [{"goods_name": text}]}, ensure_ascii=False)
    request = pb.StartCodePayRequest(
        out_trade_no="T1",
        total_fee=1,
        body=text,
        attach=text,
        detail=detail,
        goods_tag=text,
        scene_info=json.dumps({"store_info": {"name": text}}, ensure_ascii=False),
    )
    domain = SimpleNamespace(payments=SimpleNamespace(now=lambda: 1_700_000_000.0))
    rules = Rules()
    payment_order(request, 100, rules, domain)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as caught:
        rules.check()
    assert caught.value.violations == [
        (name, NOT_XML_RULE) for name in ("body", "attach", "detail", "goods_tag", "scene_info")
    ]
    refund = pb.RefundPaymentRequest(
        out_trade_no="T1", out_refund_no="R1", refund_fee=1, refund_desc=text
    )
    with pytest.raises(InvalidArgument) as refused:
        refund_request_of(refund, 100)
    assert refused.value.violations == [("refund_desc", NOT_XML_RULE)]


async def _stream_refusal(ch: grpc.aio.Channel, rpc: str, data: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in ch.unary_stream(f"/{SERVICE_NAME}/{rpc}")(data, timeout=10):
            pass
    return caught.value


async def test_an_order_with_at_sign_from_an_older_release_stays_reachable_but_no_new_one(
    tmp_path: Path,
) -> None:
    old = "OLD@1"
    async with (
        face_world(tmp_path) as world,
        world_server(world) as socket,
        grpc.aio.insecure_channel(f"unix:{socket}") as ch,
    ):
        # An older release accepted "@" in new orders: one is in the journal, paid.
        order = PaymentOrder(out_trade_no=old, total_fee=1, body="x")
        await world.payments.start_code_pay(order, "134567890123456789")
        assert (await world.payments.wait_final(old)).state is PaymentState.SUCCEEDED
        got = pb.GetPaymentResponse.FromString(
            await ch.unary_unary(f"/{SERVICE_NAME}/GetPayment")(
                pb.GetPaymentRequest(out_trade_no=old).SerializeToString(), timeout=10
            )
        )
        assert got.payment.out_trade_no == old
        watched = [
            pb.WatchPaymentResponse.FromString(raw)
            async for raw in ch.unary_stream(f"/{SERVICE_NAME}/WatchPayment")(
                pb.WatchPaymentRequest(out_trade_no=old).SerializeToString(), timeout=10
            )
        ]
        assert watched
        reverse = asyncio.ensure_future(
            ch.unary_unary(f"/{SERVICE_NAME}/ReversePayment")(
                pb.ReversePaymentRequest(out_trade_no=old).SerializeToString(), timeout=10
            )
        )
        while not reverse.done():  # the reverse's own waits run on the manual clock
            await world.clock.advance(1.0)
            await settle()
        reversed_ = pb.ReversePaymentResponse.FromString(reverse.result())
        assert reversed_.payment.state == pb.PAYMENT_STATE_REVERSED
        # The refund RPCs pass validation to the (here unconfigured) refund service.
        with pytest.raises(grpc.aio.AioRpcError) as listed:
            await ch.unary_unary(f"/{SERVICE_NAME}/ListRefunds")(
                pb.ListRefundsRequest(out_trade_no=old).SerializeToString(), timeout=10
            )
        assert listed.value.code() is not grpc.StatusCode.INVALID_ARGUMENT
        refund = pb.RefundPaymentRequest(out_trade_no=old, out_refund_no="R1", refund_fee=1)
        error = await _stream_refusal(ch, "RefundPayment", refund.SerializeToString())
        assert error.code() is not grpc.StatusCode.INVALID_ARGUMENT
        # A new order keeps micropay's rule.
        new = "NEW@1"
        for rpc, data in (
            (
                "StartCodePay",
                pb.StartCodePayRequest(
                    out_trade_no=new, total_fee=1, body="x", auth_code="134567890123456789"
                ),
            ),
            ("StartFacePay", pb.StartFacePayRequest(out_trade_no=new, total_fee=1, body="x")),
            ("CaptureFaceCode", pb.CaptureFaceCodeRequest(out_trade_no=new)),
        ):
            error = await _stream_refusal(ch, rpc, data.SerializeToString())
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, rpc
        assert await world.payments.find(new) is None
    # A lookup keeps orderquery's rule: "#" is in neither.
    rules = Rules()
    existing_out_trade_no(rules, "out_trade_no", "A#1")
    with pytest.raises(InvalidArgument) as refused:
        rules.check()
    assert refused.value.violations == [("out_trade_no", "must match [0-9A-Za-z_-|*@]{1,32}")]


@pytest.mark.parametrize(
    "text", ["[" * 6000, '{"a":' * 1200, '{"a":NaN}', '{"a":Infinity}', '{"a":[-Infinity]}']
)
def test_json_too_deep_or_with_nan_is_a_violation_of_the_field(text: str) -> None:
    rules = Rules()
    rules.json_object("detail", text, 6000)
    with pytest.raises(InvalidArgument) as caught:
        rules.check()
    assert caught.value.violations == [("detail", "must be a JSON object")]


async def test_a_detail_nested_past_the_parser_stack_is_invalid_argument_not_internal(
    tmp_path: Path,
) -> None:
    request = pb.StartCodePayRequest(
        out_trade_no="T1", total_fee=1, body="x", auth_code="134567890123456789", detail="[" * 6000
    )
    async with channel(tmp_path) as ch:
        error = await _stream_refusal(ch, "StartCodePay", request.SerializeToString())
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "detail: must be a JSON object"
