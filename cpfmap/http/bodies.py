"""Reply bodies as data, by content type: JSON, XML (parsed safely) or plain text.

JSON (`application/json`, `*+json`) reads as always. XML (`*/xml`, `*+xml`) is parsed with
defusedxml, which refuses DTDs, entity declarations and external references (no billion laughs,
no XXE), into a predictable shape that JMESPath reads:

- the document is `{root element's local name: element}`;
- an element with no attributes and no child elements is its text (`""` if empty);
- any other element is an object: its child elements by local name, its attributes as `@name`,
  its own non-blank text as `#text`;
- a child name that occurs more than once is a list, in document order; a name listed in
  `connection.xml_lists` (EC2's `item`, AWS Query's `member`) is always a list, even of one;
- namespaces are dropped (local names only; `xmlns` declarations are not attributes);
- every value is text: numbers and booleans stay strings (`to_number()` converts).

`text/*` replies that are neither JSON nor XML read as their text. A body without a content
type (or with one that says nothing) is read as JSON if it parses, else as XML if it starts
with `<`; a body that starts with an XML declaration (`<?xml`) is XML under any type but JSON
(servers label XML error pages text/html). The body's size is bounded before it is read (HttpRequest.max_body); the XML's depth here.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable

MAX_DEPTH = 100

# The example the mapping reference shows (tests/test_bodies.py checks that it reads as shown).
EXAMPLE_XML = ('<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
               '<reservationSet><item><instancesSet><item><instanceId>i-0abc</instanceId>'
               '<instanceState><code>16</code><name>running</name></instanceState>'
               '<tagSet><item><key>Name</key><value>vdi-01</value></item></tagSet>'
               '</item></instancesSet></item></reservationSet>'
               '<nextToken/><size unit="GiB">8</size></DescribeInstancesResponse>')
EXAMPLE_LISTS = ("item",)
EXAMPLE_DATA = {"DescribeInstancesResponse": {
    "reservationSet": {"item": [{"instancesSet": {"item": [{
        "instanceId": "i-0abc", "instanceState": {"code": "16", "name": "running"},
        "tagSet": {"item": [{"key": "Name", "value": "vdi-01"}]}}]}}]},
    "nextToken": "", "size": {"@unit": "GiB", "#text": "8"}}}


class BodyError(ValueError):
    """The body cannot be read as its content type says (or as anything, when it says nothing)."""


def kind_of(content_type: str | None) -> str:
    """json, xml, text or unknown, from a Content-Type header."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media.endswith(("/json", "+json")):
        return "json"
    if media.endswith(("/xml", "+xml")):
        return "xml"
    if media.startswith("text/"):
        return "text"
    return "unknown"


def decode(body: bytes, content_type: str | None, xml_lists: Iterable[str] = ()) -> Any:
    """The body as data (None if empty); BodyError if it cannot be read."""
    if not body.strip():
        return None
    kind = kind_of(content_type)
    if kind == "xml":
        return parse_xml(body, xml_lists)
    try:
        return parse_json(body)
    except BodyError:
        if kind == "json":
            raise
    start = body.lstrip()[:5].lower()
    if start == b"<?xml" or (kind != "text" and start.startswith(b"<")):
        return parse_xml(body, xml_lists)
    if kind == "text":
        return _text(body)
    raise BodyError("not JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON: a number that is not finite (`NaN`, `Infinity`, `1e999`) is not a value (it
    would reach RAS as text), so it is an error naming it."""
    try:
        return json.loads(body.decode("utf-8-sig"), parse_constant=_not_a_number, parse_float=_finite)
    except RecursionError:
        raise BodyError("not JSON we read (nested too deeply)") from None
    except _NotFinite as exc:
        raise BodyError(f"not JSON we read: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise BodyError("not JSON") from None


class _NotFinite(ValueError):
    pass


def _not_a_number(name: str) -> Any:
    raise _NotFinite(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"the number {text[:40]} is not finite")
    return value


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BodyError("not UTF-8 text") from None


def local(name: str) -> str:
    """An element or attribute name without its namespace (`{urn:x}a` and `x:a` are `a`)."""
    return name.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def parse_xml(body: bytes, xml_lists: Iterable[str] = ()) -> Any:
    """The XML document as data (see the module's docstring for the shape)."""
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree as safe  # type: ignore[import-untyped]  # here: serve starts without it
    from defusedxml import DefusedXmlException  # type: ignore[import-untyped]
    try:
        root = safe.fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise BodyError(f"refused XML ({type(exc).__name__}): DTDs, entities and external references "
                        "are not read") from None
    except ParseError as exc:
        raise BodyError(f"malformed XML: {exc}") from None
    return {local(root.tag): _element(root, frozenset(xml_lists), 0)}


def _element(node: Any, lists: frozenset, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise BodyError(f"XML nested deeper than {MAX_DEPTH} elements")
    children = [child for child in node if isinstance(child.tag, str)]   # comments and PIs skipped
    text = node.text or ""
    if not children and not node.attrib:
        return text
    out: dict[str, Any] = {"@" + local(k): v for k, v in node.attrib.items()}
    grouped: dict[str, list] = {}
    for child in children:
        grouped.setdefault(local(child.tag), []).append(_element(child, lists, depth + 1))
    for name, values in grouped.items():
        out[name] = values if len(values) > 1 or name in lists else values[0]
    if text.strip():
        out["#text"] = text.strip()
    return out
