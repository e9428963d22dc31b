"""Transports that wrap a transport: one that keeps every exchange (transcripts, `call -v`,
the embedding API) and one that logs each exchange at DEBUG."""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Callable

from cpfmap.errors import CpfmapError
from cpfmap.http.transport import HttpRequest, HttpResponse, Transport, reset_connections

log = logging.getLogger("cpfmap")



@dataclass
class Exchange:
    request: HttpRequest
    response: HttpResponse | None   # None: no answer (the error says why)
    seconds: float
    error: Exception | None = None


class TracingTransport:
    """Wraps a transport and keeps the exchanges, for transcripts and `call -v` (every one),
    and the embedding API (the last `keep`: a provider may live for months). `sent` counts
    them all. Any thread may send: appends are under a lock."""

    def __init__(self, inner: Transport, clock: Callable[[], float], keep: int | None = None) -> None:
        self.inner = inner
        self.clock = clock
        self.exchanges: list[Exchange] = []
        self.keep = keep
        self.sent = 0
        self.lock = threading.Lock()

    def send(self, request: HttpRequest) -> HttpResponse:
        started = self.clock()
        try:
            response = self.inner.send(request)
        except Exception as exc:
            self._keep(Exchange(request, None, self.clock() - started, exc))
            raise
        self._keep(Exchange(request, response, self.clock() - started))
        return response

    def _keep(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)
            self.sent += 1
            if self.keep is not None and len(self.exchanges) >= 2 * self.keep:   # trimmed now and then, not per append
                del self.exchanges[:-self.keep]

    def since(self, sent: int) -> list[Exchange]:
        """The kept exchanges after the first `sent` (an earlier value of self.sent)."""
        with self.lock:
            kept = self.exchanges[-self.keep:] if self.keep is not None else list(self.exchanges)
            return kept[max(len(kept) - (self.sent - sent), 0):]

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



def masked(exchange: Exchange, redactor: Callable[[str], str]) -> Exchange:
    """The exchange with every secret the redactor knows masked (URL, headers, bodies, error)."""
    def text(body: bytes | None) -> bytes | None:
        return None if body is None else redactor(body.decode("utf-8", "replace")).encode("utf-8")
    request = exchange.request
    request = dataclasses.replace(request, url=redactor(request.url), body=text(request.body),
                                  headers=tuple((k, redactor(v)) for k, v in request.headers))
    response = exchange.response
    if response is not None:
        response = dataclasses.replace(response, body=text(response.body) or b"",
                                       headers=tuple((k, redactor(v)) for k, v in response.headers))
    error = exchange.error
    if isinstance(error, CpfmapError):
        error = copy.copy(error)
        error.message = redactor(error.message)
    return Exchange(request, response, exchange.seconds, error)
