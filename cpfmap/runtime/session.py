"""The backend session: TLS and base URL from the settings, authentication schemes,
login, re-login (before expiry and once after a 401), logout.

`Backend.send` turns a compiled RequestSpec and a context into an HttpRequest with the
credentials on it, sends it through the injected Transport and returns the response.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterator, Mapping

from cpfmap.clock import Clock
from cpfmap.errors import AuthError, BackendError, ConfigError, DeadlineReached, TransportError
from cpfmap.http.signing import host_of
from cpfmap.http.transport import SAFE_RETRY_METHODS, HttpRequest, HttpResponse, Tls, Transport, may_have_run, reset_connections
from cpfmap.language import model as m
from cpfmap.language import urlsettings
from cpfmap.language.expressions import Expression
from cpfmap.protocol.values import string_id
from cpfmap.redact import Redactor, looks_secret
from cpfmap.runtime.reading import extract_value, shown_body
from cpfmap.runtime.signers import signer_for

log = logging.getLogger("cpfmap")


def _pairs(mapping: Any, what: str) -> list[tuple[str, str]]:
    """name -> value (a list repeats the name); null leaves a name out, `{literal: null}` sends it empty."""
    if mapping is None:
        return []
    if not isinstance(mapping, Mapping):
        raise BackendError(f"{what} must be an object, got {mapping!r}")
    out = []
    for key, value in mapping.items():
        kept = isinstance(value, m.Kept)
        value = value.value if kept else value
        for item in value if isinstance(value, list) else [value]:
            if item is not None or kept:
                out.append((str(key), "" if item is None else string_id(item)))
    return out


def message_of(response: HttpResponse, expression: Expression | None) -> str:
    """The backend's own error text: the mapping's expression, common fields, or the reason."""
    try:
        body = response.data()
    except ValueError:
        body = None
    text = None
    if expression is not None and body is not None:
        try:
            text = expression.search(body)
        except BackendError:
            text = None
    if text is None and isinstance(body, dict):
        text = next((body[k] for k in ("message", "error", "detail", "errors") if body.get(k)), None)
    if text is None and isinstance(body, str) and _media(response) == "text/plain":   # a plain-text refusal
        text = body   # (an HTML page is not a message: the reason phrase is)
    if isinstance(text, (dict, list)):
        text = json.dumps(text, sort_keys=True)
    text = "" if text is None else str(text).strip()
    # Older servers (PVE before libpve-http-server-perl 5.2.0) put the text only in the reason phrase.
    return " ".join((text or response.reason or shown_body(response, 200)).split())


def _media(response: HttpResponse) -> str:
    return (response.header("Content-Type") or "").split(";", 1)[0].strip().lower()


@functools.lru_cache(maxsize=4096)
def _encoded(pairs: tuple, quote_via: Callable) -> str:
    """urlencode(pairs): the same few queries are built for every guest of a sweep."""
    return urllib.parse.urlencode(pairs, quote_via=quote_via)


def _reads_settings_only(scheme: m.AuthScheme) -> bool:
    templates = [t for _, t in scheme.headers] + [scheme.username, scheme.password, scheme.token]
    return all(t.names <= {"settings"} for t in templates if t is not None)


def _with_defaults(defaults: list, pairs: list) -> list:
    """connection.params first, except those the request gives itself."""
    if not defaults:
        return pairs
    given = {name for name, _ in pairs}
    return [pair for pair in defaults if pair[0] not in given] + pairs


MAX_HOSTS = 16


def _base_urls(conn: m.Connection, base: dict) -> list[str]:
    """base_url, or one per entry of `connection.hosts` (rendered with `host`), in order."""
    if conn.hosts is None:
        return [str(conn.base_url.render(base)).rstrip("/")]
    hosts = conn.hosts.eval(base)
    hosts = [hosts] if isinstance(hosts, str) else hosts
    if not isinstance(hosts, list) or not [h for h in hosts if str(h).strip()]:
        raise ConfigError(f"connection.hosts gave no host ({hosts!r})")
    if len(hosts) > MAX_HOSTS:
        raise ConfigError(f"connection.hosts gave {len(hosts)} hosts; at most {MAX_HOSTS}")
    urls = [str(conn.base_url.render(dict(base, host=str(h).strip()))).rstrip("/") for h in hosts if str(h).strip()]
    return list(dict.fromkeys(urls))


def _may_fail_over(request: HttpRequest, exc: TransportError) -> bool:
    """Another host may get a request that never left, or one that is safe to repeat."""
    return bool(getattr(exc, "not_sent", False)) or request.method in SAFE_RETRY_METHODS or request.retry_safe


def guard_exchange(redactor: Redactor, public: frozenset, *, request: HttpRequest | None = None,
                   response: HttpResponse | None = None, constants: frozenset = frozenset()) -> None:
    """Every value of a login exchange is a secret unless the mapping calls its field public:
    query, form and JSON values sent (except text written as is in the mapping, such as
    `grant_type: password`); JSON values, cookies and credential headers received."""
    if request is not None:
        guard = _Guard(redactor, public, constants)
        query = urllib.parse.urlsplit(request.url).query
        _guard_pairs(guard, urllib.parse.parse_qsl(query, keep_blank_values=True))
        _guard_body(guard, request.body, request.header("Content-Type"))
    if response is not None:
        for name, value in response.headers:
            if name.lower() == "set-cookie":
                redactor.add(value.split(";", 1)[0].split("=", 1)[-1], session=True)
            elif looks_secret(name):
                redactor.add(value, session=True)
        _guard_body(_Guard(redactor, public, constants, session=True), response.body,
                    response.header("Content-Type"))


class _Guard:
    """Adds the secret values of one side of a login exchange to the redactor."""

    def __init__(self, redactor: Redactor, public: frozenset, constants: frozenset, session: bool = False) -> None:
        self.redactor, self.public, self.constants, self.session = redactor, public, constants, session

    def add(self, value: str) -> None:
        if value not in self.constants:
            self.redactor.add(value, session=self.session)


def _guard_body(guard: _Guard, body: bytes | None, content_type: str | None) -> None:
    if not body:
        return
    text = body.decode("utf-8", "replace")
    if content_type and "form" in content_type:
        _guard_pairs(guard, urllib.parse.parse_qsl(text, keep_blank_values=True))
        return
    try:
        _guard_json(guard, json.loads(text))
    except (ValueError, RecursionError):
        guard.add(text.strip())  # a bare token, or text we cannot take apart: all of it


def _guard_pairs(guard: _Guard, pairs: list) -> None:
    for name, value in pairs:
        if name not in guard.public:
            guard.add(value)


def _guard_json(guard: _Guard, data: Any) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if key not in guard.public:
                _guard_json(guard, value)
    elif isinstance(data, list):
        for item in data:
            _guard_json(guard, item)
    elif isinstance(data, str):
        guard.add(data)


def _constants(spec: m.RequestSpec) -> frozenset:
    """The strings a request spec writes as is (no template): mapping text, never a secret."""
    found: set[str] = set()
    todo: list[Any] = [spec.query, spec.json, spec.form]
    while todo:
        value = todo.pop()
        if isinstance(value, (m.Literal, m.Kept)):
            todo.append(value.value)
        elif isinstance(value, m.DictValue):
            todo.extend(v for _, v in value.items)
        elif isinstance(value, m.ListValue):
            todo.extend(value.items)
        elif isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
        elif isinstance(value, str):
            found.add(value)
    return frozenset(found)


def _no_line_breaks(headers: list) -> None:
    """A value with CR, LF or another control character would split the header (injection): a
    clear error naming the header, never its value (it may be a login reply's token)."""
    for name, value in headers:
        if any(ord(c) < 32 and c != "\t" or c == "\x7f" for c in f"{name}{value}"):
            raise BackendError(f"the request header `{name}` would hold a line break or control character (from "
                               f"a setting or a login reply); refused")


MIN_EXCHANGE = 0.05   # seconds: less than this left of a reply deadline is too little for an HTTP exchange


class ReplyDeadline:
    """When the reply now being built must be out, per thread: the serve thread sets it for
    each CPF request (`connection.reply_deadline`); a background refresh has none and is bounded
    by its exchanges' own deadlines. Each HTTP exchange, task wait and prefetch wait of a reply
    gets at most what is left."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self._local = threading.local()

    @contextlib.contextmanager
    def until(self, at: float | None = None) -> Iterator[None]:
        """Within: the deadline is `at` (default: reply_deadline from now), or the one already set if earlier."""
        previous = getattr(self._local, "at", None)
        at = self.clock.now() + self.seconds if at is None else at
        self._local.at = at if previous is None else min(previous, at)
        try:
            yield
        finally:
            self._local.at = previous

    def at(self) -> float | None:
        return getattr(self._local, "at", None)

    def left(self) -> float | None:
        """Seconds left for this thread's reply; None: no reply waits on this thread."""
        at = self.at()
        return None if at is None else at - self.clock.now()

    def passed(self) -> bool:
        """Whether the reply deadline has passed (an exchange that failed then was cut by it)."""
        left = self.left()
        return left is not None and left < MIN_EXCHANGE

    def within(self, seconds: float) -> float:
        """seconds, or what is left of the reply deadline if that is less (never below 0)."""
        left = self.left()
        return seconds if left is None else max(0.0, min(seconds, left))

    def check(self, what: str) -> float | None:
        """What is left; DeadlineReached if less than an exchange needs (MIN_EXCHANGE)."""
        left = self.left()
        if left is not None and left < MIN_EXCHANGE:
            raise DeadlineReached(f"{what}: the reply deadline ({self.seconds:g}s, connection.reply_deadline) "
                                  "has passed; RAS may ask again")
        return left


class Backend:
    """One backend session, shared by the serve thread and the prefetch workers. `self.lock`
    guards what changes the session (login, renewal, re-login after a 401, host failover,
    logout); the session's values (`auth`, `endpoints`) are replaced whole, never emptied
    while requests use them, so a request built at any moment carries a complete session."""

    def __init__(self, mapping: m.CompiledMapping, transport: Transport, clock: Clock, redactor: Redactor,
                 settings: Mapping[str, Any], given: frozenset | None = None,
                 reply: ReplyDeadline | None = None) -> None:
        """`given`: the settings the user gave (explain fills the rest with placeholders); None: all."""
        self.mapping = mapping
        self.transport = transport
        self.clock = clock
        self.redactor = redactor
        self.settings = dict(settings)
        base = {"settings": self.settings}
        conn = mapping.connection
        urlsettings.check(conn, self.settings, given)
        self.base_urls = _base_urls(conn, base)
        self.base_url = self.base_urls[0]
        self.tls = Tls(verify=bool(conn.verify_tls.eval(base)), ca_file=conn.ca_file.eval(base) or None,
                       client_cert=conn.client_cert.eval(base) or None,
                       client_key=conn.client_key.eval(base) or None)
        if not self.tls.verify:
            log.warning("TLS certificate verification is off for %s (verify_tls is false)", self.base_url)
        self.headers = [(k, str(t.render(base))) for k, t in conn.headers]
        self.params = _pairs(conn.params.eval(base) if conn.params is not None else None, "connection.params")
        self.scheme = self._choose(base)
        self.signer = signer_for(mapping, self.scheme, base, self._secret)
        # A signature covers the query as sent: RFC 3986 (%20), as signers re-encode it. A form
        # body stays application/x-www-form-urlencoded (+ for a space): it is signed as its bytes.
        self.quote_via = urllib.parse.quote if self.signer else urllib.parse.quote_plus
        self.auth: dict[str, Any] = {}
        self._settled: tuple | None = None   # credential headers rendered once (_credentials)
        self.endpoints: dict[str, str] = {}   # service URLs the login gave (login.endpoints)
        self.logged_in_at: float | None = None
        self.session_ttl: float | None = None
        self.wall: Callable[[], float] = time.time   # the date a signature carries (tests fix it)
        self.lock = threading.RLock()
        self.generation = 0   # sessions so far: a 401 to an older one needs no new login
        self.closed = False   # logged out: no thread may log in again
        self.reply = reply or ReplyDeadline(clock, mapping.connection.reply_deadline)

    def _choose(self, base: dict) -> m.AuthScheme:
        for scheme in self.mapping.auth:
            if scheme.when is None or scheme.when.render(base):
                return scheme
        names = ", ".join(s.name for s in self.mapping.auth)
        raise AuthError(f"no authentication scheme fits the settings (schemes: {names})")

    # ----------------------------------------------------------- requests

    def target(self, spec: m.RequestSpec, context: Mapping[str, Any], *, url: str | None = None,
               query: list[tuple[str, str]] | None = None, session: bool = True) -> str:
        """The request's URL (what a cached reply is found by)."""
        ctx = self._context(context) if session else dict(context)
        target = url or self._url(str(spec.path.render(ctx)), spec.endpoint, spec.link)
        # A followed link (next_link, link_header) carries the step's query already.
        pairs = _pairs(spec.query.eval(ctx) if spec.query and url is None else None, "query") + list(query or [])
        if url is None and spec.form is None:   # connection.params go in the form when there is one
            pairs = _with_defaults(self.params, pairs)
        pairs += [(k, str(t.render(ctx))) for k, t in self.scheme.inject_query]
        if pairs:
            target += ("&" if "?" in target else "?") + _encoded(tuple(pairs), self.quote_via)
        return target

    def build(self, spec: m.RequestSpec, context: Mapping[str, Any], *, url: str | None = None,
              query: list[tuple[str, str]] | None = None, retry_safe: bool = False,
              session: bool = True) -> HttpRequest:
        """session: False for a login or refresh request, which carries the `auth` of its
        context (the previous session's) and none of the session's credentials."""
        ctx = self._context(context) if session else dict(context)
        in_form = spec.form is not None and url is None   # paging parameters go with the form's own
        target = self.target(spec, context, url=url, query=None if in_form else query, session=session)
        headers = self.headers + _pairs(spec.headers.eval(ctx) if spec.headers else None, "headers")
        body, content_type = self._body(spec, ctx, query if in_form else None)
        if content_type:
            headers.append(("Content-Type", content_type))
        if session or self.scheme.type != "session":
            headers += self._credentials(ctx)
        _no_line_breaks(headers)
        if self.signer is not None:   # last: the signature covers the request as it goes out
            headers = [("Host", host_of(target))] + headers
            headers += self.signer.sign(spec.method, target, headers, body, self.wall())
        conn = self.mapping.connection
        left = self.reply.check(f"{spec.method} {spec.path.source}")
        deadline = conn.total_timeout if left is None else min(conn.total_timeout, left)
        timeouts = (min(conn.connect_timeout, deadline), min(conn.read_timeout, deadline))
        return HttpRequest(spec.method, target, tuple(headers), body, timeouts, self.tls, retry_safe,
                           failover=len(self.base_urls) > 1, deadline=deadline,
                           max_body=conn.max_response_bytes)

    def _context(self, context: Mapping[str, Any]) -> dict:
        """Templates see this session's values, or (for a refresh) the previous session's."""
        auth = self.auth
        return dict(context, auth=auth if auth else context.get("auth", {}))

    def _url(self, path: str, endpoint: str | None = None, link: bool = False) -> str:
        """link: a path that is one raw_path value, from the host root like a link in a reply."""
        if path.startswith(("http://", "https://")) or (link and path.startswith("/")):
            return self.within_base(path, endpoint)
        return self.base_of(endpoint) + ("" if path.startswith("/") else "/") + path

    def base_of(self, endpoint: str | None) -> str:
        """base_url, or the service URL the login named `endpoint`."""
        if endpoint is None:
            return self.base_url
        if endpoint not in self.endpoints:
            raise BackendError(f"no `{endpoint}` endpoint: the session login did not give one")
        return self.endpoints[endpoint]

    def within_base(self, url: str, endpoint: str | None = None) -> str:
        """A URL from a reply (next page, operation) is followed only below base_url (or the endpoint)."""
        base = self.base_of(endpoint)
        if url.startswith("/"):
            parts = urllib.parse.urlsplit(base)
            return f"{parts.scheme}://{parts.netloc}{url}"
        if not (url == base or url.startswith(base + "/") or url.startswith(base + "?")):
            raise BackendError(f"refusing to follow {url.split('?')[0]}: it is not below {base}")
        return url

    def _body(self, spec: m.RequestSpec, ctx: Mapping[str, Any],
              paging: list | None = None) -> tuple[bytes | None, str | None]:
        if spec.json is not None:
            data = json.dumps(m.without_nulls(spec.json.eval(ctx))).encode("utf-8")
            return data, spec.content_type or "application/json"
        if spec.form is not None:
            pairs = _with_defaults(self.params, _pairs(spec.form.eval(ctx), "form")) + list(paging or [])
            return urllib.parse.urlencode(pairs).encode("utf-8"), "application/x-www-form-urlencoded"
        if spec.body is not None:
            return str(spec.body.render(ctx)).encode("utf-8"), spec.content_type or "text/plain"
        return None, None

    def _credentials(self, ctx: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The credential headers; those that read only settings (a token, a password) are
        rendered once for this session (settings do not change while it lasts)."""
        kept = self._settled
        if kept is not None:
            return list(kept)
        out = self._render_credentials(ctx)
        if self.scheme.type in ("header", "basic", "bearer") and _reads_settings_only(self.scheme):
            self._settled = tuple(out)
        return out

    def _render_credentials(self, ctx: Mapping[str, Any]) -> list[tuple[str, str]]:
        scheme = self.scheme
        if scheme.type == "header":
            return [(k, self._secret(t.render(ctx))) for k, t in scheme.headers]
        if scheme.type == "basic":
            import base64
            user = str(scheme.username.render(ctx)) if scheme.username else ""
            pw = self._secret(scheme.password.render(ctx)) if scheme.password else ""
            token = base64.b64encode(f"{user}:{pw}".encode()).decode()
            return [("Authorization", "Basic " + self._secret(token))]
        if scheme.type == "bearer":
            return [("Authorization", "Bearer " + self._secret(scheme.token.render(ctx)))]
        if scheme.type == "session" and self.auth:
            out = [(k, self._secret(t.render(ctx))) for k, t in scheme.inject_headers]
            cookies = "; ".join(f"{k}={self._secret(t.render(ctx))}" for k, t in scheme.inject_cookies)
            return out + ([("Cookie", cookies)] if cookies else [])
        return []

    def _secret(self, value: Any) -> str:
        text = str(value)
        # The credential part after a scheme word or "name=" prefix is what must be masked.
        session = self.scheme.type == "session"   # a session's values are replaced at each login
        self.redactor.add(text, session=session)
        for sep in (" ", "="):
            if sep in text:
                self.redactor.add(text.split(sep, 1)[1], session=session)
        return text

    def send(self, spec: m.RequestSpec, context: Mapping[str, Any], **options: Any) -> HttpResponse:
        self._open()
        self._refresh_if_due()
        generation = self.generation
        response = self._send(lambda: self.build(spec, context, **options))
        if response.status == 401 and self.scheme.type == "session":
            fresh = self._login_after_401(generation)
            response = self._send(lambda: self.build(spec, context, **options))
            if response.status == 401:
                where = f"{spec.method} {self.build(spec, context, **options).url.split('?')[0]}"
                error = AuthError(f"Authentication failed: {where} answered HTTP 401 again right after a new "
                                  f"login{' on a new connection' if fresh else ' (on the same connection)'}: "
                                  f"{message_of(response, self.mapping.connection.error_message)}")
                error.status = 401
                raise error
        return response

    def _login_after_401(self, generation: int) -> bool:
        """One new login for all the threads whose requests met the same expired session; a
        thread whose session was already replaced sends again with the new one."""
        with self.lock:
            self._open()
            if self.generation != generation:
                return False
            # A server that answers 401 before reading the request body leaves it on the
            # connection: the login goes out on a fresh one, or it would arrive garbled.
            fresh = reset_connections(self.transport)
            log.info("backend answered 401; logging in again%s", " on a new connection" if fresh else "")
            self.login(renew=True)
            return fresh

    def _open(self) -> None:
        if self.closed:
            raise BackendError("the session has ended (provider/disconnect)")

    def _send(self, make: Callable[[], HttpRequest]) -> HttpResponse:
        """Send to the current host; on a connection error go on to the next of `connection.hosts`,
        but only with a request that never reached the host or is safe to repeat."""
        resent = False  # an earlier host may have run it: the answer is to a repeat (`already_done`)
        for tried in range(1, len(self.base_urls) + 1):
            base = self.base_url
            request = make()
            try:
                response = self.transport.send(request)
                lists = self.mapping.connection.xml_lists
                return dataclasses.replace(response, resent=response.resent or resent, xml_lists=lists) \
                    if resent or lists else response
            except TransportError as exc:
                if request.method in SAFE_RETRY_METHODS and self.reply.passed():
                    raise DeadlineReached(f"{request.method} {request.url.split('?')[0]}: the reply deadline "
                                          f"({self.reply.seconds:g}s, connection.reply_deadline) ended the "
                                          "exchange") from None
                if tried == len(self.base_urls) or not _may_fail_over(request, exc):
                    raise exc.context("backend unreachable")
                resent = resent or may_have_run(exc)
                self._next_host(exc, base)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _next_host(self, exc: TransportError, failed: str) -> None:
        """The host after `failed`, unless another thread has moved on from it already."""
        with self.lock:
            if self.base_url == failed:
                current = self.base_urls.index(failed)
                self.base_url = self.base_urls[(current + 1) % len(self.base_urls)]
                log.warning("%s; trying %s", exc.message, self.base_url)

    # --------------------------------------------------------------- auth

    def _due(self) -> bool:
        ttl, at = self.session_ttl, self.logged_in_at
        return self.scheme.type == "session" and bool(ttl) and at is not None and self._session_now() - at >= ttl

    def _refresh_if_due(self) -> None:
        if not self._due():
            return
        with self.lock:   # one renewal: whoever comes second finds the session new
            if self._due():
                self._open()
                log.info("session older than %ss; logging in again", self.session_ttl)
                self.login(renew=True)

    def _session_now(self) -> float:
        """The clock a session's ttl runs on: the clock's own session time if it keeps one
        (clock.LogicalClock under record and replay), else the clock."""
        return getattr(self.clock, "session_now", self.clock.now)()

    def login(self, renew: bool = False) -> None:
        """Session schemes: send the login request and keep what it yields (secret unless
        public). renew: a session exists; its `refresh` request goes first, if the scheme has
        one, and a fresh login only if the backend refuses it."""
        scheme = self.scheme
        if scheme.type != "session" or scheme.login is None:
            return
        with self.lock:
            self._open()
            self._login(scheme, renew)

    def _login(self, scheme: m.AuthScheme, renew: bool) -> None:
        previous, known = self.auth, self.endpoints   # in use until the new session replaces them
        if renew and scheme.refresh is not None and previous:
            got = self._session_request(scheme.refresh, previous, refusable=True)
            if got is not None:  # values and service URLs the refresh reply lacks stay as they were
                values, endpoints = got
                self._keep({**previous, **{k: v for k, v in values.items() if v is not None}},
                           {**known, **endpoints})
                return
            log.info("the backend refused to refresh the session; logging in afresh")
        self._keep(*self._session_request(scheme.login, {}, refusable=False))  # type: ignore[misc]

    def _session_request(self, login: m.Login, previous: dict, refusable: bool) -> tuple[dict, dict] | None:
        """(values, service URLs) a login or refresh reply yields; None if a refusable request
        was refused."""
        base = {"settings": self.settings, "auth": previous}
        # Logging in again changes nothing on the backend: it is sent again like a GET (429, no answer).
        response = self._send(lambda: self._guarded(login, self.build(login.request, base, retry_safe=True,
                                                                        session=False)))
        accepted = response.status in login.accept if login.accept else 200 <= response.status < 300
        if not accepted and refusable:
            return None
        endpoints = self._extract_endpoints(response, login) if accepted else {}
        service_urls = frozenset(endpoints.values()) | {url + "/" for url in endpoints.values()}
        # A refused login issued nothing: its reply is the backend's reason, shown as it is
        # (sent credentials are already secrets, so an echo of them is still masked).
        guard_exchange(self.redactor, self._public(login), response=response if accepted else None,
                       constants=service_urls)
        if not accepted:
            reason = message_of(response, self.mapping.connection.error_message)
            raise AuthError(f"Authentication failed: HTTP {response.status}: {reason}")
        extract = login.extract or self.scheme.login.extract
        return self._extract_login(response, extract, required=not refusable), endpoints

    def _keep(self, values: dict, endpoints: dict) -> None:
        public = self.scheme.login.public if self.scheme.login is not None else frozenset()
        for name, value in values.items():
            # credentials are text; numbers (expires_in) are not secrets, nor what `public` names
            if isinstance(value, str) and name not in public:
                self.redactor.add(value, session=True)
        ttl = self._ttl(values)
        self.endpoints = endpoints   # the service URLs first: a request never pairs new values with none
        self.auth = values
        self.logged_in_at = self._session_now()
        self.session_ttl = ttl
        self.generation += 1

    def _ttl(self, values: dict) -> float | None:
        ttl = self.scheme.ttl
        if ttl is None or isinstance(ttl, (int, float)):
            return ttl
        value = ttl.render({"settings": self.settings, "auth": values})
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise AuthError(f"Authentication failed: session ttl `{ttl.source}` gave {value!r}, "
                            "not a positive number of seconds")
        return float(value)

    def _guarded(self, login: m.Login, request: HttpRequest) -> HttpRequest:
        """The login request, its values known as secrets before it is sent (or logged)."""
        guard_exchange(self.redactor, self._public(login), request=request, constants=_constants(login.request))
        return request

    def _public(self, login: m.Login) -> frozenset:
        """What is not secret in a login exchange; a refresh exchange shares the login's list."""
        first = self.scheme.login
        return frozenset(login.public) | (frozenset(first.public) if first is not None else frozenset())

    def _extract_endpoints(self, response: HttpResponse, login: m.Login) -> dict:
        out = {}
        for name, extraction in login.endpoints:
            url = extract_value(extraction, response, {"settings": self.settings})
            if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
                raise AuthError(f"Authentication failed: the login reply gives no `{name}` endpoint "
                                f"(`{extraction.expression.source}` gave {url!r})")
            out[name] = url.rstrip("/")
        return out

    def _extract_login(self, response: HttpResponse, extract: tuple, required: bool = True) -> dict:
        values = {}
        for name, extraction in extract:
            value = extract_value(extraction, response, {"settings": self.settings})
            if value is None and required:
                raise AuthError(f"Authentication failed: the login reply has no `{name}` "
                                f"(`{extraction.expression.source}`)")
            values[name] = value
        return values

    def logout(self) -> None:
        """End the session; from now on no thread logs in again on this backend."""
        with self.lock:
            self.closed = True
            logout = self.scheme.logout
            if logout is not None and self.auth:
                try:
                    self._send(lambda: self.build(logout, {"settings": self.settings}))
                except BackendError as exc:
                    log.warning("logout failed: %s", exc)
            self.auth, self.endpoints = {}, {}
            self.logged_in_at = None
            self.session_ttl = None
