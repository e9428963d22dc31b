"""JSON-lines framing, method dispatch and error -> CPF code.

One request per line in, exactly one reply per request out, flushed at once. Blank lines
get no reply; a BOM and CRLF are tolerated; lines of any size are read whole. Nothing
here knows about argv or the real stdout: streams are injected.
"""
from __future__ import annotations

import json
import logging
import time
from typing import IO, Any, Callable, Mapping

from . import contract
from .errors import CpfmapError, InternalError, InvalidParams, MethodNotFound, ParseError
from .redact import Redactor

log = logging.getLogger("cpfmap")
# method -> ((param, type, required), ...): what RAS sends, checked before anything runs.
PARAMS: dict[str, tuple] = {name: contract.signature(name) for name in contract.METHODS}
CONTROLS = tuple(contract.CONTROLS)
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
                 broken: CpfmapError | None = None) -> None:
        self.handlers = handlers
        self.redactor = redactor
        self.broken = broken  # the mapping did not load: every request gets this error

    def serve(self, stdin: IO[bytes], stdout: IO[bytes]) -> int:
        for raw in stdin:
            reply = self.handle_line(raw)
            if reply is not None:
                stdout.write(reply.encode("ascii") + b"\n")
                stdout.flush()
        return 0

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
        if not isinstance(method, str) or not method:
            raise MethodNotFound("the request has no method")
        handler = self.handlers.get(method)
        if handler is None:
            raise MethodNotFound(f"unknown method {method[:80]!r}; methods: {', '.join(sorted(PARAMS))}")
        params = check_params(method, params)
        if self.broken is not None:
            raise self.broken
        return handler(params)

    def _encode(self, reply: dict) -> str:
        try:
            return json.dumps(reply, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            fallback = {"error": {"code": InternalError.code, "message": f"internal error: reply not JSON: {exc}"}}
            if "id" in reply:
                fallback["id"] = reply["id"]
            return json.dumps(fallback, ensure_ascii=True, default=str)

    def _log(self, request: Any, outcome: str, seconds: float) -> None:
        method = request.get("method") if isinstance(request, dict) else None
        params = request.get("params") if isinstance(request, dict) else None
        brief = ""
        if isinstance(params, dict):
            brief = " ".join(f"{k}={params[k]}" for k in ("id", "control", "name", "is_template")
                             if isinstance(params.get(k), (str, bool)))
        log.info("%s %s-> %s (%.0f ms)", method or "?", brief + " " if brief else "", self.redactor(outcome),
                 seconds * 1000)


def _parse(text: str) -> dict:
    try:
        request = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"the line is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ParseError("the request must be a JSON object")
    return request


def engine_handlers(engine: Any) -> dict[str, Callable[[dict], Any]]:
    """The dispatch table: CPF method -> engine handler."""
    call = lambda name: lambda params: engine.call(name, params)  # noqa: E731
    table = {"provider/initialize": engine.initialize, "provider/connect": engine.connect,
             "provider/disconnect": engine.disconnect, "guests/control": engine.control,
             "tasks/get": engine.task_status}
    for method in PARAMS:
        table.setdefault(method, call(method))
    return table
