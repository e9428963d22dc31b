"""Reading HTTP replies at run time: a reply's body as data, an extraction applied to it, the
target of a Link header."""

from __future__ import annotations

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


def extract_value(extraction: Any, response: Any, context: Mapping[str, Any]) -> Any:
    if extraction.source == "status":
        data: Any = response.status
    elif extraction.source == "headers":
        data = {k.lower(): v for k, v in response.headers}
    elif extraction.source == "reason":
        data = response.reason
    else:
        data = body_of(response)
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
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackendError(f"the backend answered HTTP {response.status} with a body that is not JSON "
                           f"({str(exc)[:120]}): {response.text(120)!r}") from None

