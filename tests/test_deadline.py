"""connection.total_timeout bounds the whole HTTP exchange, not only the reading of the body:
through the engine, against raw loopback servers that trickle their headers, never answer, or
never read the request. The per-read timeout (12 s here) would let each of them hold the call;
the watchdog cuts the connection at the deadline (1 s). Without the watchdog each test takes
12 s or more, past its generous bound, and ends with another message."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import yaml

import cpfmap
from cpfmap.http.watchdog import Watchdog
from cpfmap.language import loader

MAPPING = loader.merge(yaml.safe_load(open("tests/data/tiny.yaml").read()), {
    "settings": {"blob": {"type": "string", "default": ""}},
    "connection": {"total_timeout": 1, "read_timeout": 12, "retries": 1},
    "auth": [{"type": "header", "headers": {"X-Key": "k"}}],
    "methods": {"provider/connect": {"steps": [
        {"request": {"method": "POST", "path": "/upload", "json": {"blob": "{{ settings.blob }}"}}}]}},
})
LARGE = "x" * (32 * 1024 * 1024)   # more than any loopback socket buffers hold
GIVE_UP = 20.0                        # a server stops misbehaving after this (a test never hangs)


def _read_request_head(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


def _trickle_headers(conn: socket.socket, stop: threading.Event) -> None:
    _read_request_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.wait(0.2):
        conn.sendall(b"x")


def _never_answer(conn: socket.socket, stop: threading.Event) -> None:
    _read_request_head(conn)
    stop.wait()


def _never_read(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait()


@pytest.fixture
def serving():
    """Start a raw server with a given behaviour; yields its URL. Stops it afterwards."""
    stops: list[threading.Event] = []

    def start(behave) -> str:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # inherited: a small window
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        stop = threading.Event()
        stops.append(stop)

        def serve() -> None:
            with listener:
                conn, _ = listener.accept()
                with conn:
                    try:
                        behave(conn, stop)
                    except OSError:
                        pass  # the client cut the connection: expected

        threading.Thread(target=serve, daemon=True).start()
        give_up = threading.Timer(GIVE_UP, stop.set)
        give_up.daemon = True
        give_up.start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"
    yield start
    for stop in stops:
        stop.set()


def connect(tmp_path, url: str, blob: str = "") -> tuple[dict, float]:
    """provider/connect with the mapping's one POST; no certificate is checked (none is ever sent)."""
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(MAPPING))
    with cpfmap.Provider(path) as provider:
        started = time.monotonic()
        settings = {"url": url, "user": "u", "password": "pw-long", "blob": blob, "verify": "false"}
        reply = provider.call("provider/connect", {"settings": settings}, 1)
        return reply, time.monotonic() - started


@pytest.mark.parametrize("scheme, behave, blob", [
    ("http", _trickle_headers, ""), ("http", _never_answer, ""), ("http", _never_read, LARGE),
    ("https", _never_read, "")], ids=["trickled-headers", "no-answer", "request-body-not-read", "no-tls-handshake"])
def test_the_total_deadline_cuts_the_whole_exchange(tmp_path, serving, scheme, behave, blob):
    reply, seconds = connect(tmp_path, serving(behave).replace("http", scheme, 1), blob)
    assert reply["error"]["code"] == 1, reply
    assert "no complete answer from POST" in reply["error"]["message"]
    assert "within 1s (connection.total_timeout)" in reply["error"]["message"]
    assert seconds < 10, seconds   # generous: the deadline is 1 s, the per-read timeout 12 s


def test_disarmed_deadlines_do_not_pile_up_in_a_long_running_provider():
    dog = Watchdog()
    for _ in range(1000):   # a day's total_timeout: none of them would leave the heap by expiring
        dog.arm(dog.now() + 86400).disarm()
    assert len(dog._heap) <= 200
