"""The tutorial, end to end: tinyvisor runs, and its mapping passes the conformance runner,
records and replays, and answers the calls the README shows."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from conftest import CONNECTOR, ROOT

sys.path.insert(0, str(ROOT / "examples" / "tutorial"))
import tinyvisor  # noqa: E402

MAPPING = "examples/tutorial/mapping.yaml"


@pytest.fixture
def hypervisor(tmp_path):
    server = tinyvisor.make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"url": url, "user": "admin", "password": "tiny-secret", "page_size": "2"}))
    yield url, settings
    server.shutdown()


def connector(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CONNECTOR), *args], input=data, capture_output=True, timeout=300,
                          cwd=ROOT)


def test_tutorial_mapping_passes_the_conformance_runner_twice_on_the_same_hypervisor(hypervisor):
    _, settings = hypervisor
    for _ in range(2):  # the first run puts back what it changed (template, snapshot)
        proc = connector("conformance", MAPPING, "--settings", str(settings), "--guest", "101",
                         "--template-source", "103", "--time-scale", "0")
        out = proc.stdout.decode()
        assert proc.returncode == 0, out + proc.stderr.decode()
        assert "maintenance" in out and "FAIL" not in out
        assert "DONE  undone: guest 103 made a template" in out
        assert "PASS  create-template" in proc.stderr.decode()  # progress, as each workflow ends


def test_tutorial_calls(hypervisor):
    _, settings = hypervisor
    proc = connector("call", MAPPING, "guests/list", "--settings", str(settings), "-v")
    lines = proc.stdout.decode().splitlines()
    assert sum("/machines?offset=" in line for line in lines) == 3
    assert json.loads("\n".join(lines[lines.index("{"):]))["result"]["guests"] == ["101", "102", "103", "104"]
    get = json.loads(connector("call", MAPPING, "guests/get", "--param", "id=101", "--settings", str(settings)).stdout)
    assert get["result"] == {"id": "101", "name": "web-01", "state": "powered_on",
                             "mac_addresses": ["52:54:00:00:00:65"], "ip_addresses": ["192.0.2.101"],
                             "is_template": False}
    no_agent = json.loads(connector("call", MAPPING, "guests/get", "--param", "id=104", "--settings",
                                    str(settings)).stdout)
    assert no_agent["result"]["ip_addresses"] == []


def test_tutorial_record_then_dry_run(hypervisor, tmp_path):
    url, settings = hypervisor
    session = (ROOT / "examples/tutorial/session.jsonl").read_text().replace("http://127.0.0.1:8780", url)
    cassette = tmp_path / "tinyvisor.yaml"
    kept = tmp_path / "kept.jsonl"
    live = connector("record", MAPPING, "--cassette", str(cassette), "--session", str(kept), data=session.encode())
    assert live.returncode == 0
    for text in (cassette.read_text(), kept.read_text()):
        assert "tiny-secret" not in text and "Bearer" not in text
    session_file = tmp_path / "session.jsonl"
    session_file.write_text(session)
    dry = connector("dry-run", MAPPING, "--cassette", str(cassette), "--session", str(session_file))
    assert dry.returncode == 0, dry.stdout.decode()
    assert "0 caused by replay misses" in dry.stdout.decode()
    compared = connector("dry-run", MAPPING, "--cassette", str(cassette), "--session", str(kept))
    assert compared.returncode == 0 and f"all {len(session.splitlines())} recorded replies reproduced" in \
        compared.stdout.decode(), compared.stdout.decode()
    replayed = connector("serve", MAPPING, "--replay", str(cassette), data=session.encode())
    assert replayed.stdout == live.stdout
