"""Engine features the PVE pack needs on real clusters, on the tiny mapping with a function
transport: several hosts with failover (a request that may have run is never re-sent), a
bounded `retry` from an earlier step, and the HTTP reason phrase as the error text."""
from __future__ import annotations

import json

import pytest
import yaml

from cpfmap.clock import VirtualClock
from cpfmap.errors import TransportError
from cpfmap.http.transport import FunctionTransport, HttpResponse
from cpfmap.language import loader
from cpfmap.protocol.rpc import Server, engine_handlers
from cpfmap.redact import Redactor
from cpfmap.runtime.engine import Engine

BASE = yaml.safe_load(open("tests/data/tiny.yaml").read())
JSON = (("Content-Type", "application/json"),)
HOSTS = {"connection": {"hosts": "{{ settings.url.split(',') | map('trim') | list }}",
                        "base_url": "{{ host }}/api/v1", "retries": 1}}
CLONE_RETRY = {"methods": {"guests/clone": {
    "steps": [{"name": "free id", "request": {"method": "GET", "path": "/free-id"}, "extract": {"new": "id"}},
              {"name": "clone", "request": {"method": "POST", "path": "/machines/{{ params.id }}/clone",
                                            "json": {"id": "{{ new }}"}},
               "on_error": [{"status": [409], "match": "exists", "retry": {"times": 3, "from": "free id"}}]}],
    "task": {"completed": {"clone_id": "{{ new }}"}}, "result": {"clone_id": "{{ new }}"}}}}


def provider(tmp_path, handler, *overrides):
    data = BASE
    for extra in overrides:
        data = loader.merge(data, extra)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    transport = FunctionTransport(handler)
    redactor = Redactor()
    engine = Engine(loader.load(path), transport, VirtualClock(), redactor)
    return Server(engine_handlers(engine), redactor), transport


def call(server, method, **params):
    return server.handle_text(json.dumps({"method": method, "params": params}))


def connect(server, url):
    return call(server, "provider/connect", settings={"url": url, "user": "u", "password": "pw-secret-1"})


def answer(body, status=200, reason="OK"):
    return HttpResponse(status, JSON, json.dumps(body).encode(), reason)


def refused(request, sent: bool):
    error = TransportError(f"cannot reach {request.url}")
    if not sent:
        error.not_sent = True  # type: ignore[attr-defined]
    raise error


def cluster(down: set, sent_when_down: bool = False):
    def handler(request):
        if any(request.url.startswith(host) for host in down):
            refused(request, sent_when_down)
        if request.url.endswith("/login"):
            return answer({"token": "t-123456"})
        if "/power" in request.url:
            return answer({})
        return answer({"items": [], "name": "x"})
    return handler


def test_a_host_that_cannot_be_reached_is_skipped_and_the_next_stays_current(tmp_path):
    server, transport = provider(tmp_path, cluster({"https://a"}), HOSTS)
    assert connect(server, "https://a, https://b") == {"result": {}}
    assert "result" in call(server, "guests/list")
    hosts = [r.url.split("/api")[0] for r in transport.sent]
    assert hosts == ["https://a", "https://b", "https://b", "https://b"]  # login twice, whoami, list


def test_a_request_that_may_have_run_is_not_sent_to_another_host(tmp_path):
    down: set = set()
    server, transport = provider(tmp_path, cluster(down, sent_when_down=True), HOSTS)
    assert connect(server, "https://a, https://b") == {"result": {}}
    down.add("https://a")
    sent = len(transport.sent)
    reply = call(server, "guests/control", id="101", control="stop")
    assert reply["error"]["code"] == 1 and "cannot reach https://a" in reply["error"]["message"]
    assert [r.method for r in transport.sent[sent:]] == ["POST"]      # not re-sent to b
    assert "result" in call(server, "guests/list")                    # a read goes on to b
    assert transport.sent[-1].url.startswith("https://b")


def test_a_post_that_never_left_goes_to_the_next_host(tmp_path):
    down: set = set()
    server, transport = provider(tmp_path, cluster(down), HOSTS)
    connect(server, "https://a, https://b")
    down.add("https://a")
    assert call(server, "guests/control", id="101", control="stop") == {"result": {}}
    assert [r.url.split("/api")[0] for r in transport.sent[-2:]] == ["https://a", "https://b"]


def collisions(taken: int):
    state = {"refusals": 0}

    def handler(request):
        if request.url.endswith("/login"):
            return answer({"token": "t-123456"})
        if request.url.endswith("/free-id"):
            return answer({"id": 100 + state["refusals"]})
        if request.url.endswith("/clone") and state["refusals"] < taken:
            state["refusals"] += 1
            return answer({"error": {"message": "vm already exists"}}, 409, "Conflict")
        return answer({})
    return handler


WORKER_RETRY = {"methods": {"guests/clone": {
    "steps": [{"name": "free id", "request": {"method": "GET", "path": "/free-id"}, "extract": {"new": "id"}},
              {"name": "clone", "request": {"method": "POST", "path": "/machines/{{ params.id }}/clone",
                                            "json": {"id": "{{ new }}"}},
               "extract": {"op": "op"}, "wait": {"poll": "op", "handle": {"op": "{{ op }}"}},
               "on_error": [{"status": [409], "match": "taken", "retry": {"times": 2, "from": "free id"}},
                            {"match": "taken", "retry": {"times": 3, "from": "free id"}}],
               "remember": {"ids": "{{ new }}"}}],
    "task": {"completed": {"clone_id": "{{ new }}"}},
    "result": {"clone_id": "{{ new }}", "before": "{{ remembered.ids | default([]) | join(',') }}"}}}}


def worker_collisions(taken: int):
    """Each clone is accepted; the first `taken` end in a task failing "id taken", before it did anything."""
    state = {"free": 100, "ops": 0}

    def handler(request):
        if request.url.endswith("/login"):
            return answer({"token": "t-123456"})
        if request.url.endswith("/free-id"):
            return answer({"id": state["free"]})
        if request.url.endswith("/clone"):
            state["ops"] += 1
            state["free"] += 1
            return answer({"op": f"{state['ops']:08x}"})
        if "/operations/" in request.url:
            failed = int(request.url.rsplit("/", 1)[1], 16) <= taken
            return answer({"status": "error", "error": "id taken"} if failed else {"status": "done"})
        return answer({})
    return handler


@pytest.mark.parametrize("handler,mapping,refused", [
    (collisions, CLONE_RETRY, "refused 3 times: clone failed: HTTP 409: vm already exists"),
    (worker_collisions, WORKER_RETRY, "refused 3 times: id taken"),
])
def test_retry_runs_again_from_the_named_step_and_gives_up_after_times(tmp_path, handler, mapping, refused):
    """A refused request, and (a rule without `status`) the failure of the task the step waits for."""
    server, transport = provider(tmp_path, handler(2), mapping)
    connect(server, "https://a")
    reply = call(server, "guests/clone", id="9", name="n")
    assert reply["result"]["clone_id"] == "102"
    assert [r.url.rsplit("/", 1)[1] for r in transport.sent[2:] if "operations" not in r.url] == ["free-id", "clone"] * 3
    server, _ = provider(tmp_path, handler(5), mapping)
    connect(server, "https://a")
    assert call(server, "guests/clone", id="9", name="n")["error"]["message"] == refused


def test_remembered_values_are_seen_by_later_calls_newest_last_without_repeats(tmp_path):
    server, _ = provider(tmp_path, worker_collisions(0), WORKER_RETRY)
    connect(server, "https://a")
    before = [call(server, "guests/clone", id="9", name="n")["result"]["before"] for _ in range(3)]
    assert before == ["100", "100,101", "100,101,102"]   # the result sees this call's own value too


def test_a_value_too_long_to_remember_is_an_error(tmp_path):
    long = loader.merge(WORKER_RETRY, {"methods": {"guests/clone": {"steps": [
        {"set": {"new": "{{ 'x' * 2000 }}"}, "remember": {"ids": "{{ new }}"}}], "task": {"completed": {}},
        "result": {}}}})
    server, _ = provider(tmp_path, worker_collisions(0), long)
    connect(server, "https://a")
    assert "a value of 2000 characters is more than 1024" in call(server, "guests/clone", id="9", name="n")["error"]["message"]


def test_retry_from_a_step_that_does_not_come_before_is_a_load_error(tmp_path):
    bad = loader.merge(CLONE_RETRY, {})
    bad["methods"]["guests/clone"]["steps"][1]["on_error"][0]["retry"]["from"] = "free-idd"
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(loader.merge(BASE, bad)))
    with pytest.raises(Exception, match="retry from `free-idd`: no such step before it; did you mean `free id`"):
        loader.load(path)


@pytest.mark.parametrize("body,text", [
    ({"data": None}, "VM 101 is running - destroy failed"),                 # PVE before 5.2.0: reason only
    ({"data": None, "error": {"message": " "}}, "VM 101 is running - destroy failed"),   # blank text too
    ({"data": None, "error": {"message": "from the body"}}, "from the body"),
])
def test_error_text_is_the_reason_phrase_when_the_body_has_none(tmp_path, body, text):
    def handler(request):
        if request.url.endswith("/login"):
            return answer({"token": "t-123456"})
        if "/power" in request.url:
            return answer(body, 500, "VM 101 is running - destroy failed")
        return answer({})
    server, _ = provider(tmp_path, handler)
    connect(server, "https://a")
    reply = call(server, "guests/control", id="101", control="stop")
    assert reply["error"]["message"].endswith(f"HTTP 500: {text}")


def test_the_reason_phrase_can_be_extracted_and_is_in_error(tmp_path):
    steps = {"methods": {"guests/get": {"steps": [
        {"request": {"method": "GET", "path": "/machines/{{ params.id }}"},
         "extract": {"why": {"jmespath": "@", "from": "reason"}}},
        {"request": {"method": "GET", "path": "/missing"},
         "on_error": [{"status": [404], "set": {"again": "{{ error.reason }}"}}]}],
        "result": {"name": "{{ why }}/{{ again }}", "state": "powered_off", "is_template": False}}}}

    def handler(request):
        if request.url.endswith("/login"):
            return answer({"token": "t-123456"})
        if request.url.endswith("/missing"):
            return answer({}, 404, "No Such Thing")
        return answer({}, 200, "Fine Thanks")
    server, _ = provider(tmp_path, handler, steps)
    connect(server, "https://a")
    assert call(server, "guests/get", id="7")["result"]["name"] == "Fine Thanks/No Such Thing"


@pytest.mark.parametrize("failover,waited", [(False, 3.0), (True, 0.0)])
def test_with_another_host_to_try_a_refused_connection_is_not_retried_here(failover, waited):
    from cpfmap.http.transport import HttpRequest, LiveTransport, RetryPolicy
    clock = VirtualClock()
    transport = LiveTransport(RetryPolicy(attempts=3, backoff=1.0), clock)
    started = clock.now()
    with pytest.raises(TransportError, match="cannot connect"):
        transport.send(HttpRequest("GET", "http://127.0.0.1:1/x", timeout=(2.0, 2.0), failover=failover))
    assert clock.now() - started == waited   # backoff 1 s + 2 s between three attempts, or none


def test_a_login_value_extracted_under_a_public_name_is_not_a_secret_and_the_others_stay_secret(tmp_path):
    def handler(request):
        if request.url.endswith("/login"):
            return answer({"token": "t-123456", "expires_at": "2026-12-07T14:00:00Z"})
        return answer({"items": [], "name": "x"})
    public = {"auth": [dict(BASE["auth"][0], login=dict(BASE["auth"][0]["login"], public=["expires_at"],
                                                           extract={"token": "token", "expires_at": "expires_at"}),
                            ttl="{{ 60 if (auth.expires_at | timestamp) > 0 else 1 }}")]}
    server, _ = provider(tmp_path, handler, public)
    assert connect(server, "https://a") == {"result": {}}
    assert server.redactor.scrub("t-123456 2026-12-07T14:00:00Z") == "*** 2026-12-07T14:00:00Z"


@pytest.mark.parametrize("added, read_at, seen", [
    ([("a", None, 0)], 10_000, ["a"]),                               # for the provider's lifetime
    ([("a", 60, 0)], 59.9, ["a"]),
    ([("a", 60, 0)], 60, []),                                        # `for` seconds, then gone
    ([("a", 60, 0), ("b", 10, 5)], 20, ["a"]),
    ([("a", 60, 0), ("a", 60, 30)], 70, ["a"]),                      # kept again: a new lifetime
    ([("a", 60, 0), ("b", None, 1), ("a", 5, 2)], 8, ["b"]),         # the newest lifetime counts
])
def test_remembered_values_kept_for_a_time_are_gone_after_it(added, read_at, seen):
    from cpfmap.runtime.memory import Memory
    memory = Memory()
    for value, seconds, at in added:
        memory.add("ids", value, seconds, at)
        memory.view(at)                                              # a view built between adds
    assert memory.view(read_at).get("ids", []) == seen


@pytest.mark.parametrize("seconds", [0, -1, "60", True])
def test_remember_for_must_be_seconds_above_zero(tmp_path, seconds):
    bad = loader.merge(WORKER_RETRY, {"methods": {"guests/clone": {"steps": [
        {"set": {"new": "1"}, "remember": {"ids": {"value": "{{ new }}", "for": seconds}}}], "task": {"completed": {}},
        "result": {}}}})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(loader.merge(BASE, bad)))
    with pytest.raises(Exception, match="`for` must be a number of seconds above 0"):
        loader.load(path)
