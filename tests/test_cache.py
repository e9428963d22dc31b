"""Cached GET replies (cache.py): a sweep's per-guest work is a lookup in a reply parsed and
indexed once; writes drop what they touched; concurrent callers share one request; prefetch
runs on a bounded pool and never holds a reply; caching is the same recorded and replayed."""
from __future__ import annotations

import json
import threading

import pytest
import yaml

from cpfmap.clock import VirtualClock
from cpfmap.http.transport import FunctionTransport, HttpResponse
from cpfmap.language import loader
from cpfmap.protocol.rpc import Server, engine_handlers
from cpfmap.redact import Redactor
from cpfmap.runtime.cache import Cache, Fetched, PooledPrefetch
from cpfmap.runtime.engine import Engine

BASE = yaml.safe_load(open("tests/data/tiny.yaml").read())
SWEEP = {
    "fragments": {"machine": [{
        "name": "every machine", "request": {"method": "GET", "path": "/machines"}, "cache": 5,
        "index": {"items": "items", "key": "id", "lookup": "{{ params.id }}"},
        "extract": {"vm": {"from": "entry", "jmespath": "@", "required": "Guest {{ params.id }} not found"}}}]},
    "methods": {
        "guests/list": {"steps": [{"request": {"method": "GET", "path": "/machines"}, "cache": 5,
                                   "extract": {"ids": "string_ids(items[].id)"}}],
                        "result": {"guests": "{{ ids }}"}},
        "guests/get": {
            "steps": [{"use": "machine"},
                      {"name": "nics", "request": {"method": "GET", "path": "/machines/{{ params.id }}/nics"},
                       "cache": 600, "extract": {"macs": "[].mac"}},
                      {"name": "addresses", "when": "{{ vm.power == 1 }}",
                       "request": {"method": "GET", "path": "/machines/{{ params.id }}/addresses"},
                       "cache": 60, "prefetch": {"concurrency": 2, "wait": 0},
                       "extract": {"ips": {"jmespath": "[].ip", "default": []}}}],
            "result": {"name": "{{ vm.name }}", "state": "{{ vm.power | translate('power') }}",
                       "mac_addresses": "{{ macs }}", "ip_addresses": "{{ ips | default([]) }}", "is_template": False}}},
}
GUESTS = 40


class Fleet:
    """An in-process backend of GUESTS machines (odd ids running) that counts requests by path."""

    def __init__(self) -> None:
        self.power = {i: i % 2 for i in range(1, GUESTS + 1)}
        self.requests: list[str] = []
        self.addresses_held: threading.Event | None = None   # address requests wait until it is set
        self.entered: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request) -> HttpResponse:
        path = request.url.split("/api/v1", 1)[1].split("?")[0]
        with self.lock:
            self.requests.append(f"{request.method} {path}")
            self.entered.append(path)
        gate = self.addresses_held if path.endswith("/addresses") else None
        if gate is not None and not gate.wait(30):
            raise AssertionError(f"{path} was never released")
        return _json(self._answer(request.method, path))

    def _answer(self, method: str, path: str):
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/login":
            return {"token": "tok-123456"}
        if method == "POST":
            self.power[int(parts[1])] = 1
            return {}
        if path == "/whoami":
            return {"user": "admin"}
        if path == "/machines":
            return {"items": [{"id": i, "name": f"vm-{i}", "power": p} for i, p in self.power.items()]}
        if parts[-1] == "nics":
            return [{"mac": f"02:00:00:00:00:{int(parts[1]):02x}"}]
        return [{"ip": f"10.0.0.{parts[1]}"}]

    def count(self, prefix: str) -> int:
        return sum(1 for r in self.requests if r.startswith(prefix))


def _json(data) -> HttpResponse:
    return HttpResponse(200, (("Content-Type", "application/json"),), json.dumps(data).encode())


@pytest.fixture
def mapping(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(loader.merge(BASE, SWEEP)))
    return loader.load(path)


def serve(mapping, fleet, clock=None, prefetch=None) -> Server:
    engine = Engine(mapping, FunctionTransport(fleet), clock or VirtualClock(), Redactor(), prefetch)
    server = Server(engine_handlers(engine), Redactor())
    server.engine = engine
    settings = {"url": "https://fleet.test", "user": "admin", "password": "pw-0123456"}
    assert "result" in server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": settings}}))
    return server


def call(server, method: str, **params) -> dict:
    reply = server.handle_text(json.dumps({"method": method, "params": params}))
    assert "result" in reply, reply
    return reply["result"]


def sweep(server) -> list[dict]:
    return [call(server, "guests/get", id=i) for i in call(server, "guests/list")["guests"]]


def test_a_sweep_reads_the_bulk_list_once_and_per_guest_details_within_their_freshness(mapping):
    fleet = Fleet()
    clock = VirtualClock()
    server = serve(mapping, fleet, clock)
    first = sweep(server)
    assert first[2] == {"id": "3", "name": "vm-3", "state": "powered_on", "mac_addresses": ["02:00:00:00:00:03"],
                        "ip_addresses": ["10.0.0.3"], "is_template": False}
    assert fleet.count("GET /machines") - fleet.count("GET /machines/") == 1
    fleet.requests.clear()
    clock.sleep(15)   # RAS's next poll
    sweep(server)
    assert fleet.count("GET /machines") - fleet.count("GET /machines/") == 1   # the list, once more
    assert sum(r.endswith("/nics") for r in fleet.requests) == 0   # 10 minutes: still fresh
    refreshed = sum(r.endswith("/addresses") for r in fleet.requests)  # a minute, spread over sweeps
    assert refreshed < GUESTS // 4
    clock.sleep(60)
    fleet.requests.clear()
    sweep(server)
    assert fleet.count("GET /machines/") == GUESTS // 2 and not fleet.count("GET /machines/2/")


def test_the_bulk_reply_is_parsed_and_indexed_once_per_fetch(mapping, monkeypatch):
    built = []
    original = Fetched.index

    def counting(self, index):
        if index not in self._indexes:
            built.append(index)
        return original(self, index)
    monkeypatch.setattr(Fetched, "index", counting)
    server = serve(mapping, Fleet())
    sweep(server)
    assert len(built) == 1


def test_a_write_drops_what_it_touched_so_the_next_get_is_fresh(mapping):
    fleet = Fleet()
    server = serve(mapping, fleet)
    sweep(server)
    assert call(server, "guests/get", id="2")["state"] == "powered_off"
    fleet.requests.clear()
    call(server, "guests/control", id="2", control="start")
    assert call(server, "guests/get", id="2")["state"] == "powered_on"
    assert fleet.count("GET /machines/2/nics") == 1        # the guest's own replies were dropped
    call(server, "guests/get", id="4")
    assert fleet.count("GET /machines/4/") == 0            # other guests' were not


def test_a_guest_missing_from_a_reused_list_fetches_it_again_once(mapping):
    fleet = Fleet()
    server = serve(mapping, fleet)
    sweep(server)
    fleet.power[77] = 0   # created behind RAS's back, within the list's freshness
    fleet.requests.clear()
    assert call(server, "guests/get", id="77")["name"] == "vm-77"
    assert fleet.count("GET /machines") - fleet.count("GET /machines/") == 1
    reply = server.handle_text(json.dumps({"method": "guests/get", "params": {"id": "78"}}))
    assert "not found" in reply["error"]["message"]


def test_concurrent_callers_of_one_fetch_share_its_request():
    cache = Cache(VirtualClock())
    release, entered = threading.Event(), threading.Event()
    sent = []

    def produce():
        sent.append(1)
        entered.set()
        assert release.wait(30)
        return Fetched(_json({"ok": True}))
    results = []
    first = threading.Thread(target=lambda: results.append(cache.fetch("k", produce, lambda _: True)))
    first.start()
    assert entered.wait(30)
    second = threading.Thread(target=lambda: results.append(cache.fetch("k", produce, lambda _: True)))
    second.start()
    assert cache.flights["k"].joined.wait(30)
    release.set()
    first.join(30), second.join(30)
    assert len(sent) == 1 and len(results) == 2 and results[0] is results[1]


def test_a_fetch_in_flight_across_a_write_is_not_kept():
    cache = Cache(VirtualClock())

    def produce():
        cache.drop(None)   # a write lands while the answer is on its way
        return Fetched(_json({}))
    cache.fetch("k", produce, lambda _: True)
    assert cache.lookup("k") is None


def test_prefetch_honours_its_concurrency_limit_and_never_holds_a_reply(mapping):
    fleet = Fleet()
    pool = PooledPrefetch()
    server = serve(mapping, fleet, prefetch=pool)
    release = fleet.addresses_held = threading.Event()
    replies = [call(server, "guests/get", id=str(i)) for i in (1, 3, 5, 7, 9, 11)]
    assert all(r["ip_addresses"] == [] for r in replies)        # answered at once: wait 0, no value yet
    pool_name = mapping.methods["guests/get"].steps[2].where
    try:
        assert _entered_addresses(fleet, 2)
        assert pool.queued(pool_name) == 4                      # two at work, four waiting
    finally:
        release.set()
    assert _entered_addresses(fleet, 6)
    pool.close()
    assert sum(1 for r in fleet.requests if r.endswith("/addresses")) == 6


def _entered_addresses(fleet: Fleet, n: int) -> bool:
    done = threading.Event()
    for _ in range(3000):
        if sum(1 for p in fleet.entered if p.endswith("/addresses")) >= n:
            done.set()
            break
        threading.Event().wait(0.01)
    return done.is_set()


@pytest.mark.parametrize("seconds_per_reading", [0.0, 100.0], ids=["instant", "slow"])
def test_cached_sessions_replay_the_same_however_fast_they_were_recorded(mapping, tmp_path, monkeypatch,
                                                                         seconds_per_reading):
    """Record while the wall clock stands still or runs minutes per reading, then replay: the
    cache decisions (so the requests, so the replies) are the same: both count logical time."""
    import io
    import itertools
    import logging

    from cpfmap import cli
    logger = logging.getLogger("cpfmap")   # cli.run sets up logging: undone after the test
    for name in ("handlers", "propagate", "level"):
        monkeypatch.setattr(logger, name, list(logger.handlers) if name == "handlers" else getattr(logger, name))
    path, cassette = tmp_path / "fleet.yaml", tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(loader.merge(BASE, SWEEP)))
    ticks = itertools.count(0, seconds_per_reading)
    monkeypatch.setattr("cpfmap.clock.time.monotonic", lambda: next(ticks))
    lines = [{"method": "provider/connect", "params": {"settings": {
        "url": "https://fleet.test", "user": "admin", "password": "pw-0123456"}}}]
    lines += [{"method": "guests/get", "params": {"id": str(i % 6 + 1)}} for i in range(30)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    outputs = []
    for argv, transport in ((["record", str(path), "--cassette", str(cassette)], FunctionTransport(Fleet())),
                            (["serve", str(path), "--replay", str(cassette)], None)):
        out = io.BytesIO()
        assert cli.run(argv, io.BytesIO(data), out, io.StringIO(), transport=transport) == 0
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] and b"error" not in outputs[0]


def test_stale_prefetched_details_are_refreshed_at_most_at_the_steady_rate():
    pool = PooledPrefetch()
    keys = [f"/vm/{i}/agent" for i in range(100)]
    assert all(pool.admit("p", key, 60.0, 0.0, stale=False) for key in keys)   # first answers: always
    due_together = [pool.admit("p", key, 60.0, 100.0, stale=True) for key in keys]
    assert sum(due_together) == 1                        # one token to start, not the whole sweep
    later = [pool.admit("p", key, 60.0, 112.0, stale=True) for key in keys]
    assert sum(later) == 20                              # 12 s at 100 keys per 60 s
    assert sum(pool.admit("p", key, 60.0, 1000.0, stale=True) for key in keys) == 100   # at most one lifetime's worth


def test_a_paginated_bulk_list_is_cached_and_indexed_as_one_reply(tmp_path):
    """Every page's items kept as one reply: a sweep's gets are lookups in one paged fetch."""
    paged = {"fragments": {"machine": [{
        "name": "every machine", "request": {"method": "GET", "path": "/machines"}, "cache": 5,
        "paginate": {"type": "offset", "items": "items", "size": 7},
        "index": {"items": "@", "key": "id", "lookup": "{{ params.id }}"},
        "extract": {"vm": {"from": "entry", "jmespath": "@", "required": "Guest {{ params.id }} not found"}}}]}}
    path = tmp_path / "paged.yaml"
    path.write_text(yaml.safe_dump(loader.merge(loader.merge(BASE, SWEEP), paged)))
    fleet = PagedFleet()
    server = serve(loader.load(path), fleet)
    states = {str(i): call(server, "guests/get", id=str(i))["state"] for i in range(1, GUESTS + 1)}
    assert states["3"] == "powered_on" and states["4"] == "powered_off"
    assert fleet.count("GET /machines?") == GUESTS // 7 + 1        # every page once, for all 40 gets


class PagedFleet(Fleet):
    def __call__(self, request) -> HttpResponse:
        if request.url.split("?")[0].endswith("/machines"):
            offset = int(request.url.split("offset=")[1].split("&")[0])
            self.requests.append("GET /machines?")
            items = [{"id": i, "name": f"vm-{i}", "power": p} for i, p in self.power.items()]
            return _json({"items": items[offset:offset + 7]})
        return super().__call__(request)
