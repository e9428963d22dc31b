"""The embedding API, for tooling and tests that drive cpfmap from Python (re-exported by the
`cpfmap` package):

    import cpfmap
    mapping = cpfmap.load("proxmox-ve:linked")             # file, pack folder or pack name
    with cpfmap.Provider(mapping, recording="inventory.yaml") as provider:
        provider.call("provider/connect", {"settings": {...}})
        reply = provider.call("guests/list")                # {"result": {...}} or {"error": {...}}

A reply is exactly what RAS would read on stdout (as a dict). Errors at load time raise
`MappingError` (with every finding); errors of a call are in the reply, never raised.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

from . import cassette, catalog, spec
from .cassette import ReplayTransport
from .clock import Clock, RealClock, VirtualClock
from .engine import Engine
from .errors import Finding
from .model import CompiledMapping
from .redact import Redactor
from .rpc import Server, engine_handlers
from .transport import Exchange, LiveTransport, RetryPolicy, TracingTransport, Transport


def load(target: str | Path) -> CompiledMapping:
    """A compiled mapping from a mapping file, a pack folder or a pack reference (NAME or
    NAME:VARIANT); raises MappingError with every finding."""
    return spec.load(target)


def check(target: str | Path) -> list[Finding]:
    """What `cpfmap validate` reports for one mapping: errors and warnings."""
    return spec.check(target)


def packs() -> list[catalog.Pack]:
    """Every pack a name can find, in lookup order (the first of each name)."""
    return list(catalog.listed(catalog.discover()))


def find_pack(name_or_folder: str) -> catalog.Pack:
    return catalog.pack_at(name_or_folder)


def verify_pack(name_or_folder: str) -> list[Finding]:
    """What `cpfmap pack verify` reports; the pack is sound when no finding is an error."""
    from . import packtools
    return packtools.verify(catalog.pack_at(name_or_folder))


class Provider:
    """A CPF provider over a mapping: `call` answers one request as `cpfmap serve` would.

    The backend is `transport` (any object with send(HttpRequest) -> HttpResponse and close(),
    e.g. FunctionTransport(handler)),
    or a recording (`recording`: a cassette file; polling then runs on a virtual clock), or
    by default the live backend the mapping's settings point at."""

    def __init__(self, mapping: CompiledMapping | str | Path, transport: Transport | None = None, *,
                 recording: str | Path | None = None, clock: Clock | None = None) -> None:
        self.mapping = mapping if isinstance(mapping, CompiledMapping) else load(mapping)
        if recording is not None:
            transport, clock = ReplayTransport(cassette.load(recording)), clock or VirtualClock()
        clock = clock or RealClock()
        conn = self.mapping.connection
        inner = transport or LiveTransport(RetryPolicy(conn.retries, conn.backoff), clock)
        self.transport = TracingTransport(inner, clock.now)
        self.redactor = Redactor()
        self.engine = Engine(self.mapping, self.transport, clock, self.redactor)
        self.server = Server(engine_handlers(self.engine), self.redactor)

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
        """Every HTTP exchange so far (requests unmasked: mask with `self.redactor`)."""
        return self.transport.exchanges

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
