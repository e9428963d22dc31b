"""Secrets never leave the process: every text that goes out (replies, logs, recordings,
transcripts) passes through a Redactor that knows the secret values of this session."""
from __future__ import annotations

import base64
import json
import logging
import re
import threading
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
SESSION_VALUES = 64   # session values (tokens, tickets, cookies) kept: the newest; older sessions are long over


def _entities(text: str) -> set[str]:
    """HTML and XML escapings (html.escape, xml.sax.saxutils, hand-written templates)."""
    if not any(c in text for c in "&<>'\""):
        return set()
    base = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {base.replace("'", apostrophe).replace('"', quote) for apostrophe in _APOSTROPHES for quote in _QUOTES}


def _newest(kept: dict, key: str, value: object, limit: int) -> None:
    """Keep key as the newest entry; past limit entries, the oldest is forgotten."""
    kept.pop(key, None)
    kept[key] = value
    while len(kept) > limit:
        del kept[next(iter(kept))]


class Redactor:
    """The secret values of this process, and every encoding of each, masked in any text.

    Bounded, however often the backend session is renewed: secrets for the process's life
    (settings, sent credentials) are at most MAX_SECRETS values, the one added longest ago
    forgotten first (a value added again, as settings are at every connect, counts as new);
    session values (tokens, tickets, cookies; each login replaces a session's) are the newest
    SESSION_VALUES. Masking is one pass of one compiled pattern (longest form first), rebuilt
    at the next use after the set changed. A value shorter than MIN_SECRET would mask ordinary
    text: it is masked only where it is a whole value (`hides`, used for recorded fields);
    settings refuse it (Engine.connect). Shared by every thread: `add` and the pattern swap are
    under a lock; masking reads the pattern in force."""

    def __init__(self, session_values: int = SESSION_VALUES) -> None:
        self._lasting: dict[str, frozenset[str]] = {}   # value -> its forms, oldest first
        self._session: dict[str, frozenset[str]] = {}   # value -> its forms, oldest first
        self._short: dict[str, None] = {}
        self._limit = session_values
        self._forms = 0
        self._pattern: re.Pattern[str] | None = None
        self._dirty = False   # secrets changed since the pattern was built (built at the next use)
        self._lock = threading.Lock()

    def add(self, value: object, session: bool = False) -> None:
        text = "" if value is None else str(value)
        if not text:
            return
        with self._lock:
            if len(text) < MIN_SECRET:
                _newest(self._short, text, None, MAX_SECRETS)
                return
            if session and text in self._lasting:
                return
            kept = self._session if session else self._lasting
            known = kept.get(text)
            _newest(kept, text, known if known is not None else frozenset(encodings(text)),
                    self._limit if session else MAX_SECRETS)
            self._dirty = self._dirty or known is None   # a new value (and maybe an old one forgotten)

    def _compile(self) -> re.Pattern[str] | None:
        forms: set[str] = set()
        for known in (*self._lasting.values(), *self._session.values()):
            forms |= known
        # a longer secret is masked before one it contains: alternatives are tried in order
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._forms = len(ordered)
        return re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def size(self) -> int:
        """Forms the pattern masks."""
        self._current()
        return self._forms

    def _current(self) -> re.Pattern[str] | None:
        if self._dirty:
            with self._lock:
                if self._dirty:
                    self._pattern = self._compile()
                    self._dirty = False
        return self._pattern

    def __call__(self, text: str) -> str:
        pattern = self._current()
        return text if pattern is None else pattern.sub(MASK, text)

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
