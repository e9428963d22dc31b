"""Generate docs/mapping-reference.md from schemas/mapping.schema.json:
    python tools/reference_doc.py
A test fails when the file is stale."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "cpfmap" / "schemas" / "mapping.schema.json"
OUT = ROOT / "docs" / "mapping-reference.md"


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
    if base == "array" and isinstance(node.get("items"), dict):
        return f"list of {kind(node['items'])}"
    if base == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"name -> {kind(node['additionalProperties'])}"
    return str(base)


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
        lines += [f"Type: {kind(node)}", ""]
        if node.get("examples"):
            lines += ["Example: `" + json.dumps(node["examples"][0]) + "`", ""]
    return lines


def render() -> str:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    lines = ["# Mapping language reference", "",
             "Generated from `cpfmap/schemas/mapping.schema.json` by `python tools/reference_doc.py`; do not edit.",
             "", schema["description"], "", "## Top level", ""] + table(schema) + [""]
    for name, node in schema["properties"].items():
        if node.get("properties"):
            lines += section(f"`{name}`", node)
    lines += ["# Definitions", ""]
    for name, node in schema["$defs"].items():
        lines += section(name, node)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(render(), encoding="utf-8", newline="\n")
    sys.stdout.write(f"wrote {OUT}\n")
