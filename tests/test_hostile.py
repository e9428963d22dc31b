"""Hostile and broken inputs around the serve process: every request still gets one clear
JSON reply, nothing exits early, nothing leaks a traceback."""
from __future__ import annotations

from conftest import serve_session

INIT = {"method": "provider/initialize"}
LIST = {"method": "guests/list", "id": 2}


def test_log_file_in_a_missing_folder_is_created(tmp_path):
    log = tmp_path / "logs" / "deeper" / "provider.log"
    replies, err, code = serve_session("proxmox-ve", [INIT], "--log-file", str(log))
    assert "result" in replies[0] and code == 0, err
    assert "provider/initialize" in log.read_text()


def test_a_log_file_that_cannot_be_written_is_reported_and_serving_goes_on(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    replies, err, code = serve_session("proxmox-ve", [INIT], "--log-file", str(blocker / "provider.log"))
    assert "result" in replies[0] and code == 0
    assert "cannot write the log file" in err and "Traceback" not in err


def _assert_every_request_refused(replies, err, code, text):
    assert code == 0 and len(replies) == 2 and replies[1]["id"] == 2
    for reply in replies:
        assert reply["error"]["code"] == 1 and text in reply["error"]["message"], reply
    assert "Traceback" not in err


def test_a_corrupt_cassette_answers_every_request_with_why(tmp_path):
    corrupt = tmp_path / "corrupt.yaml"
    corrupt.write_text("interactions:\n  - request: {method: 7, uri: [}\n")
    replies, err, code = serve_session("proxmox-ve", [INIT, LIST], "--replay", str(corrupt))
    _assert_every_request_refused(replies, err, code, "corrupt.yaml")


def test_a_malformed_cassette_answers_every_request_with_why(tmp_path):
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("interactions:\n  - request: {method: 7, uri: /x}\n    response: {status: {code: 200}}\n")
    replies, err, code = serve_session("proxmox-ve", [INIT, LIST], "--replay", str(malformed))
    _assert_every_request_refused(replies, err, code, "malformed")


def test_a_missing_cassette_answers_every_request_with_why(tmp_path):
    replies, err, code = serve_session("proxmox-ve", [INIT, LIST], "--replay", str(tmp_path / "nope.yaml"))
    _assert_every_request_refused(replies, err, code, "nope.yaml")


def test_record_into_an_unwritable_path_answers_every_request_with_why(tmp_path):
    import subprocess
    import sys
    from conftest import CONNECTOR
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = subprocess.run([sys.executable, str(CONNECTOR), "record", "proxmox-ve", "--cassette",
                           str(blocker / "c.yaml")], input=b'{"method":"provider/initialize"}\n{"method":"guests/list","id":2}\n',
                          capture_output=True, timeout=60)
    import json
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    _assert_every_request_refused(replies, proc.stderr.decode(), proc.returncode, "cannot write the cassette")
