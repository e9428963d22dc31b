"""The live runtime under concurrency and faults (issue 17, points 1-6): what a refresh that
failed, a write, a hung refresh, a session renewed on another thread, a disconnect or a task
on a control may do to a reply. Races are driven with events in the fake backend, never
with sleeps; time is a VirtualClock the backend can move."""
from __future__ import annotations

import json
import threading

import pytest
import yaml
from test_cache import BASE, SWEEP, Fleet, _json, call, serve

from cpfmap.clock import VirtualClock
from cpfmap.errors import TransportError
from cpfmap.http.transport import FunctionTransport, HttpResponse
from cpfmap.language import loader
from cpfmap.redact import Redactor
from cpfmap.runtime import provider as assembly
from cpfmap.runtime.cache import Cache, Fetched, PooledPrefetch, Quiet
from cpfmap.runtime.provider import Provider

WAIT = 30   # seconds an event may take before a test gives up (never reached when it passes)


@pytest.fixture
def mapping(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(loader.merge(BASE, SWEEP)))
    return loader.load(path)


class Backend(Fleet):
    """The fleet, with faults: `down` drops address requests, `expired` tokens get 401, and
    hooks run as a request arrives (`on`: path suffix -> callable(request))."""

    def __init__(self, clock: VirtualClock | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.down = False
        self.token = 0
        self.expired: set[str] = set()
        self.on: dict[str, object] = {}
        self.headers: list[tuple[str, str | None]] = []
        self.login_held: threading.Event | None = None
        self.login_entered = threading.Event()

    def __call__(self, request) -> HttpResponse:
        path = request.url.split("/api/v1", 1)[1].split("?")[0]
        with self.lock:
            self.headers.append((f"{request.method} {path}", request.header("Authorization")))
        for suffix, hook in list(self.on.items()):
            if path.endswith(suffix):
                hook(request)
        if path == "/login":
            self.login_entered.set()
            if self.login_held is not None and not self.login_held.wait(WAIT):
                raise AssertionError("the login was never released")
            with self.lock:
                self.token += 1
                self.requests.append("POST /login")
            return _json({"token": f"tok-{self.token:06d}"})
        gate = self.addresses_held if path.endswith("/addresses") else None
        if gate is not None and not gate.wait(WAIT):
            raise AssertionError(f"{path} was never released")
        if self.down and path.endswith("/addresses"):
            with self.lock:
                self.requests.append(f"{request.method} {path}")
            raise TransportError("connection reset by peer")
        if (request.header("Authorization") or "").split(" ")[-1] in self.expired:
            with self.lock:
                self.requests.append(f"{request.method} {path} 401")
            return HttpResponse(401, (("Content-Type", "application/json"),), b'{"message": "ticket expired"}')
        if path == "/logout":
            with self.lock:
                self.requests.append("POST /logout")
            return _json({})
        return super().__call__(request)


def _server(mapping, backend, clock=None, prefetch=None):
    return serve(mapping, backend, clock or VirtualClock(), prefetch)


def _reply(server, method, **params) -> dict:
    return server.handle_text(json.dumps({"method": method, "params": params}))


# ------------------------------------------------------------ 1. failed refreshes

def test_a_refresh_that_got_no_answer_keeps_the_good_answer_and_is_not_cached(mapping):
    clock = VirtualClock()
    backend = Backend()
    server = _server(mapping, backend, clock)
    assert call(server, "guests/get", id="3")["ip_addresses"] == ["10.0.0.3"]
    clock.sleep(70)                      # stale (cache: 60)
    backend.down = True                  # the refresh's connection drops
    assert call(server, "guests/get", id="3")["ip_addresses"] == ["10.0.0.3"]
    backend.down = False                 # the backend is back a second later
    clock.sleep(1)
    backend.requests.clear()
    assert call(server, "guests/get", id="3")["ip_addresses"] == ["10.0.0.3"]
    assert backend.count("GET /machines/3/addresses") == 1   # asked again: no error was kept as fresh


def test_a_background_refresh_that_failed_leaves_the_cached_answer_in_place(mapping):
    clock, pool = VirtualClock(), PooledPrefetch()
    backend = Backend()
    server = _server(mapping, backend, clock, pool)
    call(server, "guests/get", id="3")
    assert pool.settle(WAIT)                               # the first answer is in
    key = next(k for k in server.engine.cache.entries if k.endswith("/3/addresses"))
    clock.sleep(70)
    backend.down = True
    assert call(server, "guests/get", id="3")["ip_addresses"] == ["10.0.0.3"]   # stale, at once
    assert pool.settle(WAIT)                               # the refresh ran, and failed
    assert backend.count("GET /machines/3/addresses") == 2
    entry = server.engine.cache.lookup(key)
    assert entry is not None and entry.error is None and entry.body() == [{"ip": "10.0.0.3"}]


# ------------------------------------------------------- 3. single flight and writes

def test_a_fetch_after_a_write_never_joins_one_that_started_before_it():
    cache = Cache(VirtualClock())
    release, entered = threading.Event(), threading.Event()

    def before_the_write():
        entered.set()
        assert release.wait(WAIT)
        return Fetched(_json({"state": "stopped"}))
    old = threading.Thread(target=cache.fetch, args=("k", before_the_write, lambda _: True))
    old.start()
    assert entered.wait(WAIT)
    cache.drop("101")                  # RAS started the guest; the old fetch is still on its way
    got: list = []
    after = threading.Thread(target=lambda: got.append(
        cache.fetch("k", lambda: Fetched(_json({"state": "running"})), lambda _: True)))
    after.start()
    after.join(WAIT)
    release.set()
    old.join(WAIT)
    assert got and got[0].body() == {"state": "running"}
    assert cache.lookup("k").body() == {"state": "running"}   # the pre-write answer was not kept


# --------------------------------------------------------------- 4. staleness bound

def test_a_prefetched_answer_is_never_served_older_than_two_lifetimes(mapping):
    clock, pool = VirtualClock(), PooledPrefetch()
    backend = Backend()
    server = _server(mapping, backend, clock, pool)
    call(server, "guests/get", id="3")
    assert pool.settle(WAIT)
    assert call(server, "guests/get", id="3")["ip_addresses"] == ["10.0.0.3"]
    held = backend.addresses_held = threading.Event()          # every refresh now hangs
    try:
        clock.sleep(70)
        assert call(server, "guests/get", id="3")["ip_addresses"] == ["10.0.0.3"]   # stale: within bound
        clock.sleep(60)                                        # 130 s: past two lifetimes
        assert call(server, "guests/get", id="3")["ip_addresses"] == []            # unknown, not stale
    finally:
        held.set()
        pool.close(WAIT)


def test_freshness_is_counted_from_the_request_not_from_the_reply(mapping):
    clock = VirtualClock()
    backend = Backend(clock)
    backend.on["/3/nics"] = lambda request: clock.sleep(20)   # the reply takes 20 s to come
    server = _server(mapping, backend, clock)
    call(server, "guests/get", id="3")
    del backend.on["/3/nics"]
    clock.sleep(585)                                           # 605 s after the request (cache: 600)
    backend.requests.clear()
    call(server, "guests/get", id="3")
    assert backend.count("GET /machines/3/nics") == 1


# ------------------------------------------------------------- 2. the shared session

def test_a_request_during_a_relogin_carries_credentials_and_the_session_is_renewed_once(mapping):
    clock, backend = VirtualClock(), Backend()
    server = _server(mapping, backend, clock)
    call(server, "guests/get", id="3")
    clock.sleep(10)                                            # the machine list is due again
    backend.expired.add("tok-000001")                          # the ticket ran out on the backend
    backend.login_held, backend.login_entered = threading.Event(), threading.Event()
    second_sent = threading.Event()
    backend.on["/machines"] = lambda request: second_sent.set()
    replies: dict = {}
    first = threading.Thread(target=lambda: replies.update(a=_reply(server, "guests/control", id="2", control="start")))
    first.start()
    assert backend.login_entered.wait(WAIT)                   # thread 1 is logging in again
    second = threading.Thread(target=lambda: replies.update(b=_reply(server, "guests/get", id="3")))
    second.start()
    assert second_sent.wait(WAIT)                              # thread 2 sent its request meanwhile
    backend.login_held.set()
    first.join(WAIT), second.join(WAIT)
    assert "result" in replies["a"] and "result" in replies["b"], replies
    assert all(auth for what, auth in backend.headers if what != "POST /login"), backend.headers
    assert backend.requests.count("POST /login") == 2          # connect, and one renewal for both


def test_no_login_follows_the_logout_of_a_disconnect(mapping):
    pool = PooledPrefetch()
    backend = Backend()
    server = _server(mapping, backend, prefetch=pool)
    held = backend.addresses_held = threading.Event()
    entered = threading.Event()
    backend.on["/addresses"] = lambda request: entered.set()
    call(server, "guests/get", id="3")                         # its refresh is now held at the backend
    assert entered.wait(WAIT)
    workers = list(pool.threads)

    def expire_and_release(request=None):                      # the held refresh then meets a 401
        backend.expired.add("tok-000001")
        held.set()
    backend.on["/logout"] = expire_and_release
    watcher = threading.Thread(target=lambda: pool.closing.wait(WAIT) and expire_and_release())
    watcher.start()
    assert "result" in _reply(server, "provider/disconnect")
    for worker in workers:
        worker.join(WAIT)
    watcher.join(WAIT)
    done = [r for r in backend.requests if r.startswith("POST /log")]
    assert done[-1].startswith("POST /logout"), backend.requests       # nothing logged in after the logout


# ---------------------------------------------------------------- 5. lifetime

def test_the_embedding_api_keeps_a_bounded_number_of_exchanges_with_secrets_masked(mapping):
    KEEP_EXCHANGES = getattr(assembly, "KEEP_EXCHANGES", 200)
    with Provider(mapping, transport=FunctionTransport(Backend())) as provider:
        settings = {"url": "https://fleet.test", "user": "admin", "password": "pw-0123456"}
        assert "result" in provider.call("provider/connect", {"settings": settings})
        for number in range(KEEP_EXCHANGES + 1):
            provider.call("guests/control", {"id": str(number % 40 + 1), "control": "start"})
        kept = provider.exchanges
        assert len(kept) == KEEP_EXCHANGES and provider.sent > KEEP_EXCHANGES
        text = repr([(x.request.url, x.request.headers, x.request.body) for x in kept])
        assert "tok-000001" not in text and "pw-0123456" not in text


def test_the_redactor_keeps_the_newest_session_values_and_every_lasting_secret():
    redactor = Redactor()
    redactor.add("pw-0123456")
    for number in range(1000):
        redactor.add(f"ticket-{number:06d}", session=True)
    assert redactor.size() < 64 * 40                            # bounded: not a thousand tickets' forms
    assert redactor("pw-0123456 ticket-000999") == "*** ***"


# ------------------------------------------------------------- 6. a task on a control

def test_a_task_on_a_control_is_a_mapping_error(tmp_path):
    data = loader.merge(BASE, {"controls": {"stop": {
        "steps": [{"request": {"method": "POST", "path": "/machines/{{ params.id }}/power", "json": {"state": "off"}},
                   "extract": {"op": "op"}}],
        "task": {"poll": "op", "handle": {"op": "{{ op }}"}}}}})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    errors = [f for f in loader.check(path) if f.severity == "error"]
    assert any("control has no task" in f.message for f in errors), errors


# ------------------------------------------------- 2. failover under two threads

def test_two_threads_failing_on_one_host_move_on_to_the_next_once(tmp_path):
    """Both find host a down at once: the session moves to b once (not a -> b -> a), and both
    requests are answered by b."""
    data = loader.merge(BASE, {"connection": {"hosts": "{{ settings.url.split(',') | list }}",
                                              "base_url": "{{ host }}/api/v1", "retries": 1},
                               "auth": [{"type": "header", "headers": {"X-Key": "k-123456"}}]})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    both_failing = threading.Barrier(2, timeout=WAIT)

    def backend(request):
        if request.url.startswith("https://a/") and "/machines/" in request.url:
            both_failing.wait()                     # both requests are on host a when it goes
            error = TransportError("connection refused")
            error.not_sent = True  # type: ignore[attr-defined]
            raise error
        return _json({"id": 1, "name": "vm-1", "power": 1} if "/machines/" in request.url else {})
    provider = Provider(loader.load(path), transport=FunctionTransport(backend))
    settings = {"url": "https://a,https://b", "user": "u", "password": "pw-0123456"}
    assert "result" in provider.call("provider/connect", {"settings": settings})
    spec = next(step.request for step in provider.mapping.methods["guests/get"].steps
                if step.request is not None and step.request.path.source == "/machines/{{ params.id }}")
    backend_session = provider.engine.backend
    got: list = []

    def get(guest: str) -> None:
        got.append(backend_session.send(spec, {"settings": backend_session.settings, "params": {"id": guest}}).status)
    threads = [threading.Thread(target=get, args=(g,)) for g in ("1", "2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert got == [200, 200] and backend_session.base_url == "https://b/api/v1"


# ------------------------------------------- refreshes wait for a pause in RAS's requests

def _job(ran: threading.Event):
    def job():
        ran.set()
        return Fetched(HttpResponse(200, body=b"{}"))
    return job


def _deferred(quiet: float, longest: float):
    """A pool whose serve thread is answering a request, with one refresh nobody waits for."""
    pool = PooledPrefetch(quiet=Quiet(quiet=quiet, longest=longest))
    ran = threading.Event()
    pool.begin()
    future = pool.submit("stale", 1, _job(ran), "a", deferrable=True)
    return pool, ran, future


def test_a_refresh_nobody_waits_for_starts_only_once_the_reply_is_out():
    pool, ran, _ = _deferred(quiet=0.0, longest=3600)
    assert pool.quiet.parked.wait(WAIT)
    urgent = threading.Event()
    first = pool.submit("first", 1, _job(urgent), "b")         # one a reply waits for: at once
    assert first is not None and first.result(WAIT) is not None and urgent.is_set()
    assert not ran.is_set()
    pool.end()                                                 # the reply went out
    assert ran.wait(WAIT)
    pool.close(WAIT)


@pytest.mark.parametrize("longest, waiting", [(3600, True), (0.0, False)],
                         ids=["the reply waits for a refresh", "longest deferral reached"])
def test_a_deferred_refresh_runs_before_the_pause_when_nothing_competes_or_it_waited_long_enough(longest, waiting):
    pool, ran, _ = _deferred(quiet=3600, longest=longest)      # RAS never pauses
    if waiting:
        assert pool.quiet.parked.wait(WAIT) and not ran.is_set()
        with pool.quiet.waiting_for_refresh():
            assert ran.wait(WAIT)
    assert ran.wait(WAIT)
    pool.end()
    pool.close(WAIT)


def test_a_deferred_refresh_is_dropped_when_the_pool_closes():
    pool, ran, future = _deferred(quiet=3600, longest=3600)
    assert pool.quiet.parked.wait(WAIT)
    assert pool.close(WAIT) == 0                               # no worker left waiting
    assert future is not None and future.cancelled() and not ran.is_set()


def test_a_stale_detail_is_served_and_its_refresh_waits_for_the_pause(mapping):
    clock = VirtualClock()
    backend = Backend(clock)
    pool = PooledPrefetch(quiet=Quiet(quiet=3600, longest=3600))
    server = _server(mapping, backend, prefetch=pool, clock=clock)
    first = call(server, "guests/get", id="3")                 # the first answer: fetched for the reply
    assert pool.settle(WAIT)
    asked = sum(1 for r in backend.requests if r.endswith("/addresses"))
    clock.sleep(65)                                            # the addresses are stale now
    again = call(server, "guests/get", id="3")
    assert again["ip_addresses"] and not first["ip_addresses"]   # the value at hand (the first get had none yet)
    assert pool.quiet.parked.wait(WAIT)
    assert sum(1 for r in backend.requests if r.endswith("/addresses")) == asked   # not while RAS is served
    pool.begin()                                               # the next request waits for a refresh
    with pool.quiet.waiting_for_refresh():
        assert pool.settle(WAIT)
    pool.end()
    assert sum(1 for r in backend.requests if r.endswith("/addresses")) == asked + 1
    pool.close(WAIT)
