"""A dry-run transcript: each CPF request, the HTTP requests it caused (redacted) with the
recorded status, and the CPF reply. Text for people, JSON for machines."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .cassette import SECRET_HEADERS
from .redact import MASK, Redactor
from .transport import HttpRequest, HttpResponse


@dataclass
class Entry:
    request: Any
    reply: dict
    http: list = field(default_factory=list)
    miss: bool = False


def http_entry(request: HttpRequest, response: HttpResponse | None, redactor: Redactor) -> dict:
    headers = {k: (MASK if k.lower() in SECRET_HEADERS else redactor(v)) for k, v in request.headers}
    body = redactor(request.body.decode("utf-8", "replace")) if request.body else None
    return {"method": request.method, "url": redactor(request.url), "headers": headers, "body": body,
            "status": response.status if response is not None else None}


def render_text(entries: list[Entry]) -> str:
    lines = []
    for n, entry in enumerate(entries, 1):
        lines.append(f"[{n}] CPF  -> {json.dumps(entry.request)}")
        for http in entry.http:
            status = http["status"] if http["status"] is not None else "REPLAY MISS"
            lines.append(f"     HTTP {http['method']} {http['url']} -> {status}")
            if http["body"]:
                lines.append(f"          body: {http['body'][:300]}")
        lines.append(f"     CPF  <- {json.dumps(entry.reply)}")
    misses = sum(1 for e in entries if e.miss)
    errors = sum(1 for e in entries if "error" in e.reply)
    lines.append(f"{len(entries)} requests, {errors} error replies, {misses} caused by replay misses")
    return "\n".join(lines) + "\n"


def render_json(entries: list[Entry]) -> str:
    return json.dumps([{"request": e.request, "http": e.http, "reply": e.reply, "replay_miss": e.miss}
                       for e in entries], indent=2) + "\n"
