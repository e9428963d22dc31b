"""JSON-lines framing, method dispatch and error -> CPF code.

One request per line in, exactly one reply per request out, flushed at once. Blank lines
get no reply; a BOM and CRLF are tolerated; lines up to MAX_LINE bytes are read whole (a
longer one is answered with -32700 and skipped). Every reply line is strict JSON whatever
came in: NaN, Infinity and numbers out of float range are refused, never echoed. Nothing
here knows about argv or the real stdout: streams are injected.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import time
from typing import IO, Any, Callable, Mapping

from cpfmap.errors import CpfmapError, InternalError, InvalidParams, InvalidRequest, MethodNotFound, ParseError
from cpfmap.protocol import contract
from cpfmap.redact import Redactor

log = logging.getLogger("cpfmap")
# method -> ((param, type, required), ...): what RAS sends, checked before anything runs.
PARAMS: dict[str, tuple] = {name: contract.signature(name) for name in contract.METHODS}
CONTROLS = tuple(contract.CONTROLS)
MAX_LINE = 64 * 1024 * 1024  # bytes of one request line; RAS's largest are a few kilobytes
TYPE_NAMES = {str: "a string", bool: "a boolean", dict: "an object"}


def check_params(method: str, params: Any) -> dict:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidParams(f"{method}: params must be an object")
    for name, kind, required in PARAMS[method]:
        value = params.get(name)
        if value is None:
            if required:
                raise InvalidParams(f"{method}: params.{name} is required ({TYPE_NAMES[kind]})")
            continue
        if not isinstance(value, kind):
            raise InvalidParams(f"{method}: params.{name} must be {TYPE_NAMES[kind]}, got {json.dumps(value)[:60]}")
        if kind is str and name in ("id", "control") and not value.strip():
            raise InvalidParams(f"{method}: params.{name} must not be empty")
    if method == "guests/control" and params["control"] not in CONTROLS:
        raise InvalidParams(f"unknown control {params['control']!r}; controls: {', '.join(CONTROLS)}")
    return params


class Server:
    """Answers CPF requests with a handler table; `handlers` maps method -> callable(params)."""

    def __init__(self, handlers: Mapping[str, Callable[[dict], Any]], redactor: Redactor,
                 broken: CpfmapError | None = None, max_line: int = MAX_LINE) -> None:
        self.handlers = handlers
        self.redactor = redactor
        self.broken = broken  # the mapping did not load (or the cassette): every request gets this error
        self.max_line = max_line

    def serve(self, stdin: IO[bytes], stdout: IO[bytes]) -> int:
        for raw in _lines(stdin, self.max_line):
            reply = self.handle_line(raw) if raw is not None else self._too_long()
            if reply is not None:
                stdout.write(reply.encode("ascii") + b"\n")
                stdout.flush()
        return 0

    def _too_long(self) -> str:
        log.warning("a request line longer than %d bytes was skipped", self.max_line)
        return self._encode({"error": {"code": ParseError.code,
                                       "message": f"the line is longer than {self.max_line} bytes; skipped"}})

    def handle_line(self, raw: bytes | str) -> str | None:
        """The reply line (without newline) for one input line, or None for a blank line."""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            return self._encode({"error": {"code": ParseError.code, "message": "the line is not UTF-8 text"}})
        text = text.lstrip("\ufeff").strip()
        if not text:
            return None
        return self._encode(self.handle_text(text))

    def handle_text(self, text: str) -> dict:
        started = time.monotonic()
        request: Any = None
        try:
            request = _parse(text)
            method = request.get("method")
            reply = {"result": self._dispatch(method, request.get("params"))}
            outcome = "ok"
        except CpfmapError as exc:
            reply = {"error": {"code": exc.code, "message": self.redactor(exc.message)}}
            outcome = f"error {exc.code}: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - a defect must not kill the provider or show a traceback
            log.exception("internal error")
            reply = {"error": {"code": InternalError.code,
                               "message": self.redactor(f"internal error: {type(exc).__name__}: {exc}")}}
            outcome = "internal error"
        if isinstance(request, dict) and "id" in request:
            reply["id"] = request["id"]
        self._log(request, outcome, time.monotonic() - started)
        return reply

    def _dispatch(self, method: Any, params: Any) -> Any:
        if not isinstance(method, str):
            raise InvalidRequest("the request has no `method` string")
        handler = self.handlers.get(method)
        if handler is None:
            raise MethodNotFound(f"unknown method {method[:80]!r}; methods: {', '.join(sorted(PARAMS))}")
        params = check_params(method, params)
        if self.broken is not None:
            raise self.broken
        return handler(params)

    def _encode(self, reply: dict) -> str:
        try:
            return _strict_json(reply)
        except (TypeError, ValueError, RecursionError) as exc:
            fallback = {"error": {"code": InternalError.code,
                                  "message": self.redactor(f"internal error: reply not JSON: {exc}")}}
            with_id = dict(fallback, id=reply["id"]) if "id" in reply else fallback
            try:
                return _strict_json(with_id)
            except (TypeError, ValueError, RecursionError):
                return _strict_json(fallback)

    def _log(self, request: Any, outcome: str, seconds: float) -> None:
        method = request.get("method") if isinstance(request, dict) else None
        params = request.get("params") if isinstance(request, dict) else None
        brief = ""
        if isinstance(params, dict):
            brief = " ".join(f"{k}={params[k]}" for k in ("id", "control", "name", "is_template")
                             if isinstance(params.get(k), (str, bool)))
        log.info("%s %s-> %s (%.0f ms)", method or "?", brief + " " if brief else "", self.redactor(outcome),
                 seconds * 1000)


def _strict_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _lines(stream: IO[bytes], limit: int):
    """Each line of the stream, or None for a line longer than limit (read and dropped in pieces)."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = stream.readline(limit)
        yield None


class _OutOfRange(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _OutOfRange(text[:40])
    return value


MAX_INT_DIGITS = 1000   # far past any id; Python itself refuses more than 4300 digits


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise _OutOfRange(f"{text[:20]}... ({len(text)} digits)")
    return int(text)


def _parse(text: str) -> dict:
    try:
        request = json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_bounded_int)
    except _OutOfRange as exc:
        raise InvalidRequest(f"the number {exc} is out of range") from None
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"the line is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise InvalidRequest(f"the request must be a JSON object, not {_json_type(request)}")
    return request


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "null")


def engine_handlers(engine: Any) -> dict[str, Callable[[dict], Any]]:
    """The dispatch table: CPF method -> engine handler."""
    call = lambda name: lambda params: engine.call(name, params)  # noqa: E731
    table = {"provider/initialize": engine.initialize, "provider/connect": engine.connect,
             "provider/disconnect": engine.disconnect, "guests/control": engine.control,
             "tasks/get": engine.task_status}
    for method in PARAMS:
        table.setdefault(method, call(method))
    answering = getattr(engine, "answering", None)   # each reply within the engine's reply deadline
    if answering is None:
        return table
    return {method: functools.partial(answering, handler) for method, handler in table.items()}
