"""Fast paths of the per-get work, each against what it replaces: the engine's reply check
(replies.fast_check) against jsonschema over valid and invalid replies (it may only call
valid what jsonschema accepts, and must know the ordinary valid replies, or every guests/get
would pay for jsonschema); the plain field paths (`@`, `data.agent`) extract.Expression
answers without jmespath's visitor; templates run without copying their context."""
from __future__ import annotations

import copy
import json

import jmespath
import pytest

from cpfmap import resources
from cpfmap.language.expressions import Expression
from cpfmap.protocol import replies

GUEST = {"id": "101", "name": "VDI-101", "state": "powered_on", "mac_addresses": ["bc:24:11:00:00:01"],
         "ip_addresses": ["10.0.0.5", "fe80::1"], "is_template": False}
VALID = {
    "guests-get": [GUEST, dict(GUEST, mac_addresses=[], ip_addresses=[]), {k: v for k, v in GUEST.items() if k != "id"},
                   dict(GUEST, state="suspended", is_template=True, extra={"x": 1})],
    "guests-list": [{"guests": ["101", "102"]}, {"guests": []}],
    "guests-clone": [{"clone_id": "105", "task_id": "UPID:pve1:2"}],
    "task-started": [{"task_id": "UPID:pve1:1"}],
    "snapshots-exists": [True, False],
    "empty": [{}],
}
# Values swapped into a valid reply, key by key, and whole replies of the wrong shape.
WRONG = [None, True, False, 0, 1, 1.0, -1, "", "x", "powered_on", "BC:24:11:00:00:01", "bc:24:11:00:00:01\n",
         "bc:24:11:00:00:0", [], [None], [1], ["x"], ["a", "a"], [True, 1], {}, {"a": 1}]


def _schemas() -> list[str]:
    return sorted(path.stem for path in resources.data_path("schemas", "replies").glob("*.json"))


def _samples(name: str) -> list:
    out: list = list(WRONG)
    for good in VALID.get(name, []):
        out.append(good)
        if isinstance(good, dict):
            for key in good:
                out.append({k: v for k, v in good.items() if k != key})
                for wrong in WRONG:
                    out.append(dict(good, **{key: copy.deepcopy(wrong)}))
                if isinstance(good[key], list):
                    out.extend(dict(good, **{key: good[key] + [w]}) for w in WRONG)
    return out


@pytest.mark.parametrize("name", _schemas())
def test_fast_check_never_accepts_what_jsonschema_refuses(name):
    fast, full = replies.fast_check(name), replies.validator(name)
    for sample in _samples(name):
        if fast(sample):
            assert full.is_valid(sample), (name, json.dumps(sample))


@pytest.mark.parametrize("name", sorted(VALID))
def test_fast_check_knows_valid_replies(name):
    for good in VALID[name]:
        assert replies.validator(name).is_valid(good)
        assert replies.fast_check(name)(good), good


def test_an_invalid_reply_still_gets_jsonschemas_message():
    assert replies.problem("guests-get", dict(GUEST, state="on")) == "state: 'on' is not one of " \
        "['powered_off', 'powering_off', 'powered_on', 'powering_on', 'suspended', 'suspending']"
    assert replies.problem("guests-get", GUEST) is None


DATA = [None, 1, "text", [1, {"a": 2}], {"a": None}, {"a": {"b": False}}, {"a": {"b": [1]}}, {"a": "b"},
        {"data": {"agent": "1", "ip-addresses": ["x"]}}, {"a": [{"b": 1}]}]


@pytest.mark.parametrize("source", ["@", "a", "a.b", "data.agent", 'data."ip-addresses"', "a.b.c", "@.a"])
def test_field_paths_answer_as_jmespath_does(source):
    expression = Expression.compile(source, "test")
    assert expression.path is not None
    for data in DATA:
        assert expression.search(data) == jmespath.search(source, data), data


@pytest.mark.parametrize("source, context, expected", [
    ("{{ dict(boot, a=1) if g else boot }}", {"boot": {"b": 2}, "g": 1}, {"b": 2, "a": 1}),
    ("{{ range(3) | list }}", {}, [0, 1, 2]),
    ("{% set ns = namespace(x=1) %}{{ ns.x }} {{ y }}", {"y": 2}, "1 2"),
    ("{{ y + 1 }}", {"y": 2}, 3),
    ("{{ range }}", {"range": "mine"}, "mine"),   # the context's own value comes first
])
def test_templates_run_without_copying_the_context_yet_see_jinjas_globals(source, context, expected):
    from cpfmap.language.templating import Templates
    template = Templates().compile(source, "test")
    assert template.render(context) == expected
    assert template.render(context) == expected   # the compiled function, reused


# Text and dotted names are read straight from the context (templating._plain_or); every other
# case goes to Jinja. Each template, as text and as URL path, against contexts where the plain
# reading applies and where it must hand over (missing names, non-dict members, dict methods,
# placeholders), must give what Jinja alone gives: the same value or the same error.
PLAIN = ["/cluster/resources", "", "{{ params.id }}", "{{ vm.node }}", "/nodes/{{ node }}/qemu/{{ params.id }}/config",
         "{{ x.items }}", "{{ x.keys }}", "a {{ x }} b", "{{ x }}", " {{ x }} ", "{{ x.y.z }}", "{{ now }}",
         "{{ range }}", "{{ x }}\n", "{{x}}{{x}}", "{{ x.y }}/{{ x['y'] }}"]


def _contexts():
    from cpfmap.language.templating import Kept, Placeholder, RawPath
    return [{}, {"params": {"id": "101"}, "vm": {"node": "pve1"}, "node": "pve 1/x",
                 "x": {"items": 3, "keys": None, "y": {"z": [1, "a"]}}},
            {"params": {"id": 7}, "vm": None, "node": None, "x": "str"},
            {"params": {"id": True}, "node": RawPath("a/b c"), "x": Placeholder("<x from 1>")},
            {"params": {}, "vm": {"node": {"a": 1}}, "node": 1.5, "x": {"y": {}}},
            {"x": Kept(None), "params": {"id": "é/?"}, "node": False}]


def _outcome(func, context):
    try:
        value = func(context)
    except Exception as exc:   # noqa: BLE001 - the error itself is compared
        return "error", type(exc).__name__, str(exc)
    return "value", repr(value), type(value)


@pytest.mark.parametrize("path", [False, True], ids=["text", "path"])
@pytest.mark.parametrize("source", PLAIN)
def test_plain_templates_give_what_jinja_gives(source, path):
    import re

    from cpfmap.language.templating import Templates, _runner
    templates = Templates()
    env = templates.path if path else templates.text
    match = re.match(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", source, re.S)
    native = bool(match and "{{" not in match["expr"] and "{%" not in match["expr"] and not path)
    if native:
        expr = match["expr"].strip()
        jinja = _runner(env, env.compile_expression(expr, undefined_to_none=False)._template, "{{ " + expr + " }}", True)
    else:
        jinja = _runner(env, env.from_string(source), source, False)
    template = templates.compile(source, "test", path=path)
    for context in _contexts():
        assert _outcome(template.func, context) == _outcome(jinja, context), context


@pytest.mark.parametrize("obj", [{"a": 1, "items": 2, "__class__": 3, "_x": 4}, {}, {"mro": 1}, [1], "text", None])
@pytest.mark.parametrize("attribute", ["a", "items", "keys", "__class__", "_x", "mro", "upper", "missing"])
def test_the_sandboxs_member_reading_of_plain_dicts_is_the_sandboxs_own(obj, attribute):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from cpfmap.language.templating import Templates
    env = Templates().text
    ours, theirs = env.getattr(obj, attribute), ImmutableSandboxedEnvironment.getattr(env, obj, attribute)
    assert type(ours) is type(theirs) and repr(ours) == repr(theirs)


def test_a_table_remembers_its_answers_per_combination_of_the_fields_its_rules_read():
    """Table.translate keeps what its rules gave per combination of the fields they read: the
    same answers as the rules, whatever order the values come in (1 and True differ, a list
    field is not kept), and an error stays an error."""
    from cpfmap import errors
    from cpfmap.language.expressions import Matcher, Rule, Table
    table = Table("t", "guest_state", rules=(
        Rule((("status", Matcher(("running",))), ("qmp", Matcher(("paused",)))), "suspended"),
        Rule((("status", Matcher(("running",))),), "powered_on"),
        Rule((("status", Matcher(("1",))),), "one"),
        Rule((("status", Matcher(("true",))),), "true"),
        Rule((("lock", Matcher(absent=True)), ("status", Matcher(regex="^stop"))), "powered_off")))
    values = [{"status": "running"}, {"status": "running", "qmp": "paused"}, {"status": 1}, {"status": True},
              {"status": "stopped"}, {"status": "stopped", "lock": "backup"}, {"status": ["running"]},
              {"status": "running", "qmp": ["paused"]}, {"status": 1.0}, {"status": None}]

    def fresh(value):
        return Table("t", "guest_state", rules=table.rules).translate(value)

    def outcome(translate, value):
        try:
            return translate(value)
        except errors.BackendError as exc:
            return f"error: {exc.message}"
    for value in values + values[::-1] + values:
        assert outcome(table.translate, value) == outcome(fresh, value), value


@pytest.mark.parametrize("value, expected", [
    ("10.0.0.5", "10.0.0.5"), (" 10.0.0.5 ", "10.0.0.5"), ("10.0.0.5/24", "10.0.0.5"), ("fe80::1%eth0", None),
    ("127.0.0.1", None), ("::", None), ("2001:DB8::1", "2001:db8::1"), ("not-an-ip", "error"), ("", "error"),
    (5, "error"), (None, "error"), ("10.0.0.256", "error")])
def test_addresses_read_the_same_the_first_time_and_from_the_kept_reading(value, expected):
    from cpfmap.errors import BackendError
    from cpfmap.protocol.values import read_ip

    def outcome():
        try:
            return read_ip(value)
        except BackendError as exc:
            assert repr(value) in exc.message
            return "error"
    assert outcome() == expected and outcome() == expected
