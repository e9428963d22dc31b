"""The one place that assembles a CPF provider: compiled mapping + transport + clock -> engine
(with the background refresh pool when the backend is live) -> server. `cpfmap serve` and the
embedding API (`cpfmap.Provider`) both build it with `assemble`, so they run the same parts.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

from cpfmap.clock import Clock, LogicalClock, RealClock
from cpfmap.http.transport import LiveTransport, RetryPolicy, Transport
from cpfmap.http.wrappers import Exchange, TracingTransport, masked
from cpfmap.language import loader
from cpfmap.language.model import CompiledMapping
from cpfmap.protocol.rpc import Server, engine_handlers
from cpfmap.redact import Redactor
from cpfmap.runtime.cache import PooledPrefetch
from cpfmap.runtime.engine import Engine

KEEP_EXCHANGES = 200   # HTTP exchanges a Provider keeps for its caller (`exchanges`): the newest


def assemble(mapping: CompiledMapping, transport: Transport, clock: Clock, redactor: Redactor, *,
             live: bool) -> tuple[Engine, Server]:
    """The engine and the JSON-lines server over it. live: the transport reaches the real
    backend, so prefetched details are refreshed by the background pool; recordings and replays
    refresh inline, so they stay deterministic."""
    engine = Engine(mapping, transport, clock, redactor, PooledPrefetch() if live else None)
    return engine, Server(engine_handlers(engine), redactor)


class Provider:
    """A CPF provider over a mapping: `call` answers one request as `cpfmap serve` would.

    The backend is `transport` (any object with send(HttpRequest) -> HttpResponse and close(),
    e.g. FunctionTransport(handler)),
    or a recording (`recording`: a cassette file; time is then the logical clock `serve --replay` uses, one
    second per request plus the engine's waits, so the same cache decisions are made), or
    by default the live backend the mapping's settings point at."""

    def __init__(self, mapping: CompiledMapping | str | Path, transport: Transport | None = None, *,
                 recording: str | Path | None = None, clock: Clock | None = None) -> None:
        self.mapping = mapping if isinstance(mapping, CompiledMapping) else loader.load(mapping)
        if recording is not None:
            from cpfmap.recording import cassette  # here: `cpfmap serve` starts without the recording code
            transport, clock = cassette.ReplayTransport(cassette.load(recording)), clock or LogicalClock()
        clock = clock or RealClock()
        conn = self.mapping.connection
        inner = transport or LiveTransport(RetryPolicy.of(conn), clock)
        self.transport = TracingTransport(inner, clock.now, keep=KEEP_EXCHANGES)
        self.redactor = Redactor()
        self.engine, self.server = assemble(self.mapping, self.transport, clock, self.redactor, live=transport is None)

    def call(self, method: str, params: dict[str, Any] | None = None, request_id: Any = None) -> dict[str, Any]:
        """One CPF request; the reply object (`result` or `error`), secrets masked."""
        request: dict[str, Any] = {"method": method}
        if params is not None:
            request["params"] = params
        if request_id is not None:
            request["id"] = request_id
        return self.call_line(json.dumps(request))

    def call_line(self, line: str) -> dict[str, Any]:
        """One request as RAS writes it (a JSON line, valid or not)."""
        return self.server.handle_text(line)

    @property
    def exchanges(self) -> list[Exchange]:
        """The last KEEP_EXCHANGES HTTP exchanges, secrets masked."""
        return self.exchanges_since(0)

    @property
    def sent(self) -> int:
        """HTTP exchanges so far (all of them, kept or not)."""
        return self.transport.sent

    def exchanges_since(self, sent: int) -> list[Exchange]:
        """The kept exchanges after the first `sent` (an earlier value of `self.sent`), secrets masked."""
        return [masked(x, self.redactor) for x in self.transport.since(sent)]

    def close(self) -> None:
        try:
            self.engine.disconnect({})
        except Exception:  # noqa: BLE001 - closing must not mask the caller's own error
            pass
        self.transport.close()

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

