"""`connector.py serve` as a subprocess, as RAS runs it: the protocol cases, huge lines,
stdout hygiene, a broken mapping, exit 0 at EOF."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml
from conftest import CONNECTOR, ROOT, serve_session
from test_rpc import CASES, check


def test_every_protocol_case_through_a_real_process():
    lines = [case["line"].encode("utf-8") + b"\n" for case in CASES]
    replies, err, code = serve_session("proxmox-ve", lines)
    expected = [case for case in CASES if not case.get("none")]
    assert code == 0, err
    assert len(replies) == len(expected)
    for case, reply in zip(expected, replies):
        check(case, reply)


def test_bom_at_stream_start_and_multi_megabyte_lines():
    huge = json.dumps({"method": "provider/initialize", "params": {"pad": "x" * (8 * 1024 * 1024)}})
    huge_bad = "{" + "x" * (4 * 1024 * 1024)
    lines = [b"\xef\xbb\xbf" + b'{"method":"provider/initialize"}\n', huge.encode() + b"\n",
             huge_bad.encode() + b"\n", b'{"method":"provider/initialize","id":"still-alive"}\n']
    replies, err, code = serve_session("proxmox-ve", lines)
    assert "result" in replies[0] and "result" in replies[1]
    assert replies[2]["error"]["code"] == -32700
    assert replies[3]["id"] == "still-alive" and code == 0


def test_a_broken_mapping_answers_every_request_with_its_error(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("cpfmap: 1\nmetadata: {name: x}\nconnection: {base_url: 'http://{{ nope'}\nmethods: {}\n")
    replies, err, code = serve_session(str(broken), [{"method": "provider/initialize"}, {"method": "guests/list"}])
    assert code == 0
    assert "broken.yaml:3" in err
    assert len(replies) == 2
    for reply in replies:
        assert reply["error"]["code"] == 1 and "mapping failed to load" in reply["error"]["message"]


def test_stray_prints_never_reach_stdout(tmp_path):
    # A library that prints (here: a template filter run at load) must not corrupt the reply stream.
    script = tmp_path / "printing.py"
    script.write_text(
        "import sys, os\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import cpfmap.cli.commands as cli\n"
        "print('noise from python')\n"
        "real = cli.cmd_serve\n"
        "def noisy(*a, **k):\n"
        "    print('noise from a library'); os.write(1, b'noise at fd level\\n')\n"
        "    return real(*a, **k)\n"
        "cli.COMMANDS['serve'] = noisy\n"
        "cli.main()\n")
    proc = subprocess.run([sys.executable, str(script), "serve", "proxmox-ve"],
                          input=b'{"method":"provider/initialize"}\n', capture_output=True, timeout=60)
    lines = proc.stdout.decode().splitlines()
    assert [json.loads(line)["result"]["version"] for line in lines[-1:]] == ["1.0.0"]
    assert "noise from a library" in proc.stderr.decode() and "noise at fd level" in proc.stderr.decode()
    assert "noise" not in "\n".join(lines[1:]) and proc.returncode == 0


def test_validate_passes_on_every_shipped_mapping():
    mappings = sorted(str(p) for p in (ROOT / "mappings").glob("*/*.yaml") if _is_mapping(p))
    proc = subprocess.run([sys.executable, str(CONNECTOR), "validate", *mappings], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _is_mapping(path) -> bool:
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and "cpfmap" in data


def test_ras_closing_its_end_of_stdout_stops_the_provider_quietly():
    proc = subprocess.Popen([sys.executable, str(CONNECTOR), "serve", "proxmox-ve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    try:
        proc.stdin.write(b'{"method":"provider/initialize"}\n' * 50)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    assert proc.wait(30) == 0
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and "went away" in err
