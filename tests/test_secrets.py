"""Secrets never leave, in any encoding: replies, `call -v`, transcripts, logs, cassettes and
the conformance report; every value of a login exchange is secret unless the mapping says not.
Each test here fails with the redactor disabled."""
from __future__ import annotations

import base64
import io
import json
import logging
import urllib.parse
from pathlib import Path

import pytest
import yaml

from cpfmap.authoring import call
from cpfmap.clock import VirtualClock
from cpfmap.http.transport import FunctionTransport, HttpResponse
from cpfmap.http.wrappers import TracingTransport
from cpfmap.language import loader
from cpfmap.protocol.rpc import Server, engine_handlers
from cpfmap.recording import cassette, transcript
from cpfmap.redact import RedactingFilter, Redactor
from cpfmap.runtime.engine import Engine

PASSWORD = 'pä"ss\\wörd/+1 x'
REFRESH = "rt-never-extracted-0042"
TOKEN = "tok-bearer-7781"
ENCODINGS = {
    "as sent": PASSWORD,
    "JSON, ASCII only": json.dumps(PASSWORD)[1:-1],
    "JSON, ASCII only, upper-case hex": json.dumps(PASSWORD)[1:-1].replace("\\u00e4", "\\u00E4").replace("\\u00f6", "\\u00F6"),
    "JSON, UTF-8": json.dumps(PASSWORD, ensure_ascii=False)[1:-1],
    "JSON, slash escaped": json.dumps(PASSWORD, ensure_ascii=False)[1:-1].replace("/", "\\/"),
    "URL path": urllib.parse.quote(PASSWORD, safe=""),
    "URL form": urllib.parse.quote_plus(PASSWORD),
    "URL, lower-case hex": urllib.parse.quote(PASSWORD, safe="").lower(),
    "base64": base64.b64encode(PASSWORD.encode()).decode(),
    "base64 URL-safe, unpadded": base64.urlsafe_b64encode(PASSWORD.encode()).decode().rstrip("="),
}


@pytest.mark.parametrize("form", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_every_encoding_of_a_secret_is_masked(form):
    redactor = Redactor()
    redactor.add(PASSWORD)
    assert redactor(f"said <{form}> twice <{form}>") == "said <***> twice <***>"


def leaks(text: str) -> list[str]:
    found = [name for name, form in ENCODINGS.items() if form in text]
    return found + [name for name, value in (("refresh token", REFRESH), ("token", TOKEN)) if value in text]


def echoing_backend(request):
    """Logs in with a reply holding a token it was not asked for, then refuses everything,
    echoing the password it received in every encoding."""
    json_type = (("Content-Type", "application/json"),)
    if request.url.endswith("/login"):
        return HttpResponse(200, json_type, json.dumps({"token": TOKEN, "refresh_token": REFRESH}).encode())
    if request.url.endswith("/whoami"):
        return HttpResponse(200, json_type, b"{}")
    echo = " ".join(ENCODINGS.values()) + f" {REFRESH}"
    return HttpResponse(500, (("Content-Type", "text/plain"),), f"refused {echo}".encode())


@pytest.fixture
def session(tmp_path):
    """A connected tiny provider recording to a cassette; returns what each output saw."""
    mapping = loader.load(Path(__file__).parent / "data" / "tiny.yaml")
    redactor = Redactor()
    tracing = TracingTransport(cassette.RecordingTransport(FunctionTransport(echoing_backend), tmp_path / "c.yaml",
                                                           redactor), VirtualClock().now)
    log_text = io.StringIO()
    handler = logging.StreamHandler(log_text)
    handler.addFilter(RedactingFilter(redactor))
    logging.getLogger("cpfmap").addHandler(handler)
    server = Server(engine_handlers(Engine(mapping, tracing, VirtualClock(), redactor)), redactor)
    settings = {"url": "https://h", "user": "admin", "password": PASSWORD}
    try:
        replies = [server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": settings}})),
                   server.handle_text('{"method": "guests/get", "params": {"id": "101"}}')]
        logging.getLogger("cpfmap").error("backend said %s", echoing_backend(tracing.exchanges[-1].request).body)
    finally:
        logging.getLogger("cpfmap").removeHandler(handler)
        tracing.close()
    assert "result" in replies[0] and "refused" in replies[1]["error"]["message"]
    return {"reply": json.dumps(replies) + json.dumps(replies, ensure_ascii=False),
            "call -v": "\n".join(call.show_exchange(x, redactor) for x in tracing.exchanges),
            "transcript": transcript.render_text([transcript.Entry({}, replies[1], [
                transcript.http_entry(x.request, x.response, redactor) for x in tracing.exchanges])]),
            "log": log_text.getvalue(),
            "cassette": (tmp_path / "c.yaml").read_text(encoding="utf-8")}


@pytest.mark.parametrize("output", ["reply", "call -v", "transcript", "log", "cassette"])
def test_no_encoding_of_a_secret_reaches_any_output(session, output):
    assert "***" in session[output]
    assert leaks(session[output]) == []


def test_a_login_reply_value_not_extracted_is_secret_unless_declared_public(tmp_path):
    data = yaml.safe_load((Path(__file__).parent / "data" / "tiny.yaml").read_text())
    data["auth"][0]["login"]["public"] = ["refresh_token", "user"]
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    redactor = Redactor()
    engine = Engine(loader.load(path), FunctionTransport(echoing_backend), VirtualClock(), redactor)
    engine.connect({"settings": {"url": "https://h", "user": "admin-user", "password": PASSWORD}})
    assert redactor(f"{REFRESH} admin-user {TOKEN}") == f"{REFRESH} admin-user ***"


def test_conformance_never_echoes_secret_settings(tmp_path):
    from cpfmap.cli.commands import run
    settings = {"host": "pve.invalid", "username": "root@pam", "password": PASSWORD,
                "my_api_key": "k-undeclared-5555", "port": "8006"}
    (tmp_path / "s.json").write_text(json.dumps(settings))
    refused = {"responses": [{"request": {"method": "POST", "path": "/api2/json/access/ticket"},
                              "response": {"status": 401, "body": f"bad password {PASSWORD} for k-undeclared-5555"}}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(refused))
    out, err = io.BytesIO(), io.StringIO()
    code = run(["conformance", "proxmox-ve", "--replay", str(tmp_path / "c.yaml"), "--settings", str(tmp_path / "s.json"),
                "--workflows", "connect", "--junit", str(tmp_path / "j.xml"), "--reply-timeout", "30", "-v"],
               io.BytesIO(), out, err)
    shown = out.getvalue().decode() + (tmp_path / "j.xml").read_text()
    assert code == 1 and "provider/connect" in shown and "***" in shown
    assert leaks(shown) == [] and "k-undeclared-5555" not in shown and "root@pam" in shown


def test_conformance_masks_secrets_a_provider_echoes(tmp_path):
    import sys

    from cpfmap.cli.commands import run
    settings = {"host": "h.invalid", "user": "root", "password": PASSWORD, "api_token": "t-undeclared-3333"}
    (tmp_path / "s.json").write_text(json.dumps(settings))
    out, err = io.BytesIO(), io.StringIO()
    provider = str(Path(__file__).parent / "faulty_provider.py")
    code = run(["conformance", "--settings", str(tmp_path / "s.json"), "--workflows", "connect", "-v",
                "--junit", str(tmp_path / "j.xml"), "--reply-timeout", "30", "--", sys.executable, provider,
                "echo-settings"], io.BytesIO(), out, err)
    shown = out.getvalue().decode() + (tmp_path / "j.xml").read_text()
    assert code == 1 and "refused settings" in shown and "h.invalid" in shown
    assert leaks(shown) == [] and "t-undeclared-3333" not in shown


def test_text_written_as_is_in_the_login_request_is_not_a_secret(tmp_path):
    data = yaml.safe_load((Path(__file__).parent / "data" / "tiny.yaml").read_text())
    data["auth"][0]["login"]["request"]["json"].update(grant_type="client_credentials", scope=["vm-admin"])
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    redactor = Redactor()
    engine = Engine(loader.load(path), FunctionTransport(echoing_backend), VirtualClock(), redactor)
    engine.connect({"settings": {"url": "https://h", "user": "admin-user", "password": PASSWORD}})
    shown = f"client_credentials vm-admin admin-user {PASSWORD} {REFRESH}"
    assert redactor(shown) == "client_credentials vm-admin *** *** ***"
