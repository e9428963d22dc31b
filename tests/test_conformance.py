"""The conformance runner against a provider that is not ours: correct, then with each
planted defect, which must fail the check that names it."""
from __future__ import annotations

import json
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

    from cpfmap.cli.commands import run as cli_run
    out, err = io.BytesIO(), io.StringIO()
    code = cli_run(["conformance", "--guest", "1", "--template-source", "2", "--time-scale", "0",
                    "--junit", str(tmp_path / "j.xml"), "--", sys.executable, str(PROVIDER), "no-name"],
                   io.BytesIO(), out, err)
    assert code == 1 and "FAIL  inventory" in out.getvalue().decode() and (tmp_path / "j.xml").exists()


def bounded(function, limit: float = 120.0):
    """Run function in a thread; its result, or a failure if it is still running after limit
    seconds (a bound on a hang, not a timing assertion)."""
    import threading
    out: list = []
    worker = threading.Thread(target=lambda: out.append(function()), daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), "the conformance run did not end"
    return out[0]


def test_a_provider_that_never_reads_stdin_is_stopped_restarted_once_then_given_up():
    checks = bounded(lambda: run("deaf", timeout=1.0))
    failed = failures(checks)
    assert ("connect", "provider/initialize answers") in [f[:2] for f in failed]
    assert ("restart", "provider/initialize answers") in [f[:2] for f in failed]   # once, then no more
    assert [c.detail for c in checks if c.workflow == "protocol" and c.skipped] == [
        "the provider stopped answering and did not answer after a restart"]


def test_a_write_the_provider_does_not_take_is_bounded_and_the_provider_stopped():
    checks = bounded(lambda: run("stops-reading", ["protocol"], timeout=1.0))
    assert [f[:2] for f in failures(checks)] == [("protocol", "a multi-megabyte line")]


def test_a_failed_workflow_puts_back_what_it_changed():
    options = Options(template="3", time_scale=0)
    argv = [sys.executable, str(PROVIDER), "bad-revert"]
    checks = runner.run(argv, options, ["maintenance"], reply_timeout=10, sleep=lambda s: None)
    assert ("maintenance", "guests/snapshots/revert succeeds") in [f[:2] for f in failures(checks)]
    cleanup = [(c.name, c.left) for c in checks if c.workflow == "cleanup"]
    assert cleanup == [("undone: guest 3 turned into a VM", False)]


def test_progress_is_reported_as_each_workflow_ends():
    lines: list = []
    runner.run([sys.executable, str(PROVIDER)], Options(**OPTIONS), ["inventory"], reply_timeout=10,
               sleep=lambda s: None, progress=lines.append)
    assert lines[0] == "      connect ..." and lines[1].startswith("PASS  connect  (2/2 checks)")
    assert any(line.startswith("PASS  inventory") for line in lines)


def test_after_a_reply_timeout_the_provider_is_restarted_and_the_next_workflow_runs():
    checks = bounded(lambda: run("hang", ["inventory", "power"], timeout=1.0))
    assert [f[:2] for f in failures(checks)] == [("inventory", "guests/list answers")]
    assert ("restart", "provider/connect") in [(c.workflow, c.name) for c in checks if c.ok]
    assert report.summary("power", checks).startswith("PASS  power")


def test_exit_maintenance_with_versioning_makes_the_next_version():
    """RAS offers version n+1 when maintenance ends (../shared/cpf-protocol.md); the runner used to re-create n."""
    options = Options(template="3", time_scale=0, version=1)
    checks, sent = runner.run([sys.executable, str(PROVIDER)], options, ["maintenance"], reply_timeout=10,
                              sleep=lambda s: None, keep_sent=True, keep=True)
    assert not failures(checks)
    created = [json.loads(line)["params"]["name"] for line in sent
               if json.loads(line).get("method") == "guests/snapshots/create"]
    assert created == ["RAS_TEMPLATE_VERSION_2"]
    reverted = [json.loads(line)["params"]["name"] for line in sent
                if json.loads(line).get("method") == "guests/snapshots/revert"]
    assert reverted == ["RAS_TEMPLATE_VERSION_1"]


def test_after_a_failed_create_template_the_skips_say_why():
    checks = runner.run([sys.executable, str(PROVIDER), "no-flip"], Options(template_source="2", time_scale=0),
                        ["create-template", "create-host", "maintenance"], reply_timeout=10, sleep=lambda s: None)
    skipped = [c.detail for c in checks if c.skipped]
    assert skipped and all(d == "create-template did not make guest 2 a template (see above)" for d in skipped), skipped
