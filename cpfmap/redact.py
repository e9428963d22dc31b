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
MIN_SECRET = 4  # shorter values would mask ordinary text; they are refused as secrets
# A setting or field named like this is a secret even when nobody marked it so.
SECRET_NAME = re.compile(r"pass|secret|token|ticket|cookie|credential|private|api[-_]?key|"
                         r"(^|[-_])(key|auth|sid|csrf|session)([-_]|$)", re.I)


def looks_secret(name: object) -> bool:
    return bool(SECRET_NAME.search(str(name)))


def encodings(text: str) -> set[str]:
    """Every form a secret can take on its way out: as is, JSON-escaped (ASCII-only with
    \\uXXXX in either case, or UTF-8 with only quotes and backslashes escaped, `/` escaped or
    not), URL-encoded (%XX in either case, + or %20 for spaces), base64 (standard, URL-safe,
    unpadded) as in a Basic-auth header."""
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
    return {f for f in forms if len(f) >= MIN_SECRET}


SESSION_VALUES = 64   # session values (tokens, tickets, cookies) kept: the newest; older sessions are long over


class Redactor:
    """Secrets for the process's life (settings, sent credentials) and the values of the last
    SESSION_VALUES session values (each login replaces a session's): the list stays bounded
    however often the backend session is renewed, and a line is scanned once (one pattern).
    Shared by every thread: `add` and the pattern swap are under a lock; masking reads the
    pattern in force."""

    def __init__(self, session_values: int = SESSION_VALUES) -> None:
        self._lasting: set[str] = set()
        self._lasting_forms: set[str] = set()
        self._forms = 0
        self._session: dict[str, frozenset[str]] = {}   # value -> its forms, oldest first
        self._limit = session_values
        self._pattern: re.Pattern[str] | None = None
        self._dirty = False   # secrets changed since the pattern was built (built at the next use)
        self._lock = threading.Lock()

    def add(self, value: object, session: bool = False) -> None:
        text = "" if value is None else str(value)
        if len(text) < MIN_SECRET:
            return
        with self._lock:
            if text in self._lasting or (session and text in self._session):
                if session:
                    self._session[text] = self._session.pop(text)   # still in use: the newest
                return
            forms = frozenset(encodings(text))
            if session:
                self._session[text] = forms
                while len(self._session) > self._limit:
                    del self._session[next(iter(self._session))]
            else:
                self._lasting.add(text)
                self._lasting_forms |= forms
            self._dirty = True

    def _compile(self) -> re.Pattern[str] | None:
        forms = set(self._lasting_forms)
        for known in self._session.values():
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

    def scrub(self, data: object) -> object:
        """The same for a JSON-like structure."""
        if isinstance(data, str):
            return self(data)
        if isinstance(data, dict):
            return {k: self.scrub(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.scrub(v) for v in data]
        return data


class RedactingFilter(logging.Filter):
    """Applies the redactor to every log record's final message."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.redactor(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
