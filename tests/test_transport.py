"""The live transport against a loopback HTTP server that drops connections: GETs are
retried with backoff on the injected clock, a POST that may have arrived is never resent,
and timeouts are reported as code 1 errors."""
from __future__ import annotations

import http.server
import socket
import threading

import pytest

from cpfmap.clock import VirtualClock
from cpfmap.errors import TransportError
from cpfmap.http.transport import HttpRequest, LiveTransport, RetryPolicy


class Flaky(http.server.BaseHTTPRequestHandler):
    drops = 0
    limited = 0          # answer this many requests with 429
    retry_after = "2"
    seen: list = []

    def _answer(self):
        Flaky.seen.append(self.command)
        if self.path == "/slow":
            threading.Event().wait(2)
        if Flaky.limited > 0:
            Flaky.limited -= 1
            self.send_response(429)
            self.send_header("Retry-After", Flaky.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if Flaky.drops > 0:
            Flaky.drops -= 1
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    Flaky.seen, Flaky.drops, Flaky.limited, Flaky.retry_after = [], 0, 0, "2"
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_get_is_retried_with_backoff(server):
    Flaky.drops = 2
    clock = VirtualClock()
    response = LiveTransport(RetryPolicy(3, 0.5), clock).send(HttpRequest("GET", server + "/x"))
    assert response.status == 200 and Flaky.seen == ["GET"] * 3 and clock.slept == [0.5, 1.0]


def test_post_that_may_have_arrived_is_not_resent(server):
    Flaky.drops = 1
    with pytest.raises(TransportError):
        LiveTransport(RetryPolicy(3, 0.5), VirtualClock()).send(HttpRequest("POST", server + "/x", body=b"a=1"))
    assert Flaky.seen == ["POST"]


def test_post_marked_idempotent_is_retried(server):
    Flaky.drops = 1
    request = HttpRequest("POST", server + "/x", body=b"a=1", retry_safe=True)
    assert LiveTransport(RetryPolicy(3, 0), VirtualClock()).send(request).status == 200
    assert Flaky.seen == ["POST", "POST"]


def test_read_timeout_is_a_clear_error(server):
    with pytest.raises(TransportError, match="no answer from GET .*/slow within 0.3s"):
        LiveTransport(RetryPolicy(1, 0), VirtualClock()).send(HttpRequest("GET", server + "/slow", timeout=(2, 0.3)))


def test_refused_connection_is_retried_even_for_post_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = VirtualClock()
    with pytest.raises(TransportError, match="cannot connect"):
        LiveTransport(RetryPolicy(2, 0.1), clock).send(HttpRequest("POST", f"http://127.0.0.1:{port}/x"))
    assert clock.slept == [0.1]  # never sent, so safe to try again


def test_get_is_retried_after_429_waiting_what_the_server_asks(server):
    Flaky.limited = 1
    clock = VirtualClock()
    response = LiveTransport(RetryPolicy(3, 0.5), clock).send(HttpRequest("GET", server + "/x"))
    assert response.status == 200 and clock.slept == [2.0] and not response.resent


def test_retry_after_as_a_date_counts_from_the_servers_own_clock(server):
    Flaky.limited, Flaky.retry_after = 1, "Fri, 27 Nov 2099 15:00:07 GMT"
    clock = VirtualClock()
    LiveTransport(RetryPolicy(3, 0.5, max_wait=1e12), clock).send(HttpRequest("GET", server + "/x", deadline=1e12))
    assert len(clock.slept) == 1 and clock.slept[0] > 3600  # far in the future: a long wait, but a number


def test_a_write_is_resent_after_429_only_where_the_api_documents_it(server):
    Flaky.limited = 1
    post = HttpRequest("POST", server + "/x", body=b"a=1")
    assert LiveTransport(RetryPolicy(3, 0.5), VirtualClock()).send(post).status == 429
    Flaky.limited = 1
    policy = RetryPolicy(3, 0.5, resend_writes_on=frozenset({429}))
    assert LiveTransport(policy, VirtualClock()).send(post).status == 200
    assert Flaky.seen == ["POST", "POST", "POST"]


def test_a_retry_after_longer_than_max_retry_wait_is_the_answer(server):
    Flaky.limited, Flaky.retry_after = 1, "120"
    clock = VirtualClock()
    response = LiveTransport(RetryPolicy(3, 0.5, max_wait=60), clock).send(HttpRequest("GET", server + "/x"))
    assert response.status == 429 and clock.slept == []


def test_an_answer_to_a_repeat_after_a_lost_answer_says_so(server):
    Flaky.drops = 1
    request = HttpRequest("POST", server + "/x", body=b"a=1", retry_safe=True)
    assert LiveTransport(RetryPolicy(3, 0), VirtualClock()).send(request).resent


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_connection_is_said_in_user_terms_with_tries_and_time():
    port = _closed_port()
    with pytest.raises(TransportError) as caught:
        LiveTransport(RetryPolicy(3, 0.5), VirtualClock()).send(HttpRequest("GET", f"http://127.0.0.1:{port}/x"))
    message = caught.value.message
    assert f"connection refused: nothing accepts connections on 127.0.0.1:{port}" in message
    assert message.endswith("(3 tries over 1.5s)")
    for noise in ("ConnectionPool", "Max retries", "Errno", "object at", "Caused by"):
        assert noise not in message


def test_unresolvable_host_is_said_in_user_terms():
    import requests

    from cpfmap.http.transport import _transport_error
    cause = socket.gaierror(-2, "Name or service not known")
    exc = requests.exceptions.ConnectionError("HTTPSConnectionPool(host='pve.example', port=8006): Max retries")
    exc.__cause__ = cause
    error = _transport_error(HttpRequest("GET", "https://pve.example:8006/api2/json/version"), exc)
    assert "the host name pve.example cannot be resolved" in error.message


def test_a_single_try_does_not_claim_several():
    from cpfmap.http.transport import _tried
    assert _tried(TransportError("timed out connecting to GET /x: no connection within 5s"), 1, 5.0).message \
        == "timed out connecting to GET /x: no connection within 5s"
    assert _tried(TransportError("timed out"), 3, 16.5).message == "timed out (3 tries over 16.5s)"


def test_an_untrusted_certificate_is_said_in_user_terms(tmp_path):
    import ssl

    from fakepve.certs import make_cert
    cert, key, _ = make_cert(str(tmp_path), name="server", hosts=("127.0.0.1",))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(TransportError) as caught:
            LiveTransport(RetryPolicy(1, 0), VirtualClock()).send(
                HttpRequest("GET", f"https://127.0.0.1:{httpd.server_address[1]}/x"))
    finally:
        httpd.shutdown()
    message = caught.value.message
    assert "the server's certificate was refused (" in message and "give the CA" in message
    assert "_ssl.c" not in message and "Max retries" not in message


def test_a_retry_whose_wait_would_outlast_the_requests_deadline_is_not_made(server):
    Flaky.limited, Flaky.retry_after = 1, "50"
    clock = VirtualClock()
    policy = RetryPolicy(3, 0.5, max_wait=1000)
    response = LiveTransport(policy, clock).send(HttpRequest("GET", server + "/x", deadline=30))
    assert response.status == 429 and clock.slept == []
    Flaky.limited = 1
    assert LiveTransport(policy, clock).send(HttpRequest("GET", server + "/x", deadline=60)).status == 200
    assert clock.slept == [50.0]


@pytest.fixture
def tls_server(tmp_path):
    import ssl

    from fakepve.certs import make_cert
    cert, key, _ = make_cert(str(tmp_path), name="server", hosts=("127.0.0.1",))
    other, _, _ = make_cert(str(tmp_path), name="other", hosts=("127.0.0.1",))
    Flaky.drops = Flaky.limited = 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}/x", cert, other
    httpd.shutdown()
    httpd.server_close()


def _fetch(url: str, ca_file: str | None = None):
    from cpfmap.http.transport import Tls
    return LiveTransport(RetryPolicy(1, 0), VirtualClock()).send(HttpRequest("GET", url, tls=Tls(ca_file=ca_file)))


def test_without_ca_file_the_system_trust_store_decides(tls_server, monkeypatch):
    """The OS store (here OpenSSL's, which SSL_CERT_FILE names; on Windows the certificate
    store) through truststore: an enterprise CA installed in the system is trusted; certifi's
    bundle alone would refuse it."""
    url, cert, _ = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    assert _fetch(url).status == 200


def test_a_ca_file_is_the_only_trust_when_given(tls_server, monkeypatch):
    url, cert, other = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", cert)     # the system would trust it...
    with pytest.raises(TransportError, match="certificate was refused"):
        _fetch(url, ca_file=other)                 # ...but the mapping's ca_file names another CA
    monkeypatch.setenv("SSL_CERT_FILE", other)
    assert _fetch(url, ca_file=cert).status == 200
