"""How requests are built for query-style and signed APIs: a JSON body's own content type,
connection.params, query and form from one template, and SigV4 signatures that an independent
implementation (botocore's, which moto uses to check them) agrees with."""
from __future__ import annotations

import json
import urllib.parse

import pytest
import yaml
from conftest import ROOT

from cpfmap.clock import VirtualClock
from cpfmap.language import loader
from cpfmap.language import model as m
from cpfmap.redact import Redactor
from cpfmap.runtime.session import Backend

TINY = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text(encoding="utf-8"))
SETTINGS = {"url": "https://hv.example.test", "user": "AKIDEXAMPLE", "password": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "page_size": 2, "verify": True}
SIGV4 = {"auth": [{"type": "aws_sigv4", "access_key": "{{ settings.user }}", "secret_key": "{{ settings.password }}",
                   "region": "eu-west-1", "service": "ec2"}]}


def mapping(tmp_path, patch: dict):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(loader.merge(json.loads(json.dumps(TINY)), patch), sort_keys=False), encoding="utf-8")
    return loader.load(path)


def request(raw: dict) -> m.RequestSpec:
    from cpfmap.language.compiler import Compiler
    c = Compiler(None)
    return c.request(raw, ("request",), {"settings", "params"})


def backend(tmp_path, patch: dict) -> Backend:
    found = Backend(mapping(tmp_path, patch), None, VirtualClock(), Redactor(), SETTINGS)
    found.wall = lambda: 1796648400.0   # 2026-12-07T13:00:00Z
    return found


def test_a_json_body_carries_its_own_content_type(tmp_path):
    spec = request({"method": "PATCH", "path": "/vms/1", "json": {"name": "x"},
                    "content_type": "application/merge-patch+json"})
    built = backend(tmp_path, {}).build(spec, {"params": {}})
    assert built.header("Content-Type") == "application/merge-patch+json" and json.loads(built.body) == {"name": "x"}


@pytest.mark.parametrize("raw, message", [
    ({"method": "POST", "path": "/", "form": {"a": 1}, "content_type": "text/plain"}, "a form is always"),
    ({"method": "POST", "path": "/", "json": {"a": 1}, "headers": {"content-type": "application/x"}}, "content_type"),
])
def test_a_content_type_that_would_be_ignored_or_doubled_is_refused(tmp_path, raw, message):
    path = tmp_path / "m.yaml"
    data = json.loads(json.dumps(TINY))
    data["controls"]["start"] = {"steps": [{"request": raw}]}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert any(message in f.message for f in loader.check(path) if f.severity == "error")


def test_connection_params_go_in_the_form_else_the_query_and_the_request_wins(tmp_path):
    found = backend(tmp_path, {"connection": {"params": {"Version": "2016-11-15", "Mode": "{{ settings.user }}"}}})
    form = found.build(request({"method": "POST", "path": "/", "form": "{{ {'Action': 'Run', 'Mode': 'x'} }}"}), {})
    assert urllib.parse.parse_qsl(form.body.decode()) == [("Version", "2016-11-15"), ("Action", "Run"), ("Mode", "x")]
    assert "?" not in form.url
    query = found.build(request({"method": "GET", "path": "/", "query": {"Action": "Describe"}}), {})
    assert query.url.endswith("/api/v1/?Version=2016-11-15&Mode=AKIDEXAMPLE&Action=Describe")


def test_sigv4_signatures_match_botocores(tmp_path):
    botocore_auth = pytest.importorskip("botocore.auth")
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    found = backend(tmp_path, {**SIGV4, "connection": {"params": {"Version": "2016-11-15"}}})
    for raw in ({"method": "POST", "path": "/", "form": "{{ {'Action': 'RunInstances', 'Tag': [{'Key': 'Name', "
                                                          "'Value': 'VDI 1/a+b'}]} | numbered }}"},
                {"method": "GET", "path": "/x y", "query": {"Action": "Describe", "Filter.1.Value.1": "a b~*"}}):
        built = found.build(request(raw), {})
        ours = dict(built.headers)
        theirs = AWSRequest(method=built.method, url=built.url, data=built.body or b"",
                            headers={k: v for k, v in built.headers if k not in ("Authorization", "X-Amz-Date")})
        theirs.context["timestamp"] = theirs.headers["X-Amz-Date"] = ours["X-Amz-Date"]
        # What moto does to check a signature (moto/iam/access_control.py): botocore's own steps.
        signer = botocore_auth.SigV4Auth(Credentials(SETTINGS["user"], SETTINGS["password"]), "ec2", "eu-west-1")
        signature = signer.signature(signer.string_to_sign(theirs, signer.canonical_request(theirs)), theirs)
        assert ours["X-Amz-Date"] == "20261207T130000Z"
        assert ours["Authorization"].endswith("Signature=" + signature), raw


def test_the_secret_key_and_every_signature_are_secrets(tmp_path):
    found = backend(tmp_path, SIGV4)
    built = found.build(request({"method": "GET", "path": "/"}), {})
    signature = dict(built.headers)["Authorization"].rsplit("Signature=", 1)[1]
    shown = found.redactor(f"{SETTINGS['password']} {signature} {dict(built.headers)['Authorization']}")
    assert SETTINGS["password"] not in shown and signature not in shown


def test_a_content_type_on_every_request_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    data = json.loads(json.dumps(TINY))
    data["connection"]["headers"] = {"Content-Type": "application/json"}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert any("give `content_type` on the requests" in f.message for f in loader.check(path) if f.severity == "error")
