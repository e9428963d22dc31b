"""`cpfmap call`: one CPF method against the backend or a recording, with the HTTP exchanges shown."""

from __future__ import annotations

import json

from cpfmap.clock import RealClock, VirtualClock
from cpfmap.http.transport import Transport
from cpfmap.http.wrappers import Exchange, TracingTransport
from cpfmap.language import model as m
from cpfmap.protocol.rpc import Server, engine_handlers
from cpfmap.redact import Redactor
from cpfmap.runtime.engine import Engine


def call(mapping: m.CompiledMapping, method: str, params: dict, raw_settings: dict, transport: Transport,
         replay: bool) -> tuple[dict, dict, list[Exchange], Redactor]:
    """Connect, then one method: (connect reply, reply, exchanges, redactor)."""
    clock = VirtualClock() if replay else RealClock()
    redactor = Redactor()
    tracing = TracingTransport(transport, clock.now if replay else __import__("time").monotonic)
    server = Server(engine_handlers(Engine(mapping, tracing, clock, redactor)), redactor)
    connected = server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": raw_settings}}))
    if method == "provider/connect" or "result" not in connected:
        return connected, connected, tracing.exchanges, redactor  # connecting was the call
    request = {"method": method, "params": params} if params else {"method": method}
    reply = server.handle_text(json.dumps(request))
    return connected, reply, tracing.exchanges, redactor


def show_exchange(exchange: Exchange, redactor: Redactor) -> str:
    status = exchange.response.status if exchange.response is not None else f"no answer: {exchange.error}"
    head = redactor(f"-> {exchange.request.method} {exchange.request.url}  <- {status} ({exchange.seconds * 1000:.0f} ms)")
    body = exchange.request.body
    return head + (f"\n   sent: {redactor(body.decode('utf-8', 'replace'))[:400]}" if body else "")

