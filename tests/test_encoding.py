"""Template building blocks for signed and query-style requests (cpfmap/language/encoding.py):
now() on an injected clock, numbered parameters, a CloudStack-style signature in a few lines.
(Each filter's documented example is run by tests/test_reference.py.)"""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from cpfmap.errors import BackendError
from cpfmap.language.compiler import Compiler

WALL = 1796648400.0   # 2026-12-07T13:00:00Z


def render(source: str, context: dict | None = None):
    templates = Compiler(None).templates
    templates.wall = lambda: WALL
    return templates.compile(source, "test").render(context or {})


@pytest.mark.parametrize("fmt, shown", [("iso", "2026-12-07T13:00:00Z"), ("amz", "20261207T130000Z"),
                                        ("epoch", 1796648400), ("epoch_ms", 1796648400000),
                                        ("http", "Mon, 07 Dec 2026 13:00:00 GMT"), ("%Y", "2026")])
def test_now_reads_the_injected_clock(fmt, shown):
    assert render(f"{{{{ now('{fmt}') }}}}") == shown


def test_now_refuses_an_unknown_format():
    with pytest.raises(BackendError, match="unknown format"):
        render("{{ now('yesterday') }}")


@pytest.mark.parametrize("value, flat", [
    ({"InstanceId": ["i-1", "i-2"]}, {"InstanceId.1": "i-1", "InstanceId.2": "i-2"}),
    ({"Filter": [{"Name": "tag:Name", "Value": ["a", "b"]}]},
     {"Filter.1.Name": "tag:Name", "Filter.1.Value.1": "a", "Filter.1.Value.2": "b"}),
    ({"A": None, "B": [], "C": {"D": 1}}, {"C.D": 1}),
])
def test_numbered_flattens_lists_and_objects(value, flat):
    assert render("{{ v | numbered }}", {"v": value}) == flat


def test_a_cloudstack_signature_is_a_few_lines_of_template():
    params = {"command": "listVirtualMachines", "response": "json", "apikey": "KEY 1"}
    got = render("{{ p | query_string | lower | hmac(secret, 'sha1', 'base64') }}", {"p": params, "secret": "s3"})
    text = "apikey=key%201&command=listvirtualmachines&response=json"
    assert got == base64.b64encode(hmac.new(b"s3", text.encode(), hashlib.sha1).digest()).decode()


def test_hash_and_hmac_refuse_unknown_algorithms():
    with pytest.raises(BackendError, match="unknown hash"):
        render("{{ 'x' | hash('crc32') }}")
