"""Every wait has a deadline and every input a bound: the live transport against a loopback
server that trickles or floods its answers."""
from __future__ import annotations

import gzip
import http.server
import threading

import pytest

from cpfmap.errors import TransportError
from cpfmap.http.transport import HttpRequest, LiveTransport, RetryPolicy


class TickClock:
    """Each reading of the time is one second later: a deadline passes after a few reads,
    however fast the machine is."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        self.t += 1.0
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


BIG = 3 * 1024 * 1024


class Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        handler = getattr(self, "_" + self.path.strip("/"))
        handler()

    def _trickle(self):
        self._head(("Content-Length", "60"))
        for _ in range(60):
            self.wfile.write(b"x")
            self.wfile.flush()
            threading.Event().wait(0.01)

    def _flood(self):
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        for _ in range(BIG // 65536):
            self.wfile.write(b"x" * 65536)

    def _declared(self):
        self._head(("Content-Length", str(BIG)))
        self.wfile.write(b"x" * 1024)

    def _bomb(self):
        packed = gzip.compress(b"0" * BIG)
        self._head(("Content-Length", str(len(packed))), ("Content-Encoding", "gzip"))
        self.wfile.write(packed)

    def _small(self):
        self._head(("Content-Length", "2"))
        self.wfile.write(b"ok")

    def _head(self, *headers):
        self.send_response(200)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def send(url: str, **options) -> bytes:
    return LiveTransport(RetryPolicy(3, 0), TickClock()).send(HttpRequest("GET", url, **options)).body


def test_a_trickling_backend_is_cut_off_at_the_total_deadline(server):
    with pytest.raises(TransportError, match=r"no complete answer from GET .*/trickle within 10s "
                                             r"\(connection.total_timeout\)"):
        send(server + "/trickle", deadline=10)


@pytest.mark.parametrize("path", ["/flood", "/declared", "/bomb"])
def test_a_body_over_the_cap_is_refused(server, path):
    with pytest.raises(TransportError, match=r"larger than 1048576 bytes \(connection.max_response_bytes\)"):
        send(server + path, max_body=1024 * 1024)


def test_within_the_bounds_the_body_arrives_whole_and_the_connection_is_reused(server):
    transport = LiveTransport(RetryPolicy(1, 0), TickClock())
    assert [transport.send(HttpRequest("GET", server + "/small")).body for _ in range(3)] == [b"ok"] * 3
    assert send(server + "/bomb", max_body=BIG) == b"0" * BIG


def test_the_mapping_sets_the_deadline_and_the_cap(tmp_path):
    import yaml

    from cpfmap.clock import VirtualClock
    from cpfmap.language import loader
    from cpfmap.redact import Redactor
    from cpfmap.runtime.session import Backend
    data = yaml.safe_load(open("tests/data/tiny.yaml").read())
    data["connection"].update(total_timeout=7, max_response_bytes=4096)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    mapping = loader.load(path)
    backend = Backend(mapping, None, VirtualClock(), Redactor(), {"url": "https://h", "user": "u", "password": "pw", "verify": True})
    request = backend.build(mapping.methods["guests/list"].steps[0].request, {"settings": backend.settings})
    assert (request.deadline, request.max_body) == (7, 4096)


def test_a_backend_reply_nested_too_deeply_is_a_backend_error_not_a_defect():
    from cpfmap.errors import BackendError
    from cpfmap.http.transport import HttpResponse
    from cpfmap.runtime.reading import body_of
    response = HttpResponse(200, (("Content-Type", "application/json"),), b"[" * 100000 + b"]" * 100000)
    with pytest.raises(BackendError, match="not JSON"):
        body_of(response)
