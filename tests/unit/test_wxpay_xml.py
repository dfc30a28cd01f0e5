"""The v2 XML codec: escaping on the way out, a strict and bounded parser on the way in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from facepayd.errors import InvalidArgument, ResponseNotTrusted
from facepayd.wxpay.xml import build_xml, parse_xml, read_capped

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b"<xml><return_code>&c;</return_code></xml>"
)


def test_build_escapes_and_round_trips() -> None:
    params = {
        "body": "a & b <c> \"d\" 'e' ]]> 刷脸",
        "attach": '{"k": "v"}',
        "multi": "line1\r\nline2\ttab",
    }
    data = build_xml(params)
    assert data.startswith(b"<xml>")
    assert data.endswith(b"</xml>")
    assert b"<c>" not in data
    assert b"&amp;" in data
    assert parse_xml(data) == params


def test_parse_reads_cdata_and_keeps_values_exact() -> None:
    data = (
        b"<xml><return_code><![CDATA[SUCCESS]]></return_code>\n"
        b"  <return_msg><![CDATA[ a <b> ]]></return_msg><empty></empty><self/></xml>"
    )
    assert parse_xml(data) == {
        "return_code": "SUCCESS",
        "return_msg": " a <b> ",
        "empty": "",
        "self": "",
    }


@pytest.mark.parametrize(
    "params",
    [{"bad name": "x"}, {"1abc": "x"}, {"a:b": "x"}, {"ok": "nul\x00"}, {"ok": "bell\x07"}],
)
def test_build_refuses_what_xml_cannot_carry(params: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument):
        build_xml(params)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(
            b'<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>',
            id="external-entity",
        ),
        pytest.param(
            b'<!DOCTYPE xml SYSTEM "http://127.0.0.1/x.dtd"><xml><a>1</a></xml>', id="dtd"
        ),
        pytest.param(b"<!DOCTYPE xml><xml><a>1</a></xml>", id="bare-doctype"),
    ],
)
def test_dtd_and_entities_are_refused(data: bytes) -> None:
    with pytest.raises(ResponseNotTrusted):
        parse_xml(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"<xml><a><b>1</b></a></xml>", id="nested"),
        pytest.param(b"<root><a>1</a></root>", id="wrong-root"),
        pytest.param(b'<xml v="1"><a>1</a></xml>', id="root-attribute"),
        pytest.param(b'<xml><a v="1">1</a></xml>', id="child-attribute"),
        pytest.param(b"<xml>text<a>1</a></xml>", id="root-text"),
        pytest.param(b"<xml><a>1</a>tail</xml>", id="tail-text"),
        pytest.param(b"<xml><a>1</a><a>2</a></xml>", id="duplicate"),
        pytest.param(b'<xml xmlns:n="urn:x"><n:a>1</n:a></xml>', id="namespaced"),
        pytest.param(b"<xml><a>1</a>", id="truncated"),
        pytest.param(b"not xml at all", id="not-xml"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"return_code": "SUCCESS"}', id="json"),
    ],
)
def test_only_flat_xml_is_accepted(data: bytes) -> None:
    with pytest.raises(ResponseNotTrusted):
        parse_xml(data)


def test_oversized_document_is_refused_before_parsing() -> None:
    data = build_xml({"attach": "A" * 2000})
    assert parse_xml(data, max_bytes=len(data))["attach"] == "A" * 2000
    with pytest.raises(ResponseNotTrusted, match="larger than"):
        parse_xml(data, max_bytes=len(data) - 1)


async def test_read_capped_stops_reading_once_over_the_cap() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 1000

    with pytest.raises(ResponseNotTrusted, match="larger than 4096"):
        await read_capped(endless(), 4096)
    assert pulled == 5  # the fifth chunk crossed the cap; nothing more was read


async def test_read_capped_returns_a_body_within_the_cap() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"<xml>", b"<a>1</a>", b"</xml>"):
            yield part

    assert await read_capped(chunks(), 19) == b"<xml><a>1</a></xml>"
