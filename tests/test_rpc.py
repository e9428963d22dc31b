"""Framing, dispatch and error codes, data-driven from data/protocol.yaml, in-process."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from cpfmap.clock import VirtualClock
from cpfmap.http.transport import FunctionTransport, HttpResponse
from cpfmap.language import loader
from cpfmap.protocol.rpc import Server, engine_handlers
from cpfmap.redact import Redactor
from cpfmap.runtime.engine import Engine

CASES = yaml.safe_load((Path(__file__).parent / "data" / "protocol.yaml").read_text())


def strict_json(line: str | bytes):
    """Parse as a strict JSON reader (RAS's .NET one) would: NaN and Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=refuse)


def no_network(request):
    raise AssertionError(f"no request may be sent: {request.method} {request.url}")


@pytest.fixture(scope="module")
def server():
    mapping = loader.load("proxmox-ve")
    return Server(engine_handlers(Engine(mapping, FunctionTransport(no_network), VirtualClock())), Redactor())


def check(case: dict, reply) -> None:
    if case.get("none"):
        assert reply is None
        return
    assert reply is not None
    if "code" in case:
        assert reply["error"]["code"] == case["code"], reply
        assert case.get("message", "") in reply["error"]["message"]
    if "result_has" in case:
        assert case["result_has"] in reply["result"], reply
    if "id" in case:
        assert reply["id"] == case["id"]
    else:
        assert "id" not in reply


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_protocol_case(server, case):
    line = server.handle_line(case["line"].encode("utf-8") + b"\n")
    check(case, strict_json(line) if line is not None else None)


def test_serve_loop_bom_crlf_blank_lines_and_order(server):
    data = b"\xef\xbb\xbf" + b'{"method":"provider/initialize","id":1}\r\n\r\n\n{"method":"x","id":2}\n'
    out = io.BytesIO()
    assert server.serve(io.BytesIO(data), out) == 0
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["id"] for r in replies] == [1, 2]
    assert out.getvalue().endswith(b"\n") and all(line.isascii() for line in out.getvalue().splitlines())


def test_invalid_utf8_is_a_parse_error(server):
    assert json.loads(server.handle_line(b'{"method": "\xff"}\n'))["error"]["code"] == -32700


def test_a_defect_in_a_handler_is_an_internal_error_not_a_crash():
    def boom(params):
        raise ZeroDivisionError("oops")
    server = Server({"guests/list": boom}, Redactor())
    reply = json.loads(server.handle_line(b'{"method": "guests/list"}'))
    assert reply["error"]["code"] == -32603 and "ZeroDivisionError" in reply["error"]["message"]


def test_secrets_are_masked_in_error_messages():
    redactor = Redactor()
    redactor.add("s3cr3t-token")

    def leak(params):
        from cpfmap.errors import BackendError
        raise BackendError("backend said: bad token s3cr3t-token")
    reply = json.loads(Server({"guests/list": leak}, redactor).handle_line(b'{"method": "guests/list"}'))
    assert "s3cr3t-token" not in reply["error"]["message"] and "***" in reply["error"]["message"]


@pytest.mark.parametrize("result", [float("nan"), float("inf"), {"x": [float("-inf")]}])
def test_a_reply_that_is_not_strict_json_becomes_an_internal_error_with_the_id(result):
    server = Server({"guests/list": lambda params: result}, Redactor())
    reply = strict_json(server.handle_line(b'{"method": "guests/list", "id": 5}'))
    assert reply["error"]["code"] == -32603 and reply["id"] == 5


def test_a_line_over_the_limit_is_refused_and_the_next_one_answered():
    server = Server({"provider/initialize": lambda params: {}}, Redactor(), max_line=1000)
    data = b'{"method": "provider/initialize", "id": 1}\n' + b'{"pad": "' + b"x" * 5000 + b'"}\n' \
        + b'{"method": "provider/initialize", "id": 2}\n' + b"y" * 3000
    out = io.BytesIO()
    server.serve(io.BytesIO(data), out)
    replies = [strict_json(line) for line in out.getvalue().splitlines()]
    assert [r.get("id") for r in replies] == [1, None, 2, None]
    assert replies[1]["error"]["code"] == -32700 and "longer than 1000 bytes" in replies[1]["error"]["message"]


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity"])
def test_a_number_from_the_backend_that_is_not_finite_is_an_error_not_a_value(number):
    def backend(request):
        body = b'{"token": "tok-123456"}' if request.url.endswith("/login") else \
            b'{"items": [{"id": %s}]}' % number.encode() if "/machines" in request.url else b"{}"
        return HttpResponse(200, (("Content-Type", "application/json"),), body)
    server = Server(engine_handlers(Engine(loader.load(Path(__file__).parent / "data" / "tiny.yaml"),
                                           FunctionTransport(backend), VirtualClock())), Redactor())
    settings = {"url": "https://h", "user": "admin", "password": "hunter22"}
    assert "result" in server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": settings}}))
    reply = strict_json(server.handle_line(b'{"method": "guests/list", "id": 1}\n'))
    assert reply["error"]["code"] == 1 and "inf" not in json.dumps(reply).replace("Infinity", "")
    assert "not finite" in reply["error"]["message"] or "not a JSON number" in reply["error"]["message"]
