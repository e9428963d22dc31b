"""Authentication schemes: static headers, basic, bearer, and the choice between schemes by
settings; credentials go on every request and never into logs or replies."""
from __future__ import annotations

import base64
import json

import pytest
import yaml

from cpfmap import spec
from cpfmap.clock import VirtualClock
from cpfmap.engine import Engine
from cpfmap.redact import Redactor
from cpfmap.rpc import Server, engine_handlers
from cpfmap.transport import FunctionTransport, HttpResponse

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
    data = spec.merge(BASE, {"auth": SCHEMES, "settings": {"key": {"type": "string", "secret": True},
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
    server = Server(engine_handlers(Engine(spec.load(path), FunctionTransport(backend), VirtualClock(), redactor)),
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
