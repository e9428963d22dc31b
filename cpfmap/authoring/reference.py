"""Reference text generated from the code, so it cannot go stale: the template filters and
JMESPath functions a mapping can use (from their docstrings), the CPF contract from a mapping
author's seat (from contract.py), and a pack's settings table (from its mapping).

tools/reference_doc.py writes docs/ from these; `cpfmap docs MAPPING` prints a settings table.
"""
from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import jinja2

from cpfmap.errors import ConfigError
from cpfmap.language import model as m
from cpfmap.language.expressions import Functions
from cpfmap.protocol import contract

_EXAMPLE = re.compile(r"Example:\s*`(?P<expr>.+?)`(?:\s+on\s+`(?P<data>.+?)`)?\s*->\s*`(?P<result>.+)`\s*$", re.S)
EXAMPLE_CONTEXT = {"params": {"id": "101"}}   # what `var('params.id')` reads in the examples


@dataclass(frozen=True)
class FunctionDoc:
    kind: str          # "filter" (Jinja) or "function" (JMESPath)
    name: str
    signature: str
    text: str          # behaviour, without the example line
    example: str       # the raw `Example: ...` line, "" when missing

    def parsed_example(self) -> dict | None:
        """{expr, data, result} of the example, or None when it is missing or malformed."""
        match = _EXAMPLE.search(self.example)
        return match.groupdict() if match else None


def _split_doc(func: Callable) -> tuple[str, str]:
    doc = inspect.cleandoc(func.__doc__ or "")
    text, _, example = doc.partition("Example:")
    return " ".join(text.split()), ("Example:" + " ".join(example.split())) if example else ""


def filters(extra: dict[str, Callable] | None = None) -> dict[str, Callable]:
    """Every filter a mapping's templates get beyond Jinja's own: ours and the compiler's."""
    from cpfmap.language.compiler import Compiler
    env = Compiler(None).templates.text
    ours = {name: f for name, f in env.filters.items() if name not in jinja2.filters.FILTERS}
    return dict(sorted({**ours, **(extra or {})}.items()))


def jmespath_functions() -> dict[str, Callable]:
    return dict(sorted((name[len("_func_"):], func) for name, func in vars(Functions).items()
                       if name.startswith("_func_")))


def _filter_signature(name: str, func: Callable) -> str:
    params = list(inspect.signature(func).parameters.values())
    params = [p for p in params if p.name != "self"][1:]  # the first is the value before `|`
    shown = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)
    return f"value | {name}" + (f"({shown})" if params else "")


def _function_signature(name: str, func: Callable) -> str:
    names = [p for p in inspect.signature(func).parameters if p != "self"]
    kinds = ["/".join(spec.get("types") or ["any"]) for spec in getattr(func, "signature", ())]
    return f"{name}(" + ", ".join(f"{n}: {k}" for n, k in zip(names, kinds)) + ")"


def functions() -> list[FunctionDoc]:
    out = [FunctionDoc("filter", name, _filter_signature(name, f), *_split_doc(f)) for name, f in filters().items()]
    out += [FunctionDoc("function", name, _function_signature(name, f), *_split_doc(f))
            for name, f in jmespath_functions().items()]
    return out


def run_example(doc: FunctionDoc) -> tuple[Any, Any]:
    """(what the example evaluates to, what its docstring says it gives)."""
    from cpfmap.language.compiler import Compiler
    from cpfmap.language.expressions import Expression, Table
    parts = doc.parsed_example()
    assert parts is not None, f"{doc.name}: no example"
    expected = json.loads(parts["result"])
    if doc.kind == "function":
        data = json.loads(parts["data"]) if parts["data"] else {}
        return Expression.compile(parts["expr"], doc.name).search(data, EXAMPLE_CONTEXT), expected
    compiler = Compiler(None)
    compiler.tables["power"] = Table("power", "guest_state", (("running", "powered_on"),))
    return compiler.templates.compile(parts["expr"], doc.name).render(EXAMPLE_CONTEXT), expected


def functions_markdown() -> list[str]:
    lines = ["## Template filters and JMESPath functions", "",
             "Beyond Jinja's own filters (`default`, `lower`, `join`, ...) and JMESPath's own functions "
             "(`to_string`, `length`, `contains`, ...), mappings get these. Each example is run by the tests.", ""]
    for kind, title in (("filter", "Template filters (`{{ value | filter(args) }}`)"),
                        ("function", "JMESPath functions (in `extract`, `items`, `{jmespath: ...}`)")):
        lines += [f"### {title}", "", "| signature | behaviour | example |", "|---|---|---|"]
        for doc in (d for d in functions() if d.kind == kind):
            example = doc.example.removeprefix("Example:").strip().replace("|", "\\|")
            lines.append(f"| `{doc.signature.replace('|', chr(92) + '|')}` | {doc.text.replace('|', chr(92) + '|')} "
                         f"| {example} |")
        lines.append("")
    return lines + _globals_markdown() + ["### Addresses", "", contract.ADDRESSES, ""] + bodies_markdown()


def _globals_markdown() -> list[str]:
    from cpfmap.language.templating import Templates
    text, _ = _split_doc(Templates._now)
    return ["### Template functions", "", "| signature | behaviour | example |", "|---|---|---|",
            f"| `now(fmt='iso')` | {text.split(': ', 1)[1]} Reads the UTC wall clock (injectable: `Templates.wall`; the tests fix it). | "
            "`{{ now('amz') }}` -> `\"20261207T130000Z\"` |", ""]


def bodies_markdown() -> list[str]:
    """How reply bodies read (http/bodies.py), with an example that the tests read."""
    from cpfmap.http import bodies
    intro = inspect.cleandoc(bodies.__doc__ or "").split("\n\n", 1)[1]
    return ["## Reply bodies", "", intro, "",
            "Example (with `connection.xml_lists: [item]`): the reply", "", "```xml", bodies.EXAMPLE_XML, "```", "",
            "reads as", "", "```json", json.dumps(bodies.EXAMPLE_DATA, indent=1), "```", "",
            "so `DescribeInstancesResponse.reservationSet.item[].instancesSet.item[].instanceId` gives "
            "`[\"i-0abc\"]` with one reservation or many. An extraction `from: text` reads the body's text "
            "whatever its type; error bodies in XML or text feed `connection.error_message` the same way.", ""]


# ------------------------------------------------------------------ the CPF side

def contract_markdown() -> list[str]:
    lines = ["# The CPF side, from a mapping author's seat", "",
             "Generated from `cpfmap/protocol/contract.py` (the module the engine, `validate` and the conformance runner "
             "check with) by `python tools/reference_doc.py`; do not edit.", "",
             "RAS sends one JSON request per line and reads one reply. Your mapping answers the methods below; "
             "in templates the request's params are `params.<name>`. An optional param RAS did not send is "
             "absent from `params`: write `params.snapshot | default('')`. The engine checks every request "
             "against this table before your steps run (wrong or missing params: error -32602), and each guests/* "
             "and tasks/get reply against its schema in `schemas/replies/` before RAS sees it (a reply "
             "that does not fit is an error naming what is wrong).", ""]
    lines += ["## Error codes", "", "Every stdout line is strict JSON; an error reply is "
              "`{\"error\": {\"code\": <int>, \"message\": \"...\"}}` with one of these codes:", "",
              "| code | when |", "|---|---|"]
    lines += [f"| {code} | {when} |" for code, when in contract.ERRORS.items()] + [""]
    for method in contract.METHODS.values():
        lines += _method_section(method)
    lines += ["## Controls (`guests/control`, the mapping's `controls:`)", "", "| control | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in contract.CONTROLS.items()]
    lines += ["", f"Every mapping needs {', '.join(f'`{c}`' for c in contract.BASIC_CONTROLS)}.", ""]
    lines += _states_and_levels()
    lines += ["## The order RAS calls them (workflows)", "",
              "What RAS does, step by step; `cpfmap conformance` reproduces each of these (the names are its "
              "`--workflows`). Snapshot names: "
              f"`{contract.LINK_SNAPSHOT}` (linked clones without versions) and "
              f"`{contract.VERSION_NAME.format('<n>')}` (template versions, n = 1..{contract.MAX_VERSIONS}).", ""]
    for name, steps in contract.WORKFLOWS.items():
        lines += [f"### {name}", ""] + [f"{n}. {step}" for n, step in enumerate(steps, 1)] + [""]
    lines += ["## Addresses", "", contract.ADDRESSES, ""]
    return lines


def _method_section(method: contract.Method) -> list[str]:
    where = "Written in `methods:`" if method.mapped else {
        "guests/control": "Written in `controls:`", "tasks/get": "Written in `tasks:` (poll rules)"}.get(
        method.name, "Answered by the engine")
    lines = [f"## {method.name}", "", f"{method.doc} Level: {method.level}. {where}.", ""]
    if method.params:
        lines += ["| param | type | required | meaning |", "|---|---|---|---|"]
        lines += [f"| `{p.name}` | {_TYPES[p.kind]} | {'yes' if p.required else 'no'} | {p.doc} |"
                  for p in method.params]
        lines.append("")
    schema = ""
    if method.reply:
        checker = "the engine and the conformance runner check" if method.name in contract.REPLY_SCHEMAS \
            else "the conformance runner checks"
        schema = f" ({checker} it against `schemas/replies/{method.reply}.json`)"
    return lines + [f"Reply: {method.reply_doc}{schema}.", ""]


_TYPES = {str: "string", bool: "boolean", dict: "object"}


def _states_and_levels() -> list[str]:
    lines = ["## States and capabilities", "",
             "Guest states (a `guest_state` table yields only these): "
             + ", ".join(f"`{s}`" for s in contract.GUEST_STATES) + ".",
             "Task states (a poll rule's `state`): " + ", ".join(f"`{s}`" for s in contract.TASK_STATES) + ".", "",
             "| capability | range | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{name}` | {low}..{high} | {default} | {meaning} |"
              for name, low, high, default, meaning in contract.CAPABILITIES]
    lines += [f"| `template_method` | {' / '.join(contract.LEVELS)} | the highest the methods allow | "
              "template support: basic needs guests/convert, guests/clone and control `delete`; versioning "
              "also the four snapshot methods |",
              "| `can_link_clones` | boolean | false | linked clones: needs the four snapshot methods |",
              "| `can_suspend_guests` | boolean | true when a `suspend` control exists | RAS may send `suspend` |", ""]
    return lines


# ------------------------------------------------------------------ pack settings

SETTINGS_BEGIN = "<!-- settings: generated by `cpfmap docs MAPPING --readme README.md`; edit the mapping -->"
SETTINGS_END = "<!-- end of settings -->"


def settings_table(mapping: m.CompiledMapping) -> str:
    """The pack README's settings table: what the administrator enters in the RAS console."""
    rows = ["| setting | type | default | meaning |", "|---|---|---|---|"]
    for s in mapping.settings:
        kind = s.type + (f" ({', '.join(map(str, s.choices))})" if s.choices else "") + (", secret" if s.secret else "")
        default = "required" if s.required and s.default is None else (
            "" if s.default is None else f"`{json.dumps(s.default)}`")
        rows.append(f"| `{s.name}` | {kind} | {default} | {_cell(s.description)} |")
    return "\n".join(rows) + "\n"


def readme_with_settings(text: str, mapping: m.CompiledMapping) -> str:
    """`text` (a pack README) with the table between the settings markers regenerated."""
    begin, end = text.find(SETTINGS_BEGIN), text.find(SETTINGS_END)
    if begin < 0 or end < begin:
        raise ConfigError(f"the README has no settings markers: put the table between\n{SETTINGS_BEGIN}\n"
                          f"{SETTINGS_END}")
    return text[:begin] + SETTINGS_BEGIN + "\n" + settings_table(mapping) + text[end:]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def iter_undocumented() -> Iterator[str]:
    """Filters and functions whose docstring lacks behaviour or a runnable example."""
    for doc in functions():
        if not doc.text or doc.parsed_example() is None:
            yield f"{doc.kind} {doc.name}"
