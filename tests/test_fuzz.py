"""Seeded, bounded fuzzing (Hypothesis) of the serve loop and the mapping and cassette loaders:
whatever comes in, one strict-JSON reply per request line, no defect (-32603), no exception
other than our own, no hang (every example is small and the run is derandomized)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cpfmap.clock import VirtualClock
from cpfmap.errors import CpfmapError, MappingError
from cpfmap.http.transport import FunctionTransport, HttpResponse
from cpfmap.language import loader
from cpfmap.protocol.rpc import PARAMS, Server, engine_handlers
from cpfmap.recording import cassette
from cpfmap.redact import Redactor
from cpfmap.runtime.engine import Engine

# No shrinking: a failure is reported as found, so a failing run stays as short as a passing one.
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
TINY = (Path(__file__).parent / "data" / "tiny.yaml").read_text()

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
params = st.fixed_dictionaries({}, optional={
    "id": st.sampled_from(["101", "", " ", "cpf1.x", "999"]) | json_values,
    "control": st.sampled_from(["start", "stop", "explode"]) | json_values,
    "name": st.text(max_size=10) | json_values, "is_template": json_values,
    "settings": st.fixed_dictionaries({"url": st.just("https://h"), "user": st.text(max_size=6),
                                       "password": st.text(max_size=6)}) | json_values})
requests = st.fixed_dictionaries({"method": st.sampled_from(sorted(PARAMS)) | json_values},
                                 optional={"params": params | json_values, "id": json_values})


def _line(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


lines = (requests.map(_line) | json_values.map(_line) | st.binary(max_size=60)
         | st.sampled_from([b"NaN", b'{"id": NaN}', b'{"method": "guests/get", "id": 1e999}', b"\xef\xbb\xbf{}",
                            b'{"method": "tasks/get", "params": {"id": "cpf1.eyJ9"}}', b"[" * 3000]))


def backend(request):
    if request.url.endswith("/login"):
        return HttpResponse(200, (("Content-Type", "application/json"),), b'{"token": "tok-123456"}')
    return HttpResponse(200, (("Content-Type", "application/json"),), b'{"items": [{"id": 101, "state": 1}]}')


@pytest.fixture(scope="module")
def mapping():
    return loader.load(Path(__file__).parent / "data" / "tiny.yaml")


def strict(line: bytes) -> dict:
    def refuse(name):
        raise ValueError(name)
    return json.loads(line, parse_constant=refuse)


@settings(FUZZ, max_examples=300)
@given(batch=st.lists(lines, min_size=1, max_size=6))
def test_serve_loop_answers_every_line_with_one_strict_json_reply(mapping, batch):
    redactor = Redactor()
    server = Server(engine_handlers(Engine(mapping, FunctionTransport(backend), VirtualClock(), redactor)), redactor)
    stream = b"".join(line.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n" for line in batch)
    out = io.BytesIO()
    assert server.serve(io.BytesIO(stream), out) == 0
    replies = [strict(line) for line in out.getvalue().splitlines()]
    assert len(replies) == len([line for line in stream.split(b"\n")[:-1] if _nonblank(line)])
    for reply in replies:
        assert ("result" in reply) != ("error" in reply), reply
        if "error" in reply:
            assert isinstance(reply["error"]["code"], int) and reply["error"]["code"] != -32603, reply


def _nonblank(line: bytes) -> bool:
    try:
        return bool(line.decode("utf-8").lstrip("\ufeff").strip())
    except UnicodeDecodeError:
        return True


yaml_keys = st.sampled_from(["cpfmap", "metadata", "settings", "connection", "auth", "methods", "tables", "tasks",
                             "fragments", "extends", "capabilities", "steps", "request", "path", "map", "on", "no"])
yaml_trees = st.recursive(scalars | st.sampled_from(["{{ settings.url }}", "{{ nope }}", "{% for %}", "@.x[",
                                                     "*alias", "&anchor x"]),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(yaml_keys, inner, max_size=3),
                          max_leaves=10)


@settings(FUZZ, max_examples=40)
@given(patch=st.dictionaries(yaml_keys, yaml_trees, max_size=3), cut=st.integers(0, len(TINY)),
       noise=st.text(max_size=12))
def test_mapping_loader_reports_findings_never_crashes(tmp_path_factory, patch, cut, noise):
    folder = tmp_path_factory.mktemp("fuzz")
    mutated = TINY[:cut] + noise + TINY[cut:]
    try:
        data = yaml.safe_load(TINY)
        text = yaml.safe_dump(loader.merge(data, patch))
    except Exception:  # noqa: BLE001 - only the inputs are being made here
        text = mutated
    for source in (text, mutated):
        path = folder / "m.yaml"
        path.write_text(source, encoding="utf-8")
        assert all(f.message for f in loader.check(path))
        try:
            loader.load(path)
        except MappingError as exc:
            assert exc.findings


@FUZZ
@given(data=json_values | st.fixed_dictionaries({"interactions": json_values})
       | st.fixed_dictionaries({"responses": st.lists(json_values | st.fixed_dictionaries(
           {"request": json_values, "response": json_values}), max_size=3)}))
def test_cassette_loader_refuses_anything_malformed_with_its_own_error(data):
    try:
        cassette.from_data(data)
    except CpfmapError:
        pass
