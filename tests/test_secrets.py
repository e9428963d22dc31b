"""Secrets never leave, in any encoding: replies, `call -v`, transcripts, logs, cassettes and
the conformance report; every value of a login exchange is secret unless the mapping says not.
Each test here fails with the redactor disabled."""
from __future__ import annotations

import base64
import html
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
    "HTML (html.escape)": html.escape(PASSWORD),
    "XML, numeric quote": PASSWORD.replace('"', "&#34;"),
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


MARKUP = "a<b&c'd\"e>f"
MARKUP_FORMS = [html.escape(MARKUP), html.escape(MARKUP, quote=False),
                MARKUP.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;"),
                MARKUP.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")
                .replace('"', "&#34;")]


@pytest.mark.parametrize("form", MARKUP_FORMS)
def test_html_and_xml_entity_encodings_of_a_secret_are_masked(form):
    redactor = Redactor()
    redactor.add(MARKUP)
    assert redactor(f"<p>bad password {form}</p>") == "<p>bad password ***</p>"


def test_a_short_secret_is_masked_where_it_is_a_whole_value(tmp_path):
    """A backend's 3-character ticket cannot be masked inside text (it would mangle every
    reply) but never stays in a recorded field; settings refuse one (test_settings_check)."""
    redactor = Redactor()
    redactor.add("xy7")
    assert redactor.hides("xy7") and redactor.scrub({"t": "xy7"}) == {"t": "***"}
    assert redactor("xy7z text") == "xy7z text"

    def backend(request):
        return HttpResponse(200, (("Content-Type", "application/json"),), b'{"t": "xy7", "n": "vm"}')
    rec = cassette.RecordingTransport(FunctionTransport(backend), tmp_path / "c.yaml", redactor)
    rec.send(cassette.HttpRequest("GET", "https://h/x?q=xy7"))
    rec.close()
    assert "xy7" not in (tmp_path / "c.yaml").read_text()


def test_the_secret_set_is_bounded_oldest_first_and_a_value_added_again_stays():
    from cpfmap import redact
    redactor = Redactor()
    redactor.add("the-settings-password")
    for n in range(redact.MAX_SECRETS + 50):
        redactor.add(f"ticket-{n:06d}")
        if n % 100 == 0:
            redactor.add("the-settings-password")   # as every connect does
    assert len(redactor._lasting) == redact.MAX_SECRETS
    assert redactor("ticket-000000 the-settings-password") == "ticket-000000 ***"
    assert redactor(f"ticket-{redact.MAX_SECRETS + 49:06d}") == "***"


def test_masking_is_one_compiled_pattern_rebuilt_only_when_the_set_changes(monkeypatch):
    from cpfmap import redact
    compiled = []
    real = redact.re.compile
    monkeypatch.setattr(redact.re, "compile", lambda *a: compiled.append(a) or real(*a))
    redactor = Redactor()
    for n in range(200):
        redactor.add(f"secret-value-{n}")
    for _ in range(100):
        redactor("some reply text secret-value-7")
    redactor.add("secret-value-7")   # known: no rebuild
    redactor("again")
    assert len(compiled) == 1


@pytest.mark.parametrize("token", ["tok-1234\r\nX-Injected: 1", "tok-1234\nmore", "tok-1234\x00z"])
def test_a_login_token_with_a_line_break_is_a_clear_error_without_a_traceback(tmp_path, token):
    def backend(request):
        body = {"token": token} if request.url.endswith("/login") else {}
        return HttpResponse(200, (("Content-Type", "application/json"),), json.dumps(body).encode())
    mapping = loader.load(Path(__file__).parent / "data" / "tiny.yaml")
    redactor = Redactor()
    lines = []
    transport = TracingTransport(FunctionTransport(backend), VirtualClock().now)
    server = Server(engine_handlers(Engine(mapping, transport, VirtualClock(), redactor)), redactor)
    settings = {"url": "https://h", "user": "admin", "password": "pw-very-secret"}
    reply = server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": settings}}))
    lines += [call.show_exchange(x, redactor) for x in transport.exchanges]
    text = json.dumps(reply) + "\n".join(lines)
    assert reply["error"]["code"] == 1 and "Authorization" in reply["error"]["message"], reply
    assert "Traceback" not in text and "tok-1234" not in text


def test_the_live_transport_refuses_a_header_it_cannot_send_without_quoting_it():
    from cpfmap.clock import RealClock
    from cpfmap.errors import TransportError
    from cpfmap.http.transport import HttpRequest, LiveTransport, RetryPolicy
    transport = LiveTransport(RetryPolicy(), RealClock())
    with pytest.raises(TransportError) as raised:
        transport.send(HttpRequest("GET", "http://127.0.0.1:9/x", (("Authorization", "Bearer tok-1234\r\nX: 1"),)))
    assert "tok-1234" not in raised.value.message
