"""Unit tests of the small pieces: templating, extraction, tables, task ids, redaction."""
from __future__ import annotations

import re

import pytest

from cpfmap.errors import BackendError, InvalidParams
from cpfmap.language.expressions import Expression, Matcher, Rule, Table
from cpfmap.language.model import HandleKey, Literal, PollRule, Setting
from cpfmap.language.templating import Templates, decode_name, encode_name, timestamp
from cpfmap.protocol import taskids
from cpfmap.protocol.values import normal_mac, string_id, useful_ip
from cpfmap.redact import Redactor

T = Templates()


@pytest.mark.parametrize("source,context,expected", [
    ("{{ n }}", {"n": 5}, 5),                       # native type kept
    ("{{ xs }}", {"xs": [1, 2]}, [1, 2]),
    ("n={{ n }}", {"n": 5}, "n=5"),                 # text
    ("{{ a }}{{ b }}", {"a": 1, "b": 2}, "12"),
    ("{{ s | encode_name }}", {"s": "RAS Template Snapshot"}, "RAS-20Template-20Snapshot"),
    ("{{ s | regex_search('v([0-9]+)') }}", {"s": "ver v12"}, "12"),
    ("{{ x | default('d') }}", {}, "d"),
])
def test_templates(source, context, expected):
    assert T.compile(source, "t").render(context) == expected


def test_strict_undefined_and_sandbox():
    with pytest.raises(BackendError, match="has no attribute 'name'"):
        T.compile("{{ vm.name }}", "here").render({"vm": {}})
    with pytest.raises(BackendError):
        T.compile("{{ ''.__class__.__mro__ }}", "here").render({})


def test_path_values_are_percent_encoded():
    assert T.compile("/vms/{{ id }}/x", "p", path=True).render({"id": "../a b/?#"}) == "/vms/..%2Fa%20b%2F%3F%23/x"


@pytest.mark.parametrize("name", ["RAS Template Snapshot", "RAS_TEMPLATE_VERSION_5", "a-b", "ünï cødé", "--", ""])
def test_name_encoding_is_reversible(name):
    encoded = encode_name(name)
    assert decode_name(encoded) == name
    assert all(c.isalnum() and c.isascii() or c in "_-" for c in encoded)


@pytest.mark.parametrize("expr,data,context,expected", [
    ("[?to_string(id)==var('params.id')] | [0].n", [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}], {"params": {"id": "2"}}, "b"),
    ("string_ids([].id)", [{"id": 1}, {"id": 2.0}, {"id": "x"}], {}, ["1", "2", "x"]),
    ("macs(@)", ["00-15-5D-8A-3C-FF", "00155d8a3cff", "00:15:5d:8a:3c:ff"], {}, ["00:15:5d:8a:3c:ff"]),
    ("ips(@)", ["127.0.0.1", "::1", "fe80::1%eth0", "169.254.1.1", "0.0.0.0", "10.0.0.5", "2001:db8::1"], {},
     ["10.0.0.5", "2001:db8::1"]),
    ("parse_kv(@, ',', '=')", "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall", {},
     {"virtio": "BC:24:11:00:00:01", "bridge": "vmbr0", "firewall": None}),
    ("regex_find_all('[0-9]+', @)", "a1b22c333", {}, ["1", "22", "333"]),
    ("unique(@)", [1, 1, 2], {}, [1, 2]),
    ("from_items(items(@))", {"a": 1}, {}, {"a": 1}),
    ("split(@, ';')", "a;b", {}, ["a", "b"]),
])
def test_jmespath_functions(expr, data, context, expected):
    assert Expression.compile(expr, "e").search(data, context) == expected


def test_jmespath_type_error_is_a_backend_error():
    with pytest.raises(BackendError, match="failed on the backend's data"):
        Expression.compile("lower(@)", "e").search(5)


def test_tables_map_rules_default():
    table = Table("p", "guest_state", (("1", "powered_on"), ("0", "powered_off")))
    assert table.translate(1) == "powered_on" and table.translate("0") == "powered_off"
    with pytest.raises(BackendError, match="backend value 7 has no entry in table `p`"):
        table.translate(7)
    assert Table("p", "any", (("a", 1),), default=0).translate("z") == 0
    rules = Table("s", "guest_state", rules=(
        Rule((("lock", Matcher(values=("suspended",))),), "suspended"),
        Rule((("status", Matcher(values=("running",))), ("qmp", Matcher(regex="^pa"))), "suspended"),
        Rule((("status", Matcher(values=("running",))),), "powered_on"),
        Rule((("status", Matcher(values=("stopped",))), ("lock", Matcher(absent=True))), "powered_off")))
    assert rules.translate({"status": "running", "qmp": "paused"}) == "suspended"
    assert rules.translate({"status": "running", "qmp": "running"}) == "powered_on"
    assert rules.translate({"status": "stopped", "lock": "suspended"}) == "suspended"
    assert rules.translate({"status": "stopped"}) == "powered_off"
    with pytest.raises(BackendError, match="'unknown'"):
        rules.translate({"status": "unknown"})


POLLS = {"op": PollRule("op", (("op", HandleKey("[0-9a-f]{8}")), ("vm", HandleKey("[0-9]+", required=False))),
                        (), Literal("running"))}


def test_task_ids_round_trip_and_are_strict():
    tid = taskids.encode("op", {"op": "0a1b2c3d", "vm": "17"})
    assert taskids.decode(tid, POLLS) == ("op", {"op": "0a1b2c3d", "vm": "17"}, None, None)
    assert taskids.decode(taskids.encode("completed", {"clone_id": "5"}), POLLS) == \
        ("completed", {"clone_id": "5"}, None, None)
    with_output = taskids.encode("op", {"op": "0a1b2c3d"}, "guests/clone")
    assert taskids.decode(with_output, POLLS, {"guests/clone": "op"}) == \
        ("op", {"op": "0a1b2c3d"}, "guests/clone", None)
    waiting = taskids.encode("completed", {"clone_id": "5"}, wait=("op", {"op": "0a1b2c3d"}))
    assert taskids.decode(waiting, POLLS).wait == ("op", {"op": "0a1b2c3d"})
    for bad in ["", 5, None, "cpf1.", "cpf1.$$$", "x" * 5000, taskids.encode("nope", {"op": "0a1b2c3d"}),
                taskids.encode("op", {"op": "0a1b2c3d/../x"}), taskids.encode("op", {"vm": "1"}),
                taskids.encode("op", {"op": "0a1b2c3d", "url": "http://x"}), "cpf1.WzFd",
                taskids.encode("op", {"op": "0a1b2c3d"}, "guests/get"), taskids.encode("completed", {}, "guests/clone"),
                taskids.encode("op", {"op": "0a1b2c3d"}, wait=("completed", {})),
                taskids.encode("op", {"op": "0a1b2c3d"}, wait=("op", {"op": "1"}))]:
        with pytest.raises(InvalidParams, match="invalid task id"):
            taskids.decode(bad, POLLS)


@pytest.mark.parametrize("setting,raw,expected", [
    (Setting("port", "integer", default=8006), "8006", 8006),
    (Setting("port", "integer", default=8006), "", 8006),
    (Setting("port", "integer", default=8006), None, 8006),
    (Setting("tls", "boolean", default=True), "False", False),
    (Setting("tls", "boolean", default=True), "yes", True),
    (Setting("name"), 12, "12"),
])
def test_settings_coercion(setting, raw, expected):
    assert setting.coerce(raw) == expected


def test_secret_setting_value_is_not_shown_in_its_error():
    with pytest.raises(Exception) as info:
        Setting("pin", "integer", secret=True).coerce("hunter2")
    assert "hunter2" not in str(info.value)


def test_redactor_masks_encoded_forms_and_ignores_short_values():
    r = Redactor()
    r.add("p@ss word!")
    r.add("ab")
    assert r("x p@ss word! p%40ss+word%21 p%40ss%20word%21 ab") == "x *** *** *** ab"


def test_string_ids_and_normal_forms():
    assert string_id(101.0) == "101" and string_id(True) == "true"
    assert normal_mac("AA-BB-CC-DD-EE-FF") == "aa:bb:cc:dd:ee:ff" and normal_mac("aa:bb") is None
    assert useful_ip("10.0.0.1") == "10.0.0.1" and useful_ip("fe80::1") is None


@pytest.mark.parametrize("expression,expected", [
    ("macs(@)", ["aa:bb:cc:dd:ee:ff", "00:15:5d:8a:3c:ff", "00:1a:2b:3c:4d:5e"]),
    ("ips(@)", ["10.0.0.5", "2001:db8::1"]),
])
def test_macs_and_ips_read_the_common_notations(expression, expected):
    data = {"macs(@)": ["AA:BB:CC:DD:EE:FF", "00-15-5D-8A-3C-FF", "001a.2b3c.4d5e", "aabbccddeeff", None, ""],
            "ips(@)": ["10.0.0.5/24", "2001:db8::1%eth0", "127.0.0.1", "fe80::1/64", "::", None]}[expression]
    assert Expression.compile(expression, "t").search(data) == expected


@pytest.mark.parametrize("expression,bad", [("macs(@)", "aa:bb:cc"), ("ips(@)", "10.0.0.300"), ("ips(@)", "host.lan")])
def test_macs_and_ips_report_a_value_they_cannot_read(expression, bad):
    with pytest.raises(BackendError, match=f"cannot read '{re.escape(bad)}'.*it takes"):
        Expression.compile(expression, "t").search(["10.0.0.1" if "ips" in expression else "aabbccddeeff", bad])


@pytest.mark.parametrize("text,seconds", [
    ("2026-12-07T13:00:00Z", 1796648400.0), ("2026-12-07T13:00:00.250000Z", 1796648400.25),
    ("2026-12-07T14:00:00+01:00", 1796648400.0), ("2026-12-07 13:00:00", 1796648400.0), (42, 42.0),
])
def test_timestamp_reads_iso_times_in_utc(text, seconds):
    assert timestamp(text) == seconds


@pytest.mark.parametrize("text", ["tomorrow", "2026-13-01T00:00:00Z", "2026-12-07T13:00:00Z" + "0" * 40, True])
def test_timestamp_refuses_what_is_not_a_time(text):
    with pytest.raises(BackendError, match="timestamp: "):
        timestamp(text)
