"""What a mapping says is safe after a request got no answer: `lookup` finds out whether a
create took effect before it is sent again; `already_done` reads a refusal of a repeat as
success, and only of a repeat. The live transport's own retries are in test_transport.py."""
from __future__ import annotations

import json

import pytest
import yaml

from cpfmap.clock import VirtualClock
from cpfmap.errors import BackendError, MappingError, TransportError
from cpfmap.http.transport import FunctionTransport, HttpResponse
from cpfmap.language import loader
from cpfmap.redact import Redactor
from cpfmap.runtime.engine import Engine

BASE = yaml.safe_load(open("tests/data/tiny.yaml").read())
SETTINGS = {"url": "https://hv.example.test", "user": "a", "password": "pw-123456"}
CLONE = {"steps": [
    {"request": {"method": "POST", "path": "/machines/{{ params.id }}/clone", "json": {"name": "{{ params.name }}"}},
     "accept": [202], "extract": {"new": "vm_id"},
     "lookup": {"steps": [{"request": {"method": "GET", "path": "/machines", "query": {"name": "{{ params.name }}"}},
                           "extract": {"new": "items[0].id"}}],
                "found": "{{ new is not none }}"}}],
    "task": {"completed": {"clone_id": "{{ new }}"}}, "result": {"clone_id": "{{ new }}"}}
START = {"steps": [{"request": {"method": "POST", "path": "/machines/{{ params.id }}/power", "json": {"state": "on"}},
                    "idempotent": True, "already_done": [{"status": [409], "match": "already on"}]}]}


def load(tmp_path, patch: dict):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(loader.merge(BASE, patch)))
    return loader.load(path)


def answer(status: int = 200, body=None, resent: bool = False) -> HttpResponse:
    return HttpResponse(status, (("Content-Type", "application/json"),), json.dumps(body or {}).encode(),
                        resent=resent)


class Backend:
    """Login and whoami answer; `routes` maps "METHOD /path" to a list of answers or errors, in order."""

    def __init__(self, routes: dict) -> None:
        self.routes = {k: list(v) for k, v in routes.items()}
        self.sent: list[str] = []

    def __call__(self, request):
        key = f"{request.method} {request.url.split('/api/v1', 1)[1].split('?')[0]}"
        self.sent.append(key)
        if key == "POST /login":
            return answer(body={"token": "tok-123456"})
        outcome = self.routes[key].pop(0) if key in self.routes else answer()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def engine(tmp_path, patch: dict, backend: Backend) -> Engine:
    eng = Engine(load(tmp_path, patch), FunctionTransport(backend), VirtualClock(), Redactor())
    eng.connect({"settings": SETTINGS})
    return eng


def lost() -> TransportError:
    return TransportError("connection to POST /clone failed: Connection aborted")  # sent; no answer


def test_a_create_whose_answer_was_lost_is_found_by_its_lookup_and_not_sent_again(tmp_path):
    backend = Backend({"POST /machines/9/clone": [lost()],
                       "GET /machines": [answer(body={"items": [{"id": 41}]})]})
    reply = engine(tmp_path, {"methods": {"guests/clone": CLONE}}, backend).call(
        "guests/clone", {"id": "9", "name": "host-1"})
    assert reply["clone_id"] == "41"
    assert backend.sent.count("POST /machines/9/clone") == 1


def test_a_create_the_lookup_does_not_find_is_sent_again(tmp_path):
    backend = Backend({"POST /machines/9/clone": [lost(), answer(202, {"vm_id": 42})],
                       "GET /machines": [answer(body={"items": []})]})
    reply = engine(tmp_path, {"methods": {"guests/clone": CLONE}}, backend).call(
        "guests/clone", {"id": "9", "name": "host-1"})
    assert reply["clone_id"] == "42"
    assert backend.sent[-3:] == ["POST /machines/9/clone", "GET /machines", "POST /machines/9/clone"]


def test_without_a_lookup_a_create_whose_answer_was_lost_fails_and_is_never_resent(tmp_path):
    clone = dict(CLONE, steps=[{k: v for k, v in CLONE["steps"][0].items() if k != "lookup"}])
    backend = Backend({"POST /machines/9/clone": [lost(), answer(202, {"vm_id": 42})]})
    with pytest.raises(TransportError, match="Connection aborted"):
        engine(tmp_path, {"methods": {"guests/clone": clone}}, backend).call("guests/clone", {"id": "9", "name": "h"})
    assert backend.sent.count("POST /machines/9/clone") == 1


@pytest.mark.parametrize("found,sent", [([{"id": 43}], 1), ([], 1)])
def test_after_a_read_timeout_the_lookup_runs_but_the_create_is_never_sent_again(tmp_path, found, sent):
    timeout = TransportError("no answer from POST /clone within 60s")
    timeout.hung = True
    backend = Backend({"POST /machines/9/clone": [timeout, answer(202, {"vm_id": 42})],
                       "GET /machines": [answer(body={"items": found})]})
    provider = engine(tmp_path, {"methods": {"guests/clone": CLONE}}, backend)
    if found:
        assert provider.call("guests/clone", {"id": "9", "name": "h"})["clone_id"] == "43"
    else:
        with pytest.raises(TransportError, match="within 60s"):
            provider.call("guests/clone", {"id": "9", "name": "h"})
    assert backend.sent.count("POST /machines/9/clone") == sent


def test_lookups_are_bounded_by_connection_retries(tmp_path):
    backend = Backend({"POST /machines/9/clone": [lost(), lost(), lost()],
                       "GET /machines": [answer(body={"items": []})] * 3})
    with pytest.raises(TransportError):
        engine(tmp_path, {"methods": {"guests/clone": CLONE}}, backend).call("guests/clone", {"id": "9", "name": "h"})
    assert backend.sent.count("POST /machines/9/clone") == 2  # tiny.yaml: retries 2


def test_a_refusal_of_a_repeat_is_already_done(tmp_path):
    backend = Backend({"POST /machines/1/power": [answer(409, {"error": {"message": "machine 1 already on"}},
                                                         resent=True)]})
    assert engine(tmp_path, {"controls": {"start": START}}, backend).control({"id": "1", "control": "start"}) == {}


def test_the_same_refusal_of_a_first_attempt_is_an_error(tmp_path):
    backend = Backend({"POST /machines/1/power": [answer(409, {"error": {"message": "machine 1 already on"}})]})
    with pytest.raises(BackendError, match="HTTP 409: machine 1 already on"):
        engine(tmp_path, {"controls": {"start": START}}, backend).control({"id": "1", "control": "start"})


@pytest.mark.parametrize("step,message", [
    ({"idempotent": True, "lookup": {"steps": [], "found": "{{ true }}"}}, "must not run twice"),
    ({"already_done": [{"match": "exists"}]}, "give the step `idempotent: true` or a `lookup`"),
    ({"idempotent": True, "already_done": [{"match": "("}]}, "bad regular expression"),
])
def test_validate_refuses_repeat_rules_that_cannot_apply(tmp_path, step, message):
    request = {"method": "POST", "path": "/machines/{{ params.id }}/power", "json": {"state": "on"}}
    with pytest.raises(MappingError) as caught:
        load(tmp_path, {"controls": {"start": {"steps": [dict(step, request=request)]}}})
    assert message in caught.value.report()


def test_the_login_is_sent_again_like_a_get_after_429_or_no_answer(tmp_path):
    transport = FunctionTransport(Backend({}))
    Engine(load(tmp_path, {}), transport, VirtualClock(), Redactor()).connect({"settings": SETTINGS})
    login, whoami = transport.sent
    assert login.url.endswith("/login") and login.retry_safe and not whoami.retry_safe


def test_a_repeat_sent_to_another_host_after_a_lost_answer_may_be_already_done(tmp_path):
    hosts = {"connection": {"hosts": "{{ settings.url.split(',') | map('trim') | list }}",
                            "base_url": "{{ host }}/api/v1", "retries": 1}, "controls": {"start": START}}

    def cluster(request):
        if request.url.endswith("/login"):
            return answer(body={"token": "tok-123456"})
        if "/power" in request.url and request.url.startswith("https://a"):
            raise lost()  # host a ran it, perhaps, and went away
        if "/power" in request.url:
            return answer(409, {"error": {"message": "machine 1 already on"}})
        return answer()
    provider = Engine(load(tmp_path, hosts), FunctionTransport(cluster), VirtualClock(), Redactor())
    provider.connect({"settings": dict(SETTINGS, url="https://a, https://b")})
    assert provider.control({"id": "1", "control": "start"}) == {}


def test_a_lookup_that_cannot_tell_fails_the_call_and_never_sends_again(tmp_path):
    backend = Backend({"POST /machines/9/clone": [lost(), answer(202, {"vm_id": 42})],
                       "GET /machines": [answer(500, {"error": {"message": "list broken"}})]})
    with pytest.raises(BackendError, match="Connection aborted; not sent again: it may have taken effect, and the "
                                           "lookup that finds out could not tell .*list broken"):
        engine(tmp_path, {"methods": {"guests/clone": CLONE}}, backend).call("guests/clone", {"id": "9", "name": "h"})
    assert backend.sent.count("POST /machines/9/clone") == 1


def test_a_refused_repeat_looks_again_and_finds_the_first_attempt_that_ran_late(tmp_path):
    """The connection dropped before the backend answered; the first attempt ran after the lookup
    looked, and the repeat is refused because of it: the second look finds it, nothing else is sent."""
    backend = Backend({"POST /machines/9/clone": [lost(), answer(409, {"error": {"message": "name taken"}})],
                       "GET /machines": [answer(body={"items": []}), answer(body={"items": [{"id": 41}]})]})
    reply = engine(tmp_path, {"methods": {"guests/clone": CLONE}}, backend).call(
        "guests/clone", {"id": "9", "name": "host-1"})
    assert reply["clone_id"] == "41"
    assert backend.sent[-4:] == ["POST /machines/9/clone", "GET /machines", "POST /machines/9/clone", "GET /machines"]


def test_a_refused_repeat_the_second_look_does_not_explain_is_the_refusal(tmp_path):
    backend = Backend({"POST /machines/9/clone": [lost(), answer(409, {"error": {"message": "name taken"}})],
                       "GET /machines": [answer(body={"items": []}), answer(body={"items": []})]})
    with pytest.raises(BackendError, match="HTTP 409: name taken"):
        engine(tmp_path, {"methods": {"guests/clone": CLONE}}, backend).call("guests/clone", {"id": "9", "name": "h"})
    assert backend.sent.count("POST /machines/9/clone") == 2


def test_a_refusal_of_a_repeat_the_transport_made_is_not_looked_up(tmp_path):
    """A request whose connection never opened was not run: its refusal is just a refusal."""
    backend = Backend({"POST /machines/9/clone": [answer(409, {"error": {"message": "name taken"}}, resent=True)]})
    with pytest.raises(BackendError, match="HTTP 409: name taken"):
        engine(tmp_path, {"methods": {"guests/clone": CLONE}}, backend).call("guests/clone", {"id": "9", "name": "h"})
    assert "GET /machines" not in backend.sent
