"""Hostile and broken inputs around the serve process: every request still gets one clear
JSON reply, nothing exits early, nothing leaks a traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONNECTOR, serve_session

from cpfmap import resources
from cpfmap.cli.commands import _settings_file
from cpfmap.errors import BackendError, CpfmapError, MappingError
from cpfmap.language import loader
from cpfmap.language.source import MAX_BYTES
from cpfmap.language.templating import Templates
from cpfmap.recording import cassette

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
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = subprocess.run([sys.executable, str(CONNECTOR), "record", "proxmox-ve", "--cassette",
                           str(blocker / "c.yaml")], input=b'{"method":"provider/initialize"}\n{"method":"guests/list","id":2}\n',
                          capture_output=True, timeout=60)
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    _assert_every_request_refused(replies, proc.stderr.decode(), proc.returncode, "cannot write the cassette")


# ------------------------------------------------------------ YAML and files

TINY = (Path(__file__).parent / "data" / "tiny.yaml").read_text()


def alias_bomb(levels: int = 7) -> str:  # 9**7 values once expanded: past the limit, yet finite
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels + 1):
        refs = ", ".join([f"*a{n - 1}"] * 9)
        lines.append(f"a{n}: &a{n} [{refs}]")
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "alias bomb": (alias_bomb(), "alias bomb"),
    "self-referring alias": ("x: &x [1, *x]\n", "refers to itself"),
    "deep nesting": ("x: " + "[" * 600 + "]" * 600 + "\n", "levels deep"),
    "deep block nesting": ("".join("  " * n + f"k{n}:\n" for n in range(150)) + "  " * 150 + "v: 1\n", "levels deep"),
}


@pytest.mark.parametrize("name", HOSTILE_YAML)
def test_hostile_yaml_in_a_mapping_is_refused_clearly(tmp_path, name):
    text, message = HOSTILE_YAML[name]
    path = tmp_path / "m.yaml"
    path.write_text(TINY + "\nfragments:\n  bomb:\n" + "".join("    " + line + "\n" for line in text.splitlines()))
    with pytest.raises(MappingError, match=message):
        loader.load(path)
    assert any(message in f.message for f in loader.check(path))


@pytest.mark.parametrize("name", HOSTILE_YAML)
def test_hostile_yaml_in_a_cassette_is_refused_clearly(tmp_path, name):
    text, message = HOSTILE_YAML[name]
    path = tmp_path / "c.yaml"
    path.write_text("interactions: []\nversion: 1\n" + text)
    with pytest.raises(CpfmapError, match=message):
        cassette.load(path)


def test_an_alias_bomb_in_a_served_mapping_gets_a_reply(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(TINY + "\nfragments:\n  bomb:\n" + "".join("    " + line + "\n" for line in alias_bomb().splitlines()))
    replies, err, code = serve_session(str(path), [INIT])
    assert replies[0]["error"]["code"] == 1 and "alias bomb" in replies[0]["error"]["message"] and code == 0


@pytest.mark.parametrize("what", ["mapping", "cassette"])
def test_a_file_over_the_size_limit_is_refused(tmp_path, monkeypatch, what):
    monkeypatch.setitem(MAX_BYTES, what, 1000)
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * 2000 + "\n" + TINY)
    load = loader.load if what == "mapping" else cassette.load
    with pytest.raises(CpfmapError, match=f"larger than 1000 bytes .the limit for a {what}"):
        load(path)


@pytest.mark.parametrize("key", ["on", "off", "yes", "no", "On", "NO", "true", "false"])
def test_yaml_1_1_boolean_table_keys_stay_what_the_author_wrote(tmp_path, key):
    data = yaml.safe_load(TINY)
    data.setdefault("tables", {})["power"] = {"map": {"__KEY__": "running"}, "default": "stopped"}
    data["settings"]["__KEY__"] = {"type": "string"}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data).replace("__KEY__", key))
    mapping = loader.load(path)
    assert mapping.tables["power"].translate(key) == "running"
    assert loader.read(path).data["settings"].keys() >= {key}


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside.yaml", "../../../../../../../../etc/hostname"])
def test_extends_outside_the_pack_is_refused_without_reading_it(tmp_path, target):
    outside = tmp_path / "outside.yaml"
    outside.write_text("secret-content: do-not-echo\n")
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "mapping.yaml").write_text(f"extends: {target}\n" + TINY)
    findings = loader.check(pack)
    text = "\n".join(f.format() for f in findings)
    assert "outside the pack's folder" in text and "do-not-echo" not in text and "root:" not in text


def test_extends_inside_the_pack_and_of_a_bundled_pack_still_work(tmp_path):
    pack = tmp_path / "pack"
    (pack / "base").mkdir(parents=True)
    (pack / "base" / "base.yaml").write_text(TINY)
    (pack / "mapping.yaml").write_text("extends: base/base.yaml\nmetadata: {name: child}\n")
    assert loader.load(pack).name == "child"
    bundled = resources.bundled_packs_dir() / "proxmox-ve" / "mapping.yaml"
    (pack / "variant.yaml").write_text(f"extends: {bundled}\nmetadata: {{name: variant}}\n")
    assert loader.load(pack / "variant.yaml").name == "variant"


# ---------------------------------------------------- nothing runs at load time

def test_templates_run_no_filter_while_they_compile():
    calls = []
    templates = Templates({"spy": lambda value, *args: calls.append(value) or value})
    for source in ["{{ 'x' | spy }}", "a {{ 'x' | spy | upper }}", "{{ 'y' | spy('(a+)+$') }}",
                   "{% if 'z' | spy %}z{% endif %}", "/p/{{ 'w' | spy }}"]:
        templates.compile(source, "where", path=source.startswith("/"))
    assert calls == []


@pytest.mark.parametrize("source", ["{{ 'a' * 1000000 }}", "x{{ 'ab' * 500000 }}", "{{ 'a' | center(1000000) }}",
                                    "{{ 9 ** 100000 }}"])
def test_constant_expressions_are_not_folded_at_load(source):
    code = Templates().text.compile(source, raw=True)
    assert len(code) < 20000  # the expression, not its million-character value


@pytest.mark.parametrize("source", ["{{ 'a' * 10000000 }}", "{{ [0] * 10000000 }}", "{{ 7 ** 100000 }}"])
def test_huge_repeats_and_powers_are_refused_when_rendered(source):
    with pytest.raises(BackendError, match="would build more than|exponent over"):
        Templates().compile(source, "where").render({})


def test_record_session_file_survives_hostile_lines_and_masks_secret_named_settings(tmp_path):
    session = tmp_path / "s.jsonl"
    connect = {"method": "provider/connect", "params": {"settings": {
        "host": "127.0.0.1", "port": "1", "username": "u@pam", "token_name": "t", "token_secret": "s3cret-value-1",
        "extra_api_key": "k-undeclared-7777"}}}
    lines = [b"[" * 3000, b'{"method": "provider/initialize", "id": NaN}', b'{"method": "provider/initialize", "id": 1e400}',
             json.dumps(connect).encode(), b'{"method": "provider/initialize", "id": "last"}']
    proc = subprocess.run([sys.executable, str(CONNECTOR), "record", "proxmox-ve", "--cassette", str(tmp_path / "c.yaml"),
                           "--session", str(session)], input=b"\n".join(lines) + b"\n", capture_output=True, timeout=60)
    replies = [json.loads(line, parse_constant=_refuse) for line in proc.stdout.splitlines()]
    assert len(replies) == 5 and replies[-1]["id"] == "last" and proc.returncode == 0, proc.stderr
    recorded = [json.loads(line, parse_constant=_refuse) for line in session.read_text().splitlines()]
    assert len(recorded) == 5
    assert "s3cret-value-1" not in session.read_text() and "k-undeclared-7777" not in session.read_text()


def _refuse(name):
    raise ValueError(f"{name} is not JSON")


@pytest.mark.parametrize("value,meaning", [("on", "true"), ("off", "false"), ("yes", "true"), ("No", "false")])
def test_validate_says_why_a_yaml_1_1_boolean_value_is_not_the_text(tmp_path, value, meaning):
    path = tmp_path / "m.yaml"
    path.write_text(TINY.replace("tables:\n", f"tables:\n  power2:\n    rules: [{{when: {{status: {value}}}, then: powered_on}}]\n"
                                              "    kind: guest_state\n", 1))
    warnings = [f for f in loader.check(path) if f.severity == "warning" and "YAML 1.1" in f.message]
    assert len(warnings) == 1 and f"`{value}` is read as the boolean {meaning}" in warnings[0].message
    assert warnings[0].line > 0 and f"status: {value}" in warnings[0].source_line


def test_a_settings_file_keeps_every_value_as_the_text_written(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("password: 0123\nflag: on\nother: No\nwhen: 2024-01-01\nratio: 1e3\nca_file: null\n"
                    "quoted: 'null'\non: yes\nport: 8006\nverify: true\n")
    assert _settings_file(str(path)) == {"password": "0123", "flag": "on", "other": "No", "when": "2024-01-01",
                                         "ratio": "1e3", "ca_file": "", "quoted": "null", "on": "yes",
                                         "port": "8006", "verify": "true"}
    path.write_text('{"port": 8006, "verify_tls": false, "ca_file": null, "password": "p\\u00e4ss"}')
    assert _settings_file(str(path)) == {"port": "8006", "verify_tls": "false", "ca_file": "", "password": "päss"}


def test_a_defect_while_loading_the_mapping_still_answers_every_request(monkeypatch):
    import io

    from cpfmap.cli.commands import run

    def defect(target):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(loader, "load", defect)
    out, err = io.BytesIO(), io.StringIO()
    code = run(["serve", "proxmox-ve"], io.BytesIO(b'{"method": "provider/initialize", "id": 1}\n{"method": "guests/list"}\n'),
               out, err)
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0 and len(replies) == 2 and replies[0]["id"] == 1
    assert all(r["error"]["code"] == -32603 and "ZeroDivisionError" in r["error"]["message"] for r in replies)


@pytest.mark.parametrize("what", ["mapping", "settings file", "session file", "cassette"])
def test_a_huge_file_is_refused_before_it_is_read(tmp_path, monkeypatch, what):
    """A sparse 64 MiB file costs nothing on disk; reading it whole would cost 64 MiB of memory."""
    import tracemalloc

    from cpfmap.language import source
    monkeypatch.setenv("CPFMAP_CACHE_DIR", str(tmp_path / "cache"))
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as out:
        out.truncate(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(CpfmapError, match="larger than"):
            loader.load(huge) if what == "mapping" else source.read_text(huge, what)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"{peak} bytes held while refusing a 64 MiB {what}"


def test_every_request_keeps_one_safe_bounded_log_line(tmp_path):
    """An id with a newline cannot forge a log record, a lone surrogate does not drop the line,
    and a huge id does not make a huge line."""
    log = tmp_path / "provider.log"
    forged = "101\n2026-01-01 00:00:00,000 INFO provider/initialize -> forged"
    lines = [INIT,
             {"method": "guests/get", "params": {"id": forged}, "id": 3},
             b'{"method": "guests/get", "params": {"id": "\\ud800"}, "id": 4}\n',
             {"method": "guests/get", "params": {"id": "9" * 300_000}, "id": 5},
             {"method": "guests/get", "params": {"id": "\x1b[2J"}, "id": 6}]
    replies, err, code = serve_session("proxmox-ve", lines, "--log-file", str(log))
    assert code == 0 and len(replies) == 5
    written = log.read_text(encoding="utf-8").splitlines()
    assert len([line for line in written if "guests/get" in line]) == 4, written
    [with_forged] = [line for line in written if "forged" in line]
    assert "guests/get id=101\\n2026-01-01" in with_forged, with_forged
    assert max(map(len, written)) < 5000 and "\x1b" not in "".join(written)
    assert "Logging error" not in err


@pytest.mark.parametrize("lines", [
    [b"[" * 3000, b"not json at all", b'{"method": "provider/initialize", "id": NaN}',
     b'{"method": "provider/initialize", "id": 1e400}', b'{"method": "provider/initialize", "id": ' + b"9" * 5000 + b"}",
     b'"provider/initialize"', b'{"method": "provider/initialize", "id": "last"}'],
    [b'{"method": "provider/initialize", "id": 1}'],   # no HTTP request at all
], ids=["hostile lines", "no HTTP"])
def test_a_recorded_session_replays_as_it_ran(tmp_path, lines):
    session, recording = tmp_path / "s.jsonl", tmp_path / "c.yaml"
    proc = subprocess.run([sys.executable, str(CONNECTOR), "record", "proxmox-ve", "--cassette", str(recording),
                           "--session", str(session)], input=b"\n".join(lines) + b"\n", capture_output=True, timeout=60)
    assert proc.returncode == 0 and recording.is_file(), proc.stderr
    live = [json.loads(line)["error"]["code"] if "error" in json.loads(line) else 0 for line in proc.stdout.splitlines()]
    replay = subprocess.run([sys.executable, str(CONNECTOR), "dry-run", "proxmox-ve", "--cassette", str(recording),
                             "--session", str(session), "--format", "json"], capture_output=True, timeout=60)
    entries = json.loads(replay.stdout)
    assert replay.returncode == 0, replay.stdout.decode()[-2000:] + replay.stderr.decode()
    assert [e["reply"]["error"]["code"] if "error" in e["reply"] else 0 for e in entries] == live
    assert all(e["differs"] is None for e in entries)
