"""Authentication schemes: static headers, basic, bearer, and the choice between schemes by
settings; credentials go on every request and never into logs or replies."""
from __future__ import annotations

import base64
import http.server
import json
import threading

import pytest
import yaml

from cpfmap.clock import VirtualClock
from cpfmap.http.transport import FunctionTransport, HttpResponse, LiveTransport
from cpfmap.language import loader
from cpfmap.protocol.rpc import Server, engine_handlers
from cpfmap.redact import Redactor
from cpfmap.runtime.engine import Engine

BASE = yaml.safe_load(open("tests/data/tiny.yaml").read())
SCHEMES = [
    {"name": "static", "when": "{{ settings.key }}", "type": "header",
     "headers": {"X-Api-Key": "{{ settings.key }}", "X-Tenant": "acme"}},
    {"name": "basic", "when": "{{ settings.mode == 'basic' }}", "type": "basic",
     "username": "{{ settings.user }}", "password": "{{ settings.password }}"},
    {"name": "bearer", "type": "bearer", "token": "{{ settings.password }}"},
]


@pytest.fixture
def provider(tmp_path):
    data = loader.merge(BASE, {"auth": SCHEMES, "settings": {"key": {"type": "string", "secret": True},
                                                           "mode": {"type": "string"}}})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    seen = []

    def backend(request):
        seen.append(dict(request.headers))
        if "/machines/" in request.url:  # a backend that echoes the credentials it refused
            sent = " ".join(v for k, v in request.headers if k in ("X-Api-Key", "Authorization"))
            return HttpResponse(500, (("Content-Type", "application/json"),),
                                json.dumps({"error": {"message": f"refused: {sent}"}}).encode())
        return HttpResponse(200, (("Content-Type", "application/json"),), b'{"items": []}')
    redactor = Redactor()
    server = Server(engine_handlers(Engine(loader.load(path), FunctionTransport(backend), VirtualClock(), redactor)),
                    redactor)
    return server, seen


def connect(server, **settings):
    settings = {"url": "https://h", "user": "admin", "password": "pw-0123456", **settings}
    return server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": settings}}))


@pytest.mark.parametrize("settings,header,value", [
    ({"key": "k-abcdef123"}, "X-Api-Key", "k-abcdef123"),
    ({"mode": "basic"}, "Authorization", "Basic " + base64.b64encode(b"admin:pw-0123456").decode()),
    ({}, "Authorization", "Bearer pw-0123456"),
])
def test_scheme_chosen_by_settings_puts_credentials_on_every_request(provider, settings, header, value):
    server, seen = provider
    assert connect(server, **settings) == {"result": {}}
    server.handle_text('{"method": "guests/list"}')
    assert len(seen) == 2 and all(h.get(header) == value for h in seen)
    if header == "X-Api-Key":
        assert all(h.get("X-Tenant") == "acme" for h in seen)


@pytest.mark.parametrize("settings,secrets", [
    ({"key": "k-abcdef123"}, ["k-abcdef123"]),
    ({"mode": "basic"}, ["pw-0123456", base64.b64encode(b"admin:pw-0123456").decode()]),
    ({}, ["pw-0123456"]),
])
def test_credentials_echoed_by_the_backend_are_masked_in_error_replies(provider, settings, secrets):
    server, _ = provider
    assert connect(server, **settings) == {"result": {}}
    reply = json.dumps(server.handle_text('{"method": "guests/get", "params": {"id": "101"}}'))
    assert "refused: " in reply and "***" in reply
    assert not [s for s in secrets if s in reply]


class _Garbling(http.server.BaseHTTPRequestHandler):
    """Answers the first power request 401 without reading its body, as some servers do."""

    protocol_version = "HTTP/1.1"
    log: list = []

    def do_POST(self):  # noqa: N802
        if self.path.endswith("/power") and not any(p == "401" for _, p in self.log):
            self.log.append((self.client_address[1], "401"))
            return self._answer(401, b'{"error": {"message": "token expired"}}')
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.log.append((self.client_address[1], self.path))
        self._answer(200, b'{"token": "tok-%d"}' % len(self.log) if self.path.endswith("/login") else body)

    def do_GET(self):  # noqa: N802
        self._answer(200, b"{}")

    def _answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_after_a_401_the_login_goes_out_on_a_fresh_connection():
    _Garbling.log = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbling)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    redactor = Redactor()
    engine = Engine(loader.load("tests/data/tiny.yaml"), LiveTransport(), VirtualClock(), redactor)
    server = Server(engine_handlers(engine), redactor)
    try:
        settings = {"url": f"http://127.0.0.1:{httpd.server_port}", "user": "a", "password": "pw-0123456"}
        assert server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": settings}})) \
            == {"result": {}}
        reply = server.handle_text('{"method": "guests/control", "params": {"id": "1", "control": "start"}}')
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert reply == {"result": {}}, reply
    refused = next(port for port, what in _Garbling.log if what == "401")
    relogin = [port for port, what in _Garbling.log if what.endswith("/login")][1]
    assert relogin != refused


@pytest.mark.parametrize("expires,message", [
    (3600, None),
    ([5], "session ttl `{{ auth.expires_in }}` gave [5], not a positive number of seconds"),
    (0, "session ttl `{{ auth.expires_in }}` gave 0, not a positive number of seconds"),
])
def test_a_session_ttl_from_the_login_reply_must_be_seconds(tmp_path, expires, message):
    scheme = dict(BASE["auth"][0], ttl="{{ auth.expires_in }}",
                  login={"request": BASE["auth"][0]["login"]["request"], "extract": {"token": "token", "expires_in": "expires_in"}})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(loader.merge(BASE, {"auth": [scheme]})))
    body = json.dumps({"token": "tok-0123456", "expires_in": expires}).encode()
    transport = FunctionTransport(lambda request: HttpResponse(200, (("Content-Type", "application/json"),), body))
    redactor = Redactor()
    server = Server(engine_handlers(Engine(loader.load(path), transport, VirtualClock(), redactor)), redactor)
    reply = connect(server)
    assert reply == {"result": {}} if message is None else message in reply["error"]["message"], reply


def catalog_provider(tmp_path, catalog_url, next_link="", guests_endpoint="compute", clock=None):
    """A session login whose reply names a `compute` service URL, as Keystone's catalog does."""
    login = {"request": {"method": "POST", "path": "/login"}, "extract": {"token": "token"},
             "endpoints": {"compute": "catalog.compute"}}
    guests = {"steps": [{"request": {"method": "GET", "endpoint": guests_endpoint, "path": "/servers"},
                         "paginate": {"type": "next_link", "items": "items", "cursor": "next"},
                         "extract": {"ids": "string_ids([].id)"}}], "result": {"guests": "{{ ids }}"}}
    data = loader.merge(BASE, {"auth": [dict(BASE["auth"][0], login=login)], "methods": {"guests/list": guests}})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    seen = []

    def backend(request):
        seen.append(request.url)
        body = {"token": "t-123456", "catalog": {"compute": catalog_url}} if request.url.endswith("/login") else \
            {"items": [{"id": len(seen)}], "next": None if "marker" in request.url else next_link}
        return HttpResponse(200, (("Content-Type", "application/json"),), json.dumps(body).encode())
    redactor = Redactor()
    server = Server(engine_handlers(Engine(loader.load(path), FunctionTransport(backend), clock or VirtualClock(),
                                           redactor)), redactor)
    return server, seen


def test_a_session_logs_in_again_before_its_ttl_runs_out_and_keeps_its_service_urls(tmp_path):
    clock = VirtualClock()
    server, seen = catalog_provider(tmp_path, "https://nova.example/v2.1", clock=clock)
    connect(server)
    clock.sleep(599)   # tiny.yaml: ttl 600
    server.handle_text('{"method": "guests/list"}')
    clock.sleep(2)
    server.handle_text('{"method": "guests/list"}')
    logins = [i for i, url in enumerate(seen) if url.endswith("/login")]
    assert len(logins) == 2 and seen[logins[1] + 1] == "https://nova.example/v2.1/servers"


def test_requests_go_to_the_service_url_the_login_named(tmp_path):
    server, seen = catalog_provider(tmp_path, "https://nova.example:8774/v2.1/", "https://nova.example:8774/v2.1/servers?marker=1")
    assert connect(server) == {"result": {}}
    assert server.handle_text('{"method": "guests/list"}') == {"result": {"guests": ["3", "4"]}}
    assert seen[2:] == ["https://nova.example:8774/v2.1/servers", "https://nova.example:8774/v2.1/servers?marker=1"]


def test_a_next_link_outside_the_service_url_is_not_followed(tmp_path):
    server, seen = catalog_provider(tmp_path, "https://nova.example/v2.1", "https://evil.example/v2.1/servers?marker=1")
    connect(server)
    reply = server.handle_text('{"method": "guests/list"}')
    assert "refusing to follow https://evil.example/v2.1/servers" in reply["error"]["message"]
    assert len(seen) == 3


def test_a_login_without_the_service_url_fails_connect(tmp_path):
    server, _ = catalog_provider(tmp_path, None)
    reply = connect(server)
    assert "the login reply gives no `compute` endpoint" in reply["error"]["message"]


def test_an_endpoint_no_login_declares_is_a_load_error(tmp_path):
    with pytest.raises(Exception, match="no auth login declares endpoint `image`"):
        catalog_provider(tmp_path, "https://nova.example", guests_endpoint="image")
