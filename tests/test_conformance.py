"""The conformance runner against a provider that is not ours: correct, then with each
planted defect, which must fail the check that names it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cpfmap.conformance import report, runner
from cpfmap.conformance.ras import Options

PROVIDER = Path(__file__).parent / "faulty_provider.py"
OPTIONS = dict(guest="1", template_source="2", time_scale=0)


def run(defect: str = "", workflows=None, timeout: float = 10.0):
    argv = [sys.executable, str(PROVIDER)] + ([defect] if defect else [])
    return runner.run(argv, Options(**OPTIONS), workflows, reply_timeout=timeout, sleep=lambda s: None)


def failures(checks):
    return [(c.workflow, c.name, c.detail) for c in checks if not c.ok]


def test_a_correct_provider_in_another_program_passes_everything(tmp_path):
    checks = run()
    assert report.verdict(checks), report.table(checks)
    junit = tmp_path / "junit.xml"
    report.junit(checks, junit)
    assert "<testsuite" in junit.read_text() and 'failures="0"' in junit.read_text()


@pytest.mark.parametrize("defect,workflow,check,detail", [
    ("no-output", "create-template", "tasks/get reply is what RAS accepts", "'output' is a required property"),
    ("template-string", "inventory", "guests/get reply is what RAS accepts", "is_template: 'false' is not of type 'boolean'"),
    ("stdout-log", "protocol", "stdout carries only JSON replies", "INFO handling a request"),
    ("exists-object", "maintenance", "guests/snapshots/exists reply is what RAS accepts", "is not of type 'boolean'"),
    ("bad-state", "inventory", "guests/get reply is what RAS accepts", "'running' is not one of"),
    ("no-name", "inventory", "guests/get reply is what RAS accepts", "'name' is a required property"),
    ("wrong-code", "protocol", "unknown method", '"code": 1'),
    ("no-flip", "create-template", "is_template flips after convert", "is_template is not True"),
])
def test_each_planted_defect_fails_the_check_that_names_it(defect, workflow, check, detail):
    checks = run(defect)
    assert not report.verdict(checks)
    found = [f for f in failures(checks) if f[0] == workflow and f[1] == check]
    assert found and detail in found[0][2], failures(checks)
    table = report.table(checks)
    assert f"FAIL  {workflow}" in table and "expected:" in table


def test_a_hung_provider_is_reported_not_waited_on():
    checks = run("hang", ["inventory"], timeout=1.0)
    assert ("inventory", "guests/list answers") in [(c.workflow, c.name) for c in checks if not c.ok]


def test_cli_conformance_exit_status_and_junit(tmp_path):
    import io

    from cpfmap.cli import run as cli_run
    out, err = io.BytesIO(), io.StringIO()
    code = cli_run(["conformance", "--guest", "1", "--template-source", "2", "--time-scale", "0",
                    "--junit", str(tmp_path / "j.xml"), "--", sys.executable, str(PROVIDER), "no-name"],
                   io.BytesIO(), out, err)
    assert code == 1 and "FAIL  inventory" in out.getvalue().decode() and (tmp_path / "j.xml").exists()
