"""Every CPF reply within `connection.reply_deadline` (issue 17): waits inside a reply end at
the deadline with the answer RAS needs, and each HTTP exchange gets at most what is left.
In-process against a backend whose tasks never end (time: a VirtualClock the backend moves),
then the Proxmox VE pack against fakepve with a VM that never reaches the state."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from conftest import serve_session

from cpfmap.clock import VirtualClock
from cpfmap.http.transport import FunctionTransport, HttpResponse
from cpfmap.language import loader
from cpfmap.protocol.rpc import Server, engine_handlers
from cpfmap.redact import Redactor
from cpfmap.runtime.engine import Engine

BASE = yaml.safe_load(open("tests/data/tiny.yaml").read())
POWER = {"method": "POST", "path": "/machines/{{ params.id }}/power", "json": {"state": "off"}}
CONTROLS = {
    # stop: the task RAS's action started never ends; delete: a stop that never ends, then the destroy
    "stop": {"steps": [{"request": POWER, "accept": [202], "extract": {"op": "op"},
                        "wait": {"poll": "op", "handle": {"op": "{{ op }}"}}}]},
    "delete": {"steps": [{"name": "stop first", "request": POWER, "accept": [202], "extract": {"op": "op"},
                          "wait": {"poll": "op", "handle": {"op": "{{ op }}"}}},
                         {"name": "destroy", "request": {"method": "DELETE", "path": "/machines/{{ params.id }}"}}]},
}


class Stalled:
    """Power requests start an operation that stays `working`; every exchange takes `each` seconds."""

    def __init__(self, clock: VirtualClock, each: float = 0.0) -> None:
        self.clock, self.each = clock, each
        self.sent: list[tuple[str, float]] = []   # (method path, the exchange's deadline)

    def __call__(self, request) -> HttpResponse:
        path = request.url.split("/api/v1", 1)[1].split("?")[0]
        self.sent.append((f"{request.method} {path}", request.deadline))
        self.clock.sleep(self.each)
        body: object = {}
        status = 200
        if path == "/login":
            body = {"token": "tok-123456"}
        elif path.endswith("/power"):
            body, status = {"op": "0000abcd"}, 202
        elif path.startswith("/operations/"):
            body = {"status": "working"}
        return HttpResponse(status, (("Content-Type", "application/json"),), json.dumps(body).encode())


def _server(tmp_path, backend, clock, **connection) -> Server:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(loader.merge(BASE, {"controls": CONTROLS, "connection": connection,
                                                       "capabilities": {"tasks_polling_rate": 5,
                                                                        "tasks_polling_retries": 180}})))
    server = Server(engine_handlers(Engine(loader.load(path), FunctionTransport(backend), clock, Redactor())),
                    Redactor())
    settings = {"url": "https://h", "user": "admin", "password": "pw-0123456"}
    assert "result" in server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": settings}}))
    return server


def _timed(server, clock, method, **params) -> tuple[dict, float]:
    started = clock.now()
    reply = server.handle_text(json.dumps({"method": method, "params": params}))
    return reply, clock.now() - started


def test_a_control_whose_task_never_ends_is_accepted_at_the_deadline(tmp_path):
    clock = VirtualClock()
    server = _server(tmp_path, Stalled(clock), clock)
    reply, took = _timed(server, clock, "guests/control", id="101", control="stop")
    assert reply == {"result": {}}
    assert 25 <= took <= 30            # the default reply deadline, not the task budget (15 min)


def test_a_wait_cut_before_the_rest_of_a_control_is_an_error_in_time_and_the_rest_is_not_sent(tmp_path):
    clock = VirtualClock()
    backend = Stalled(clock)
    server = _server(tmp_path, backend, clock, reply_deadline=12)
    reply, took = _timed(server, clock, "guests/control", id="101", control="delete")
    assert took <= 12
    assert "reply deadline (12s" in reply["error"]["message"] and "not done" in reply["error"]["message"]
    assert not [what for what, _ in backend.sent if what.startswith("DELETE")]


def test_each_exchange_gets_at_most_what_is_left_of_the_deadline(tmp_path):
    clock = VirtualClock()
    backend = Stalled(clock, each=7.0)      # a slow backend: 7 s per exchange
    server = _server(tmp_path, backend, clock, reply_deadline=20, total_timeout=120)
    backend.sent.clear()
    reply, took = _timed(server, clock, "guests/control", id="101", control="stop")
    deadlines = [deadline for _, deadline in backend.sent]
    assert deadlines[0] == pytest.approx(20) and 12 < deadlines[1] <= 13   # a wait keeps a reserve for the reply
    assert all(d <= 20 - 7 * n + 1e-6 for n, d in enumerate(deadlines))
    assert reply == {"result": {}} and took <= 20 + 7   # the last exchange was given what was left


# ---------------------------------------------------------------- Proxmox VE

def _pve_mapping(tmp_path: Path, seconds: float) -> str:
    pack = Path("mappings/proxmox-ve/mapping.yaml").resolve()
    path = tmp_path / "pve.yaml"
    path.write_text(f"extends: {json.dumps(str(pack))}\ncpfmap: 1\nmetadata: {{name: pve-short}}\n"
                    f"connection: {{reply_deadline: {seconds}}}\n")
    return str(path)


def test_pve_controls_answer_within_the_deadline_when_the_vm_never_gets_there(tmp_path):
    from pve import ServedPve, cluster
    served = ServedPve(time_scale=0.02)
    cluster(served.pve)
    served.pve.ha_delay = 10 ** 6          # the HA manager never acts on the request
    served.pve.vm(101).ha_state = "stopped"
    served.pve.vm(101).status = "stopped"
    served.pve.vm(102).stop_secs = 10 ** 6  # a stop that hangs
    served.pve.add_vm(104, "Hangs-On-Stop", node="pve1", status="running")
    served.pve.vm(104).stop_secs = 10 ** 6
    mapping = _pve_mapping(tmp_path, 3)
    lines = [{"method": "provider/connect", "params": {"settings": served.settings()}},
             {"method": "guests/control", "params": {"id": "101", "control": "start"}},
             {"method": "guests/control", "params": {"id": "102", "control": "stop"}},
             {"method": "guests/control", "params": {"id": "104", "control": "delete"}},
             {"method": "guests/get", "params": {"id": "104"}}]
    try:
        started = time.monotonic()
        replies, err, code = serve_session(mapping, lines, timeout=60)
        took = time.monotonic() - started
    finally:
        served.stop()
    assert code == 0 and replies[0] == {"result": {}}, err
    assert replies[1] == {"result": {}} and replies[2] == {"result": {}}, err   # accepted: RAS polls get
    assert "reply deadline" in replies[3]["error"]["message"], replies[3]    # the destroy was not sent
    assert replies[4]["result"]["id"] == "104"                                # the VM is still there
    assert took < 3 * 3 + 10, err
