"""Template filters for signed requests and query-style APIs: HMAC and digests, base64 and hex,
RFC 3986 encoding and sorted query strings, numbered list parameters, and the time as text."""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac as _hmac_mod
import urllib.parse
from typing import Any, Callable, Mapping

from cpfmap.errors import BackendError

DIGESTS = ("md5", "sha1", "sha256", "sha384", "sha512")


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _digest_out(raw: bytes, out: str) -> str:
    if out == "hex":
        return raw.hex()
    if out == "base64":
        return base64.b64encode(raw).decode("ascii")
    raise BackendError(f"output must be 'hex' or 'base64', got {out!r}")


def _algorithm(name: str) -> str:
    if name not in DIGESTS:
        raise BackendError(f"unknown hash {name!r}; known: {', '.join(DIGESTS)}")
    return name


def hmac_filter(value: Any, key: Any, algorithm: str = "sha256", out: str = "hex") -> str:
    """HMAC of the value's UTF-8 text with `key` (text), as hex or base64 (`out`); algorithms md5,
    sha1, sha256, sha384, sha512.
    Example: `{{ 'GET' | hmac('secret', 'sha1', 'base64') }}` -> `"jh/kGlWtM5U2/C33+8m9ch0reJY="`"""
    raw = _hmac_mod.new(_bytes(key), _bytes(value), _algorithm(algorithm)).digest()
    return _digest_out(raw, out)


def hash_filter(value: Any, algorithm: str = "sha256", out: str = "hex") -> str:
    """Digest of the value's UTF-8 text, as hex or base64 (`out`).
    Example: `{{ '' | hash }}` -> `"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"`"""
    raw = hashlib.new(_algorithm(algorithm), _bytes(value)).digest()
    return _digest_out(raw, out)


def b64decode(value: Any) -> str:
    """The UTF-8 text of base64 `value`; not base64 (or not UTF-8 text) is an error.
    Example: `{{ 'dXNlcjpwdw==' | b64decode }}` -> `"user:pw"`"""
    try:
        return base64.b64decode(_bytes(value), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise BackendError("b64decode: the value is not base64 of UTF-8 text") from None


def hex_filter(value: Any) -> str:
    """Lower-case hex of the value's UTF-8 bytes.
    Example: `{{ 'ab' | hex }}` -> `"6162"`"""
    return _bytes(value).hex()


def urlquote(value: Any, safe: str = "") -> str:
    """The value's text percent-encoded as RFC 3986 says (letters, digits and `-_.~` kept, and
    the characters in `safe`; a space is `%20`).
    Example: `{{ 'a b/c' | urlquote }}` -> `"a%20b%2Fc"`"""
    return urllib.parse.quote(str(value), safe="-_.~" + safe)


def query_string(value: Any, sort: bool = True) -> str:
    """An object (or list of [name, value] pairs) as a query string: RFC 3986 percent-encoding
    (a space is `%20`), a list value repeats its name, null values left out; sorted by name (then
    value) unless `sort` is false. What signature schemes over sorted parameters sign.
    Example: `{{ {'b': 'x y', 'a': 1} | query_string }}` -> `"a=1&b=x%20y"`"""
    pairs = _pairs(value)
    if sort:
        pairs.sort()
    return "&".join(f"{urlquote(k)}={urlquote(v)}" for k, v in pairs)


def _pairs(value: Any) -> list[tuple[str, str]]:
    items = value.items() if isinstance(value, Mapping) else value
    out = []
    for key, item in items:
        for one in item if isinstance(item, list) else [item]:
            if one is not None:
                out.append((str(key), _text(one)))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def numbered(value: Any, start: int = 1, sep: str = ".") -> dict:
    """Nested objects and lists as flat parameters, list items numbered from `start` (the AWS
    Query and similar APIs: `InstanceId.1`, `Filter.1.Value.1`); null members are left out.
    Example: `{{ {'Filter': [{'Name': 'tag:Name', 'Value': ['a']}]} | numbered }}` ->
    `{"Filter.1.Name": "tag:Name", "Filter.1.Value.1": "a"}`"""
    if not isinstance(value, (Mapping, list, tuple)):
        raise BackendError(f"numbered: needs an object or a list, got {value!r}")
    out: dict[str, Any] = {}
    _flatten(value, "", out, start, sep)
    return out


def _flatten(value: Any, prefix: str, out: dict, start: int, sep: str) -> None:
    if isinstance(value, Mapping):
        children = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        children = [(str(i), v) for i, v in enumerate(value, start)]
    else:
        if value is not None:
            out[prefix] = value
        return
    for name, child in children:
        _flatten(child, f"{prefix}{sep}{name}" if prefix else name, out, start, sep)


ENCODING_FILTERS: dict[str, Callable] = {
    "hmac": hmac_filter, "hash": hash_filter, "b64decode": b64decode, "hex": hex_filter, "urlquote": urlquote,
    "query_string": query_string, "numbered": numbered,
}


NOW_FORMATS: dict[str, Callable[[datetime.datetime], Any]] = {
    "iso": lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "amz": lambda t: t.strftime("%Y%m%dT%H%M%SZ"),
    "epoch": lambda t: int(t.timestamp()),
    "epoch_ms": lambda t: int(t.timestamp() * 1000),
    "http": lambda t: t.strftime("%a, %d %b %Y %H:%M:%S GMT"),
}


def format_time(seconds: float, fmt: str = "iso") -> Any:
    """now(format): the current UTC time: `iso` (2026-12-07T13:00:00Z), `amz`
    (20261207T130000Z), `epoch` (seconds, a number), `epoch_ms`, `http` (an HTTP date), or a
    strftime pattern."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    if fmt in NOW_FORMATS:
        return NOW_FORMATS[fmt](moment)
    if "%" not in fmt:
        raise BackendError(f"now(): unknown format {fmt!r}; known: {', '.join(NOW_FORMATS)} or a strftime pattern")
    return moment.strftime(fmt)
