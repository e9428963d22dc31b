"""Cassettes: scrubbing everywhere a secret can hide, replay of scrubbed recordings, ordered
answers for polled requests, and what a miss says."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from cpfmap.errors import CassetteError, ReplayMiss
from cpfmap.http.transport import FunctionTransport, HttpRequest, HttpResponse
from cpfmap.recording import cassette
from cpfmap.recording.cassette import RecordingTransport, ReplayTransport
from cpfmap.redact import Redactor

SECRET = "sup3r-s3cret-value"
ROOT_DATA = Path(__file__).parent / "data"
TICKET = "PVE:root@pam:ABCDEF::ticket-material"


def backend(request: HttpRequest) -> HttpResponse:
    if request.url.endswith("/login"):
        return HttpResponse(200, (("Content-Type", "application/json"), ("Set-Cookie", f"t={TICKET}")),
                            json.dumps({"data": {"ticket": TICKET}}).encode())
    return HttpResponse(200, (("Content-Type", "application/json"),), json.dumps({"echo": SECRET, "ok": 1}).encode())


def test_recording_scrubs_secrets_wherever_they_occur(tmp_path):
    redactor = Redactor()
    redactor.add(SECRET)
    path = tmp_path / "c.yaml"
    rec = RecordingTransport(FunctionTransport(backend), path, redactor)
    rec.send(HttpRequest("POST", "https://h/api/login", (("Content-Type", "application/x-www-form-urlencoded"),),
                         f"username=root&password={SECRET}".encode()))
    redactor.add(TICKET)  # learnt from the login reply, as the session does
    rec.send(HttpRequest("GET", f"https://h/api/vms?token={SECRET}&type=vm",
                         (("Authorization", f"Bearer {SECRET}"), ("Cookie", f"PVEAuthCookie={TICKET}"),
                          ("X-Trace", f"id-{SECRET}"))))
    rec.send(HttpRequest("POST", f"https://h/api/keys/{SECRET}", (("Content-Type", "application/json"),),
                         json.dumps({"key": SECRET, "nested": [{"pw": SECRET}], "n": 1}).encode()))
    rec.close()
    text = path.read_text()
    assert SECRET not in text and TICKET not in text and "ticket-material" not in text
    data = yaml.safe_load(text)
    first, second, third = data["interactions"]
    assert first["request"]["body"] == "username=root&password=%2A%2A%2A"
    assert json.loads(first["response"]["body"]["string"]) == {"data": {"ticket": "***"}}
    assert first["response"]["headers"]["Set-Cookie"] == ["***"]
    assert second["request"]["uri"] == "https://h/api/vms?token=%2A%2A%2A&type=vm"
    assert second["request"]["headers"]["Authorization"] == ["***"] and second["request"]["headers"]["X-Trace"] == ["id-***"]
    assert json.loads(third["request"]["body"]) == {"key": "***", "nested": [{"pw": "***"}], "n": 1}
    assert third["request"]["uri"] == "https://h/api/keys/***"
    # ...and the scrubbed cassette still replays the same requests
    replay = ReplayTransport(cassette.load(path))
    assert replay.send(HttpRequest("GET", "https://other-host:1/api/vms?type=vm&token=anything")).status == 200
    assert replay.send(HttpRequest("POST", "https://h/api/login", body=b"username=root&password=x")).status == 200


HAND = {"responses": [
    {"request": {"method": "GET", "path": "/tasks/7"},
     "responses": [{"json": {"s": "running"}}, {"json": {"s": "running"}}, {"json": {"s": "done"}}]},
    {"request": {"method": "GET", "path": "/jobs/1"}, "responses": [{"json": {"s": "a"}}, {"json": {"s": "b"}}],
     "repeat_last": True},
    {"request": {"method": "POST", "path": "/vms", "json": {"name": "x"}}, "response": {"status": 201, "json": {"id": 9}}},
]}


def states(replay, url, n):
    return [json.loads(replay.send(HttpRequest("GET", url)).body)["s"] for _ in range(n)]


def test_polled_requests_get_their_answers_in_order_and_repeat_only_when_allowed():
    replay = ReplayTransport(cassette.from_data(HAND))
    assert states(replay, "https://h/api/tasks/7", 3) == ["running", "running", "done"]
    with pytest.raises(ReplayMiss, match="every recorded answer for it was used already"):
        replay.send(HttpRequest("GET", "https://h/api/tasks/7"))
    assert states(replay, "https://h/api/jobs/1", 4) == ["a", "b", "b", "b"]


def test_hand_written_body_match_and_miss_diagnostic():
    replay = ReplayTransport(cassette.from_data(HAND))
    json_headers = (("Content-Type", "application/json"),)
    ok = replay.send(HttpRequest("POST", "https://h/api/vms", json_headers, b'{"name": "x"}'))
    assert ok.status == 201
    with pytest.raises(ReplayMiss) as info:
        replay.send(HttpRequest("POST", "https://h/api/vms", json_headers, b'{"name": "y"}'))
    assert "nearest: POST /vms (body differs)" in str(info.value)
    with pytest.raises(ReplayMiss) as info:
        replay.send(HttpRequest("GET", "https://h/api/taks/7"))
    assert "no recorded answer for GET /api/taks/7" in str(info.value) and "GET /tasks/7" in str(info.value)


@pytest.mark.parametrize("data,message", [
    ({"nothing": 1}, "not a cassette"),
    ({"responses": [{"request": {"path": "/x"}, "response": {}}]}, "responses[0] is malformed"),
    ({"interactions": [{"request": {}}]}, "interaction 0 is malformed"),
])
def test_malformed_cassettes_are_clear_errors(data, message):
    with pytest.raises(CassetteError, match=re.escape(message)):
        cassette.from_data(data)


def test_recording_writes_each_exchange_once_and_the_file_is_a_cassette_at_every_step(tmp_path, monkeypatch):
    scrubbed = []
    real = cassette.vcr_interaction
    monkeypatch.setattr(cassette, "vcr_interaction", lambda *a: scrubbed.append(1) or real(*a))
    path = tmp_path / "c.yaml"
    rec = RecordingTransport(FunctionTransport(backend), path, Redactor())
    for n in range(40):
        rec.send(HttpRequest("GET", f"https://h/api/vms/{n}"))
        # a crash now loses at most the exchange in flight: the earlier ones are a loadable cassette
        assert n == 0 or len(cassette.load(path).interactions) == n
    assert len(scrubbed) == 39          # each exchange scrubbed and written once, not the whole file each time
    rec.close()
    assert [r.path for r in cassette.load(path).interactions] == [f"/api/vms/{n}" for n in range(40)]
    assert list(yaml.safe_load(path.read_text())) == ["interactions", "version"]


def _recorded(tmp_path, body: bytes, content_type: str, fields=frozenset(), url="https://h/api/vm/100/config",
              public=frozenset()):
    def plain(request):
        return HttpResponse(200, (("Content-Type", content_type),), body)
    path = tmp_path / "c.yaml"
    rec = RecordingTransport(FunctionTransport(plain), path, Redactor(), fields, public)
    rec.send(HttpRequest("GET", url))
    rec.close()
    return path.read_text(), yaml.safe_load(path.read_text())["interactions"][0]


SECRET_FIELDS = [  # (body, content type, the values that must not be recorded)
    (json.dumps({"data": {"cipassword": "Hunter22", "name": "vm1", "api_key": "AK-77",
                          "auth": {"user": "u", "pw": "x"}, "disks": [{"secret": "S3"}]}}), "application/json",
     ["Hunter22", "AK-77", "S3"]),
    ("name=vm1&cipassword=Hunter22&client_secret=S3", "application/x-www-form-urlencoded", ["Hunter22", "S3"]),
    ("<r><name>vm1</name><ns:adminPassword a='1'>Hunter22</ns:adminPassword><accessKey>AK-77</accessKey></r>",
     "text/xml", ["Hunter22"]),
]


@pytest.mark.parametrize(("body", "content_type", "hidden"), SECRET_FIELDS)
def test_secret_named_fields_of_an_ordinary_reply_are_masked(tmp_path, body, content_type, hidden):
    text, _ = _recorded(tmp_path, body.encode(), content_type)
    assert "vm1" in text
    assert not [value for value in hidden if value in text]


def test_secret_named_query_values_are_masked(tmp_path):
    text, exchange = _recorded(tmp_path, b"{}", "application/json", url="https://h/api?api_key=AK-77&x=1")
    assert "AK-77" not in text and "x=1" in exchange["request"]["uri"]


def test_a_mapping_extends_the_secret_field_names(tmp_path):
    body = json.dumps({"rootpw_hint": "nothing", "vnc": "Hunter22"}).encode()
    assert "Hunter22" in _recorded(tmp_path, body, "application/json")[0]
    assert "Hunter22" not in _recorded(tmp_path, body, "application/json", frozenset({"vnc"}))[0]


def test_a_mapping_keeps_secret_looking_fields_it_names_public(tmp_path):
    """LXD's `auth: trusted` and EC2's tag `<key>` look secret by name and are not; a replay
    needs them. `secret_fields` wins for a name in both; private addresses are kept by default."""
    body = json.dumps({"auth": "trusted", "api_key": "AK-77", "privateIpAddress": "10.0.0.7"}).encode()
    masked = _recorded(tmp_path, body, "application/json")[0]
    assert "trusted" not in masked and "10.0.0.7" in masked
    kept = _recorded(tmp_path, body, "application/json", public=frozenset({"auth", "api_key"}))[0]
    assert "trusted" in kept and "AK-77" in kept
    both = _recorded(tmp_path, body, "application/json", frozenset({"auth"}), public=frozenset({"auth"}))[0]
    assert "trusted" not in both
    xml = b"<r><tagSet><item><key>Name</key><value>gold</value></item></tagSet></r>"
    assert "<key>Name</key>" in _recorded(tmp_path, xml, "text/xml", public=frozenset({"key"}))[0]


def test_secret_fields_come_from_the_mapping(tmp_path):
    from cpfmap.language import loader
    mapping = tmp_path / "m.yaml"
    text = (ROOT_DATA / "tiny.yaml").read_text().replace("connection:\n", "connection:\n  secret_fields: [VNC]\n", 1)
    mapping.write_text(text.replace("connection:\n", "connection:\n  public_fields: [Auth]\n", 1))
    assert loader.load(mapping).connection.secret_fields == frozenset({"vnc"})
    assert loader.load(mapping).connection.public_fields == frozenset({"auth"})


def test_an_object_under_a_secret_name_is_judged_member_by_member(tmp_path):
    """A login reply's `token` object holds the service catalog a replay needs; its own secrets
    are masked by name; names that only identify a credential (tokenid, token_type) are kept."""
    body = {"token": {"catalog": [{"url": "https://nova.test/v2.1"}], "expires_at": "2026-01-01",
                      "secret": "Hunter22"}, "tokenid": "ras", "token_type": "Bearer", "api_token": "tk-778"}
    text, _ = _recorded(tmp_path, json.dumps(body).encode(), "application/json")
    for kept in ("https://nova.test/v2.1", "2026-01-01", "ras", "Bearer"):
        assert kept in text
    assert "Hunter22" not in text and "tk-778" not in text


def test_pack_verify_refuses_a_recording_that_shows_a_secret_named_field(tmp_path):
    from cpfmap.language import loader
    from cpfmap.packaging import verify
    _recorded(tmp_path, b'{"server": {"id": "s1"}}', "application/json")
    path = tmp_path / "c.yaml"
    mapping = loader.load(ROOT_DATA / "tiny.yaml")
    assert verify.clear_secret_findings(mapping, path) == []
    data = yaml.safe_load(path.read_text())   # as a recording made before masking by name
    data["interactions"][0]["response"]["body"]["string"] = '{"server": {"id": "s1", "adminPass": "MaD8"}}'
    path.write_text(cassette.dump(data["interactions"]))
    [finding] = verify.clear_secret_findings(mapping, path)
    assert "#0" in finding.message and "secret-named field" in finding.message


SHIPPED = sorted((ROOT_DATA.parent.parent / "mappings").glob("*/recordings/*/*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parents[2].name}/{p.parent.name}/{p.stem}" for p in SHIPPED])
def test_no_shipped_recording_shows_a_secret_named_field(path):
    from cpfmap.language import loader
    from cpfmap.packaging import verify
    pack, variant = path.parents[2].name, path.parent.name
    mapping = loader.load(pack if variant == "default" else f"{pack}:{variant}")
    assert verify.clear_secret_findings(mapping, path) == []
