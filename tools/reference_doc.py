"""Generate the references for mapping authors:
    python tools/reference_doc.py
docs/mapping-reference.md from schemas/mapping.schema.json (every key, nested options too)
and the filters and functions' docstrings; docs/cpf-reference.md from cpfmap/protocol/contract.py.
A test fails when either file is stale."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "mapping.schema.json"
OUT = ROOT / "docs" / "mapping-reference.md"
CPF_OUT = ROOT / "docs" / "cpf-reference.md"
sys.path.insert(0, str(ROOT))
from cpfmap.authoring import reference  # noqa: E402 - filters, functions and the CPF contract, from the code

PIPE = "\\|"


def kind(node: dict) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.replace('_', '-')})"
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(kind(n) for n in node["oneOf"])
    base = node.get("type", "any")
    if isinstance(base, list):   # e.g. an object, or a template that yields one
        return " or ".join(map(str, base))
    if base == "array" and isinstance(node.get("items"), dict):
        return f"list of {kind(node['items'])}"
    if base == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"name -> {kind(node['additionalProperties'])}"
    return str(base) + _range(node)


def _range(node: dict) -> str:
    low, high = node.get("minimum"), node.get("maximum")
    if low is None and high is None:
        return ""
    return f", {'' if low is None else low}..{'' if high is None else high}"


def nested(node: dict) -> list[tuple[str, dict]]:
    """The object-valued parts of a node that have keys of their own: (suffix, object)."""
    out = []
    for name, sub in node.get("properties", {}).items():
        out += [(f".{name}{suffix}", obj) for suffix, obj in _objects(sub)]
    return out


def _objects(node: dict) -> list[tuple[str, dict]]:
    if node.get("properties"):
        return [("", node)] + [(s, o) for s, o in nested(node)]
    out = []
    for key, suffix in (("items", "[]"), ("additionalProperties", ".NAME")):
        if isinstance(node.get(key), dict):
            out += [(suffix + s, o) for s, o in _objects(node[key])]
    for variant in node.get("oneOf", []):
        out += _objects(variant)
    return out


def table(node: dict) -> list[str]:
    required = set(node.get("required", []))
    rows = ["| key | type | required | description | example |", "|---|---|---|---|---|"]
    for name, sub in node.get("properties", {}).items():
        example = json.dumps(sub["examples"][0]).replace("|", PIPE) if sub.get("examples") else ""
        desc = sub.get("description", "").replace("|", PIPE).replace("\n", " ")
        shown = f"`{example}`" if example else ""
        rows.append(f"| `{name}` | {kind(sub)} | {'yes' if name in required else ''} | {desc} | {shown} |")
    return rows


def section(title: str, node: dict, level: str = "##") -> list[str]:
    lines = [f"{level} {title}", "", node.get("description", ""), ""]
    if node.get("properties"):
        lines += table(node) + [""]
    else:
        for suffix, obj in _objects(node):
            lines += [f"Written as an object{' ' + suffix if suffix else ''}: {obj.get('description', '')}", ""]
            lines += table(obj) + [""]
        lines += [f"Type: {kind(node)}", ""]
        if node.get("examples"):
            lines += ["Example: `" + json.dumps(node["examples"][0]) + "`", ""]
    for suffix, obj in nested(node):
        name = title.strip("`")
        lines += [f"{level}# `{name}{suffix}`", "", obj.get("description", ""), ""] + table(obj) + [""]
    return lines


def render() -> str:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    lines = ["# Mapping language reference", "",
             "Generated from `schemas/mapping.schema.json` by `python tools/reference_doc.py`; do not edit.",
             "", schema["description"], "", "## Top level", ""] + table(schema) + [""]
    for name, node in schema["properties"].items():
        if node.get("properties"):
            lines += section(f"`{name}`", node)
    lines += ["# Definitions", ""]
    for name, node in schema["$defs"].items():
        lines += section(name, node)
    lines += ["# Functions", ""] + reference.functions_markdown()
    return "\n".join(lines).rstrip() + "\n"


def render_cpf() -> str:
    return "\n".join(reference.contract_markdown()).rstrip() + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(exist_ok=True)
    for path, text in ((OUT, render()), (CPF_OUT, render_cpf())):
        path.write_text(text, encoding="utf-8", newline="\n")
        sys.stdout.write(f"wrote {path}\n")
