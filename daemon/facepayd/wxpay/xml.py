"""The v2 wire format: flat `<xml><k>v</k>...</xml>` documents, built escaped and parsed safely."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Mapping
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape

from defusedxml import ElementTree as SafeElementTree
from defusedxml.common import DefusedXmlException

from facepayd.errors import InvalidArgument, ResponseNotTrusted
from facepayd.wxpay.charset import NOT_XML, NOT_XML_RULE

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
MAX_FIELDS = 256

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A bare CR would be normalised to LF by the receiving parser and break the signature.
_ENTITIES = {"\r": "&#13;"}


def build_xml(params: Mapping[str, str]) -> bytes:
    """Serialise params as a flat UTF-8 `<xml>` document, values escaped."""
    parts = ["<xml>"]
    for name, value in params.items():
        if not _NAME.fullmatch(name):
            raise InvalidArgument(name, "is not a plain XML element name")
        if NOT_XML.search(value):
            raise InvalidArgument(name, NOT_XML_RULE)
        parts.append(f"<{name}>{escape(value, _ENTITIES)}</{name}>")
    parts.append("</xml>")
    return "".join(parts).encode("utf-8")


async def read_capped(chunks: AsyncIterable[bytes], max_bytes: int) -> bytes:
    """Collect a body, refusing it as soon as it grows past max_bytes."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise ResponseNotTrusted(f"response body larger than {max_bytes} bytes")
    return bytes(body)


def parse_xml(data: bytes, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> dict[str, str]:
    """Parse a flat `<xml>` document into a dict; anything else raises ResponseNotTrusted."""
    if len(data) > max_bytes:
        raise ResponseNotTrusted(f"response body larger than {max_bytes} bytes")
    try:
        root = SafeElementTree.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise ResponseNotTrusted(
            f"response XML uses a forbidden construct ({type(exc).__name__})"
        ) from exc
    except (ParseError, ValueError) as exc:
        raise ResponseNotTrusted("response is not well-formed XML") from exc
    if root.tag != "xml" or root.attrib or (root.text or "").strip():
        raise ResponseNotTrusted("response is not a flat <xml> document")
    fields: dict[str, str] = {}
    for child in root:
        tag = child.tag
        if not isinstance(tag, str) or not _NAME.fullmatch(tag):
            raise ResponseNotTrusted("response has an element that is not a plain name")
        if len(child) or child.attrib or (child.tail or "").strip():
            raise ResponseNotTrusted("response is not a flat <xml> document")
        if tag in fields:
            raise ResponseNotTrusted(f"response repeats element {tag}")
        if len(fields) >= MAX_FIELDS:
            raise ResponseNotTrusted("response has too many elements")
        fields[tag] = child.text or ""
    return fields
