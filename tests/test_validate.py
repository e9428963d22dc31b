"""`validate` on broken mappings (data/broken/*.yaml, each headed `# expect: LINE:COL: text`),
and the schema itself."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import CONNECTOR, ROOT

from cpfmap.language import loader

BROKEN = sorted((Path(__file__).parent / "data" / "broken").glob("*.yaml"))
MAPPINGS = sorted(p for p in [*(ROOT / "mappings").glob("*/*.yaml"), *(ROOT / "examples").glob("*/mapping.yaml")]
                  if "cpfmap" in (yaml.safe_load(p.read_text()) or {}))


def expectation(path: Path) -> tuple[int, int, str]:
    match = re.match(r"# expect(?: warning)?: (\d+):(\d+): (.*)", path.read_text().splitlines()[0])
    return int(match[1]), int(match[2]), match[3]


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_mapping_is_reported_at_its_line_and_column(path):
    """`# expect: L:C: text` is an error there; `# expect warning: L:C: text` a warning."""
    line, column, text = expectation(path)
    severity = "warning" if path.read_text().startswith("# expect warning:") else "error"
    findings = [f for f in loader.check(path) if f.severity == severity]
    assert any(f.line == line and f.column == column and text in f.message for f in findings), \
        [f.format() for f in findings]


def test_validate_prints_file_line_column_source_and_caret():
    path = Path(__file__).parent / "data" / "broken" / "undefined-variable.yaml"
    proc = subprocess.run([sys.executable, str(CONNECTOR), "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1
    first, source, caret = proc.stdout.splitlines()[:3]
    line, column, _ = expectation(path)
    assert first.startswith(f"{path}:{line}:{column}: error: `vmm` is not defined here")
    assert source.strip().startswith("result:") and caret.index("^") == 4 + column - 1


def test_validate_json_format():
    path = Path(__file__).parent / "data" / "broken" / "unknown-key.yaml"
    proc = subprocess.run([sys.executable, str(CONNECTOR), "validate", "--format", "json", str(path)],
                          capture_output=True, text=True)
    findings = json.loads(proc.stdout)[str(path)]
    assert proc.returncode == 1 and findings[0]["message"].startswith("unknown key `methdos`")


def test_schema_is_valid_2020_12_and_up_to_date():
    schema = json.loads((ROOT / "schemas" / "mapping.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    sys.path.insert(0, str(ROOT / "tools"))
    import schema_src
    assert (ROOT / "schemas" / "mapping.schema.json").read_text() == schema_src.render(), \
        "schemas/mapping.schema.json is stale: run python tools/schema_src.py"


@pytest.mark.parametrize("path", MAPPINGS, ids=[f"{p.parent.name}/{p.name}" for p in MAPPINGS])
def test_shipped_mapping_validates_with_a_standard_validator(path):
    schema = json.loads((ROOT / "schemas" / "mapping.schema.json").read_text())
    data = loader.read(path).data  # extends merged, as the engine reads it
    jsonschema.Draft202012Validator(schema).validate(data)
    assert path.read_text().startswith("# yaml-language-server: $schema=")


def test_every_schema_property_has_a_description_and_an_example():
    schema = json.loads((ROOT / "schemas" / "mapping.schema.json").read_text())

    def walk(node, where):
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if "$ref" not in sub:
                    assert "description" in sub and "examples" in sub, f"{where}.{name} lacks description/example"
                walk(sub, f"{where}.{name}")
            for key in ("items", "additionalProperties"):
                if isinstance(node.get(key), dict):
                    walk(node[key], where)
            for name, sub in (node.get("$defs") or {}).items():
                assert "description" in sub and "examples" in sub, f"$defs.{name} lacks description/example"
                walk(sub, f"$defs.{name}")
    walk(schema, "$")


def test_mapping_reference_is_generated_and_up_to_date():
    sys.path.insert(0, str(ROOT / "tools"))
    import reference_doc
    assert (ROOT / "docs" / "mapping-reference.md").read_text() == reference_doc.render(), \
        "docs/mapping-reference.md is stale: run python tools/reference_doc.py"


def test_unreachable_steps_and_unused_settings_are_warnings(tmp_path):
    text = (ROOT / "tests/data/tiny.yaml").read_text()
    text = text.replace("  provider/connect:\n    steps: [{request: {method: GET, path: /whoami}}]",
                        "  provider/connect:\n    steps: [{fail: not yet}, {request: {method: GET, path: /whoami}}]")
    text = text.replace("  verify: {type: boolean, default: true}", "  verify: {type: boolean, default: true}\n"
                        "  unused: {type: string}")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    findings = {(f.severity, f.message) for f in loader.check(path)}
    assert ("warning", "unreachable: the step before always fails (give it a `when`)") in findings
    assert ("warning", "setting `unused` is never used") in findings
    assert not any(severity == "error" for severity, _ in findings)


def test_a_mapping_for_a_newer_engine_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text((ROOT / "tests/data/tiny.yaml").read_text().replace('engine: ">=0.1"', 'engine: ">=99.0"'))
    findings = [f for f in loader.check(path) if f.severity == "error"]
    assert findings and "needs cpfmap >=99.0; this is cpfmap 0.1.0" in findings[0].message
