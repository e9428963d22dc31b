"""Secrets never leave the process: every text that goes out (replies, logs, recordings,
transcripts) passes through a Redactor that knows the secret values of this session."""
from __future__ import annotations

import base64
import logging
import urllib.parse

MASK = "***"
MIN_SECRET = 4  # shorter values would mask ordinary text; they are refused as secrets


class Redactor:
    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._added: set[str] = set()

    def add(self, value: object) -> None:
        text = "" if value is None else str(value)
        if len(text) < MIN_SECRET or text in self._added:  # credentials are added on every request
            return
        self._added.add(text)
        forms = {text, urllib.parse.quote(text, safe=""), urllib.parse.quote_plus(text),
                 base64.b64encode(text.encode()).decode()}
        self._secrets.update(f for f in forms if len(f) >= MIN_SECRET)

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
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
