"""The command line tells the truth about itself: --help on stdout for every command (also
the ones whose stdout is the CPF reply stream), a help text for every argument, and pack
READMEs whose settings table comes from the mapping (`cpfmap docs`)."""
from __future__ import annotations

import argparse
import io
import subprocess
import sys

import pytest
from conftest import ROOT

from cpfmap.authoring import scaffold
from cpfmap.cli.commands import parser, run


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = run(list(argv), io.BytesIO(), out, err)
    return code, out.getvalue().decode(), err.getvalue()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["serve", "record", "dry-run"])
def test_help_of_the_commands_that_speak_cpf_goes_to_stdout(command):
    proc = subprocess.run([sys.executable, "-m", "cpfmap", command, "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: cpfmap {command}") and proc.stderr == ""


def test_help_and_usage_errors_use_the_injected_streams():
    code, out, err = cli("validate", "--help")
    assert code == 0 and out.startswith("usage: cpfmap validate") and err == ""
    code, out, err = cli("serve")
    assert code == 2 and out == "" and "the following arguments are required: mapping" in err


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_argument_has_a_help_text(command):
    missing = [a.dest for a in _subcommands()[command]._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []


def test_new_pack_readme_lists_the_settings_its_mapping_declares(tmp_path):
    folder = scaffold.new_pack("my-hv", tmp_path)
    text = (folder / "README.md").read_text()
    for row in ("| `host` | string | required | Hypervisor address. |", "| `password` | string, secret | required |",
                "| `port` | integer | `443` | API port. |"):
        assert row in text


def test_docs_prints_writes_and_checks_the_settings_table(tmp_path):
    folder = scaffold.new_pack("my-hv", tmp_path)
    readme = str(folder / "README.md")
    code, out, _ = cli("docs", "proxmox-ve")
    assert code == 0 and "| `token_secret` | string, secret |  |" in out
    mapping = folder / "mapping.yaml"
    mapping.write_text(mapping.read_text().replace('"API port."', '"The API port."'))
    code, _, err = cli("docs", str(folder), "--readme", readme, "--check")
    assert code == 1 and "is stale" in err
    assert cli("docs", str(folder), "--readme", readme)[0] == 0
    assert "| `port` | integer | `443` | The API port. |" in (folder / "README.md").read_text()
    assert cli("docs", str(folder), "--readme", readme, "--check")[0] == 0


def test_docs_says_where_the_table_goes_when_a_readme_has_no_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# my pack\n")
    code, _, err = cli("docs", "proxmox-ve", "--readme", str(readme))
    assert code == 2 and "no settings markers" in err


def test_readme_documents_every_conformance_option_and_no_other():
    import re
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Conformance runner"):]
    documented = set(re.findall(r"^\| `(-[-\w]+)", section, re.M)) | set(re.findall(r"^\| `-\w`, `(--[\w-]+)`", section, re.M))
    options = {s for a in _subcommands()["conformance"]._actions for s in a.option_strings
               if s.startswith("--") and s != "--help"}
    assert options <= documented | {"--verbose"} and documented - {"-v"} <= options
