"""Transports that wrap a transport: one that keeps every exchange (transcripts, `call -v`,
the embedding API) and one that logs each exchange at DEBUG."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from cpfmap.http.transport import HttpRequest, HttpResponse, Transport, reset_connections

log = logging.getLogger("cpfmap")



@dataclass
class Exchange:
    request: HttpRequest
    response: HttpResponse | None   # None: no answer (the error says why)
    seconds: float
    error: Exception | None = None


class TracingTransport:
    """Wraps a transport and keeps every exchange, for transcripts and `call -v`."""

    def __init__(self, inner: Transport, clock: Callable[[], float]) -> None:
        self.inner = inner
        self.clock = clock
        self.exchanges: list[Exchange] = []

    def send(self, request: HttpRequest) -> HttpResponse:
        started = self.clock()
        try:
            response = self.inner.send(request)
        except Exception as exc:
            self.exchanges.append(Exchange(request, None, self.clock() - started, exc))
            raise
        self.exchanges.append(Exchange(request, response, self.clock() - started))
        return response

    def close(self) -> None:
        self.inner.close()

    def reset(self) -> bool:
        return reset_connections(self.inner)


class LoggedTransport:
    """Logs every HTTP exchange at DEBUG (the log is redacted): `serve --log-level DEBUG`, and
    what `conformance -v` shows under each CPF exchange."""

    def __init__(self, inner: Transport, clock: Callable[[], float]) -> None:
        self.inner, self.clock = inner, clock

    def send(self, request: HttpRequest) -> HttpResponse:
        started = self.clock()
        try:
            response = self.inner.send(request)
        except Exception as exc:
            log.debug("http %s %s -> no answer: %s", request.method, request.url, exc)
            raise
        log.debug("http %s %s -> %s (%.0f ms)", request.method, request.url, response.status,
                  (self.clock() - started) * 1000)
        return response

    def close(self) -> None:
        self.inner.close()

