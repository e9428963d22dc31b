"""A dry-run transcript: each CPF request, the HTTP requests it caused (redacted) with the
recorded status, and the CPF reply; where the session file holds the live session's replies
(`record --session`), each replayed reply is compared with the recorded one and every
difference is reported with where it is and what explains it. Text for people, JSON for
machines. `record --session` writes such session files."""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cpfmap.http.transport import HttpRequest, HttpResponse
from cpfmap.protocol.rpc import Server
from cpfmap.recording.cassette import SECRET_HEADERS, Cassette
from cpfmap.redact import MASK, Redactor, looks_secret

log = logging.getLogger("cpfmap")


@dataclass
class Entry:
    request: Any
    reply: dict
    http: list = field(default_factory=list)
    miss: bool = False
    recorded: dict | None = None     # the live session's reply, when the session file has it
    differs: str | None = None       # where the replayed reply first differs from it
    why: list = field(default_factory=list)


def http_entry(request: HttpRequest, response: HttpResponse | None, redactor: Redactor) -> dict:
    headers = {k: (MASK if k.lower() in SECRET_HEADERS else redactor(v)) for k, v in request.headers}
    body = redactor(request.body.decode("utf-8", "replace")) if request.body else None
    return {"method": request.method, "url": redactor(request.url), "headers": headers, "body": body,
            "status": response.status if response is not None else None}


# ------------------------------------------------------------- session files

def session_line(line: str) -> tuple[str, dict | None, list | None]:
    """(the request line to send, the recorded reply, the recorded exchanges it caused). A
    session line is a CPF request, maybe carrying what the live session got as a `recorded`
    member (`{"reply", "http"}`, which the server ignores: the file stays plain request input);
    a request that is not a JSON object is kept as `{"request", "reply", "http"}`, and a line that
    is not JSON at all as `{"request_text", "reply", "http"}`, sent again as the very text."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return line, None, None
    if isinstance(data, dict) and isinstance(data.get("request_text"), str) and "method" not in data:
        return data["request_text"], *_recorded(data)
    if isinstance(data, dict) and "request" in data and "method" not in data:
        return json.dumps(data["request"]), *_recorded(data)
    if isinstance(data, dict) and isinstance(data.get("recorded"), dict):
        request = {k: v for k, v in data.items() if k != "recorded"}
        return json.dumps(request), *_recorded(data["recorded"])
    return line, None, None


def _recorded(data: dict) -> tuple[dict | None, list | None]:
    reply = data.get("reply") if isinstance(data.get("reply"), dict) else None
    http = data.get("http") if isinstance(data.get("http"), list) else None
    return reply, http


def session_record(request: Any, reply: dict, http: list, text: bool = False) -> dict:
    """One session line: the request with what it got (see session_line); `text`: the request
    line was not JSON, and `request` is its text."""
    if text:
        return {"request_text": request, "reply": reply, "http": http}
    if isinstance(request, dict):
        return {**{k: v for k, v in request.items() if k != "recorded"}, "recorded": {"reply": reply, "http": http}}
    return {"request": request, "reply": reply, "http": http}


class RecordingServer(Server):
    """A Server that also writes each request with its reply (scrubbed) and the indexes of the
    cassette exchanges it caused, one JSON line each, appended as it goes."""

    def __init__(self, server: Server, out: IO[str], exchanges: list, secret_settings: tuple = (),
                 public_settings: tuple = ()) -> None:
        super().__init__(server.handlers, server.redactor, server.broken)
        self.out = out
        self.exchanges = exchanges   # the recording transport's list, growing as requests go out
        self.secret_settings = secret_settings
        self.public_settings = public_settings   # declared not secret: kept, whatever the name looks like

    def handle_line(self, raw: bytes | str) -> str | None:
        before = len(self.exchanges)
        reply = super().handle_line(raw)
        if reply is not None:
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            not_json = False
            try:
                request: Any = json.loads(text.lstrip("\ufeff"), parse_constant=_not_json,
                                          parse_float=_finite_or_text)
            except (ValueError, RecursionError):  # kept as the text it was (the reply says why)
                request, not_json = self._masked_text(text.strip("\r\n")), True
            line = session_record(self.redactor.scrub(_masked_settings(request, self.secret_settings, self.public_settings)),
                                  json.loads(reply), list(range(before, len(self.exchanges))), not_json)
            try:
                self.out.write(json.dumps(line) + "\n")
                self.out.flush()
            except OSError as exc:  # a full disk must not cost RAS its replies
                log.error("cannot write the session file: %s", exc.strerror or exc)
        return reply


    def _masked_text(self, text: str) -> str:
        """A line kept as text (not strict JSON: NaN, 1e400, a 5,000-digit id, or no JSON at all)
        with the settings it would connect with masked, as far as a lenient reading finds them."""
        try:
            lenient = json.loads(text.lstrip("\ufeff"))
        except (ValueError, RecursionError):
            return text
        masked = _masked_settings(lenient, self.secret_settings, self.public_settings)
        if not isinstance(masked, dict) or masked is lenient:
            return text
        hidden = Redactor()
        for name, value in lenient["params"]["settings"].items():
            if masked["params"]["settings"][name] == MASK and isinstance(value, str):
                hidden.add(value)
        return hidden(text)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_or_text(text: str) -> float:
    """1e400 makes the line one kept as its text: the session file stays strict JSON, and the
    replay sends the very line again."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def _masked_settings(request: Any, secret: tuple, public: tuple = ()) -> Any:
    """A connect request with its secret settings masked even when connecting failed (the
    redactor learns them only from settings that load). A setting the mapping does not declare
    is masked when its name looks secret; a declared public one (`auth_url`) is kept, so the
    session replays."""
    params = request.get("params") if isinstance(request, dict) else None
    settings = params.get("settings") if isinstance(params, dict) else None
    if not isinstance(settings, dict):
        return request
    masked = {k: (MASK if (k in secret or (k not in public and looks_secret(k))) and v not in (None, "") else v)
              for k, v in settings.items()}
    return {**request, "params": {**params, "settings": masked}}


def open_session_log(path: str | Path) -> IO[str]:
    return Path(path).open("w", encoding="utf-8", newline="\n")


# ------------------------------------------------------------- comparison

def difference(recorded: Any, replayed: Any, where: str = "reply") -> str | None:
    """Where `replayed` first differs from `recorded`, or None; `***` in a recording (a scrubbed
    secret) matches anything."""
    if isinstance(recorded, str) and MASK in recorded:
        pattern = ".*".join(re.escape(piece) for piece in recorded.split(MASK))
        if isinstance(replayed, str) and re.fullmatch(pattern, replayed, re.S):
            return None
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key in list(recorded) + [k for k in replayed if k not in recorded]:
            if key not in replayed or key not in recorded:
                side = "the replay" if key not in replayed else "the recording"
                return f"{where}.{key}: missing in {side}"
            found = difference(recorded[key], replayed[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(recorded, list) and isinstance(replayed, list) and len(recorded) == len(replayed):
        for n, (a, b) in enumerate(zip(recorded, replayed)):
            found = difference(a, b, f"{where}[{n}]")
            if found:
                return found
        return None
    if recorded == replayed:
        return None
    return f"{where}: recorded {_short(recorded)}, replayed {_short(replayed)}"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 160 else text[:157] + "..."


def compare(entry: Entry, live_http: list | None, replay_http: list[int], cassette: Cassette) -> None:
    """Fill in how the entry's reply differs from the recorded one, and why."""
    if entry.recorded is None:
        return
    entry.differs = difference(entry.recorded, entry.reply)
    if entry.differs is None:
        return
    if entry.miss:
        entry.why.append("a request of the replay had no recorded answer (see REPLAY MISS above)")
    if live_http is not None and live_http != replay_http:
        entry.why.append(f"the live session was answered by recorded exchanges {_ranges(live_http, cassette)}; "
                         f"the replay by {_ranges(replay_http, cassette)}")


def _ranges(indexes: list, cassette: Cassette) -> str:
    if not indexes:
        return "none (no HTTP request)"
    shown = [f"#{i} {cassette.interactions[i].method} {cassette.interactions[i].path}"
             if isinstance(i, int) and 0 <= i < len(cassette.interactions) else f"#{i}" for i in indexes[:4]]
    return ", ".join(shown) + (f" and {len(indexes) - 4} more" if len(indexes) > 4 else "")


def caches(mapping: Any) -> bool:
    """Does any step of the mapping answer from its cache?"""
    operations = [*mapping.methods.values(), *mapping.controls.values(), *mapping.polls.values()]
    return any(step.cache for op in operations for step in op.steps)


def notes(entries: list[Entry], cassette: Cassette, caches: bool) -> list[str]:
    """What explains the differences, once for the whole session."""
    out = []
    unused = [i for i, used in enumerate(cassette.used) if not used and i not in cassette.repeat_last]
    if unused:
        out.append(f"{len(unused)} recorded HTTP exchanges were never asked for (first: {_ranges(unused[:1], cassette)})")
    if caches and any(e.differs for e in entries):
        out.append("the mapping caches replies (`cache`): a step answered from memory in one run and sent in the "
                   "other shifts which recorded answer every later identical request gets")
    return out


# ------------------------------------------------------------------ render

def render_text(entries: list[Entry], extra: list[str] | None = None) -> str:
    lines = []
    for n, entry in enumerate(entries, 1):
        lines.append(f"[{n}] CPF  -> {json.dumps(entry.request)}")
        for http in entry.http:
            status = http["status"] if http["status"] is not None else "REPLAY MISS"
            lines.append(f"     HTTP {http['method']} {http['url']} -> {status}")
            if http["body"]:
                lines.append(f"          body: {http['body'][:300]}")
        lines.append(f"     CPF  <- {json.dumps(entry.reply)}")
        if entry.differs:
            lines.append(f"     DIFFERS from the recorded reply at {entry.differs}")
            lines += [f"          because {why}" for why in entry.why]
    lines.append(_summary(entries))
    lines += [f"note: {note}" for note in extra or []]
    return "\n".join(lines) + "\n"


def _summary(entries: list[Entry]) -> str:
    misses = sum(1 for e in entries if e.miss)
    errors = sum(1 for e in entries if "error" in e.reply)
    text = f"{len(entries)} requests, {errors} error replies, {misses} caused by replay misses"
    recorded = [e for e in entries if e.recorded is not None]
    if recorded:
        differ = sum(1 for e in recorded if e.differs)
        text += f"; {differ} of {len(recorded)} recorded replies differ" if differ else \
            f"; all {len(recorded)} recorded replies reproduced"
    return text


def render_json(entries: list[Entry], extra: list[str] | None = None) -> str:
    """A list of entries; the session notes ride on each entry that differs."""
    return json.dumps([{"request": e.request, "http": e.http, "reply": e.reply, "replay_miss": e.miss,
                        "recorded_reply": e.recorded, "differs": e.differs,
                        "why": e.why + (extra or []) if e.differs else e.why} for e in entries], indent=2) + "\n"
