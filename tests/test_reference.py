"""The references for mapping authors are generated from the code and say what the code does:
every filter and function documented with a runnable example, nested options and ranges in
the mapping reference, the CPF contract read by the engine, validator and conformance runner."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cpfmap.authoring import reference
from cpfmap.conformance import workflows
from cpfmap.language import templating
from cpfmap.protocol import contract, rpc
from cpfmap.resources import data_path
from cpfmap.runtime.engine import REPLY_SCHEMAS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import reference_doc  # noqa: E402

DOCS = reference.functions()


def test_every_filter_and_function_has_behaviour_and_a_runnable_example():
    assert list(reference.iter_undocumented()) == []


def test_an_undocumented_filter_is_reported(monkeypatch):
    monkeypatch.setitem(templating.FILTERS, "shout", lambda value: str(value).upper())
    assert "filter shout" in list(reference.iter_undocumented())


@pytest.mark.parametrize("doc", DOCS, ids=[f"{d.kind}-{d.name}" for d in DOCS])
def test_documented_example_gives_the_documented_result(doc):
    got, expected = reference.run_example(doc)
    assert got == expected


def test_the_references_are_generated_and_up_to_date():
    assert (ROOT / "docs" / "cpf-reference.md").read_text() == reference_doc.render_cpf(), \
        "docs/cpf-reference.md is stale: run python tools/reference_doc.py"


@pytest.mark.parametrize("text", [
    "### `auth_scheme.login`", "### `auth_scheme.inject`", "| `cookies` |", "| `accept` |",
    "### `table.rules[]`", "Written as an object: An extraction with options.", "| `from` |", "| `required` |",
    "integer, 0..180", "| `value \\| encode_name(allowed='A-Za-z0-9_', escape='-')` |",
    "| `var(name: string)` |", "link-local",
])
def test_mapping_reference_shows_nested_options_ranges_and_functions(text):
    assert text in reference_doc.render()


def test_addresses_are_stated_once_and_the_code_agrees():
    from cpfmap.protocol.values import useful_ip
    for dropped in ("127.0.0.1", "::1", "169.254.1.1", "fe80::1%eth0", "0.0.0.0", "not an ip"):
        assert useful_ip(dropped) is None, dropped
    assert useful_ip("10.0.0.5") == "10.0.0.5"
    assert reference_doc.render().count(contract.ADDRESSES) == 1
    assert reference_doc.render_cpf().count(contract.ADDRESSES) == 1


def test_the_request_checks_are_the_contract():
    assert set(rpc.PARAMS) == set(contract.METHODS)
    clone = dict((name, (kind, required)) for name, kind, required in rpc.PARAMS["guests/clone"])
    assert clone == {"id": (str, True), "name": (str, True), "snapshot": (str, False), "is_link_clone": (bool, False)}
    assert rpc.CONTROLS == tuple(contract.CONTROLS)


def test_the_schema_and_reply_schemas_follow_the_contract():
    schema = json.loads((data_path("schemas") / "mapping.schema.json").read_text())
    assert tuple(schema["properties"]["methods"]["properties"]) == contract.MAPPED_METHODS
    assert tuple(schema["properties"]["controls"]["properties"]) == tuple(contract.CONTROLS)
    retries = schema["properties"]["capabilities"]["properties"]["tasks_polling_retries"]
    assert (retries["minimum"], retries["maximum"]) == (0, 180)
    for method in contract.METHODS.values():
        if method.reply:
            assert (data_path("schemas", "replies") / f"{method.reply}.json").exists(), method.name
    assert REPLY_SCHEMAS["guests/snapshots/exists"] == "snapshots-exists"


def test_conformance_runs_the_documented_workflows():
    assert set(workflows.WORKFLOWS) - {"inventory"} == set(contract.WORKFLOWS)


def test_settings_table_comes_from_the_mapping():
    from cpfmap.language import loader
    mapping = loader.load(str(ROOT / "mappings" / "proxmox-ve" / "mapping.yaml"))
    table = reference.settings_table(mapping)
    for setting in mapping.settings:
        assert f"| `{setting.name}` |" in table
    assert table.count("\n") == len(mapping.settings) + 2
