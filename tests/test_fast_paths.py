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
