"""Secrets never leave the process: every text that goes out (replies, logs, recordings,
transcripts) passes through a Redactor that knows the secret values of this session."""
from __future__ import annotations

import base64
import json
import logging
import re
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


class Redactor:
    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._longest_first: list[str] = []   # a longer secret is masked before one it contains

    def add(self, value: object) -> None:
        text = "" if value is None else str(value)
        forms = encodings(text) if len(text) >= MIN_SECRET else set()
        if not forms <= self._secrets:
            self._secrets |= forms
            self._longest_first = sorted(self._secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._longest_first:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

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
