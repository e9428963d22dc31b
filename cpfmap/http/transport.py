"""HTTP requests and responses, the Transport interface and the live transport.

A Transport is anything with `send(HttpRequest) -> HttpResponse` that raises
TransportError when no HTTP answer came back. This is the only module that imports
`requests`; its exceptions are mapped here, at the boundary, onto our error tree.
"""
from __future__ import annotations

import functools
import logging
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Protocol

from cpfmap.clock import Clock, RealClock
from cpfmap.errors import TransportError
from cpfmap.http import bodies
from cpfmap.http.watchdog import WATCHDOG, Watch

if TYPE_CHECKING:   # imported on the first request: a serve process answers initialize without them
    import requests


log = logging.getLogger("cpfmap")
SAFE_RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Answers after which a request that is safe to repeat is sent again. 429 proves the request
# was not applied; 502, 503 and 504 do not (a gateway may have passed it on).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
NOT_APPLIED = frozenset({429})


@dataclass(frozen=True)
class Tls:
    verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    timeout: tuple[float, float] = (10.0, 60.0)
    tls: Tls = field(default_factory=Tls)
    retry_safe: bool = False   # the mapping says repeating it is harmless
    deadline: float = 120.0    # seconds for one whole exchange: connect, send, every read
    max_body: int = 64 * 1024 * 1024   # bytes of a response body (decoded) we accept
    failover: bool = False     # another host can take it: do not wait on this one's connection errors

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    reason: str = ""
    elapsed: float = 0.0
    resent: bool = False   # answers a repeat of a request whose earlier attempt may have taken effect
    xml_lists: tuple[str, ...] = ()   # element names its XML body always reads as lists (connection.xml_lists)

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)

    def data(self) -> Any:
        """The body as data by its content type (http/bodies.py): JSON, XML or text; None for an
        empty body; raises bodies.BodyError (a ValueError) if it cannot be read."""
        return bodies.decode(self.body, self.header("Content-Type"), self.xml_lists)

    def json(self) -> Any:
        """The body as JSON; None for an empty body; raises ValueError (bodies.BodyError) if it is
        not JSON, or holds a number that is not finite (bodies.parse_json)."""
        return bodies.parse_json(self.body) if self.body.strip() else None

    def text(self, limit: int = 400) -> str:
        return self.body[:limit].decode("utf-8", "replace")


class Transport(Protocol):
    def send(self, request: HttpRequest) -> HttpResponse: ...
    def close(self) -> None: ...


class FunctionTransport:
    """A transport that is just a function: the in-process fake for unit tests."""

    def __init__(self, handler: Callable[[HttpRequest], HttpResponse]) -> None:
        self.handler = handler
        self.sent: list[HttpRequest] = []

    def send(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        return self.handler(request)

    def close(self) -> None:
        pass


def reset_connections(transport: Transport) -> bool:
    """Drop a transport's kept-alive connections; False if it cannot (it keeps none, or replays)."""
    reset = getattr(transport, "reset", None)
    return bool(reset()) if reset is not None else False


@dataclass(frozen=True)
class RetryPolicy:
    """When a request is sent again (connection.retries, backoff, resend_writes_on, max_retry_wait).

    Any request whose connection never opened; a request safe to repeat (GET, HEAD, OPTIONS,
    a step marked idempotent, a login) after no answer (not a read timeout) or RETRY_STATUSES;
    any request after a status in `resend_writes_on` (the API documents it as "not applied").
    A Retry-After is honoured up to `max_wait` seconds; a longer one is the answer."""
    attempts: int = 3
    backoff: float = 0.5
    resend_writes_on: frozenset = frozenset()
    max_wait: float = 60.0

    @classmethod
    def of(cls, conn: Any) -> "RetryPolicy":
        """The policy a mapping's `connection` section sets."""
        return cls(conn.retries, conn.backoff, frozenset(conn.resend_writes_on), conn.max_retry_wait)

    def delay(self, attempt: int) -> float:
        return self.backoff * (2 ** (attempt - 1))


def may_have_run(exc: BaseException) -> bool:
    """A request that failed this way may still have taken effect: the answer, not the request, was lost."""
    return isinstance(exc, TransportError) and not getattr(exc, "not_sent", False)


def retry_after(response: HttpResponse) -> float | None:
    """Seconds the server asks to wait (Retry-After: seconds or an HTTP date), or None."""
    import email.utils  # here: a serve process answers initialize without it
    raw = (response.header("Retry-After") or "").strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    try:  # the server's own Date, so clock skew does not matter
        now = email.utils.parsedate_to_datetime(response.header("Date") or "").timestamp()
    except (TypeError, ValueError, IndexError):
        now = time.time()
    return max(when - now, 0.0)


class LiveTransport:
    """One pooled requests.Session; timeouts on every request; retries only where safe."""

    def __init__(self, retry: RetryPolicy = RetryPolicy(), clock: Clock | None = None) -> None:
        self._session: requests.Session | None = None
        self._opening = threading.Lock()
        self.retry = retry
        self.clock = clock or RealClock()

    @property
    def session(self) -> requests.Session:
        """Made (and requests imported) on the first request, not at start."""
        with self._opening:
            if self._session is None:
                import requests
                import urllib3.exceptions
                # verify_tls false is the administrator's choice; the session logs it once instead.
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
                self._session = requests.Session()
                for prefix in ("http://", "https://"):
                    self._session.mount(prefix, _watched_adapter()())
            return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def reset(self) -> bool:
        """Close every kept-alive connection; the next request opens a fresh one."""
        self.session.close()
        return True

    def send(self, request: HttpRequest) -> HttpResponse:
        attempt, resent = 1, False
        started = self.clock.now()
        until = WATCHDOG.now() + request.deadline   # retries included: the deadline is the caller's
        while True:
            try:
                response = self._send_once(request, until)
            except TransportError as exc:
                wait = self.retry.delay(attempt) if self._may_retry(request, exc, attempt) else None
                if wait is None or not self._in_time(request, started, wait):
                    raise _tried(exc, attempt, self.clock.now() - started)
                ambiguous = may_have_run(exc)
            else:
                wait = self._wait_after(request, response, attempt)
                if wait is None or not self._in_time(request, started, wait):
                    return replace(response, resent=True) if resent else response
                ambiguous = response.status not in NOT_APPLIED | self.retry.resend_writes_on
            resent = resent or ambiguous
            self.clock.sleep(wait)
            attempt += 1

    def _wait_after(self, request: HttpRequest, response: HttpResponse, attempt: int) -> float | None:
        """Seconds before sending the request again after this answer, or None to keep the answer."""
        status = response.status
        again = status in self.retry.resend_writes_on or (status in RETRY_STATUSES and self._repeatable(request))
        if not again or attempt >= self.retry.attempts:
            return None
        asked = retry_after(response) if status in (429, 503) else None
        if asked is None:
            return self.retry.delay(attempt)
        return asked if asked <= self.retry.max_wait else None

    def _in_time(self, request: HttpRequest, started: float, wait: float) -> bool:
        """A retry starts only if its wait ends within the request's deadline (total_timeout),
        counted from the first attempt: waiting longer would outlast what the caller allows."""
        return self.clock.now() + wait - started < request.deadline

    def _repeatable(self, request: HttpRequest) -> bool:
        return request.method in SAFE_RETRY_METHODS or request.retry_safe

    def _may_retry(self, request: HttpRequest, exc: TransportError, attempt: int) -> bool:
        if attempt >= self.retry.attempts or getattr(exc, "hung", False):
            return False  # a backend that took the whole read timeout would only take it again
        if request.failover:
            return False  # the next host is tried instead (session.Backend)
        # A request that never left (no connection) is safe to repeat whatever its method.
        return self._repeatable(request) or getattr(exc, "not_sent", False)

    def _send_once(self, request: HttpRequest, until: float) -> HttpResponse:
        import requests
        try:
            prepared = requests.Request(request.method, request.url, headers=dict(request.headers),
                                        data=request.body).prepare()
        except (ValueError, requests.exceptions.RequestException) as exc:  # InvalidHeader, InvalidURL
            # the message only: requests quotes the offending header value, which may be a token
            refused = TransportError(f"{request.method} {request.url.split('?')[0]}: the request cannot be sent "
                                     f"({type(exc).__name__})")
            refused.not_sent = True  # type: ignore[attr-defined]
            raise refused from None
        # Session.send, not Session.request: the environment (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE)
        # must not override the mapping's TLS settings. Proxies from the environment still apply.
        proxies = requests.utils.get_environ_proxies(request.url)
        started = self.clock.now()
        # The watchdog cuts the connection at the deadline, whatever blocks: a connection cannot
        # be cut before it exists, so waiting for one ends at the deadline too.
        timeout = (min(request.timeout[0], request.deadline), request.timeout[1])
        watch = _LOCAL.watch = WATCHDOG.arm(until)
        try:
            raw = self.session.send(prepared, timeout=timeout, verify=_verify(request.tls), stream=True,
                                    cert=_cert(request.tls), proxies=proxies, allow_redirects=False)
            body = _read_body(raw, request, started + request.deadline, self.clock)
        except requests.exceptions.RequestException as exc:
            error: TransportError | None = _transport_error(request, exc)
        else:
            error = None
        finally:
            _LOCAL.watch = None
            cut = watch.disarm()
        if cut:  # whatever the cut connection looked like (an early end, a reset, a short body)
            raise _deadline_passed(request)
        if error is not None:
            raise error
        headers = tuple((k, v) for k, v in raw.headers.items())
        return HttpResponse(raw.status_code, headers, body, raw.reason or "", raw.elapsed.total_seconds())


# The watch of the exchange this thread is sending: its connection's sockets join it.
_LOCAL = threading.local()


def _watched(sock: Any) -> None:
    watch: Watch | None = getattr(_LOCAL, "watch", None)
    if watch is not None and sock is not None:
        watch.attach(sock)


@functools.cache
def _watched_connection(base: Any) -> type:
    """urllib3's connection class whose sockets join the watch of the exchange using them: the
    plain socket as soon as it connects (a TLS handshake can hang too), the one carrying the
    request (TLS included) each time it is used."""
    def _new_conn(self: Any) -> Any:
        sock = base._new_conn(self)
        _watched(sock)
        return sock

    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        _watched(self.sock)
        return base.request(self, *args, **kwargs)
    return type(base.__name__, (base,), {"_new_conn": _new_conn, "request": request})


@functools.cache
def _watched_pool(base: Any) -> type:
    return type(base.__name__, (base,), {"ConnectionCls": _watched_connection(base.ConnectionCls),
                                         "watched": True})


def _watch_pools(manager: Any) -> Any:
    manager.pool_classes_by_scheme = {scheme: pool if getattr(pool, "watched", False) else _watched_pool(pool)
                                      for scheme, pool in manager.pool_classes_by_scheme.items()}
    return manager


@functools.cache
def _watched_adapter() -> type:
    """requests' adapter whose connections (direct or through a proxy) the watchdog can cut
    (a class made on the first request: requests is imported then)."""
    import requests.adapters

    class _WatchedAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            _watch_pools(self.poolmanager)

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            return _watch_pools(super().proxy_manager_for(proxy, **kwargs))

        def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
            host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
            if verify is True and host.get("scheme") == "https":   # no ca_file: the OS trust store
                context = system_trust_context(cert)
                if context is not None:
                    pool["ssl_context"] = context
            return host, pool

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            super().cert_verify(conn, url, verify, cert)
            if verify is True and system_trust_context(cert) is not None:
                conn.ca_certs = conn.ca_cert_dir = None   # not certifi's bundle: the context's OS store
    return _WatchedAdapter


@functools.lru_cache(maxsize=8)
def system_trust_context(cert: Any = None) -> Any:
    """An SSL context that verifies against the operating system's trust store (Windows'
    certificate store, macOS' keychain, the distribution's CA files on Linux), through
    truststore; one per client certificate, since urllib3 loads that into the context. None
    when truststore is not installed: requests' own bundle (certifi) is used, as before."""
    import ssl
    try:
        import truststore
    except ImportError:
        log.warning("truststore is not installed: TLS is verified against certifi's bundle, not the system store")
        return None
    return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _read_body(raw: requests.Response, request: HttpRequest, deadline: float, clock: Clock) -> bytes:
    """The whole body, read as it comes, within the request's deadline and size cap: a backend
    that trickles a byte a second, or sends gigabytes, is cut off with a clear error."""
    try:
        _check_length(raw, request)
        chunks, size = [], 0
        while True:
            _limit_wait(raw, request, deadline - clock.now())
            chunk = _read_some(raw, request, deadline, clock)
            if not chunk:
                break
            size += len(chunk)
            if size > request.max_body:
                raise _too_large(request)
            chunks.append(chunk)
    except BaseException:
        raw.close()  # the connection is in an unknown state: never reuse it
        raise
    raw.raw.release_conn()
    return b"".join(chunks)


def _read_some(raw: requests.Response, request: HttpRequest, deadline: float, clock: Clock) -> bytes:
    import requests
    import urllib3.exceptions
    try:
        return raw.raw.read1(65536, decode_content=True)
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        if clock.now() >= deadline:
            raise _deadline_passed(request) from None
        raise requests.exceptions.ReadTimeout(exc) from None
    except urllib3.exceptions.HTTPError as exc:
        raise requests.exceptions.ConnectionError(exc) from None


def _check_length(raw: requests.Response, request: HttpRequest) -> None:
    length = raw.headers.get("Content-Length", "")
    if length.strip().isdigit() and int(length) > request.max_body:
        raise _too_large(request)


def _limit_wait(raw: requests.Response, request: HttpRequest, remaining: float) -> None:
    """The next read may wait at most what is left of the deadline (and the read timeout)."""
    if remaining <= 0:
        raise _deadline_passed(request)
    sock = getattr(getattr(raw.raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(min(request.timeout[1], remaining))


def _deadline_passed(request: HttpRequest) -> TransportError:
    error = TransportError(f"no complete answer from {_where(request)} within {request.deadline:g}s "
                           "(connection.total_timeout): the backend is answering too slowly")
    error.hung = True  # type: ignore[attr-defined]
    return error


def _too_large(request: HttpRequest) -> TransportError:
    error = TransportError(f"the answer from {_where(request)} is larger than {request.max_body} bytes "
                           "(connection.max_response_bytes)")
    error.hung = True  # type: ignore[attr-defined]  # the same request would only bring it again
    return error


def _where(request: HttpRequest) -> str:
    return f"{request.method} {request.url.split('?')[0]}"


def _verify(tls: Tls) -> bool | str:
    if not tls.verify:
        return False
    return tls.ca_file or True


def _cert(tls: Tls) -> str | tuple[str, str] | None:
    if tls.client_cert and tls.client_key:
        return (tls.client_cert, tls.client_key)
    return tls.client_cert or None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.append(item)
        todo.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            value = getattr(item, attr, None)
            if isinstance(value, BaseException):
                todo.append(value)
    return seen


def _tried(exc: TransportError, attempts: int, seconds: float) -> TransportError:
    """Say how many tries the error took and how long they took in all."""
    if attempts > 1:
        exc.message = f"{exc.message} ({attempts} tries over {seconds:.1f}s)"
        exc.args = (exc.message,)
    return exc


def _tls_reason(exc: BaseException, chain: list[BaseException]) -> str:
    import ssl
    refused = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if refused is not None:
        return (f"the server's certificate was refused ({refused.verify_message}); check the host name, and "
                "give the CA that signed the certificate in ca_file")
    reason = next((str(e) for e in chain if isinstance(e, ssl.SSLError)), str(exc))
    return _short(_URLLIB3_NOISE.sub("", reason).strip(" :()")) or type(exc).__name__


def _reason(exc: BaseException, chain: list[BaseException], request: HttpRequest) -> str:
    """Why no connection came about, in an administrator's words (not urllib3's)."""
    import http.client
    import socket
    host = urllib.parse.urlsplit(request.url)
    where = f"{host.hostname}:{host.port or (443 if host.scheme == 'https' else 80)}"
    for error in chain:
        if isinstance(error, socket.gaierror):
            return f"the host name {host.hostname} cannot be resolved (check the host setting and DNS)"
        if isinstance(error, ConnectionRefusedError):
            return f"connection refused: nothing accepts connections on {where} (check the host and port)"
        if isinstance(error, ConnectionResetError):
            return f"{where} closed the connection (reset by peer)"
        if isinstance(error, http.client.RemoteDisconnected):
            return f"{where} closed the connection without answering"
    for error in chain:
        if isinstance(error, OSError) and error.strerror:
            return f"{error.strerror[0].lower()}{error.strerror[1:]} ({where})"
    return _short(_URLLIB3_NOISE.sub("", str(exc)).strip(" :()")) or type(exc).__name__


_URLLIB3_NOISE = re.compile(r"\w+ConnectionPool\(.*?\): Max retries exceeded with url: \S+ |"
                            r"\(Caused by \w+\(|<urllib3\.[^>]*>: ?|\[Errno -?\d+\] ")


def _transport_error(request: HttpRequest, exc: requests.exceptions.RequestException) -> TransportError:
    import ssl

    import requests
    import urllib3.exceptions
    where = f"{request.method} {request.url.split('?')[0]}"
    chain = _chain(exc)
    if isinstance(exc, requests.exceptions.SSLError) or any(isinstance(e, ssl.SSLError) for e in chain):
        error = TransportError(f"TLS error talking to {where}: {_tls_reason(exc, chain)}")
    elif isinstance(exc, requests.exceptions.ConnectTimeout):
        error = TransportError(f"timed out connecting to {where}: no connection within {request.timeout[0]:g}s")
        error.not_sent = True  # type: ignore[attr-defined]
    elif isinstance(exc, requests.exceptions.Timeout):
        error = TransportError(f"no answer from {where} within {request.timeout[1]:g}s")
        error.hung = True  # type: ignore[attr-defined]
    elif any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain):
        error = TransportError(f"cannot connect to {where}: {_reason(exc, chain, request)}")
        error.not_sent = True  # type: ignore[attr-defined]
    else:
        error = TransportError(f"connection to {where} failed: {_reason(exc, chain, request)}")
    return error


def _short(text: str) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."
