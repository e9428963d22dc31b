"""The backend session: TLS and base URL from the settings, authentication schemes,
login, re-login (before expiry and once after a 401), logout.

`Backend.send` turns a compiled RequestSpec and a context into an HttpRequest with the
credentials on it, sends it through the injected Transport and returns the response.
"""
from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any, Mapping

from . import model as m
from .clock import Clock
from .errors import AuthError, BackendError, TransportError
from .extract import Expression, extract_value, string_id
from .redact import Redactor
from .transport import HttpRequest, HttpResponse, Tls, Transport, reset_connections

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
        body = response.json()
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
    if isinstance(text, (dict, list)):
        text = json.dumps(text, sort_keys=True)
    text = str(text).strip() if text not in (None, "") else (response.reason or response.text(200).strip())
    return " ".join(text.split())


class Backend:
    def __init__(self, mapping: m.CompiledMapping, transport: Transport, clock: Clock, redactor: Redactor,
                 settings: Mapping[str, Any]) -> None:
        self.mapping = mapping
        self.transport = transport
        self.clock = clock
        self.redactor = redactor
        self.settings = dict(settings)
        base = {"settings": self.settings}
        conn = mapping.connection
        self.base_url = str(conn.base_url.render(base)).rstrip("/")
        self.tls = Tls(verify=bool(conn.verify_tls.eval(base)), ca_file=conn.ca_file.eval(base) or None,
                       client_cert=conn.client_cert.eval(base) or None,
                       client_key=conn.client_key.eval(base) or None)
        if not self.tls.verify:
            log.warning("TLS certificate verification is off for %s (verify_tls is false)", self.base_url)
        self.headers = [(k, str(t.render(base))) for k, t in conn.headers]
        self.scheme = self._choose(base)
        self.auth: dict[str, Any] = {}
        self.logged_in_at: float | None = None
        self.session_ttl: float | None = None

    def _choose(self, base: dict) -> m.AuthScheme:
        for scheme in self.mapping.auth:
            if scheme.when is None or scheme.when.render(base):
                return scheme
        names = ", ".join(s.name for s in self.mapping.auth)
        raise AuthError(f"no authentication scheme fits the settings (schemes: {names})")

    # ----------------------------------------------------------- requests

    def build(self, spec: m.RequestSpec, context: Mapping[str, Any], *, url: str | None = None,
              query: list[tuple[str, str]] | None = None, retry_safe: bool = False) -> HttpRequest:
        ctx = dict(context, auth=self.auth if self.auth else context.get("auth", {}))
        target = url or self._url(str(spec.path.render(ctx)), spec.link)
        pairs = _pairs(spec.query.eval(ctx) if spec.query else None, "query") + list(query or [])
        pairs += [(k, str(t.render(ctx))) for k, t in self.scheme.inject_query]
        if pairs:
            target += ("&" if "?" in target else "?") + urllib.parse.urlencode(pairs)
        headers = self.headers + _pairs(spec.headers.eval(ctx) if spec.headers else None, "headers")
        body, content_type = self._body(spec, ctx)
        if content_type:
            headers.append(("Content-Type", content_type))
        headers += self._credentials(ctx)
        conn = self.mapping.connection
        return HttpRequest(spec.method, target, tuple(headers), body,
                           (conn.connect_timeout, conn.read_timeout), self.tls, retry_safe)

    def _url(self, path: str, link: bool = False) -> str:
        """link: a path that is one raw_path value, from the host root like a link in a reply."""
        if path.startswith(("http://", "https://")) or (link and path.startswith("/")):
            return self.within_base(path)
        return self.base_url + ("" if path.startswith("/") else "/") + path

    def within_base(self, url: str) -> str:
        """A URL from a reply (next page, operation) is followed only below base_url."""
        if url.startswith("/"):
            parts = urllib.parse.urlsplit(self.base_url)
            return f"{parts.scheme}://{parts.netloc}{url}"
        if not (url == self.base_url or url.startswith(self.base_url + "/") or url.startswith(self.base_url + "?")):
            raise BackendError(f"refusing to follow {url.split('?')[0]}: it is not below {self.base_url}")
        return url

    @staticmethod
    def _body(spec: m.RequestSpec, ctx: Mapping[str, Any]) -> tuple[bytes | None, str | None]:
        if spec.json is not None:
            return json.dumps(m.without_nulls(spec.json.eval(ctx))).encode("utf-8"), "application/json"
        if spec.form is not None:
            data = urllib.parse.urlencode(_pairs(spec.form.eval(ctx), "form"))
            return data.encode("utf-8"), "application/x-www-form-urlencoded"
        if spec.body is not None:
            return str(spec.body.render(ctx)).encode("utf-8"), spec.content_type or "text/plain"
        return None, None

    def _credentials(self, ctx: Mapping[str, Any]) -> list[tuple[str, str]]:
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
        self.redactor.add(text)
        for sep in (" ", "="):
            if sep in text:
                self.redactor.add(text.split(sep, 1)[1])
        return text

    def send(self, spec: m.RequestSpec, context: Mapping[str, Any], **options: Any) -> HttpResponse:
        self._refresh_if_due()
        request = self.build(spec, context, **options)
        response = self._send(request)
        if response.status == 401 and self.scheme.type == "session":
            # A server that answers 401 before reading the request body leaves it on the
            # connection: the login goes out on a fresh one, or it would arrive garbled.
            fresh = reset_connections(self.transport)
            log.info("backend answered 401; logging in again%s", " on a new connection" if fresh else "")
            self.login(renew=True)
            response = self._send(self.build(spec, context, **options))
            if response.status == 401:
                error = AuthError(f"Authentication failed: {request.method} {request.url.split('?')[0]} answered "
                                  f"HTTP 401 again right after a new login"
                                  f"{' on a new connection' if fresh else ' (on the same connection)'}: "
                                  f"{message_of(response, self.mapping.connection.error_message)}")
                error.status = 401
                raise error
        return response

    def _send(self, request: HttpRequest) -> HttpResponse:
        try:
            return self.transport.send(request)
        except TransportError as exc:
            raise exc.context("backend unreachable")

    # --------------------------------------------------------------- auth

    def _refresh_if_due(self) -> None:
        ttl = self.session_ttl
        if self.scheme.type == "session" and ttl and self.logged_in_at is not None \
                and self.clock.now() - self.logged_in_at >= ttl:
            log.info("session older than %ss; logging in again", ttl)
            self.login(renew=True)

    def login(self, renew: bool = False) -> None:
        """Session schemes: send the login request and keep what it yields (text values are
        secret). renew: a session exists; its `refresh` request goes first, if the scheme has
        one, and a fresh login only if the backend refuses it."""
        scheme = self.scheme
        if scheme.type != "session" or scheme.login is None:
            return
        previous, self.auth = self.auth, {}
        if renew and scheme.refresh is not None and previous:
            values = self._session_request(scheme.refresh, previous, refusable=True)
            if values is not None:
                self._keep({**previous, **{k: v for k, v in values.items() if v is not None}})
                return
            log.info("the backend refused to refresh the session; logging in afresh")
        self._keep(self._session_request(scheme.login, {}, refusable=False))

    def _session_request(self, login: m.Login, previous: dict, refusable: bool) -> dict | None:
        """The values a login or refresh reply yields; None if a refusable request was refused."""
        base = {"settings": self.settings, "auth": previous}
        response = self._send(self.build(login.request, base))
        accepted = response.status in login.accept if login.accept else 200 <= response.status < 300
        if not accepted and refusable:
            return None
        if not accepted:
            reason = message_of(response, self.mapping.connection.error_message)
            raise AuthError(f"Authentication failed: HTTP {response.status}: {reason}")
        return self._extract_login(response, login.extract or self.scheme.login.extract, required=not refusable)

    def _keep(self, values: dict) -> None:
        for value in values.values():
            if isinstance(value, str):  # credentials are text; numbers (expires_in) are not secrets
                self.redactor.add(value)
        self.auth = values
        self.logged_in_at = self.clock.now()
        self.session_ttl = self._ttl(values)

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
        if self.scheme.logout is not None and self.auth:
            try:
                self._send(self.build(self.scheme.logout, {"settings": self.settings}))
            except BackendError as exc:
                log.warning("logout failed: %s", exc)
        self.auth = {}
        self.logged_in_at = None
        self.session_ttl = None
