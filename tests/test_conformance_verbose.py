"""conformance -v shows each CPF exchange with the provider's log for it (for a mapping:
every HTTP request it caused), settings masked; JUnit test names carry the clone params."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from conftest import ROOT

from cpfmap.cli.commands import run as cli_run
from cpfmap.conformance import report, runner
from cpfmap.conformance.ras import Options

PROVIDER = Path(__file__).parent / "faulty_provider.py"
INVENTORY = ROOT / "mappings/proxmox-ve/recordings/default/inventory.yaml"


def test_junit_names_the_clone_parameters(tmp_path):
    checks = runner.run([sys.executable, str(PROVIDER)], Options(template_source="2", time_scale=0),
                        ["create-template", "create-host"], reply_timeout=10, sleep=lambda s: None)
    path = tmp_path / "junit.xml"
    report.junit(checks, path)
    assert ('name="guests/clone id=2 name=CPF-CONFORMANCE-01 snapshot=RAS_TEMPLATE_VERSION_1 is_link_clone=true"'
            in path.read_text())


def test_verbose_shows_each_cpf_exchange_with_the_http_requests_it_caused(tmp_path):
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"host": "pve1.example.test", "username": "root@pam", "token_name": "ras",
                                    "token_secret": "x-123456-secret"}))
    out, err = io.BytesIO(), io.StringIO()
    code = cli_run(["conformance", "proxmox-ve", "--replay", str(INVENTORY), "--settings", str(settings),
                    "--workflows", "connect,inventory", "--time-scale", "0", "-v"], io.BytesIO(), out, err)
    text = out.getvalue().decode()
    assert code == 0, text + err.getvalue()
    lines = text.splitlines()
    start = lines.index('CPF  -> {"method": "guests/list"}')
    assert "DEBUG http GET https://pve1.example.test:8006/api2/json/cluster/resources?type=vm -> 200" in lines[start + 1]
    assert lines[start + 3].startswith('CPF  <- {"result":{"guests":["101"')
    assert '"token_secret": "***"' in text and "x-123456-secret" not in text
