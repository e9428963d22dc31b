"""Secrets never leave the process: every text that goes out (replies, logs, recordings,
transcripts) passes through a Redactor that knows the secret values of this session."""
from __future__ import annotations

import base64
import json
import logging
import re
import urllib.parse

MASK = "***"
MIN_SECRET = 4  # shorter values would mask ordinary text: refused as settings, masked only as whole values
MAX_SECRETS = 1000   # distinct secret values kept per process (see Redactor)
# A setting or field named like this is a secret even when nobody marked it so.
SECRET_NAME = re.compile(r"pass|secret|token|ticket|cookie|credential|private|api[-_]?key|"
                         r"(^|[-_])(key|auth|sid|csrf|session)([-_]|$)", re.I)


def looks_secret(name: object) -> bool:
    return bool(SECRET_NAME.search(str(name)))


def encodings(text: str) -> set[str]:
    """Every form a secret can take on its way out that can be computed from it: as is,
    JSON-escaped (ASCII-only with \\uXXXX in either case, or UTF-8 with only quotes and
    backslashes escaped, `/` escaped or not), URL-encoded (%XX in either case, + or %20 for
    spaces), base64 (standard, URL-safe, unpadded) as in a Basic-auth header, and HTML/XML
    entity-escaped (&amp; &lt; &gt;, quotes as &quot; &#34; &#x27; &#39; &apos; or bare).
    Not computable, so not caught: a secret truncated, re-cased, hashed, split across
    values, or escaped in an encoding not listed here (README, Secrets)."""
    forms = {text}
    for ascii_only in (True, False):
        escaped = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
        forms |= {escaped, escaped.replace("/", "\\/")}
        if ascii_only:
            forms.add(re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), escaped))
    for quoted in (urllib.parse.quote(text, safe=""), urllib.parse.quote_plus(text), urllib.parse.quote(text)):
        forms |= {quoted, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted)}
    raw = text.encode("utf-8")
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms |= {encoded, encoded.rstrip("=")}
    forms |= _entities(text)
    return {f for f in forms if len(f) >= MIN_SECRET}


_APOSTROPHES = ("'", "&#x27;", "&#39;", "&apos;", "&#X27;")
_QUOTES = ('"', "&quot;", "&#34;", "&#x22;")


def _entities(text: str) -> set[str]:
    """HTML and XML escapings (html.escape, xml.sax.saxutils, hand-written templates)."""
    if not any(c in text for c in "&<>'\""):
        return set()
    base = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {base.replace("'", apostrophe).replace('"', quote) for apostrophe in _APOSTROPHES for quote in _QUOTES}


class Redactor:
    """The secret values of this process, and every encoding of each, masked in any text.

    Bounded: at most MAX_SECRETS values are kept (each with its few dozen encodings); past
    that the one added longest ago is forgotten first (an expired ticket; a value added
    again, as settings are at every connect, counts as new). Masking is one pass of one
    compiled pattern (longest form first), rebuilt only when the set changes. A value
    shorter than MIN_SECRET would mask ordinary text: it is masked only where it is a whole
    value (`hides`, used for recorded fields); settings refuse it (Engine.connect)."""

    def __init__(self) -> None:
        self._values: dict[str, frozenset[str]] = {}   # value -> its forms, oldest first
        self._short: dict[str, None] = {}
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: object) -> None:
        text = "" if value is None else str(value)
        if not text:
            return
        if len(text) < MIN_SECRET:
            self._short.pop(text, None)
            self._short[text] = None
            if len(self._short) > MAX_SECRETS:
                del self._short[next(iter(self._short))]
            return
        known = self._values.pop(text, None)
        self._values[text] = known if known is not None else frozenset(encodings(text))
        if known is None:
            self._pattern = None
        if len(self._values) > MAX_SECRETS:
            del self._values[next(iter(self._values))]
            self._pattern = None

    def _compiled(self) -> re.Pattern[str] | None:
        if self._pattern is None and self._values:
            forms = sorted({f for forms in self._values.values() for f in forms}, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, forms)))
        return self._pattern

    def __call__(self, text: str) -> str:
        pattern = self._compiled()
        return pattern.sub(MASK, text) if pattern is not None else text

    def hides(self, value: str) -> bool:
        """Whether a whole value is, or holds, a secret (short secrets included)."""
        return value in self._short or self(value) != value

    def scrub(self, data: object) -> object:
        """The same for a JSON-like structure."""
        if isinstance(data, str):
            return MASK if data in self._short else self(data)
        if isinstance(data, dict):
            return {k: self.scrub(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.scrub(v) for v in data]
        return data


MAX_LOG_LINE = 4000   # characters of one log message; the rest is counted, not written
# control characters (C0, DEL, C1), line and paragraph separators, and lone surrogates (which
# no UTF-8 log file can hold): each is written as an escape, so no value forges a log line
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def log_safe(text: str, limit: int = MAX_LOG_LINE) -> str:
    """One log line: control characters escaped (\\n, \\x1b, \\ud800...), at most `limit` characters."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match) -> str:
    char = match[0]
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    return named or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


class RedactingFilter(logging.Filter):
    """Applies the redactor to every log record's final message, then makes it one safe line:
    control characters escaped, length bounded (a traceback keeps its lines, each indented,
    so none can pass for a record of its own)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = log_safe(self.redactor(record.getMessage()))
        record.args = None
        if record.exc_info:
            text = self.redactor(logging.Formatter().formatException(record.exc_info))
            record.exc_text = "\n".join("    " + log_safe(line) for line in text.split("\n")[:200])
            record.exc_info = None
        return True
