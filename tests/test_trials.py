"""What the new-user trials of issue 19 found ("Found by the same trials"), one test each."""
from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT

from cpfmap.clock import VirtualClock
from cpfmap.http.transport import FunctionTransport, HttpResponse
from cpfmap.language import loader
from cpfmap.language.expressions import Matcher, Rule, Table
from cpfmap.redact import Redactor
from cpfmap.runtime.session import Backend

TINY = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text(encoding="utf-8"))
SETTINGS = {"url": "https://hv.example.test", "user": "ras-app", "password": "pw-123456", "page_size": 2, "verify": True}


def write(tmp_path, patch: dict):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(loader.merge(json.loads(json.dumps(TINY)), patch), sort_keys=False), encoding="utf-8")
    return path


def reply(status: int, body: dict) -> HttpResponse:
    return HttpResponse(status, (("Content-Type", "application/json"),), json.dumps(body).encode())


def test_login_public_covers_the_refresh_exchange(tmp_path):
    """After a refresh, client_id, token_type and scope were shown as *** (the refresh had no public list)."""
    login = {"request": {"method": "POST", "path": "/oauth/token",
                         "form": {"grant_type": "client_credentials", "client_id": "{{ settings.user }}",
                                  "client_secret": "{{ settings.password }}"}},
             "extract": {"token": "access_token", "refresh": "refresh_token"},
             "public": ["client_id", "token_type", "scope"]}
    refresh = {"request": {"method": "POST", "path": "/oauth/token",
                           "form": {"grant_type": "refresh_token", "client_id": "{{ settings.user }}",
                                    "refresh_token": "{{ auth.refresh }}"}}}
    mapping = loader.load(write(tmp_path, {"auth": [{"type": "session", "login": login, "refresh": refresh,
                                                     "inject": {"headers": {"Authorization": "Bearer {{ auth.token }}"}}}]}))
    answers = iter([reply(200, {"access_token": "at-first-123", "refresh_token": "rt-first-123",
                                "token_type": "bearer-type", "scope": "vm.read"}),
                    reply(200, {"access_token": "at-second-123", "token_type": "bearer-type", "scope": "vm.read"})])
    backend = Backend(mapping, FunctionTransport(lambda request: next(answers)), VirtualClock(), Redactor(), SETTINGS)
    backend.login()
    backend.login(renew=True)
    shown = backend.redactor("client ras-app, bearer-type, scope vm.read; at-second-123 rt-first-123 pw-123456")
    assert shown.startswith("client ras-app, bearer-type, scope vm.read;"), shown
    assert "at-second-123" not in shown and "rt-first-123" not in shown and "pw-123456" not in shown


@pytest.mark.parametrize("kind", ["link_header", "next_link"])
def test_a_followed_link_does_not_get_the_steps_query_again(tmp_path, kind):
    paginate = {"type": kind, "items": "items"} | ({"cursor": "next"} if kind == "next_link" else {})
    mapping = loader.load(write(tmp_path, {"methods": {"guests/list": {
        "steps": [{"request": {"method": "GET", "path": "/machines", "query": {"kind": "vm"}},
                   "paginate": paginate, "extract": {"ids": "string_ids([].id)"}}],
        "result": {"guests": "{{ ids }}"}}}}))
    backend = Backend(mapping, None, VirtualClock(), Redactor(), SETTINGS)
    spec = mapping.methods["guests/list"].steps[0].request
    link = "https://hv.example.test/api/v1/machines?kind=vm&page=2"
    assert backend.target(spec, {}, url=link) == link
    assert backend.target(spec, {}).endswith("/machines?kind=vm")


def test_a_dotted_rule_key_reads_a_nested_member():
    table = Table("t", "guest_state", (), (Rule((("transition.kind", Matcher(values=("starting",))),), "powering_on"),),
                  "powered_off")
    assert table.translate({"transition": {"kind": "starting"}}) == "powering_on"
    assert table.translate({"transition": {"kind": "none"}}) == "powered_off"
    assert table.translate({"transition.kind": "starting"}) == "powering_on"   # an exact member name wins


def test_a_setting_in_a_template_that_failed_to_compile_is_not_reported_unused(tmp_path):
    path = write(tmp_path, {"settings": {"zone": {"type": "string"}},
                            "connection": {"headers": {"X-Zone": "{{ settings.zone | }}"}}})
    findings = [f.format() for f in loader.check(path)]
    assert any("template syntax" in f for f in findings)
    assert not any("`zone` is never used" in f for f in findings), findings


def test_explain_shows_every_form_field_and_where_values_come_from(tmp_path):
    from cpfmap.authoring.explain import explain
    mapping = loader.load(write(tmp_path, {"controls": {"start": {"steps": [
        {"name": "the vm", "request": {"method": "GET", "path": "/machines/{{ params.id }}"}, "extract": {"vm": "@"}},
        {"set": {"x": {"jmespath": "vm.id"}, "call": {"node": "{{ vm.node }}", "fixed": "on"}}},
        {"request": {"method": "POST", "path": "/power", "form": {"name": {"jmespath": "vm.name"}, "id": "{{ x }}",
                                                                   "node": "{{ call.node }}", "fixed": "{{ call.fixed }}"}}},
    ]}}}))
    text = "\n".join(explain(mapping, "guests/control", {"id": "5", "control": "start"}, dict(SETTINGS)))
    body = next(line for line in text.splitlines() if "body:" in line and "name=" in line)
    for field in ("name=", "id=", "node=", "fixed=on"):
        assert field in body, text   # a value from an earlier reply is shown as where it comes from, never dropped
    assert "sets x = <x, computed in step 2 from vm>" in text, text
    assert "from step 2" not in text, text   # a step is never shown as its own source


def test_under_record_a_session_lives_in_real_time_not_one_second_per_request(tmp_path):
    """78 token refreshes for 81 requests: the ttl ran on record's logical clock."""
    from cpfmap.clock import LogicalClock
    mapping = loader.load(write(tmp_path, {}))   # tiny: session login, ttl 600
    logins = []

    def answer(request):
        if request.url.endswith("/login"):
            logins.append(request)
            return reply(200, {"token": f"tok-{len(logins):06d}"})
        return reply(200, {"user": "admin"})
    for clock, expected in ((LogicalClock(sleep=lambda s: None), 1), (LogicalClock(), 1)):
        logins.clear()
        backend = Backend(mapping, FunctionTransport(answer), clock, Redactor(), SETTINGS)
        backend.login()
        whoami = mapping.methods["provider/connect"].steps[0].request
        for _ in range(1500):          # 1,500 CPF requests: 1,500 logical seconds, well past the ttl
            clock.advance()
            backend.send(whoami, {"settings": SETTINGS})
        assert len(logins) == expected, (clock, len(logins))

