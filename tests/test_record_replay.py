"""Recording and replay: a live session against fakepve, replayed with the backend stopped,
gives byte-identical replies; the cassette holds none of the session's secrets; shipped
recordings replay; cassettes load in vcrpy."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CONNECTOR, ROOT
from pve import PASSWORD, TOKEN_SECRET, ServedPve, cluster

RECORDINGS = sorted((ROOT / "mappings").glob("*/recordings/*/*.jsonl"))


def session_lines(pve, auth: str) -> bytes:
    lines = [{"method": "provider/initialize"}, {"method": "provider/connect", "params": {"settings": pve.settings(auth=auth)}},
             {"method": "guests/list"}, {"method": "guests/get", "params": {"id": "101"}},
             {"method": "guests/get", "params": {"id": "102"}},
             {"method": "guests/control", "params": {"id": "101", "control": "suspend"}},
             {"method": "guests/get", "params": {"id": "101"}},
             {"method": "guests/snapshots/create", "params": {"id": "103", "name": "RAS_TEMPLATE_VERSION_1"}},
             {"method": "guests/convert", "params": {"id": "103", "is_template": True}},
             {"method": "guests/clone", "params": {"id": "103", "name": "VDI-9", "snapshot": "RAS_TEMPLATE_VERSION_1"}},
             {"method": "guests/snapshots/exists", "params": {"id": "103", "name": "RAS_TEMPLATE_VERSION_1"}},
             {"method": "guests/get", "params": {"id": "999"}},
             {"method": "provider/disconnect"}]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def run(*args: str, data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CONNECTOR), *args], input=data, capture_output=True, timeout=120,
                          cwd=ROOT)


@pytest.mark.parametrize("auth", ["token", "password"])
def test_round_trip_is_byte_identical_and_secret_free(tmp_path, auth):
    served = ServedPve()
    cluster(served.pve)
    cassette = tmp_path / "session.yaml"
    try:
        data = session_lines(served, auth)
        live = run("record", "proxmox-ve", "--cassette", str(cassette), data=data)
    finally:
        served.stop()
    assert live.returncode == 0, live.stderr.decode()
    replayed = run("serve", "proxmox-ve", "--replay", str(cassette), data=data)
    assert replayed.returncode == 0
    assert replayed.stdout == live.stdout
    text = cassette.read_text()
    for secret in (TOKEN_SECRET, PASSWORD, *served.pve.tickets, *(t["csrf"] for t in served.pve.tickets.values())):
        assert secret not in text
    assert "***" in text
    assert all("error" not in json.loads(line) or "999" in line for line in live.stdout.decode().splitlines())


@pytest.mark.parametrize("session", RECORDINGS, ids=[f"{p.parents[2].name}/{p.parent.name}/{p.stem}" for p in RECORDINGS])
def test_shipped_recording_reproduces_every_live_reply(session):
    """A change in the engine that alters any reply of a shipped recording fails here."""
    proc = subprocess.run([sys.executable, str(CONNECTOR), "dry-run", mapping_of(session), "--cassette",
                           str(session.with_suffix(".yaml")), "--session", str(session), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    entries = json.loads(proc.stdout)
    assert entries and all("result" in e["reply"] for e in entries)
    assert all(e["recorded_reply"] is not None for e in entries), "re-record: python tools/record_pve.py / record_openstack.py"
    assert [e["differs"] for e in entries] == [None] * len(entries)


def mapping_of(session) -> str:
    pack = session.parents[2]
    return str(pack / ("mapping.yaml" if session.parent.name == "default" else f"{session.parent.name}.yaml"))


def test_shipped_recordings_stay_plain_request_input():
    """serve --replay takes a shipped session as RAS would send it (the recorded replies ride
    along in a member the server ignores) and answers exactly the recorded replies."""
    session = ROOT / "mappings/proxmox-ve/recordings/default/create-host.jsonl"
    data = session.read_bytes()
    served = run("serve", "proxmox-ve", "--replay", str(session.with_suffix(".yaml")), data=data)
    recorded = [json.loads(line)["recorded"]["reply"] for line in data.decode().splitlines()]
    assert [json.loads(line) for line in served.stdout.decode().splitlines()] == recorded


def test_pack_verify_reports_a_reply_the_replay_does_not_reproduce(tmp_path):
    from cpfmap.language import loader
    from cpfmap.packaging import verify
    shipped = ROOT / "mappings/proxmox-ve/recordings/default/inventory"
    lines = [json.loads(line) for line in shipped.with_suffix(".jsonl").read_text().splitlines()]
    mapping = loader.load("proxmox-ve")
    session = tmp_path / "inventory.jsonl"
    (tmp_path / "inventory.yaml").write_bytes(shipped.with_suffix(".yaml").read_bytes())
    session.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert verify.replay_findings(mapping, session) == []
    listed = next(n for n, line in enumerate(lines, 1) if line["method"] == "guests/list")
    lines[listed - 1]["recorded"]["reply"]["result"]["guests"].append("999")
    session.write_text("".join(json.dumps(line) + "\n" for line in lines))
    [finding] = verify.replay_findings(mapping, session)
    assert finding.line == listed
    assert "(guests/list): the replay does not reproduce the recorded reply: reply.result.guests:" in finding.message


def test_dry_run_reports_a_replay_miss_with_the_nearest_request(tmp_path):
    session = tmp_path / "s.jsonl"
    session.write_text('{"method":"provider/connect","params":{"settings":{"host":"h","username":"u",'
                       '"token_name":"t","token_secret":"s3cret-value"}}}\n{"method":"guests/snapshots/exists","params":{"id":"101","name":"v1"}}\n')
    cassette = ROOT / "mappings/proxmox-ve/recordings/default/inventory.yaml"
    proc = subprocess.run([sys.executable, str(CONNECTOR), "dry-run", "proxmox-ve", "--cassette", str(cassette),
                           "--session", str(session)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "REPLAY MISS" in proc.stdout and "1 caused by replay misses" in proc.stdout
    assert "replay miss: no recorded answer for GET /api2/json/nodes/pve1/qemu/101/snapshot" in proc.stdout
    assert "nearest: GET /api2/json/nodes/pve1/qemu/101/" in proc.stdout
    assert "s3cret-value" not in proc.stdout + proc.stderr


def test_our_cassettes_load_in_vcrpy():
    import vcr
    from vcr.persisters.filesystem import FilesystemPersister
    from vcr.serializers import yamlserializer
    path = ROOT / "mappings/proxmox-ve/recordings/default/create-host.yaml"
    requests, responses = FilesystemPersister.load_cassette(str(path), yamlserializer)
    assert len(requests) == len(responses) > 5
    assert requests[0].method == "GET" and responses[0]["status"]["code"] == 200
    del vcr


def test_a_cassette_recorded_by_vcrpy_replays_here(tmp_path):
    import threading

    import requests
    import vcr

    sys.path.insert(0, str(ROOT / "examples" / "tutorial"))
    import tinyvisor
    server = tinyvisor.make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    path = tmp_path / "vcrpy.yaml"
    try:
        with vcr.use_cassette(str(path), filter_headers=["authorization"]):
            token = requests.post(url + "/login", json={"user": "admin", "password": "tiny-secret"}).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            requests.get(url + "/whoami", headers=auth)
            requests.get(url + "/machines", params={"offset": 0, "limit": 20}, headers=auth)
            requests.get(url + "/machines/102", headers=auth)
            requests.get(url + "/machines/102/addresses", headers=auth)
    finally:
        server.shutdown()
    settings = json.dumps({"url": url.rsplit("/api/v1", 1)[0], "user": "admin", "password": "tiny-secret"})
    session = (f'{{"method":"provider/connect","params":{{"settings":{settings}}}}}\n'
               '{"method":"guests/list"}\n{"method":"guests/get","params":{"id":"102"}}\n').encode()
    proc = run("serve", "examples/tutorial/mapping.yaml", "--replay", str(path), data=session)
    replies = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert replies[1]["result"]["guests"] == ["101", "102", "103", "104"], replies
    assert replies[2]["result"]["name"] == "web-02"


def test_dry_run_compares_its_replies_with_the_ones_record_kept(tmp_path):
    served = ServedPve()
    cluster(served.pve)
    cassette, session = tmp_path / "live.yaml", tmp_path / "live.jsonl"
    try:
        data = session_lines(served, "token")
        live = run("record", "proxmox-ve", "--cassette", str(cassette), "--session", str(session), data=data)
    finally:
        served.stop()
    assert live.returncode == 0, live.stderr.decode()
    kept = [json.loads(line) for line in session.read_text().splitlines()]
    assert [k["recorded"]["reply"] for k in kept] == [json.loads(line) for line in live.stdout.decode().splitlines()]
    assert TOKEN_SECRET not in session.read_text()
    proc = run("dry-run", "proxmox-ve", "--cassette", str(cassette), "--session", str(session), data=b"")
    assert proc.returncode == 0 and f"all {len(kept)} recorded replies reproduced" in proc.stdout.decode()

    # a replay that does not reproduce the live session says where, and what explains it
    get_102 = next(k for k in kept if k.get("params") == {"id": "102"})
    get_102["recorded"]["reply"]["result"]["name"] = "renamed-live"
    get_102["recorded"]["http"] = [0]
    session.write_text("".join(json.dumps(k) + "\n" for k in kept))
    proc = run("dry-run", "proxmox-ve", "--cassette", str(cassette), "--session", str(session), data=b"")
    out = proc.stdout.decode()
    assert proc.returncode == 1
    assert 'DIFFERS from the recorded reply at reply.result.name: recorded "renamed-live", replayed "Win11' in out
    assert "because the live session was answered by recorded exchanges #0 GET /api2/json/version; the replay by #" in out
    assert f"1 of {len(kept)} recorded replies differ" in out


def test_difference_names_the_first_path_and_treats_scrubbed_values_as_wildcards():
    from cpfmap.recording.transcript import difference
    assert difference({"result": {"a": "x-***"}}, {"result": {"a": "x-secret"}}) is None
    assert difference({"result": [1, 2]}, {"result": [1, 3]}) == "reply.result[1]: recorded 2, replayed 3"
    assert difference({"result": {}}, {"error": {"code": 1}}) == "reply.result: missing in the replay"


def test_recorded_session_masks_secret_settings_even_when_connect_fails(tmp_path):
    import io

    from cpfmap.protocol.rpc import Server
    from cpfmap.recording.transcript import RecordingServer
    from cpfmap.redact import Redactor

    def connect(params):
        raise ValueError("bad port")
    out = io.StringIO()
    server = RecordingServer(Server({"provider/connect": connect}, Redactor()), out, [], ("token_secret",),
                             ("auth_url", "port"))
    settings = {"token_secret": "abc-12345", "port": "x", "auth_url": "https://h/v3", "api_key": "k-12345"}
    server.handle_line(json.dumps({"method": "provider/connect", "params": {"settings": settings}}))
    line = json.loads(out.getvalue())
    # secret by declaration or (undeclared) by name; a declared public setting stays, so the session replays
    assert line["params"]["settings"] == {"token_secret": "***", "port": "x", "auth_url": "https://h/v3",
                                          "api_key": "***"}
    assert line["recorded"]["reply"]["error"]["code"] == -32603 and line["recorded"]["http"] == []


def test_a_replay_that_caches_differently_from_the_live_session_says_where_and_why(tmp_path):
    """Live, the cached list had expired between two polls (two GETs); a replay on a clock that
    does not move answers the second from its cache: the transcript must say so, not pass."""
    import yaml
    mapping = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
    mapping["methods"]["guests/list"]["steps"] = [{"request": {"method": "GET", "path": "/machines"}, "cache": 30,
                                                   "extract": {"ids": "string_ids(items[].id)"}}]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    page = lambda ids: {"json": {"items": [{"id": i} for i in ids], "total": len(ids)}}  # noqa: E731
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"responses": [
        {"request": {"method": "POST", "path": "/api/v1/login"}, "response": {"json": {"token": "tok-12345"}}},
        {"request": {"method": "GET", "path": "/api/v1/whoami"}, "response": {"json": {}}},
        {"request": {"method": "GET", "path": "/api/v1/machines"}, "responses": [page([1]), page([1, 2])]}]}))
    settings = {"url": "http://h", "user": "u", "password": "pw-12345"}
    lines = [{"request": {"method": "provider/connect", "params": {"settings": settings}}, "reply": {"result": {}},
              "http": [0, 1]},
             {"request": {"method": "guests/list"}, "reply": {"result": {"guests": ["1"]}}, "http": [2]},
             {"request": {"method": "guests/list"}, "reply": {"result": {"guests": ["1", "2"]}}, "http": [3]}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    proc = run("dry-run", str(tmp_path / "m.yaml"), "--cassette", str(tmp_path / "c.yaml"),
               "--session", str(tmp_path / "s.jsonl"), data=b"")
    out = proc.stdout.decode()
    assert proc.returncode == 1, out + proc.stderr.decode()
    assert 'DIFFERS from the recorded reply at reply.result.guests: recorded ["1", "2"], replayed ["1"]' in out
    assert "the live session was answered by recorded exchanges #3 GET /api/v1/machines; the replay by none" in out
    assert "1 recorded HTTP exchanges were never asked for (first: #3 GET /api/v1/machines)" in out
    assert "note: the mapping caches replies (`cache`)" in out
    assert "1 of 3 recorded replies differ" in out


def test_readme_quick_start_dry_run_says_what_the_readme_says():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    command = block.split("&&", 1)[1].split()
    assert command[:2] == ["python3", "connector.py"]
    proc = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=120, cwd=ROOT)
    promised = readme.split(block, 1)[1].split("ends with `", 1)[1].split("`", 1)[0]
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith(" ".join(promised.split())), proc.stdout[-500:]
