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

RECORDINGS = sorted((ROOT / "cpfmap" / "packs").glob("*/recordings/*/*.jsonl"))


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


@pytest.mark.parametrize("session", RECORDINGS, ids=[f"{p.parent.name}/{p.stem}" for p in RECORDINGS])
def test_shipped_recording_replays_without_errors(session):
    pack = session.parents[2]
    mapping = str(pack / ("mapping.yaml" if session.parent.name == "default" else f"{session.parent.name}.yaml"))
    proc = subprocess.run([sys.executable, str(CONNECTOR), "dry-run", mapping, "--cassette",
                           str(session.with_suffix(".yaml")), "--session", str(session), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    entries = json.loads(proc.stdout)
    assert entries and all("result" in e["reply"] for e in entries)


def test_dry_run_reports_a_replay_miss_with_the_nearest_request(tmp_path):
    session = tmp_path / "s.jsonl"
    session.write_text('{"method":"provider/connect","params":{"settings":{"host":"h","username":"u",'
                       '"token_name":"t","token_secret":"s3cret-value"}}}\n{"method":"guests/snapshots/exists","params":{"id":"101","name":"v1"}}\n')
    cassette = ROOT / "cpfmap/packs/proxmox-ve/recordings/default/inventory.yaml"
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
    path = ROOT / "cpfmap/packs/proxmox-ve/recordings/default/create-host.yaml"
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
