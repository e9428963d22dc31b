"""Recorded HTTP traffic: load, match, replay, record, scrub.

Two forms load:
- VCR.py cassettes (version 1): `interactions` of request/response, as vcrpy and
  pytest-recording write them. Ours are written in that form, so they load in vcrpy.
- A hand-written form for responses taken from an API reference or a curl session:
      responses:
        - request: {method: GET, path: /cluster/resources, query: {type: vm}}
          response: {status: 200, json: {data: []}}
        - request: {method: GET, path: /tasks/1/status}
          responses: [{json: {state: running}}, {json: {state: done}}]   # polled in order
          repeat_last: true

Matching is on method, URL path and query (and body where the hand-written form gives
one); host and port are ignored, since they come from the settings. A scrubbed value
(`***`) in a recording matches anything. Identical requests get their recorded answers in
order; the last one repeats only where the author allows it.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import re
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from cpfmap.errors import CassetteError, ReplayMiss
from cpfmap.http.transport import HttpRequest, HttpResponse, Transport, reset_connections
from cpfmap.language.source import YamlLimit, parse_yaml, read_text
from cpfmap.protocol.values import string_id
from cpfmap.redact import MASK, Redactor, looks_secret

log = logging.getLogger("cpfmap")
SECRET_HEADERS = {"authorization", "cookie", "set-cookie", "csrfpreventiontoken", "x-api-key", "x-auth-token"}


@dataclass(frozen=True)
class Recorded:
    """One interaction, ready to match and replay."""

    method: str
    path: str
    query: tuple            # sorted ((name, value), ...)
    body: Any = None        # for matching: parsed JSON, form pairs or text; None: not matched
    match_body: bool = False
    response: HttpResponse = field(default_factory=lambda: HttpResponse(200))
    source: str = ""


def split_url(url: str) -> tuple[str, tuple]:
    parts = urllib.parse.urlsplit(url)
    return parts.path or "/", tuple(sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))


def _same(recorded: Any, live: Any) -> bool:
    if recorded == MASK or (isinstance(recorded, str) and MASK in recorded and _masked_match(recorded, live)):
        return True
    if isinstance(recorded, dict) and isinstance(live, dict):
        return recorded.keys() == live.keys() and all(_same(recorded[k], live[k]) for k in recorded)
    if isinstance(recorded, (list, tuple)) and isinstance(live, (list, tuple)):
        return len(recorded) == len(live) and all(_same(a, b) for a, b in zip(recorded, live))
    return recorded == live or (str(recorded) == str(live) and not isinstance(recorded, (dict, list)))


def _masked_match(recorded: str, live: Any) -> bool:
    pieces = recorded.split(MASK)
    text = str(live)
    if not text.startswith(pieces[0]) or not text.endswith(pieces[-1]):
        return False
    return True


def body_for_match(body: bytes | None, content_type: str | None) -> Any:
    if not body:
        return None
    text = body.decode("utf-8", "replace")
    if content_type and "json" in content_type:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text
    if content_type and "form" in content_type:
        return sorted(urllib.parse.parse_qsl(text, keep_blank_values=True))
    return text


def _path_matches(recorded: str, live: str) -> bool:
    return live == recorded or (recorded.startswith("/") and live.endswith(recorded) and not recorded == "/")


class Cassette:
    def __init__(self, interactions: list[Recorded], repeat_last: set[int] | None = None,
                 name: str = "cassette") -> None:
        self.interactions = interactions
        self.repeat_last = repeat_last or set()  # indexes whose last answer may repeat
        self.name = name
        self.used = [False] * len(interactions)
        self.answered: list[int] = []   # which interaction answered each request, in order

    def answer(self, request: HttpRequest) -> HttpResponse:
        path, query = split_url(request.url)
        body = body_for_match(request.body, request.header("Content-Type"))
        candidates = [i for i, r in enumerate(self.interactions) if self._matches(r, request.method, path, query, body)]
        fresh = [i for i in candidates if not self.used[i]]
        if fresh:
            self.used[fresh[0]] = True
            self.answered.append(fresh[0])
            return self.interactions[fresh[0]].response
        repeatable = [i for i in candidates if i in self.repeat_last]
        if repeatable:
            self.answered.append(repeatable[-1])
            return self.interactions[repeatable[-1]].response
        raise ReplayMiss(self._miss(request.method, path, query, body, bool(candidates)))

    @staticmethod
    def _matches(r: Recorded, method: str, path: str, query: tuple, body: Any) -> bool:
        if r.method != method or not _path_matches(r.path, path):
            return False
        if not _same(r.query, query):
            return False
        return not r.match_body or _same(r.body, body)

    def _miss(self, method: str, path: str, query: tuple, body: Any, exhausted: bool) -> str:
        shown = f"{method} {path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        if exhausted:
            return (f"replay miss: {shown}: every recorded answer for it was used already "
                    f"(the recording has fewer of these requests; allow repeat_last to reuse the last)")
        nearest = sorted(self.interactions, key=lambda r: _distance(r, method, path, query))[:3]
        hints = "; ".join(f"{r.method} {r.path}{'?' + urllib.parse.urlencode(r.query) if r.query else ''}"
                          f" ({_differs(r, method, path, query, body)})" for r in nearest)
        return f"replay miss: no recorded answer for {shown} in {self.name}" + (f"; nearest: {hints}" if hints else "")


def _distance(r: Recorded, method: str, path: str, query: tuple) -> tuple:
    return (r.method != method, -difflib.SequenceMatcher(None, r.path, path).ratio(), r.query != query)


def _differs(r: Recorded, method: str, path: str, query: tuple, body: Any) -> str:
    if r.method != method:
        return f"method {r.method} != {method}"
    if not _path_matches(r.path, path):
        return "path differs"
    if not _same(r.query, query):
        return f"query {dict(r.query)} != {dict(query)}"
    if r.match_body and not _same(r.body, body):
        return "body differs"
    return "already used"


# ------------------------------------------------------------------ loading

def load(path: str | Path) -> Cassette:
    path = Path(path)
    try:
        data = parse_yaml(read_text(path, "cassette"))
    except YamlLimit as exc:
        raise CassetteError(f"{path}: cassette refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise CassetteError(f"{path}: cassette is not valid YAML: {exc}") from None
    return from_data(data, path)


def from_data(data: Any, path: Path | str = "<cassette>") -> Cassette:
    path = Path(path)
    try:
        return _from_data(data, path)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CassetteError(f"{path}: malformed cassette ({type(exc).__name__}: {str(exc)[:200]})") from None


def _from_data(data: Any, path: Path) -> Cassette:
    if isinstance(data, dict) and "interactions" in data:
        return Cassette([_from_vcr(i, n, path) for n, i in enumerate(data["interactions"] or [])], name=str(path))
    if isinstance(data, dict) and "responses" in data:
        return _from_hand(data["responses"] or [], path)
    raise CassetteError(f"{path}: not a cassette (expected `interactions` (VCR.py) or `responses` (hand-written))")


def _headers(raw: Any) -> tuple:
    out = []
    for key, value in (raw or {}).items():
        for item in value if isinstance(value, list) else [value]:
            out.append((str(key), str(item)))
    return tuple(out)


def _body_bytes(raw: Any) -> bytes:
    if isinstance(raw, dict):
        raw = raw.get("string", "")
    if raw is None:
        return b""
    return raw if isinstance(raw, bytes) else str(raw).encode("utf-8")


def _from_vcr(item: dict, n: int, path: Path) -> Recorded:
    try:
        req, resp = item["request"], item["response"]
        url_path, query = split_url(req["uri"])
        status = resp["status"]
        response = HttpResponse(int(status["code"]), _headers(resp.get("headers")), _body_bytes(resp.get("body")),
                                str(status.get("message", "")))
        return Recorded(req["method"].upper(), url_path, query, response=response, source=f"{path}#{n}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CassetteError(f"{path}: interaction {n} is malformed ({exc})") from None


def _from_hand(entries: list, path: Path) -> Cassette:
    out: list[Recorded] = []
    repeat: set[int] = set()
    for n, entry in enumerate(entries):
        try:
            req = entry["request"]
            answers = entry.get("responses") or [entry["response"]]
            query = tuple(sorted((str(k), string_id(v)) for k, v in (req.get("query") or {}).items()))
            for answer in answers:
                out.append(Recorded(str(req["method"]).upper(), str(req["path"]), query, _hand_body(req),
                                    "json" in req or "form" in req or "body" in req, _hand_response(answer),
                                    f"{path}#responses[{n}]"))
            if entry.get("repeat_last"):
                repeat.add(len(out) - 1)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CassetteError(f"{path}: responses[{n}] is malformed ({exc}); each needs request "
                               "{method, path} and response (or responses)") from None
    return Cassette(out, repeat, str(path))


def _hand_body(req: dict) -> Any:
    if "json" in req:
        return req["json"]
    if "form" in req:
        return sorted((str(k), string_id(v)) for k, v in req["form"].items())
    return req.get("body")


def _hand_response(answer: dict) -> HttpResponse:
    status = int(answer.get("status", 200))
    headers = _headers(answer.get("headers"))
    if "json" in answer:
        return HttpResponse(status, headers + (("Content-Type", "application/json"),),
                            json.dumps(answer["json"]).encode("utf-8"), answer.get("reason", ""))
    return HttpResponse(status, headers, _body_bytes(answer.get("body")), answer.get("reason", ""))


# ---------------------------------------------------------------- transports

class ReplayTransport:
    """Answers from a cassette; never touches the network."""

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette

    def send(self, request: HttpRequest) -> HttpResponse:
        return self.cassette.answer(request)

    def close(self) -> None:
        pass


class RecordingTransport:
    """Sends through the live transport and writes every exchange, scrubbed, to a cassette.

    Each exchange is appended once, when the next request starts (so a login reply is
    written only once its ticket is known to be secret): the cost per exchange is flat and
    a crash loses at most the last one. At close the file is rewritten whole, scrubbed with
    every secret the session learnt, in VCR.py's canonical layout.
    """

    def __init__(self, inner: Transport, path: str | Path, redactor: Redactor,
                 secret_fields: frozenset = frozenset(), public_fields: frozenset = frozenset()) -> None:
        self.inner = inner
        self.secret_fields = frozenset(name.lower() for name in secret_fields)
        self.public_fields = frozenset(name.lower() for name in public_fields)
        self.path = Path(path)
        self.redactor = redactor
        self.exchanges: list[tuple[HttpRequest, HttpResponse]] = []
        self.written = 0   # exchanges already appended to the file
        _check_writable(self.path)

    def send(self, request: HttpRequest) -> HttpResponse:
        self.flush()
        response = self.inner.send(request)
        self.exchanges.append((request, response))
        return response

    def close(self) -> None:
        try:   # a session without HTTP still leaves a cassette (empty): it replays as it ran
            self._write(lambda: write_atomic(self.path, dump(self._scrubbed(self.exchanges))))
        except CassetteError as exc:
            log.error("%s", exc.message)
        finally:
            self.inner.close()

    def reset(self) -> bool:
        return reset_connections(self.inner)

    def flush(self) -> None:
        """Append the exchanges not yet on disk; the file is a valid cassette after each flush."""
        new = self.exchanges[self.written:]
        if not new:
            return
        self._write(lambda: self._append(new))
        self.written = len(self.exchanges)

    def _append(self, new: list) -> None:
        if self.written == 0:
            write_atomic(self.path, "version: 1\ninteractions:\n")
        with self.path.open("a", encoding="utf-8", newline="\n") as out:
            out.write(_yaml(self._scrubbed(new)))

    def _write(self, write: Callable[[], None]) -> None:
        try:
            write()
        except OSError as exc:
            raise CassetteError(f"cannot write the cassette {self.path}: {exc.strerror or exc}") from None

    def _scrubbed(self, exchanges: list) -> list[dict]:
        return [vcr_interaction(q, r, self.redactor, self.secret_fields, self.public_fields) for q, r in exchanges]


def _check_writable(path: Path) -> None:
    """Fail before the first request, not after a session's worth of traffic."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=str(path.parent))
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise CassetteError(f"cannot write the cassette {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise CassetteError(f"cannot write the cassette {path}: it is a folder")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # scrubbed, meant to be shared (mkstemp makes files private)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def dump(interactions: Iterable[dict]) -> str:
    return _yaml({"interactions": list(interactions), "version": 1})


def _yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=120)


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when present: recording stays cheap


def vcr_interaction(request: HttpRequest, response: HttpResponse, redactor: Redactor,
                    fields: frozenset = frozenset(), public: frozenset = frozenset()) -> dict:
    """One exchange as VCR.py writes it, scrubbed: every known secret, and the value of every
    field whose name says secret (redact.looks_secret, or a name in `fields`) in every body
    (JSON, form, XML elements) and query, in requests and in replies alike."""
    scrub = _Scrub(redactor, fields, public)
    return {
        "request": {"body": scrub.body(request.body, request.header("Content-Type")),
                    "headers": _scrub_headers(request.headers, redactor),
                    "method": request.method, "uri": scrub.url(request.url)},
        "response": {"body": {"string": scrub.body(response.body, response.header("Content-Type")) or ""},
                     "headers": _scrub_headers(response.headers, redactor),
                     "status": {"code": response.status, "message": response.reason}},
    }


def _scrub_headers(headers: tuple, redactor: Redactor) -> dict:
    out: dict[str, list[str]] = {}
    for key, value in headers:
        clean = MASK if key.lower() in SECRET_HEADERS else redactor(value)
        out.setdefault(key, []).append(clean)
    return out


# A secret-looking name that only identifies or describes a credential: its value is kept in
# recordings (a replay may need it): the id or name of a token or key (PVE's `tokenid`, AWS's
# `AccessKeyId`), a type (`token_type: Bearer`), an expiry, a private address (EC2's
# `privateIpAddress`, `privateDnsName`). A mapping names more with connection.public_fields.
IDENTIFIES = re.compile(r"(token|key)[-_]?(id|name)$|(type|expires|expires[-_]?at|expiry|ttl|lifetime)$|"
                        r"private[-_]?(ip|dns|address|network|net)", re.I)
_XML_ELEMENT = re.compile(r"<([A-Za-z_][\w.:-]{0,200})(\s[^<>]{0,2000})?>([^<]*)</\1\s*>")


class _Scrub:
    def __init__(self, redactor: Redactor, fields: frozenset, public: frozenset = frozenset()) -> None:
        self.redactor, self.fields, self.public = redactor, fields, public

    def secret(self, name: object) -> bool:
        text = str(name)
        name_ = text.lower()
        if name_ in self.fields:
            return True
        return name_ not in self.public and looks_secret(text) and not IDENTIFIES.search(text)

    def pairs(self, pairs: list) -> list:
        return [(k, MASK if v and self.secret(k) else _masked(v, self.redactor)) for k, v in pairs]

    def url(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.urlencode(self.pairs(urllib.parse.parse_qsl(parts.query, True)))
        return urllib.parse.urlunsplit(parts._replace(path=self.redactor(parts.path), query=query))

    def body(self, body: bytes | None, content_type: str | None) -> str | None:
        if not body:
            return None
        text = body.decode("utf-8", "replace")
        if content_type and "form" in content_type:
            return urllib.parse.urlencode(self.pairs(urllib.parse.parse_qsl(text, keep_blank_values=True)))
        if content_type and "json" in content_type:
            try:
                data = json.loads(text)
            except (ValueError, RecursionError):
                return self.redactor(text)
            return json.dumps(self.json(data), sort_keys=False)
        if "<" in text:
            text = _XML_ELEMENT.sub(self._element, text)
        return self.redactor(text)

    def _element(self, match: re.Match) -> str:
        if not match[3] or not self.secret(match[1].rsplit(":", 1)[-1]):
            return match[0]
        return f"<{match[1]}{match[2] or ''}>{MASK}</{match[1]}>"

    def json(self, data: Any, hidden: bool = False) -> Any:
        """`hidden`: under a secret-named member. Its scalars (and a list's) are masked; an object
        under it is judged member by member (a login reply's `token` object holds the service
        catalog, which a replay needs)."""
        if isinstance(data, dict):
            return {k: self.json(v, self.secret(k)) for k, v in data.items()}
        if isinstance(data, list):
            return [self.json(v, hidden) for v in data]
        if hidden and data not in (None, "", True, False):
            return MASK
        return _masked(data, self.redactor) if isinstance(data, str) else data

    def clear(self, body: Any, content_type: str | None) -> bool:
        """Whether a recorded body (as a cassette holds it) shows a secret-named field's value."""
        text = body.get("string") if isinstance(body, dict) else body
        if not text:
            return False
        again = self.body(str(text).encode("utf-8"), content_type)
        if content_type and "json" in content_type:
            try:
                return json.loads(again or "null") != json.loads(text)
            except (ValueError, RecursionError):
                return False
        if content_type and "form" in content_type:
            return urllib.parse.parse_qsl(again or "", True) != urllib.parse.parse_qsl(text, True)
        return again != text


def clear_fields(path: Path, fields: frozenset = frozenset(), public: frozenset = frozenset()) -> list[int]:
    """Exchanges of a recorded (VCR.py layout) cassette whose request query or a body shows the
    value of a secret-named field in clear: what `pack verify` refuses to ship."""
    data = parse_yaml(read_text(path, "cassette"))
    scrub = _Scrub(Redactor(), frozenset(f.lower() for f in fields), frozenset(f.lower() for f in public))
    found = []
    for n, exchange in enumerate((data or {}).get("interactions") or []):
        request, response = exchange.get("request") or {}, exchange.get("response") or {}
        uri = str(request.get("uri", ""))
        shown = scrub.url(uri) != uri and urllib.parse.parse_qsl(urllib.parse.urlsplit(scrub.url(uri)).query) != \
            urllib.parse.parse_qsl(urllib.parse.urlsplit(uri).query)
        for side in (request, response):
            shown = shown or scrub.clear(side.get("body"), _content_type(side.get("headers")))
        if shown:
            found.append(n)
    return found


def _content_type(headers: Any) -> str | None:
    for key, value in (headers or {}).items():
        if str(key).lower() == "content-type":
            return str(value[0] if isinstance(value, list) and value else value)
    return None


def _masked(value: str, redactor: Redactor) -> str:
    """A value holding a secret is masked whole, so a replay matches it as a wildcard."""
    return MASK if redactor.hides(value) else value
