"""Data-driven engine cases (data/cases/*.yaml): a mapping (optionally patched), recorded
HTTP answers in the hand-written cassette form, and a CPF session with the expected replies.

Session step keys: request; reply (exact), error_contains (code 1 containing the text),
result_has (members that must equal), advance (seconds on the virtual clock before it),
sent (the HTTP requests the step must send, as "METHOD path"), slept (the waits on the virtual clock).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from cpfmap.clock import VirtualClock
from cpfmap.http.wrappers import TracingTransport
from cpfmap.language import loader
from cpfmap.protocol.rpc import Server, engine_handlers
from cpfmap.recording import cassette
from cpfmap.recording.cassette import ReplayTransport
from cpfmap.redact import Redactor
from cpfmap.runtime.engine import Engine

CASES = sorted((Path(__file__).parent / "data" / "cases").glob("*.yaml"))


def load_mapping(case: dict, tmp_path: Path):
    path = ROOT / case["mapping"]
    if "mapping_patch" in case:
        data = loader.merge(yaml.safe_load(path.read_text()), case["mapping_patch"])
        path = tmp_path / "patched.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return loader.load(path)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path, tmp_path):
    case = yaml.safe_load(path.read_text())
    clock = VirtualClock()
    replay = TracingTransport(ReplayTransport(cassette.from_data(case["cassette"], path)), clock.now)
    server = Server(engine_handlers(Engine(load_mapping(case, tmp_path), replay, clock, Redactor())), Redactor())
    for n, step in enumerate(case["session"]):
        clock.time += step.get("advance", 0)
        before, slept = len(replay.exchanges), len(clock.slept)
        reply = server.handle_text(json.dumps(step["request"]))
        where = f"{path.name} step {n}: {step['request']['method']}"
        if "reply" in step:
            assert reply == step["reply"], where
        if "error_contains" in step:
            assert reply["error"]["code"] == 1 and step["error_contains"] in reply["error"]["message"], (where, reply)
        for key, value in (step.get("result_has") or {}).items():
            assert reply["result"][key] == value, (where, reply)
        if "slept" in step:
            assert clock.slept[slept:] == step["slept"], where
        if "sent" in step:
            sent = [f"{x.request.method} {x.request.url.split('://', 1)[1].split('/', 1)[1]}"
                    for x in replay.exchanges[before:]]
            assert sent == step["sent"], where
