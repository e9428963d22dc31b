"""Reading HTTP replies at run time: a reply's body as data, an extraction applied to it, the
target of a Link header."""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping

from cpfmap.errors import BackendError

_LINK = re.compile(r'<([^>]*)>((?:\s*;\s*(?:[^;,"]|"[^"]*")*)*)')


_REL = re.compile(r'(?i)\brel\s*=\s*(?:"([^"]*)"|([^\s;,]+))')


def link_target(header: str | None, rel: str) -> str | None:
    """The URL of an RFC 8288 Link header with the given relation (`<url>; rel="next"`), or None."""
    for match in _LINK.finditer(header or ""):
        found = _REL.search(match.group(2))
        if found and rel in (found.group(1) or found.group(2) or "").lower().split():
            return match.group(1).strip()
    return None


PARTS = frozenset({"status", "headers", "reason", "text"})


def reply_part(response: Any, source: str) -> Any:
    """What an extraction `from:` one of PARTS reads: the status, the headers (lower-case
    names), the reason phrase, or the body's text whatever its content type."""
    if source == "status":
        return response.status
    if source == "headers":
        return {k.lower(): v for k, v in response.headers}
    if source == "reason":
        return response.reason
    if response.body:
        return response.body.decode("utf-8-sig", "replace")
    value = response.data()   # a cached reply keeps only its parsed body
    return value if isinstance(value, str) or value is None else json.dumps(value)


def extract_value(extraction: Any, response: Any, context: Mapping[str, Any]) -> Any:
    data = reply_part(response, extraction.source) if extraction.source in PARTS else body_of(response)
    return extract_from(extraction, data, context)


def extract_from(extraction: Any, data: Any, context: Mapping[str, Any],
                 search: Callable[[Any], Any] | None = None) -> Any:
    """The expression over data, else the default; the `required` message if still null.
    search(expression): the value, from where it was kept (cache.Fetched.search)."""
    value = search(extraction.expression) if search is not None else extraction.expression.search(data, context)
    if value is None:
        value = extraction.default
    if value is None and extraction.required is not None:
        raise BackendError(str(extraction.required.render(context)))
    return value


def body_of(response: Any) -> Any:
    """The reply's body as data (JSON, XML or text by its content type: http/bodies.py)."""
    try:
        return response.data()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackendError(f"the backend answered HTTP {response.status} with a body that is {exc}: "
                           f"{shown_body(response)!r}") from None


def shown_body(response: Any, limit: int = 300) -> str:
    """The start of a body for a message: markup and runs of white space collapsed, so the
    useful part of an HTML or XML page fits."""
    text = re.sub(r"<[^>]{0,200}>", " ", response.text(4 * limit))
    return " ".join(text.split())[:limit]

