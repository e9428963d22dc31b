"""`for_each`: a read sent once per item of a list, each extraction a list in the items' order;
what it does not go with is refused at load time."""
from __future__ import annotations

import pytest
from test_repeat_safety import Backend, answer, engine, load

from cpfmap.errors import BackendError, MappingError

LIST = {"steps": [
    {"request": {"method": "GET", "path": "/machines"}, "extract": {"ids": "items[].id"}},
    {"name": "each machine", "for_each": "{{ ids }}",
     "request": {"method": "GET", "path": "/machines/{{ item }}"},
     "extract": {"names": "name"},
     "on_error": [{"status": [404], "set": {"names": "{{ 'gone-' ~ item }}", "missing": "{{ item }}"}}]},
    {"set": {"shown": "{{ names | join(',') }}"}}],
    "result": {"guests": "{{ names }}", "shown": "{{ shown }}", "missing": "{{ missing | select | list }}"}}


def run(tmp_path, ids: list, answers: dict):
    backend = Backend({"GET /machines": [answer(body={"items": [{"id": i} for i in ids]})], **answers})
    return engine(tmp_path, {"methods": {"guests/list": LIST}}, backend).call("guests/list", {}), backend


def test_each_item_is_read_once_in_order_and_each_extraction_is_a_list(tmp_path):
    reply, backend = run(tmp_path, [3, 1, 2], {f"GET /machines/{i}": [answer(body={"name": f"vm-{i}"})]
                                               for i in (1, 2, 3)})
    assert reply["guests"] == ["vm-3", "vm-1", "vm-2"]
    assert backend.sent[-3:] == ["GET /machines/3", "GET /machines/1", "GET /machines/2"]


def test_an_on_error_set_gives_that_item_its_value(tmp_path):
    reply, _ = run(tmp_path, [1, 2], {"GET /machines/1": [answer(404, {"error": {"message": "no"}})],
                                      "GET /machines/2": [answer(body={"name": "vm-2"})]})
    assert reply["guests"] == ["gone-1", "vm-2"] and reply["missing"] == [1]


def test_an_empty_list_sends_nothing_and_gives_empty_lists(tmp_path):
    reply, backend = run(tmp_path, [], {})
    assert reply["guests"] == [] and reply["shown"] == ""
    assert backend.sent[-1] == "GET /machines"


def test_a_refusal_no_rule_covers_fails_the_call(tmp_path):
    with pytest.raises(BackendError, match="HTTP 500: broken"):
        run(tmp_path, [1], {"GET /machines/1": [answer(500, {"error": {"message": "broken"}})]})


def test_a_value_that_is_not_a_list_is_an_error(tmp_path):
    steps = [dict(LIST["steps"][1], for_each="{{ 'one' }}")]
    backend = Backend({})
    with pytest.raises(BackendError, match="each machine: `for_each` gave str, not a list"):
        engine(tmp_path, {"methods": {"guests/list": {"steps": steps, "result": {"guests": []}}}},
               backend).call("guests/list", {})


@pytest.mark.parametrize("extra,message", [
    ({"request": {"method": "POST", "path": "/machines/{{ item }}/start"}}, "POST is not a read"),
    ({"cache": 5}, "does not go with cache"),
    ({"idempotent": True}, "does not go with idempotent"),
    ({"on_error": [{"status": [409], "retry": {"times": 2}}]}, "does not go with an on_error `retry`"),
    ({"request": {"method": "GET", "path": "/machines/{{ other }}"}}, "other"),
])
def test_what_for_each_does_not_go_with_is_refused_at_load(tmp_path, extra, message):
    step = {"for_each": "{{ [1] }}", "request": {"method": "GET", "path": "/machines/{{ item }}"}, **extra}
    with pytest.raises(MappingError, match=message):
        load(tmp_path, {"methods": {"guests/list": {"steps": [step], "result": {"guests": []}}}})


def test_item_is_not_known_outside_the_step(tmp_path):
    steps = [{"for_each": "{{ [1] }}", "request": {"method": "GET", "path": "/machines/{{ item }}"}},
             {"set": {"x": "{{ item }}"}}]
    with pytest.raises(MappingError, match="item"):
        load(tmp_path, {"methods": {"guests/list": {"steps": steps, "result": {"guests": []}}}})
